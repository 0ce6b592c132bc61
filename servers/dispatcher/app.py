"""The dispatcher's aiohttp app: routes, and the client session opened and closed with the app."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from harness.core.profiles import Profile
from servers import v2_http
from servers.dispatcher import admin, metrics, proxy
from servers.dispatcher.config import DispatcherConfig
from servers.dispatcher.state import DISPATCHER, Dispatcher
from servers.serving import ServerKind


def create_app(config: DispatcherConfig, profile: Profile | None = None) -> web.Application:
    """The dispatcher's aiohttp app (the profile seeds the latency model; read now so bad input fails early)."""
    profile = profile if profile is not None else Profile.load(config.profiles)
    dispatcher = Dispatcher(config, profile)
    app = web.Application(client_max_size=256 << 20, middlewares=[v2_http.error_middleware, admin.admin_guard])
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
        yield
        for task in list(dispatcher._health_tasks.values()):
            task.cancel()
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
    return app


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
)
