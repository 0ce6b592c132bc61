"""The interval on allowable throughput: crossings of the p99 curve and its band, replicates combined."""

import math

import pytest

from harness.measure.interval import RatePoint, allowable_interval, combine, crossing_qps


def test_crossing_interpolates_log_p99_between_the_last_good_rate_and_the_first_bad_one():
    rates = [10.0, 20.0, 30.0]
    rate, censored = crossing_qps(rates, [100.0, 200.0, 800.0], qos_ms=400.0)
    assert rate == pytest.approx(25.0) and not censored  # log 400 is halfway between log 200 and log 800
    assert crossing_qps(rates, [100.0, 200.0, 300.0], 400.0) == (30.0, True)
    assert crossing_qps(rates, [500.0, 600.0, 700.0], 400.0) == (10.0, True)  # at or below the lowest rate tried
    assert crossing_qps(rates, [100.0, math.inf, 50.0], 400.0) == (10.0, False)  # unserved tail: no slope
    assert math.isnan(crossing_qps(rates, [100.0, math.nan, 800.0], 400.0)[0])  # it may cross at 20: unknown
    assert crossing_qps(rates, [math.nan, 200.0, 800.0], 400.0)[0] == pytest.approx(25.0)  # far below: no matter
    assert math.isnan(crossing_qps(rates, [100.0, 200.0, math.nan], 400.0)[0])  # past the last known rate


def test_interval_brackets_the_estimate_with_the_band():
    points = [
        RatePoint(80.0, 200.0, 180.0, 230.0),
        RatePoint(100.0, 300.0, 260.0, 420.0),
        RatePoint(110.0, 500.0, 380.0, 700.0),
    ]
    iv = allowable_interval(points, qos_ms=350.0)
    assert 100.0 < iv.estimate_qps < 110.0
    assert 80.0 < iv.low_qps < 100.0 and iv.low_qps < iv.estimate_qps  # the upper edge crosses earlier
    assert 100.0 < iv.high_qps < 110.0 and iv.high_qps > iv.estimate_qps
    assert not iv.low_censored and not iv.high_censored and "band crossing" in iv.method


def test_a_band_that_never_crosses_is_censored_at_the_highest_rate():
    iv = allowable_interval([RatePoint(50.0, 100.0, 90.0, 120.0), RatePoint(60.0, 300.0, 200.0, 360.0)], 350.0)
    assert iv.high_qps == 60.0 and iv.high_censored and not iv.low_censored


def test_replicates_combine_into_a_t_interval_and_one_phase_keeps_its_own():
    one = combine(100.0, [(300.0, 250.0, 380.0)])
    assert (one.p99_ms, one.p99_low_ms, one.p99_high_ms, one.replicates) == (300.0, 250.0, 380.0, 1)
    nan = math.nan  # phases too short to section: the t-interval alone
    three = combine(100.0, [(300.0, nan, nan), (320.0, nan, nan), (340.0, nan, nan)])
    assert three.p99_ms == pytest.approx(320.0) and three.replicates == 3
    assert three.p99_low_ms == pytest.approx(320 - 4.303 * 20 / math.sqrt(3), rel=1e-3)
    unserved = combine(100.0, [(300.0, 0, 0), (math.inf, 0, 0)])
    assert unserved.p99_high_ms == math.inf and unserved.p99_low_ms == 300.0


def test_phases_without_an_interval_leave_the_bounds_unknown_not_zero_wide():
    iv = allowable_interval(
        [RatePoint(30.0, 300.0, math.nan, math.nan), RatePoint(40.0, 500.0, math.nan, math.nan)], 350.0
    )
    assert 30.0 < iv.estimate_qps < 40.0 and math.isnan(iv.low_qps) and math.isnan(iv.high_qps)


def test_two_replicates_that_agree_by_luck_keep_the_band_of_the_one_whose_own_window_says_more():
    # Two windows at one rate with p99 340 and 341 ms: a t-interval on one degree of freedom of +-6.4 ms, below a
    # 350 ms QoS. But the first window's own sections reach 680 ms (a burst in it): the band keeps that reach.
    t_only = combine(108.6, [(340.0, math.nan, math.nan), (341.0, math.nan, math.nan)])
    assert t_only.p99_high_ms < 350.0
    both = combine(108.6, [(340.0, 17.0, 680.0), (341.0, 300.0, 370.0)])
    assert both.p99_ms == pytest.approx(340.5)
    assert both.p99_high_ms == 680.0 and both.p99_low_ms == 17.0
    quiet = combine(108.6, [(340.0, 336.0, 345.0), (341.0, 335.0, 346.0)])  # each window agrees: the t-interval
    assert quiet.p99_low_ms == t_only.p99_low_ms and quiet.p99_high_ms == t_only.p99_high_ms
