"""Ribbon-style Bayesian optimisation over instance counts (Li et al., SC'21), adapted to a budget.

Ribbon searches a grid of instance counts with a Gaussian process and expected improvement, evaluating one
configuration at a time online, and prunes the grid with what each evaluation proves. Here the objective is
the one the allocator maximises: a configuration's simulated allowable throughput (each evaluation is a
simulation search), normalised by the largest fluid bound in the space so the GP sees values in [0, 1]. The
pruning is Ribbon's rule for the under-provisioned region: a configuration with no more instances of any type
than an evaluated one cannot serve more, so it is dropped from the candidates. (Ribbon's other rule, dropping
configurations dearer than one that meets the target, has no counterpart when every candidate is in budget.)

The search starts from ``init_points`` random configurations and stops after ``max_evals`` evaluations, when
no candidate is left, or after ``patience`` evaluations without a 1% improvement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.allocate.gp import GaussianProcess, expected_improvement
from harness.core.errors import InputError


@dataclass(frozen=True)
class RibbonSettings:
    """Evaluation budget, random start, EI margin (fraction of the normalised objective), GP noise, seed."""

    max_evals: int = 40
    init_points: int = 2
    xi: float = 0.01
    patience: int = 15
    noise: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.max_evals < 1 or self.init_points < 1:
            raise InputError("ribbon: max_evals and init_points must be >= 1")


@dataclass(frozen=True)
class SearchResult:
    """What an online search found: best counts and qps, its exploration cost and when it found its best."""

    counts: tuple[int, ...]
    allowable_qps: float
    evaluated: int
    evaluated_to_best: int
    history: tuple[tuple[tuple[int, ...], float], ...]


def result_from_history(history: list[tuple[tuple[int, ...], float]]) -> SearchResult:
    """Best of a list of (counts, qps) evaluations, in evaluation order (first of equals wins)."""
    best_i = max(range(len(history)), key=lambda i: (history[i][1], -i))
    counts, qps = history[best_i]
    return SearchResult(counts, qps, len(history), best_i + 1, tuple(history))


def dominated(configs: np.ndarray, by) -> np.ndarray:
    """Mask of the rows with no more instances of any type than ``by``."""
    return np.all(np.asarray(configs) <= np.asarray(by)[None, :], axis=1)


def ribbon_search(
    configs: np.ndarray,
    evaluate: Callable[[tuple[int, ...]], float],
    norm_qps: float,
    settings: RibbonSettings = RibbonSettings(),
) -> SearchResult:
    """Run the BO loop over the rows of ``configs``; ``evaluate`` returns a configuration's allowable qps."""
    configs = np.asarray(configs, dtype=np.int64)
    rng = np.random.default_rng(settings.seed)
    scale = np.maximum(configs.max(axis=0), 1).astype(float)
    x_all = configs / scale
    norm = norm_qps if norm_qps > 0 else 1.0
    alive = np.ones(len(configs), dtype=bool)
    history: list[tuple[tuple[int, ...], float]] = []
    xs: list[np.ndarray] = []
    ys: list[float] = []
    best, since_best = -np.inf, 0

    def run(i: int) -> None:
        nonlocal best, since_best
        counts = tuple(int(c) for c in configs[i])
        qps = float(evaluate(counts))
        history.append((counts, qps))
        xs.append(x_all[i])
        ys.append(qps / norm)
        alive[dominated(configs, configs[i])] = False
        if qps > best * 1.01 or best == -np.inf:
            best, since_best = max(best, qps), 0
        else:
            best, since_best = max(best, qps), since_best + 1

    while len(history) < min(settings.init_points, settings.max_evals) and alive.any():
        run(int(rng.choice(np.nonzero(alive)[0])))
    while len(history) < settings.max_evals and alive.any() and since_best < settings.patience:
        gp = GaussianProcess.fit(np.array(xs), np.array(ys), noise=settings.noise)
        cand = np.nonzero(alive)[0]
        mean, sd = gp.predict(x_all[cand])
        ei = expected_improvement(mean, sd, max(ys), settings.xi)
        top = cand[ei >= ei.max() - 1e-12]
        run(int(rng.choice(top)))
    return result_from_history(history)
