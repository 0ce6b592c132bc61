"""A queueing-aware throughput estimate per configuration, from profiles only (no simulation).

The fluid LP (``fluid.py``) ignores queueing: it lets every type run at 100% utilization and counts a query as on
time whenever its own service time meets QoS. Near the top of a ranking that is where configurations differ: a
type whose queries leave little slack (a GPU at 26 ms on a 35 ms target) cannot run near saturation, and few
instances of a type queue more than many at the same load (Erlang's C formula).

This estimate keeps the LP and adds the queue. Each type ``t`` with ``n_t`` instances is run at a utilization cap
``rho`` (capacity ``n_t rho``); its waiting time is that of an M/G/c queue at that load in the usual exponential
approximation, ``P(W > w) = C(n_t, n_t rho) exp(-2 n_t (1 - rho) w / (E[S_t] (1 + cs2_t)))``: Erlang's C for the
chance to wait, and a decay that is M/M/c's for exponential service and twice as fast for constant service. A query
of size ``s`` sent to ``t`` is on time with probability ``P(S + W <= QoS)`` over the profile's samples of ``S``,
which replaces the LP's ``ok[t, s]``. ``E[S_t]`` and ``cs2_t`` (mean and squared coefficient of variation of the
type's service time, samples included) start from the mix over the sizes the type can serve and then follow the
LP's own routing for two fixed-point rounds: a type left with only the large batches waits on large services. The
estimate is the best LP optimum over a grid of caps shared by all types, then refined per type by one pass of
coordinate ascent. It is never above the fluid bound (a lower capacity and a smaller on-time probability can only
lower the optimum).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from harness.allocate.fluid import FluidModel, fluid_solve
from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.profiles import Profile

RHO_GRID = (0.1, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True, eq=False)
class QueueModel:
    """Per type, the profile's samples of every size in the mix (``slack_ms[t]``: ``[size, sample]`` of QoS minus
    the sample, NaN-padded), plus the fluid model."""

    fluid: FluidModel
    qos_ms: float
    slack_ms: tuple[np.ndarray, ...]
    mean_service_ms: np.ndarray  # per type: mix-weighted mean over the sizes it can serve
    service_cs2: np.ndarray  # per type: squared coefficient of variation of that service time
    second_moment_ms2: np.ndarray  # [type, size]: mean squared service time of the size's samples


def queue_model(profile: Profile, problem: AllocationProblem, mix: BatchMix, fluid: FluidModel) -> QueueModel:
    """Collect the samples the estimate needs (same buckets as the fluid model)."""
    per_type = []
    mean_s = np.full(len(problem.types), np.inf)
    cs2 = np.ones(len(problem.types))
    second = np.full((len(problem.types), len(mix.sizes)), np.inf)
    for i, t in enumerate(problem.types):
        tab = profile.table(t, problem.model)
        idx = np.searchsorted(tab.buckets, mix.sizes, side="left")
        samples = tuple(tab.samples_ms[k] if k < len(tab.buckets) else np.array([np.inf]) for k in idx)
        width = max(len(x) for x in samples)
        slack = np.full((len(samples), width), np.nan)
        for j, x in enumerate(samples):
            slack[j, : len(x)] = problem.qos_ms - x
        per_type.append(slack)
        second[i] = [float((x**2).mean()) for x in samples]
        usable = (fluid.ok[i] > 0) & np.isfinite(fluid.mean_ms[i])
        if usable.any():
            mean_s[i], cs2[i] = _moments(fluid.mean_ms[i], second[i], mix.probs * usable)
    return QueueModel(fluid, problem.qos_ms, tuple(per_type), mean_s, cs2, second)


def _moments(mean_ms: np.ndarray, second_ms2: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Mean and squared coefficient of variation of a service time mixing the sizes by ``weights``."""
    w = weights / weights.sum()
    m1 = float(w @ np.where(w > 0, mean_ms, 0.0))  # sizes a type cannot serve hold inf
    m2 = float(w @ np.where(w > 0, second_ms2, 0.0))
    return m1, max(m2 / (m1 * m1) - 1.0, 0.0)


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``servers`` and offered ``load`` (= c rho < c)."""
    if load <= 0.0:
        return 0.0
    if load >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):  # Erlang B by recursion (stable for large c)
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def on_time_probability(model: QueueModel, t: int, servers: int, rho: float, mean_ms: float, cs2: float) -> np.ndarray:
    """``P(S + W <= QoS)`` per size of the mix for type ``t`` with ``servers`` instances at utilization ``rho``,
    serving queries of mean ``mean_ms`` and squared coefficient of variation ``cs2``."""
    wait_p = erlang_c(servers, servers * rho)
    decay = 2.0 * servers * (1.0 - rho) / (mean_ms * (1.0 + cs2))  # per ms
    slack = model.slack_ms[t]
    with np.errstate(invalid="ignore"):
        late = np.where(slack >= 0.0, np.minimum(1.0, wait_p * np.exp(-decay * np.maximum(slack, 0.0))), 1.0)
    late[np.isnan(slack)] = np.nan
    return 1.0 - np.nanmean(late, axis=1)


def _routed_moments(model: QueueModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and cs2 of each type's service time over the sizes the LP routed to it (type default where none)."""
    mean, cs2 = model.mean_service_ms.copy(), model.service_cs2.copy()
    for t in range(len(mean)):
        if x[t].sum() > 0:
            mean[t], cs2[t] = _moments(model.fluid.mean_ms[t], model.second_moment_ms2[t], x[t])
    return mean, cs2


def _estimate(model: QueueModel, counts: np.ndarray, rhos: np.ndarray, rounds: int = 2) -> float:
    """LP optimum with queueing-aware on-time probabilities; the service moments follow the LP's own routing
    (``rounds`` fixed-point steps), since a type that gets only the large queries waits on large services."""
    mean, cs2 = model.mean_service_ms, model.service_cs2
    lam = 0.0
    for _ in range(rounds):
        ok = model.fluid.ok.copy()
        for t in np.nonzero(counts > 0)[0]:
            ok[t] = on_time_probability(model, t, int(counts[t]), float(rhos[t]), mean[t], cs2[t])
        lam, x = fluid_solve(replace(model.fluid, ok=ok), counts * rhos)
        if lam <= 0:
            return 0.0
        mean, cs2 = _routed_moments(model, x)
    return lam


def queue_estimate(model: QueueModel, counts) -> float:
    """The queueing-aware throughput estimate (qps) of one count vector (see the module docstring)."""
    counts = np.asarray(counts, dtype=float)
    if not (counts > 0).any():
        return 0.0
    grid = np.array(RHO_GRID)
    uniform = [_estimate(model, counts, np.full(len(counts), r)) for r in grid]
    k = int(np.argmax(uniform))
    best, rhos = uniform[k], np.full(len(counts), grid[k])
    for t in np.nonzero(counts > 0)[0]:  # one pass of per-type refinement
        for r in grid:
            if r == rhos[t]:
                continue
            trial = rhos.copy()
            trial[t] = r
            value = _estimate(model, counts, trial)
            if value > best:
                best, rhos = value, trial
    return float(best)


def queue_estimates(model: QueueModel, configs: np.ndarray) -> np.ndarray:
    """``queue_estimate`` of every configuration row."""
    return np.array([queue_estimate(model, row) for row in np.asarray(configs)], dtype=float)
