"""The dispatcher's admin endpoints (policy switch, drain, flush, records, status): loopback or a bearer token."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from harness.core.errors import InputError
from harness.core.records import DISPATCHER_COLUMNS
from servers import v2, v2_http
from servers.admin_auth import admin_allowed
from servers.dispatcher.state import DISPATCHER, Dispatcher


@web.middleware
async def admin_guard(request: web.Request, handler):
    """Admin endpoints answer only on loopback, or to ``Authorization: Bearer <token>``."""
    if request.path.startswith("/admin"):
        if not admin_allowed(request, request.app[DISPATCHER].config.admin_token):
            return v2_http.json_error(403, "admin endpoints answer only on loopback or with the admin token")
    return await handler(request)


def status_doc(d: Dispatcher) -> dict:
    """A JSON snapshot of the dispatcher."""
    return {
        "policy": d.policy_name,
        "qos_ms": d.qos_ms,
        "model": d.model,
        "queue_length": len(d.core.pending),
        "in_system": d.in_system,
        "records": len(d.sink),
        "ejections": d.ejections,
        "held_bytes": d.held_bytes,
        "instances": [
            {
                "id": i.instance_id,
                "instance_type": i.instance_type,
                "url": d.urls[i.index],
                "alive": i.alive,
                "running": i.running,
                "outstanding": i.outstanding,
            }
            for i in d.instances
        ],
        "counts": [{"policy": p, "status": s, "count": n} for (p, s), n in sorted(d.stats.counts.items())],
    }


async def admin_loop_lag(request: web.Request) -> web.Response:
    """``GET /admin/loop_lag``: the event loop's lag percentiles since the last call (which it resets)."""
    return v2_http.json_response(request.app[DISPATCHER].loop_lag.take())


async def admin_status(request: web.Request) -> web.Response:
    """``GET /admin/status``."""
    return v2_http.json_response(status_doc(request.app[DISPATCHER]))


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
    return v2_http.json_response({"policy": d.policy_name, "qos_ms": d.qos_ms})


async def admin_drain(request: web.Request) -> web.Response:
    """``POST /admin/drain?timeout_s=60``: wait until nothing is queued or in service, then flush records."""
    d = request.app[DISPATCHER]
    try:
        timeout_s = float(request.query.get("timeout_s", "60"))
    except ValueError:
        raise v2.V2Error(400, "timeout_s must be a number") from None
    drained = await d.drain(timeout_s)
    await asyncio.to_thread(d.sink.flush)
    return v2_http.json_response({"drained": drained, "in_system": d.in_system, "records": len(d.sink)})


async def admin_flush(request: web.Request) -> web.Response:
    """``POST /admin/flush``: write buffered records to the parquet file."""
    d = request.app[DISPATCHER]
    await asyncio.to_thread(d.sink.flush)
    return v2_http.json_response({"records": len(d.sink), "path": str(d.config.records_path or "")})


async def admin_records(request: web.Request) -> web.Response:
    """``GET /admin/records?prefix=P``: finished records whose request_id starts with P, as JSON columns."""
    d = request.app[DISPATCHER]
    prefix = request.query.get("prefix", "")
    rows = [r for r in d.sink.rows if r["request_id"].startswith(prefix)]
    cols = {c: [r[c] for r in rows] for c in DISPATCHER_COLUMNS}
    return web.Response(body=orjson.dumps(cols), content_type="application/json")
