"""Bursty public traces x scaling method: each policy's allowable throughput with a 95% interval, and the ranking.

For the two shipped bursty traces (Azure LLM code 2023, Mooncake conversation), each ``--scale`` method and each
policy, this runs ``kairos simulate --allowable --replications R`` on the paper's pool (the CLI's own code, in this
process) and prints the mean allowable rate with its interval, then per (trace, scale) the ranking: ``>`` where the
intervals are disjoint, ``~`` (a tie) where they overlap. ``thin`` and ``superpose`` are one construction
(``traces.resample``), so they give the same figures for the same seeds; both are run, as the issue asks.

Run: python benchmarks/bursty_scale.py [--replications 5] [--queries 5000] [--scales time,thin,superpose]
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

from harness.cli import build_parser
from harness.cli.simulate import build_job, run_job
from harness.core.paper import PAPER_CONFIG
from harness.measure.analyzer import ValidityRules
from harness.measure.replication import intervals_overlap, replicated_allowable
from traces.importers import import_trace
from traces.io import sample_path, write_trace
from traces.scale import count_dispersion, gap_cv

TRACES = {  # label -> (importer format, shipped file)
    "azure-llm-code": ("azure-llm", "azure_llm_code.csv"),
    "mooncake-conv": ("mooncake", "mooncake_conversation.jsonl"),
}
POLICIES = "kairos,fcfs,least_outstanding"


def _fmt(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3g}"


def ranking(figures: dict[str, object]) -> tuple[str, list[str]]:
    """The policies by mean allowable rate, ``>`` between neighbours whose intervals are disjoint, ``~`` (a tie)
    where they overlap; and every pair's verdict (neighbours alone can hide a tie that is not transitive)."""
    order = sorted(figures, key=lambda p: -figures[p].mean_qps)
    chain = order[0]
    for a, b in itertools.pairwise(order):
        chain += (" ~ " if intervals_overlap(figures[a], figures[b]) else " > ") + b
    pairs = [
        f"{a} {'~' if intervals_overlap(figures[a], figures[b]) else '>'} {b}"
        for a, b in itertools.combinations(order, 2)
    ]
    return chain, pairs


def main() -> int:
    """Run the grid and print the table and the rankings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=5, help="searches per policy (default 5)")
    ap.add_argument("--queries", type=int, default=5000, help="queries per point (default 5000)")
    ap.add_argument("--scales", default="time,thin,superpose")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--traces", default=",".join(TRACES), help=f"of {', '.join(TRACES)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.02, help="allowable search bracket width (default 0.02)")
    args = ap.parse_args()
    if args.replications < 2:
        ap.error("--replications must be >= 2 for an interval")
    rules = ValidityRules()
    floor = math.ceil(rules.min_queries / (1.0 - rules.warmup_fraction)) + 1
    if args.queries < floor:  # below it no point is VALID and every figure would read "none"
        ap.error(f"--queries must be >= {floor}: a point needs {rules.min_queries} queries after the warm-up")
    t_start = time.perf_counter()
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, pool {PAPER_CONFIG}, "
        f"R={args.replications} replications (seeds {args.seed}..{args.seed + args.replications - 1}), "
        f"{args.queries} queries per point, tolerance {args.tolerance:g}"
    )
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.traces.split(","):
            fmt, name = TRACES[label]
            trace = import_trace(fmt, sample_path(name))
            path = write_trace(trace, Path(tmp) / f"{label}.parquet")
            print(
                f"# {label}: {name}, {len(trace)} queries, {trace.duration_s:.0f} s, "
                f"{trace.mean_rate_qps:.2f} qps, gap CV {gap_cv(trace.arrival_s):.2f}, "
                f"count dispersion (var/mean per window) 1 s {count_dispersion(trace.arrival_s, 1.0):.1f}, "
                f"10 s {count_dispersion(trace.arrival_s, 10.0):.1f}, 60 s {count_dispersion(trace.arrival_s, 60.0):.1f}"
            )
            for scale in args.scales.split(","):
                argv = [
                    "simulate",
                    "--trace",
                    str(path),
                    "--scale",
                    scale,
                    "--allowable",
                    "--policy",
                    args.policies,
                    "--replications",
                    str(args.replications),
                    "--queries",
                    str(args.queries),
                    "--seed",
                    str(args.seed),
                    "--tolerance",
                    str(args.tolerance),
                ]
                t0 = time.perf_counter()
                results, _, _ = run_job(build_job(build_parser(["simulate"]).parse_args(argv)))
                print(f"  {label} {scale}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                figures = {}
                for r in results:
                    each = [x["allowable_qps"] for x in r["replicates"]]
                    figures[r["policy"]] = fig = replicated_allowable(each)
                    rows.append((label, scale, r["policy"], fig, each))
                chain, pairs = ranking(figures)
                finite = all(f.none == 0 for f in figures.values())
                verdicts.append((label, scale, finite, chain, pairs))
    print(
        f"{'trace':<15} {'scale':<10} {'policy':<18} {'allowable qps mean [95% interval]':>34} {'none':>5}  per replicate"
    )
    for label, scale, policy, fig, each in rows:
        mean = _fmt(fig.mean_qps) if fig.mean_qps > 0 else "none"
        cell = f"{mean} [{_fmt(fig.low_qps)}..{_fmt(fig.high_qps)}]"
        per = " ".join(_fmt(x) if x > 0 else "none" for x in each)
        print(f"{label:<15} {scale:<10} {policy:<18} {cell:>34} {fig.none:>2}/{fig.replicates:<2} {per}")
    print()
    print("ranking per (trace, scale): '>' intervals disjoint, '~' intervals overlap (a tie)")
    for label, scale, finite, chain, pairs in verdicts:
        print(f"{label:<15} {scale:<10} {chain:<45} every policy finite: {'yes' if finite else 'NO'}")
        print(f"{'':<27}pairs: {'; '.join(pairs)}")
    print(f"\ninterval: {replicated_allowable([1.0, 2.0]).method}")
    print(f"wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
