"""Kairos upper bound: inputs derived from profile and mix, both branches of the formula, the medoid pick."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.bound import (
    KairosStats,
    PickRule,
    kairos_bound,
    kairos_bounds,
    kairos_stats,
    pick_medoid,
    rank_order,
)
from harness.allocate.space import BatchMix, enumerate_configs, make_problem
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from tests.conftest import make_profile_frame


@pytest.fixture
def two_types() -> Profile:
    """'fast' (base) 10/20 ms at batch 100/200; 'slow' 40/80 ms."""
    return Profile.from_frame(
        make_profile_frame(
            {
                ("fast", "m"): {100: [10.0], 200: [20.0]},
                ("slow", "m"): {100: [40.0], 200: [80.0]},
            }
        ),
        drop_max=False,
    )


def _stats(**kw) -> KairosStats:
    """One base (index 0, 100 qps) and one auxiliary: 80% small queries taking half the base time, 50 qps."""
    base = dict(
        types=("base", "aux"),
        base_index=0,
        base_qps=100.0,
        max_ok_batch=np.array([1000, 50]),
        small_ratio=np.array([1.0, 0.8]),
        base_time_ratio=np.array([1.0, 0.5]),
        qps_at=np.array([[100.0, 100.0], [50.0, 50.0]]),
        tail=0.01,
    )
    base.update(kw)
    return KairosStats(**base)


def test_stats_come_from_profile_and_mix(two_types):
    problem = make_problem(two_types, {"fast": 1.0, "slow": 0.2}, "m", 50.0, 2.0)
    stats = kairos_stats(two_types, problem, BatchMix.from_batch_sizes([100, 200]))
    assert problem.base_type == "fast"
    (aux,) = stats.aux_profiles()
    assert aux.instance_type == "slow"
    assert aux.violating_batch == 101 and aux.max_ok_batch == 100  # 101..200 take 80 ms > 50
    assert aux.small_ratio == pytest.approx(0.5)
    assert aux.base_time_ratio == pytest.approx(10 / 30)
    assert aux.small_qps == pytest.approx(25.0)
    assert stats.base_qps == pytest.approx(1000 / 15)
    # A mix of small queries only: everything is small, the bound adds up every instance.
    only_small = kairos_stats(two_types, problem, BatchMix.from_batch_sizes([100, 100]))
    assert only_small.small_ratio[problem.types.index("slow")] == 1.0
    assert kairos_bound(only_small, [1, 2]) == pytest.approx(100 + 2 * 25)


def test_bound_when_auxiliaries_saturate():
    # aux 50 qps -> all queries at 62.5 qps, 12.5 large ones use 31% of the base's large-only capacity (40).
    assert kairos_bound(_stats(), [1, 1]) == pytest.approx(62.5 + 100 * (1 - 12.5 / 40))


def test_bound_when_the_base_is_the_bottleneck():
    # 10 aux would absorb 625 qps of mix; large queries need more than the base's 40/s: bound 40 / 0.2.
    assert kairos_bound(_stats(), [1, 10]) == pytest.approx(200.0)
    assert kairos_bound(_stats(), [1, 20]) == pytest.approx(200.0)


def test_bound_without_auxiliaries_or_base():
    assert kairos_bound(_stats(), [3, 0]) == pytest.approx(300.0)
    assert kairos_bound(_stats(), [0, 4]) == 0.0  # 20% of queries unservable > 1% tail
    assert kairos_bound(_stats(small_ratio=np.array([1.0, 0.995])), [0, 4]) == pytest.approx(200 / 0.995)


def test_bound_grows_with_instances(shipped_profile):
    problem = make_problem(
        shipped_profile, load_prices(), "wnd", 25.0, 2.5, ["g4dn.xlarge", "c5n.2xlarge", "r5n.large", "t3.xlarge"]
    )
    mix = BatchMix.from_batch_sizes(np.random.default_rng(1).integers(1, 1001, 5000))
    stats = kairos_stats(shipped_profile, problem, mix)
    configs = enumerate_configs(problem)
    bounds = kairos_bounds(stats, configs)
    lookup = {tuple(r): b for r, b in zip(configs.tolist(), bounds)}
    for row, b in lookup.items():
        for j in range(len(row)):
            bigger = tuple(n + (k == j) for k, n in enumerate(row))
            if bigger in lookup:
                assert lookup[bigger] >= b - 1e-9


def test_medoid_of_the_top_k():
    configs = np.array([[1, 10, 0], [1, 0, 10], [1, 5, 5], [1, 6, 4], [0, 0, 1]])
    bounds = np.array([100.0, 99.0, 98.0, 97.0, 1.0])
    costs = np.ones(5)
    within_all = dict(within=0.5, by="bound")
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=1, by="bound")) == 0
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=4, **within_all)) == 2  # [1,5,5] is central
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=2, **within_all)) == 0  # tie: the higher bound
    # Only near-ties compete: within 1.5% of the best leaves [1,10,0] and [1,0,10] (a tie), so top-1.
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=4, within=0.015, by="bound")) == 0
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=10, within=0.025, by="bound")) == 2
    with pytest.raises(ValueError, match="top k"):
        PickRule(top_k=0)
    with pytest.raises(ValueError, match="pick within"):
        PickRule(within=1.0)
    with pytest.raises(ValueError, match="pick by"):
        PickRule(by="nope")


def test_queue_scores_choose_among_the_top_k_by_bound():
    configs = np.array([[1, 10, 0], [1, 0, 10], [1, 5, 5], [1, 6, 4], [0, 0, 1]])
    bounds = np.array([100.0, 99.0, 98.0, 97.0, 1.0])
    scores = np.array([60.0, 50.0, 59.0, 80.0, 500.0])  # the last is outside the top 4: never a candidate
    costs = np.ones(5)
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=4, within=0.0), scores) == 3
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=3, within=0.0), scores) == 0
    # Near-ties by score (60 and 59 within 3%): their medoid, equal distances to the better score.
    assert pick_medoid(configs, bounds, costs, PickRule(top_k=3, within=0.03), scores) == 0
    with pytest.raises(ValueError, match="queueing-aware"):
        pick_medoid(configs, bounds, costs, PickRule())


def test_equal_bounds_rank_the_dearer_configuration_first():
    # The budget is spent either way; among equal bounds more instances can only shorten queues.
    configs = np.array([[1, 1], [2, 0], [1, 0]])
    bounds = np.array([5.0, 5.0, 6.0])
    assert rank_order(bounds, np.array([1.5, 2.0, 1.0])).tolist() == [2, 1, 0]
    assert pick_medoid(configs[:2], bounds[:2], np.array([1.5, 2.0]), PickRule(top_k=1, by="bound")) == 1


def test_threshold_by_percentile_is_stricter_than_the_mean():
    # 'slow' at batch 100: mean 40 ms but 1 sample in 5 at 70 ms; QoS 50 ms.
    profile = Profile.from_frame(
        make_profile_frame(
            {
                ("fast", "m"): {100: [10.0] * 5, 200: [20.0] * 5},
                ("slow", "m"): {100: [32.5, 32.5, 32.5, 32.5, 70.0], 200: [80.0] * 5},
            }
        ),
        drop_max=False,
    )
    problem = make_problem(profile, {"fast": 1.0, "slow": 0.2}, "m", 50.0, 2.0)
    mix = BatchMix.from_batch_sizes([100, 200])
    slow = problem.types.index("slow")
    assert kairos_stats(profile, problem, mix, "mean").small_ratio[slow] == 0.5
    assert kairos_stats(profile, problem, mix, "p99").small_ratio[slow] == 0.0
    with pytest.raises(ValueError, match="threshold"):
        kairos_stats(profile, problem, mix, "median")
