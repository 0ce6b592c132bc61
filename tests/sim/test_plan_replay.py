"""Replaying a plan: instances join at their window's start, leave by draining, are billed from request to release."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import InputError
from harness.core.plan import Plan, PlanWindow
from harness.core.pool_config import PoolConfig
from harness.core.records import OK
from harness.dispatch.policies import POLICIES
from harness.sim.plan_replay import PlanReplayConfig, plan_leases, replay_plan
from harness.sim.simulator import SimConfig, simulate
from traces.schema import Trace

PRICES = {"fast": 3.6, "slow": 0.36}  # $/h: 1 and 0.1 cents a second


def _plan(*rows: tuple[float, float, str]) -> Plan:
    return Plan(tuple(PlanWindow(a, b, PoolConfig.parse(c), 0.0) for a, b, c in rows), "test-plan")


def _trace(times, batch=100) -> Trace:
    t = np.asarray(times, dtype=float)
    return Trace(t, np.full(len(t), batch, dtype=np.int64), np.full(len(t), "m", dtype=object), source="test-trace")


def _burst_then_steady() -> Trace:
    """A burst at the end of window 0 (200 queries in 0.5 s: 2 s of work for one 'fast'), then a steady trickle."""
    return _trace(np.concatenate([np.arange(0.0, 9.0, 0.5), 9.0 + np.arange(200) * 0.0025, np.arange(10.2, 20.0, 0.5)]))


def _lease_table(run):
    return run.leases.set_index("lease_id")


def test_leases_follow_the_counts_newest_leave_first():
    plan = _plan((0, 10, "fast=2"), (10, 20, "fast=1,slow=1"), (20, 30, "fast=2"))
    got = [(le.lease_id, le.requested_s, le.start_s, le.retire_s) for le in plan_leases(plan, startup_s=5.0)]
    assert got == [
        ("fast-0", -5.0, 0.0, 30.0),
        ("fast-1", -5.0, 0.0, 10.0),
        ("slow-0", 5.0, 10.0, 20.0),
        ("fast-2", 15.0, 20.0, 30.0),
    ]
    with pytest.raises(InputError, match="startup"):
        plan_leases(plan, startup_s=-1.0)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_two_windows_instances_join_and_leave(fixed_profile, policy):
    trace = _burst_then_steady()
    plan = _plan((0, 10, "fast=1"), (10, 20, "slow=2"))
    run = replay_plan(trace, policy, fixed_profile, PRICES, PlanReplayConfig(plan, 10_000.0, startup_s=4.0))
    rec, leases = run.records, _lease_table(run)

    # No query lost: every one served, once.
    assert len(rec) == len(trace) and (rec["status"] == OK).all() and rec["finish_s"].notna().all()
    # Only on started instances, and only given work while in service: assigned within [start, retire].
    lease = leases.loc[rec["instance_id"]]
    assert (rec["dispatch_s"].to_numpy() >= lease["start_s"].to_numpy()).all()
    assert (rec["dispatch_s"].to_numpy() <= lease["retire_s"].to_numpy()).all()
    assert (rec["start_s"].to_numpy() >= lease["start_s"].to_numpy()).all()
    assert not ((rec["instance_type"] == "slow") & (rec["start_s"] < 10.0)).any()
    # Released when its last query left (never before its retirement): that is the drain.
    last = rec.groupby("instance_id")["finish_s"].max()
    for lid, row in leases.iterrows():
        assert row["released_s"] == pytest.approx(max(row["retire_s"], last.get(lid, -np.inf)))
    # Billing: each lease from its request (start - start-up) to its release.
    assert (leases["requested_s"] == leases["start_s"] - 4.0).all()
    want = sum(PRICES[r.instance_type] * (r.released_s - r.requested_s) / 3600.0 for r in leases.itertuples())
    assert run.usd == pytest.approx(want)
    assert run.windows["queries"].tolist() == [
        int(np.count_nonzero(trace.arrival_s < 10.0)),
        int(np.count_nonzero(trace.arrival_s >= 10.0)),
    ]


def test_push_policy_drains_the_local_queue_of_a_leaving_instance(fixed_profile):
    """Under a push policy the burst waits in fast-0's own queue: fast-0 finishes all of it after its retirement."""
    trace = _burst_then_steady()
    plan = _plan((0, 10, "fast=1"), (10, 20, "slow=2"))
    run = replay_plan(trace, "least_outstanding", fixed_profile, PRICES, PlanReplayConfig(plan, 10_000.0))
    rec = run.records
    burst = rec[(rec["arrival_s"] >= 9.0) & (rec["arrival_s"] < 10.0)]
    assert (burst["instance_id"] == "fast-0").all()
    assert burst["finish_s"].max() == pytest.approx(9.0 + 200 * 0.010)  # 2 s of back-to-back work from 9.0
    assert _lease_table(run).loc["fast-0", "released_s"] == pytest.approx(11.0)


def test_pull_policy_hands_the_central_queue_to_the_new_instances(fixed_profile):
    """Under a pull policy the burst waits centrally: at 10 s the leaving instance takes no more, the new ones do."""
    trace = _burst_then_steady()
    plan = _plan((0, 10, "fast=1"), (10, 20, "slow=2"))
    run = replay_plan(trace, "fcfs", fixed_profile, PRICES, PlanReplayConfig(plan, 10_000.0))
    rec = run.records
    on_fast = rec[rec["instance_id"] == "fast-0"]
    assert on_fast["dispatch_s"].max() < 10.0
    assert (rec[rec["dispatch_s"] >= 10.0]["instance_type"] == "slow").all()
    assert _lease_table(run).loc["fast-0", "released_s"] == pytest.approx(10.0 + 0.01, abs=0.01)


def test_a_drain_longer_than_a_window_grows_the_pool(fixed_profile):
    """fast-0 still drains when the plan wants a fast instance again: a second one starts beside it."""
    trace = _trace(np.concatenate([np.arange(400) * 0.001, np.arange(2.0, 9.0, 0.5)]))
    plan = _plan((0, 1, "fast=1"), (1, 2, "slow=1"), (2, 10, "fast=1"))
    run = replay_plan(trace, "least_outstanding", fixed_profile, PRICES, PlanReplayConfig(plan, 10_000.0))
    rec, leases = run.records, _lease_table(run)
    assert len(rec) == len(trace) and (rec["status"] == OK).all()
    assert leases.loc["fast-0", "released_s"] == pytest.approx(4.0)  # 400 x 10 ms of work from 0
    late = rec[rec["arrival_s"] >= 2.0]
    assert (late["instance_id"] != "fast-0").all() and (late["instance_id"] == "fast-1").any()


def test_one_window_plan_replays_exactly_as_the_static_pool(shipped_profile, paper_pool):
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(1 / 80.0, 3000))
    trace = Trace(times - times[0], rng.integers(1, 100, 3000) * 10, np.full(3000, "rm2", dtype=object))
    plan = _plan((0.0, float(trace.arrival_s[-1]), str(paper_pool)))
    prices = {"g4dn.xlarge": 0.526, "r5n.large": 0.149}
    for policy in ("kairos", "least_outstanding"):
        static = simulate(trace, policy, shipped_profile, SimConfig(paper_pool, 350.0, seed=5))
        run = replay_plan(trace, policy, shipped_profile, prices, PlanReplayConfig(plan, 350.0, seed=5))
        assert np.array_equal(static["finish_s"].to_numpy(), run.records["finish_s"].to_numpy())
        assert (static["instance_id"] == run.records["instance_id"]).all()


def test_a_plan_that_does_not_cover_the_trace_is_refused(fixed_profile):
    trace = _trace([0.0, 5.0, 12.0])
    with pytest.raises(InputError, match=r"test-plan: the plan ends at 10 s, before the trace's last arrival \(12 s\)"):
        replay_plan(trace, "fcfs", fixed_profile, PRICES, PlanReplayConfig(_plan((0, 10, "fast=1")), 100.0))
    with pytest.raises(InputError, match="no price for instance type"):
        replay_plan(trace, "fcfs", fixed_profile, {"fast": 1.0}, PlanReplayConfig(_plan((0, 20, "slow=1")), 100.0))
