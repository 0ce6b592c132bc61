"""The fluid LP bound of a configuration: builds the LP's data from a profile and a batch mix (the LP itself is
``harness.core.fluid_lp``, shared with the dispatch policies that route by its split)."""

from __future__ import annotations

import numpy as np

from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.fluid_lp import FluidModel, fluid_bound, fluid_cut, fluid_solve
from harness.core.profiles import Profile

__all__ = ["FluidModel", "cut_bounds", "fluid_bound", "fluid_bounds", "fluid_model", "fluid_solve"]

EXACT_LIMIT = 5_000  # beyond this many configurations, one LP each costs minutes: bound the rest by dual cuts
EXACT_TOP = 200  # configurations whose LP is solved exactly on a large catalogue (the top by bound)


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


def fluid_bounds(model: FluidModel, configs: np.ndarray) -> np.ndarray:
    """The fluid bound of every configuration row: exact (one LP each) up to ``EXACT_LIMIT`` rows, beyond that
    ``cut_bounds`` (exact for the top ``EXACT_TOP``, a valid upper bound for the rest)."""
    configs = np.asarray(configs)
    if len(configs) > EXACT_LIMIT:
        return cut_bounds(model, configs, EXACT_TOP)[0]
    return np.array([fluid_bound(model, row) for row in configs], dtype=float)


def cut_bounds(model: FluidModel, configs: np.ndarray, exact_top: int, batch: int = 32) -> tuple[np.ndarray, int]:
    """Upper bounds on every row's fluid bound, exact for the ``exact_top`` highest; and the number of LPs solved.

    Every LP solved gives a cut ``mu`` with ``bound(n) <= mu @ n`` for all rows (``fluid_cut``), so one matrix
    product tightens the whole catalogue. Seeded with the rows that have the most of each type, it then solves the
    highest rows not yet exact, ``batch`` at a time, until the top ``exact_top`` are all exact: every other row's
    bound is then at or below theirs, so the top of the ranking is the exact LP ranking. 10^6 rows take a few
    hundred LPs instead of 10^6.
    """
    configs = np.asarray(configs, dtype=float)
    n = len(configs)
    ub = np.full(n, np.inf)
    exact = np.zeros(n, dtype=bool)
    value = np.zeros(n)
    solved = 0

    def solve(rows: np.ndarray) -> None:
        nonlocal ub, solved
        cuts, values = [], []
        for i in rows.tolist():
            lam, mu = fluid_cut(model, configs[i])
            cuts.append(mu)
            values.append(lam)
        exact[rows] = True
        value[rows] = values
        ub = np.minimum(ub, (configs @ np.array(cuts).T).min(axis=1))
        ub[exact] = value[exact]  # a cut equals an exact value up to rounding: keep the LP's own figure
        solved += len(rows)

    seeds = np.unique(np.concatenate([configs.argmax(axis=0), [int(configs.sum(axis=1).argmax())]]))
    solve(seeds)
    top = min(int(exact_top), n)
    while True:
        head = np.argpartition(-ub, top - 1)[:top] if top < n else np.arange(n)
        todo = head[~exact[head]]
        if not len(todo):
            break
        solve(todo[np.argsort(-ub[todo], kind="stable")][:batch])
    return np.maximum(ub, 0.0), solved
