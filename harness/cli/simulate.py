"""``kairos simulate``: run policies on a trace in the simulator at one rate, or find their allowable throughput."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.allocate.plan import STATIC_CRITERIA, PlanComparison, PlanSettings, compare_with_static
from harness.allocate.space import make_problem
from harness.cli.allocate import plan_trace
from harness.core.errors import InputError
from harness.core.jsonable import dumps
from harness.core.paper import PAPER_BUDGET_PER_H, PAPER_CONFIG, resolve_qos_ms
from harness.core.plan import DEFAULT_STARTUP_S, read_plan
from harness.core.pool_config import PoolConfig
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import make_policy
from harness.live.run_dir import RunDir
from harness.measure.allowable import SearchConfig, capacity_qps, find_allowable, phase_queries
from harness.measure.analyzer import ValidityRules, stamp_allowable, summarize, summary_row
from harness.measure.replication import replicated_allowable
from harness.sim.plan_replay import PlanReplayConfig, check_plan_trace
from harness.sim.simulator import SimConfig, check_trace, simulate
from traces.generate import generate_trace
from traces.io import read_trace
from traces.resample import replicate_start
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
    replications: int = 1  # allowable searches per policy, each with its own seed (and trace window)
    source_trace: Trace | None = None  # the --trace file before the --queries cut (replicate windows); None: generated
    arrivals: str = "poisson"  # how a generated trace was made, so a replicate can draw another with its own seed
    batch_mix: str = "kairos"


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
        "--config", dest="pool_config", default=None, help=f"instance mix TYPE=N[,...] (default {PAPER_CONFIG})"
    )
    p.add_argument("--qos-ms", type=float, help="p99 latency target in ms (default: the paper's for the model)")
    p.add_argument("--policy", default=None, help=f"comma-separated policies, NAME[:k=v] (default {DEFAULT_POLICIES})")
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
    p.add_argument(
        "--replications",
        type=int,
        default=1,
        help="with --allowable: run each policy's search R times (seeds S, S+1, ...; each replicate after the first "
        "on another window of --trace when it holds more than --queries, or a trace generated afresh) and report "
        "the mean allowable throughput with a 95%% t-interval (default 1: one search, no interval)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per policy per line on stdout")
    p.add_argument("--out", help="directory for queries.parquet and summary.parquet")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    plan = p.add_argument_group("replaying a plan (kairos allocate --plan; docs/allocator.md, Plans)")
    plan.add_argument(
        "--plan",
        dest="plan_file",
        metavar="FILE",
        help="replay the whole trace (--trace, or one generated with --rate and --duration-s) against the pool this "
        "plan changes per window, under one --policy (default kairos); report each window and the dollars against "
        "the static --config, or without it the cheapest static configuration that meets QoS (--static-criterion)",
    )
    plan.add_argument(
        "--startup-s",
        type=float,
        default=DEFAULT_STARTUP_S,
        help=f"--plan: seconds from an instance's request until it serves (billed; default {DEFAULT_STARTUP_S:g})",
    )
    plan.add_argument(
        "--budget",
        type=float,
        default=PAPER_BUDGET_PER_H,
        metavar="USD_PER_H",
        help=f"--plan: hourly budget of the static configurations searched (default {PAPER_BUDGET_PER_H:g})",
    )
    plan.add_argument(
        "--types",
        help="--plan: instance types of the static configurations searched (default: every profiled and priced type)",
    )
    plan.add_argument(
        "--static-criterion",
        choices=STATIC_CRITERIA,
        default=STATIC_CRITERIA[0],
        help="--plan without --config: the static configuration must meet QoS in every window of the plan, as the "
        "plan must (windows, default), or over the whole trace taken as one (trace)",
    )
    plan.add_argument("--duration-s", type=float, help="--plan without --trace: length of the generated trace")
    p.set_defaults(func=run)


def build_job(args: argparse.Namespace) -> SimulateJob:
    """Translate CLI options into a SimulateJob (all input checks happen here)."""
    profile = Profile.load(args.profiles)
    pool = PoolConfig.parse(args.pool_config or PAPER_CONFIG)  # None: not given (--plan then finds its static pool)
    if args.queries < 1:
        raise InputError(f"--queries {args.queries}: must be >= 1")
    if args.replications < 1:
        raise InputError(f"--replications {args.replications}: must be >= 1")
    source = None
    if args.trace:
        source = read_trace(args.trace)
        if args.model:
            source = source.with_model(args.model)
        trace = source.head(args.queries)
    else:
        rng = np.random.default_rng(args.seed)
        # Generated at 1 qps and rate-scaled per run: every rate sees the same queries (common random numbers).
        trace = generate_trace(
            args.queries, 1.0, arrivals=args.arrivals, batch_mix=args.batch_mix, model=args.model or "rm2", rng=rng
        )
    model = trace.only_model()
    qos_ms = resolve_qos_ms(model, args.qos_ms)
    check_trace(trace, profile, pool)
    policies = tuple(p.strip() for p in (args.policy or DEFAULT_POLICIES).split(",") if p.strip())
    for spec in policies:
        make_policy(spec)  # fail fast on a bad name or tunable
    if args.rate is not None and not args.rate > 0:
        raise InputError(f"--rate {args.rate}: must be > 0")
    allowable = args.allowable or (args.rate is None and not args.trace)
    if args.replications > 1 and not allowable:
        raise InputError(f"--replications {args.replications}: repeats the allowable search: use it with --allowable")
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
        args.replications,
        source,
        args.arrivals,
        args.batch_mix,
    )


def _progress_line(policy: str, rate: float, s) -> str:
    verdict = "VALID" if s.valid else f"INVALID ({s.invalid_reason})"
    return (
        f"  {policy:<22} {rate:9.2f} qps  p99 {s.p99_ms:9.1f} ms  violations {100 * s.violation_rate:6.2f}%  {verdict}"
    )


def _ticker(log, policy: str, rate_qps: float, every_s: float = 5.0):
    """A simulation progress callback that logs at most every ``every_s`` seconds: a run on a pool of thousands of
    instances, or with exact kairos there, takes minutes, and silence would look like a hang."""
    t0 = time.perf_counter()
    last = [t0]

    def tick(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] >= every_s:
            last[0] = now
            log(f"  {policy:<22} {rate_qps:9.2f} qps  {done}/{total} queries simulated ({now - t0:.0f} s)")

    return tick


def replicate_trace(job: SimulateJob, replicate: int) -> tuple[Trace, int | None]:
    """The base trace of search ``replicate`` and the query it starts at (None: a trace generated afresh).

    Replicate 0 is the job's own trace. A later one takes another window of the --trace file, at a start drawn from
    ``(seed, replicate)`` as the live harness's replicates do, when the file holds more than --queries (else the same
    queries, only the draws differ); without a file it generates a trace with seed + replicate.
    """
    if replicate == 0:
        return job.base_trace, 0
    if job.source_trace is None:
        rng = np.random.default_rng(job.seed + replicate)  # as build_job draws replicate 0's, at 1 qps
        model = job.base_trace.models[0]
        trace = generate_trace(job.queries, 1.0, arrivals=job.arrivals, batch_mix=job.batch_mix, model=model, rng=rng)
        return trace, None
    full = job.source_trace
    if len(full) <= job.queries:
        return job.base_trace, 0
    start = replicate_start(len(full), job.queries, job.seed, replicate)
    return full.tail_from(start).head(job.queries), start


def _run_policy(
    job: SimulateJob, spec: str, rows: list[dict], log, base: Trace, replicate: int | None = None
) -> tuple[dict, pd.DataFrame | None]:
    """One policy's search (or fixed-rate run) on ``base``, replicate ``replicate`` (None: no replication); appends
    its summary rows to ``rows`` and returns (result, records of the final point)."""
    seed = job.seed + (replicate or 0)
    model = base.models[0]
    config = SimConfig(job.pool, job.qos_ms, job.concurrency, seed)
    kept: dict[float, pd.DataFrame] = {}  # records of the best passing point and of the latest point only
    best_ok: list[float] = []
    first_row = len(rows)
    tag = {} if replicate is None else {"replicate": replicate, "replicate_seed": seed}

    def evaluate(rate_qps: float):
        trace, scale = base, None
        if rate_qps:
            # --queries per point (or the phase's); time scaling cannot give more than the trace holds.
            queries = (
                phase_queries(rate_qps, job.phase_seconds, job.rules, job.phase_min_queries)
                if job.phase_seconds
                else job.queries or len(base)
            )
            trace = scale_trace(base, rate_qps, job.scale, seed=seed, queries=queries)
            scale = applied_scale(base, rate_qps, job.scale)
        ticker = _ticker(log, spec, rate_qps or trace.mean_rate_qps) if log else None
        records = simulate(trace, make_policy(spec), job.profile, config, progress=ticker)
        summary = summarize(records, job.qos_ms, job.rules)
        if summary.valid and (not best_ok or rate_qps > best_ok[0]):
            best_ok[:] = [rate_qps]
        keep = {rate_qps: records.assign(dispatcher=spec, phase=len(rows), offered_qps=rate_qps or summary.offered_qps)}
        if best_ok and best_ok[0] in kept:
            keep[best_ok[0]] = kept[best_ok[0]]
        kept.clear()
        kept.update(keep)
        rows.append(
            summary_row(spec, len(rows), summary, rate_qps or summary.offered_qps, job.cost_per_h, scale=scale, **tag)
        )
        return summary

    t0 = time.perf_counter()
    if job.allowable:
        latency = LatencyModel(job.profile, job.pool.instance_types, [model])
        start = 0.5 * capacity_qps(latency, job.pool.instance_types, model, base.batch_size)
        found = find_allowable(
            evaluate,
            start,
            job.search,
            on_point=(lambda r, s: log(_progress_line(spec, r, s))) if log else None,
        )
        best = found.passing
        stamp_allowable(rows[first_row:], spec, found.allowable_qps, found.bracket_qps)
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
    return result, kept.get(final_rate)


def _replicated(job: SimulateJob, spec: str, rows: list[dict], log) -> tuple[dict, pd.DataFrame | None]:
    """``job.replications`` searches of one policy combined: the mean allowable rate with its 95% interval; the
    point figures (p99, bracket...) and the records are replicate 0's, the --seed search."""
    searches, records = [], None
    for k in range(job.replications):
        base, start = replicate_trace(job, k)
        if log:
            where = "a trace generated afresh" if start is None else f"the trace from query {start}"
            log(f"  {spec}: replicate {k + 1} of {job.replications} (seed {job.seed + k}, {where})")
        result, final = _run_policy(job, spec, rows, log, base, replicate=k)
        searches.append((k, start, result))
        if k == 0:
            records = final
    figure = replicated_allowable([r["allowable_qps"] for _, _, r in searches])
    result = dict(searches[0][2])
    result.update(
        allowable_qps=figure.mean_qps,
        allowable_low_qps=figure.low_qps,
        allowable_high_qps=figure.high_qps,
        allowable_method=figure.method,
        replications=figure.replicates,
        none_replicates=figure.none,
        replicates=[
            {
                "replicate": k,
                "seed": job.seed + k,
                "start_query": start,
                "allowable_qps": r["allowable_qps"],
                "bracket_qps": r["bracket_qps"],
                "points": r["points"],
            }
            for k, start, r in searches
        ],
        seconds=round(sum(r["seconds"] for _, _, r in searches), 3),
    )
    for row in rows:
        if row["dispatcher"] == spec:
            # Each row keeps its own search's figure; allowable_qps becomes the policy's, as in a live summary.
            row.update(
                replicate_allowable_qps=row["allowable_qps"],
                allowable_qps=figure.mean_qps,
                allowable_low_qps=figure.low_qps,
                allowable_high_qps=figure.high_qps,
                allowable_method=figure.method,
                replications=figure.replicates,
            )
    return result, records


def run_job(job: SimulateJob, log=None) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """Run every policy; returns (result per policy, summary rows, records of each policy's final point)."""
    results, rows, final_records = [], [], []
    for spec in job.policies:
        if job.replications > 1:
            result, records = _replicated(job, spec, rows, log)
        else:
            result, records = _run_policy(job, spec, rows, log, job.base_trace)
        results.append(result)
        if records is not None:
            final_records.append(records)
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
                "replications": job.replications,
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
    if args.plan_file:
        return run_plan(args)
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
            + (f", {job.replications} replications" if job.replications > 1 else "")
        )
        n = len(job.pool.instance_types)
        if n > 200 and any(spec.split(":")[0] == "kairos" for spec in job.policies):
            log(
                f"note: exact kairos matches up to {2 * n} queries to {n} instances at every decision: an overloaded "
                "point can take hours; kairos_type solves Kairos' matching over instance types, at a cost that does not "
                "grow with the pool"
            )
    results, summary_rows, records = run_job(job, log)
    if args.out:
        report = write_out(Path(args.out), job, summary_rows, records)
        if log and report:
            log(f"report: {report}")
    if args.json:
        for r in results:
            print(dumps(r))
        return 0
    cost = f", ${job.cost_per_h:.3f}/h" if job.cost_per_h is not None else ""
    print(f"{job.base_trace.models[0]} on {job.pool}{cost}, QoS p99 <= {job.qos_ms:g} ms")
    if job.allowable and job.replications > 1:
        _print_replicated(job, results)
    elif job.allowable:
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


def _print_replicated(job: SimulateJob, results: list[dict]) -> None:
    """The table of ``--replications R``: each policy's mean allowable rate, its interval and every search's figure."""
    print(f"{'policy':<22} {'allowable qps':>13} {'95% interval':>19} {'none':>5}  per replicate (qps)")
    for r in results:
        mean = f"{r['allowable_qps']:13.2f}" if r["allowable_qps"] > 0 else f"{'none':>13}"
        interval = "[" + _fmt(r["allowable_low_qps"], ".3g") + ", " + _fmt(r["allowable_high_qps"], ".3g") + "]"
        each = " ".join(_fmt(x["allowable_qps"], ".3g") if x["allowable_qps"] > 0 else "none" for x in r["replicates"])
        print(f"{r['policy']:<22} {mean} {interval:>19} {r['none_replicates']:>2}/{r['replications']:<2} {each}")
    seeds = f"{job.seed}..{job.seed + job.replications - 1}"
    print(
        f"allowable qps: mean of {job.replications} searches (seeds {seeds}, each on its own trace window where the "
        f"trace allows); 95% interval: {results[0]['allowable_method'] if results else ''}"
    )


# -- plans (--plan) --------------------------------------------------------------------------------------------


def run_plan(args: argparse.Namespace) -> int:
    """``kairos simulate --plan FILE``: the plan's replay per window, and its dollars against the static pool."""
    plan = read_plan(args.plan_file)
    profile = Profile.load(args.profiles)
    prices = load_prices(args.prices)
    trace = plan_trace(args, default_model="rm2")
    model = trace.only_model()
    qos_ms = resolve_qos_ms(model, args.qos_ms)
    policies = [p.strip() for p in (args.policy or "kairos").split(",") if p.strip()]
    if len(policies) != 1:
        raise InputError(f"--policy {args.policy}: --plan replays one policy at a time")
    make_policy(policies[0])
    check_plan_trace(plan, trace)
    for w in plan.windows:
        check_trace(trace, profile, w.pool)
    if args.pool_config:
        static = PoolConfig.parse(args.pool_config)
        check_trace(trace, profile, static)
    else:
        types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
        static = make_problem(profile, prices, model, qos_ms, args.budget, types)
    replay = PlanReplayConfig(plan, qos_ms, args.startup_s, args.concurrency, args.seed)
    log = None if args.quiet else (lambda line: print(f"kairos simulate: {line}", file=sys.stderr, flush=True))
    for k, w in enumerate(plan.windows):
        cost = w.pool.cost_per_h(prices)
        if log and abs(cost - w.usd_per_h) > 1e-6:
            log(
                f"note: {plan.source} row {k + 1}: usd_per_h {w.usd_per_h:g} but {w.pool} costs {cost:g} at these prices"
            )
    if log:
        log(
            f"{model} (QoS p99 <= {qos_ms:g} ms), {policies[0]}: {len(trace)} queries of {trace.source} against "
            f"{plan.source} ({len(plan.windows)} windows, start-up {args.startup_s:g} s)"
        )
    settings = PlanSettings(plan.windows[0].duration_s, startup_s=args.startup_s, policy=policies[0], seed=args.seed)
    result = compare_with_static(
        trace, profile, prices, plan, replay, policies[0], static, settings, args.static_criterion, log
    )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result.plan_run.windows.to_parquet(out / "plan_windows.parquet", index=False)
        result.plan_run.leases.to_parquet(out / "plan_leases.parquet", index=False)
        result.plan_run.records.to_parquet(out / "plan_queries.parquet", index=False)
        if result.static_windows is not None:
            result.static_windows.to_parquet(out / "static_windows.parquet", index=False)
    if args.json:
        print(dumps(_plan_json(result)))
    else:
        _print_plan(result)
    return 0


def _plan_json(result: PlanComparison) -> dict:
    """One JSON object: the plan's windows and totals, and the static configuration's (for ``dumps``)."""
    run, static = result.plan_run, result.static_run
    return {
        "windows": run.windows.to_dict("records"),
        "qos_met_every_window": run.qos_met_every_window,
        "p99_ms": run.p99_ms,
        "usd": run.usd,
        "leases": len(run.leases),
        "static_config": result.static.config,
        "static_usd_per_h": result.static.usd_per_h,
        "static_simulated": result.static.simulated,
        "static_usd": static.usd if static is not None else None,
        "static_p99_ms": static.p99_ms if static is not None else None,
        "static_criterion": result.static_criterion,
        "static_windows": None if result.static_windows is None else result.static_windows.to_dict("records"),
        "static_qos_met_every_window": None
        if result.static_windows is None
        else bool(result.static_windows["qos_met"].all()),
        "saving": result.saving,
    }


def _print_plan(result: PlanComparison) -> None:
    """The per-window table of a plan's replay beside the static configuration's, and the totals."""
    run, static = result.plan_run, result.static_windows
    w = max([13] + [len(c) for c in run.windows["config"]])
    print(
        f"{'window':>6} {'start_s':>8} {'end_s':>8} {'plan configuration':<{w}} {'$/h':>6} {'queries':>8} "
        f"{'p99 ms':>8} {'QoS':<6} {'static p99':>10} QoS"
    )
    for k, r in enumerate(run.windows.itertuples()):
        s = static.iloc[k] if static is not None else None
        print(
            f"{r.window:6d} {r.start_s:8.0f} {r.end_s:8.0f} {r.config:<{w}} {r.usd_per_h:6.3f} {r.queries:8d} "
            f"{_fmt(r.p99_ms):>8} {'met' if r.qos_met else 'MISSED':<6} "
            + ("" if s is None else f"{_fmt(s['p99_ms']):>10} {'met' if s['qos_met'] else 'MISSED'}")
        )
    met = int(run.windows["qos_met"].sum())
    print(
        f"plan:   QoS met in {met} of {len(run.windows)} windows; p99 over the trace {_fmt(run.p99_ms)} ms; "
        f"${run.usd:.3f} billed ({len(run.leases)} instances, each from its request to its release)"
    )
    if static is None:
        what = "in every window" if result.static_criterion == "windows" else "over the whole trace"
        print(f"static: no configuration in the space meets QoS {what}")
        return
    if result.static.simulated:
        what = "in every window" if result.static_criterion == "windows" else "over the whole trace taken as one"
        how = f"the cheapest static configuration meeting QoS {what} ({result.static.simulated} simulated)"
    else:
        how = "given by --config"
    print(
        f"static: {result.static.config} (${result.static.usd_per_h:.3f}/h), {how}; p99 over the trace "
        f"{_fmt(result.static_run.p99_ms)} ms, QoS met in {int(static['qos_met'].sum())} of {len(static)} windows; "
        f"${result.static_run.usd:.3f} billed"
    )
    print(f"the plan costs {100 * result.saving:.1f}% less than the static configuration")
