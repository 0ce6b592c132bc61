"""The allocation problem and its search space: every instance mix under the budget.

A configuration is a vector of instance counts aligned with ``AllocationProblem.types``. The space holds every
such vector whose hourly cost is within the budget, each count within its cap, and (by default, as in the Kairos
artifact) at least one instance of the base type, the type that serves the largest batch fastest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.core.errors import InputError
from harness.core.profiles import Profile

COST_EPS = 1e-9  # float slack when comparing a configuration's cost with the budget


@dataclass(frozen=True, eq=False)
class BatchMix:
    """An empirical batch-size distribution: distinct sizes (sorted) and their probabilities."""

    sizes: np.ndarray
    probs: np.ndarray

    @classmethod
    def from_batch_sizes(cls, batch_sizes) -> BatchMix:
        """The distribution of the batch sizes of a trace (never hard-coded numbers)."""
        values = np.asarray(batch_sizes, dtype=np.int64)
        if len(values) == 0:
            raise InputError("batch mix: no queries")
        sizes, counts = np.unique(values, return_counts=True)
        return cls(sizes, counts / counts.sum())

    @property
    def max_batch(self) -> int:
        """Largest batch size in the mix."""
        return int(self.sizes[-1])


@dataclass(frozen=True)
class AllocationProblem:
    """What to rent for: model, p99 QoS target, hourly budget, candidate types with prices and count caps."""

    model: str
    qos_ms: float
    budget_per_h: float
    types: tuple[str, ...]
    prices_per_h: tuple[float, ...]
    max_counts: tuple[int, ...]
    base_type: str
    require_base: bool = True
    percentile: float = 99.0

    @property
    def base_index(self) -> int:
        """Position of the base type in ``types``."""
        return self.types.index(self.base_type)

    def cost_per_h(self, counts) -> float:
        """Dollars per hour of a count vector."""
        return float(np.dot(np.asarray(counts, dtype=float), self.prices_per_h))

    def as_mapping(self, counts) -> dict[str, int]:
        """Type -> count (zero counts dropped), in ``types`` order."""
        return {t: int(n) for t, n in zip(self.types, counts) if int(n) > 0}

    def label(self, counts) -> str:
        """``TYPE=N,...`` text of a count vector (what ``--config`` accepts)."""
        return ",".join(f"{t}={n}" for t, n in self.as_mapping(counts).items())


def choose_base_type(profile: Profile, types, model: str) -> str:
    """The type with the lowest mean latency at the largest batch every type serves (Kairos' base instance)."""
    types = list(types)
    largest = profile.max_batch(types, model)
    return min(types, key=lambda t: (profile.mean_ms(t, model, largest), t))


def make_problem(
    profile: Profile,
    prices: dict[str, float],
    model: str,
    qos_ms: float,
    budget_per_h: float,
    types=None,
    max_counts: dict[str, int] | None = None,
    *,
    require_base: bool = True,
    percentile: float = 99.0,
) -> AllocationProblem:
    """Validate the inputs and build an AllocationProblem (types default to those profiled for the model and priced)."""
    if not (isinstance(budget_per_h, (int, float)) and math.isfinite(budget_per_h) and budget_per_h > 0):
        raise InputError(f"{budget_per_h!r}: must be a positive number of USD per hour", field="budget")
    if not (math.isfinite(qos_ms) and qos_ms > 0):
        raise InputError(f"{qos_ms!r}: must be > 0", field="qos_ms")
    if model not in profile.models:
        raise InputError(f"unknown model {model!r} in profile {profile.source} (known: {', '.join(profile.models)})")
    if types is None:
        types = [t for t in profile.instance_types if (t, model) in profile.tables and t in prices]
        if not types:
            raise InputError(f"no instance type is both profiled for {model} and priced")
    else:
        types = list(dict.fromkeys(types))
        if not types:
            raise InputError("none given", field="types")
        for t in types:
            if t not in profile.instance_types:
                raise InputError(
                    f"has unknown instance type {t!r} (profiled: {', '.join(profile.instance_types)})", field="types"
                )
            profile.table(t, model)
            if t not in prices:
                raise InputError(f"has no price for instance type {t!r}; add a row for it to the prices", field="types")
    caps = dict(max_counts or {})
    for t, n in caps.items():
        if t not in types:
            raise InputError(f"{t!r}: not one of the candidate types ({', '.join(types)})", field="max_count")
        if n < 0:
            raise InputError(f"{t}={n}: must be >= 0", field="max_count")
    types = sorted(
        types
    )  # one canonical order: a pool's instance order (hence its simulation) never depends on --types
    counts = []
    for t in types:
        price = prices[t]
        by_budget = math.floor(budget_per_h / price + COST_EPS) if price > 0 else None
        if by_budget is None and t not in caps:
            raise InputError(f"instance type {t!r} costs nothing; give it a maximum count")
        counts.append(min(c for c in (by_budget, caps.get(t)) if c is not None))
    base = choose_base_type(profile, types, model)
    return AllocationProblem(
        model,
        float(qos_ms),
        float(budget_per_h),
        tuple(types),
        tuple(float(prices[t]) for t in types),
        tuple(int(c) for c in counts),
        base,
        require_base,
        float(percentile),
    )


def enumerate_configs(problem: AllocationProblem) -> np.ndarray:
    """Every count vector under the budget and caps (base >= 1 when required), shape (n_configs, n_types)."""
    prices = np.asarray(problem.prices_per_h, dtype=float)
    caps = problem.max_counts
    n_types = len(prices)
    rows: list[tuple[int, ...]] = []
    low = [0] * n_types
    if problem.require_base:
        low[problem.base_index] = 1
    current = [0] * n_types

    def walk(i: int, cost: float) -> None:
        if i == n_types:
            if any(current):
                rows.append(tuple(current))
            return
        n = low[i]
        while n <= caps[i] and cost + n * prices[i] <= problem.budget_per_h + COST_EPS:
            current[i] = n
            walk(i + 1, cost + n * prices[i])
            n += 1
        current[i] = 0

    walk(0, 0.0)
    if not rows:
        raise InputError(
            f"no configuration fits the budget ${problem.budget_per_h:g}/h "
            f"(cheapest {'base ' if problem.require_base else ''}instance: "
            f"{problem.base_type if problem.require_base else min(problem.types, key=dict(zip(problem.types, prices)).get)})"
        )
    return np.asarray(rows, dtype=np.int64).reshape(-1, n_types)


def config_costs(problem: AllocationProblem, configs: np.ndarray) -> np.ndarray:
    """Hourly cost of each configuration row."""
    return np.asarray(configs, dtype=float) @ np.asarray(problem.prices_per_h, dtype=float)
