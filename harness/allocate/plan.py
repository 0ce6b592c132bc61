"""Plans that follow the load: one configuration per time window of a non-stationary trace, and the best static one.

Per window (``plan_for_trace``):

1. **Target rate.** The window's peak rate, measured over sub-windows (``subwindow_s``, 60 s by default: short
   enough to see a diurnal ramp, long enough that a sub-window at tens of qps holds thousands of queries), times a
   ``margin`` (1.05): head-room for what the sub-window peak does not see (a burst shorter than a sub-window, the
   Poisson noise of a count) and for the traffic the plan will meet not being the trace it was made from.
2. **Confirming trace.** The window's own queries with each sub-window's arrivals stretched or compressed in time so
   that every sub-window runs at the target rate: the window's batch mix and short-range arrival pattern at a flat
   rate, the ramp taken out (a ramped window scaled as a whole would run its peak above the target). At most
   ``queries`` of them are simulated.
3. **Pick.** Every configuration of the allocator's search space (``enumerate_configs``), cheapest first; one whose
   fluid bound is below the target is skipped (no policy serves more), and so is one no larger than a configuration
   that already failed at a rate at or below the target, in this window or an earlier one (more load cannot help).
   The first that the simulator confirms is the window's: measured p99 within QoS after a 5% warm-up (the test the
   plan is held to per window), the point aborted as soon as it holds more violations than that allows.

``cheapest_static`` finds the configuration to compare a plan with: the cheapest of the same space whose simulated
p99, replayed on the whole trace as is, is within QoS in every window of the plan (the plan's own test), or over the
whole trace taken as one. A candidate is skipped when the fluid backlog bound already forces more violations than
the whole trace's p99 allows (queries arriving faster than the fluid bound serves them pile up; in each episode,
the backlog beyond what the QoS lets wait must miss it) or when it is no larger than one that failed; each
simulation is aborted once a window holds more violations than its p99 allows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.allocate.evaluate import AbortingPolicy, _Abort
from harness.allocate.fluid import fluid_bounds, fluid_model
from harness.allocate.space import AllocationProblem, BatchMix, config_costs, enumerate_configs
from harness.core.errors import InputError
from harness.core.plan import DEFAULT_STARTUP_S, Plan, PlanWindow
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import latency_ms
from harness.dispatch.policies import make_policy
from harness.measure.analyzer import ValidityRules, max_violations_allowed, percentile_ms, summarize
from harness.sim.plan_replay import PlanReplayConfig, PlanRun, replay_plan, window_table
from harness.sim.simulator import SimConfig, simulate
from traces.schema import Trace


@dataclass(frozen=True)
class PlanSettings:
    """How a plan is made: window and sub-window lengths, margin, start-up delay, and how windows are confirmed."""

    window_s: float
    startup_s: float = DEFAULT_STARTUP_S
    subwindow_s: float = 60.0
    margin: float = 1.05
    queries: int = 10_000
    policy: str = "kairos"
    seed: int = 0
    # The plan is held to p99 <= QoS per window, so that is what confirms a window (the allocator's MLPerf rule asks
    # for 99% confidence, which the kairos policy, whose p99 sits just under the QoS at most loads, passes only on
    # far larger pools); the margin is the head-room.
    rules: ValidityRules = ValidityRules(min_queries=100, min_duration_s=0.0, criterion="p99")

    def __post_init__(self):
        for name in ("window_s", "subwindow_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{value!r}: must be a positive number of seconds", field=name)
        if not (math.isfinite(self.startup_s) and self.startup_s >= 0):
            raise InputError(f"{self.startup_s!r}: must be a number of seconds >= 0", field="startup_s")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise InputError(f"{self.margin!r}: must be > 0", field="margin")
        if self.queries < 100:
            raise InputError(f"{self.queries}: must be >= 100", field="queries")
        make_policy(self.policy)  # fail fast on a bad policy spec


@dataclass(frozen=True)
class WindowChoice:
    """One window's configuration and how it was chosen."""

    start_s: float
    end_s: float
    queries: int
    peak_qps: float
    target_qps: float
    counts: tuple[int, ...]
    config: str
    usd_per_h: float
    fluid_bound_qps: float
    p99_ms: float  # of the confirming simulation (nan when the window was too quiet to simulate)
    simulated: int  # configurations simulated for this window
    confirmed: bool  # False: no configuration in the space passed; the one with the highest fluid bound is used


@dataclass(frozen=True, eq=False)
class PlanResult:
    """A plan, the choice behind each window, and what making it cost."""

    plan: Plan
    choices: tuple[WindowChoice, ...]
    simulated: int
    seconds: float

    @property
    def planned_usd(self) -> float:
        """Dollars of the windows at their hourly price (no start-up or drain time)."""
        return sum(w.usd_per_h * w.duration_s / 3600.0 for w in self.plan.windows)


@dataclass(frozen=True)
class StaticChoice:
    """The cheapest static configuration whose p99 over the whole trace is within QoS (None: none in the space)."""

    counts: tuple[int, ...] | None
    config: str | None
    usd_per_h: float
    p99_ms: float
    simulated: int
    seconds: float


def window_edges(trace: Trace, window_s: float, subwindow_s: float = 0.0) -> list[tuple[float, float]]:
    """Consecutive windows of ``window_s`` from the first arrival to the last."""
    # A remainder shorter than a sub-window joins the window before it: too short to measure a rate on.
    start, end = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
    if end <= start:
        return [(start, start + window_s)]
    edges = [start]
    while edges[-1] + window_s < end:
        edges.append(edges[-1] + window_s)
    edges.append(end)
    if len(edges) > 2 and edges[-1] - edges[-2] < subwindow_s:
        del edges[-2]
    return list(zip(edges[:-1], edges[1:]))


def _subwindows(start_s: float, end_s: float, subwindow_s: float) -> np.ndarray:
    """Sub-window edges from ``start_s`` to ``end_s``; a last piece under half a sub-window joins the one before."""
    edges = list(np.arange(start_s, end_s, subwindow_s)) + [end_s]
    if len(edges) > 2 and edges[-1] - edges[-2] < 0.5 * subwindow_s:
        del edges[-2]
    return np.asarray(edges, dtype=float)


def peak_rate_qps(arrival_s: np.ndarray, start_s: float, end_s: float, subwindow_s: float) -> float:
    """The highest arrival rate over the sub-windows of ``[start_s, end_s)``."""
    edges = _subwindows(start_s, end_s, subwindow_s)
    counts, _ = np.histogram(arrival_s, bins=edges)
    return float(np.max(counts / np.diff(edges))) if len(counts) else 0.0


def flatten_to_rate(trace: Trace, start_s: float, end_s: float, subwindow_s: float, rate_qps: float) -> Trace:
    """The queries of ``[start_s, end_s)`` with each sub-window's arrivals rescaled in time to ``rate_qps``."""
    arr = trace.arrival_s
    lo, hi = np.searchsorted(arr, [start_s, end_s], side="left")
    t = arr[lo:hi]
    edges = _subwindows(start_s, end_s, subwindow_s)
    piece = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(piece, minlength=len(edges) - 1).astype(float)
    new_len = counts / rate_qps  # each sub-window then holds its queries at exactly rate_qps
    new_start = np.concatenate([[0.0], np.cumsum(new_len)[:-1]])
    stretch = new_len / np.diff(edges)
    warped = new_start[piece] + (t - edges[piece]) * stretch[piece]
    warped = np.maximum.accumulate(warped) if len(warped) else warped  # float rounding at piece edges
    extra = {k: v[lo:hi] for k, v in trace.extra.items()}
    note = f"{trace.source} [{start_s:g}, {end_s:g}) s at a flat {rate_qps:g} qps"
    return Trace(warped, trace.batch_size[lo:hi], trace.model[lo:hi], extra, note)


class _Confirmer:
    """Simulated verdicts of (configuration, window) with the failures remembered across windows."""

    def __init__(self, problem: AllocationProblem, profile: Profile, settings: PlanSettings):
        self.problem, self.profile, self.settings = problem, profile, settings
        self.failed: list[tuple[np.ndarray, float]] = []  # (counts, target qps it failed at)
        self.simulated = 0

    def known_to_fail(self, counts: np.ndarray, rate_qps: float) -> bool:
        """True when a configuration at least as large failed at a rate at or below ``rate_qps``."""
        return any(r <= rate_qps and np.all(c >= counts) for c, r in self.failed)

    def passes(self, counts: np.ndarray, trace: Trace, rate_qps: float) -> tuple[bool, float]:
        """Simulate ``counts`` on ``trace``: (VALID by the rules, p99 ms; nan when aborted)."""
        s = self.settings
        self.simulated += 1
        pool = PoolConfig.from_mapping(self.problem.as_mapping(counts))
        skip = s.rules.warmup_queries(len(trace))
        measured = len(trace) - skip
        allowed = (
            max_violations_allowed(measured, s.rules.percentile, s.rules.confidence)
            if s.rules.criterion == "mlperf"
            else p99_allowance(measured, s.rules.percentile)
        )
        policy = AbortingPolicy(make_policy(s.policy), self.problem.qos_ms, skip, allowed)
        try:
            records = simulate(trace, policy, self.profile, SimConfig(pool, self.problem.qos_ms, seed=s.seed))
        except _Abort:
            self.failed.append((counts.copy(), rate_qps))
            return False, math.nan
        summary = summarize(records, self.problem.qos_ms, s.rules)
        if not summary.valid:
            self.failed.append((counts.copy(), rate_qps))
        return summary.valid, summary.p99_ms


def _space(problem: AllocationProblem, profile: Profile, trace: Trace):
    """The search space, each configuration's cost and fluid bound, and the cheapest-first order."""
    configs = enumerate_configs(problem)
    costs = config_costs(problem, configs)
    fluid = fluid_bounds(fluid_model(profile, problem, BatchMix.from_batch_sizes(trace.batch_size)), configs)
    order = np.lexsort((-fluid, costs))  # cheapest first; at one price the larger bound first
    return configs, costs, fluid, order


def plan_for_trace(
    problem: AllocationProblem,
    profile: Profile,
    trace: Trace,
    settings: PlanSettings,
    log: Callable[[str], None] | None = None,
) -> PlanResult:
    """One confirmed configuration per window of ``trace`` (see the module docstring)."""
    t0 = time.perf_counter()
    configs, costs, fluid, order = _space(problem, profile, trace)
    confirmer = _Confirmer(problem, profile, settings)
    choices = []
    for start, end in window_edges(trace, settings.window_s, settings.subwindow_s):
        lo, hi = np.searchsorted(trace.arrival_s, [start, end], side="left")
        if end == float(trace.arrival_s[-1]):
            hi = len(trace)  # the last window holds the last arrival
        n = int(hi - lo)
        peak = peak_rate_qps(trace.arrival_s[lo:hi], start, end, settings.subwindow_s) if n else 0.0
        target = settings.margin * peak
        confirm = (
            flatten_to_rate(trace, start, end + (1e-9 if hi == len(trace) else 0.0), settings.subwindow_s, target)
            if target > 0
            else None
        )
        if confirm is not None:
            confirm = confirm.head(settings.queries)
        measurable = confirm is not None and len(confirm) >= settings.rules.min_queries
        before = confirmer.simulated
        pick, p99 = None, math.nan
        for i in order:
            if fluid[i] < target or (measurable and confirmer.known_to_fail(configs[i], target)):
                continue
            if not measurable:  # too few queries to simulate a p99: the cheapest whose bound covers the target
                pick = i
                break
            ok, p99 = confirmer.passes(configs[i], confirm, target)
            if ok:
                pick = i
                break
        confirmed = pick is not None
        if pick is None:
            pick = int(np.argmax(fluid))
            p99 = math.nan
        choice = WindowChoice(
            start,
            end,
            n,
            peak,
            target,
            tuple(int(c) for c in configs[pick]),
            problem.label(configs[pick]),
            round(float(costs[pick]), 9),  # a sum of prices: 0.824, not 0.8240000000000001, in the plan file
            float(fluid[pick]),
            float(p99),
            confirmer.simulated - before,
            confirmed,
        )
        choices.append(choice)
        if log:
            log(
                f"window [{start:g}, {end:g}) s: {n} queries, peak {peak:.1f} qps, target {target:.1f}: "
                f"{choice.config} ${choice.usd_per_h:.3f}/h"
                + ("" if confirmed else " (NOT confirmed: nothing in the space passed)")
                + f" ({choice.simulated} simulated)"
            )
    windows = tuple(PlanWindow(c.start_s, c.end_s, PoolConfig.parse(c.config), c.usd_per_h) for c in choices)
    plan = Plan(windows, "kairos allocate --plan")
    return PlanResult(plan, tuple(choices), confirmer.simulated, time.perf_counter() - t0)


def backlog_violations(arrival_s: np.ndarray, capacity_qps: float, qos_s: float, subwindow_s: float) -> float:
    """Queries that must miss the QoS when served at a fluid rate of ``capacity_qps`` (module docstring)."""
    # Per episode of backlog (arrivals beyond what the rate serves, counted over sub-windows): the backlog's peak
    # beyond the capacity_qps x qos_s queries that can still wait and make it.
    if len(arrival_s) < 2:
        return 0.0
    edges = _subwindows(float(arrival_s[0]), float(arrival_s[-1]) + 1e-9, subwindow_s)
    counts, _ = np.histogram(arrival_s, bins=edges)
    served = capacity_qps * np.diff(edges)
    backlog, peak, total = 0.0, 0.0, 0.0
    for c, s in zip(counts, served):
        backlog = max(0.0, backlog + c - s)
        peak = max(peak, backlog)
        if backlog == 0.0:
            total += max(0.0, peak - capacity_qps * qos_s)
            peak = 0.0
    return total + max(0.0, peak - capacity_qps * qos_s)


def p99_allowance(n: int, percentile: float = 99.0) -> int:
    """Violations among ``n`` queries that still leave their nearest-rank ``percentile`` within QoS."""
    return n - math.ceil(round(percentile / 100.0 * n, 9))


class WindowAbort(AbortingPolicy):
    """Wraps a policy; aborts the run once a window holds more QoS violations than its p99 allows."""

    def __init__(self, inner, qos_ms: float, window_of: np.ndarray, allowed: np.ndarray):
        super().__init__(inner, qos_ms)
        self.window_of = window_of.tolist()
        self.left = allowed.astype(int).tolist()

    def over_allowance(self, query) -> bool:
        """Count ``query``'s violation against its window; True once that window has more than its p99 allows."""
        k = self.window_of[query.index]
        self.left[k] -= 1
        return self.left[k] < 0


def cheapest_static(
    problem: AllocationProblem,
    profile: Profile,
    trace: Trace,
    settings: PlanSettings,
    windows: list[tuple[float, float]] | None = None,
    log: Callable[[str], None] | None = None,
) -> StaticChoice:
    """The cheapest configuration whose simulated p99 meets QoS in each of ``windows`` (None: the whole trace)."""
    t0 = time.perf_counter()
    configs, costs, fluid, order = _space(problem, profile, trace)
    n = len(trace)
    if windows:
        ends = np.array([b for _, b in windows])
        window_of = np.minimum(np.searchsorted(ends, trace.arrival_s, side="right"), len(ends) - 1)
    else:
        window_of = np.zeros(n, dtype=np.int64)
    sizes = np.bincount(window_of, minlength=len(windows) if windows else 1)
    allowed = np.array([p99_allowance(int(k)) for k in sizes])
    # Meeting QoS in every window implies meeting it over the whole trace, so the whole trace's allowance prunes both.
    allowed_total = p99_allowance(n)
    failed: list[np.ndarray] = []
    simulated = 0
    qos_s = problem.qos_ms / 1000.0
    for i in order:
        if backlog_violations(trace.arrival_s, fluid[i], qos_s, settings.subwindow_s) > allowed_total:
            continue
        if any(np.all(f >= configs[i]) for f in failed):
            continue
        simulated += 1
        pool = PoolConfig.from_mapping(problem.as_mapping(configs[i]))
        policy = WindowAbort(make_policy(settings.policy), problem.qos_ms, window_of, allowed)
        try:
            records = simulate(trace, policy, profile, SimConfig(pool, problem.qos_ms, seed=settings.seed))
        except _Abort:
            p99, ok = math.inf, False
        else:
            lat = latency_ms(records)
            p99 = percentile_ms(lat, 99.0)
            ok = all(percentile_ms(lat[window_of == k], 99.0) <= problem.qos_ms for k in range(len(sizes)) if sizes[k])
        if log:
            log(f"static {problem.label(configs[i])} ${costs[i]:.3f}/h: {'meets' if ok else 'misses'} QoS")
        if ok:
            return StaticChoice(
                tuple(int(c) for c in configs[i]),
                problem.label(configs[i]),
                float(costs[i]),
                p99,
                simulated,
                time.perf_counter() - t0,
            )
        failed.append(configs[i])
    return StaticChoice(None, None, math.nan, math.nan, simulated, time.perf_counter() - t0)


STATIC_CRITERIA = ("windows", "trace")


@dataclass(frozen=True, eq=False)
class PlanComparison:
    """A plan's replay beside the static configuration's (its windows cut as the plan's), both billed alike."""

    plan_run: PlanRun
    static: StaticChoice
    static_run: PlanRun | None
    static_windows: pd.DataFrame | None
    static_criterion: str

    @property
    def saving(self) -> float:
        """The plan's dollars below the static configuration's, as a fraction of the static's (nan: no static)."""
        if self.static_run is None or not self.static_run.usd > 0:
            return math.nan
        return 1.0 - self.plan_run.usd / self.static_run.usd


def static_plan(plan: Plan, pool: PoolConfig, usd_per_h: float) -> Plan:
    """One window over ``plan``'s whole span running ``pool``: a static pool, replayed and billed as a plan is."""
    return Plan((PlanWindow(plan.start_s, plan.end_s, pool, usd_per_h),), f"static {pool}")


def compare_with_static(
    trace: Trace,
    profile: Profile,
    prices: dict[str, float],
    plan: Plan,
    replay: PlanReplayConfig,
    policy: str,
    static: PoolConfig | AllocationProblem,
    settings: PlanSettings | None = None,
    criterion: str = "windows",
    log: Callable[[str], None] | None = None,
) -> PlanComparison:
    """Replay ``plan`` and a static pool over its span: ``static`` itself, or that problem's cheapest passing one."""
    # criterion "windows": the static pool must meet QoS in every window of the plan, the test the plan itself
    # passes; "trace": one p99 over the whole trace.
    if criterion not in STATIC_CRITERIA:
        raise InputError(f"{criterion!r}: choose from {', '.join(STATIC_CRITERIA)}", field="static_criterion")
    plan_run = replay_plan(trace, policy, profile, prices, replay)
    if isinstance(static, PoolConfig):
        choice = StaticChoice(None, str(static), static.cost_per_h(prices), math.nan, 0, 0.0)
        pool = static
    else:
        settings = settings or PlanSettings(window_s=plan.windows[0].duration_s, policy=policy, seed=replay.seed)
        windows = [(w.start_s, w.end_s) for w in plan.windows] if criterion == "windows" else None
        choice = cheapest_static(static, profile, trace, settings, windows, log)
        if choice.config is None:
            return PlanComparison(plan_run, choice, None, None, criterion)
        pool = PoolConfig.parse(choice.config)
    static_replay = PlanReplayConfig(
        static_plan(plan, pool, choice.usd_per_h), replay.qos_ms, replay.startup_s, replay.concurrency, replay.seed
    )
    static_run = replay_plan(trace, policy, profile, prices, static_replay)
    if isinstance(static, PoolConfig):
        choice = StaticChoice(None, str(static), choice.usd_per_h, static_run.p99_ms, 0, 0.0)
    windows = window_table(plan, static_run.records, replay.qos_ms).assign(config=str(pool), usd_per_h=choice.usd_per_h)
    return PlanComparison(plan_run, choice, static_run, windows, criterion)
