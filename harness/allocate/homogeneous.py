"""Best homogeneous configuration, budget-scaled as in the Kairos paper.

For each candidate type, rent as many instances as the budget (and its cap) allows and simulate that pool.
A pool that costs less than the budget is credited for the unused money: its throughput is scaled by
``budget / cost``, as if a fraction of one more instance could be rented. The exploration cost is one
evaluation per type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.allocate.space import COST_EPS, AllocationProblem


@dataclass(frozen=True)
class HomogeneousResult:
    """One type's homogeneous pool: counts, cost, simulated allowable qps and the budget-scaled figure."""

    counts: tuple[int, ...]
    cost_per_h: float
    allowable_qps: float
    budget_scaled_qps: float


def homogeneous_configs(problem: AllocationProblem) -> list[tuple[int, ...]]:
    """Per type, the largest affordable count of that type alone (types that fit at least once)."""
    out = []
    for i, price in enumerate(problem.prices_per_h):
        n = problem.max_counts[i]
        if price > 0:
            n = min(n, int(np.floor(problem.budget_per_h / price + COST_EPS)))
        if n >= 1:
            out.append(tuple(n if j == i else 0 for j in range(len(problem.types))))
    return out


def budget_scaled(problem: AllocationProblem, counts, allowable_qps: float) -> float:
    """``allowable_qps x budget / cost`` (the paper's credit for unused budget)."""
    cost = problem.cost_per_h(counts)
    return allowable_qps * problem.budget_per_h / cost if cost > 0 else allowable_qps


def best_homogeneous(
    problem: AllocationProblem, evaluate: Callable[[tuple[int, ...]], float]
) -> list[HomogeneousResult]:
    """Evaluate every homogeneous pool; results sorted best budget-scaled throughput first."""
    results = []
    for counts in homogeneous_configs(problem):
        qps = float(evaluate(counts))
        results.append(HomogeneousResult(counts, problem.cost_per_h(counts), qps, budget_scaled(problem, counts, qps)))
    return sorted(results, key=lambda r: (-r.budget_scaled_qps, r.cost_per_h))
