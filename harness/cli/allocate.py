"""``kairos allocate``: choose the instance mix to rent under a budget, and compare with the alternatives."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

from harness.allocate.anneal import AnnealSettings
from harness.allocate.bound import PickRule, parse_threshold
from harness.allocate.evaluate import FINAL_SETTINGS, EvalSettings, ExecutorSpec
from harness.allocate.plan import PlanResult, PlanSettings, plan_for_trace
from harness.allocate.ribbon import RibbonSettings
from harness.allocate.run import METHODS, AllocateJob, AllocationResult, parse_methods, run_allocation
from harness.allocate.space import make_problem
from harness.core.errors import InputError
from harness.core.jsonable import dumps
from harness.core.paper import resolve_qos_ms
from harness.core.plan import DEFAULT_STARTUP_S, write_plan
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from harness.report.allocation import allocation_html
from traces.generate import generate_trace
from traces.io import read_trace
from traces.schema import Trace

SEARCH = EvalSettings()


def register(subparsers) -> None:
    """Add ``kairos allocate``."""
    p = subparsers.add_parser(
        "allocate",
        help="choose an instance mix under a budget (Kairos bound) and compare with baselines",
        description="Rank every instance mix under the budget by the Kairos throughput upper bound and a fluid LP "
        "bound, pick one without running any (kairos), and optionally compare with the best homogeneous "
        "mix, a Mélange-style integer program (melange), Ribbon-style Bayesian optimisation, simulated "
        "annealing and the exhaustive oracle. Every pick is measured in the simulator (allowable throughput "
        "under --policy) and priced in dollars per million queries served within QoS.",
    )
    p.add_argument("--model", help="model to allocate for (default: the trace's)")
    p.add_argument("--qos-ms", type=float, help="p99 latency target in ms (default: the paper's for the model)")
    p.add_argument("--budget", type=float, required=True, metavar="USD_PER_H", help="hourly budget in USD")
    p.add_argument("--types", help="candidate instance types T1,T2,... (default: every profiled and priced type)")
    p.add_argument("--max-count", help="per-type caps TYPE=N,... (default: what the budget allows)")
    p.add_argument("--profiles", help="latency profile parquet/CSV (default: the shipped AWS profiles)")
    p.add_argument("--prices", help="CSV instance_type,usd_per_hour (default: shipped AWS prices)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--trace", help="trace file whose batch mix (and arrivals, rate-scaled) to use")
    src.add_argument("--batch-mix", default="kairos", help="batch-size mix of a generated trace (default kairos)")
    p.add_argument("--arrivals", default="poisson", help="arrival process of a generated trace (default poisson)")
    p.add_argument("--method", default="kairos", help=f"comma list of {','.join(METHODS)}, or all (default kairos)")
    p.add_argument("--policy", default=SEARCH.policy, help="dispatch policy simulated (default kairos)")
    p.add_argument(
        "--top-k",
        type=int,
        default=PickRule().top_k,
        help=f"Kairos pick: choose among the top K by bound (default {PickRule().top_k}; 1 = top-1)",
    )
    p.add_argument(
        "--pick-by",
        default=PickRule().by,
        choices=("queue", "bound"),
        help="Kairos pick: score the top K by the queueing-aware estimate (queue, default) or by the "
        "bound itself (bound, the paper's near-ties)",
    )
    p.add_argument(
        "--pick-within",
        type=float,
        default=PickRule().within,
        help=f"Kairos pick: the medoid of those whose score is within this fraction of the best "
        f"(default {PickRule().within:g})",
    )
    p.add_argument(
        "--threshold",
        default="mean",
        help="Kairos bound: an auxiliary type violates QoS where its bucket mean (mean, the artifact's "
        "rule, default) or a sample percentile (e.g. p99) exceeds the target",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=SEARCH.queries,
        help=f"queries per simulated point while searching (default {SEARCH.queries})",
    )
    p.add_argument(
        "--tolerance", type=float, default=SEARCH.rel_tol, help=f"search bracket, relative (default {SEARCH.rel_tol:g})"
    )
    p.add_argument(
        "--final-queries",
        type=int,
        default=FINAL_SETTINGS.queries,
        help=f"queries per point when measuring each pick (default {FINAL_SETTINGS.queries})",
    )
    p.add_argument(
        "--final-tolerance",
        type=float,
        default=FINAL_SETTINGS.rel_tol,
        help=f"bracket when measuring each pick (default {FINAL_SETTINGS.rel_tol:g})",
    )
    p.add_argument("--no-measure", action="store_true", help="do not simulate the picks (bounds and searches only)")
    p.add_argument(
        "--oracle-refine", type=int, default=5, help="oracle: re-measure its N best at the final fidelity (default 5)"
    )
    p.add_argument(
        "--ribbon-evals",
        type=int,
        default=RibbonSettings().max_evals,
        help=f"ribbon: at most N evaluations (default {RibbonSettings().max_evals})",
    )
    p.add_argument(
        "--anneal-evals",
        type=int,
        default=AnnealSettings().max_evals,
        help=f"anneal: at most N evaluations (default {AnnealSettings().max_evals})",
    )
    p.add_argument("--workers", type=int, help="worker processes for the oracle and measurements (default: CPUs)")
    p.add_argument(
        "--executor",
        default="local",
        metavar="local|dask://HOST:PORT",
        help="where the oracle and the measurements simulate: local worker processes (default), or the workers of a "
        "running Dask distributed scheduler (dask:// or tcp://; needs pip install -e '.[dask]')",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the trace, the simulator and the searches (default 0)")
    p.add_argument("--json", action="store_true", help="one JSON object per method per line on stdout")
    p.add_argument("--out", help="directory for allocation.parquet and allocation.html")
    p.add_argument("--rows", type=int, default=15, help="ranked rows printed on the console (default 15)")
    p.add_argument("--launch", action="store_true", help="exec `kairos serve pool` with the chosen configuration")
    p.add_argument("--pool-file", default="pool.json", help="pool file for --launch (default pool.json)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    plan = p.add_argument_group("plans that follow the load (docs/allocator.md, Plans)")
    plan.add_argument(
        "--plan",
        dest="window_s",
        type=float,
        metavar="WINDOW_S",
        help="instead of one configuration, plan one per WINDOW_S seconds of the trace (the whole --trace, or one "
        "generated with --rate and --duration-s) and write it to --plan-file",
    )
    plan.add_argument(
        "--startup-s",
        type=float,
        default=DEFAULT_STARTUP_S,
        help=f"seconds from an instance's request until it serves (billed; default {DEFAULT_STARTUP_S:g})",
    )
    plan.add_argument(
        "--plan-margin",
        dest="margin",
        type=float,
        default=PlanSettings.margin,
        help=f"a window's target rate is its peak sub-window rate times this (default {PlanSettings.margin:g})",
    )
    plan.add_argument(
        "--plan-subwindow-s",
        dest="subwindow_s",
        type=float,
        default=PlanSettings.subwindow_s,
        help=f"sub-window over which a window's peak rate is measured (default {PlanSettings.subwindow_s:g})",
    )
    plan.add_argument(
        "--plan-file", default="plan.csv", help="where --plan writes the plan, .csv or .parquet (default plan.csv)"
    )
    plan.add_argument("--rate", type=float, help="--plan without --trace: mean rate of the generated trace (qps)")
    plan.add_argument("--duration-s", type=float, help="--plan without --trace: length of the generated trace")
    p.set_defaults(func=run)


def _parse_caps(text: str | None) -> dict[str, int]:
    caps: dict[str, int] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, sep, num = part.partition("=")
        try:
            caps[name.strip()] = int(num)
        except ValueError:
            raise InputError(f"--max-count: {part!r}: expected TYPE=N") from None
        if not sep or not name.strip():
            raise InputError(f"--max-count: {part!r}: expected TYPE=N")
    return caps


def build_job(args: argparse.Namespace) -> AllocateJob:
    """Translate the options into an AllocateJob (all input checks happen here)."""
    methods = parse_methods(args.method)
    if not (isinstance(args.budget, float) and math.isfinite(args.budget) and args.budget > 0):
        raise InputError(f"--budget {args.budget!r}: must be a positive number of USD per hour")
    profile = Profile.load(args.profiles)
    prices = load_prices(args.prices)
    n = max(args.queries, args.final_queries)
    if args.trace:
        trace = read_trace(args.trace)
        if args.model:
            trace = trace.with_model(args.model)
        trace = trace.head(n)
        model = trace.only_model()
    else:
        if not args.model:
            raise InputError("--model is required without --trace")
        model = args.model
        trace = generate_trace(
            n, 1.0, arrivals=args.arrivals, batch_mix=args.batch_mix, model=model, rng=np.random.default_rng(args.seed)
        )
    qos = resolve_qos_ms(model, args.qos_ms)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    if types is None and not args.quiet:
        unpriced = [t for t in profile.instance_types if (t, model) in profile.tables and t not in prices]
        if unpriced:
            print(
                f"kairos allocate: note: no price for {', '.join(unpriced)}; left out (add them with --prices)",
                file=sys.stderr,
            )
    problem = make_problem(profile, prices, model, float(qos), args.budget, types, _parse_caps(args.max_count))
    # Fail early, with the type named, if some candidate cannot serve the trace's largest batch.
    for t in problem.types:
        largest = profile.table(t, model).max_batch
        if int(trace.batch_size.max()) > largest:
            raise InputError(
                f"the trace has batches up to {int(trace.batch_size.max())} but {t} is profiled for "
                f"{model} only up to {largest}; drop it with --types or change the batch mix"
            )
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be >= 1")
    executor = ExecutorSpec.parse(args.executor)
    if args.workers is not None and not executor.is_local:
        raise InputError(
            f"--workers {args.workers}: counts local processes; on {args.executor} the cluster's workers run the "
            "simulations (start them with as many processes as wanted)"
        )
    search = EvalSettings(queries=args.queries, seed=args.seed, policy=args.policy, rel_tol=args.tolerance)
    final = EvalSettings(queries=args.final_queries, seed=args.seed, policy=args.policy, rel_tol=args.final_tolerance)
    if args.oracle_refine < 1:
        raise InputError(f"--oracle-refine {args.oracle_refine}: must be >= 1")
    return AllocateJob(
        problem,
        profile,
        trace,
        methods,
        search,
        final,
        PickRule(args.top_k, args.pick_within, args.pick_by),
        RibbonSettings(max_evals=args.ribbon_evals, seed=args.seed),
        AnnealSettings(max_evals=args.anneal_evals, seed=args.seed),
        args.oracle_refine,
        args.workers,
        not args.no_measure,
        parse_threshold(args.threshold),
        executor,
    )


def _f(x, spec=".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def print_report(result: AllocationResult, rows: int) -> None:
    """The console tables: Kairos inputs, ranked configurations, and each method's answer."""
    p = result.problem
    print(
        f"{p.model}: p99 <= {p.qos_ms:g} ms, budget ${p.budget_per_h:.2f}/h, {result.n_configs} configurations "
        f"of {', '.join(p.types)} (base {p.base_type})"
    )
    print(f"base {p.base_type}: {result.stats.base_qps:.2f} qps on the whole mix")
    print(f"{'auxiliary type':<16} {'violates at':>11} {'small ratio':>11} {'base time':>9} {'qps on small':>12}")
    for a in result.stats.aux_profiles():
        print(
            f"{a.instance_type:<16} {a.violating_batch if a.violating_batch else '-':>11} "
            f"{a.small_ratio:11.3f} {a.base_time_ratio:9.3f} {a.small_qps:12.2f}"
        )
    t = result.table
    picked = t["picked_by"].str.len() > 0
    shown = t[(t.index < rows) | picked]
    w = max(
        [13]
        + [len(c) for c in shown["config"]]
        + [len(",".join(f"{k}={v}" for k, v in m.config.items())) for m in result.methods]
    )
    print()
    print(
        f"{'rank':>4} {'configuration':<{w}} {'$/h':>6} {'kairos ub':>9} {'fluid ub':>9} {'queue est':>9} "
        f"{'allowable':>9} {'final':>9} {'$/Mq':>7}  picked by"
    )
    for _, r in shown.iterrows():
        rank = str(int(r["kairos_rank"])) if r["kairos_rank"] > 0 else "-"
        print(
            f"{rank:>4} {r['config']:<{w}} {r['cost_per_h']:6.3f} {r['kairos_bound_qps']:9.1f} "
            f"{r['fluid_bound_qps']:9.1f} {_f(r['queue_estimate_qps']):>9} {_f(r['allowable_qps']):>9} "
            f"{_f(r['final_allowable_qps']):>9} {_f(r['usd_per_million'], '.3f'):>7}  {r['picked_by']}"
        )
    print()
    oracle = next((m for m in result.methods if m.method == "oracle"), None)
    print(
        f"{'method':<12} {'configuration':<{w}} {'$/h':>6} {'allowable':>9} {'$/Mq':>7} {'of fluid':>8} "
        f"{'of oracle':>9} {'evaluated':>9} {'seconds':>8}"
    )
    for m in result.methods:
        of_fluid = m.allowable_qps / m.fluid_bound_qps if m.fluid_bound_qps > 0 else math.nan
        of_oracle = m.allowable_qps / oracle.allowable_qps if oracle and oracle.allowable_qps > 0 else math.nan
        label = ",".join(f"{k}={v}" for k, v in m.config.items())
        extra = ""
        if m.method == "homogeneous":
            extra = f"  budget-scaled {_f(m.extra.get('budget_scaled_qps'))}"
        if m.method == "kairos":
            extra = (
                f"  top-1 {','.join(f'{k}={v}' for k, v in m.extra['top1_config'].items())}: "
                f"{_f(m.extra.get('top1_allowable_qps'))} (pick is rank {m.extra['pick_rank']}, medoid of "
                f"{m.extra['candidates']} of the top {m.extra['top_k']} within {m.extra['within']:.0%} of the "
                f"best {'queueing-aware estimate' if m.extra['pick_by'] == 'queue' else 'bound'})"
            )
        if m.method == "melange":
            extra = (
                f"  model {_f(m.extra.get('model_qps'))} qps ({m.extra['queue']} queues, {m.extra['tail']} tail, "
                f"{m.extra['buckets']} buckets, {m.extra['rounds']} round(s))"
            )
        print(
            f"{m.method:<12} {label:<{w}} {m.cost_per_h:6.3f} {_f(m.allowable_qps):>9} "
            f"{_f(m.usd_per_million, '.3f'):>7} {_f(of_fluid, '.0%'):>8} {_f(of_oracle, '.0%'):>9} "
            f"{m.evaluated:>9} {m.seconds:8.1f}{extra}"
        )


def launch(result: AllocationResult, pool_file: str, args: argparse.Namespace) -> int:
    """Replace this process with ``kairos serve pool`` for the chosen configuration."""
    chosen = result.methods[0]
    config = ",".join(f"{k}={v}" for k, v in chosen.config.items())
    argv = [
        sys.executable,
        "-m",
        "harness.cli",
        "serve",
        "pool",
        "--config",
        config,
        "--model",
        result.problem.model,
        "--pool-file",
        pool_file,
    ]
    if args.profiles:
        argv += ["--profiles", args.profiles]
    if args.prices:
        argv += ["--prices", args.prices]
    print(f"kairos allocate: launching {' '.join(argv[3:])}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kairos allocate``."""
    if args.window_s is not None:
        return run_plan(args)
    job = build_job(args)
    job.executor.check()  # an unreachable scheduler fails here, not after the bounds and the first methods
    log = None if args.quiet else (lambda line: print(f"kairos allocate: {line}", file=sys.stderr, flush=True))
    if log:
        log(
            f"{job.problem.model}, p99 <= {job.problem.qos_ms:g} ms, ${job.problem.budget_per_h:g}/h; "
            f"methods {', '.join(job.methods)}"
            + ("" if job.executor.is_local else f"; simulations on {job.executor.label}")
        )
    result = run_allocation(job, log)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result.table.to_parquet(out / "allocation.parquet", index=False)
        (out / "allocation.html").write_text(allocation_html(result.table))
    if args.json:
        for m in result.methods:
            print(dumps(m.as_json()))
    else:
        print_report(result, args.rows)
    if args.launch:
        sys.stdout.flush()
        return launch(result, args.pool_file, args)
    return 0


# -- plans (--plan) --------------------------------------------------------------------------------------------


def plan_trace(args: argparse.Namespace, default_model: str | None = None) -> Trace:
    """The whole trace a plan follows (``kairos allocate --plan``) or is replayed on (``kairos simulate --plan``):
    --trace, or one generated with --rate and --duration-s (the same way in both, so the two agree)."""
    if args.trace:
        if args.rate is not None or args.duration_s is not None:
            raise InputError("--rate and --duration-s generate a trace: give them without --trace")
        trace = read_trace(args.trace)
        return trace.with_model(args.model) if args.model else trace
    model = args.model or default_model
    if not model:
        raise InputError("--model is required without --trace")
    if args.rate is None or args.duration_s is None:
        raise InputError("--plan needs a trace that spans time: --trace FILE, or --rate QPS and --duration-s S")
    for name, value in (("--rate", args.rate), ("--duration-s", args.duration_s)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} {value!r}: must be > 0")
    n = max(2, round(args.rate * args.duration_s))
    rng = np.random.default_rng(args.seed)
    return generate_trace(n, args.rate, arrivals=args.arrivals, batch_mix=args.batch_mix, model=model, rng=rng)


def run_plan(args: argparse.Namespace) -> int:
    """``kairos allocate --plan WINDOW_S``: one configuration per window, written to --plan-file."""
    if args.executor.strip() != "local":
        raise InputError(f"--executor {args.executor}: --plan simulates its windows one at a time in this process")
    settings = PlanSettings(
        args.window_s,
        startup_s=args.startup_s,
        subwindow_s=args.subwindow_s,
        margin=args.margin,
        queries=args.queries,
        policy=args.policy,
        seed=args.seed,
    )
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise InputError(f"--budget {args.budget!r}: must be a positive number of USD per hour")
    if not str(args.plan_file).lower().endswith((".csv", ".parquet")):
        raise InputError(f"--plan-file {args.plan_file}: use a .csv or .parquet name")
    profile = Profile.load(args.profiles)
    prices = load_prices(args.prices)
    trace = plan_trace(args)
    model = trace.only_model()
    qos = resolve_qos_ms(model, args.qos_ms)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    problem = make_problem(profile, prices, model, float(qos), args.budget, types, _parse_caps(args.max_count))
    for t in problem.types:
        largest = profile.table(t, model).max_batch
        if int(trace.batch_size.max()) > largest:
            raise InputError(
                f"{trace.source} has batches up to {int(trace.batch_size.max())} but {t} is profiled for "
                f"{model} only up to {largest}; drop it with --types"
            )
    log = None if args.quiet else (lambda line: print(f"kairos allocate: {line}", file=sys.stderr, flush=True))
    if log:
        log(
            f"{model}, p99 <= {qos:g} ms, ${args.budget:g}/h; plan over {trace.source} ({len(trace)} queries, "
            f"{trace.duration_s:.0f} s) in windows of {args.window_s:g} s"
        )
    result = plan_for_trace(problem, profile, trace, settings, log)
    path = write_plan(result.plan, args.plan_file)
    if args.json:
        for c in result.choices:
            row = {k: getattr(c, k) for k in c.__dataclass_fields__ if k != "counts"}
            print(dumps(row))
    else:
        print_plan(result, problem.qos_ms, settings)
    print(
        f"kairos allocate: plan written to {path}; replay it with kairos simulate --plan {path} "
        f"{'--trace ' + args.trace if args.trace else '(and the same --rate, --duration-s, --seed)'}",
        file=sys.stderr,
    )
    return 0


def print_plan(result: PlanResult, qos_ms: float, settings: PlanSettings) -> None:
    """The per-window table of a plan and its dollars at the windows' prices."""
    w = max([13] + [len(c.config) for c in result.choices])
    print(
        f"windows of {settings.window_s:g} s; target = peak {settings.subwindow_s:g}-s rate x {settings.margin:g}; "
        f"each confirmed in the simulator at its target ({settings.rules.criterion} <= {qos_ms:g} ms, {settings.policy})"
    )
    print(
        f"{'start_s':>8} {'end_s':>8} {'queries':>8} {'peak qps':>8} {'target':>8} {'configuration':<{w}} "
        f"{'$/h':>6} {'fluid ub':>8} {'p99 ms':>7} {'simulated':>9}"
    )
    for c in result.choices:
        print(
            f"{c.start_s:8.0f} {c.end_s:8.0f} {c.queries:8d} {c.peak_qps:8.1f} {c.target_qps:8.1f} {c.config:<{w}} "
            f"{c.usd_per_h:6.3f} {c.fluid_bound_qps:8.1f} {_f(c.p99_ms):>7}{'' if c.confirmed else '*'} "
            f"{c.simulated:9d}"
        )
    if not all(c.confirmed for c in result.choices):
        print("* no configuration under the budget was confirmed at the target: the one with the highest bound")
    print(
        f"plan: {len(result.choices)} windows, ${result.planned_usd:.3f} at the windows' prices (start-up and drain "
        f"time are billed on replay); {result.simulated} simulations, {result.seconds:.0f} s"
    )
