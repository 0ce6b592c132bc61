"""Reaching a rate: time-axis rescaling, thinning, superposing; exact target rate, burstiness, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import InputError
from traces.generate import generate_trace
from traces.resample import copies_for, superpose, thin
from traces.scale import count_dispersion, gap_cv, scale_to_rate, speedup
from traces.scalers import SCALERS, applied_scale, scale_trace
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


# -- thinning, superposing, the registry (traces.resample, traces.scalers) ---------------------------------------------


def _long_bursty(n: int = 60_000, seed: int = 11) -> Trace:
    """A renewal trace with gap CV sqrt(5) (gamma shape 0.2) at 40 qps; ids and a marker column to follow queries."""
    t = generate_trace(n, 40.0, arrivals="gamma:0.2", rng=np.random.default_rng(seed))
    ids = np.array([str(i) for i in range(n)], dtype=object)
    return Trace(t.arrival_s, t.batch_size, t.model, {"request_id": ids, "tokens_in": np.arange(n)}, "long")


@pytest.mark.parametrize("method", ["thin", "superpose"])
@pytest.mark.parametrize("factor", [0.013, 0.37, 1.0, 2.5, 40.0])
def test_resampling_hits_the_target_rate(method, factor):
    t = _bursty()
    rate_qps = factor * t.mean_rate_qps
    out = scale_trace(t, rate_qps, method, seed=3)
    assert abs(out.mean_rate_qps / rate_qps - 1) <= 2.3e-16  # at most one ulp off, as time scaling
    assert np.all(np.diff(out.arrival_s) >= 0) and out.arrival_s[0] == t.arrival_s[0]
    assert len(out) == round(rate_qps * out.duration_s) + 1


def test_every_registered_method_hits_the_rate():
    assert list(SCALERS) == ["time", "thin", "superpose"]
    for method in SCALERS:
        for rate_qps in (3.0, 400.0):
            assert scale_trace(_bursty(), rate_qps, method, seed=0).mean_rate_qps == pytest.approx(rate_qps, rel=1e-15)


def test_thin_keeps_a_subset_in_order_at_the_original_times():
    t = _bursty()
    out = thin(t, 0.3 * t.mean_rate_qps, seed=5)
    kept = out.extra["tokens_in"]  # each query's row in the original trace
    m = len(out)
    assert 0.25 * len(t) < m < 0.35 * len(t)
    assert np.all(np.diff(kept) > 0) and kept[0] == 0 and kept[-1] == len(t) - 1  # in order; the ends kept
    assert np.array_equal(out.batch_size, t.batch_size[kept]) and np.array_equal(out.model, t.model[kept])
    # The original offsets, up to one uniform stretch of at most 1 / (2 (m - 1)) that makes the rate exact.
    ratio = (out.arrival_s[1:] - out.arrival_s[0]) / (t.arrival_s[kept][1:] - t.arrival_s[0])
    ratio = ratio[np.isfinite(ratio)]
    assert np.allclose(ratio, ratio[0], rtol=1e-12, atol=0)
    assert abs(ratio[0] - 1) <= 1 / (2 * (m - 1)) + 1e-12
    assert out.source == f"bursty (thinned to {0.3 * t.mean_rate_qps:g} qps)"


def test_thin_at_the_trace_rate_is_the_trace():
    t = _bursty()
    out = thin(t, t.mean_rate_qps, seed=1)
    assert np.array_equal(out.extra["tokens_in"], t.extra["tokens_in"])
    assert np.allclose(out.arrival_s, t.arrival_s, rtol=0, atol=1e-12)


def test_thinning_moves_the_dispersion_towards_poisson():
    t = _long_bursty()
    p = 0.25
    before = count_dispersion(t.arrival_s, 2.0)
    after = count_dispersion(thin(t, p * t.mean_rate_qps, seed=2).arrival_s, 2.0)
    assert before > 3  # bursty at this scale (a renewal process with CV^2 = 5 tends to 5)
    assert after == pytest.approx(p * (before - 1) + 1, rel=0.15)  # independent thinning: p (I - 1) + 1


@pytest.mark.parametrize("factor", [4.0, 20.0])
def test_superpose_keeps_per_window_burstiness_and_smooths_the_gaps(factor):
    t = _long_bursty()
    rate_qps = factor * t.mean_rate_qps
    out = superpose(t, rate_qps, seed=4)
    assert out.mean_rate_qps == pytest.approx(rate_qps, rel=1e-15)
    assert len(out) > 0.95 * factor * len(t)
    # Windows much shorter than span / copies: cyclic copies of one finite trace together cover its windows more
    # evenly than independent traces would, lowering the index by about (copies - 1) / windows in the span.
    for window_s in (0.5, 2.0):
        before, after = count_dispersion(t.arrival_s, window_s), count_dispersion(out.arrival_s, window_s)
        assert before > 3
        assert after == pytest.approx(before, rel=0.15)  # variances and means add: the index is kept
    # Merging independent streams drives the gaps towards Poisson's (Palm-Khintchine): the aggregate is smoother.
    assert gap_cv(out.arrival_s) < 0.9 * gap_cv(t.arrival_s)
    ids = out.extra["request_id"]
    assert len(set(ids.tolist())) == len(out)  # unique, and each names its source query and copy
    assert {i.split(".")[0] for i in ids[:200]} <= set(t.extra["request_id"].tolist())
    assert any(".c" in i for i in ids[:200])
    assert applied_scale(t, rate_qps, "superpose") == "superpose" and applied_scale(t, rate_qps, "thin") == "superpose"


def test_time_compression_does_not_keep_per_window_burstiness():
    # Why the other methods exist: compressing time brings slow swings into each window (here a 10 s quiet spell).
    arrival_s = np.concatenate([np.linspace(0, 100, 1001), np.linspace(110, 210, 1001)])
    n = len(arrival_s)
    t = Trace(arrival_s, np.ones(n, dtype=np.int64), np.array(["m"] * n, dtype=object))
    rate_qps = 20 * t.mean_rate_qps
    before = count_dispersion(t.arrival_s, 1.0)
    assert before < 1.5
    assert count_dispersion(superpose(t, rate_qps, seed=0).arrival_s, 1.0) < 1.5
    assert count_dispersion(scale_to_rate(t, rate_qps).arrival_s, 1.0) > 4  # the spell lands in one of ten windows


def test_resampling_is_seeded_and_leaves_the_global_rng_alone():
    t = _bursty()
    for method, rate_qps in (("thin", 7.0), ("superpose", 300.0)):
        np.random.seed(1)
        a = scale_trace(t, rate_qps, method, seed=9)
        np.random.seed(2)
        state = np.random.get_state()[1].copy()
        b = scale_trace(t, rate_qps, method, seed=9)
        assert np.array_equal(np.random.get_state()[1], state)  # the global RNG was not drawn from
        assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.extra["tokens_in"], b.extra["tokens_in"])
        c = scale_trace(t, rate_qps, method, seed=10)
        assert not np.array_equal(a.extra["tokens_in"][: len(c)], c.extra["tokens_in"][: len(a)])


def test_queries_repeat_the_trace_when_one_period_holds_too_few():
    t = _bursty(200)
    rate_qps = 0.01 * t.mean_rate_qps
    out = thin(t, rate_qps, seed=0, queries=150)  # one period would give about 3
    assert len(out) == 150 and np.all(np.diff(out.arrival_s) >= 0)
    assert "periods" in out.source
    assert 0.5 * rate_qps < out.mean_rate_qps < 2 * rate_qps  # the first 150 of an exact-rate stream
    # At the start the kept queries are the trace's own (first period, times up to the tiny stretch).
    first = out.extra["tokens_in"][out.arrival_s - t.arrival_s[0] < 0.9 * t.duration_s]
    assert np.all(np.diff(first) > 0)
    long = _long_bursty(3000)
    ids = thin(long, 0.02 * long.mean_rate_qps, seed=0, queries=500).extra["request_id"].tolist()
    assert len(set(ids)) == 500 and any(".r1" in i for i in ids)


def test_queries_cut_every_method():
    t = _bursty()
    for method in SCALERS:
        assert len(scale_trace(t, 50.0, method, seed=0, queries=100)) == 100
    assert len(scale_trace(t, 50.0, "time", queries=10**6)) == len(t)  # time cannot add queries
    assert len(scale_trace(t, 50.0, "superpose", queries=3 * len(t))) == 3 * len(t)


@pytest.mark.parametrize("method", list(SCALERS))
@pytest.mark.parametrize("rate_qps", [0, -1.0, float("nan"), float("inf"), "fast", None])
def test_every_method_rejects_a_bad_rate(method, rate_qps):
    with pytest.raises(InputError, match="^rate ") as info:
        scale_trace(_bursty(10), rate_qps, method)
    assert info.value.field == "rate"


def test_an_unknown_method_names_the_scale_field():
    with pytest.raises(InputError) as info:
        scale_trace(_bursty(10), 1.0, "warp")
    assert info.value.field == "scale"
    assert str(info.value) == "scale 'warp': expected one of time, thin, superpose"
    assert info.value.shown_as({"scale": "--scale"}).startswith("--scale 'warp'")


@pytest.mark.parametrize(
    "kwargs, field", [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"queries": 0}, "queries")]
)
def test_bad_seed_or_queries(kwargs, field):
    for method in SCALERS:
        with pytest.raises(InputError) as info:
            scale_trace(_bursty(10), 1.0, method, **kwargs)
        assert info.value.field == field


@pytest.mark.parametrize("method", ["thin", "superpose"])
def test_resampling_rejects_a_zero_span_trace(method):
    t = Trace(np.array([2.0, 2.0]), np.ones(2, dtype=np.int64), np.array(["m"] * 2, dtype=object), source="z.csv")
    with pytest.raises(InputError, match=r"z\.csv: .*zero seconds"):
        scale_trace(t, 1.0, method)


def test_thin_above_the_trace_rate_superposes():
    # Thinning cannot add queries; rather than stop a sweep that climbs past the trace's rate, it superposes.
    t = _bursty()
    rate_qps = 3.2 * t.mean_rate_qps
    assert applied_scale(t, rate_qps, "thin") == "superpose" and copies_for(t, rate_qps) == 4
    a, b = thin(t, rate_qps, seed=2), superpose(t, rate_qps, seed=2)
    assert np.array_equal(a.arrival_s, b.arrival_s) and "4 copies superposed" in a.source
    assert applied_scale(t, t.mean_rate_qps, "superpose") == "thin" and applied_scale(t, 1e9, "time") == "time"


def test_count_dispersion():
    assert count_dispersion(np.arange(0.0, 100.0, 0.1), 1.0) == pytest.approx(0.0, abs=1e-9)
    poisson = np.cumsum(np.random.default_rng(0).exponential(0.01, 200_000))
    assert count_dispersion(poisson, 1.0) == pytest.approx(1.0, abs=0.1)
    assert np.isnan(count_dispersion(np.array([0.0, 1.0]), 1.0))  # one full window
    assert np.isnan(count_dispersion(np.array([]), 1.0))
    with pytest.raises(InputError) as info:
        count_dispersion(poisson, 0.0)
    assert info.value.field == "window_s"
