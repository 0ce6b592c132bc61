"""Fluid LP bound: hand-computed optima, the violation allowance, and never below a simulated allowable rate."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.evaluate import EvalSettings, evaluate_config
from harness.allocate.fluid import cut_bounds, fluid_bound, fluid_model
from harness.allocate.run import make_context
from harness.allocate.space import BatchMix, enumerate_configs, make_problem
from harness.core.profiles import Profile
from tests.conftest import make_profile_frame
from traces.generate import generate_trace


@pytest.fixture
def fixed(fast_slow_profile) -> Profile:
    """'fast' 10 ms at batch 100, 20 ms at 200; 'slow' 40 / 80 ms (conftest)."""
    return fast_slow_profile


def _model(profile, qos_ms, sizes):
    problem = make_problem(profile, {"fast": 1.0, "slow": 0.25}, "m", qos_ms, 10.0)
    return problem, fluid_model(profile, problem, BatchMix.from_batch_sizes(sizes))


def test_capacity_adds_up_when_every_type_meets_qos(fixed):
    problem, model = _model(fixed, 50.0, [100])
    counts = {"fast": 2, "slow": 3}
    # 1% of queries may violate (dropped, at no cost): 0.99 lam = 2 x 100 + 3 x 25.
    assert fluid_bound(model, [counts[t] for t in problem.types]) == pytest.approx((2 * 100 + 3 * 25) / 0.99)


def test_violation_allowance_is_the_percentile_tail(fixed):
    problem, model = _model(fixed, 30.0, [100])  # slow (40 ms) can never meet 30 ms
    counts = {"fast": 1, "slow": 5}
    # 1% of the queries may be dropped: 0.99 lam = 100.
    assert fluid_bound(model, [counts[t] for t in problem.types]) == pytest.approx(100 / 0.99)
    only_slow = {"fast": 0, "slow": 5}
    assert fluid_bound(model, [only_slow[t] for t in problem.types]) == pytest.approx(0.0, abs=1e-9)


def test_routing_sends_large_batches_to_the_type_that_can_serve_them(fixed):
    problem, model = _model(fixed, 50.0, [100, 200])  # slow serves only batch 100 within QoS
    n = {"fast": 1, "slow": 4}
    # slow (4 x 25 qps of small queries) takes every small query; 1% of lam, all large, is dropped; fast
    # serves the other large ones: 0.49 lam x 20 ms = 1000 ms per second.
    assert fluid_bound(model, [n[t] for t in problem.types]) == pytest.approx(1000 / (0.49 * 20), rel=1e-6)
    # Without the slow instances, fast serves both sizes: 0.49 lam x 20 + 0.5 lam x 10 = 1000.
    assert fluid_bound(model, [1 if t == "fast" else 0 for t in problem.types]) == pytest.approx(1000 / 14.8)


@pytest.mark.slow
def test_fluid_bound_is_above_the_simulated_allowable_rate(toy_profile_small):
    profile = toy_profile_small
    problem = make_problem(profile, {"gpu": 1.0, "cpu": 0.25}, "toy", 40.0, 2.0)
    trace = generate_trace(3000, 1.0, batch_mix="uniform:1:100", model="toy", rng=np.random.default_rng(3))
    ctx = make_context(problem, profile, trace, EvalSettings(queries=3000, rel_tol=0.03))
    for counts in ([1, 0], [1, 2], [2, 1]):
        ordered = [dict(zip(("gpu", "cpu"), counts))[t] for t in problem.types]
        ev = evaluate_config(ctx, ordered)
        assert 0 < ev.allowable_qps <= ev.upper_qps


@pytest.fixture
def toy_profile_small() -> Profile:
    """A GPU-like type (4 + 0.1 b ms) and a CPU-like one (1 + 0.5 b ms), five samples per bucket (+-10%)."""
    spread = np.array([0.9, 0.95, 1.0, 1.05, 1.1])
    buckets = range(10, 101, 10)
    return Profile.from_frame(
        make_profile_frame(
            {
                ("gpu", "toy"): {b: list((4 + 0.1 * b) * spread) for b in buckets},
                ("cpu", "toy"): {b: list((1 + 0.5 * b) * spread) for b in buckets},
            }
        ),
        drop_max=False,
    )


def test_cut_bounds_are_exact_at_the_top_and_never_below_the_lp_elsewhere():
    # Four types whose speed ratios differ by batch size, so the LP's split (and its dual) changes across the space.
    frame = make_profile_frame(
        {
            ("a", "m"): {100: [8.0], 500: [30.0], 1000: [55.0]},
            ("b", "m"): {100: [12.0], 500: [70.0], 1000: [150.0]},
            ("c", "m"): {100: [6.0], 500: [60.0], 1000: [260.0]},
            ("d", "m"): {100: [20.0], 500: [90.0], 1000: [170.0]},
        }
    )
    profile = Profile.from_frame(frame, source="four", drop_max=False)
    prices = {"a": 0.5, "b": 0.15, "c": 0.2, "d": 0.12}
    problem = make_problem(profile, prices, "m", 200.0, 2.0)
    configs = enumerate_configs(problem)
    rng = np.random.default_rng(0)
    model = fluid_model(profile, problem, BatchMix.from_batch_sizes(rng.choice([100, 500, 1000], 500)))
    exact = np.array([fluid_bound(model, row) for row in configs])
    ub, solved = cut_bounds(model, configs, exact_top=20)
    assert solved < len(configs) / 3
    assert np.all(ub >= exact - 1e-7)
    top = np.argsort(-exact, kind="stable")[:20]
    assert ub[top] == pytest.approx(exact[top])
    # The ranking's head by the cut bounds is the exact LP ranking's head, up to configurations tied with its last
    # member (two LPs of equal value may differ in the last bit, which decides the order between them).
    head = np.argsort(-ub, kind="stable")[:20]
    assert np.all(exact[head] >= exact[top[-1]] * (1 - 1e-12))
    assert len(set(head.tolist()) ^ set(top.tolist())) <= 2 * int(np.sum(np.isclose(exact, exact[top[-1]], rtol=1e-12)))
