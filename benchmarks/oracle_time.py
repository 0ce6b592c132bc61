"""Time the exhaustive oracle and compare every allocation method, per model, on this machine.

    python benchmarks/oracle_time.py                      # rm2: the oracle over the paper's 331 configurations
    python benchmarks/oracle_time.py --models ncf,rm2,wnd,mtwnd --methods all   # the docs/allocator.md table

For each model this runs ``kairos allocate`` (same code path, same defaults) at the paper's QoS and a $2.5/h
budget over g4dn.xlarge, c5n.2xlarge, r5n.large and t3.xlarge, prints the oracle's wall time against the
15-minute limit, checks that no simulated allowable throughput exceeds its configuration's fluid bound, and
prints one Markdown row per model: the Kairos pick, the top-1 by bound, the best homogeneous configuration
(budget-scaled), the oracle's best, and the ratios the paper reports. With kairos, melange and oracle it also
prints the picks that simulate nothing against the oracle's best, with what finding each cost, and checks that
the better of the two is within ``--within`` (3%) of the oracle.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from harness.allocate.run import run_allocation
from harness.cli import build_parser
from harness.cli.allocate import build_job
from harness.core.paper import PAPER_BUDGET_PER_H, PAPER_QOS_MS

PAPER_TYPES = "g4dn.xlarge,c5n.2xlarge,r5n.large,t3.xlarge"
LIMIT_S = 15 * 60


def _config(mapping: dict) -> str:
    return ",".join(f"{k.split('.')[0]}={v}" for k, v in mapping.items())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if an oracle ran over the limit or a fluid bound was beaten."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="rm2", help="comma list of models (default rm2)")
    p.add_argument(
        "--methods",
        default="kairos,homogeneous,fluid,melange,oracle",
        help="allocate --method (default kairos,homogeneous,fluid,melange,oracle; 'all' adds ribbon and anneal)",
    )
    p.add_argument(
        "--within",
        type=float,
        default=0.03,
        help="the better of the kairos and melange picks must reach this close to the oracle's best (default 0.03)",
    )
    p.add_argument("--budget", type=float, default=PAPER_BUDGET_PER_H, help="USD per hour (default 2.5)")
    p.add_argument("--types", default=PAPER_TYPES, help=f"instance types (default {PAPER_TYPES})")
    p.add_argument("--profiles", help="profile file (default: shipped)")
    p.add_argument("--qos-ms", type=float, help="QoS for every model (default: the paper's per model)")
    p.add_argument("--extra", default="", help="more `kairos allocate` options, e.g. '--queries 20000'")
    args = p.parse_args(argv)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", flush=True)
    rows, failed = [], False
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        qos = args.qos_ms if args.qos_ms is not None else PAPER_QOS_MS[model]
        cli = [
            "allocate",
            "--model",
            model,
            "--qos-ms",
            str(qos),
            "--budget",
            str(args.budget),
            "--types",
            args.types,
            "--method",
            args.methods,
            *args.extra.split(),
        ]
        if args.profiles:
            cli += ["--profiles", args.profiles]
        job = build_job(build_parser(["allocate"]).parse_args(cli))
        t0 = time.perf_counter()
        result = run_allocation(job, lambda line, model=model: print(f"  {model}: {line}", file=sys.stderr, flush=True))
        wall = time.perf_counter() - t0
        by = {m.method: m for m in result.methods}
        table = result.table
        measured = table[["allowable_qps", "final_allowable_qps"]].max(axis=1)
        beaten = table[measured > table["fluid_bound_qps"] * (1 + 1e-9)]
        ratio = (measured / table["fluid_bound_qps"]).max()
        print(
            f"{model}: {result.n_configs} configurations, run {wall:.0f} s; "
            f"max simulated/fluid bound {ratio:.3f}, configurations above their fluid bound: {len(beaten)}"
        )
        failed |= len(beaten) > 0
        if "oracle" in by:
            o = by["oracle"]
            secs = o.extra["oracle_seconds"]
            verdict = "within" if secs < LIMIT_S else "OVER"
            print(
                f"{model}: oracle over {result.n_configs} configurations with {o.extra['workers']} workers, "
                f"{job.search.queries} queries/point: {secs:.0f} s ({secs / 60:.1f} min), {verdict} the 15-minute limit"
            )
            failed |= secs >= LIMIT_S
        rows.append((model, qos, by, result))
    print()
    print(
        "| model | QoS ms | Kairos pick | qps | top-1 by bound | qps | best homogeneous | scaled qps | "
        "oracle best | qps | Kairos/homog. | Kairos/oracle | fluid pick qps | oracle s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, qos, by, _ in rows:
        k, h, o, f = by.get("kairos"), by.get("homogeneous"), by.get("oracle"), by.get("fluid")
        cell = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
        hs = h.extra["budget_scaled_qps"] if h else None
        print(
            f"| {model} | {qos:g} | {_config(k.config) if k else '-'} | {cell(k and k.allowable_qps)} | "
            f"{_config(k.extra['top1_config']) if k else '-'} | {cell(k and k.extra['top1_allowable_qps'])} | "
            f"{_config(h.config) if h else '-'} | {cell(hs)} | {_config(o.config) if o else '-'} | "
            f"{cell(o and o.allowable_qps)} | "
            f"{f'{k.allowable_qps / hs:.2f}x' if k and hs else '-'} | "
            f"{f'{k.allowable_qps / o.allowable_qps:.1%}' if k and o and o.allowable_qps else '-'} | "
            f"{cell(f and f.allowable_qps)} | {o.extra['oracle_seconds'] if o else '-'} |"
        )
    if rows and all(m in rows[0][2] for m in ("kairos", "melange", "oracle")):
        print()
        print(
            "| model | oracle best | qps | $/Mq | Kairos pick | qps | of oracle | s | Mélange pick | qps | of oracle | "
            f"s | better | within {args.within:.0%} |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model, _, by, _ in rows:
            k, m, o = by["kairos"], by["melange"], by["oracle"]
            rk, rm = k.allowable_qps / o.allowable_qps, m.allowable_qps / o.allowable_qps
            ok = max(rk, rm) >= 1 - args.within
            failed |= not ok
            print(
                f"| {model} | {_config(o.config)} | {o.allowable_qps:.1f} | {o.usd_per_million:.3f} | "
                f"{_config(k.config)} | {k.allowable_qps:.1f} | {rk:.1%} | {k.seconds:.1f} | "
                f"{_config(m.config)} | {m.allowable_qps:.1f} | {rm:.1%} | {m.seconds:.1f} | {max(rk, rm):.1%} | "
                f"{'yes' if ok else 'NO'} |"
            )
    if any(m in rows[0][2] for m in ("ribbon", "anneal")) if rows else False:
        print()
        print("| model | method | configuration | qps | evaluated | evaluated to best |")
        print("|---|---|---|---|---|---|")
        for model, _, by, _ in rows:
            for name in ("homogeneous", "ribbon", "anneal", "oracle"):
                if name in by:
                    m = by[name]
                    print(
                        f"| {model} | {name} | {_config(m.config)} | {m.allowable_qps:.1f} | {m.evaluated} | "
                        f"{m.evaluated_to_best if m.evaluated_to_best is not None else '-'} |"
                    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
