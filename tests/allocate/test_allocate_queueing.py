"""The queueing-aware estimate: Erlang C, never above the fluid bound, and it sees slack and pooling."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.fluid import fluid_bound, fluid_model
from harness.allocate.queueing import erlang_c, queue_estimate, queue_model
from harness.allocate.space import BatchMix, make_problem


def models(profile, qos_ms, sizes):
    problem = make_problem(profile, {"fast": 1.0, "slow": 0.25}, "m", qos_ms, 10.0)
    mix = BatchMix.from_batch_sizes(np.asarray(sizes))
    fm = fluid_model(profile, problem, mix)
    return problem, fm, queue_model(profile, problem, mix, fm)


def test_erlang_c_known_values():
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 0.0) == 0.0 and erlang_c(3, 3.0) == 1.0
    assert erlang_c(10, 5.0) < erlang_c(5, 2.5) < erlang_c(1, 0.5)  # pooling at equal utilization


def test_never_above_the_fluid_bound(fast_slow_profile):
    problem, fm, qm = models(fast_slow_profile, 100.0, [100, 100, 200])
    for counts in ([1, 0], [2, 3], [1, 8], [4, 1]):
        c = [dict(zip(("fast", "slow"), counts))[t] for t in problem.types]
        assert 0.0 <= queue_estimate(qm, c) <= fluid_bound(fm, c) + 1e-9


def test_little_slack_costs_throughput_much_slack_does_not(fast_slow_profile):
    def counts(problem):
        return [2 if t == "fast" else 0 for t in problem.types]

    problem, fm, qm = models(fast_slow_profile, 1000.0, [100])
    assert queue_estimate(qm, counts(problem)) >= 0.9 * fluid_bound(fm, counts(problem))
    problem, fm, qm = models(fast_slow_profile, 12.0, [100])  # 2 ms of slack on a 10 ms service
    assert queue_estimate(qm, counts(problem)) < 0.6 * fluid_bound(fm, counts(problem))


def test_more_instances_share_a_queue_better(fast_slow_profile):
    problem, _, qm = models(fast_slow_profile, 30.0, [100])
    per_instance = [queue_estimate(qm, [n if t == "fast" else 0 for t in problem.types]) / n for n in (1, 2, 4)]
    assert per_instance[0] < per_instance[1] < per_instance[2]
