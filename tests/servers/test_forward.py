"""The dispatcher's forwarding client against real sockets: answers, reuse, stale connections, refusals, timeouts."""

import asyncio
import socket

import pytest
from aiohttp import web
from yarl import URL

from servers.dispatcher.forward import Forwarder, ForwardError


async def raw_server(handle):
    """A TCP server on a loopback port that runs ``handle(reader, writer)`` per connection; (server, url)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, URL(f"http://127.0.0.1:{port}/v2/models/m/infer")


async def test_forwards_body_and_headers_and_reuses_one_connection(aiohttp_server):
    seen = []

    async def infer(request):
        seen.append((request.path, request.headers["X-Request-ID"], await request.read(), request.transport))
        return web.Response(body=b"ok:" + await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    server = await aiohttp_server(app)
    fwd = Forwarder([server.make_url("/v2/models/m/infer")], timeout_s=5.0)
    for k in range(3):
        reply = await fwd.post(0, b"body%d" % k, {"X-Request-ID": f"r{k}", "Content-Type": "application/json"})
        assert reply.status == 200 and reply.body == b"ok:body%d" % k
        assert reply.headers["content-type"].startswith("application/json")
    assert [s[:3] for s in seen] == [("/v2/models/m/infer", f"r{k}", b"body%d" % k) for k in range(3)]
    assert len({id(s[3]) for s in seen}) == 1  # keep-alive: one connection served all three
    fwd.close()


async def test_a_chunked_answer_and_an_answer_ended_by_close_are_read_whole():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(4)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(4)
        writer.write(b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\nuntil-eof")
        await writer.drain()
        writer.close()

    server, url = await raw_server(handle)
    async with server:
        fwd = Forwarder([url], timeout_s=5.0)
        assert (await fwd.post(0, b"abcd", {})).body == b"abcde"
        reply = await fwd.post(0, b"abcd", {})
        assert (reply.status, reply.body) == (201, b"until-eof")


async def test_a_reused_connection_the_instance_closed_is_retried_once_on_a_fresh_one():
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        writer.close()  # keep-alive promised, then closed: the next request on it finds it gone

    server, url = await raw_server(handle)
    async with server:
        fwd = Forwarder([url], timeout_s=5.0)
        assert (await fwd.post(0, b"xx", {})).body == b"hi"
        await asyncio.sleep(0.05)
        assert (await fwd.post(0, b"xx", {})).body == b"hi"
        assert len(connections) == 2


async def test_refused_connections_timeouts_and_garbage_are_forward_errors():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = Forwarder([URL(f"http://127.0.0.1:{port}/x")], timeout_s=5.0)
    with pytest.raises(ForwardError) as refused:
        await fwd.post(0, b"", {})
    assert refused.value.refused

    async def silent(reader, writer):
        await asyncio.sleep(10)

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, url = await raw_server(silent)
    async with server:
        with pytest.raises(TimeoutError):
            await Forwarder([url], timeout_s=0.2).post(0, b"", {})
    server, url = await raw_server(garbage)
    async with server:
        with pytest.raises(ForwardError) as bad:
            await Forwarder([url], timeout_s=5.0).post(0, b"", {})
        assert not bad.value.refused and "malformed" in str(bad.value)
