"""Request and reply paths after a wait: how long a request takes to reach the server's handler and its reply to be
read, against how long the server held it (or the client waited before sending), on this host.

``kairos profile`` subtracts the transport from every query's round trip. Priced back to back, an empty request
misses that on a host whose cores idle between requests both ways get slower the longer they idle. This script
shows it and separates the layers. A server process holds each request H ms (asyncio sleep, then a busy wait for
its last 1.5 ms, so the server itself is awake when it replies) and stamps ``time.perf_counter()`` (one clock across
processes on Linux) when the request reaches it and when it builds the reply; the client stamps its send and the
moment it has read the reply. Paths:

- ``socket/socket``: a plain TCP server and client (the kernel and the host alone);
- ``aiohttp/socket``: an aiohttp server, as every instance and the dispatcher are, with a plain socket client;
- ``aiohttp/http.client``: the same server with ``http.client``, as ``kairos profile`` uses;
- ``... client waits``: the aiohttp server answers at once, and the ``http.client`` client sleeps H ms before each
  request instead: what ``kairos profile`` times to price the transport after a wait.

Columns (medians, ms): ``in`` send to the server's stamp; ``back`` reply built to read; ``outside`` the round trip
less the time between the server's two stamps.

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


def _hold(hold_ms: float, t0: float) -> None:
    while (time.perf_counter() - t0) * 1e3 < hold_ms:
        pass


def _stamps(t_in: float) -> str:
    return f"{t_in!r} {time.perf_counter()!r}"


def _aiohttp_server(port_q) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        t_in = time.perf_counter()
        hold_ms = float(request.query.get("ms", "0"))
        await asyncio.sleep(max(0.0, hold_ms - SPIN_MS) / 1e3)
        _hold(hold_ms, t_in)
        return web.Response(body=b"{}", content_type="application/json", headers={"X-Stamps": _stamps(t_in)})

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
        t_in = time.perf_counter()
        head, buf = buf.split(b"\r\n\r\n", 1)
        hold_ms = float(head.split(b"ms=", 1)[1].split(b" ", 1)[0])
        time.sleep(max(0.0, hold_ms - SPIN_MS) / 1e3)
        _hold(hold_ms, t_in)
        stamps = _stamps(t_in).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Stamps: " + stamps + b"\r\n\r\n{}")


def _timed(t0: float, stamps: str, t1: float) -> tuple[float, float, float]:
    """(in, back, outside) in ms from the client's send and read times and the server's two stamps."""
    t_in, t_out = (float(x) for x in stamps.split())
    return (t_in - t0) * 1e3, (t1 - t_out) * 1e3, ((t1 - t0) - (t_out - t_in)) * 1e3


def _raw(sock: socket.socket, hold_ms: float) -> tuple[float, float, float]:
    """One request on a plain socket."""
    t0 = time.perf_counter()
    sock.sendall(f"GET /hold?ms={hold_ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while not (b"\r\n\r\n" in buf and buf.endswith(b"{}")):
        buf += sock.recv(65536)
    t1 = time.perf_counter()
    return _timed(t0, buf.split(b"X-Stamps: ", 1)[1].split(b"\r\n", 1)[0].decode(), t1)


def _http_client(conn: http.client.HTTPConnection, hold_ms: float, wait_ms: float = 0.0) -> tuple[float, float, float]:
    """The same with ``http.client``, after sleeping ``wait_ms``."""
    if wait_ms:
        time.sleep(wait_ms / 1e3)
    t0 = time.perf_counter()
    conn.request("GET", f"/hold?ms={hold_ms}")
    resp = conn.getresponse()
    resp.read()
    t1 = time.perf_counter()
    return _timed(t0, resp.getheader("X-Stamps"), t1)


@dataclass(frozen=True)
class PathTiming:
    """Medians over the counted requests for one (path, hold or client wait), milliseconds."""

    path: str
    hold_ms: float
    in_ms: float
    back_ms: float
    outside_ms: float


PATHS = ("socket/socket", "aiohttp/socket", "aiohttp/http.client", "aiohttp/http.client, client waits")


def measure(holds_ms: tuple[float, ...], samples: int, warmup: int = 50) -> list[PathTiming]:
    """One PathTiming per path and hold, requests sent one at a time on a kept-alive connection."""
    ctx = mp.get_context("spawn")
    rows = []
    for path in PATHS:
        port_q = ctx.Queue()
        server = _socket_server if path.startswith("socket") else _aiohttp_server
        proc = ctx.Process(target=server, args=(port_q,), daemon=True)
        proc.start()
        try:
            port = port_q.get(timeout=30)
            if "http.client" in path:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.connect()
                sock = conn.sock
                if path.endswith("client waits"):
                    send = lambda h, c=conn: _http_client(c, 0.0, h)  # noqa: E731
                else:
                    send = lambda h, c=conn: _http_client(c, h)  # noqa: E731
            else:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                send = lambda h, s=sock: _raw(s, h)  # noqa: E731
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(warmup):
                send(0.0)
            for hold in holds_ms:
                medians = np.median(np.array([send(hold) for _ in range(samples)]), axis=0)
                rows.append(PathTiming(path, hold, *(float(m) for m in medians)))
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
    print(f"# {platform.machine()}, {mp.cpu_count()} CPUs, {args.samples} requests per row, one at a time; medians")
    print(f"{'path':<36} {'hold/wait ms':>12} {'in':>7} {'back':>7} {'outside':>8}")
    for r in rows:
        print(f"{r.path:<36} {r.hold_ms:12.1f} {r.in_ms:7.3f} {r.back_ms:7.3f} {r.outside_ms:8.3f}")


if __name__ == "__main__":
    main()
