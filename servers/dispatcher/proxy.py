"""The dispatcher's per-query path: queue the request, let the policy choose, forward it, pass the answer back.

Each infer request becomes a ``Query`` in a ``DispatchCore`` (the same object the simulator drives); when the policy
starts it on an instance, the request body is forwarded byte for byte and the instance's response is passed back
unchanged. Service times observed here (the forward's round trip) update the latency model online. ``answer_infer``
is the path after the body is read; the aiohttp route ``infer`` and the lean front (``servers.dispatcher.front``)
both call it, so either server gives the same answers and records.

Failure rule (outlier detection, after Envoy's): a 4xx is the request's fault and passes back unchanged. A 5xx, a
timeout or a dropped connection counts against the instance, and ``eject_after_failures`` in a row (a refused
connection at once) take it out of service, unless more than ``max_ejected_fraction`` of the pool would then be out:
its local FIFO goes back to the head of the central queue and it is health-checked every ``health_interval_s`` until
it is ready again. The failed query is retried on another instance up to ``max_retries`` times (default 1), then
answered 502. A query still queued ``queue_timeout_ms`` after arrival is answered 504. Beyond ``max_queue`` queued
queries, or ``max_held_bytes`` of request bodies held, a new query is shed with 503 at once. Every query is recorded
exactly once, whatever happens.

Prefetch (``prefetch_ms``, see ``servers.dispatcher.prefetch``): a prefetched query waits at its instance for its
predecessor, so its service is counted from its predecessor's end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import NamedTuple

import aiohttp
import orjson
from aiohttp import web

from harness.core.records import DROPPED, FAILED, OK, SHED, TIMED_OUT, elapsed_ms
from harness.dispatch.policies import Query
from servers import v2, v2_http
from servers.dispatcher.forward import ForwardError
from servers.dispatcher.state import DISPATCHER, Dispatcher, Dropped, InstanceDown, QueueTimeout

FORWARD_HEADERS = ("Content-Type", v2.HEADER_LENGTH, "X-Request-ID")
# (name as passed back, name as the forwarder reports it)
PASSBACK_HEADERS = tuple((h, h.lower()) for h in ("Content-Type", v2.HEADER_LENGTH))


class Answer(NamedTuple):
    """An infer response, whichever server writes it (aiohttp's, or the lean front of ``servers.dispatcher.front``)."""

    status: int
    body: bytes
    headers: dict[str, str]


def error_answer(status: int, message: str) -> Answer:
    """``{"error": message}`` with ``status``, as ``v2_http.json_error`` writes it."""
    return Answer(status, orjson.dumps({"error": message}), {"Content-Type": "application/json"})


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{name}/infer``: queue, dispatch by policy, forward, pass the response back."""
    d = request.app[DISPATCHER]
    name = request.match_info["name"]
    if name != d.model:
        raise v2.V2Error(404, f"unknown model {name!r} (this pool serves {d.model!r})")
    body = await v2_http.read_body(request)
    a = await answer_infer(d, name, body, request.headers)
    return web.Response(body=a.body, status=a.status, headers=a.headers)


async def answer_infer(d: Dispatcher, name: str, body: bytes, req_headers: Mapping[str, str]) -> Answer:
    """The infer path after the body is read (``req_headers`` case-insensitive); V2Error for the request's faults."""
    if name != d.model:
        raise v2.V2Error(404, f"unknown model {name!r} (this pool serves {d.model!r})")
    batch = v2.peek_batch(body, req_headers.get(v2.HEADER_LENGTH))
    if batch > d.max_batch:
        raise v2.V2Error(400, f"batch size {batch} above the pool's largest profiled batch {d.max_batch}")
    rid = request_id(req_headers.get("X-Request-ID"))
    t_arrive = d.now()
    q = Query(next(d.seq), rid, d.model, batch, t_arrive)
    d.rows[q] = d.new_row(rid, batch, t_arrive)
    if len(d.core.pending) >= d.config.max_queue:
        d.finish_record(q, SHED, 503, "queue full")
        return error_answer(503, f"queue full ({d.config.max_queue} queries waiting)")
    if d.held_bytes + len(body) > d.config.max_held_bytes:
        d.finish_record(q, SHED, 503, "held bodies full")
        return error_answer(
            503,
            f"overloaded: {d.held_bytes >> 20} MiB of request bodies already held (limit {d.config.max_held_bytes >> 20} MiB)",
        )
    headers = {h: req_headers[h] for h in FORWARD_HEADERS if h in req_headers}
    headers["X-Request-ID"] = rid
    loop = asyncio.get_running_loop()
    fut = d.waiters[q] = loop.create_future()
    deadline = loop.call_later(d.queue_timeout_s, d.expire, q)
    d.enter()
    d.held_bytes += len(body)
    try:
        d.core.arrive(t_arrive, q)
        return await _serve(d, q, fut, body, headers)
    finally:
        d.held_bytes -= len(body)
        deadline.cancel()
        d.waiters.pop(q, None)
        if q in d.rows:  # cancelled (client gone, server stopping): still recorded exactly once
            d.core.withdraw(d.now(), q)
            d.finish_record(q, FAILED, 499, "request cancelled")
        d.leave()


def request_id(header: str | None) -> str:
    """The client's ``X-Request-ID`` (printable UTF-8, at most 256 characters), or a fresh one when absent."""
    if not header:
        return uuid.uuid4().hex
    # aiohttp decodes header bytes that are not UTF-8 into lone surrogates: they could be neither recorded nor
    # forwarded, so such an id is the request's own fault.
    if len(header) > 256 or not header.isprintable() or not _encodable(header):
        raise v2.V2Error(400, "X-Request-ID must be printable UTF-8 text of at most 256 characters")
    return header


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


async def _serve(d: Dispatcher, q: Query, fut: asyncio.Future, body: bytes, headers: dict) -> Answer:
    row = d.rows[q]
    while True:
        try:
            inst = await fut
        except Dropped:
            d.finish_record(q, DROPPED, 503, "dropped by policy: deadline cannot be met")
            return error_answer(503, "dropped: the query can no longer meet its QoS deadline")
        except QueueTimeout:
            waited = f"queued {d.queue_timeout_s * 1000:.0f} ms without an instance"
            d.finish_record(q, TIMED_OUT, 504, waited)
            return error_answer(504, f"timed out: {waited}")
        row["attempts"] += 1
        t_start = d.now()
        row["start_s"] = d.epoch(t_start)
        row["queue_ms"] = elapsed_ms(q.arrival_s, t_start)
        try:
            try:
                reply = await d.forwarder.post(inst.index, body, headers)
            except ForwardError as exc:  # refused: nothing listens, the instance is gone
                raise InstanceDown(f"{inst.instance_id}: {exc}", refused=exc.refused) from None
            except (TimeoutError, OSError) as exc:
                raise InstanceDown(f"{inst.instance_id}: {type(exc).__name__}: {exc}") from None
            except asyncio.CancelledError:
                d.core.complete(d.now(), q, inst, None)  # free the instance slot; infer() records the query
                d.arm_prefetch(inst)
                raise
            if reply.status >= 500:
                raise InstanceDown(f"{inst.instance_id} answered {reply.status}")
            data, status = reply.body, reply.status
            passback = {h: reply.headers[k] for h, k in PASSBACK_HEADERS if k in reply.headers}
        except InstanceDown as exc:
            d.core.complete(d.now(), q, inst, None)
            d.instance_failed(inst, exc.refused)
            if row["attempts"] > d.config.max_retries:
                d.finish_record(q, FAILED, 502, str(exc))
                return error_answer(502, f"backend failed: {exc}")
            fut = d.waiters[q] = asyncio.get_running_loop().create_future()
            d.core.requeue(d.now(), [q])
            continue
        d.instance_answered(inst)  # a 4xx too: the request's fault, never the instance's
        t_end = d.now()
        # A prefetched query waited at the instance for its predecessor: its service starts when that one ended.
        began = max(t_start, d.last_end_s[inst.index]) if d.prefetch_s > 0.0 else t_start
        d.last_end_s[inst.index] = t_end
        row["start_s"] = d.epoch(began)
        row["queue_ms"] = elapsed_ms(q.arrival_s, began)
        row["finish_s"] = d.epoch(t_end)
        row["service_ms"] = elapsed_ms(began, t_end)
        d.core.complete(t_end, q, inst, row["service_ms"])
        d.arm_prefetch(inst)
        d.finish_record(
            q, OK if status < 400 else FAILED, status, "" if status < 400 else data[:200].decode("utf-8", "replace")
        )
        passback["X-Kairos-Instance"] = inst.instance_id
        passback["X-Kairos-Queue-Ms"] = f"{row['queue_ms']:.3f}"
        return Answer(status, data, passback)


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
            async with d.session.get(d.urls[inst.index] + request.path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")
        except (TimeoutError, aiohttp.ClientError, OSError):
            continue
    raise v2.V2Error(503, "no live instance to answer")


async def server_meta(request: web.Request) -> web.Response:
    """``GET /v2``."""
    return v2_http.json_response({"name": "kairos-dispatcher", "version": "1", "extensions": ["binary_tensor_data"]})


async def live(request: web.Request) -> web.Response:
    """``GET /v2/health/live``."""
    return v2_http.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    """``GET /v2/health/ready``: ready while at least one instance is in service."""
    ok = any(inst.alive for inst in request.app[DISPATCHER].instances)
    return v2_http.json_response({"ready": ok}, status=200 if ok else 503)
