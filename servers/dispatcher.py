"""The dispatcher proxy: the V2 API in front of a pool, a central queue, and the simulator's policy objects.

Each infer request becomes a ``Query`` in a ``DispatchCore`` (the same object the simulator drives); when the policy
starts it on an instance, the request body is forwarded byte for byte and the instance's response is passed back
unchanged. Service times observed here (the forward's round trip) update the latency model online.

Failure rule: if an instance refuses the connection, resets it, times out or answers 5xx, the instance is taken out
of service (its local FIFO goes back to the head of the central queue) and health-checked every
``health_interval_s`` until it is ready again; the failed query is retried on another instance up to
``max_retries`` times (default 1), then answered 502. Every query is recorded exactly once, whatever happens.

Prefetch (``prefetch_ms``, default 3): with one query per instance at a time, an instance would idle for the proxy's
round trip (response back here, decision, next request out) after every query. So ``prefetch_ms`` before the running
query's *predicted* end, the dispatcher opens one extra slot on that instance (``DispatchCore.open_early``): the
policy decides as usual, seeing the instance free in ``prefetch_ms``, and the chosen query waits at the instance,
which serves FIFO. Its service time is counted from its predecessor's end. 0 turns prefetch off. The default covers
a loopback round trip (about 1 ms here) plus the event loop's timer granularity (uvloop's timers tick in whole ms).
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import itertools
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from yarl import URL

from harness.dispatch.dispatch_core import DispatchCore
from harness.core.errors import InputError
from harness.dispatch.instance_state import build_instances
from harness.dispatch.latency_model import LatencyModel
from harness.core.paper import default_qos_ms
from harness.dispatch.policies import Query, make_policy
from harness.core.profiles import Profile
from harness.core.record_sink import RecordSink
from harness.core.records import DROPPED, FAILED, OK, RECORD_COLUMNS, SHED
from servers import v2
from servers.pool import PoolFile

LIVE_COLUMNS = RECORD_COLUMNS + ("queue_ms", "service_ms", "http_status", "attempts", "error")
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 350, 500, 1000, 2000, 5000, 10000)
FORWARD_HEADERS = ("Content-Type", v2.HEADER_LENGTH, "X-Request-ID")
PASSBACK_HEADERS = ("Content-Type", v2.HEADER_LENGTH)


@dataclass(frozen=True)
class DispatcherConfig:
    """A dispatcher: its pool, policy, QoS, latency-model source, limits, records file and admin token."""

    pool: PoolFile
    policy: str = "kairos"
    qos_ms: float | None = None
    profiles: Path | None = None
    latency_alpha: float = 0.05
    max_queue: int = 10_000
    concurrency: int = 1
    prefetch_ms: float = 3.0
    records_path: Path | None = None
    admin_token: str | None = None
    backend_timeout_s: float = 60.0
    max_retries: int = 1
    health_interval_s: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.concurrency < 1:
            raise InputError(f"--concurrency {self.concurrency}: must be >= 1")
        if not self.prefetch_ms >= 0:
            raise InputError(f"--prefetch-ms {self.prefetch_ms}: must be >= 0")

    def resolved_qos_ms(self) -> float:
        """The QoS target: given, or the paper's for the pool's model."""
        qos = self.qos_ms if self.qos_ms is not None else default_qos_ms(self.pool.model)
        if qos is None or not qos > 0:
            raise InputError(f"--qos-ms is required for model {self.pool.model!r} (no paper default)")
        return float(qos)


class Dropped(Exception):
    """The policy dropped the query (it could no longer meet its deadline)."""


class InstanceDown(Exception):
    """The forward failed at the transport level or with a 5xx."""


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
        self.instances = build_instances(types, self.latency.type_index, config.concurrency,
                                         ids=[i.id for i in pool.instances])
        self.urls = [i.url for i in pool.instances]
        # Parsed once: building a URL from a string costs more than the rest of a forward's bookkeeping.
        self.infer_urls = [URL(f"{u}/v2/models/{pool.model}/infer") for u in self.urls]
        self.policy_name = config.policy
        self.waiters: dict[Query, asyncio.Future] = {}
        self.rows: dict[Query, dict] = {}
        self.core = DispatchCore(make_policy(config.policy), self.latency, self.instances, self.qos_ms,
                                 np.random.default_rng(config.seed), on_assign=self._on_assign,
                                 on_start=self._on_start, on_drop=self._on_drop)
        self.sink = RecordSink(config.records_path, LIVE_COLUMNS)
        self.session: aiohttp.ClientSession | None = None
        self._t0 = time.perf_counter()
        self._epoch0 = time.time()
        self._seq = itertools.count()
        self._health_tasks: dict[int, asyncio.Task] = {}
        # Prefetch assumes an instance serves one query at a time, in order (see the module docstring).
        self.prefetch_s = config.prefetch_ms / 1000.0 if config.concurrency == 1 else 0.0
        self._prefetch_timers: list[asyncio.TimerHandle | None] = [None] * len(self.instances)
        self._last_end = [0.0] * len(self.instances)  # when each instance last answered (monotonic s)
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_system = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.latency_sum_ms: dict[str, float] = {}

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
            if abs(pending.when() - when) < 1e-4:
                return
            pending.cancel()
        self._prefetch_timers[inst.index] = loop.call_at(when, self._prefetch, inst)

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
        key = (row["policy"], status)
        self.counts[key] = self.counts.get(key, 0) + 1
        if status == OK:
            lat_ms = (row["finish_s"] - row["arrival_s"]) * 1000.0
            hist = self.hist.setdefault(row["policy"], [0] * (len(LATENCY_BUCKETS_MS) + 1))
            k = bisect.bisect_left(LATENCY_BUCKETS_MS, lat_ms)  # first bucket with lat_ms <= le
            hist[k] += 1
            self.latency_sum_ms[row["policy"]] = self.latency_sum_ms.get(row["policy"], 0.0) + lat_ms

    def new_row(self, rid: str, batch: int, t: float) -> dict:
        """A record row at arrival."""
        return {"request_id": rid, "model": self.model, "batch_size": batch, "arrival_s": self.epoch(t),
                "dispatch_s": math.nan, "start_s": math.nan, "finish_s": math.nan, "instance_id": "",
                "instance_type": "", "policy": self.policy_name, "status": "", "queue_ms": math.nan,
                "service_ms": math.nan, "http_status": 0, "attempts": 0, "error": ""}

    # -- instance health ------------------------------------------------------------------------------------------
    def instance_failed(self, inst) -> None:
        """Take an instance out of service, requeue its local FIFO, and start health-checking it."""
        if not inst.alive:
            return
        now = self.now()
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
                            self.core.mark_alive(self.now(), inst)
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
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
        except asyncio.TimeoutError:
            return False


DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def peek_batch(body: bytes, header_length: str | None) -> int:
    """The batch size of a V2 infer request (first dimension of its first input), reading only the JSON header."""
    try:
        hl = int(header_length) if header_length else None
    except ValueError:
        raise v2.V2Error(400, f"{v2.HEADER_LENGTH}: {header_length!r} is not an integer") from None
    if hl is not None and not 0 <= hl <= len(body):
        raise v2.V2Error(400, f"{v2.HEADER_LENGTH} {hl} does not fit the body length {len(body)}")
    try:
        head = orjson.loads(body[:hl] if hl is not None else body)
    except orjson.JSONDecodeError as exc:
        raise v2.V2Error(400, f"malformed JSON: {exc}") from None
    inputs = head.get("inputs") if isinstance(head, dict) else None
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        raise v2.V2Error(400, "request needs a non-empty 'inputs' list")
    shape = inputs[0].get("shape")
    if not isinstance(shape, list) or not shape or not isinstance(shape[0], int) or isinstance(shape[0], bool) \
            or shape[0] < 1:
        raise v2.V2Error(400, f"inputs[0]: 'shape' must start with the batch size >= 1, got {shape!r}")
    return shape[0]


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


@web.middleware
async def admin_guard(request: web.Request, handler):
    """Admin endpoints answer only on loopback, or to ``Authorization: Bearer <token>``."""
    if request.path.startswith("/admin"):
        token = request.app[DISPATCHER].config.admin_token
        sent = request.headers.get("Authorization", "")
        if not (_is_loopback(request.remote) or (token and sent == f"Bearer {token}")):
            return v2.json_error(403, "admin endpoints answer only on loopback or with the admin token")
    return await handler(request)


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}/infer``: queue, dispatch by policy, forward, pass the response back."""
    d = request.app[DISPATCHER]
    name = request.match_info["name"]
    if name != d.model:
        raise v2.V2Error(404, f"unknown model {name!r} (this pool serves {d.model!r})")
    body = await v2.read_body(request)
    batch = peek_batch(body, request.headers.get(v2.HEADER_LENGTH))
    if batch > d.max_batch:
        raise v2.V2Error(400, f"batch size {batch} above the pool's largest profiled batch {d.max_batch}")
    rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    t_arrive = d.now()
    q = Query(next(d._seq), rid, d.model, batch, t_arrive)
    d.rows[q] = d.new_row(rid, batch, t_arrive)
    if len(d.core.pending) >= d.config.max_queue:
        d.finish_record(q, SHED, 503, "queue full")
        return v2.json_error(503, f"queue full ({d.config.max_queue} queries waiting)")
    headers = {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers}
    headers["X-Request-ID"] = rid
    fut = d.waiters[q] = asyncio.get_running_loop().create_future()
    d.enter()
    try:
        d.core.arrive(t_arrive, q)
        return await _serve(d, q, fut, body, headers)
    finally:
        d.waiters.pop(q, None)
        if q in d.rows:  # cancelled (client gone, server stopping): still recorded exactly once
            if q in d.core.pending:
                d.core.pending.remove(q)
            d.finish_record(q, FAILED, 499, "request cancelled")
        d.leave()


async def _serve(d: Dispatcher, q: Query, fut: asyncio.Future, body: bytes, headers: dict) -> web.Response:
    row = d.rows[q]
    while True:
        try:
            inst = await fut
        except Dropped:
            d.finish_record(q, DROPPED, 503, "dropped by policy: deadline cannot be met")
            return v2.json_error(503, "dropped: the query can no longer meet its QoS deadline")
        row["attempts"] += 1
        t_start = d.now()
        row["start_s"] = d.epoch(t_start)
        row["queue_ms"] = (t_start - q.arrival_s) * 1000.0
        try:
            try:
                async with d.session.post(d.infer_urls[inst.index], data=body, headers=headers) as resp:
                    data = await resp.read()
                    if resp.status >= 500:
                        raise InstanceDown(f"{inst.instance_id} answered {resp.status}")
                    passback = {h: resp.headers[h] for h in PASSBACK_HEADERS if h in resp.headers}
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise InstanceDown(f"{inst.instance_id}: {type(exc).__name__}: {exc}") from None
            except asyncio.CancelledError:
                d.core.complete(d.now(), q, inst, None)  # free the instance slot; infer() records the query
                d.arm_prefetch(inst)
                raise
        except InstanceDown as exc:
            d.core.complete(d.now(), q, inst, None)
            d.instance_failed(inst)
            if row["attempts"] > d.config.max_retries:
                d.finish_record(q, FAILED, 502, str(exc))
                return v2.json_error(502, f"backend failed: {exc}")
            fut = d.waiters[q] = asyncio.get_running_loop().create_future()
            d.core.requeue(d.now(), [q])
            continue
        t_end = d.now()
        # A prefetched query waited at the instance for its predecessor: its service starts when that one ended.
        began = max(t_start, d._last_end[inst.index]) if d.prefetch_s > 0.0 else t_start
        d._last_end[inst.index] = t_end
        row["start_s"] = d.epoch(began)
        row["queue_ms"] = (began - q.arrival_s) * 1000.0
        row["finish_s"] = d.epoch(t_end)
        row["service_ms"] = (t_end - began) * 1000.0
        d.core.complete(t_end, q, inst, row["service_ms"])
        d.arm_prefetch(inst)
        d.finish_record(q, OK if status < 400 else FAILED, status, "" if status < 400 else data[:200].decode(
            "utf-8", "replace"))
        passback["X-Kairos-Instance"] = inst.instance_id
        passback["X-Kairos-Queue-Ms"] = f"{row['queue_ms']:.3f}"
        return web.Response(body=data, status=status, headers=passback)


async def passthrough_get(request: web.Request) -> web.Response:
    """Model metadata and readiness, answered by the first live instance."""
    d = request.app[DISPATCHER]
    name = request.match_info["name"]
    if name != d.model:
        raise v2.V2Error(404, f"unknown model {name!r} (this pool serves {d.model!r})")
    for inst in d.instances:
        if not inst.alive:
            continue
        try:
            async with d.session.get(d.urls[inst.index] + request.path,
                                     timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            continue
    raise v2.V2Error(503, "no live instance to answer")


async def server_meta(request: web.Request) -> web.Response:
    """``GET /v2``."""
    return v2.json_response({"name": "kairos-dispatcher", "version": "1", "extensions": ["binary_tensor_data"]})


async def live(request: web.Request) -> web.Response:
    """``GET /v2/health/live``."""
    return v2.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    """``GET /v2/health/ready``: ready while at least one instance is in service."""
    ok = any(inst.alive for inst in request.app[DISPATCHER].instances)
    return v2.json_response({"ready": ok}, status=200 if ok else 503)


def status_doc(d: Dispatcher) -> dict:
    """A JSON snapshot of the dispatcher."""
    return {"policy": d.policy_name, "qos_ms": d.qos_ms, "model": d.model, "queue_length": len(d.core.pending),
            "in_system": d.in_system, "records": len(d.sink),
            "instances": [{"id": i.instance_id, "instance_type": i.instance_type, "url": d.urls[i.index],
                           "alive": i.alive, "running": i.running, "outstanding": i.outstanding}
                          for i in d.instances],
            "counts": [{"policy": p, "status": s, "count": n} for (p, s), n in sorted(d.counts.items())]}


async def admin_status(request: web.Request) -> web.Response:
    """``GET /admin/status``."""
    return v2.json_response(status_doc(request.app[DISPATCHER]))


async def admin_policy(request: web.Request) -> web.Response:
    """``GET /admin/policy``; ``POST /admin/policy {"policy": "NAME[:k=v]"}`` switches it."""
    d = request.app[DISPATCHER]
    if request.method == "POST":
        try:
            doc = orjson.loads(await request.read())
            spec = doc["policy"]
            if not isinstance(spec, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise v2.V2Error(400, 'expected JSON {"policy": "NAME"}') from None
        try:
            d.set_policy(spec)
        except InputError as exc:
            raise v2.V2Error(400, str(exc)) from None
    return v2.json_response({"policy": d.policy_name, "qos_ms": d.qos_ms})


async def admin_drain(request: web.Request) -> web.Response:
    """``POST /admin/drain?timeout_s=60``: wait until nothing is queued or in service, then flush records."""
    d = request.app[DISPATCHER]
    try:
        timeout_s = float(request.query.get("timeout_s", "60"))
    except ValueError:
        raise v2.V2Error(400, "timeout_s must be a number") from None
    drained = await d.drain(timeout_s)
    d.sink.flush()
    return v2.json_response({"drained": drained, "in_system": d.in_system, "records": len(d.sink)})


async def admin_flush(request: web.Request) -> web.Response:
    """``POST /admin/flush``: write buffered records to the parquet file."""
    d = request.app[DISPATCHER]
    d.sink.flush()
    return v2.json_response({"records": len(d.sink), "path": str(d.config.records_path or "")})


async def admin_records(request: web.Request) -> web.Response:
    """``GET /admin/records?prefix=P``: finished records whose request_id starts with P, as JSON columns."""
    d = request.app[DISPATCHER]
    prefix = request.query.get("prefix", "")
    rows = [r for r in d.sink.rows if r["request_id"].startswith(prefix)]
    cols = {c: [r[c] for r in rows] for c in LIVE_COLUMNS}
    return web.Response(body=orjson.dumps(cols), content_type="application/json")


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def prometheus_text(d: Dispatcher) -> str:
    """The ``/metrics`` body (Prometheus text exposition format 0.0.4)."""
    out = ["# HELP kairos_queue_length Queries waiting in the central queue.",
           "# TYPE kairos_queue_length gauge", f"kairos_queue_length {len(d.core.pending)}",
           "# HELP kairos_in_system Requests queued or in service.", "# TYPE kairos_in_system gauge",
           f"kairos_in_system {d.in_system}",
           "# HELP kairos_instance_busy Queries running on the instance.", "# TYPE kairos_instance_busy gauge"]
    for i in d.instances:
        out.append(f'kairos_instance_busy{{instance="{_label(i.instance_id)}",type="{_label(i.instance_type)}"}} {i.running}')
    out += ["# HELP kairos_instance_outstanding Queries assigned to the instance (running + local FIFO).",
            "# TYPE kairos_instance_outstanding gauge"]
    for i in d.instances:
        out.append(f'kairos_instance_outstanding{{instance="{_label(i.instance_id)}"}} {i.outstanding}')
    out += ["# HELP kairos_instance_up 1 while the instance is in service.", "# TYPE kairos_instance_up gauge"]
    for i in d.instances:
        out.append(f'kairos_instance_up{{instance="{_label(i.instance_id)}"}} {int(i.alive)}')
    out += ["# HELP kairos_requests_total Finished requests by policy and status.",
            "# TYPE kairos_requests_total counter"]
    for (p, s), n in sorted(d.counts.items()):
        out.append(f'kairos_requests_total{{policy="{_label(p)}",status="{s}"}} {n}')
    out += ["# HELP kairos_latency_ms End-to-end latency at the dispatcher of served requests.",
            "# TYPE kairos_latency_ms histogram"]
    for p, hist in sorted(d.hist.items()):
        cum = 0
        for b, n in zip(LATENCY_BUCKETS_MS, hist):
            cum += n
            out.append(f'kairos_latency_ms_bucket{{policy="{_label(p)}",le="{b}"}} {cum}')
        cum += hist[-1]
        out.append(f'kairos_latency_ms_bucket{{policy="{_label(p)}",le="+Inf"}} {cum}')
        out.append(f'kairos_latency_ms_sum{{policy="{_label(p)}"}} {d.latency_sum_ms.get(p, 0.0):.3f}')
        out.append(f'kairos_latency_ms_count{{policy="{_label(p)}"}} {cum}')
    return "\n".join(out) + "\n"


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``."""
    return web.Response(text=prometheus_text(request.app[DISPATCHER]), content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


def create_app(config: DispatcherConfig, profile: Profile | None = None) -> web.Application:
    """The dispatcher's aiohttp app (the profile seeds the latency model; read now so bad input fails early)."""
    profile = profile if profile is not None else Profile.load(config.profiles)
    dispatcher = Dispatcher(config, profile)
    app = web.Application(client_max_size=256 << 20, middlewares=[v2.error_middleware, admin_guard])
    app[DISPATCHER] = dispatcher

    async def lifecycle(app: web.Application):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        # No cookie jar: instances set none, and filtering cookies is per-request work on the hot path.
        dispatcher.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=config.backend_timeout_s))
        yield
        for task in list(dispatcher._health_tasks.values()):
            task.cancel()
        await dispatcher.session.close()
        dispatcher.sink.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v2", server_meta)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name}", passthrough_get)
    app.router.add_get("/v2/models/{name}/ready", passthrough_get)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/status", admin_status)
    app.router.add_route("*", "/admin/policy", admin_policy)
    app.router.add_post("/admin/drain", admin_drain)
    app.router.add_post("/admin/flush", admin_flush)
    app.router.add_get("/admin/records", admin_records)
    return app
