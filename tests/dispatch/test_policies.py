from collections import deque

import numpy as np
import pytest

from harness.core.errors import InputError
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import POLICIES, PolicyContext, Query, make_policy
from tests.conftest import make_profile_frame


def bind(policy, profile, types, qos_ms=300.0):
    """Bind ``policy`` to instances of ``types`` (all idle) and return the instances."""
    lat = LatencyModel(profile, types, ["m"])
    insts = build_instances(types, lat.type_index)
    policy.bind(PolicyContext(tuple(lat.instance_types), lat, qos_ms, np.random.default_rng(0)), insts)
    return insts


def queue(*batches, t=0.0):
    return deque(Query(i, str(i), "m", b, t) for i, b in enumerate(batches))


def occupy(inst, now_s, busy_for_s):
    inst.assign(now_s, busy_for_s)


def test_registry_has_every_policy_the_issue_names():
    assert set(POLICIES) == {
        "kairos",
        "kairos_type",
        "laxity",
        "fcfs",
        "deeprecsys",
        "clockwork",
        "round_robin",
        "least_outstanding",
        "power_of_two",
        "least_expected_work",
    }
    for name, cls in POLICIES.items():
        assert cls.__doc__, name


def test_make_policy_parses_tunables_and_rejects_unknown():
    assert make_policy("clockwork:buffer_ms=5").buffer_ms == 5
    assert make_policy("kairos:safeguard=0.05").safeguard == 0.05
    with pytest.raises(InputError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(InputError, match="not a tunable of fcfs"):
        make_policy("fcfs:x=1")


def test_fcfs_gives_oldest_queries_to_idle_instances_in_config_order(fixed_profile):
    policy = make_policy("fcfs")
    insts = bind(policy, fixed_profile, ["slow", "fast", "fast"])
    occupy(insts[1], 0.0, 1.0)
    pending = queue(100, 200, 300)
    d = policy.decide(0.0, pending, insts)
    assert [(q.index, j) for q, j in d.assign] == [(0, 0), (1, 2)]


def test_kairos_cost_matrix_matches_the_artifact_formula(fixed_profile):
    policy = make_policy("kairos")
    insts = bind(policy, fixed_profile, ["fast", "slow"], qos_ms=300.0)
    occupy(insts[0], 0.0, 0.050)  # fast instance busy for 50 ms more
    pending = queue(100, 1000)
    cost = policy.cost_matrix(0.0, list(pending), insts)
    # c_fast = 1, c_slow = L_fast(1000)/L_slow(1000) = 100/400
    assert cost[0, 0] == pytest.approx(1.0 * (50 + 10))
    assert cost[0, 1] == pytest.approx(0.25 * (0 + 40))
    assert cost[1, 0] == pytest.approx(1.0 * (50 + 100))
    # 1000 on slow: residual 300 - 400 < 0 -> flat 1000
    assert cost[1, 1] == 1000.0


def test_kairos_safeguard_band_costs_500():
    from harness.core.profiles import Profile

    prof = Profile.from_frame(make_profile_frame({("a", "m"): {10: [295.0]}}), drop_max=False)
    policy = make_policy("kairos")
    insts = bind(policy, prof, ["a"], qos_ms=300.0)
    # residual = 300 - 295 = 5 ms, below the 2% safeguard (6 ms) but >= 0 -> 500
    assert policy.cost_matrix(0.0, list(queue(10)), insts)[0, 0] == 500.0


def test_kairos_checks_qos_with_the_tail_by_default():
    from harness.core.profiles import Profile

    # 'bursty' averages 20 ms but its p99 is 60 ms; QoS 30 ms. 'gpu' always takes 10 ms.
    prof = Profile.from_frame(
        make_profile_frame(
            {
                ("gpu", "m"): {10: [10.0] * 100},
                ("bursty", "m"): {10: [15.0] * 90 + [60.0] * 10},
            }
        ),
        drop_max=False,
    )
    costs = {}
    for feasibility in ("tail", "mean"):
        policy = make_policy(f"kairos:feasibility={feasibility}")
        insts = bind(policy, prof, ["gpu", "bursty"], qos_ms=30.0)
        costs[feasibility] = policy.cost_matrix(0.0, list(queue(10)), insts)[0]
    assert costs["tail"][1] == 1000.0  # 60 ms tail misses 30 ms: penalized
    assert costs["mean"][1] < 100.0  # 19.5 ms mean fits: the artifact's rule would use it
    assert make_policy("kairos").feasibility == "tail"
    with pytest.raises(InputError, match="feasibility"):
        make_policy("kairos:feasibility=median")


def test_kairos_accepts_a_profile_of_zero_service_times():
    from harness.core.profiles import Profile

    prof = Profile.from_frame(make_profile_frame({("a", "m"): {10: [0.0]}, ("b", "m"): {10: [0.0]}}), drop_max=False)
    policy = make_policy("kairos")
    insts = bind(policy, prof, ["a", "b"], qos_ms=5.0)
    assert np.isfinite(policy.cost_matrix(0.0, list(queue(10, 10)), insts)).all()
    assert len(policy.decide(0.0, queue(10, 10), insts).assign) == 2


def random_kairos_states(profile, types, models, seed, n):
    """(policy, instances, now, rng) for ``n`` random pool states per feasibility rule: instances free now, in the
    past, at the same moment or any time within the QoS."""
    lat = LatencyModel(profile, types, models)
    rng = np.random.default_rng(seed)
    for feasibility in ("tail", "mean"):
        policy = make_policy(f"kairos:feasibility={feasibility}")
        insts = build_instances(types, lat.type_index)
        policy.bind(PolicyContext(tuple(lat.instance_types), lat, 350.0, np.random.default_rng(0)), insts)
        for _ in range(n):
            now = 5.0
            for inst in insts:
                inst.expected_free_s = now + float(rng.choice([0.0, -0.01, rng.uniform(0, 0.4), 0.2]))
            yield policy, insts, now, rng


def random_query(i, model, now, rng):
    """A query of a profiled batch size that has waited up to 0.4 s."""
    return Query(i, str(i), model, int(rng.choice(np.arange(10, 1001, 10))), now - float(rng.uniform(0, 0.4)))


def test_kairos_lone_query_shortcut_picks_what_the_matching_picks(shipped_profile):
    # best_for_one (Python floats) must give the lone query the instance linear_sum_assignment gives it, ties and
    # penalty bands included, for a query that waited any time, on instances in any state.
    from scipy.optimize import linear_sum_assignment

    types = ["g4dn.xlarge"] * 3 + ["r5n.large"] * 5 + ["c5n.2xlarge"] * 2
    for policy, insts, now, rng in random_kairos_states(shipped_profile, types, ["rm2"], 3, 400):
        q = random_query(0, "rm2", now, rng)
        _, c = linear_sum_assignment(policy.cost_matrix(now, [q], insts))
        assert policy.best_for_one(now, q, insts) == c[0]


def test_kairos_small_matrix_on_python_floats_is_bit_for_bit_numpys(shipped_profile):
    # cost_rows replaces cost_matrix on small problems: the same doubles, so the same matching, ties included.
    types = ["g4dn.xlarge"] * 2 + ["r5n.large"] * 4 + ["c5n.2xlarge"] * 2
    states = random_kairos_states(shipped_profile, types, ["rm2", "wnd"], 5, 300)
    for k, (policy, insts, now, rng) in enumerate(states):
        models = ["rm2"] * 4 if k % 2 else list(rng.choice(["rm2", "wnd"], 4))
        rows = [random_query(i, m, now, rng) for i, m in enumerate(models[: 2 + k % 3])]
        want = policy.cost_matrix(now, rows, insts)
        got = np.array(policy.cost_rows(now, rows, insts))
        assert got.shape == want.shape and got.tobytes() == want.tobytes()


def test_kairos_keeps_large_query_for_busy_fast_instance(fixed_profile):
    policy = make_policy("kairos")
    insts = bind(policy, fixed_profile, ["fast", "slow"], qos_ms=300.0)
    occupy(insts[0], 0.0, 0.020)
    d = policy.decide(0.0, queue(1000, 100), insts)
    # the idle slow instance takes the small query; the large one waits for the busy fast instance
    assert [(q.batch_size, j) for q, j in d.assign] == [(100, 1)]


def test_kairos_only_dispatches_to_idle_instances(fixed_profile):
    policy = make_policy("kairos")
    insts = bind(policy, fixed_profile, ["fast", "fast"])
    occupy(insts[0], 0.0, 0.5)
    occupy(insts[1], 0.0, 0.5)
    assert policy.decide(0.0, queue(100, 100, 100), insts).assign == []


def test_clockwork_drops_queries_no_instance_can_meet(fixed_profile):
    policy = make_policy("clockwork")
    insts = bind(policy, fixed_profile, ["fast", "slow"], qos_ms=300.0)
    pending = deque([Query(0, "old", "m", 1000, -0.25), Query(1, "new", "m", 100, 0.0)])
    d = policy.decide(0.0, pending, insts)
    assert [q.request_id for q in d.drop] == ["old"]  # 250 ms waited + 100 ms on the fastest > 294 ms
    assert [(q.request_id, j) for q, j in d.assign] == [("new", 0)]  # fastest idle instance


def test_clockwork_ablations_serve_late_and_take_the_first_idle(fixed_profile):
    pending = [Query(0, "old", "m", 1000, -0.25), Query(1, "new", "m", 100, 0.0)]
    policy = make_policy("clockwork:drop=false")
    insts = bind(policy, fixed_profile, ["fast", "slow"], qos_ms=300.0)
    d = policy.decide(0.0, deque(pending), insts)
    assert d.drop == [] and [(q.request_id, j) for q, j in d.assign] == [("old", 0), ("new", 1)]
    policy = make_policy("clockwork:placement=first")
    insts = bind(policy, fixed_profile, ["slow", "fast"], qos_ms=300.0)
    d = policy.decide(0.0, deque(pending[1:]), insts)
    assert [(q.request_id, j) for q, j in d.assign] == [("new", 0)]  # the first idle, though 'fast' is idle too
    with pytest.raises(InputError, match="placement"):
        make_policy("clockwork:placement=best")


def test_deeprecsys_splits_by_threshold(fixed_profile):
    policy = make_policy("deeprecsys:threshold=150:tune=false")
    insts = bind(policy, fixed_profile, ["fast", "slow", "slow"])
    d = policy.decide(0.0, queue(100, 1000, 100, 200), insts)
    assert sorted((q.batch_size, insts[j].instance_type) for q, j in d.assign) == [
        (100, "slow"),
        (100, "slow"),
        (1000, "fast"),
    ]


def test_deeprecsys_default_threshold_from_latency_model(fixed_profile):
    policy = make_policy("deeprecsys")
    bind(policy, fixed_profile, ["fast", "slow"], qos_ms=200.0)
    assert policy.threshold == 200  # slow serves 200 in 80 ms <= QoS/2, 201+ needs 400 ms


def test_push_policies_assign_every_query_even_to_busy_instances(fixed_profile):
    for name in ("round_robin", "least_outstanding", "power_of_two", "least_expected_work"):
        policy = make_policy(name)
        insts = bind(policy, fixed_profile, ["fast", "slow"])
        occupy(insts[0], 0.0, 1.0)
        occupy(insts[1], 0.0, 1.0)
        d = policy.decide(0.0, queue(100, 100, 100), insts)
        assert len(d.assign) == 3, name


def test_least_expected_work_prefers_earliest_predicted_finish(fixed_profile):
    policy = make_policy("least_expected_work")
    insts = bind(policy, fixed_profile, ["fast", "slow"])
    occupy(insts[0], 0.0, 0.035)  # fast frees at 35 ms: 35 + 10 = 45 > slow's 40
    d = policy.decide(0.0, queue(100), insts)
    assert d.assign[0][1] == 1
    d = policy.decide(0.0, queue(1000), insts)
    assert d.assign[0][1] == 0  # 35 + 100 < 400


def test_least_outstanding_spreads_a_burst(fixed_profile):
    policy = make_policy("least_outstanding")
    insts = bind(policy, fixed_profile, ["fast", "slow", "slow"])
    d = policy.decide(0.0, queue(100, 100, 100), insts)
    assert sorted(j for _, j in d.assign) == [0, 1, 2]
    assert all(inst.outstanding == 0 for inst in insts)  # provisional counts undone


def test_latency_model_online_update_moves_exactly_the_observed_bucket():
    from harness.core.profiles import Profile

    prof = Profile.from_frame(
        make_profile_frame(
            {("a", "m"): {10: [1.0], 100: [10.0], 1000: [100.0]}, ("b", "m"): {10: [2.0], 100: [20.0], 1000: [200.0]}}
        ),
        drop_max=False,
    )
    lat = LatencyModel(prof, ["a", "b"], ["m"], alpha=0.5)
    tail_before = lat.tail_ms("m").copy()
    lat.observe(0, "m", 50, 20.0)  # bucket 100 of type a: 10 -> 15 ms
    table = lat.table_ms("m")
    assert (table[0, 11:101] == 15.0).all()
    assert (table[0, 1:11] == 1.0).all() and (table[0, 101:] == 100.0).all() and (table[1, 1:] != 15.0).all()
    assert np.allclose(lat.tail_ms("m")[0, 11:101], tail_before[0, 11:101] + 5.0)
    lat.observe(1, "m", 1000, 100.0)  # largest bucket of b: 200 -> 150
    assert table[1, 1000] == 150.0 and table[1, 101] == 150.0 and table[1, 100] == 20.0
    lat.observe(1, "m", 5000, 1.0)  # outside the table: ignored
    assert table[1, 1000] == 150.0
