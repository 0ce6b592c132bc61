"""The fluid linear program: the most queries per second any dispatcher could serve within QoS.

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


@dataclass(frozen=True, eq=False)
class FluidModel:
    """The LP's data for one (profile, model, QoS, batch mix, types): ``mean_ms`` and ``ok`` are ``[type, size]``."""

    types: tuple[str, ...]
    probs: np.ndarray
    mean_ms: np.ndarray
    ok: np.ndarray
    tail: float


def fluid_bound(model: FluidModel, counts) -> float:
    """The LP optimum ``lam`` (qps) for one count vector aligned with ``model.types``."""
    return fluid_solve(model, counts)[0]


def fluid_solve(model: FluidModel, counts) -> tuple[float, np.ndarray]:
    """The LP optimum ``lam`` (qps) and its routing ``x[type, size]`` (qps) for one count vector."""
    lam, x, _, _ = _solve(model, counts)
    return lam, x


def fluid_prices(model: FluidModel, counts) -> tuple[float, np.ndarray, np.ndarray]:
    """``fluid_solve`` plus the LP's price of serving one query of each size on each type, ``price[type, size]``.

    The price is the query's reduced cost at the optimum: the type's capacity shadow price times the busy time it
    takes, plus the violation budget's shadow price times its chance of missing QoS. The LP routes a size only to
    types where this price is lowest; a type with spare capacity at the optimum has price 0 for every size.
    Types absent from ``counts`` and pairs that can never meet QoS get ``inf``.
    """
    lam, x, mu, nu = _solve(model, counts)
    return lam, x, _price(model, mu, nu)


def fluid_cut(model: FluidModel, counts) -> tuple[float, np.ndarray]:
    """The LP optimum ``lam`` at ``counts`` and a cut ``mu`` (qps per instance of each type) with
    ``fluid_bound(model, n) <= mu @ n`` for every count vector ``n``, equal at ``counts``.

    The LP is homogeneous in the counts and its dual's feasible set does not depend on them, so any dual solution
    bounds every configuration: ``mu`` is the capacity part of the optimal dual at ``counts``, extended to the
    types absent there by the smallest price that keeps the dual feasible (no size would be cheaper on them).
    """
    lam, _, mu, nu = _solve(model, counts)
    price = _price(model, mu, nu)
    # The price each size pays at the optimum: its cheapest route, or dropping it (which uses the budget only).
    paid = np.minimum(np.min(price, axis=0), nu)
    for t in np.nonzero(np.isnan(mu))[0]:
        usable = (model.ok[t] > 0) & np.isfinite(model.mean_ms[t])
        need = (paid[usable] - nu * (1.0 - model.ok[t, usable])) * 1000.0 / model.mean_ms[t, usable]
        mu[t] = max(0.0, float(need.max())) if usable.any() else 0.0
    return lam, mu


def _price(model: FluidModel, mu: np.ndarray, nu: float) -> np.ndarray:
    """Per (type, size): capacity price times busy time plus the budget's price times the miss chance."""
    price = np.full(model.mean_ms.shape, np.inf)
    for t in np.nonzero(~np.isnan(mu))[0]:
        usable = (model.ok[t] > 0) & np.isfinite(model.mean_ms[t])
        cost = mu[t] * model.mean_ms[t] / 1000.0 + nu * (1.0 - model.ok[t])
        price[t, usable] = cost[usable]
    return price


def _solve(model: FluidModel, counts) -> tuple[float, np.ndarray, np.ndarray, float]:
    """The LP: ``lam``, routing ``x``, capacity shadow prices per type (NaN where absent), the budget's price."""
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
    # HiGHS reports d(objective)/d(b_ub) <= 0 for a minimisation; the shadow prices of the maximisation are their
    # negatives (qps per instance of a type, and per unit of the violation budget).
    marg = -np.asarray(res.ineqlin.marginals, dtype=float)
    mu = np.full(len(model.types), np.nan)
    mu[present] = marg[: len(present)]
    return float(res.x[lam]), x, mu, float(marg[viol])
