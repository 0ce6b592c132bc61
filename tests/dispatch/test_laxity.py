from collections import deque

import numpy as np
import pytest

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import PolicyContext, Query, make_policy
from harness.sim.simulator import SimConfig, simulate
from tests.conftest import make_profile_frame
from traces.generate import generate_trace


@pytest.fixture
def reserve_profile() -> Profile:
    """Batch 1000 meets a 300 ms QoS only on 'fast' (critical there, 20 ms of slack); 500 fits on both."""
    frame = make_profile_frame(
        {
            ("fast", "m"): {100: [10.0], 500: [250.0], 1000: [280.0]},
            ("slow", "m"): {100: [40.0], 500: [280.0], 1000: [600.0]},
        }
    )
    return Profile.from_frame(frame, source="reserve", drop_max=False)


def bind(policy, profile, types, qos_ms=300.0):
    lat = LatencyModel(profile, types, ["m"])
    insts = build_instances(types, lat.type_index)
    policy.bind(PolicyContext(tuple(lat.instance_types), lat, qos_ms, np.random.default_rng(0)), insts)
    return insts


def queries(*specs):
    """Queries from (batch, arrival_s) pairs, in queue order."""
    return deque(Query(i, str(i), "m", b, t) for i, (b, t) in enumerate(specs))


def placed(decision):
    return sorted((q.index, j) for q, j in decision.assign)


def test_the_least_laxity_query_goes_first_not_the_oldest(fixed_profile):
    policy = make_policy("laxity")
    insts = bind(policy, fixed_profile, ["fast", "slow"])
    # The older batch of 100 has 290 ms to spare; the younger 1000 only ~200 ms and fits only on 'fast'.
    d = policy.decide(0.001, queries((100, 0.0), (1000, 0.001)), insts)
    assert placed(d) == [(0, 1), (1, 0)]
    # FIFO order would have given 'fast' to the batch of 100 (its earliest finish).
    fcfs_like = make_policy("clockwork")
    insts = bind(fcfs_like, fixed_profile, ["fast", "slow"])
    assert placed(fcfs_like.decide(0.001, queries((100, 0.0), (1000, 0.001)), insts))[0] == (0, 0)


def test_a_type_that_alone_serves_some_batches_is_kept_ready_for_them(reserve_profile):
    # Batch 500 finishes first on 'fast' (250 ms) but would leave it busy beyond the 20 ms a batch of 1000 can wait.
    policy = make_policy("laxity")
    insts = bind(policy, reserve_profile, ["fast", "slow"])
    assert placed(policy.decide(0.0, queries((500, 0.0)), insts)) == [(0, 1)]
    # With the reserve turned off it takes the earliest finish.
    policy = make_policy("laxity:guard=1000")
    insts = bind(policy, reserve_profile, ["fast", "slow"])
    assert placed(policy.decide(0.0, queries((500, 0.0)), insts)) == [(0, 0)]
    # With a second 'fast' instance free, one of them may take it.
    policy = make_policy("laxity")
    insts = bind(policy, reserve_profile, ["fast", "fast", "slow"])
    assert placed(policy.decide(0.0, queries((500, 0.0)), insts)) in ([(0, 0)], [(0, 1)])


def test_a_query_waits_for_a_busy_instance_that_finishes_it_first(fixed_profile):
    policy = make_policy("laxity")
    insts = bind(policy, fixed_profile, ["fast", "slow"])
    insts[0].assign(0.0, 0.050)  # 'fast' busy for 50 ms more: 50 + 100 < 400 on the idle 'slow'
    d = policy.decide(0.0, queries((1000, 0.0)), insts)
    assert d.assign == [] and d.drop == []


def test_hopeless_queries_are_dropped_and_mean_feasible_ones_served(reserve_profile):
    policy = make_policy("laxity")
    insts = bind(policy, reserve_profile, ["fast", "slow"])
    # Waited 100 ms: batch 1000 needs 280 ms on the fastest type, so it cannot make 300 ms.
    d = policy.decide(0.100, queries((1000, 0.0), (100, 0.0)), insts)
    assert [q.index for q in d.drop] == [0]
    assert placed(d) == [(1, 0)]


def test_only_the_mean_meets_the_deadline_then_it_gets_the_best_chance():
    frame = make_profile_frame({("a", "m"): {100: [200.0, 200.0, 200.0, 400.0]}, ("b", "m"): {100: [290.0]}})
    profile = Profile.from_frame(frame, source="tails", drop_max=False)
    policy = make_policy("laxity")
    insts = bind(policy, profile, ["a", "b"])
    # On 'a' the mean (250) fits 300 ms, its p99 (~394) does not; 'b' fits neither after 20 ms of waiting.
    d = policy.decide(0.020, queries((100, 0.0)), insts)
    assert placed(d) == [(0, 0)] and d.drop == []


def test_nothing_happens_while_every_instance_is_down(fixed_profile):
    policy = make_policy("laxity")
    insts = bind(policy, fixed_profile, ["fast", "slow"])
    for inst in insts:
        inst.alive = False
    d = policy.decide(10.0, queries((100, 0.0)), insts)
    assert d.assign == [] and d.drop == []


def test_bad_tunables_are_refused():
    with pytest.raises(InputError, match="rows"):
        make_policy("laxity:rows=0")
    with pytest.raises(InputError, match="guard"):
        make_policy("laxity:guard=-1")
    with pytest.raises(InputError, match="split"):
        make_policy("laxity:split=-0.1")
    with pytest.raises(InputError, match="resolve"):
        make_policy("laxity:resolve=0")


def test_simulated_run_accounts_for_every_query_and_uses_only_live_capacity(reserve_profile):
    trace = generate_trace(2000, 6.0, batch_mix="uniform:50:1000", model="m", rng=np.random.default_rng(3))
    out = simulate(trace, "laxity", reserve_profile, SimConfig(PoolConfig.parse("fast=1,slow=2"), 300.0, seed=1))
    assert len(out) == 2000
    served = out[out.status == "ok"]
    assert served.finish_s.notna().all() and (served.start_s >= served.arrival_s).all()
    # One query at a time per instance: on each instance, a start never precedes the previous finish.
    for _, rows in served.sort_values("start_s").groupby("instance_id"):
        assert (rows.start_s.to_numpy()[1:] >= rows.finish_s.to_numpy()[:-1] - 1e-9).all()
    # Batches above 500 meet 300 ms only on 'fast': laxity never sends them to 'slow' while 'fast' could make it.
    big = served[served.batch_size > 500]
    assert (big.instance_type == "fast").mean() > 0.9


@pytest.fixture
def split_profile() -> Profile:
    """'fast' is 4x faster than 'slow' on batches of 1000 but only 1.2x on batches of 100; both meet 300 ms."""
    frame = make_profile_frame(
        {
            ("fast", "m"): {100: [10.0], 1000: [50.0]},
            ("slow", "m"): {100: [12.0], 1000: [200.0]},
        }
    )
    return Profile.from_frame(frame, source="split", drop_max=False)


def feed(policy, insts, sizes, first_index):
    """Show the policy a queue of arrivals while every instance is busy (so it only counts them), then free all."""
    for inst in insts:
        inst.assign(0.0, 10.0)
    pending = deque(Query(first_index + i, str(first_index + i), "m", b, 0.0) for i, b in enumerate(sizes))
    assert policy.decide(0.0, pending, insts).assign == []
    for inst in insts:
        inst.finish(0.0)


def test_batch_sizes_follow_the_fluid_lp_split_and_the_split_follows_the_mix(split_profile):
    small = deque([Query(10_000, "s", "m", 100, 0.0)])
    # Mostly batches of 1000: the LP keeps 'fast' for them, where it saves the most, and prices 100 off 'fast'.
    policy = make_policy("laxity")
    insts = bind(policy, split_profile, ["fast", "slow"])
    feed(policy, insts, [1000] * 450 + [100] * 50, 0)
    assert placed(policy.decide(0.0, small, insts)) == [(10_000, 1)]
    # Without the LP routing the earliest finish wins: 'fast' (10 ms against 12).
    plain = make_policy("laxity:split=inf")
    insts = bind(plain, split_profile, ["fast", "slow"])
    feed(plain, insts, [1000] * 450 + [100] * 50, 0)
    assert placed(plain.decide(0.0, small, insts)) == [(10_000, 0)]
    # When the load turns to batches of 100 only, the LP splits them over both types and 'fast' is open again.
    insts = bind(policy := make_policy("laxity"), split_profile, ["fast", "slow"])
    feed(policy, insts, [1000] * 450 + [100] * 50, 0)
    feed(policy, insts, [100] * 3000, 500)
    assert placed(policy.decide(0.0, deque([Query(20_000, "s", "m", 100, 0.0)]), insts)) == [(20_000, 0)]
