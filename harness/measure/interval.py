"""An interval on allowable throughput: where the p99-versus-rate curve, and its confidence band, cross the QoS.

Method ("p99 band crossing"): at each offered rate the sweep tried, p99 has a 95% confidence interval, by sectioning
within the phase (``analyzer.percentile_ci_ms``: contiguous batches of queries) or, with replicated phases at a rate,
across the replicates (each an independent section: a t-interval on their mean p99), widened to hold each replicate's
own sectioned interval (see ``combine``). Walking up the rates, the first
rate whose value exceeds the QoS is the crossing, interpolated with log(p99) linear in rate from the last rate below
it. A phase with too few queries to section (fewer than 500 measured) has no interval, and a bound that depends on
it is unknown (NaN) rather than zero-wide: longer phases or ``--replications`` give one. The estimate is where the
p99 curve crosses; the lower bound is where the band's upper edge crosses (below it the
pool meets the QoS with 97.5% confidence at every tested rate); the upper bound is where the band's lower edge
crosses. A bound past the highest rate tested is censored there and flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

METHOD = "p99 band crossing (95%: sectioning within a phase, t-interval across replicates)"


@dataclass(frozen=True)
class RatePoint:
    """What was measured at one offered rate: p99 and its confidence interval, from ``replicates`` phases."""

    rate_qps: float
    p99_ms: float
    p99_low_ms: float
    p99_high_ms: float
    replicates: int = 1


@dataclass(frozen=True)
class AllowableInterval:
    """The crossing estimate and its bounds (qps); ``*_censored``: the bound lies beyond the rates tried."""

    estimate_qps: float
    low_qps: float
    high_qps: float
    low_censored: bool
    high_censored: bool
    method: str = METHOD

    @property
    def censored(self) -> bool:
        """Whether either bound lies at the edge of the rates tried (it may lie beyond)."""
        return self.low_censored or self.high_censored


def combine(rate_qps: float, phases: list[tuple[float, float, float]], level: float = 0.95) -> RatePoint:
    """One RatePoint from the (p99, low, high) of each phase at a rate: a single phase keeps its own interval;
    several are independent replicates, combined as their mean with a t-interval (any unserved tail: inf), widened to
    hold every replicate's own interval where it has one."""
    if len(phases) == 1:
        return RatePoint(rate_qps, *phases[0])
    p99 = np.array([p[0] for p in phases], dtype=float)
    if not np.all(np.isfinite(p99)):
        return RatePoint(rate_qps, float(np.median(p99)), float(np.min(p99)), math.inf, len(phases))
    half = stats.t.ppf(0.5 + level / 2, len(p99) - 1) * p99.std(ddof=1) / math.sqrt(len(p99))
    mean = float(p99.mean())
    # Why the union: a window's p99 is heavy-tailed across windows (on the default run's trace one window in five at
    # 108.6 qps holds a burst that takes its p99 from ~340 ms past 1 s), so two replicates that happen to agree give a
    # t-interval on one degree of freedom that is narrow by luck. A replicate whose own sectioned band still reaches
    # past it is evidence the t-interval would drop (benchmarks/interval_study.py measures what each choice covers).
    lows = [p[1] for p in phases if not math.isnan(p[1])]
    highs = [p[2] for p in phases if not math.isnan(p[2])]
    return RatePoint(rate_qps, mean, min([max(0.0, mean - half), *lows]), max([mean + half, *highs]), len(phases))


def crossing_qps(rates: np.ndarray, values: np.ndarray, qos_ms: float) -> tuple[float, bool]:
    """The rate where ``values`` first exceed ``qos_ms`` walking up ``rates`` (sorted), log-interpolated from the last
    rate at or below it; censored at the edge of the rates tried when none exceeds it ``(highest, True)`` or the
    lowest already does ``(lowest, True)``. NaN values (no interval) are skipped, but a crossing that may lie at one
    of them, between the known rates around it, is unknown: NaN."""
    rates, values = np.asarray(rates, dtype=float), np.asarray(values, dtype=float)
    known = ~np.isnan(values)
    if not known.any():
        return math.nan, False
    below = None
    for k in np.flatnonzero(known):
        rate, value = rates[k], values[k]
        if not value > qos_ms:
            below = (rate, value)
            continue
        gap = (rates > (below[0] if below else -math.inf)) & (rates < rate) & ~known
        if gap.any():
            return math.nan, False
        if below is None:
            return float(rate) if rate == rates[0] else math.nan, rate == rates[0]
        r1, v1 = below
        if not math.isfinite(value) or v1 <= 0:
            return float(r1), False  # an unserved tail: no slope to follow, the last good rate is the crossing
        frac = (math.log(qos_ms) - math.log(v1)) / (math.log(value) - math.log(v1))
        return float(r1 + (rate - r1) * min(max(frac, 0.0), 1.0)), False
    if (rates > below[0]).any():  # unknown points past the last known one could hold the crossing
        return math.nan, False
    return float(rates[-1]), True


def allowable_interval(points: list[RatePoint], qos_ms: float) -> AllowableInterval:
    """Estimate and 95% bounds of the allowable rate from the points a sweep measured."""
    pts = sorted(points, key=lambda p: p.rate_qps)
    rates = np.array([p.rate_qps for p in pts], dtype=float)

    def band(attr: str) -> np.ndarray:
        return np.array([getattr(p, attr) for p in pts], dtype=float)

    estimate, _ = crossing_qps(rates, band("p99_ms"), qos_ms)
    low, low_censored = crossing_qps(rates, band("p99_high_ms"), qos_ms)
    high, high_censored = crossing_qps(rates, band("p99_low_ms"), qos_ms)
    # NaN (unknown) stays NaN: a phase too short to section leaves the interval open rather than zero-wide.
    low = low if math.isnan(low) else min(low, estimate)
    high = high if math.isnan(high) else max(high, estimate)
    return AllowableInterval(estimate, low, high, low_censored, high_censored)
