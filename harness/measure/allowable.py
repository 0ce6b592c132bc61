"""Allowable throughput: the highest offered rate at which a point is still VALID (p99 within QoS).

The search only needs ``evaluate(rate_qps) -> PointSummary``, so the simulator and the live harness share it:
exponential widening from a starting rate (x growth up while passing, / growth down while failing; the step down
squared after each failure far past the limit, ``far_violation_rate``), then bisection until the bracket (last passing,
first failing) is within ``rel_tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.dispatch.latency_model import LatencyModel
from harness.measure.analyzer import PointSummary, ValidityRules


@dataclass(frozen=True)
class SearchConfig:
    """How the search moves: relative bracket width to stop at, point budget, lowest rate tried."""

    rel_tol: float = 0.02
    max_points: int = 40
    min_qps: float = 0.01
    growth: float = 2.0  # widening factor; a live sweep seeded by the simulator's answer uses a small one
    # A failing point with at least this share of its queries over the QoS is far past the limit: after k such points
    # in a row the step down is growth^(2^(k-1)) (growth, growth^2, growth^4, ...); after a nearer miss, growth again.
    # Why: a live sweep starts at the simulator's answer, and on a real host that answer can be far off (rm2 on
    # cpu-1t=1,cpu-2t=1 on a 2-core VM: 426.7 qps simulated, 139.2 with the host's service times); its small steps
    # (x1/1.15) then spent all 5 phases at 99% to 9% of queries over the QoS and reported 0. inf: off, as in the
    # simulator, whose answer rests on its bisection alone.
    far_violation_rate: float = math.inf


@dataclass
class AllowableResult:
    """The answer and how it was found: every evaluated (rate, summary), in order."""

    allowable_qps: float
    bracket_qps: tuple[float, float]
    points: list[tuple[float, PointSummary]] = field(default_factory=list)

    @property
    def passing(self) -> PointSummary | None:
        """Summary at the allowable rate (None when nothing passed)."""
        for rate, summary in self.points:
            if rate == self.allowable_qps:
                return summary
        return None


def find_allowable(
    evaluate: Callable[[float], PointSummary],
    start_qps: float,
    search: SearchConfig = SearchConfig(),
    on_point: Callable[[float, PointSummary], None] | None = None,
) -> AllowableResult:
    """Widen then bisect on the offered rate; a point passes when its summary is VALID."""
    points: list[tuple[float, PointSummary]] = []

    def passes(rate: float) -> bool:
        summary = evaluate(rate)
        points.append((rate, summary))
        if on_point:
            on_point(rate, summary)
        return summary.valid

    lo, hi = 0.0, math.inf
    rate = max(start_qps, search.min_qps)
    far = 0  # failing points far past the limit in a row
    while len(points) < search.max_points:
        if passes(rate):
            lo = rate
            if math.isfinite(hi):
                break
            rate *= search.growth
        else:
            hi = rate
            if lo > 0:
                break
            far = far + 1 if points[-1][1].violation_rate >= search.far_violation_rate else 0
            rate /= search.growth ** (2 ** min(max(far - 1, 0), 8))  # capped: 2^8 takes any rate past min_qps
            if rate < search.min_qps:
                break
    while lo > 0 and math.isfinite(hi) and (hi - lo) / lo > search.rel_tol and len(points) < search.max_points:
        mid = 0.5 * (lo + hi)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return AllowableResult(allowable_qps=lo, bracket_qps=(lo, hi), points=points)


def phase_queries(rate_qps: float, phase_seconds: float, rules: ValidityRules, min_queries: int = 0) -> int:
    """Queries in one phase: ``rate x phase_seconds``, but at least ``min_queries`` and what validity needs."""
    floor = math.ceil(rules.min_queries / (1.0 - rules.warmup_fraction)) + 1
    return max(2, floor, int(min_queries), int(round(rate_qps * phase_seconds)))


def capacity_qps(latency: LatencyModel, instance_types: list[str], model: str, batch_sizes: np.ndarray) -> float:
    """Throughput if every instance stayed busy on its fair share of the batch mix: an optimistic start rate."""
    table = latency.table_ms(model)
    return float(sum(1000.0 / table[latency.type_index[t], batch_sizes].mean() for t in instance_types))
