"""Mélange-style allocation: hand-known answers, budget and caps, the program's optimum, errors, registration."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from harness.allocate.job import AllocateJob
from harness.allocate.melange import (
    MelangeSettings,
    instance_rates,
    melange_allocate,
    melange_solve,
    model_scale_qps,
    pool_sizes,
)
from harness.allocate.methods import METHODS as METHOD_CLASSES
from harness.allocate.run import METHODS, MethodResult, parse_methods, run_allocation
from harness.allocate.space import BatchMix, enumerate_configs, make_problem
from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.measure.cost import usd_per_million
from tests.conftest import make_profile_frame
from traces.generate import generate_trace

SPREAD = np.array([0.98, 0.99, 1.0, 1.01, 1.02])
PRICES = {"gpu": 1.0, "cpu": 0.25}
# Few arrivals and rounds keep each test well under a second; the answers below hold with large margins.
QUICK = MelangeSettings(arrivals=3000)


@pytest.fixture(scope="module")
def two_sizes() -> Profile:
    """'gpu': 2 ms at batch 10, 10 ms at batch 100; 'cpu': 4 ms and 400 ms (never within a 200 ms QoS)."""
    return Profile.from_frame(
        make_profile_frame(
            {
                ("gpu", "m"): {10: list(2.0 * SPREAD), 100: list(10.0 * SPREAD)},
                ("cpu", "m"): {10: list(4.0 * SPREAD), 100: list(400.0 * SPREAD)},
            }
        )
    )


def _mix(large_share: float) -> BatchMix:
    return BatchMix(np.array([10, 100]), np.array([1.0 - large_share, large_share]))


def _counts(problem, counts) -> dict[str, int]:
    return problem.as_mapping(counts)


@pytest.mark.parametrize(
    "large_share, expected, fluid_qps",
    [
        # Half the queries are large and only GPUs serve them: $2 buys 2 GPUs (0.5 s (10 + 2) ms <= 2 s: 333 qps)
        # or 1 GPU and 4 CPUs (the GPU's 0.5 s x 10 ms <= 1 s: about 200 qps). Two GPUs.
        (0.5, {"gpu": 2}, 2000 / 6),
        # A tenth are large: 1 GPU + 4 CPUs serve 6 / 0.0056 = 1071 qps, 2 GPUs only 2 / 0.0028 = 714.
        (0.1, {"gpu": 1, "cpu": 4}, 6 / 0.0056),
    ],
)
def test_hand_known_answer(two_sizes, large_share, expected, fluid_qps):
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.0)
    res = melange_allocate(two_sizes, problem, _mix(large_share), QUICK)
    assert _counts(problem, res.solution.counts) == expected
    # Without queueing the scale would be the fluid optimum (plus the 1% tail); queueing only takes from it.
    assert 0.8 * fluid_qps < res.solution.scale_qps <= fluid_qps / 0.99 * 1.0001


def test_large_batches_go_only_where_they_meet_the_qos(two_sizes):
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.0)
    sol = melange_allocate(two_sizes, problem, _mix(0.1), QUICK).solution
    cpu = problem.types.index("cpu")
    assert sol.share[cpu, 1] == pytest.approx(0.0, abs=1e-9)  # the CPU's 400 ms never meets 200 ms
    assert sol.share[:, 0].sum() == pytest.approx(1.0, abs=1e-6)
    assert (sol.busy <= np.asarray(sol.counts) + 1e-9).all()  # no instance loaded past 1


@pytest.mark.parametrize("budget, caps", [(2.0, None), (1.6, None), (3.0, {"cpu": 2}), (3.0, {"gpu": 1})])
def test_respects_budget_caps_and_base(two_sizes, budget, caps):
    problem = make_problem(two_sizes, PRICES, "m", 200.0, budget, max_counts=caps)
    sol = melange_allocate(two_sizes, problem, _mix(0.3), QUICK).solution
    assert problem.cost_per_h(sol.counts) <= budget + 1e-9
    assert all(n <= cap for n, cap in zip(sol.counts, problem.max_counts))
    assert sol.counts[problem.base_index] >= 1
    if caps:
        for t, cap in caps.items():
            assert sol.counts[problem.types.index(t)] <= cap


def test_the_program_finds_the_best_configuration_of_the_space(two_sizes):
    # The integer program against brute force: every configuration's own program (its counts pinned).
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.5)
    rates = instance_rates(two_sizes, problem, _mix(0.3), QUICK)
    sol = melange_solve(problem, rates)
    pinned = {tuple(int(c) for c in row): model_scale_qps(problem, rates, row) for row in enumerate_configs(problem)}
    best = max(pinned.values())
    assert sol.scale_qps == pytest.approx(best, rel=1e-5)
    assert pinned[sol.counts] == pytest.approx(best, rel=1e-5)
    # Ties go to the dearest configuration.
    tied = [c for c, v in pinned.items() if v >= best * (1 - 1e-5)]
    assert problem.cost_per_h(sol.counts) == pytest.approx(max(problem.cost_per_h(c) for c in tied))


def test_more_instances_sharing_a_queue_sustain_more_each(two_sizes):
    problem = make_problem(two_sizes, PRICES, "m", 30.0, 4.0)
    rates = instance_rates(two_sizes, problem, _mix(0.3), QUICK)
    gpu = problem.types.index("gpu")
    per_instance = [rates.rate_within_qos(gpu, k)[1] for k in (1, 2, 4)]
    assert per_instance[0] > 0 and per_instance == sorted(per_instance) and per_instance[2] > per_instance[0]
    alone = instance_rates(two_sizes, problem, _mix(0.3), dataclasses.replace(QUICK, queue="alone"))
    assert alone.pool_sizes[gpu] == (1,)
    assert rates.rate_within_qos(gpu, 4)[1] >= alone.rate_within_qos(gpu, 4)[1]


def test_same_seed_same_answer(two_sizes):
    problem = make_problem(two_sizes, PRICES, "m", 30.0, 2.5)
    a = melange_allocate(two_sizes, problem, _mix(0.3), QUICK)
    b = melange_allocate(two_sizes, problem, _mix(0.3), QUICK)
    assert a.solution.counts == b.solution.counts and a.solution.scale_qps == b.solution.scale_qps


def test_mélange_as_published_is_the_same_program(two_sizes):
    settings = dataclasses.replace(QUICK, queue="alone", tail="bucket")
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.0)
    res = melange_allocate(two_sizes, problem, _mix(0.5), settings)
    assert res.rounds == 1 and _counts(problem, res.solution.counts) == {"gpu": 2}


@pytest.mark.parametrize(
    "settings",
    [
        {"queue": "fifo"},
        {"tail": "global"},
        {"arrivals": 10},
        {"utilizations": (0.5, 0.2)},
        {"utilizations": (0.5, 1.0)},
        {"buckets": 0},
    ],
)
def test_bad_settings_are_input_errors(settings):
    with pytest.raises(InputError):
        MelangeSettings(**settings)


def test_bad_problems_are_clear_input_errors(two_sizes):
    # A batch above what the profile covers.
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.0)
    with pytest.raises(InputError, match="size 500 but"):
        melange_allocate(two_sizes, problem, BatchMix(np.array([10, 500]), np.array([0.5, 0.5])), QUICK)
    # A QoS nothing meets: no rate at all.
    tight = make_problem(two_sizes, PRICES, "m", 1.0, 2.0)
    with pytest.raises(InputError, match="serves any rate within 1 ms"):
        melange_allocate(two_sizes, tight, _mix(0.5), QUICK)
    # The required base type capped at 0.
    capped = make_problem(two_sizes, PRICES, "m", 200.0, 2.0, max_counts={"gpu": 0})
    with pytest.raises(InputError, match="required but capped at 0"):
        melange_allocate(two_sizes, capped, _mix(0.5), QUICK)
    # A rate table of other types.
    rates = instance_rates(two_sizes, problem, _mix(0.5), QUICK)
    other = make_problem(two_sizes, PRICES, "m", 200.0, 2.0, types=["gpu"])
    with pytest.raises(InputError, match="not the problem's"):
        melange_solve(other, rates)


def test_pool_sizes_are_dense_then_geometric_up_to_the_cap():
    assert pool_sizes(3, 4, 1.4) == (1, 2, 3)
    sizes = pool_sizes(16, 4, 1.4)
    assert sizes[:4] == (1, 2, 3, 4) and sizes[-1] == 16 and list(sizes) == sorted(set(sizes))


def test_registered_and_listed():
    assert "melange" in METHODS and METHOD_CLASSES["melange"].name == "melange"
    assert "melange" in parse_methods("all") and parse_methods("kairos,melange") == ("kairos", "melange")


def test_run_allocation_reports_the_pick_and_its_cost(two_sizes):
    problem = make_problem(two_sizes, PRICES, "m", 200.0, 2.0)
    trace = generate_trace(2000, 1.0, batch_mix="uniform:1:100", model="m", rng=np.random.default_rng(0))
    result = run_allocation(AllocateJob(problem, two_sizes, trace, ("melange",), measure=False))
    m = result.method("melange")
    assert m.evaluated == 0 and m.seconds > 0 and m.extra["model_qps"] > 0 and m.extra["rounds"] >= 1
    assert m.counts in {tuple(int(c) for c in row) for row in enumerate_configs(problem)}
    assert "melange" in result.table.loc[result.table["in_space"], "picked_by"].str.cat(sep=",")
    assert math.isnan(m.as_json()["usd_per_million"] or math.nan)  # not measured: no cost per query


def test_usd_per_million_comes_from_the_measured_throughput():
    m = MethodResult("x", (1,), {"a": 1}, 0.9, 10.0, 12.0, 50.0, 52.0, 3, 2, 1.0)
    assert m.as_json()["usd_per_million"] == pytest.approx(usd_per_million(0.9, 50.0))
    assert m.as_json()["usd_per_million"] == pytest.approx(0.9 / (50.0 * 3600) * 1e6)


@pytest.mark.slow
def test_shipped_wnd_pick_is_the_oracle_best(shipped_profile):
    # docs/allocator.md: the oracle's best for wnd at $2.5/h is g4dn.xlarge=1,r5n.large=13 (the Kairos pick: 2,9).
    types = ["g4dn.xlarge", "c5n.2xlarge", "r5n.large", "t3.xlarge"]
    prices = {"g4dn.xlarge": 0.526, "c5n.2xlarge": 0.432, "r5n.large": 0.149, "t3.xlarge": 0.1664}
    problem = make_problem(shipped_profile, prices, "wnd", 25.0, 2.5, types)
    trace = generate_trace(30_000, 1.0, batch_mix="kairos", model="wnd", rng=np.random.default_rng(0))
    res = melange_allocate(shipped_profile, problem, BatchMix.from_batch_sizes(trace.batch_size))
    assert problem.as_mapping(res.solution.counts) == {"g4dn.xlarge": 1, "r5n.large": 13}
