"""The live dispatcher's state: the dispatch core, waiting requests, the HTTP session, records and counters.

Each infer request becomes a ``Query`` in a ``PrefetchCore`` (the simulator's ``DispatchCore`` plus the early slot);
callbacks from the core resolve the request's future with the chosen instance. Times are kept on a monotonic clock
and recorded as Unix seconds, so client and dispatcher rows line up.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import aiohttp
import numpy as np
from aiohttp import web
from yarl import URL

from harness.core.profiles import Profile
from harness.core.record_sink import RecordSink
from harness.core.records import DISPATCHER_SCHEMA, elapsed_ms, empty_row
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import Query, make_policy
from servers.dispatcher.config import DispatcherConfig
from servers.dispatcher.forward import Forwarder
from servers.dispatcher.prefetch import PrefetchCore, PrefetchInstance
from servers.dispatcher.stats import RequestStats
from servers.loop_lag import LoopLag


class Dropped(Exception):
    """The policy dropped the query (it could no longer meet its deadline)."""


class InstanceDown(Exception):
    """The forward failed at the transport level or with a 5xx; ``refused``: nothing listens there."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class QueueTimeout(Exception):
    """The query waited for an instance past its deadline."""


class Dispatcher:
    """Live driver state: the dispatch core, waiting requests, the HTTP session, records and counters."""

    def __init__(self, config: DispatcherConfig, profile: Profile):
        self.config = config
        self.qos_ms = config.resolved_qos_ms()
        pool = config.pool
        types = [i.instance_type for i in pool.instances]
        self.model = pool.model
        self.latency = LatencyModel(profile, types, [pool.model], alpha=config.latency_alpha)
        self.max_batch = self.latency.max_batch[pool.model]
        self.instances = build_instances(
            types, self.latency.type_index, config.concurrency, ids=[i.id for i in pool.instances], cls=PrefetchInstance
        )
        self.urls = [i.url for i in pool.instances]
        # Parsed once: building a URL from a string costs more than the rest of a forward's bookkeeping.
        self.infer_urls = [URL(f"{u}/v2/models/{pool.model}/infer") for u in self.urls]
        self.policy_name = config.policy
        self.waiters: dict[Query, asyncio.Future] = {}
        self.rows: dict[Query, dict] = {}
        self._empty_row = empty_row(DISPATCHER_SCHEMA)  # copied per query: a dict copy, not a comprehension
        self.core = PrefetchCore(
            make_policy(config.policy),
            self.latency,
            self.instances,
            self.qos_ms,
            np.random.default_rng(config.seed),
            on_assign=self._on_assign,
            on_start=self._on_start,
            on_drop=self._on_drop,
        )
        # Written by the app's timer from a worker thread, never inline: a part costs ~15 ms of CPU (pandas, parquet),
        # which on the event loop would delay every query in flight and show in the measured tail.
        self.sink = RecordSink(config.records_path, DISPATCHER_SCHEMA, flush_on_append=False)
        self.session: aiohttp.ClientSession | None = None  # health checks and metadata
        self.forwarder: Forwarder | None = None  # infer requests (servers.dispatcher.forward)
        self._t0 = time.perf_counter()
        self._epoch0 = time.time()
        self.seq = itertools.count()
        self._health_tasks: dict[int, asyncio.Task] = {}
        # Prefetch assumes an instance serves one query at a time, in order (servers.dispatcher.prefetch).
        self.prefetch_s = config.prefetch_ms / 1000.0 if config.concurrency == 1 else 0.0
        self._prefetch_timers: list[asyncio.TimerHandle | None] = [None] * len(self.instances)
        # When each prefetch timer fires (loop time): uvloop's timer handles do not always offer when().
        self._prefetch_at = [math.nan] * len(self.instances)
        self.failures = [0] * len(self.instances)  # consecutive failures per instance (outlier detection)
        self.ejections = 0  # instances taken out of service so far (outlier detection, refused connections)
        self.queue_timeout_s = config.resolved_queue_timeout_s()
        self.last_end_s = [0.0] * len(self.instances)  # when each instance last answered (monotonic s)
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_system = 0
        self.held_bytes = 0  # request bodies held by queries in the system (servers.dispatcher.proxy sheds past a cap)
        self.stats = RequestStats()
        self.loop_lag = LoopLag()

    # -- clock ----------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds on the dispatcher's monotonic clock (what policies see)."""
        return time.perf_counter() - self._t0

    def epoch(self, t: float) -> float:
        """A monotonic reading as Unix seconds (what records hold, so client and dispatcher rows line up)."""
        return self._epoch0 + t if isinstance(t, float) and not math.isnan(t) else math.nan

    # -- core callbacks -------------------------------------------------------------------------------------------
    def _on_assign(self, q: Query, inst) -> None:
        row = self.rows[q]
        row["dispatch_s"] = self.epoch(self.now())
        row["instance_id"] = inst.instance_id
        row["instance_type"] = inst.instance_type

    def _on_start(self, q: Query, inst) -> None:
        fut = self.waiters.pop(q, None)
        if fut is not None and not fut.done():
            fut.set_result(inst)
        self.arm_prefetch(inst)

    # -- prefetch -------------------------------------------------------------------------------------------------
    def arm_prefetch(self, inst) -> None:
        """Schedule the early slot of a full instance ``prefetch_ms`` before its predicted end, replacing a pending
        timer unless that one already aims there."""
        if self.prefetch_s <= 0.0 or inst.early or not inst.alive or inst.running < inst.capacity:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + inst.expected_free_s - self.now() - self.prefetch_s
        pending = self._prefetch_timers[inst.index]
        if pending is not None:
            if abs(self._prefetch_at[inst.index] - when) < 1e-4:
                return
            pending.cancel()
        self._prefetch_timers[inst.index] = loop.call_at(when, self._prefetch, inst)
        self._prefetch_at[inst.index] = when

    def _prefetch(self, inst) -> None:
        self._prefetch_timers[inst.index] = None
        self.core.open_early(self.now(), inst)

    def _on_drop(self, q: Query) -> None:
        self.rows[q]["dispatch_s"] = self.epoch(self.now())
        fut = self.waiters.pop(q, None)
        if fut is not None and not fut.done():
            fut.set_exception(Dropped())

    # -- policy ---------------------------------------------------------------------------------------------------
    def set_policy(self, spec: str) -> None:
        """Switch policy (between test phases); queued queries are decided by the new one."""
        self.core.set_policy(make_policy(spec))
        self.policy_name = spec
        self.core.decide(self.now())

    # -- records and counters -------------------------------------------------------------------------------------
    def finish_record(self, q: Query, status: str, http_status: int, error: str = "") -> None:
        """Close the query's row (exactly once) and count it."""
        row = self.rows.pop(q)
        row["status"] = status
        row["http_status"] = http_status
        row["error"] = error
        if math.isnan(row["finish_s"]):
            row["finish_s"] = self.epoch(self.now())
        self.sink.append(row)
        self.stats.count(row["policy"], status, elapsed_ms(row["arrival_s"], row["finish_s"]))

    def new_row(self, rid: str, batch: int, t: float) -> dict:
        """A record row at arrival."""
        row = self._empty_row.copy()
        row.update(request_id=rid, model=self.model, batch_size=batch, arrival_s=self.epoch(t), policy=self.policy_name)
        return row

    # -- deadlines ------------------------------------------------------------------------------------------------
    def expire(self, q: Query) -> None:
        """The query's queueing deadline passed: if it has not started, take it out and fail its wait."""
        fut = self.waiters.get(q)
        if fut is not None and not fut.done() and self.core.withdraw(self.now(), q):
            self.waiters.pop(q, None)
            fut.set_exception(QueueTimeout())

    # -- instance health ------------------------------------------------------------------------------------------
    def instance_answered(self, inst) -> None:
        """A forward came back with an answer below 500: the instance's failure streak ends."""
        self.failures[inst.index] = 0

    def instance_failed(self, inst, refused: bool = False) -> None:
        """Count a failure of ``inst``; eject it after ``eject_after_failures`` in a row (at once when the connection
        was refused), unless that would eject more than ``max_ejected_fraction`` of the pool."""
        self.failures[inst.index] += 1
        if not inst.alive or not (refused or self.failures[inst.index] >= self.config.eject_after_failures):
            return
        ejected = sum(not i.alive for i in self.instances)
        if ejected + 1 > self.config.max_ejected_fraction * len(self.instances):
            return  # a pool that ejected most of itself serves nobody: keep it and let the failures show
        self.eject(inst)

    def eject(self, inst) -> None:
        """Take an instance out of service, requeue its local FIFO, and start health-checking it."""
        now = self.now()
        self.ejections += 1
        # Queries in its local FIFO were assigned but not started: their handlers still wait on their futures.
        self.core.requeue(now, self.core.mark_dead(now, inst))
        if inst.index not in self._health_tasks:
            self._health_tasks[inst.index] = asyncio.create_task(self._watch(inst))

    async def _watch(self, inst) -> None:
        url = self.urls[inst.index] + "/v2/health/ready"
        try:
            while True:
                await asyncio.sleep(self.config.health_interval_s)
                try:
                    async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            self.failures[inst.index] = 0
                            self.core.mark_alive(self.now(), inst)
                            return
                except (TimeoutError, aiohttp.ClientError, OSError):
                    continue
        finally:
            self._health_tasks.pop(inst.index, None)

    def enter(self) -> None:
        """A request entered the system."""
        self.in_system += 1
        self._idle.clear()

    def leave(self) -> None:
        """A request left the system."""
        self.in_system -= 1
        if self.in_system == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is queued or in service; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


DISPATCHER = web.AppKey("dispatcher", Dispatcher)
