"""The dispatcher under faults: bad request ids, failing instances (outlier detection), queue deadlines."""

import asyncio
import socket
from unittest import mock

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request

from harness.core.profiles import Profile
from servers import models, v2
from servers.dispatcher import DISPATCHER, DispatcherConfig, create_app
from servers.dispatcher.admin import admin_guard
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as create_emulated
from servers.pool_file import Instance, PoolFile
from tests.conftest import make_profile_frame


@pytest.fixture
def profile():
    """fast: 10 ms (batch <= 100) / 40 ms (<= 1000); slow: 30 ms / 400 ms."""
    frame = make_profile_frame(
        {("fast", "rm2"): {100: [10.0], 1000: [40.0]}, ("slow", "rm2"): {100: [30.0], 1000: [400.0]}}
    )
    return Profile.from_frame(frame, drop_max=False)


@pytest.fixture
async def servers():
    """Start in-process servers on free loopback ports; yields a starter taking (instance type, app) pairs."""
    started = []

    async def start(*apps):
        out = []
        for k, (itype, app) in enumerate(apps):
            srv = TestServer(app, host="127.0.0.1")
            await srv.start_server()
            started.append(srv)
            out.append(Instance(f"{itype}-{k}", str(srv.make_url("")).rstrip("/"), itype, 0.1))
        return out

    yield start
    for srv in started:
        await srv.close()


def failing_app() -> web.Application:
    """An instance that answers every infer request 500 (and is ready for health checks)."""

    async def boom(request):
        return web.json_response({"error": "boom"}, status=500)

    async def ready(request):
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", boom)
    app.router.add_get("/v2/health/ready", ready)
    return app


async def dispatcher(aiohttp_client, profile, instances, **kw):
    config = DispatcherConfig(PoolFile("rm2", tuple(instances)), qos_ms=kw.pop("qos_ms", 500.0), **kw)
    return await aiohttp_client(create_app(config, profile))


def request(batch):
    return v2.encode_infer_request(models.make_inputs(models.get_spec("rm2"), batch, np.random.default_rng(0)))


async def infer(client, batch, rid=None):
    enc = request(batch)
    headers = dict(enc.headers, **({"X-Request-ID": rid} if rid else {}))
    return await client.post("/v2/models/rm2/infer", data=enc.body, headers=headers)


async def raw_post(port: int, body: bytes, headers: dict[str, bytes]) -> bytes:
    """One HTTP/1.1 request written as bytes (header values need not be UTF-8); returns the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"".join(k.encode() + b": " + v + b"\r\n" for k, v in headers.items())
    writer.write(b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head)
    writer.write(b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status = await reader.readline()
    writer.close()
    return status


async def test_a_non_utf8_request_id_is_refused_and_breaks_nothing(aiohttp_client, profile, servers, tmp_path):
    instances = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances, records_path=tmp_path / "r.parquet")
    enc = request(5)
    headers = {k: v.encode() for k, v in enc.headers.items()}
    status = await raw_post(client.server.port, enc.body, {**headers, "X-Request-ID": b"\xff\xfe-bad"})
    assert b" 400 " in status
    codes = [r.status for r in await asyncio.gather(*(infer(client, 5, rid=f"ok-{k}") for k in range(300)))]
    assert codes == [200] * 300
    d = client.server.app[DISPATCHER]
    d.sink.flush()
    assert len(d.sink) == 300 and d.sink.frame()["request_id"].is_unique


async def test_a_4xx_never_ejects_an_instance(aiohttp_client, profile, servers):
    instances = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances, eject_after_failures=1)
    wrong = b'{"inputs": [{"name": "dense", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}'
    for _ in range(5):
        assert (await client.post("/v2/models/rm2/infer", data=wrong)).status == 400
    d = client.server.app[DISPATCHER]
    assert d.instances[0].alive and d.failures == [0]


async def test_ejection_takes_consecutive_failures_and_a_bounded_share(aiohttp_client, profile, servers):
    instances = await servers(
        ("fast", failing_app()),
        ("fast", failing_app()),
        ("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)),
        ("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)),
    )
    client = await dispatcher(
        aiohttp_client, profile, instances, policy="round_robin", max_retries=0, health_interval_s=30.0
    )
    d = client.server.app[DISPATCHER]
    codes = [(await infer(client, 5)).status for _ in range(4)]  # one each: no instance has failed twice
    assert sorted(codes) == [200, 200, 502, 502] and all(i.alive for i in d.instances)
    codes += [(await infer(client, 5)).status for _ in range(12)]
    # The two failing instances reach 3 failures in a row; only half the pool may be out, so both go, no more.
    assert [i.alive for i in d.instances] == [False, False, True, True]
    assert codes[-4:] == [200] * 4  # the healthy half serves everything now


async def test_a_refused_connection_ejects_at_once(aiohttp_client, profile, servers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there
    live = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    instances = [Instance("fast-dead", dead_url, "fast", 0.1), *live]
    client = await dispatcher(aiohttp_client, profile, instances, policy="fcfs", health_interval_s=30.0)
    assert (await infer(client, 5)).status == 200  # tried on the dead one first, retried on the live one
    d = client.server.app[DISPATCHER]
    assert not d.instances[0].alive and d.instances[1].alive


@pytest.mark.parametrize("policy", ["fcfs", "round_robin"])  # central queue; an instance's local FIFO
async def test_a_query_queued_past_its_deadline_gets_504_and_is_recorded(aiohttp_client, profile, servers, policy):
    instances = await servers(("slow", create_emulated(EmulatedConfig("slow", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances, policy=policy, queue_timeout_ms=150.0)
    resps = await asyncio.gather(*(infer(client, 1000, rid=f"q{k}") for k in range(3)))  # 400 ms each
    # Sent at once on three connections: whichever reaches the dispatcher first is served, the other two time out.
    assert sorted(r.status for r in resps) == [200, 504, 504]
    late = next(k for k, r in enumerate(resps) if r.status == 504)
    assert "timed out" in (await resps[late].json())["error"]
    d = client.server.app[DISPATCHER]
    rows = d.sink.frame().set_index("request_id")
    assert rows.loc[f"q{late}", "status"] == "timeout" and rows.loc[f"q{late}", "http_status"] == 504
    inst = d.instances[0]
    assert inst.outstanding == 0 and not inst.queue and not d.core.pending  # nothing left behind
    assert (await infer(client, 5)).status == 200


async def test_prefetch_timers_need_no_when_from_the_loop(aiohttp_client, profile, servers, monkeypatch):
    class Handle:  # uvloop's timer handles have sometimes lacked when()
        def __init__(self, handle):
            self._handle = handle

        def __getattr__(self, name):
            if name == "when":
                raise AttributeError(name)
            return getattr(self._handle, name)

    instances = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances, policy="fcfs")
    d = client.server.app[DISPATCHER]
    loop = asyncio.get_running_loop()
    call_at = loop.call_at
    monkeypatch.setattr(loop, "call_at", lambda when, cb, *a, **kw: Handle(call_at(when, cb, *a, **kw)))
    inst = d.instances[0]
    inst.running, inst.expected_free_s = 1, d.now() + 1.0  # busy for a second: the early slot is armed
    d.arm_prefetch(inst)
    inst.expected_free_s += 0.5  # a new estimate re-arms it, reading the pending timer's target
    d.arm_prefetch(inst)
    assert d._prefetch_timers[0] is not None
    d._prefetch_timers[0].cancel()
    inst.running = 0


async def test_the_body_limit_follows_the_model(aiohttp_client, profile, servers):
    instances = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances)
    resp = await client.post("/v2/models/rm2/infer", data=b" " * (8 << 20))  # far above rm2's largest batch as JSON
    assert resp.status == 413 and "error" in await resp.json()
    assert (await infer(client, 1000)).status == 200  # the largest real batch still fits


async def test_admin_status_and_the_token_from_elsewhere(aiohttp_client, profile, servers):
    instances = await servers(("fast", create_emulated(EmulatedConfig("fast", "rm2"), profile)))
    client = await dispatcher(aiohttp_client, profile, instances, admin_token="s3cret")
    await infer(client, 5)
    doc = await (await client.get("/admin/status")).json()  # loopback: no token needed
    assert doc["counts"] == [{"policy": "kairos", "status": "ok", "count": 1}] and doc["in_system"] == 0

    async def handler(request):
        return web.json_response({"ok": True})

    def from_elsewhere(authorization: str):
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            ("10.0.0.2", 40000) if name == "peername" else default
        )
        return make_mocked_request(
            "GET", "/admin/status", headers={"Authorization": authorization}, app=client.server.app, transport=transport
        )

    assert (await admin_guard(from_elsewhere("Bearer s3cret"), handler)).status == 200
    assert (await admin_guard(from_elsewhere("Bearer wrong"), handler)).status == 403
    assert (await admin_guard(from_elsewhere("Bearer é"), handler)).status == 403  # non-ASCII: a 403, not a 500
