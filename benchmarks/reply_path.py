"""Reply path after a wait: how long a reply takes from being built to being read, against how long the server held
the request, on this host.

``kairos profile`` subtracts an empty request's round trip from every query's. What an empty request does not
show is that the way back gets slower when the server held the request for milliseconds: each layer runs its part
of the reply colder. This script separates the layers. A server process holds each request H ms (asyncio sleep, then
a busy wait for its last 1.5 ms, so the server itself is awake when it replies), stamps ``time.perf_counter()`` (one
clock across processes on Linux) into the reply as it builds it, and the client stamps when it has read it:

- ``socket/socket``: a plain TCP server and client (the kernel and the host alone);
- ``aiohttp/socket``: an aiohttp server, as every instance and the dispatcher are, read by a plain socket;
- ``aiohttp/http.client``: the same read with ``http.client``, as ``kairos profile`` does.

Run: python benchmarks/reply_path.py [--hold-ms 0,2,5,10,20] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import platform
import socket
import time
from dataclasses import dataclass

import numpy as np

SPIN_MS = 1.5  # the server busy-waits the end of its hold, so that its own wake-up is not on the reply path
STAMP = b"X-Built: "


def _hold(hold_ms: float, t0: float) -> None:
    while (time.perf_counter() - t0) * 1e3 < hold_ms:
        pass


def _aiohttp_server(port_q) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        hold_ms = float(request.query.get("ms", "0"))
        await asyncio.sleep(max(0.0, hold_ms - SPIN_MS) / 1e3)
        _hold(hold_ms, t0)
        return web.Response(body=b"{}", content_type="application/json", headers={"X-Built": repr(time.perf_counter())})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/hold", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_q.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _socket_server(port_q) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_q.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        t0 = time.perf_counter()
        hold_ms = float(head.split(b"ms=", 1)[1].split(b" ", 1)[0])
        time.sleep(max(0.0, hold_ms - SPIN_MS) / 1e3)
        _hold(hold_ms, t0)
        stamp = repr(time.perf_counter()).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + STAMP + stamp + b"\r\n\r\n{}")


def _read_raw(sock: socket.socket, hold_ms: float) -> float:
    """Send one request on a plain socket; milliseconds from the reply's stamp to having read all of it."""
    sock.sendall(f"GET /hold?ms={hold_ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while not (b"\r\n\r\n" in buf and buf.endswith(b"{}")):
        buf += sock.recv(65536)
    t1 = time.perf_counter()
    return (t1 - float(buf.split(STAMP, 1)[1].split(b"\r\n", 1)[0])) * 1e3


def _read_http_client(conn: http.client.HTTPConnection, hold_ms: float) -> float:
    """The same with ``http.client``."""
    conn.request("GET", f"/hold?ms={hold_ms}")
    resp = conn.getresponse()
    resp.read()
    t1 = time.perf_counter()
    return (t1 - float(resp.getheader("X-Built"))) * 1e3


@dataclass(frozen=True)
class PathTiming:
    """Built-to-read milliseconds over the counted replies for one (path, hold)."""

    path: str
    hold_ms: float
    mean_ms: float
    median_ms: float


def measure(holds_ms: tuple[float, ...], samples: int, warmup: int = 50) -> list[PathTiming]:
    """One PathTiming per path and hold, requests sent one at a time on a kept-alive connection."""
    ctx = mp.get_context("spawn")
    rows = []
    for path, server in (
        ("socket/socket", _socket_server),
        ("aiohttp/socket", _aiohttp_server),
        ("aiohttp/http.client", _aiohttp_server),
    ):
        port_q = ctx.Queue()
        proc = ctx.Process(target=server, args=(port_q,), daemon=True)
        proc.start()
        try:
            port = port_q.get(timeout=30)
            if path.endswith("http.client"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.connect()
                sock, read = conn.sock, (lambda h, c=conn: _read_http_client(c, h))
            else:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                read = lambda h, s=sock: _read_raw(s, h)  # noqa: E731
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(warmup):
                read(0.0)
            for hold in holds_ms:
                xs = np.array([read(hold) for _ in range(samples)])
                rows.append(PathTiming(path, hold, float(xs.mean()), float(np.median(xs))))
            sock.close()
        finally:
            proc.kill()
            proc.join(5)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold-ms", default="0,2,5,10,20", help="how long the server holds each request (ms)")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args(argv)
    holds = tuple(float(x) for x in args.hold_ms.split(","))
    rows = measure(holds, args.samples)
    print(f"# {platform.machine()}, {mp.cpu_count()} CPUs, {args.samples} replies per row, one at a time")
    print(f"{'path':<20} {'hold ms':>8} {'built->read mean':>17} {'median':>8}")
    for r in rows:
        print(f"{r.path:<20} {r.hold_ms:8.1f} {r.mean_ms:17.3f} {r.median_ms:8.3f}")


if __name__ == "__main__":
    main()
