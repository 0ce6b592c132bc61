"""The dispatcher's lean front: the hot infer request served by it, every other byte handed to aiohttp unchanged."""

import asyncio
import gzip
import socket

import pytest
from aiohttp import ClientSession, web

from servers import v2
from servers.dispatcher import DISPATCHER, DispatcherConfig, create_app
from servers.dispatcher import front as front_module
from servers.dispatcher.front import FrontSite, parse_head
from servers.pool_file import PoolFile
from servers.v2_http import BODY_LIMIT
from tests.servers.test_dispatcher import request


@pytest.fixture
async def front(profile, backends):
    """A dispatcher on a FrontSite (as a served process runs it) before two emulated instances; yields its URL."""
    started = await backends("fast", "slow")
    app = create_app(DispatcherConfig(PoolFile("rm2", tuple(i for i, _ in started)), qos_ms=500.0), profile)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = FrontSite(runner, sock, shutdown_timeout_s=5.0)
    await site.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app, sock.getsockname()[1]
    await runner.cleanup()


def infer_bytes(batch: int, extra: bytes = b"", path: bytes = b"/v2/models/rm2/infer") -> bytes:
    enc = request(batch)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (path, len(enc.body))
    for k, v in enc.headers.items():
        head += f"{k}: {v}\r\n".encode()
    return head + extra + b"\r\n" + enc.body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), headers, body


def test_only_the_plain_infer_request_is_parsed_here():
    lean = b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-Request-ID: a"
    name, headers, length, keep = parse_head(lean)
    assert (name, length, keep, headers["x-request-id"]) == ("rm2", 12, True, "a")
    assert parse_head(lean + b"\r\nConnection: close")[3] is False
    for other in (
        lean.replace(b"POST", b"GET"),
        lean.replace(b"HTTP/1.1", b"HTTP/1.0"),
        lean.replace(b"/infer", b"/ready"),
        lean.replace(b"rm2", b"a/b"),
        lean.replace(b"rm2", b"r%32"),
        lean + b"\r\nContent-Length: 12",  # two lengths: smuggling shape, aiohttp refuses it
        lean.replace(b"Content-Length: 12", b"Content-Length: +12"),
        lean.replace(b"Content-Length: 12", b"Transfer-Encoding: chunked"),
        lean + b"\r\nContent-Encoding: gzip",
        lean + b"\r\nExpect: 100-continue",
        lean + b"\r\n folded",
        lean + b"\r\nBad Name : 1",
        lean + b"\r\nno colon",
        lean + b"\r\nX-Odd: a\rb",  # a bare CR or LF, or a NUL, in a value
        lean + b"\r\nX-Odd: a\nb",
        lean + b"\r\nX-Odd: a\x00b",
        lean + b"\r\nX(Odd): 1",  # not a token
    ):
        assert parse_head(other) is None, other


async def test_infer_is_answered_by_the_front_and_the_rest_by_aiohttp_on_one_connection(front):
    url, app, _ = front
    async with ClientSession() as s:
        enc = request(20)
        async with s.post(url + "/v2/models/rm2/infer", data=enc.body, headers=dict(enc.headers)) as r:
            assert r.status == 200 and "Server" not in r.headers  # aiohttp's server would have named itself
            out = v2.decode_infer_response(await r.read(), r.headers)
            assert out.outputs["prob"].shape == (20, 1) and r.headers["X-Kairos-Instance"] in ("fast-0", "slow-1")
        async with s.get(url + "/metrics") as r:  # the same keep-alive connection, now handed to aiohttp
            assert r.status == 200 and "Server" in r.headers and "kairos_requests_total" in await r.text()
        async with s.post(url + "/v2/models/rm2/infer", data=enc.body, headers=dict(enc.headers)) as r:
            assert r.status == 200  # aiohttp's route serves it from then on
        gz = gzip.compress(enc.body)
        headers = {**enc.headers, "Content-Encoding": "gzip"}
        async with s.post(url + "/v2/models/rm2/infer", data=gz, headers=headers) as r:
            assert r.status == 200
        async with s.post(url + "/v2/models/bert/infer", data=enc.body, headers=dict(enc.headers)) as r:
            assert r.status == 404 and "unknown model" in (await r.json())["error"]
    assert len(app[DISPATCHER].sink.frame()) == 3  # the 404 is refused before it becomes a query


async def test_pipelined_requests_are_answered_in_order_then_close_is_honoured(front):
    _, app, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(infer_bytes(500, b"X-Request-ID: first\r\n") + infer_bytes(5, b"X-Request-ID: second\r\n"))
    await writer.drain()
    first, second = await read_response(reader), await read_response(reader)
    assert [first[0], second[0]] == [200, 200]
    writer.write(infer_bytes(5, b"Connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await reader.read() == b""  # the front closed it
    writer.close()
    # Answered in order: the batch of 500 (40 ms) first, though the batch of 5 would have finished sooner.
    assert first[1]["x-kairos-queue-ms"] and second[1]["x-kairos-queue-ms"]
    rows = app[DISPATCHER].sink.frame().set_index("request_id")
    assert len(rows) == 3 and rows.loc["first", "finish_s"] <= rows.loc["second", "start_s"]


async def test_bad_bytes_and_oversized_bodies_get_aiohttps_answers(front):
    url, app, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v2/models/rm2/infer HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 12\r\n\r\n" + b"x" * 12)
    status, _, body = await read_response(reader)
    assert status == 400
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    status, _, _ = await read_response(reader)
    assert status == 400
    writer.close()
    limit = app[BODY_LIMIT]
    async with ClientSession() as s:
        async with s.post(url + "/v2/models/rm2/infer", data=b"{" + b" " * limit + b"}") as r:
            assert r.status == 413 and "too large" in (await r.json())["error"]
    async with ClientSession() as s:  # a fresh connection: the one above now belongs to aiohttp
        async with s.post(url + "/v2/models/rm2/infer", data=b"{broken", headers={"X-Request-ID": "bad"}) as r:
            assert r.status == 400 and "Server" not in r.headers and "error" in await r.json()
    assert len(app[DISPATCHER].sink) == 0  # refused before either became a query, as on the aiohttp route


async def test_an_idle_keep_alive_connection_is_closed(front, monkeypatch):
    monkeypatch.setattr(front_module, "KEEPALIVE_S", 0.2)
    _, _, port = front
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(infer_bytes(5))
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the front after 0.2 s idle
    writer.close()
