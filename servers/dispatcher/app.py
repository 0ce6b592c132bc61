"""The dispatcher's aiohttp app: routes, and what lives as long as the app: the forwarder, the client session (health
checks, metadata) and the records timer."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web

from harness.core.profiles import Profile
from servers import models, v2_http
from servers.dispatcher import admin, metrics, proxy
from servers.dispatcher.config import DispatcherConfig
from servers.dispatcher.forward import Forwarder
from servers.dispatcher.front import FrontSite
from servers.dispatcher.state import DISPATCHER, Dispatcher
from servers.serving import ServerKind

# A profiled model without a built-in spec: no declared shapes to size the limit from.
UNKNOWN_MODEL_BODY_BYTES = 64 << 20


async def flush_records(dispatcher: Dispatcher) -> None:
    """Write buffered records every ``flush_interval_s``, so rows reach disk even when queries stop coming (a kill -9
    then loses about the last interval); a failed write is reported on stderr and retried at the next tick."""
    sink = dispatcher.sink
    while True:
        await asyncio.sleep(sink.flush_interval_s)
        try:
            await asyncio.to_thread(sink.flush)
        except Exception as exc:  # the disk may come back (full, unmounted); the rows stay buffered meanwhile
            print(f"writing records to {sink.path} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def create_app(config: DispatcherConfig, profile: Profile | None = None) -> web.Application:
    """The dispatcher's aiohttp app (the profile seeds the latency model; read now so bad input fails early)."""
    profile = profile if profile is not None else Profile.load(config.profiles)
    dispatcher = Dispatcher(config, profile)
    app = v2_http.v2_app(body_limit(dispatcher), admin.admin_guard)
    app[DISPATCHER] = dispatcher

    async def lifecycle(app: web.Application):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        # No cookie jar: instances set none, and filtering cookies is per-request work on the hot path.
        dispatcher.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=config.backend_timeout_s),
        )
        dispatcher.forwarder = Forwarder(dispatcher.infer_urls, config.backend_timeout_s)
        flusher = asyncio.create_task(flush_records(dispatcher)) if dispatcher.sink.path else None
        lag = asyncio.create_task(dispatcher.loop_lag.run())
        yield
        lag.cancel()
        if flusher is not None:
            flusher.cancel()
        for task in list(dispatcher._health_tasks.values()):
            task.cancel()
        dispatcher.forwarder.close()
        await dispatcher.session.close()
        dispatcher.sink.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v2", proxy.server_meta)
    app.router.add_get("/v2/health/live", proxy.live)
    app.router.add_get("/v2/health/ready", proxy.ready)
    app.router.add_get("/v2/models/{name}", proxy.passthrough_get)
    app.router.add_get("/v2/models/{name}/ready", proxy.passthrough_get)
    app.router.add_post("/v2/models/{name}/infer", proxy.infer)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/admin/status", admin.admin_status)
    app.router.add_route("*", "/admin/policy", admin.admin_policy)
    app.router.add_post("/admin/drain", admin.admin_drain)
    app.router.add_post("/admin/flush", admin.admin_flush)
    app.router.add_get("/admin/records", admin.admin_records)
    app.router.add_get("/admin/loop_lag", admin.admin_loop_lag)
    return app


def body_limit(dispatcher: Dispatcher) -> int:
    """The largest request body to accept: what the pool's largest batch needs, even as JSON, for a built-in model
    (the instances behind refuse more anyway); UNKNOWN_MODEL_BODY_BYTES for a model of the user's own."""
    if dispatcher.model not in models.MODEL_NAMES:
        return UNKNOWN_MODEL_BODY_BYTES
    return v2_http.max_body_bytes(models.get_spec(dispatcher.model).metadata(), dispatcher.max_batch)


KIND = ServerKind(
    "dispatcher",
    DispatcherConfig,
    create_app,
    describe=lambda c: {
        "policy": c.policy,
        "model": c.pool.model,
        "instances": len(c.pool.instances),
        "records": str(c.records_path or ""),
    },
    site=FrontSite,
)
