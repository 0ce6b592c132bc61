"""The interval on allowable throughput: crossings of the share of queries over the QoS and its band, replicates
pooled, and the figure judged on every phase."""

import math

import numpy as np
import pytest
from scipy import stats

from harness.measure.interval import RatePoint, allowable_interval, allowable_rate, combine, crossing_qps
from tests.conftest import sectioned_shares as sectioned


def test_crossing_interpolates_log_values_between_the_last_good_rate_and_the_first_bad_one():
    rates = [10.0, 20.0, 30.0]
    rate, censored = crossing_qps(rates, [100.0, 200.0, 800.0], 400.0)
    assert rate == pytest.approx(25.0) and not censored  # log 400 is halfway between log 200 and log 800
    assert crossing_qps(rates, [100.0, 200.0, 300.0], 400.0) == (30.0, True)
    assert crossing_qps(rates, [500.0, 600.0, 700.0], 400.0) == (10.0, True)  # at or below the lowest rate tried
    assert crossing_qps(rates, [100.0, math.inf, 50.0], 400.0) == (10.0, False)  # unserved tail: no slope
    assert crossing_qps(rates, [0.0, 0.005, 0.02], 0.01)[0] == pytest.approx(25.0)  # log: sqrt(0.005 * 0.02) = 0.01
    assert crossing_qps(rates, [0.0, 0.02, 0.03], 0.01)[0] == pytest.approx(15.0)  # linear from a share of 0
    assert math.isnan(crossing_qps(rates, [100.0, math.nan, 800.0], 400.0)[0])  # it may cross at 20: unknown
    assert crossing_qps(rates, [math.nan, 200.0, 800.0], 400.0)[0] == pytest.approx(25.0)  # far below: no matter
    assert math.isnan(crossing_qps(rates, [100.0, 200.0, math.nan], 400.0)[0])  # past the last known rate


def test_interval_brackets_the_estimate_with_the_band():
    points = [
        RatePoint(80.0, 0.002, 0.001, 0.004),
        RatePoint(100.0, 0.006, 0.003, 0.012),
        RatePoint(110.0, 0.02, 0.012, 0.03),
    ]
    iv = allowable_interval(points, max_violation_rate=0.01)
    assert 100.0 < iv.estimate_qps < 110.0
    assert 80.0 < iv.low_qps < 100.0 and iv.low_qps < iv.estimate_qps  # the upper edge crosses earlier
    assert 100.0 < iv.high_qps < 110.0 and iv.high_qps > iv.estimate_qps
    assert not iv.low_censored and not iv.high_censored and "band crossing" in iv.method


def test_a_band_that_never_crosses_is_censored_at_the_highest_rate():
    iv = allowable_interval([RatePoint(50.0, 0.001, 0.0, 0.002), RatePoint(60.0, 0.008, 0.004, 0.012)], 0.01)
    assert iv.high_qps == 60.0 and iv.high_censored and not iv.low_censored


def test_one_phase_is_sectioned_and_replicates_pool_their_sections():
    one = combine(100.0, [sectioned(0, 1, 2, 0, 3, 0)], qos_ms=350.0)
    shares = [0, 0.01, 0.02, 0, 0.03, 0]
    half = stats.t.ppf(0.975, 5) * np.std(shares, ddof=1) / math.sqrt(6)
    assert one.replicates == 1 and one.violation_rate == pytest.approx(np.mean(shares))
    assert (one.violation_low, one.violation_high) == pytest.approx((0.0, np.mean(shares) + half))
    both = combine(100.0, [sectioned(0, 1, 2, 0, 3), sectioned(1, 1, 0, 2, 1)], qos_ms=350.0)
    shares = [0, 0.01, 0.02, 0, 0.03, 0.01, 0.01, 0, 0.02, 0.01]
    half = stats.t.ppf(0.975, 9) * np.std(shares, ddof=1) / math.sqrt(10)
    assert both.replicates == 2 and both.violation_rate == pytest.approx(0.011)
    assert both.violation_high == pytest.approx(0.011 + half)
    # 475 measured queries make four sections, too few alone; two such phases pooled make eight
    short = sectioned(0, 1, 0, 1, 0)[:475]
    assert math.isnan(combine(40.0, [short], qos_ms=350.0).violation_low)
    assert combine(40.0, [short, short], qos_ms=350.0).violation_high > 0
    unserved = combine(100.0, [np.full(500, math.inf)], qos_ms=350.0)  # a query never answered missed the QoS
    assert unserved.violation_rate == 1.0 == unserved.violation_low


def test_two_windows_that_fail_apart_still_bound_and_two_that_agree_by_luck_keep_a_burst():
    # Two windows at 124.9 qps with 3% and 8% of queries over the QoS in every section: their p99s (2.0 and 3.3 s
    # live) gave a t-interval on one degree of freedom reaching down to 0; the sections pooled stay above 1%.
    apart = combine(124.9, [sectioned(*[3] * 9), sectioned(*[8] * 9)], qos_ms=350.0)
    assert apart.violation_low > 0.01
    # Two windows that pass (0.9% and 0.3% over the QoS), the first with its misses in one burst: that section
    # keeps the band past 1%.
    burst = combine(108.6, [sectioned(*[0] * 8, 8), sectioned(0, 1, 0, 0, 1, 0, 1, 0, 0)], qos_ms=350.0)
    assert burst.violation_rate < 0.01 < burst.violation_high


def test_the_allowable_figure_is_the_highest_rate_below_the_first_failure():
    passed = {101.5: True, 94.4: True, 108.6: False, 105.0: True}
    assert allowable_rate(passed) == (105.0, (105.0, 108.6))
    assert allowable_rate({**passed, 124.9: True}) == (105.0, (105.0, 108.6))  # no step past a failure
    assert allowable_rate({30.0: False, 20.0: True}) == (20.0, (20.0, 30.0))
    assert allowable_rate({30.0: False}) == (0.0, (0.0, 30.0))
    assert allowable_rate({30.0: True}) == (30.0, (30.0, math.inf))


def test_phases_without_an_interval_leave_the_bounds_unknown_not_zero_wide():
    iv = allowable_interval(
        [RatePoint(30.0, 0.005, math.nan, math.nan), RatePoint(40.0, 0.02, math.nan, math.nan)], 0.01
    )
    assert 30.0 < iv.estimate_qps < 40.0 and math.isnan(iv.low_qps) and math.isnan(iv.high_qps)
