"""kairos_type: Kairos' matching solved over per-type slots, checked against exact kairos on the same states."""

from collections import Counter, deque

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.dispatch.dispatch_core import DispatchCore
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import PolicyContext, Query, make_policy
from harness.dispatch.type_index import TypeIndex
from harness.sim.simulator import SimConfig, simulate
from tests.conftest import make_profile_frame
from traces.generate import generate_trace

TYPES = ("g4dn.xlarge", "r5n.large")
QOS_MS = 350.0


@pytest.fixture(scope="module")
def rm2(shipped_profile):
    """The latency model of rm2 on the paper's two types (built once: it takes a percentile per bucket)."""
    return LatencyModel(shipped_profile, list(TYPES), ["rm2"])


def pool(lat, counts, spec="kairos_type"):
    """Instances of (g4dn.xlarge, r5n.large) x ``counts``, with an exact kairos and ``spec`` bound to them."""
    types = [t for t, n in zip(TYPES, counts) for _ in range(n)]
    insts = build_instances(types, lat.type_index)
    exact, fast = make_policy("kairos"), make_policy(spec)
    for policy in (exact, fast):
        policy.bind(PolicyContext(TYPES, lat, QOS_MS, np.random.default_rng(0)), insts)
    return insts, exact, fast


def random_queue(rng, n, now_s):
    """``n`` queries of distinct batch buckets (so no two rows cost the same), arrived in the last 120 ms."""
    batches = rng.choice(np.arange(10, 1001, 10), size=n, replace=False)
    arrivals = np.sort(now_s - rng.uniform(0.0, 0.12, size=n))
    return deque(Query(i, str(i), "rm2", int(b), float(t)) for i, (b, t) in enumerate(zip(batches, arrivals)))


def type_level(decision, insts, skip=()):
    return Counter((q.index, insts[j].instance_type) for q, j in decision.assign if q.index not in skip)


def test_same_state_per_type_gives_exact_kairos_type_level_decisions(rm2):
    rng = np.random.default_rng(7)
    now = 1.0
    for _ in range(150):
        counts = tuple(int(c) for c in rng.integers(1, 7, size=2))
        insts, exact, fast = pool(rm2, counts)
        for t in TYPES:  # one state per type: idle, or busy until a common predicted time
            if rng.random() < 0.5:
                left_s = float(rng.uniform(0.001, 0.3))
                for inst in insts:
                    if inst.instance_type == t:
                        inst.assign(now - 0.05, 0.05 + left_s)
        pending = random_queue(rng, int(rng.integers(1, 2 * sum(counts) + 3)), now)
        want = exact.decide(now, pending, insts)
        got = fast.decide(now, pending, insts)
        # A query that costs the same on every instance (past QoS everywhere: 1000) is a tie wherever it goes.
        cost = exact.cost_matrix(now, list(pending), insts)
        tied = {k for k in range(len(pending)) if np.ptp(cost[k]) == 0.0}
        assert type_level(got, insts, tied) == type_level(want, insts, tied)
        assert len(pending) > 0  # decide never consumes the queue; the core does


def test_optimal_cost_equals_exact_kairos_in_any_state(rm2):
    # Instances of a type in different states, some dead: the matching over type slots has the exact optimum's cost.
    rng = np.random.default_rng(11)
    now = 2.0
    answered = Counter()
    for _ in range(150):
        counts = tuple(int(c) for c in rng.integers(1, 9, size=2))
        insts, exact, fast = pool(rm2, counts)
        seen = spy_chain_match(fast)
        for inst in insts:
            u = rng.random()
            if u < 0.5:
                inst.assign(now - 0.01, float(rng.uniform(0.0, 0.4)))  # some already overdue
            elif u < 0.6:
                inst.alive = False  # written directly, as a driver does
        alive = [inst for inst in insts if inst.alive]
        if not alive:
            continue
        pending = random_queue(rng, int(rng.integers(1, min(64, 2 * len(insts)) + 1)), now)
        rows = list(pending)[: 2 * len(insts)]
        cost = exact.cost_matrix(now, rows, alive)
        r, c = linear_sum_assignment(cost)
        col = {inst.index: k for k, inst in enumerate(alive)}
        pairs = fast.match(now, pending, insts)
        if not any(inst.idle for inst in insts):
            assert pairs == []  # nothing could be dispatched: no matching is solved
            continue
        assert len(pairs) == len(r)
        assert len({inst.index for _, inst, _ in pairs}) == len(pairs)  # one query per instance
        got = sum(cost[q.index, col[inst.index]] for q, inst, _ in pairs)
        assert got == pytest.approx(cost[r, c].sum(), rel=1e-12, abs=1e-9)
        assert all(now_ == inst.idle for _, inst, now_ in pairs)
        answered += seen
    # Both ways were taken: the split over slot chains where it proves its optimum, the solver where it cannot.
    assert answered["chain"] >= 10 and answered["solver"] >= 10


def spy_chain_match(policy) -> Counter:
    """Count how often ``policy``'s slot-chain matching answers and how often it leaves the state to the solver."""
    seen: Counter = Counter()
    inner = policy._chain_match

    def chain_match(*args, **kwargs):
        got = inner(*args, **kwargs)
        seen["chain" if got is not None else "solver"] += 1
        return got

    policy._chain_match = chain_match
    return seen


def deep_sample(lat, rng, now, gpus, busy_s, batch_range, waited_s):
    """A sampled deep queue (max_rows 16) on ``gpus`` (a range) g4dn.xlarge and 20-39 r5n.large instances, each busy
    with probability 0.9 for up to ``busy_s``, and 17 to N queries (slots then outnumber the sample's rows) of batch
    sizes in ``batch_range`` (steps of 10) that waited within ``waited_s``. Returns (instances, kairos_type, the same
    policy with every matching left to the solver, a count of chain and solver answers, the queue)."""
    counts = (int(rng.integers(*gpus)), int(rng.integers(20, 40)))
    insts, _, fast = pool(lat, counts, "kairos_type:max_rows=16")
    solver = make_policy("kairos_type:max_rows=16")
    solver.bind(fast.ctx, insts)
    solver._chain_match = lambda *args, **kwargs: None
    answered = spy_chain_match(fast)
    for inst in insts:
        if rng.random() < 0.9:
            inst.assign(now - 0.01, float(rng.uniform(0.0, busy_s)))
    batches = rng.choice(np.arange(batch_range[0], batch_range[1] + 1, 10), size=int(rng.integers(17, sum(counts) + 1)))
    arrivals = np.sort(now - rng.uniform(*waited_s, size=len(batches)))
    pending = deque(Query(i, str(i), "rm2", int(b), float(t)) for i, (b, t) in enumerate(zip(batches, arrivals)))
    return insts, fast, solver, answered, pending


def pair_costs(policy, now, pairs) -> list[float]:
    """Each pair's cost in kairos' matrix."""
    return [policy.cost_rows(now, [q], [inst])[0][0] for q, inst, _ in pairs]


def test_a_sampled_deep_queue_gets_a_feasible_matching_no_cheaper_than_the_optimum(rm2):
    # Past max_rows queries the split over slot chains may move rows between types to pass the QoS check; its
    # matching is then feasible (every pair within QoS) but not proven optimal: never below the solver's optimum.
    # Batch sizes here fit QoS on some type (the next test leaves rows out).
    rng = np.random.default_rng(5)
    now = 2.0
    seen = Counter()
    for _ in range(80):
        insts, fast, solver, answered, pending = deep_sample(rm2, rng, now, (2, 12), 0.15, (10, 400), (0.0, 0.1))
        pairs = fast.match(now, pending, insts)
        if not pairs:
            continue
        assert len({inst.index for _, inst, _ in pairs}) == len(pairs) <= 16  # fewer where slots are fewer
        assert all(now_ == inst.idle for _, inst, now_ in pairs)
        if answered["chain"]:
            seen["chain"] += 1
            costs = pair_costs(fast, now, pairs)
            assert max(costs) < fast.penalty_near  # every pair passes the QoS check
            assert sum(costs) >= sum(pair_costs(fast, now, solver.match(now, pending, insts))) - 1e-9
        else:
            seen["solver"] += 1
    assert seen["chain"] > 40


def test_a_deep_queue_whose_tight_rows_fit_no_other_slot_leaves_some_out_rather_than_call_the_solver(rm2):
    # Near the allowable rate the sample often holds more tight rows than a type has early slots, and none of them
    # fits the other type: one is left out whatever the matching. The split then leaves out the row with the
    # largest row term, which takes a slot no row uses; the matching still covers every sampled row, one per
    # instance, and costs no less than the solver's optimum on the same sample.
    rng = np.random.default_rng(11)
    now = 2.0
    seen = Counter()
    gaps = []
    for _ in range(60):
        # Large batches that waited long: on a CPU instance they miss QoS, on a GPU instance only the early ones fit.
        insts, fast, solver, answered, pending = deep_sample(rm2, rng, now, (4, 10), 0.2, (300, 1000), (0.05, 0.25))
        pairs = fast.match(now, pending, insts)
        if not answered["chain"] or not pairs:
            continue
        assert len(pairs) == 16  # every sampled row (slots outnumber them)
        assert len({inst.index for _, inst, _ in pairs}) == 16  # one query per instance
        assert all(now_ == inst.idle for _, inst, now_ in pairs)
        costs = pair_costs(fast, now, pairs)
        best = sum(pair_costs(fast, now, solver.match(now, pending, insts)))
        assert sum(costs) >= best - 1e-9
        seen["missed" if max(costs) >= fast.penalty_near else "within"] += 1
        gaps.append(sum(costs) / best - 1.0)
    assert seen["missed"] >= 10  # the path taken: answers in which some row misses QoS
    # Not proven optimal, but close on most samples (here, built to be hard: 26 of 57 optimal, median 0.25% above
    # the optimum, at worst 19%; on a simulated pool at its allowable rate 78% optimal, p99 0.26% above).
    assert np.mean(np.array(gaps) < 1e-9) >= 1 / 3
    assert np.median(gaps) < 0.01 and max(gaps) < 0.25


def test_the_chain_split_leaves_mixed_models_and_a_high_qos_to_the_solver():
    # Coefficients differ by model, and above penalty_near a pair within QoS can cost more than a near miss: no
    # relaxed bound holds, so the solver matches.
    service = {100: [10.0], 1000: [100.0]}, {100: [40.0], 1000: [400.0]}
    frame = make_profile_frame({(t, m): ms for t, ms in zip(("fast", "slow"), service) for m in ("m", "n")})
    lat = LatencyModel(Profile.from_frame(frame, source="two models", drop_max=False), ["fast", "slow"], ["m", "n"])
    for qos_ms, models in ((300.0, ("m", "n")), (600.0, ("m", "m"))):
        insts = build_instances(["fast", "slow", "slow"], lat.type_index)
        policy = make_policy("kairos_type")
        policy.bind(PolicyContext(("fast", "slow"), lat, qos_ms, np.random.default_rng(0)), insts)
        answered = spy_chain_match(policy)
        insts[1].assign(0.0, 0.010)
        pending = deque(Query(k, str(k), m, 100, 0.0) for k, m in enumerate(models))
        assert len(policy.match(0.0, pending, insts)) == 2
        assert answered == Counter(solver=1)


@pytest.mark.parametrize("spec", ["kairos_type", "kairos_type:max_rows=3"])  # a deep queue sampled, too
def test_never_assigns_to_a_busy_or_dead_instance(rm2, spec):
    rng = np.random.default_rng(3)
    lat = rm2
    for concurrency in (1, 2):
        for _ in range(100):
            types = [TYPES[int(k)] for k in rng.integers(0, 2, size=int(rng.integers(1, 12)))]
            insts = build_instances(types, lat.type_index, concurrency)
            policy = make_policy(spec)
            policy.bind(PolicyContext(TYPES, lat, QOS_MS, np.random.default_rng(0)), insts)
            for inst in insts:  # changes after bind: through the instance's methods, and written directly
                for _ in range(int(rng.integers(0, concurrency + 2))):
                    inst.assign(0.0, float(rng.uniform(0.0, 0.2)))
                if rng.random() < 0.2:
                    inst.alive = False
            idle_before = {inst.index for inst in insts if inst.idle}
            d = policy.decide(0.05, random_queue(rng, int(rng.integers(1, 30)), 0.05), insts)
            assigned = [j for _, j in d.assign]
            assert set(assigned) <= idle_before and len(assigned) == len(set(assigned))


def test_large_query_waits_for_a_busy_gpu_while_a_small_one_takes_the_cpu(fixed_profile):
    lat = LatencyModel(fixed_profile, ["fast", "slow"], ["m"])
    insts = build_instances(["fast", "slow"], lat.type_index)
    policy = make_policy("kairos_type")
    policy.bind(PolicyContext(("fast", "slow"), lat, 300.0, np.random.default_rng(0)), insts)
    insts[0].assign(0.0, 0.020)
    pending = deque([Query(0, "0", "m", 1000, 0.0), Query(1, "1", "m", 100, 0.0)])
    assert [(q.batch_size, j) for q, j in policy.decide(0.0, pending, insts).assign] == [(100, 1)]


def test_the_index_follows_the_pool_through_a_run_with_failures(fixed_profile):
    lat = LatencyModel(fixed_profile, ["fast", "slow"], ["m"])
    insts = build_instances(["fast", "slow", "slow", "fast"], lat.type_index)
    starts = []
    core = DispatchCore(
        make_policy("kairos_type"),
        lat,
        insts,
        300.0,
        np.random.default_rng(0),
        on_assign=lambda q, i: None,
        on_start=lambda q, i: starts.append(i.index),
        on_drop=lambda q: None,
    )
    core.mark_dead(0.0, insts[0])
    for k in range(3):
        core.arrive(0.0, Query(k, str(k), "m", 100, 0.0))
    assert 0 not in starts and len(starts) == 3
    core.mark_alive(0.001, insts[0])
    core.arrive(0.001, Query(3, "3", "m", 100, 0.001))
    assert starts[-1] == 0  # back in service: the only idle instance
    fresh = TypeIndex(insts, 2, attach=False)
    index = core.policy._index
    assert [{i for i in s if insts[i].idle} for s in index.idle] == fresh.idle
    assert [sorted(i.index for i in index.earliest_busy(t, 9)) for t in (0, 1)] == [
        sorted(i.index for i in fresh.earliest_busy(t, 9)) for t in (0, 1)
    ]


def test_follows_online_latency_updates(fixed_profile):
    lat = LatencyModel(fixed_profile, ["fast", "slow"], ["m"], alpha=1.0)
    insts = build_instances(["fast", "slow"], lat.type_index)
    policy = make_policy("kairos_type")
    policy.bind(PolicyContext(("fast", "slow"), lat, 300.0, np.random.default_rng(0)), insts)
    insts[1].assign(0.0, 0.005)  # slow busy for 5 ms: 0.25 x (5 + 40) = 11.25 against fast's 1 x 10
    assert [j for _, j in policy.decide(0.0, deque([Query(0, "0", "m", 100, 0.0)]), insts).assign] == [0]
    lat.observe(0, "m", 100, 390.0)  # fast turns out to take 390 ms at batch 100: past the QoS, it costs 1000
    assert policy.decide(0.0, deque([Query(1, "1", "m", 100, 0.0)]), insts).assign == []  # waits for slow


def test_a_queue_deeper_than_max_rows_is_sampled_across_its_window(fixed_profile):
    lat = LatencyModel(fixed_profile, ["fast", "slow"], ["m"])
    insts = build_instances(["fast"] * 8, lat.type_index)
    policy = make_policy("kairos_type:max_rows=2")
    assert policy.max_rows == 2
    policy.bind(PolicyContext(("fast", "slow"), lat, 300.0, np.random.default_rng(0)), insts)
    pending = deque(Query(k, str(k), "m", 100, 0.0) for k in range(4))
    # Every second query of the four: the oldest, and one from deeper in the queue.
    assert sorted(q.index for q, _ in policy.decide(0.0, pending, insts).assign) == [0, 2]
    with pytest.raises(InputError, match="max_rows"):
        make_policy("kairos_type:max_rows=0")


def test_simulator_serves_every_query_on_a_pool_of_hundreds(shipped_profile):
    pool_config = PoolConfig.parse("g4dn.xlarge=30,r5n.large=270")
    trace = generate_trace(4000, 2500.0, rng=np.random.default_rng(5))
    rec = simulate(trace, "kairos_type", shipped_profile, SimConfig(pool_config, QOS_MS, seed=2))
    assert len(rec) == len(trace) and (rec["status"] == "ok").all()
    assert rec["finish_s"].notna().all() and (rec["start_s"] >= rec["arrival_s"]).all()
    assert rec["instance_id"].nunique() > 100
    for _, runs in rec.sort_values("start_s").groupby("instance_id"):
        assert (runs["start_s"].to_numpy()[1:] >= runs["finish_s"].to_numpy()[:-1] - 1e-12).all()
