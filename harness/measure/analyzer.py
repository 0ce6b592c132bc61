"""Pure metric functions over per-query records: percentiles, violations, throughput, MLPerf-style validity.

Percentiles are exact order statistics by the nearest-rank rule (the ``ceil(p/100 * n)``-th smallest latency: the smallest
latency with at least p% of queries at or below it; numpy's ``method="inverted_cdf"`` up to float rounding). Queries that were dropped, shed or failed count as infinite
latency, so they are QoS violations and can never improve a percentile.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.core.errors import InputError
from harness.core.records import OK, latency_ms
from harness.measure.cost import usd_per_million

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
CRITERIA = ("mlperf", "p99")


@dataclass(frozen=True)
class ValidityRules:
    """When a measured point counts (after MLPerf LoadGen's Server scenario, scaled to this harness).

    A point is VALID when, after dropping the warm-up, it has at least ``min_queries`` queries spanning at least
    ``min_duration_s``, and (``criterion="mlperf"``) it passes early stopping: with ``n`` queries and ``t`` QoS
    violations, the chance of seeing at most ``t`` violations if the true violation rate were
    ``1 - percentile/100`` is at most ``1 - confidence`` (so the true ``percentile`` latency is within QoS at that
    confidence). ``criterion="p99"`` asks only that the measured percentile be within QoS, as the Kairos paper
    does; short live phases need it, because early stopping cannot pass below 459 queries even with no violation.
    Both verdicts are always reported.
    """

    percentile: float = 99.0
    confidence: float = 0.99
    min_queries: int = 2000
    min_duration_s: float = 30.0
    warmup_fraction: float = 0.05
    ci_batches: int = 20
    criterion: str = "mlperf"

    def warmup_queries(self, queries: int) -> int:
        """How many of a point's first ``queries`` are warm-up, left out of what it measures."""
        return int(queries * self.warmup_fraction)

    @property
    def max_violation_rate(self) -> float:
        """The share of queries that may miss the QoS with the percentile still within it (0.01 for p99)."""
        return 1.0 - self.percentile / 100.0

    def sized(self, measured_queries: int, duration_s: float) -> bool:
        """Whether a point measured enough queries over a long enough span to count at all."""
        return measured_queries >= self.min_queries and duration_s >= self.min_duration_s

    def criterion_ok(self, latency_ms: np.ndarray, qos_ms: float) -> bool:
        """The latency criterion on measured latencies: the percentile within QoS, or (mlperf) early stopping."""
        n = len(latency_ms)
        if self.criterion == "mlperf":
            violations = int(np.count_nonzero(latency_ms > qos_ms))
            return bool(n) and early_stopping_ok(n, violations, self.percentile, self.confidence)
        return bool(n) and percentile_ms(latency_ms, self.percentile) <= qos_ms

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise InputError(f"{self.criterion!r}: choose from {', '.join(CRITERIA)}", field="criterion")


def percentile_ms(lat_ms: np.ndarray, p: float) -> float:
    """Nearest-rank percentile (inf if any of the tail is unserved; nan for no queries)."""
    n = len(lat_ms)
    if n == 0:
        return math.nan
    # rank = ceil(p/100 * n), rounded first so 99.9% of 1000 is rank 999, not 1000 by float error
    rank = min(n, max(1, math.ceil(round(p / 100.0 * n, 9))))
    return float(np.partition(np.asarray(lat_ms, dtype=float), rank - 1)[rank - 1])


def early_stopping_ok(n: int, violations: int, percentile: float = 99.0, confidence: float = 0.99) -> bool:
    """MLPerf-style early stopping: True if ``violations`` in ``n`` queries show the percentile meets QoS."""
    if n <= 0:
        return False
    return bool(stats.binom.cdf(violations, n, 1.0 - percentile / 100.0) <= 1.0 - confidence)


def max_violations_allowed(n: int, percentile: float = 99.0, confidence: float = 0.99) -> int:
    """The largest violation count early stopping still accepts for ``n`` queries (-1 if none)."""
    if n <= 0:
        return -1
    alpha, q = 1.0 - confidence, 1.0 - percentile / 100.0
    t = int(stats.binom.ppf(alpha, n, q))
    return t if stats.binom.cdf(t, n, q) <= alpha else t - 1


def after_warmup(records: pd.DataFrame, rules: ValidityRules) -> pd.DataFrame:
    """Records in arrival order with the first ``warmup_fraction`` of queries removed."""
    ordered = records.sort_values("arrival_s", kind="stable")
    skip = rules.warmup_queries(len(ordered))
    return ordered.iloc[skip:]


SECTION_QUERIES = 100  # the fewest queries in one section of a phase
MIN_SECTIONS = 5  # with fewer sections the t-interval is too wide to say anything


def sections(measured_queries: int, batches: int = 20) -> int:
    """How many sections ``percentile_ci_ms`` cuts that many measured queries into (0: too few for an interval)."""
    k = min(batches, measured_queries // SECTION_QUERIES)
    return k if k >= MIN_SECTIONS else 0


def section_parts(lat_ms: np.ndarray, batches: int = 20) -> list[np.ndarray]:
    """A phase's latencies (arrival order) cut into up to ``batches`` contiguous sections of at least
    ``SECTION_QUERIES`` (none when it holds fewer)."""
    k = min(batches, len(lat_ms) // SECTION_QUERIES)
    return np.array_split(lat_ms, k) if k else []


def percentile_ci_ms(lat_ms: np.ndarray, p: float, batches: int = 20, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a percentile by sectioning, inverted from the share of queries over each latency.

    Latencies must be in arrival order. For every observed latency x, the share of queries over x has a t-interval
    over contiguous sections (batch means, as ``violation_rate_ci``). The percentile's interval holds the x whose
    share interval still reaches ``1 - p/100``: the lower bound is the least x whose share may be that small, the upper
    bound the least x from which on every share is surely no larger. Contiguous sections keep busy periods together,
    so the interval respects the autocorrelation of queueing latencies that a binomial interval over single queries
    ignores; it is asymmetric, and never leaves the observed latencies (inf when the tail may lie among unserved ones).
    """
    n = len(lat_ms)
    if not sections(n, batches):
        return (math.nan, math.nan)
    lat = np.asarray(lat_ms, dtype=float)
    target = 1.0 - p / 100.0
    x = np.unique(lat[np.isfinite(lat)])  # the candidate bounds, ascending
    if not len(x):
        return (math.inf, math.inf)
    parts = section_parts(lat, batches)
    k = len(parts)
    t = stats.t.ppf(0.5 + level / 2, k - 1)
    pooled = 1.0 - np.searchsorted(np.sort(lat), x, side="right") / n
    # Shares in [0, 1] with mean m have a sample variance of at most m(1-m)k/(k-1), so a latency whose share is too
    # large even for the widest interval is below both bounds: only the tail from there on is sectioned (a suffix,
    # as m - t*sqrt(m(1-m)/(k-1)) is convex in m and 0 at m = 0). The slack covers sections of unequal size.
    widest = pooled - t * np.sqrt(pooled * (1.0 - pooled) / (k - 1))
    first = int(np.argmax(widest <= target + 1.0 / SECTION_QUERIES))
    x, pooled = x[first:], pooled[first:]
    # running sums over sections keep memory at O(candidates) for phases of millions of queries
    total, squares = np.zeros(len(x)), np.zeros(len(x))
    for part in parts:
        share = 1.0 - np.searchsorted(np.sort(part), x, side="right") / len(part)
        total += share
        squares += share * share
    half = t * np.sqrt(np.maximum(squares - total * total / k, 0.0) / (k - 1) / k)
    may_be_target = pooled - half <= target  # true at the largest latency unless unserved queries hold the tail
    low = float(x[np.argmax(may_be_target)]) if may_be_target.any() else math.inf
    over = np.flatnonzero(pooled + half > target)
    if not len(over):
        return (low, float(x[0]))  # x[0] is the first candidate kept: every latency below it is over the target
    high = float(x[over[-1] + 1]) if over[-1] + 1 < len(x) else math.inf
    return (low, high)


def violation_rate_ci(
    phases_ms: list[np.ndarray], qos_ms: float, batches: int = 20, level: float = 0.95
) -> tuple[float, float, float]:
    """The share of queries over ``qos_ms`` in several phases pooled, and its interval by sectioning (batch means):
    each phase (in arrival order) cut into up to ``batches`` sections of at least ``SECTION_QUERIES``, every section's
    share one sample (NaN bounds with fewer than ``MIN_SECTIONS``). An unserved query (inf) counts as a miss."""
    shares = [float(np.mean(part > qos_ms)) for lat in phases_ms for part in section_parts(lat, batches)]
    pooled = np.concatenate(phases_ms) if phases_ms else np.array([])
    rate = float(np.mean(pooled > qos_ms)) if len(pooled) else math.nan
    k = len(shares)
    if k < MIN_SECTIONS:
        return rate, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, k - 1) * np.std(shares, ddof=1) / math.sqrt(k)
    return rate, max(0.0, rate - half), min(1.0, rate + half)


@dataclass(frozen=True)
class PointSummary:
    """Metrics of one run (one policy at one offered rate)."""

    queries: int
    measured_queries: int
    duration_s: float
    offered_qps: float
    achieved_qps: float
    goodput_qps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    p99_ci_low_ms: float
    p99_ci_high_ms: float
    violations: int
    violation_rate: float
    dropped: int
    valid: bool
    invalid_reason: str
    early_stopping_ok: bool
    percentile_ok: bool

    def as_dict(self) -> dict:
        """Plain dict (for JSON and parquet rows)."""
        return asdict(self)


def summarize(records: pd.DataFrame, qos_ms: float, rules: ValidityRules = ValidityRules()) -> PointSummary:
    """Percentiles, violation rate, throughput and validity of one run's records (after warm-up)."""
    measured = after_warmup(records, rules)
    lat = latency_ms(measured)
    n = len(lat)
    arrivals = measured["arrival_s"].to_numpy(float)
    finish = measured["finish_s"].to_numpy(float)
    served = measured["status"].to_numpy() == OK
    span = float(arrivals[-1] - arrivals[0]) if n > 1 else 0.0
    done_span = (float(np.nanmax(finish[served])) - float(arrivals[0])) if served.any() else 0.0
    violations = int(np.count_nonzero(lat > qos_ms))
    pct = {p: percentile_ms(lat, p) for p in PERCENTILES}
    lo, hi = percentile_ci_ms(lat, rules.percentile, rules.ci_batches)
    reasons = []
    if n < rules.min_queries:
        reasons.append(f"{n} queries < {rules.min_queries}")
    if span < rules.min_duration_s:
        reasons.append(f"{span:.1f} s < {rules.min_duration_s:g} s")
    es_ok = bool(n) and early_stopping_ok(n, violations, rules.percentile, rules.confidence)
    pct_ok = bool(n) and percentile_ms(lat, rules.percentile) <= qos_ms
    if rules.criterion == "mlperf" and n and not es_ok:
        reasons.append(f"early stopping: {violations} violations in {n} queries")
    if rules.criterion == "p99" and n and not pct_ok:
        reasons.append(f"p{rules.percentile:g} {percentile_ms(lat, rules.percentile):.1f} ms > QoS {qos_ms:g} ms")
    return PointSummary(
        queries=len(records),
        measured_queries=n,
        duration_s=span,
        offered_qps=(n - 1) / span if span > 0 else math.nan,
        achieved_qps=int(served.sum()) / done_span if done_span > 0 else math.nan,
        goodput_qps=int(np.count_nonzero(lat <= qos_ms)) / done_span if done_span > 0 else math.nan,
        p50_ms=pct[50.0],
        p90_ms=pct[90.0],
        p95_ms=pct[95.0],
        p99_ms=pct[99.0],
        p999_ms=pct[99.9],
        p99_ci_low_ms=lo,
        p99_ci_high_ms=hi,
        violations=violations,
        violation_rate=violations / n if n else math.nan,
        dropped=int((measured["status"].to_numpy() != OK).sum()),
        valid=not reasons,
        invalid_reason="; ".join(reasons),
        early_stopping_ok=es_ok,
        percentile_ok=pct_ok,
    )


def summary_row(
    dispatcher: str, phase: int, summary: PointSummary, offered_qps: float, cost_per_h: float | None, **extra
) -> dict:
    """One summary.parquet row (simulated or live): a dispatcher's point, what it cost, and what the caller adds."""
    return {
        "dispatcher": dispatcher,
        "phase": phase,
        **summary.as_dict(),
        "offered_qps": offered_qps,
        "cost_per_h": cost_per_h,
        "qps_per_dollar": summary.achieved_qps / cost_per_h if cost_per_h else math.nan,
        "usd_per_million_in_qos": usd_per_million(cost_per_h, summary.goodput_qps),
        "allowable_qps": math.nan,
        **extra,
    }


def stamp_allowable(
    rows: list[dict], dispatcher: str, allowable_qps: float, bracket_qps: tuple[float, float], **extra
) -> None:
    """Write a dispatcher's search result (allowable rate, bracket, and e.g. the simulator's answer) on its rows."""
    for row in rows:
        if row["dispatcher"] == dispatcher:
            row.update(
                allowable_qps=allowable_qps, bracket_low_qps=bracket_qps[0], bracket_high_qps=bracket_qps[1], **extra
            )
