import numpy as np
import pandas as pd
import pytest

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import RECORD_COLUMNS, latency_ms
from harness.sim.events import EventLoop
from harness.sim.simulator import SimConfig, simulate
from tests.conftest import make_profile_frame
from traces.generate import generate_trace
from traces.schema import Trace


def trace_of(arrivals, batches, model="m"):
    return Trace(np.asarray(arrivals, float), np.asarray(batches, np.int64), np.full(len(arrivals), model, object))


def test_event_loop_orders_by_time_then_priority_then_insertion():
    loop, seen = EventLoop(), []
    loop.schedule(2.0, 1, seen.append, "late")
    loop.schedule(1.0, 1, seen.append, "arrival")
    loop.schedule(1.0, 0, seen.append, "completion")
    loop.schedule(1.0, 1, seen.append, "arrival2")
    loop.run(until=1.5)
    assert seen == ["completion", "arrival", "arrival2"] and loop.now == 1.0
    loop.run()
    assert seen[-1] == "late"


def test_deterministic_service_gives_exact_latencies(fixed_profile):
    # one fast instance, 10 ms per query, arrivals every 5 ms: queueing grows by 5 ms per query
    tr = trace_of([0.0, 0.005, 0.010], [100, 100, 100])
    rec = simulate(tr, "fcfs", fixed_profile, SimConfig(PoolConfig.parse("fast=1"), 1000.0))
    assert list(rec.columns) == list(RECORD_COLUMNS)
    assert latency_ms(rec) == pytest.approx([10.0, 15.0, 20.0])
    assert rec["start_s"].tolist() == pytest.approx([0.0, 0.010, 0.020])


def test_a_subclass_sees_each_starts_idle_time_and_sets_its_service(fixed_profile):
    from harness.sim.simulator import Simulation

    class Waking(Simulation):
        seen: list = []

        def service_ms(self, q, inst, sampled_ms, idle_ms):
            self.seen.append((q.index, sampled_ms, idle_ms))
            return sampled_ms + (3.0 if idle_ms > 2.0 else 0.0)  # a wake-up cost after idling over 2 ms

    # 10 ms each, 13 after an idle spell: the second queues behind the first (done at 13 ms) and ends at 23 ms, the
    # third arrives at 30 ms to a server idle for 7 ms
    tr = trace_of([0.0, 0.005, 0.030], [100, 100, 100])
    sim = Waking(tr, "fcfs", fixed_profile, SimConfig(PoolConfig.parse("fast=1"), 1000.0))
    rec = sim.run()
    (q0, s0, idle0), (q1, s1, idle1), (q2, s2, idle2) = sim.seen
    assert (q0, q1, q2) == (0, 1, 2) and s0 == s1 == s2 == pytest.approx(10.0)
    assert idle0 == float("inf") and idle1 == 0.0 and idle2 == pytest.approx(7.0)
    assert rec["start_s"].tolist() == pytest.approx([0.0, 0.013, 0.030])  # the first pays the wake-up too
    assert latency_ms(rec) == pytest.approx([13.0, 18.0, 13.0])


def test_records_are_consistent_and_one_query_at_a_time(shipped_profile, paper_pool, rng):
    tr = generate_trace(3000, 80.0, rng=rng)
    for policy in ("kairos", "fcfs", "least_outstanding", "clockwork", "deeprecsys", "power_of_two"):
        rec = simulate(tr, policy, shipped_profile, SimConfig(paper_pool, 350.0, seed=1))
        assert len(rec) == len(tr) and rec["request_id"].is_unique
        ok = rec[rec["status"] == "ok"]
        assert (ok["dispatch_s"] >= ok["arrival_s"]).all()
        assert (ok["start_s"] >= ok["dispatch_s"]).all()
        assert (ok["finish_s"] > ok["start_s"]).all()
        for _, runs in ok.sort_values("start_s").groupby("instance_id"):
            assert (runs["start_s"].to_numpy()[1:] >= runs["finish_s"].to_numpy()[:-1] - 1e-12).all(), policy


def test_same_seed_same_records_and_common_random_numbers(shipped_profile, paper_pool, rng):
    tr = generate_trace(2000, 50.0, rng=rng)
    a = simulate(tr, "fcfs", shipped_profile, SimConfig(paper_pool, 350.0, seed=3))
    b = simulate(tr, "fcfs", shipped_profile, SimConfig(paper_pool, 350.0, seed=3))
    pd.testing.assert_frame_equal(a, b)
    c = simulate(tr, "fcfs", shipped_profile, SimConfig(paper_pool, 350.0, seed=4))
    assert not np.allclose(a["finish_s"], c["finish_s"])


def test_mm1_mean_response_time_matches_theory():
    rng = np.random.default_rng(5)
    prof = Profile.from_frame(
        make_profile_frame({("x", "m"): {1: rng.exponential(10.0, 50000).tolist()}}), drop_max=False
    )
    tr = generate_trace(100000, 50.0, batch_mix="fixed:1", model="m", rng=rng)
    rec = simulate(tr, "fcfs", prof, SimConfig(PoolConfig.parse("x=1"), 100.0))
    # M/M/1: E[T] = 1 / (mu - lambda) = 1 / (100 - 50) s = 20 ms
    assert latency_ms(rec).mean() == pytest.approx(20.0, rel=0.05)


def test_concurrency_lets_an_instance_overlap_queries(fixed_profile):
    tr = trace_of([0.0, 0.0], [100, 100])
    rec = simulate(tr, "fcfs", fixed_profile, SimConfig(PoolConfig.parse("fast=1"), 1000.0, concurrency=2))
    assert rec["start_s"].tolist() == [0.0, 0.0]


def test_clockwork_drops_are_recorded_as_violations(fixed_profile):
    tr = trace_of([0.0] * 6, [1000] * 6)
    rec = simulate(tr, "clockwork", fixed_profile, SimConfig(PoolConfig.parse("fast=1"), 250.0))
    assert (rec["status"] == "dropped").sum() >= 3
    assert np.isinf(latency_ms(rec)[rec["status"].to_numpy() == "dropped"]).all()


def test_kairos_beats_fcfs_on_the_paper_pool(shipped_profile, paper_pool, rng):
    tr = generate_trace(20000, 80.0, rng=rng)
    cfg = SimConfig(paper_pool, 350.0)
    viol = {p: np.mean(latency_ms(simulate(tr, p, shipped_profile, cfg)) > 350) for p in ("kairos", "fcfs")}
    assert viol["kairos"] < 0.01 < viol["fcfs"]


def test_batch_above_profile_is_an_error_naming_the_row(fixed_profile):
    tr = trace_of([0.0, 1.0], [100, 2000])
    with pytest.raises(InputError, match=r"column 'batch_size', row 2: 2000 is above the largest profiled batch"):
        simulate(tr, "fcfs", fixed_profile, SimConfig(PoolConfig.parse("fast=1"), 100.0))
    with pytest.raises(InputError, match="unknown instance type 'gpu'"):
        simulate(trace_of([0.0], [1]), "fcfs", fixed_profile, SimConfig(PoolConfig.parse("gpu=1"), 100.0))
