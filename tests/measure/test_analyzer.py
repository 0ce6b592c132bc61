import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.measure.allowable import SearchConfig, find_allowable
from harness.measure.analyzer import (
    ValidityRules,
    early_stopping_ok,
    max_violations_allowed,
    percentile_ci_ms,
    percentile_ms,
    section_parts,
    summarize,
)


def records(lat_ms, gap_s=0.01, status=None):
    n = len(lat_ms)
    arr = np.arange(n) * gap_s
    return pd.DataFrame(
        {
            "arrival_s": arr,
            "finish_s": arr + np.asarray(lat_ms) / 1000.0,
            "status": status if status is not None else ["ok"] * n,
        }
    )


def test_percentile_is_nearest_rank():
    lat = np.arange(1, 101, dtype=float)
    assert percentile_ms(lat, 99) == 99.0
    assert percentile_ms(lat, 50) == 50.0
    assert percentile_ms(np.arange(1, 1001, dtype=float), 99.9) == 999.0


def test_early_stopping_thresholds_match_the_binomial_law():
    # zero violations pass from n = 459 on: 0.99**459 < 0.01 < 0.99**458
    assert early_stopping_ok(459, 0) and not early_stopping_ok(458, 0)
    assert max_violations_allowed(459) == 0 and max_violations_allowed(458) == -1
    t = max_violations_allowed(100000)
    assert early_stopping_ok(100000, t) and not early_stopping_ok(100000, t + 1)
    assert 900 < t < 1000


def test_summary_counts_violations_drops_and_validity():
    lat = np.full(5000, 10.0)
    lat[::50] = 500.0  # 2% violations
    s = summarize(records(lat), qos_ms=100.0, rules=ValidityRules(min_queries=100, min_duration_s=1.0))
    assert s.violation_rate == pytest.approx(0.02, abs=0.002)
    assert not s.valid and "early stopping" in s.invalid_reason
    status = ["ok"] * 5000
    status[1000] = "dropped"
    s = summarize(records(np.full(5000, 10.0), status=status), 100.0, ValidityRules(min_queries=100, min_duration_s=1))
    assert s.violations == 1 and s.dropped == 1 and s.valid
    assert s.offered_qps == pytest.approx(100.0, rel=1e-6)


def test_p99_criterion_ignores_early_stopping_but_reports_it():
    lat = np.full(1000, 10.0)
    lat[::200] = 500.0  # 0.5% violations: p99 within QoS, too few queries for early stopping
    rules = ValidityRules(min_queries=100, min_duration_s=1.0)
    mlperf = summarize(records(lat), 100.0, rules)
    p99 = summarize(records(lat), 100.0, ValidityRules(min_queries=100, min_duration_s=1.0, criterion="p99"))
    assert not mlperf.valid and p99.valid
    assert not p99.early_stopping_ok and p99.percentile_ok and mlperf.percentile_ok
    with pytest.raises(Exception, match="criterion"):
        ValidityRules(criterion="p95")


def test_too_short_run_is_invalid_with_a_reason():
    s = summarize(records(np.full(300, 1.0)), 100.0, ValidityRules(min_queries=1000, min_duration_s=60))
    assert not s.valid and "queries <" in s.invalid_reason and "s <" in s.invalid_reason


def test_warmup_is_excluded():
    lat = np.full(2000, 5.0)
    lat[:100] = 1000.0  # first 5% slow
    s = summarize(records(lat), 100.0, ValidityRules(min_queries=100, min_duration_s=1, warmup_fraction=0.05))
    assert s.violations == 0 and s.measured_queries == 1900


def test_p99_interval_is_wider_for_autocorrelated_latency():
    rng = np.random.default_rng(0)
    iid = rng.exponential(10, 20000)
    bursty = np.repeat(rng.exponential(10, 200), 100)  # same total, latencies in runs of 100
    w_iid = np.subtract(*percentile_ci_ms(iid, 99)[::-1])
    w_bursty = np.subtract(*percentile_ci_ms(bursty, 99)[::-1])
    assert w_bursty > 2 * w_iid
    lo, hi = percentile_ci_ms(iid, 99)
    assert lo < percentile_ms(iid, 99) < hi


def share_inverted_reference(lat, p, batches=20, level=0.95):
    """The interval by its definition, one candidate latency at a time over every observed latency."""
    lat = np.asarray(lat, float)
    parts = section_parts(lat, batches)
    k, target = len(parts), 1 - p / 100
    x = np.unique(lat[np.isfinite(lat)])
    shares = np.array([[np.mean(part > v) for v in x] for part in parts])
    pooled = np.array([np.mean(lat > v) for v in x])
    half = stats.t.ppf(0.5 + level / 2, k - 1) * shares.std(0, ddof=1) / math.sqrt(k)
    may = pooled - half <= target
    low = x[np.argmax(may)] if may.any() else math.inf
    over = np.flatnonzero(pooled + half > target)
    if not len(over):
        return (low, x[0])
    return (low, x[over[-1] + 1] if over[-1] + 1 < len(x) else math.inf)


def phase_of_shape(shape, n, rng):
    """Latencies of one phase: independent, in runs of 50 alike, with ties, or with unserved queries (inf)."""
    if shape == "iid":
        return rng.exponential(10, n)
    if shape == "runs":
        return np.repeat(rng.exponential(10, n // 50 + 1), 50)[:n]
    if shape == "ties":
        return np.round(rng.exponential(3, n))
    return np.where(rng.random(n) < rng.uniform(0, 0.04), np.inf, rng.exponential(10, n))


@pytest.mark.parametrize("shape", ["iid", "runs", "ties", "unserved"])
def test_p99_interval_is_the_share_interval_inverted_over_every_latency(shape):
    # the function skips the latencies no interval can reach; this checks that it skips none that matter
    rng = np.random.default_rng(["iid", "runs", "ties", "unserved"].index(shape))
    for _ in range(8):
        lat = phase_of_shape(shape, int(rng.integers(500, 3000)), rng)
        assert percentile_ci_ms(lat, 99) == share_inverted_reference(lat, 99)


def test_p99_interval_covers_the_true_p99_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    true_p99 = 10 * math.log(100)  # exponential with mean 10
    covered = [lo <= true_p99 <= hi for lo, hi in (percentile_ci_ms(rng.exponential(10, 4000), 99) for _ in range(200))]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_p99_interval_of_a_bursty_phase_is_asymmetric_and_stays_among_observed_latencies():
    # 1,980 quick queries and one burst of 20 slow ones (1%): the p99 is the slowest quick query, but one burst more
    # or less would move it into the burst, so the interval reaches far up and barely down
    lat = np.full(2000, 20.0) + np.arange(2000) * 1e-3
    lat[1000:1020] = np.linspace(300.0, 700.0, 20)
    lo, hi = percentile_ci_ms(lat, 99)
    p99 = percentile_ms(lat, 99)
    assert lat.min() <= lo <= p99 <= hi <= lat.max()
    assert lo in lat and hi in lat
    assert hi - p99 != pytest.approx(p99 - lo, rel=0.05)


def test_p99_interval_edges():
    assert percentile_ci_ms(np.full(2000, 5.0), 99) == (5.0, 5.0)
    assert all(math.isnan(b) for b in percentile_ci_ms(np.full(400, 5.0), 99))  # too few to section
    assert percentile_ci_ms(np.full(2000, np.inf), 99) == (math.inf, math.inf)
    lat = np.random.default_rng(0).exponential(10, 2000)
    lat[-300:] = np.inf  # 15% unserved in one stretch: the p99 may lie among them
    lo, hi = percentile_ci_ms(lat, 99)
    assert math.isfinite(lo) and hi == math.inf


class Step:
    """A fake evaluation: VALID up to ``limit`` qps; past it, ``share(rate)`` of the queries over the QoS."""

    def __init__(self, limit, share=lambda rate: 0.0):
        self.limit, self.share, self.calls = limit, share, []

    def __call__(self, rate):
        from harness.measure.analyzer import PointSummary

        self.calls.append(rate)
        ok = rate <= self.limit
        violations = 0.0 if ok else self.share(rate)
        return PointSummary(1, 1, 1, rate, rate, rate, *([1.0] * 7), 0, violations, 0, ok, "" if ok else "x", ok, ok)


@pytest.mark.parametrize("start, growth", [(1.0, 2.0), (50.0, 2.0), (73.0, 1.1), (500.0, 2.0), (80.0, 1.1)])
def test_allowable_search_brackets_the_limit(start, growth):
    f = Step(73.3)
    res = find_allowable(f, start, SearchConfig(rel_tol=0.01, growth=growth))
    lo, hi = res.bracket_qps
    assert lo <= 73.3 < hi and (hi - lo) / lo <= 0.01
    assert res.allowable_qps == lo and res.passing is not None


def test_allowable_is_zero_when_nothing_passes():
    res = find_allowable(Step(-1.0), 10.0, SearchConfig(min_qps=0.5))
    assert res.allowable_qps == 0.0 and res.passing is None and math.isfinite(res.bracket_qps[1])


def far_past(limit):
    """A pool's share of queries over the QoS: 30% past 1.5x its limit, 2% nearer it."""
    return lambda rate: 0.3 if rate > 1.5 * limit else 0.02


def test_a_search_started_far_above_the_limit_steps_down_faster_and_finds_a_pass():
    # A live sweep's budget of 5 points, started at 3x the pool's limit (a simulation far off the host): with the
    # small step it spends them all failing and reports 0; with steps squared after each far miss it brackets the limit
    config = SearchConfig(rel_tol=0.05, max_points=5, growth=1.15)
    slow = find_allowable(Step(140.0, far_past(140.0)), 426.7, config)
    assert slow.allowable_qps == 0.0
    f = Step(140.0, far_past(140.0))
    fast = find_allowable(f, 426.7, replace(config, far_violation_rate=0.05))
    assert f.calls[:4] == pytest.approx([426.7, 426.7 / 1.15, 426.7 / 1.15**3, 426.7 / 1.15**7])
    lo, hi = fast.bracket_qps
    assert 0 < lo <= 140.0 < hi


def test_failures_near_the_limit_keep_the_small_step():
    # 2% over the QoS is not far past it: every step down stays x1/growth
    f = Step(100.0, lambda rate: 0.02)
    find_allowable(f, 150.0, SearchConfig(rel_tol=0.05, growth=1.15, far_violation_rate=0.05))
    assert f.calls[:4] == pytest.approx([150.0, 150.0 / 1.15, 150.0 / 1.15**2, 150.0 / 1.15**3])


def test_a_near_miss_after_far_ones_resets_the_step():
    # far, far, then near the limit: x1/1.15, x1/1.15^2, then x1/1.15 again
    f = Step(100.0, lambda rate: 0.3 if rate > 200.0 else 0.02)
    find_allowable(f, 260.0, SearchConfig(rel_tol=0.05, max_points=6, growth=1.15, far_violation_rate=0.05))
    steps = [a / b for a, b in zip(f.calls, f.calls[1:])]
    assert f.calls[2] < 200.0 and steps[:3] == pytest.approx([1.15, 1.15**2, 1.15])


def test_far_misses_all_the_way_down_stop_at_the_lowest_rate():
    # every point far past the limit: the steps grow until the rate drops under min_qps, without overflow
    f = Step(-1.0, lambda rate: 1.0)
    res = find_allowable(f, 1e6, SearchConfig(max_points=40, growth=2.0, far_violation_rate=0.05, min_qps=0.01))
    assert res.allowable_qps == 0.0 and len(f.calls) <= 7 and min(f.calls) >= 0.01
