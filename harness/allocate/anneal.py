"""Simulated annealing over instance counts: a random walk on the budget-feasible grid that accepts worse
neighbours with a probability that shrinks as it cools.

Neighbours of a configuration are the configurations in the space one or two instances away (add or remove
one instance, or swap one type for another). A worse neighbour is accepted with probability
``exp((y' - y) / (T * y_best))`` where the temperature ``T`` starts at ``t0`` and is multiplied by ``cooling``
each step. Every distinct configuration visited is one evaluation (a simulation search); revisits are free.
The walk stops after ``max_evals`` evaluations, ``max_steps`` steps, or ``patience`` evaluations without a 1%
improvement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.allocate.ribbon import SearchResult, result_from_history
from harness.core.errors import InputError


@dataclass(frozen=True)
class AnnealSettings:
    """Evaluation and step budgets, starting temperature (fraction of the best qps), cooling rate, seed."""

    max_evals: int = 40
    max_steps: int = 400
    t0: float = 0.1
    cooling: float = 0.95
    patience: int = 15
    seed: int = 0

    def __post_init__(self):
        if self.max_evals < 1 or self.max_steps < 1 or not 0 < self.cooling <= 1:
            raise InputError("anneal: max_evals, max_steps must be >= 1 and cooling in (0, 1]")


def neighbours(counts: tuple[int, ...], space: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Configurations of ``space`` one instance added/removed, or one swapped, away from ``counts``."""
    n = len(counts)
    out = []
    for i in range(n):
        for d in (-1, 1):
            c = list(counts)
            c[i] += d
            out.append(tuple(c))
    for i, j in itertools.permutations(range(n), 2):
        c = list(counts)
        c[i] += 1
        c[j] -= 1
        out.append(tuple(c))
    return [c for c in out if c in space]


def anneal_search(
    configs: np.ndarray, evaluate: Callable[[tuple[int, ...]], float], settings: AnnealSettings = AnnealSettings()
) -> SearchResult:
    """Anneal over the rows of ``configs``; ``evaluate`` returns a configuration's allowable qps."""
    rows = [tuple(int(c) for c in r) for r in np.asarray(configs)]
    space = set(rows)
    rng = np.random.default_rng(settings.seed)
    values: dict[tuple[int, ...], float] = {}
    history: list[tuple[tuple[int, ...], float]] = []
    best, since_best = -math.inf, 0

    def value(c: tuple[int, ...]) -> float:
        nonlocal best, since_best
        if c not in values:
            values[c] = float(evaluate(c))
            history.append((c, values[c]))
            if values[c] > best * 1.01 or best == -math.inf:
                since_best = 0
            else:
                since_best += 1
            best = max(best, values[c])
        return values[c]

    current = rows[int(rng.integers(len(rows)))]
    y = value(current)
    temperature = settings.t0
    for _ in range(settings.max_steps):
        if len(history) >= settings.max_evals or since_best >= settings.patience:
            break
        near = neighbours(current, space)
        if not near:
            break
        cand = near[int(rng.integers(len(near)))]
        y_new = value(cand)
        scale = temperature * max(best, 1e-12)
        if y_new >= y or rng.random() < math.exp((y_new - y) / scale):
            current, y = cand, y_new
        temperature *= settings.cooling
    return result_from_history(history)
