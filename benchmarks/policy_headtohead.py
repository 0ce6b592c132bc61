"""Head-to-head of the dispatch policies in the simulator, against the fluid limit, with replicated intervals.

    python benchmarks/policy_headtohead.py                         # every case, R = 3
    python benchmarks/policy_headtohead.py --cases rm2-1+13,rm2-paper --replications 5

Each case runs ``kairos simulate --allowable --replications R`` (same code path and defaults) for every policy and
prints, per policy, the mean allowable throughput with its 95% t-interval over the R searches, the fluid LP limit
of the configuration on the case's batch mix, and the paired difference between ``laxity`` and the better of
``kairos`` and ``clockwork`` (replicate k of every policy runs on the same trace and seed: common random numbers,
so the per-replicate differences have a tighter interval than the two intervals side by side). Cases: the two of
issue 13 (rm2 on g4dn.xlarge=1,r5n.large=13 and on the paper pool), the other shipped models on the paper pool,
rm2 on the shipped bursty traces, and the two synthetic profiles of docs/allocator.md that no policy was tuned on.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.allocate.fluid import fluid_model, fluid_solve
from harness.allocate.space import BatchMix, make_problem
from harness.cli import build_parser
from harness.cli.simulate import build_job, run_job
from harness.core.paper import PAPER_QOS_MS
from traces.importers import import_trace
from traces.io import sample_path, write_trace

POLICIES = "laxity,kairos,clockwork,deeprecsys,fcfs"
RIVALS = ("kairos", "clockwork")


def synthetic_profile(path: Path, seed: int, model: str, types: dict) -> Path:
    """The generator of docs/allocator.md's synthetic profiles: ms = (a + b * batch) * lognormal(0, sigma)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t, (a, b, s) in types.items():
        for bs in range(10, 1001, 10):
            x = (a + b * bs) * rng.lognormal(0, s, 100)
            x[0] *= 1.4
            rows += [(t, model, bs, k, float(v * 0.9), float(v * 0.1)) for k, v in enumerate(x)]
    cols = ["instance_type", "model", "batch_size", "sample", "compute_ms", "load_ms"]
    pd.DataFrame(rows, columns=cols).to_parquet(path)
    return path


def cases(tmp: Path) -> dict[str, list[str]]:
    """Case name -> `kairos simulate` options (policies and replications added by the caller)."""
    dien = synthetic_profile(
        tmp / "dien.parquet",
        11,
        "dien",
        {
            "g4dn.xlarge": (4.0, 0.022, 0.03),
            "c5n.2xlarge": (0.5, 0.0745, 0.04),
            "r5n.large": (1.0, 0.079, 0.06),
            "t3.xlarge": (2.0, 0.15, 0.12),
        },
    )
    noisy = synthetic_profile(
        tmp / "noisy.parquet",
        5,
        "xmodel",
        {
            "gpu.big": (3.0, 0.03, 0.03),
            "cpu.all": (2.0, 0.05, 0.05),
            "cpu.cheap": (1.0, 0.09, 0.12),
            "cpu.tiny": (1.5, 0.14, 0.15),
        },
    )
    paper = "g4dn.xlarge=2,r5n.large=9"
    out = {
        "rm2-1+13": ["--model", "rm2", "--config", "g4dn.xlarge=1,r5n.large=13", "--qos-ms", "350"],
        "rm2-paper": ["--model", "rm2", "--config", paper, "--qos-ms", "350"],
    }
    for model in ("ncf", "wnd", "mtwnd"):
        out[f"{model}-paper"] = ["--model", model, "--config", paper, "--qos-ms", str(PAPER_QOS_MS[model])]
    # ncf passes near 5k qps: 50,000 queries last 10 s there, under the 30 s a point must span to be valid.
    out["ncf-paper"] += ["--queries", "250000", "--phase-seconds", "35"]
    for name, fmt, shipped in (
        ("azure-code", "azure-llm", "azure_llm_code.csv"),
        ("mooncake", "mooncake", "mooncake_conversation.jsonl"),
    ):
        # The shipped LLM traces are in their own formats: import them (tokens -> batch size) as `kairos trace import`.
        trace = write_trace(import_trace(fmt, sample_path(shipped)), tmp / f"{name}.parquet")
        out[f"rm2-{name}"] = [
            "--trace",
            str(trace),
            "--model",
            "rm2",
            "--config",
            paper,
            "--qos-ms",
            "350",
            "--scale",
            "thin",
        ]
    out["dien-synthetic"] = ["--profiles", str(dien), "--model", "dien", "--config", "g4dn.xlarge=3,r5n.large=6"]
    out["dien-synthetic"] += ["--qos-ms", "35"]
    out["noisy-synthetic"] = ["--profiles", str(noisy), "--model", "xmodel", "--qos-ms", "60"]
    out["noisy-synthetic"] += ["--config", "cpu.all=1,cpu.cheap=6,cpu.tiny=3,gpu.big=1"]
    return out


def fluid_limit(job) -> float:
    """The fluid LP limit (qps) of the job's pool on its trace's batch mix."""
    types = job.pool.instance_types
    model = job.base_trace.models[0]
    problem = make_problem(job.profile, dict.fromkeys(types, 1.0), model, job.qos_ms, 1e9, types=sorted(set(types)))
    counts = [job.pool.as_dict().get(t, 0) for t in problem.types]
    mix = BatchMix.from_batch_sizes(job.base_trace.batch_size)
    return fluid_solve(fluid_model(job.profile, problem, mix), counts)[0]


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a - b over paired replicates and its 95% t-interval (NaN bounds for one pair)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float(d.mean()), math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def per_replicate(result: dict) -> list[float]:
    """The allowable figure of each replicate (none counts as 0, as in the interval)."""
    reps = result.get("replicates") or [{"allowable_qps": result["allowable_qps"]}]
    return [r["allowable_qps"] if r["allowable_qps"] and r["allowable_qps"] > 0 else 0.0 for r in reps]


def main(argv: list[str] | None = None) -> int:
    """Run the cases; print one Markdown table row per (case, policy) and the verdict per case."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", help="comma list of case names (default: all)")
    p.add_argument("--policies", default=POLICIES, help=f"policies (default {POLICIES})")
    p.add_argument("--replications", type=int, default=3, help="searches per policy (default 3)")
    p.add_argument("--extra", default="", help="more `kairos simulate` options, e.g. '--queries 20000'")
    args = p.parse_args(argv)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        table = cases(Path(tmp))
        chosen = [c.strip() for c in (args.cases or ",".join(table)).split(",") if c.strip()]
        unknown = [c for c in chosen if c not in table]
        if unknown:
            p.error(f"unknown case(s) {', '.join(unknown)} (choose from {', '.join(table)})")
        print("| case | policy | allowable qps (mean of R) | 95% interval | of fluid limit | per seed |")
        print("|---|---|---|---|---|---|")
        verdicts = []
        for name in chosen:
            cli = ["simulate", *table[name], "--policy", args.policies, "--allowable", "--quiet"]
            cli += ["--replications", str(args.replications), *args.extra.split()]
            job = build_job(build_parser(["simulate"]).parse_args(cli))
            limit = fluid_limit(job)
            t0 = time.perf_counter()
            results, _, _ = run_job(job, lambda line, n=name: print(f"  {n}: {line}", file=sys.stderr, flush=True))
            by = {r["policy"]: r for r in results}
            for r in results:
                lo, hi = r.get("allowable_low_qps", math.nan), r.get("allowable_high_qps", math.nan)
                print(
                    f"| {name} | {r['policy']} | {r['allowable_qps']:.1f} | [{lo:.1f}, {hi:.1f}] | "
                    f"{r['allowable_qps'] / limit:.0%} of {limit:.1f} | "
                    # per seed, so runs split over processes (same seeds, same trace) can still be paired by hand
                    f"{' / '.join(f'{v:.1f}' for v in per_replicate(r))} |",
                    flush=True,
                )
            present = [k for k in RIVALS if k in by]  # a run may leave out a rival measured far below elsewhere
            if "laxity" in by and present:
                rival = max(present, key=lambda k: by[k]["allowable_qps"])
                mean, lo, hi = paired(per_replicate(by["laxity"]), per_replicate(by[rival]))
                beats = lo > 0 if not math.isnan(lo) else mean > 0
                seeds = ", ".join(
                    f"{a:.1f}/{b:.1f}" for a, b in zip(per_replicate(by["laxity"]), per_replicate(by[rival]))
                )
                verdicts.append(
                    f"{name}: laxity - {rival} = {mean:+.1f} qps, paired 95% interval [{lo:+.1f}, {hi:+.1f}]"
                    f" (per seed, laxity/{rival}: {seeds})"
                    f" -> {'beats' if beats else 'does not beat'} the better of {' and '.join(present)}"
                    f" ({time.perf_counter() - t0:.0f} s)"
                )
        print()
        for line in verdicts:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
