"""Discrete-event simulator: the same Policy and LatencyModel objects as the live dispatcher, on a virtual clock.

Service times are sampled from the profile. Every query carries one uniform draw that picks its quantile within
whichever bucket serves it, so two policies run on the same trace and seed see the same per-query luck
(common random numbers): differences come from the policies, not from sampling noise. A subclass may override
``Simulation.service_ms`` to add what a back-to-back profile does not see (a server's cost of waking from idle, say).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import DROPPED, OK
from harness.dispatch.dispatch_core import DispatchCore
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import Policy, Query, make_policy
from harness.sim.events import NORMAL, URGENT, EventLoop
from traces.schema import Trace


@dataclass(frozen=True)
class SimConfig:
    """One simulated run: pool, QoS target, per-instance concurrency, seed, online latency updates."""

    pool: PoolConfig
    qos_ms: float
    concurrency: int = 1
    seed: int = 0
    latency_alpha: float = 0.0


def check_trace(trace: Trace, profile: Profile, pool: PoolConfig) -> None:
    """Raise InputError unless every query's model and batch size is profiled on every pool type."""
    types = [t for t, _ in pool.counts]
    for model in trace.models:
        profile.check(types, [model])
        limit = profile.max_batch(types, model)
        mask = (trace.model == model) & (trace.batch_size > limit)
        if mask.any():
            row = int(np.nonzero(mask)[0][0])
            raise InputError(
                f"{trace.source}: column 'batch_size', row {row + 1}: {int(trace.batch_size[row])} is "
                f"above the largest profiled batch ({limit}) for {model} on {', '.join(types)}"
            )


class Simulation:
    """One run of one policy over one trace; ``run()`` returns the per-query records."""

    def __init__(
        self,
        trace: Trace,
        policy: Policy | str,
        profile: Profile,
        config: SimConfig,
        progress: Callable[[int, int], None] | None = None,
    ):
        check_trace(trace, profile, config.pool)
        if config.concurrency < 1:
            raise InputError(f"{config.concurrency}: must be >= 1", field="concurrency")
        self.trace = trace
        self.config = config
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.policy_name = policy if isinstance(policy, str) else self.policy.name
        types = config.pool.instance_types
        models = trace.models
        self.latency = LatencyModel(profile, types, models, alpha=config.latency_alpha)
        self.instances = build_instances(types, self.latency.type_index, config.concurrency)
        rng = np.random.default_rng(config.seed)
        # Separate streams: service-time luck per query, and the policy's own randomness.
        self._u = rng.random(len(trace)).tolist()
        self._policy_rng = np.random.default_rng(rng.integers(2**63))
        # Per type: batch size -> the sorted samples of the bucket that serves it.
        self._samples = {}
        for itype, ti in self.latency.type_index.items():
            for model in models:
                tab = profile.table(itype, model)
                idx = np.searchsorted(tab.buckets, np.arange(0, tab.max_batch + 1), side="left")
                self._samples[(ti, model)] = [tab.samples_ms[min(i, len(tab.buckets) - 1)] for i in idx]
        self._progress = progress

    def service_ms(self, q: Query, inst, sampled_ms: float, idle_ms: float) -> float:
        """A starting query's service time from its profile draw; ``idle_ms``: how long ``inst`` had run nothing
        (0 when it went straight on from another query, inf before its first)."""
        return sampled_ms

    def run(self, pool_events: Callable[[EventLoop, DispatchCore], None] | None = None) -> pd.DataFrame:
        """Simulate every query to completion (or drop); ``pool_events(loop, core)`` may first schedule pool changes."""
        # pool_events is how a plan's replay (harness/sim/plan_replay.py) makes instances join and leave.
        trace, n = self.trace, len(self.trace)
        arrivals = trace.arrival_s.tolist()
        batches = trace.batch_size.tolist()
        models = trace.model.tolist()
        rids = trace.extra["request_id"].tolist() if "request_id" in trace.extra else None
        dispatch = [np.nan] * n
        start = [np.nan] * n
        finish = [np.nan] * n
        where = [-1] * n
        status = [OK] * n
        loop = EventLoop()
        samples = self._samples
        u = self._u
        progress = self._progress
        step = max(1, n // 100)
        # The hook is called only where a subclass overrides it: the default path stays one draw per query.
        service = self.service_ms if type(self).service_ms is not Simulation.service_ms else None
        idle_since: dict[int, float] = {}  # when each instance last ran out of work (a plan's replay adds instances)

        def on_assign(q: Query, inst) -> None:
            dispatch[q.index] = loop.now
            where[q.index] = inst.index

        def on_start(q: Query, inst) -> None:
            i = q.index
            start[i] = loop.now
            s = samples[(inst.type_index, q.model)][q.batch_size]
            drawn_ms = s[int(u[i] * len(s))]
            if service is not None:
                idle_ms = (loop.now - idle_since.get(inst.index, -math.inf)) * 1000.0 if inst.running == 1 else 0.0
                drawn_ms = service(q, inst, drawn_ms, idle_ms)
            loop.schedule(loop.now + drawn_ms / 1000.0, URGENT, complete, (q, inst))

        def on_drop(q: Query) -> None:
            status[q.index] = DROPPED
            dispatch[q.index] = loop.now

        core = DispatchCore(
            self.policy,
            self.latency,
            self.instances,
            self.config.qos_ms,
            self._policy_rng,
            on_assign=on_assign,
            on_start=on_start,
            on_drop=on_drop,
        )

        def arrive(i: int) -> None:
            if i + 1 < n:
                loop.schedule(arrivals[i + 1], NORMAL, arrive, i + 1)
            if progress and i % step == 0:
                progress(i, n)
            core.arrive(loop.now, Query(i, rids[i] if rids else str(i), models[i], batches[i], arrivals[i]))

        def complete(item) -> None:
            q, inst = item
            now = loop.now
            finish[q.index] = now
            # Its last query ends: noted before core.complete, which may start the next one at once (only for a
            # subclass's hook; the default loop does no more than before).
            if service is not None and inst.running == 1:
                idle_since[inst.index] = now
            core.complete(now, q, inst, (now - start[q.index]) * 1000.0)

        if n:
            loop.schedule(arrivals[0], NORMAL, arrive, 0)
        if pool_events is not None:
            pool_events(loop, core)
        loop.run()
        if progress:
            progress(n, n)
        instances = self.instances
        ids = np.array([inst.instance_id for inst in instances] + [None], dtype=object)
        types = np.array([inst.instance_type for inst in instances] + [None], dtype=object)
        where_arr = np.asarray(where)
        return pd.DataFrame(
            {
                "request_id": np.asarray(rids, dtype=object) if rids else np.arange(n).astype(str).astype(object),
                "model": trace.model,
                "batch_size": trace.batch_size,
                "arrival_s": trace.arrival_s,
                "dispatch_s": np.asarray(dispatch, dtype=float),
                "start_s": np.asarray(start, dtype=float),
                "finish_s": np.asarray(finish, dtype=float),
                "instance_id": ids[where_arr],
                "instance_type": types[where_arr],
                "policy": np.full(n, self.policy_name, dtype=object),
                "status": np.asarray(status, dtype=object),
            }
        )


def simulate(
    trace: Trace,
    policy: Policy | str,
    profile: Profile,
    config: SimConfig,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run ``policy`` over ``trace`` on ``config.pool`` and return the per-query records."""
    return Simulation(trace, policy, profile, config, progress).run()
