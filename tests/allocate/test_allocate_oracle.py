"""The exhaustive oracle: worker processes give the same answers as one process, and find the best."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.evaluate import Evaluator
from harness.allocate.oracle import run_oracle
from harness.allocate.space import enumerate_configs
from tests.allocate.toy import toy_problem

pytestmark = pytest.mark.slow  # whole stacks or long searches: left out of the quick loop


@pytest.fixture(scope="module")
def toy():
    """The toy problem of tests/allocate/toy.py."""
    return toy_problem(2000)


def test_parallel_oracle_matches_one_process_and_finds_the_best(toy):
    problem, ctx = toy
    configs = enumerate_configs(problem)
    assert len(configs) == 5
    seen = []
    parallel = run_oracle(Evaluator(ctx), configs, workers=2, progress=lambda d, n, ev: seen.append((d, n)))
    serial = run_oracle(Evaluator(ctx), configs, workers=1)
    assert [e.allowable_qps for e in parallel.evaluations] == [e.allowable_qps for e in serial.evaluations]
    assert [e.counts for e in parallel.evaluations] == [tuple(r) for r in configs.tolist()]
    assert parallel.best_index == int(np.argmax(parallel.allowable_qps))
    assert seen[-1] == (5, 5) and len(seen) == 5
    cpu = problem.types.index("cpu")
    # Adding CPU instances to the lone GPU helps: the best is heterogeneous.
    assert configs[parallel.best_index][cpu] >= 1


def test_aborting_a_failing_point_early_changes_no_verdict(toy):
    import dataclasses

    from harness.allocate.evaluate import evaluate_config

    problem, ctx = toy
    counts = [1 if t == "gpu" else 3 for t in problem.types]
    fast = evaluate_config(ctx, counts)
    slow = evaluate_config(ctx.with_settings(dataclasses.replace(ctx.settings, abort_early=False)), counts)
    assert fast.allowable_qps == slow.allowable_qps > 0
    assert fast.bracket_qps == slow.bracket_qps and fast.points == slow.points


def test_aborting_policy_raises_only_past_the_allowed_violations():
    from harness.allocate.evaluate import AbortingPolicy, _Abort
    from harness.dispatch.policies import Query, make_policy

    policy = AbortingPolicy(make_policy("fcfs"), qos_ms=10.0, first_measured=2, max_violations=1)
    late = [Query(i, str(i), "m", 1, 0.0) for i in range(4)]
    policy.on_complete(0.0, late[0], None, 50.0)  # warm-up: not counted
    policy.on_complete(0.0, late[1], None, 50.0)
    policy.on_complete(0.0, late[2], None, 5.0)  # within QoS
    policy.on_complete(0.0, late[2], None, 50.0)  # first counted violation: allowed
    with pytest.raises(_Abort):
        policy.on_complete(0.0, late[3], None, 50.0)
