"""Time-axis rescaling: exact target rate, burst structure kept, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import InputError
from traces.generate import generate_trace
from traces.scale import gap_cv, scale_to_rate, speedup
from traces.schema import Trace


def _bursty(n: int = 2000, seed: int = 7) -> Trace:
    t = generate_trace(n, 40.0, arrivals="gamma:0.2", rng=np.random.default_rng(seed))
    return Trace(t.arrival_s, t.batch_size, t.model, {"tokens_in": np.arange(n, dtype=np.int64)}, "bursty")


@pytest.mark.parametrize("rate_qps", [0.5, 40.0, 123.456, 1000.0, 25_000.0])
def test_scale_hits_the_target_rate(rate_qps):
    scaled = scale_to_rate(_bursty(), rate_qps)
    assert abs(scaled.mean_rate_qps / rate_qps - 1) <= 2.3e-16  # at most one ulp off
    assert scaled.duration_s == pytest.approx((len(scaled) - 1) / rate_qps, rel=1e-15)


def test_scale_is_exact_on_a_simple_trace():
    t = Trace(np.array([0.0, 1.0, 3.0, 6.0]), np.array([1, 2, 3, 4]), np.array(["m"] * 4, dtype=object))
    scaled = scale_to_rate(t, 1.5)
    assert scaled.mean_rate_qps == 1.5
    assert scaled.arrival_s.tolist() == [0.0, 1 / 3, 1.0, 2.0]


def test_scale_keeps_the_burst_structure_and_other_columns():
    t = _bursty()
    for rate_qps in (5.0, 500.0):
        scaled = scale_to_rate(t, rate_qps)
        assert gap_cv(scaled.arrival_s) == pytest.approx(gap_cv(t.arrival_s), rel=1e-9)
        rel_old = np.diff(t.arrival_s) / t.duration_s
        rel_new = np.diff(scaled.arrival_s) / scaled.duration_s
        assert np.allclose(rel_new, rel_old, rtol=0, atol=1e-12)
        assert np.all(np.diff(scaled.arrival_s) >= 0)
        assert np.array_equal(scaled.batch_size, t.batch_size)
        assert np.array_equal(scaled.model, t.model)
        assert np.array_equal(scaled.extra["tokens_in"], t.extra["tokens_in"])
    assert gap_cv(t.arrival_s) > 1.5  # the fixture really is bursty, so the check above means something


def test_scale_multiplies_offsets_from_the_first_arrival():
    t = Trace(np.array([10.0, 11.0, 14.0]), np.array([1, 1, 1]), np.array(["m"] * 3, dtype=object))
    scaled = scale_to_rate(t, 2.0)  # span 4 s -> 1 s
    assert scaled.arrival_s[0] == 10.0
    assert scaled.arrival_s.tolist() == pytest.approx([10.0, 10.25, 11.0], abs=1e-12)


def test_scale_does_not_touch_the_input():
    t = _bursty()
    before = t.arrival_s.copy()
    scale_to_rate(t, 1.0)
    speedup(t, 3.0)
    assert np.array_equal(t.arrival_s, before)


@pytest.mark.parametrize("rate_qps", [0, -1.0, float("nan"), float("inf"), "fast", None])
def test_scale_rejects_a_bad_rate(rate_qps):
    with pytest.raises(InputError, match="^rate "):
        scale_to_rate(_bursty(10), rate_qps)


@pytest.mark.parametrize("arrivals", [[0.0], [2.0, 2.0, 2.0]])
def test_scale_rejects_a_zero_span_trace(arrivals):
    n = len(arrivals)
    t = Trace(np.array(arrivals), np.ones(n, dtype=np.int64), np.array(["m"] * n, dtype=object), source="z.csv")
    with pytest.raises(InputError, match=r"z\.csv: .*zero seconds"):
        scale_to_rate(t, 10.0)


def test_speedup_multiplies_the_rate():
    t = _bursty()
    fast = speedup(t, 4.0)
    assert fast.mean_rate_qps == pytest.approx(4 * t.mean_rate_qps, rel=1e-12)
    assert fast.duration_s == pytest.approx(t.duration_s / 4, rel=1e-12)
    assert gap_cv(fast.arrival_s) == pytest.approx(gap_cv(t.arrival_s), rel=1e-9)
    slow = speedup(t, 0.5)
    assert slow.duration_s == pytest.approx(2 * t.duration_s, rel=1e-12)


def test_speedup_of_a_single_query_is_the_same_trace():
    t = Trace(np.array([0.0]), np.array([5]), np.array(["m"], dtype=object))
    assert speedup(t, 2.0).arrival_s.tolist() == [0.0]


@pytest.mark.parametrize("factor", [0, -2.0, float("inf"), "x"])
def test_speedup_rejects_a_bad_factor(factor):
    with pytest.raises(InputError, match="^speedup "):
        speedup(_bursty(10), factor)


def test_gap_cv():
    assert gap_cv(np.arange(10.0)) == 0.0
    assert np.isnan(gap_cv(np.array([0.0, 1.0])))
    assert gap_cv(np.array([0.0, 1.0, 3.0])) == pytest.approx(np.std([1, 2]) / 1.5)
