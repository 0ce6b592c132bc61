"""Fluid linear-programming bound: the most queries per second any dispatcher could serve within QoS.

Queueing is ignored (a "fluid" limit) and everything else is kept: route a rate ``x[t, s]`` of the queries of
batch size ``s`` to instance type ``t``; a type's instances are busy ``sum_s x[t, s] * mean_ms[t, s] / 1000``
seconds per second, at most their count ``n_t``. A query meets QoS only if its own service time does, which
happens with probability ``ok[t, s]`` (the share of the profile's samples within QoS, the same samples the
simulator draws). At the target percentile a fraction ``tail = 1 - percentile/100`` of the queries may violate
(or be dropped, using no capacity). Maximise the total rate ``lam``:

    sum_t x[t, s] + drop[s] = lam * p[s]                        for every batch size s in the mix
    sum_s x[t, s] * mean_ms[t, s] / 1000 <= n_t                  for every type t
    sum_{t,s} x[t, s] * (1 - ok[t, s]) + sum_s drop[s] <= tail * lam

Any policy's allowable throughput at that percentile is at most ``lam`` (up to finite-trace noise), which is
why it serves both as a ranking and as the limit every simulated result is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.profiles import Profile


@dataclass(frozen=True, eq=False)
class FluidModel:
    """The LP's data for one (profile, model, QoS, batch mix, types): ``mean_ms`` and ``ok`` are ``[type, size]``."""

    types: tuple[str, ...]
    probs: np.ndarray
    mean_ms: np.ndarray
    ok: np.ndarray
    tail: float


def fluid_model(profile: Profile, problem: AllocationProblem, mix: BatchMix) -> FluidModel:
    """Per (type, batch size in the mix): mean service time and the share of samples within QoS."""
    n_t, n_s = len(problem.types), len(mix.sizes)
    mean_ms = np.full((n_t, n_s), np.inf)
    ok = np.zeros((n_t, n_s))
    for i, t in enumerate(problem.types):
        tab = profile.table(t, problem.model)
        idx = np.searchsorted(tab.buckets, mix.sizes, side="left")
        for j, k in enumerate(idx):
            if k < len(tab.buckets):
                samples = tab.samples_ms[k]
                mean_ms[i, j] = float(samples.mean())
                ok[i, j] = float(np.count_nonzero(samples <= problem.qos_ms)) / len(samples)
    return FluidModel(problem.types, mix.probs, mean_ms, ok, 1.0 - problem.percentile / 100.0)


def fluid_bound(model: FluidModel, counts) -> float:
    """The LP optimum ``lam`` (qps) for one count vector aligned with ``model.types``."""
    return fluid_solve(model, counts)[0]


def fluid_solve(model: FluidModel, counts) -> tuple[float, np.ndarray]:
    """The LP optimum ``lam`` (qps) and its routing ``x[type, size]`` (qps) for one count vector."""
    counts = np.asarray(counts, dtype=float)
    pairs = [
        (t, s)
        for t in range(len(model.types))
        if counts[t] > 0
        for s in range(len(model.probs))
        if model.ok[t, s] > 0 and np.isfinite(model.mean_ms[t, s])
    ]
    n_x, n_s = len(pairs), len(model.probs)
    n_var = n_x + n_s + 1  # x pairs, drop per size, lam
    lam = n_var - 1
    # Equalities: sum_t x[t, s] + drop[s] - p[s] lam = 0.
    rows = [s for _, s in pairs] + list(range(n_s)) + list(range(n_s))
    cols = list(range(n_x)) + [n_x + s for s in range(n_s)] + [lam] * n_s
    vals = [1.0] * n_x + [1.0] * n_s + list(-model.probs)
    a_eq = coo_matrix((vals, (rows, cols)), shape=(n_s, n_var))
    # Inequalities: capacity per present type, then the violation budget.
    present = [t for t in range(len(model.types)) if counts[t] > 0]
    cap_row = {t: r for r, t in enumerate(present)}
    viol = len(present)
    entries: list[tuple[int, int, float]] = []  # (row, column, value) of the sparse constraint matrix
    for k, (t, s) in enumerate(pairs):
        entries.append((cap_row[t], k, model.mean_ms[t, s] / 1000.0))
        if model.ok[t, s] < 1.0:
            entries.append((viol, k, 1.0 - model.ok[t, s]))
    for s in range(n_s):
        entries.append((viol, n_x + s, 1.0))
    entries.append((viol, lam, -model.tail))
    r_ub, c_ub, v_ub = (list(col) for col in zip(*entries))
    a_ub = coo_matrix((v_ub, (r_ub, c_ub)), shape=(len(present) + 1, n_var))
    b_ub = np.array([counts[t] for t in present] + [0.0])
    c = np.zeros(n_var)
    c[lam] = -1.0
    res = linprog(
        c, A_ub=a_ub.tocsr(), b_ub=b_ub, A_eq=a_eq.tocsr(), b_eq=np.zeros(n_s), bounds=(0, None), method="highs"
    )
    if res.status != 0:  # infeasible cannot happen (lam = 0 is feasible); anything else is a solver failure
        raise RuntimeError(f"fluid LP failed for counts {counts.tolist()}: {res.message}")
    x = np.zeros((len(model.types), n_s))
    for k, (t, s) in enumerate(pairs):
        x[t, s] = res.x[k]
    return float(res.x[lam]), x


def fluid_bounds(model: FluidModel, configs: np.ndarray) -> np.ndarray:
    """``fluid_bound`` of every configuration row."""
    return np.array([fluid_bound(model, row) for row in np.asarray(configs)], dtype=float)
