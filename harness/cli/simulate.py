"""``kairos simulate``: run policies on a trace in the simulator at one rate, or find their allowable throughput."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.paper import PAPER_CONFIG, resolve_qos_ms
from harness.core.pool_config import PoolConfig
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import make_policy
from harness.live.run_dir import RunDir
from harness.measure.allowable import SearchConfig, capacity_qps, find_allowable, phase_queries
from harness.measure.analyzer import ValidityRules, stamp_allowable, summarize, summary_row
from harness.sim.simulator import SimConfig, check_trace, simulate
from traces.generate import generate_trace
from traces.io import read_trace
from traces.scalers import DEFAULT_SCALE, SCALERS, applied_scale, check_scale, scale_trace
from traces.schema import Trace

DEFAULT_POLICIES = "kairos,fcfs,clockwork,deeprecsys,least_outstanding"
RULES = ValidityRules()  # the simulator's validity rules: MLPerf early stopping over long points


@dataclass(frozen=True)
class SimulateJob:
    """Everything one ``kairos simulate`` invocation does, as data."""

    profile: Profile
    pool: PoolConfig
    qos_ms: float
    policies: tuple[str, ...]
    base_trace: Trace
    rate_qps: float | None  # None: replay as is (trace) or search (allowable)
    allowable: bool
    seed: int
    concurrency: int
    rules: ValidityRules
    search: SearchConfig
    cost_per_h: float | None
    phase_seconds: float | None = None
    phase_min_queries: int = 0
    scale: str = DEFAULT_SCALE  # how a rate is reached: a key of traces.scalers.SCALERS
    queries: int = 0  # queries per point (--queries); thin and superpose can give more than a short trace holds


def register(subparsers) -> None:
    """Add ``kairos simulate``."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate dispatch policies on a trace and latency profiles",
        description="Simulate dispatch policies on a trace and measured latency profiles. "
        "Without --rate, finds each policy's allowable throughput.",
    )
    p.add_argument("--profiles", help="latency profile parquet/CSV (default: the shipped AWS profiles)")
    p.add_argument("--model", help="model to simulate (default: the trace's, or rm2)")
    p.add_argument(
        "--config", dest="pool_config", default=PAPER_CONFIG, help=f"instance mix TYPE=N[,...] (default {PAPER_CONFIG})"
    )
    p.add_argument("--qos-ms", type=float, help="p99 latency target in ms (default: the paper's for the model)")
    p.add_argument(
        "--policy", default=DEFAULT_POLICIES, help=f"comma-separated policies, NAME[:k=v] (default {DEFAULT_POLICIES})"
    )
    p.add_argument("--trace", help="trace file (parquet/CSV); rate-scaled for --rate/--allowable")
    p.add_argument(
        "--scale",
        default=DEFAULT_SCALE,
        metavar="{" + ",".join(SCALERS) + "}",  # checked by check_scale, so a bad one reads as the library says
        help="how a rate is reached: time (compress the time axis, keeping the arrival pattern; default), "
        "thin (keep a random subset: fewer users of the same bursty service), superpose (merge time-shifted "
        "copies: more independent users); thin and superpose are one method, thinning below the trace's own "
        "rate and superposing above it",
    )
    p.add_argument("--arrivals", default="poisson", help="arrival process when no --trace (default poisson)")
    p.add_argument("--batch-mix", default="kairos", help="batch-size mix when no --trace (default kairos)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="offered load in queries/s (one run per policy)")
    mode.add_argument(
        "--allowable", action="store_true", help="search the allowable throughput (default without --rate)"
    )
    p.add_argument("--queries", type=int, default=50000, help="queries per run (default 50000; a trace is cut to this)")
    p.add_argument(
        "--seed", type=int, default=SimConfig.seed, help="seed for generated traces and service-time sampling"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=SimConfig.concurrency,
        help=f"queries one instance serves at once (default {SimConfig.concurrency})",
    )
    p.add_argument("--prices", help="CSV instance_type,usd_per_hour (default: shipped AWS prices)")
    p.add_argument(
        "--min-queries",
        type=int,
        default=RULES.min_queries,
        help=f"validity: minimum measured queries (default {RULES.min_queries})",
    )
    p.add_argument(
        "--min-duration-s",
        type=float,
        default=RULES.min_duration_s,
        help=f"validity: minimum measured span (default {RULES.min_duration_s:g})",
    )
    p.add_argument(
        "--criterion",
        choices=("mlperf", "p99"),
        default=RULES.criterion,
        help="what makes a point pass: MLPerf early stopping (default) or measured p99 <= QoS",
    )
    p.add_argument(
        "--phase-seconds",
        type=float,
        default=None,
        help="cut each point to rate x this many seconds of the scaled trace (as live phases are)",
    )
    p.add_argument(
        "--phase-queries",
        type=int,
        default=0,
        help="with --phase-seconds: at least this many queries per point (live default 1000)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=SearchConfig.rel_tol,
        help=f"allowable search: relative bracket width (default {SearchConfig.rel_tol:g})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per policy per line on stdout")
    p.add_argument("--out", help="directory for queries.parquet and summary.parquet")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def build_job(args: argparse.Namespace) -> SimulateJob:
    """Translate CLI options into a SimulateJob (all input checks happen here)."""
    profile = Profile.load(args.profiles)
    pool = PoolConfig.parse(args.pool_config)
    if args.queries < 1:
        raise InputError(f"--queries {args.queries}: must be >= 1")
    if args.trace:
        trace = read_trace(args.trace)
        if args.model:
            trace = trace.with_model(args.model)
        trace = trace.head(args.queries)
    else:
        rng = np.random.default_rng(args.seed)
        # Generated at 1 qps and rate-scaled per run: every rate sees the same queries (common random numbers).
        trace = generate_trace(
            args.queries, 1.0, arrivals=args.arrivals, batch_mix=args.batch_mix, model=args.model or "rm2", rng=rng
        )
    model = trace.only_model()
    qos_ms = resolve_qos_ms(model, args.qos_ms)
    check_trace(trace, profile, pool)
    policies = tuple(p.strip() for p in args.policy.split(",") if p.strip())
    for spec in policies:
        make_policy(spec)  # fail fast on a bad name or tunable
    if args.rate is not None and not args.rate > 0:
        raise InputError(f"--rate {args.rate}: must be > 0")
    allowable = args.allowable or (args.rate is None and not args.trace)
    try:
        cost = pool.cost_per_h(load_prices(args.prices))
    except InputError:
        if args.prices:
            raise
        cost = None  # prices are optional where no user asked for cost
    return SimulateJob(
        profile,
        pool,
        float(qos_ms),
        policies,
        trace,
        args.rate,
        allowable,
        args.seed,
        args.concurrency,
        ValidityRules(min_queries=args.min_queries, min_duration_s=args.min_duration_s, criterion=args.criterion),
        SearchConfig(rel_tol=args.tolerance),
        cost,
        args.phase_seconds,
        args.phase_queries,
        check_scale(args.scale),
        args.queries,
    )


def _progress_line(policy: str, rate: float, s) -> str:
    verdict = "VALID" if s.valid else f"INVALID ({s.invalid_reason})"
    return (
        f"  {policy:<22} {rate:9.2f} qps  p99 {s.p99_ms:9.1f} ms  violations {100 * s.violation_rate:6.2f}%  {verdict}"
    )


def run_job(job: SimulateJob, log=None) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """Run every policy; returns (result per policy, summary rows, records of each policy's final point)."""
    results, rows, final_records = [], [], []
    model = job.base_trace.models[0]
    for spec in job.policies:
        config = SimConfig(job.pool, job.qos_ms, job.concurrency, job.seed)
        kept: dict[float, pd.DataFrame] = {}  # records of the best passing point and of the latest point only
        best_ok: list[float] = []

        def evaluate(rate_qps: float, spec=spec, config=config, kept=kept, best_ok=best_ok):
            trace, scale = job.base_trace, None
            if rate_qps:
                # --queries per point (or the phase's); time scaling cannot give more than the trace holds.
                queries = (
                    phase_queries(rate_qps, job.phase_seconds, job.rules, job.phase_min_queries)
                    if job.phase_seconds
                    else job.queries or len(job.base_trace)
                )
                trace = scale_trace(job.base_trace, rate_qps, job.scale, seed=job.seed, queries=queries)
                scale = applied_scale(job.base_trace, rate_qps, job.scale)
            records = simulate(trace, make_policy(spec), job.profile, config)
            summary = summarize(records, job.qos_ms, job.rules)
            if summary.valid and (not best_ok or rate_qps > best_ok[0]):
                best_ok[:] = [rate_qps]
            keep = {
                rate_qps: records.assign(dispatcher=spec, phase=len(rows), offered_qps=rate_qps or summary.offered_qps)
            }
            if best_ok and best_ok[0] in kept:
                keep[best_ok[0]] = kept[best_ok[0]]
            kept.clear()
            kept.update(keep)
            rows.append(
                summary_row(spec, len(rows), summary, rate_qps or summary.offered_qps, job.cost_per_h, scale=scale)
            )
            return summary

        t0 = time.perf_counter()
        if job.allowable:
            latency = LatencyModel(job.profile, job.pool.instance_types, [model])
            start = 0.5 * capacity_qps(latency, job.pool.instance_types, model, job.base_trace.batch_size)
            found = find_allowable(
                evaluate,
                start,
                job.search,
                on_point=(lambda r, s, spec=spec: log(_progress_line(spec, r, s))) if log else None,
            )
            best = found.passing
            stamp_allowable(rows, spec, found.allowable_qps, found.bracket_qps)
            result = {
                "policy": spec,
                "allowable_qps": found.allowable_qps,
                "bracket_qps": [found.bracket_qps[0], found.bracket_qps[1]],
                "points": len(found.points),
            }
            final_rate = found.allowable_qps if best else found.points[-1][0]
            summary = best or found.points[-1][1]
        else:
            summary = evaluate(job.rate_qps)
            final_rate = job.rate_qps
            if log:
                log(_progress_line(spec, job.rate_qps or summary.offered_qps, summary))
            result = {"policy": spec, "rate_qps": job.rate_qps or summary.offered_qps}
        result.update(
            scale=job.scale,
            queries=summary.queries,
            p99_ms=summary.p99_ms,
            p99_ci_ms=[summary.p99_ci_low_ms, summary.p99_ci_high_ms],
            p50_ms=summary.p50_ms,
            p999_ms=summary.p999_ms,
            violation_rate=summary.violation_rate,
            valid=summary.valid,
            qos_ms=job.qos_ms,
            config=job.pool.as_dict(),
            cost_per_h=job.cost_per_h,
            seconds=round(time.perf_counter() - t0, 3),
        )
        results.append(result)
        if kept.get(final_rate) is not None:
            final_records.append(kept[final_rate])
    return results, pd.DataFrame(rows), pd.concat(final_records, ignore_index=True) if final_records else None


def write_out(out: Path, job: SimulateJob, summary_rows: pd.DataFrame, records: pd.DataFrame | None) -> Path | None:
    """Write the run folder (summary.parquet, queries.parquet, run.json, report.html) into ``out``."""
    run_dir = RunDir(
        out,
        exist_ok=True,
        meta={
            "kind": "simulated",
            "model": job.base_trace.models[0],
            "qos_ms": job.qos_ms,
            "pool_config": str(job.pool),
            "cost_per_h": job.cost_per_h,
            "trace": {"source": job.base_trace.source, "queries": len(job.base_trace)},
            "config": {
                "policies": list(job.policies),
                "seed": job.seed,
                "criterion": job.rules.criterion,
                "min_queries": job.rules.min_queries,
                "min_duration_s": job.rules.min_duration_s,
                "tolerance": job.search.rel_tol,
                "phase_seconds": job.phase_seconds,
                "scale": job.scale,
                "profiles": job.profile.source,
            },
        },
    )
    if records is not None:
        run_dir.add_queries(records)
    run_dir.add_summary(*summary_rows.to_dict("records"))
    return run_dir.finish(partial=False)


def _fmt(x: float, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kairos simulate``."""
    job = build_job(args)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if log:
        what = (
            "allowable throughput" if job.allowable else (f"{job.rate_qps:g} qps" if job.rate_qps else "trace replay")
        )
        log(
            f"kairos simulate: {job.base_trace.models[0]} on {job.pool} (QoS p99 <= {job.qos_ms:g} ms), "
            f"{len(job.base_trace)} queries/run, {what}"
            + (f", {job.scale} scaling" if job.rate_qps or job.allowable else "")
        )
    results, summary_rows, records = run_job(job, log)
    if args.out:
        report = write_out(Path(args.out), job, summary_rows, records)
        if log and report:
            log(f"report: {report}")
    if args.json:
        for r in results:
            print(json.dumps(r, default=float))
        return 0
    cost = f", ${job.cost_per_h:.3f}/h" if job.cost_per_h is not None else ""
    print(f"{job.base_trace.models[0]} on {job.pool}{cost}, QoS p99 <= {job.qos_ms:g} ms")
    if job.allowable:
        print(f"{'policy':<22} {'allowable qps':>13} {'bracket':>19} {'p99 ms':>9} {'p99 95% CI':>19} {'viol %':>7}")
        for r in results:
            lo, hi = r["bracket_qps"]
            ci = r["p99_ci_ms"]
            allowable = f"{r['allowable_qps']:13.2f}" if r["allowable_qps"] > 0 else f"{'none':>13}"
            print(
                f"{r['policy']:<22} {allowable} {'[' + _fmt(lo, '.3g') + ', ' + _fmt(hi, '.3g') + ']':>19} "
                f"{_fmt(r['p99_ms']):>9} {'[' + _fmt(ci[0]) + ', ' + _fmt(ci[1]) + ']':>19} "
                f"{_fmt(100 * r['violation_rate'], '.2f'):>7}"
            )
        if any(r["allowable_qps"] <= 0 for r in results):
            print("none: no tested rate met the QoS target; the bracket's upper end is the lowest rate tried")
    else:
        print(f"{'policy':<22} {'rate qps':>9} {'p50 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} {'viol %':>7} valid")
        for r in results:
            print(
                f"{r['policy']:<22} {r['rate_qps']:9.2f} {_fmt(r['p50_ms']):>9} {_fmt(r['p99_ms']):>9} "
                f"{_fmt(r['p999_ms']):>9} {_fmt(100 * r['violation_rate'], '.2f'):>7} {r['valid']}"
            )
    return 0
