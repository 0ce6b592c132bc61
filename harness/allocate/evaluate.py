"""Simulated allowable throughput of one configuration, cached, in-process, in local worker processes or on a Dask
cluster.

Every evaluation replays the same base trace (generated at 1 qps or read from a file, then rate-scaled per
point) with the same seed, so two configurations see the same queries and the same service-time luck (common
random numbers), and evaluating a configuration twice gives the same answer.

The search knows an upper limit (the fluid bound), so it starts below it: try ``first_fraction x upper``; on a
pass bisect between it and the upper limit, on a failure step down by ``step_down`` until a pass (or below
``min_fraction x upper``: allowable 0), then bisect until the bracket is within ``rel_tol``. A pass within
``rel_tol`` of the upper limit probes above it, so a limit that is not a bound only costs extra points.

``evaluate_many`` fans configurations out over local processes (``ProcessPoolExecutor``) by default, or over an
existing Dask distributed cluster (``ExecutorSpec("tcp://HOST:PORT")``) through the ``concurrent.futures`` executor
its client offers: both give futures of the same ``Evaluation``s, collected by one loop, in input order.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.allocate.fluid import FluidModel, fluid_bound
from harness.allocate.space import AllocationProblem
from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.dispatch.policies import make_policy
from harness.measure.analyzer import ValidityRules, max_violations_allowed, summarize
from harness.sim.simulator import SimConfig, simulate
from traces.scale import scale_to_rate
from traces.schema import Trace


@dataclass(frozen=True)
class EvalSettings:
    """How one configuration is measured: queries per simulated point, seed, policy, search and validity rules.

    The defaults are the light search that lets the exhaustive oracle fit in minutes on two cores: 10k
    queries a point and a 5% bracket. ``min_duration_s`` is 0 because the trace length is fixed in queries,
    not seconds (a fast model at thousands of qps spans a few seconds). ``abort_early`` stops a simulated point
    as soon as its measured queries hold more QoS violations than early stopping accepts for the whole run:
    the verdict is the same (violations only accumulate), a failing point just costs less.
    """

    queries: int = 10_000
    seed: int = 0
    policy: str = "kairos"
    rel_tol: float = 0.05
    max_points: int = 12
    first_fraction: float = 0.8
    step_down: float = 0.8
    min_fraction: float = 0.02
    rules: ValidityRules = ValidityRules(min_queries=100, min_duration_s=0.0)
    abort_early: bool = True

    def __post_init__(self):
        if self.queries < 100:
            raise InputError(f"{self.queries}: must be >= 100", field="queries")
        if not 0 < self.rel_tol < 1:
            raise InputError(f"{self.rel_tol}: must be in (0, 1)", field="tolerance")
        make_policy(self.policy)  # fail fast on a bad policy spec


FINAL_SETTINGS = EvalSettings(queries=30_000, rel_tol=0.02)


@dataclass(frozen=True)
class Evaluation:
    """Allowable throughput of one configuration and what it cost to find."""

    counts: tuple[int, ...]
    allowable_qps: float
    bracket_qps: tuple[float, float]
    upper_qps: float
    points: int
    seconds: float


@dataclass(frozen=True, eq=False)
class EvalContext:
    """Everything a worker process needs to evaluate configurations of one problem (picklable)."""

    problem: AllocationProblem
    profile: Profile
    trace: Trace
    fluid: FluidModel
    settings: EvalSettings = field(default_factory=EvalSettings)

    def with_settings(self, settings: EvalSettings) -> EvalContext:
        """The same problem measured with other settings."""
        return EvalContext(self.problem, self.profile, self.trace, self.fluid, settings)


def bracket_search(
    passes: Callable[[float], bool], upper_qps: float, settings: EvalSettings
) -> tuple[float, float, int]:
    """Largest passing rate below (about) ``upper_qps``: returns (lo, hi, points); lo = 0 if nothing passed."""
    if not upper_qps > 0:
        return 0.0, 0.0, 0
    points = 0
    lo, hi = 0.0, upper_qps
    hi_tested = False
    rate = settings.first_fraction * upper_qps
    while lo == 0.0:
        if points >= settings.max_points or rate < settings.min_fraction * upper_qps:
            return 0.0, hi, points
        points += 1
        if passes(rate):
            lo = rate
        else:
            hi, hi_tested = rate, True
            rate *= settings.step_down
    while points < settings.max_points:
        if (hi - lo) / lo <= settings.rel_tol:
            if hi_tested:
                break
            # The bracket closed against the untested limit: test it (and go above if it is no bound).
            points += 1
            if passes(hi):
                lo, hi = hi, hi / settings.step_down
            else:
                hi_tested = True
            continue
        mid = 0.5 * (lo + hi)
        points += 1
        if passes(mid):
            lo = mid
        else:
            hi, hi_tested = mid, True
    return lo, hi, points


class _Abort(Exception):
    """Raised inside a simulation once its point can no longer be VALID."""


class AbortingPolicy:
    """Wraps a policy; counts QoS violations of measured queries at completion and aborts past ``max_violations``.

    Subclasses that count violations another way (per window) override ``over_allowance``."""

    def __init__(self, inner, qos_ms: float, first_measured: int = 0, max_violations: int = 0):
        self.inner = inner
        self.name = inner.name
        self.push = inner.push
        self.qos_ms = qos_ms
        self.first_measured = first_measured
        self.max_violations = max_violations
        self.violations = 0

    def bind(self, ctx, instances) -> None:
        """Bind the wrapped policy."""
        self.inner.bind(ctx, instances)

    def decide(self, now_s, pending, instances):
        """The wrapped policy's decision."""
        return self.inner.decide(now_s, pending, instances)

    def on_complete(self, now_s, query, instance, latency_ms) -> None:
        """Forward the feedback; abort once the violations exceed what the point may have."""
        self.inner.on_complete(now_s, query, instance, latency_ms)
        if latency_ms > self.qos_ms and self.over_allowance(query):
            raise _Abort

    def over_allowance(self, query) -> bool:
        """Count ``query``'s violation; True once the measured ones exceed ``max_violations``."""
        if query.index < self.first_measured:
            return False
        self.violations += 1
        return self.violations > self.max_violations


def evaluate_config(ctx: EvalContext, counts) -> Evaluation:
    """Simulate one configuration under ``ctx.settings.policy`` and search its allowable throughput."""
    t0 = time.perf_counter()
    counts = tuple(int(c) for c in counts)
    s = ctx.settings
    pool = PoolConfig.from_mapping(ctx.problem.as_mapping(counts))
    trace = ctx.trace.head(min(s.queries, len(ctx.trace)))
    sim = SimConfig(pool, ctx.problem.qos_ms, seed=s.seed)

    skip = s.rules.warmup_queries(len(trace))
    allowed = max_violations_allowed(len(trace) - skip, s.rules.percentile, s.rules.confidence)

    def passes(rate_qps: float) -> bool:
        policy = make_policy(s.policy)
        if s.abort_early:
            policy = AbortingPolicy(policy, ctx.problem.qos_ms, skip, allowed)
        try:
            records = simulate(scale_to_rate(trace, rate_qps), policy, ctx.profile, sim)
        except _Abort:
            return False
        return summarize(records, ctx.problem.qos_ms, s.rules).valid

    upper = fluid_bound(ctx.fluid, counts)
    lo, hi, points = bracket_search(passes, upper, s)
    return Evaluation(counts, lo, (lo, hi), upper, points, time.perf_counter() - t0)


# -- worker processes ------------------------------------------------------------------------------------------
_WORKER_CTX: dict[str, EvalContext] = {}


def _init_worker(ctx: EvalContext) -> None:
    _WORKER_CTX["ctx"] = ctx


def _work(counts: tuple[int, ...]) -> Evaluation:
    return evaluate_config(_WORKER_CTX["ctx"], counts)


def default_workers() -> int:
    """Worker processes by default: every CPU the OS reports."""
    return os.cpu_count() or 1


DASK_EXTRA = "pip install -e '.[dask]'"


def _dask_client_class(address: str):
    """``distributed.Client``, imported only when a Dask executor is asked for (it is an optional extra)."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError(f"{address}: needs the Dask distributed package: {DASK_EXTRA}", field="executor") from None
    return Client


@dataclass(frozen=True)
class ExecutorSpec:
    """Where ``evaluate_many`` runs configurations: local worker processes, or the Dask scheduler at ``address``."""

    address: str | None = None  # tcp://HOST:PORT of a running Dask distributed scheduler; None: local processes
    connect_timeout_s: float = 10.0

    @classmethod
    def parse(cls, text: str) -> ExecutorSpec:
        """``local``, or a Dask scheduler as ``dask://HOST:PORT`` or ``tcp://HOST:PORT``."""
        text = text.strip()
        if text == "local":
            return cls()
        scheme, sep, rest = text.partition("://")
        host, colon, port = rest.rpartition(":")
        if not sep or scheme not in ("dask", "tcp") or not colon or not host or not port.isdigit():
            raise InputError(f"{text!r}: expected local, dask://HOST:PORT or tcp://HOST:PORT", field="executor")
        if not 0 < int(port) < 65536:
            raise InputError(f"{text}: port must be in 1..65535", field="executor")
        address = f"tcp://{host}:{int(port)}"  # Dask's own spelling of a scheduler address
        _dask_client_class(address)  # fail fast, before any work, when the extra is not installed
        return cls(address)

    @property
    def is_local(self) -> bool:
        """True for local worker processes."""
        return self.address is None

    @property
    def label(self) -> str:
        """``local`` or the scheduler's address, for logs and JSON."""
        return "local" if self.address is None else f"dask {self.address}"

    def connect(self):
        """A ``distributed.Client`` on the scheduler, once it has a worker; InputError naming the address if not."""
        client_class = _dask_client_class(self.address)
        t = self.connect_timeout_s
        try:
            client = client_class(self.address, timeout=t, set_as_default=False)
        except OSError as exc:  # distributed retries until the timeout, then raises (TimeoutError is an OSError)
            raise InputError(f"{self.address}: cannot reach a Dask scheduler there ({exc})", field="executor") from None
        try:
            # A scheduler without workers would queue every configuration forever: say so instead.
            client.wait_for_workers(1, timeout=t)
        except TimeoutError:
            client.close()
            raise InputError(
                f"{self.address}: the Dask scheduler has no worker after {t:g} s", field="executor"
            ) from None
        return client

    def check(self) -> None:
        """Fail now, not after minutes of bounds, when the scheduler is unreachable (local: nothing to check)."""
        if self.address is not None:
            self.connect().close()


LOCAL = ExecutorSpec()


@contextmanager
def _fan_out(ctx: EvalContext, workers: int, executor: ExecutorSpec) -> Iterator[Callable[[tuple], Future]]:
    """A ``submit(counts)`` returning a concurrent.futures Future of the Evaluation, on local processes or Dask."""
    if executor.is_local:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(ctx,)) as ex:
            yield lambda counts: ex.submit(_work, counts)
        return
    client = executor.connect()
    try:
        # The counterpart of the local initializer: one copy of the context on every worker (hash=False: a random
        # key, nothing to tokenize), which each task names. pure=False: every configuration is its own task.
        shared = client.scatter(ctx, broadcast=True, hash=False)
        ex = client.get_executor(pure=False)
        yield lambda counts: ex.submit(evaluate_config, shared, counts)
    finally:
        client.close()  # releases the futures: tasks left by an error or Ctrl-C are cancelled on the cluster


def evaluate_many(
    ctx: EvalContext,
    configs: Iterable,
    workers: int | None = None,
    progress: Callable[[int, int, Evaluation], None] | None = None,
    executor: ExecutorSpec = LOCAL,
) -> list[Evaluation]:
    """Evaluate several configurations (in ``workers`` local processes when > 1, or on ``executor``'s Dask cluster,
    whose own workers set the parallelism); results in input order."""
    todo = [tuple(int(c) for c in row) for row in configs]
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"{workers}: must be >= 1", field="workers")
    out: list[Evaluation | None] = [None] * len(todo)
    if not todo:
        return []
    if executor.is_local and (workers == 1 or len(todo) == 1):
        for i, counts in enumerate(todo):
            out[i] = evaluate_config(ctx, counts)
            if progress:
                progress(i + 1, len(todo), out[i])
        return out  # type: ignore[return-value]
    # Biggest pools first: they take longest, and finishing with small ones balances the workers (Dask, too, runs
    # one client's tasks in the order they were submitted).
    order = sorted(range(len(todo)), key=lambda i: -sum(todo[i]))
    with _fan_out(ctx, min(workers, len(todo)), executor) as submit:
        futures = {submit(todo[i]): i for i in order}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            out[i] = fut.result()
            if progress:
                progress(done, len(todo), out[i])
    return out  # type: ignore[return-value]


class Evaluator:
    """Cached allowable throughput per count vector; ``view()`` gives a method its own count of what it asked."""

    def __init__(self, ctx: EvalContext, executor: ExecutorSpec = LOCAL):
        self.ctx = ctx
        self.executor = executor
        self.cache: dict[tuple[int, ...], Evaluation] = {}

    def __call__(self, counts) -> float:
        """Allowable qps of ``counts`` (simulated once, then cached)."""
        return self.evaluation(counts).allowable_qps

    def evaluation(self, counts) -> Evaluation:
        """The cached Evaluation of ``counts``."""
        key = tuple(int(c) for c in counts)
        ev = self.cache.get(key)
        if ev is None:
            ev = self.cache[key] = evaluate_config(self.ctx, key)
        return ev

    def prefill(self, evaluations: Iterable[Evaluation]) -> None:
        """Add evaluations made elsewhere (e.g. by the oracle's workers) to the cache."""
        for ev in evaluations:
            self.cache[ev.counts] = ev

    def evaluate_many(self, configs, workers: int | None = None, progress=None) -> list[Evaluation]:
        """Evaluate the uncached ones in parallel (on ``self.executor``), then answer all from the cache."""
        keys = [tuple(int(c) for c in row) for row in configs]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        self.prefill(evaluate_many(self.ctx, missing, workers, progress, self.executor))
        return [self.cache[k] for k in keys]

    def view(self) -> CountingView:
        """A callable that counts the distinct configurations one method asks for."""
        return CountingView(self)


class CountingView:
    """Front of a shared Evaluator that remembers which configurations its method evaluated, in order."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.asked: list[tuple[int, ...]] = []
        self._seen: set[tuple[int, ...]] = set()

    def __call__(self, counts) -> float:
        """Allowable qps of ``counts``; counts it once as an evaluation of this method."""
        key = tuple(int(c) for c in counts)
        if key not in self._seen:
            self._seen.add(key)
            self.asked.append(key)
        return self.evaluator(key)

    @property
    def evaluated(self) -> int:
        """Distinct configurations this method evaluated (its exploration cost)."""
        return len(self.asked)


def stderr_progress(label: str, every_s: float = 5.0) -> Callable[[int, int, Evaluation], None]:
    """A progress callback printing ``label: done/total, elapsed, ETA`` on stderr at most every ``every_s``."""
    start = time.perf_counter()
    last = [-math.inf]

    def report(done: int, total: int, ev: Evaluation) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        elapsed = now - start
        eta = elapsed / done * (total - done) if done else math.nan
        print(
            f"{label}: {done}/{total} configurations, {elapsed:.0f} s elapsed, ~{eta:.0f} s left",
            file=sys.stderr,
            flush=True,
        )

    return report
