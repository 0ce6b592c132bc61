"""The p99 interval's coverage study."""

from __future__ import annotations

import numpy as np

from benchmarks import p99_interval_coverage as study


def test_each_kind_of_phase_is_measured_by_both_methods():
    rows = study.study(30, np.random.default_rng(0))
    assert [(r.case.split(",")[0], r.method) for r in rows] == [
        (case, method) for case in ("exponential", "exponential", "M/M/1 at 80%", "bursts") for method in study.METHODS
    ]
    assert all(r.phases == 30 and 0.0 <= r.covered <= 1.0 and r.median_width_ms > 0 for r in rows)
    inverted = [r for r in rows if r.method == "share inverted"]
    assert all(r.outside == 0.0 for r in inverted)  # it only ever names observed latencies
    assert all(r.covered >= 0.8 for r in inverted if r.case.startswith("exponential"))


def test_the_symmetric_interval_is_the_old_rule():
    lat = np.random.default_rng(1).exponential(10, 2000)
    lo, hi = study.symmetric_ci_ms(lat, 99.0)
    p99 = study.percentile_ms(lat, 99.0)
    assert np.isclose(hi - p99, p99 - lo)


def test_the_queue_and_the_bursts_have_busy_periods():
    rng = np.random.default_rng(2)
    queue = study.mm1_latency_ms(20_000, 0.8, rng)
    assert 40 < queue.mean() < 60  # an M/M/1 at 80% with 10 ms service: mean sojourn 50 ms
    assert np.corrcoef(queue[:-1], queue[1:])[0, 1] > 0.8
    bursty = study.on_off_latency_ms(200_000, rng)
    assert len(bursty) == 200_000 and 0.01 < np.mean(bursty >= 300.0) < 0.03


def test_the_default_runs_phases_are_other_windows_of_the_trace():
    first, second = study.default_run_phases(108.6, 2)
    assert 1000 <= len(first) <= 1100 and 1000 <= len(second) <= 1100  # ~10 s at 108.6 qps, after the warm-up
    assert not np.array_equal(first[:100], second[:100])
    assert 200 < study.percentile_ms(first, 99.0) < 2000  # around the 350 ms QoS, the figure the default run finds
