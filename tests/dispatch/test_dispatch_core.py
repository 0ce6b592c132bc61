"""DispatchCore, the half of a driver the simulator and the live dispatcher share, and its contract with policies."""

from collections import deque

import numpy as np
import pytest

from harness.core.profiles import Profile
from harness.dispatch.dispatch_core import DispatchCore
from harness.dispatch.instance_state import InstanceState, build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import POLICIES, PolicyContext, Query, make_policy
from tests.conftest import make_profile_frame


class LockedInstance(InstanceState):
    """Instance state that raises on any write once locked, so even a write undone later is caught."""

    __slots__ = ("locked",)

    def __setattr__(self, name, value):
        if getattr(self, "locked", False):
            raise AssertionError(f"policy wrote {name} of {self.instance_id}")
        super().__setattr__(name, value)


def _snapshot(instances):
    return [
        (s.capacity, s.running, s.outstanding, s.expected_free_s, s.backlog_s, list(s.queue), s.alive)
        for s in instances
    ]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_read_instance_state_and_never_change_it(name):
    prof = Profile.from_frame(
        make_profile_frame({("a", "m"): {10: [5.0], 100: [20.0]}, ("b", "m"): {10: [9.0], 100: [60.0]}}), drop_max=False
    )
    lat = LatencyModel(prof, ["a", "b"], ["m"])
    instances = build_instances(["a", "b", "b"], lat.type_index, cls=LockedInstance)
    instances[1].running, instances[1].outstanding, instances[1].expected_free_s = 1, 3, 0.05
    instances[1].queue.extend([("x", 0.02), ("y", 0.02)])
    instances[2].alive = False
    policy = make_policy(name)
    policy.bind(PolicyContext(("a", "b"), lat, 100.0, np.random.default_rng(0)), instances)
    pending = deque(Query(i, str(i), "m", 10 if i % 2 else 100, 0.001 * i) for i in range(6))
    before = _snapshot(instances)
    for inst in instances:
        inst.locked = True
    decision = policy.decide(0.01, pending, instances)
    assert _snapshot(instances) == before and len(pending) == 6
    assert all(j != 2 for _, j in decision.assign)  # never the dead instance


def test_the_simulator_and_dispatcher_core_start_queries_through_callbacks():
    prof = Profile.from_frame(make_profile_frame({("a", "m"): {10: [10.0]}}), drop_max=False)
    lat = LatencyModel(prof, ["a"], ["m"])
    insts = build_instances(["a"], lat.type_index)
    events = []
    core = DispatchCore(
        make_policy("fcfs"),
        lat,
        insts,
        100.0,
        np.random.default_rng(0),
        on_assign=lambda q, i: events.append(("assign", q.index)),
        on_start=lambda q, i: events.append(("start", q.index)),
        on_drop=lambda q: events.append(("drop", q.index)),
    )
    core.arrive(0.0, Query(0, "0", "m", 10, 0.0))
    core.arrive(0.0, Query(1, "1", "m", 10, 0.0))
    assert events == [("assign", 0), ("start", 0)] and len(core.pending) == 1
    assert insts[0].expected_free_s == pytest.approx(0.010)
    core.complete(0.012, Query(0, "0", "m", 10, 0.0), insts[0], 12.0)
    assert events[-2:] == [("assign", 1), ("start", 1)] and isinstance(insts[0], InstanceState)


def test_withdraw_takes_a_waiting_query_out_of_the_central_queue_or_its_instance_fifo_only():
    prof = Profile.from_frame(make_profile_frame({("a", "m"): {10: [10.0]}}), drop_max=False)
    lat = LatencyModel(prof, ["a"], ["m"])
    insts = build_instances(["a", "a"], lat.type_index)
    started = []
    core = DispatchCore(
        make_policy("round_robin"),  # a push policy: queries wait in the instances' own FIFOs
        lat,
        insts,
        100.0,
        np.random.default_rng(0),
        on_assign=lambda q, i: None,
        on_start=lambda q, i: started.append(q.index),
        on_drop=lambda q: None,
    )
    qs = [Query(i, str(i), "m", 10, 0.0) for i in range(5)]
    for q in qs:
        core.arrive(0.0, q)
    assert started == [0, 1] and sum(len(i.queue) for i in insts) == 3
    waiting = next(q for q in qs[2:] if q.queued_on == 1)
    before = insts[1].outstanding, insts[1].expected_free_s
    assert core.withdraw(0.001, waiting)
    assert insts[1].outstanding == before[0] - 1 and insts[1].expected_free_s == pytest.approx(before[1] - 0.010)
    assert all(q is not waiting for q, _ in insts[1].queue)
    assert not core.withdraw(0.001, waiting)  # already gone
    assert not core.withdraw(0.001, qs[0])  # running: it cannot be taken back
    # Once a queued query starts, its stale record of where it queued must not let it be withdrawn.
    queued0 = next(q for q, _ in insts[0].queue)
    core.complete(0.010, qs[0], insts[0], 10.0)
    assert queued0.index in started and not core.withdraw(0.011, queued0)
    # A query still in the central queue (no instance took it) is withdrawn from there.
    core.pending.append(extra := Query(9, "9", "m", 10, 0.0))
    assert core.withdraw(0.011, extra) and not core.pending
