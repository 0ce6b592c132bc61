"""Replay a trace against a plan: a pool whose instances come and go, on the simulator's DispatchCore.

Each instance a plan needs is a *lease*: requested ``startup_s`` before the window it first serves in (billed from
the request), serving from that window's start, and retired at the start of the first window that runs fewer of its
type (or at the plan's end). A retired instance takes no new query (``DispatchCore.retire``), finishes what it holds,
running and queued, and is released (billing stops) when its last query leaves. Leases of a type that shrinks retire
newest first, so the instances that stay are the ones already running. At the plan's end no pool takes over, so the
last window's instances serve everything still waiting, and each is released when its own last query is done.

The simulated pool holds, per type, as many instance slots as the plan's busiest window runs; a lease takes a free
slot of its type when it starts serving, and a slot is free again once its lease is released. Only when a drain
outlasts a whole window does a lease find no free slot, and the pool then grows by one (the policy is bound again).
A plan of one window is the static pool: its replay gives the records ``simulate`` gives for that pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.plan import DEFAULT_STARTUP_S, Plan
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import latency_ms
from harness.dispatch.dispatch_core import DispatchCore
from harness.dispatch.instance_state import InstanceState
from harness.dispatch.policies import Policy
from harness.measure.analyzer import percentile_ms
from harness.sim.events import URGENT, EventLoop
from harness.sim.simulator import SimConfig, Simulation
from traces.schema import Trace


@dataclass(frozen=True)
class Lease:
    """One instance's life under a plan: requested, serving from ``start_s``, retired at ``retire_s``."""

    lease_id: str
    instance_type: str
    requested_s: float
    start_s: float
    retire_s: float


@dataclass(frozen=True)
class PlanReplayConfig:
    """A plan's replay: the plan, QoS target, start-up delay, per-instance concurrency, seed."""

    plan: Plan
    qos_ms: float
    startup_s: float = DEFAULT_STARTUP_S
    concurrency: int = 1
    seed: int = 0


@dataclass(frozen=True, eq=False)
class PlanRun:
    """What a replay gives: per-query records, per-lease billing, per-window results and the totals."""

    records: pd.DataFrame
    leases: pd.DataFrame
    windows: pd.DataFrame
    usd: float
    p99_ms: float
    qos_ms: float

    @property
    def qos_met_every_window(self) -> bool:
        """True when every window's p99 is within QoS."""
        return bool(self.windows["qos_met"].all())

    @property
    def qos_met_overall(self) -> bool:
        """True when the whole trace's p99 is within QoS."""
        return self.p99_ms <= self.qos_ms


def plan_leases(plan: Plan, startup_s: float = DEFAULT_STARTUP_S) -> list[Lease]:
    """The leases a plan implies, in the order they are requested; ids ``TYPE-k`` count leases per type."""
    if not (math.isfinite(startup_s) and startup_s >= 0):
        raise InputError(f"{startup_s!r}: must be a number of seconds >= 0", field="startup_s")
    open_: dict[str, list[tuple[str, float, float]]] = {}  # type -> (id, requested, start) of serving leases
    made: dict[str, int] = {}
    out: list[Lease] = []
    for w in plan.windows:
        want = w.pool.as_dict()
        for t in list(open_):
            keep = want.get(t, 0)
            while len(open_[t]) > keep:
                lid, req, start = open_[t].pop()  # newest first
                out.append(Lease(lid, t, req, start, w.start_s))
        for t, n in want.items():
            serving = open_.setdefault(t, [])
            while len(serving) < n:
                k = made.get(t, 0)
                made[t] = k + 1
                serving.append((f"{t}-{k}", w.start_s - startup_s, w.start_s))
    for t, serving in open_.items():
        for lid, req, start in reversed(serving):
            out.append(Lease(lid, t, req, start, plan.end_s))
    return sorted(out, key=lambda le: (le.requested_s, le.instance_type, int(le.lease_id.rsplit("-", 1)[1])))


def check_plan_trace(plan: Plan, trace: Trace) -> None:
    """Raise InputError unless every arrival of ``trace`` falls inside the plan."""
    if not len(trace):
        return
    first, last = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
    if first < plan.start_s:
        raise InputError(
            f"{plan.source}: the plan starts at {plan.start_s:g} s, after the trace's first arrival ({first:g} s) "
            f"in {trace.source}"
        )
    if last > plan.end_s:
        raise InputError(
            f"{plan.source}: the plan ends at {plan.end_s:g} s, before the trace's last arrival ({last:g} s) "
            f"in {trace.source}"
        )


class _PoolSchedule:
    """The replay's part inside the simulation: leases start, retire and are released on the event loop."""

    def __init__(self, leases: list[Lease], concurrency: int, end_s: float):
        self.leases = leases
        self.end_s = end_s
        self.concurrency = concurrency
        self.released_s = [math.nan] * len(leases)
        self.slot_of = [-1] * len(leases)
        self.lease_on: dict[int, int] = {}  # slot index -> lease index it serves now (until released)
        self.history: dict[int, list[tuple[float, int]]] = {}  # slot index -> (lease start, lease index), in order
        self.free: dict[str, list[int]] = {}

    def install(self, loop: EventLoop, core: DispatchCore) -> None:
        """Take every slot out of service, then schedule each lease's start and retirement."""
        self.loop, self.core = loop, core
        core.on_drained = self._released
        for inst in reversed(core.instances):  # reversed: pop() hands out slots in configuration order
            core.mark_dead(loop.now, inst)
            self.free.setdefault(inst.instance_type, []).append(inst.index)
        # URGENT: a window's pool changes before a query arriving at that very instant is dispatched. Retirements are
        # scheduled first so that, at one instant, instances leave before others of the same type look for a slot.
        for i, lease in enumerate(self.leases):
            # At the plan's end nothing takes over: the last pool serves until every query is done (see replay_plan).
            if lease.retire_s < self.end_s:
                loop.schedule(lease.retire_s, URGENT, self._retire, i)
        for i, lease in enumerate(self.leases):
            loop.schedule(lease.start_s, URGENT, self._start, i)

    def _start(self, i: int) -> None:
        core, lease = self.core, self.leases[i]
        free = self.free.setdefault(lease.instance_type, [])
        if free:
            inst = core.instances[free.pop()]
        else:  # every slot of the type still drains an earlier lease: one more instance
            template = next(x for x in core.instances if x.instance_type == lease.instance_type)
            index = len(core.instances)
            inst = InstanceState(index, f"slot-{index}", lease.instance_type, template.type_index, self.concurrency)
            inst.alive = False
            core.add_instance(self.loop.now, inst)
        self.slot_of[i] = inst.index
        self.lease_on[inst.index] = i
        self.history.setdefault(inst.index, []).append((self.loop.now, i))
        core.mark_alive(self.loop.now, inst)

    def _retire(self, i: int) -> None:
        inst = self.core.instances[self.slot_of[i]]
        if self.core.retire(self.loop.now, inst):
            self._released(self.loop.now, inst)

    def _released(self, now_s: float, inst: InstanceState) -> None:
        i = self.lease_on.pop(inst.index)
        self.released_s[i] = now_s
        self.free[inst.instance_type].append(inst.index)

    def lease_of(self, slot: np.ndarray, at_s: np.ndarray) -> np.ndarray:
        """The lease index each (slot, time) belongs to: the slot's latest lease started at or before the time."""
        out = np.full(len(slot), -1, dtype=np.int64)
        for s, hist in self.history.items():
            mask = slot == s
            if not mask.any():
                continue
            starts = np.array([h[0] for h in hist])
            ids = np.array([h[1] for h in hist])
            k = np.searchsorted(starts, at_s[mask], side="right") - 1
            out[mask] = np.where(k >= 0, ids[np.maximum(k, 0)], -1)
        return out


def window_table(plan: Plan, records: pd.DataFrame, qos_ms: float) -> pd.DataFrame:
    """Per window: the plan's row, then the queries that arrived in it, their p99 and whether it met QoS."""
    lat = latency_ms(records)
    where = plan.window_index(records["arrival_s"].to_numpy(float))
    rows = []
    for k, w in enumerate(plan.windows):
        mine = lat[where == k]
        p99 = percentile_ms(mine, 99.0)
        rows.append(
            {
                "window": k,
                "start_s": w.start_s,
                "end_s": w.end_s,
                "config": str(w.pool),
                "usd_per_h": w.usd_per_h,
                "queries": int(len(mine)),
                "p99_ms": p99,
                "violations": int(np.count_nonzero(mine > qos_ms)),
                # A window no query arrived in has nothing to violate.
                "qos_met": bool(len(mine) == 0 or p99 <= qos_ms),
            }
        )
    return pd.DataFrame(rows)


def replay_plan(
    trace: Trace, policy: Policy | str, profile: Profile, prices: dict[str, float], config: PlanReplayConfig
) -> PlanRun:
    """Replay ``trace`` against ``config.plan`` under ``policy``, each lease billed at ``prices`` until released."""
    plan = config.plan
    check_plan_trace(plan, trace)
    missing = [t for t in plan.instance_types if t not in prices]
    if missing:
        raise InputError(f"{plan.source}: no price for instance type(s) {', '.join(missing)}")
    leases = plan_leases(plan, config.startup_s)
    slots = PoolConfig.from_mapping(plan.max_counts())
    sim = Simulation(trace, policy, profile, SimConfig(slots, config.qos_ms, config.concurrency, config.seed))
    schedule = _PoolSchedule(leases, config.concurrency, plan.end_s)
    records = sim.run(pool_events=schedule.install)

    served = records["dispatch_s"].notna() & records["instance_type"].notna()
    slot_ids = {inst.instance_id: inst.index for inst in sim.instances}
    slot = records["instance_id"].map(slot_ids).fillna(-1).to_numpy(np.int64)
    lease_idx = schedule.lease_of(slot, records["dispatch_s"].fillna(-math.inf).to_numpy(float))
    lease_ids = np.array([le.lease_id for le in leases] + [None], dtype=object)
    records = records.assign(instance_id=np.where(served.to_numpy(), lease_ids[lease_idx], None))

    last_finish = records.groupby("instance_id")["finish_s"].max().to_dict()
    rows = []
    for i, le in enumerate(leases):
        released = schedule.released_s[i]
        if math.isnan(released):  # serving at the plan's end: released once its last query is done
            released = max(le.retire_s, last_finish.get(le.lease_id, -math.inf))
        hours = (released - le.requested_s) / 3600.0
        rows.append(
            {
                "lease_id": le.lease_id,
                "instance_type": le.instance_type,
                "requested_s": le.requested_s,
                "start_s": le.start_s,
                "retire_s": le.retire_s,
                "released_s": released,
                "usd_per_h": float(prices[le.instance_type]),
                "usd": float(prices[le.instance_type]) * hours,
            }
        )
    lease_frame = pd.DataFrame(rows)
    return PlanRun(
        records,
        lease_frame,
        window_table(plan, records, config.qos_ms),
        float(lease_frame["usd"].sum()),
        percentile_ms(latency_ms(records), 99.0),
        float(config.qos_ms),
    )
