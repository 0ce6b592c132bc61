"""Synthetic traces: batch-mix proportions, arrival statistics, seeding, spec errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import InputError
from traces.generate import ARRIVALS, arrival_times, batch_sizes, generate_trace, kairos_mix
from traces.scale import gap_cv

N = 50_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_kairos_mix_proportions_and_rounding():
    b = kairos_mix(N, rng(1))
    assert b.dtype == np.int64 and np.all(b % 10 == 0) and b.min() >= 10 and b.max() <= 1000
    frac = lambda mask: float(np.mean(mask))  # noqa: E731
    # Expected shares after rounding up to a multiple of 10 (edges shared between components excluded):
    assert frac(b <= 90) == pytest.approx(0.08 * 90 / 99, abs=0.01)  # small U[1,99]
    assert frac((b >= 210) & (b <= 590)) == pytest.approx(0.22 * 390 / 400, abs=0.01)  # medium U[200,599]
    assert frac(b >= 610) == pytest.approx(0.05 * 399 / 400, abs=0.01)  # large U[600,999]
    assert frac((b >= 110) & (b <= 200)) == pytest.approx(0.65, abs=0.01)  # lognormal body
    assert np.median(b) == pytest.approx(170, abs=20)  # exp(5.1) ~ 164, rounded up


def test_batch_mix_specs():
    assert np.all(batch_sizes("fixed:64", 100, rng()) == 64)
    u = batch_sizes("uniform:3:5", 5000, rng())
    assert set(u.tolist()) == {3, 4, 5}
    ln = batch_sizes("lognormal:4:0.5", N, rng())
    assert ln.min() >= 1 and np.median(ln) == pytest.approx(np.exp(4), rel=0.05)


@pytest.mark.parametrize(
    "spec",
    [
        "nope",
        "kairos:2",
        "fixed",
        "fixed:0",
        "fixed:2.5",
        "uniform:5:3",
        "uniform:0:3",
        "uniform:a:b",
        "lognormal:1",
        "lognormal:1:-1",
    ],
)
def test_bad_batch_mix_is_an_input_error(spec):
    with pytest.raises(InputError, match="^batch mix "):
        batch_sizes(spec, 10, rng())


@pytest.mark.parametrize("spec", ["poisson", "gamma:0.5", "constant", "artifact", "mmpp:4:2", "diurnal:0.5:20"])
def test_every_process_starts_at_zero_and_never_goes_back(spec):
    a = arrival_times(spec, 2000, 50.0, rng(3))
    assert len(a) == 2000 and a[0] == 0.0 and np.all(np.diff(a) >= 0)


def test_every_listed_process_is_tested():
    assert {s.split(":")[0] for s in ARRIVALS} == {"poisson", "gamma", "constant", "artifact", "mmpp", "diurnal"}


@pytest.mark.parametrize(
    "spec,tol",
    [
        ("poisson", 0.02),
        ("gamma:0.25", 0.04),
        ("gamma:4", 0.02),
        ("constant", 1e-9),
        ("artifact", 0.02),
        ("mmpp:5:1", 0.1),
        ("diurnal:0.8:5", 0.03),
    ],
)
def test_mean_rate(spec, tol):
    # diurnal: 50,000 queries at 100 qps cover ~100 periods of 5 s, so the mean is that of whole periods.
    a = arrival_times(spec, N, 100.0, rng(5))
    assert (N - 1) / a[-1] == pytest.approx(100.0, rel=tol)


@pytest.mark.parametrize("k", [0.25, 1.0, 4.0])
def test_gamma_gap_cv_is_one_over_sqrt_k(k):
    a = arrival_times(f"gamma:{k}", N, 20.0, rng(11))
    assert gap_cv(a) == pytest.approx(1 / np.sqrt(k), rel=0.05)


def test_poisson_gaps_are_exponential():
    gaps = np.diff(arrival_times("poisson", N, 10.0, rng(2)))
    assert gap_cv(np.concatenate([[0.0], np.cumsum(gaps)])) == pytest.approx(1.0, abs=0.03)
    assert np.mean(gaps > 0.1) == pytest.approx(np.exp(-1), abs=0.01)  # P(gap > mean) = 1/e


def test_artifact_gaps_are_whole_milliseconds():
    gaps_ms = np.diff(arrival_times("artifact", 1000, 50.0, rng())) * 1000
    assert np.allclose(gaps_ms, np.round(gaps_ms), atol=1e-6)


def test_mmpp_is_burstier_than_poisson_and_diurnal_follows_the_sine():
    assert gap_cv(arrival_times("mmpp:10:2", N, 50.0, rng(4))) > 1.3
    a = arrival_times("diurnal:0.9:10", N, 100.0, rng(4))
    phase = (a % 10.0) / 10.0
    first_half = np.mean(phase < 0.5)  # sin > 0 in the first half-period: more arrivals there
    assert first_half == pytest.approx(0.5 + 0.9 / np.pi, abs=0.02)


@pytest.mark.parametrize(
    "spec",
    ["nope", "gamma", "gamma:0", "gamma:x", "mmpp:0.5:1", "mmpp:2:0", "diurnal:1:10", "diurnal:0.5:0", "poisson:2"],
)
def test_bad_arrival_spec_is_an_input_error(spec):
    with pytest.raises(InputError, match="^arrivals "):
        arrival_times(spec, 10, 1.0, rng())


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf")])
def test_bad_rate_is_an_input_error(rate):
    with pytest.raises(InputError, match="^rate "):
        arrival_times("poisson", 10, rate, rng())


def test_generate_trace_is_deterministic_for_a_seed():
    a = generate_trace(500, 20.0, arrivals="mmpp:3:1", batch_mix="kairos", model="wnd", rng=rng(9))
    b = generate_trace(500, 20.0, arrivals="mmpp:3:1", batch_mix="kairos", model="wnd", rng=rng(9))
    c = generate_trace(500, 20.0, arrivals="mmpp:3:1", batch_mix="kairos", model="wnd", rng=rng(10))
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.batch_size, b.batch_size)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert a.models == ["wnd"] and len(a) == 500
    assert "mmpp:3:1" in a.source


def test_generate_trace_rejects_no_queries():
    with pytest.raises(InputError, match="^queries "):
        generate_trace(0, 1.0, rng=rng())
