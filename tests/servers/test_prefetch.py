"""The live dispatcher's early slot (prefetch) over the shared DispatchCore, with pull and push policies."""

import numpy as np
import pytest

from harness.core.profiles import Profile
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import Query, make_policy
from servers.dispatcher.prefetch import PrefetchCore, PrefetchInstance
from tests.conftest import make_profile_frame


@pytest.fixture
def core_for():
    """A PrefetchCore over two 10 ms instances; returns (core, started-list) for a policy name."""
    prof = Profile.from_frame(make_profile_frame({("a", "m"): {10: [10.0]}}), drop_max=False)

    def make(policy):
        lat = LatencyModel(prof, ["a"], ["m"])
        insts = build_instances(["a", "a"], lat.type_index, cls=PrefetchInstance)
        started = []
        core = PrefetchCore(
            make_policy(policy),
            lat,
            insts,
            100.0,
            np.random.default_rng(0),
            on_assign=lambda q, i: None,
            on_start=lambda q, i: started.append((q.index, i.index)),
            on_drop=lambda q: None,
        )
        return core, started

    return make


def q(i, t=0.0):
    return Query(i, str(i), "m", 10, t)


@pytest.mark.parametrize("policy", ["fcfs", "kairos", "least_outstanding"])
def test_early_slot_starts_the_next_query_before_the_running_one_ends(core_for, policy):
    core, started = core_for(policy)
    for i in range(4):
        core.arrive(0.0, q(i))
    assert started == [(0, 0), (1, 1)]
    inst = core.instances[0]
    core.open_early(0.008, inst)
    assert started[-1] == (2, 0) and inst.running == 2
    assert not inst.idle  # the early slot holds one query only
    core.open_early(0.009, inst)  # already open: no-op
    assert len(started) == 3
    core.complete(0.010, q(0), inst, 10.0)
    assert inst.capacity == 1 and inst.running == 1 and not inst.early
    assert core.total_slots == 2 and len(started) == 3  # query 3 still waits for a free instance
    core.complete(0.010, q(1), core.instances[1], 10.0)
    assert started[-1] == (3, 1)


def test_early_slot_left_unused_closes_at_completion(core_for):
    core, _ = core_for("kairos")
    core.arrive(0.0, q(0))
    inst = core.instances[0]
    core.open_early(0.008, inst)
    assert inst.idle and inst.time_left_s(0.008) == pytest.approx(0.002)
    core.complete(0.010, q(0), inst, 10.0)
    assert inst.capacity == 1 and inst.idle and core.total_slots == 2


def test_early_slot_on_a_failed_instance_is_given_back(core_for):
    core, _ = core_for("fcfs")
    for i in range(3):
        core.arrive(0.0, q(i))
    inst = core.instances[0]
    core.open_early(0.005, inst)
    core.mark_dead(0.006, inst)
    assert inst.capacity == 1 and core.total_slots == 1
    core.complete(0.006, q(0), inst, None)
    core.complete(0.006, q(2), inst, None)
    core.mark_alive(0.5, inst)
    assert core.total_slots == 2 and inst.idle
    core.open_early(0.6, inst)  # idle instance: nothing to open early
    assert inst.capacity == 1


def test_early_slot_with_a_local_fifo_starts_one_query_at_a_time(core_for):
    core, started = core_for("round_robin")
    for i in range(6):  # three per instance: one running, two in each local FIFO
        core.arrive(0.0, q(i))
    inst = core.instances[0]
    assert [s for s in started if s[1] == 0] == [(0, 0)]
    core.open_early(0.008, inst)
    assert started[-1] == (2, 0) and inst.running == 2 and len(inst.queue) == 1
    core.complete(0.010, q(0), inst, 10.0)
    assert inst.running == 1 and len(inst.queue) == 1  # query 4 waits for the prefetched one
    assert inst.expected_free_s == pytest.approx(0.010 + 0.010 + 0.010)  # re-anchored: runs now, then query 4
    core.complete(0.020, q(2), inst, 10.0)
    assert started[-1] == (4, 0) and inst.running == 1 and not inst.queue


def test_prefetched_query_is_reanchored_at_its_predecessors_end(core_for):
    core, started = core_for("kairos")
    core.arrive(0.0, q(0))
    core.arrive(0.0, q(9))  # keeps the other instance busy
    inst = core.instances[0]
    core.open_early(0.008, inst)
    core.arrive(0.008, q(1))
    assert started[-1] == (1, 0) and inst.expected_free_s == pytest.approx(0.020)
    core.complete(0.007, q(0), inst, 7.0)  # ended 3 ms earlier than predicted
    assert inst.expected_free_s == pytest.approx(0.017)
