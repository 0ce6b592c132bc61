"""A userspace delay line: TCP relays that hold every byte sent to a host for a fixed time, where netem is missing.

The multi-host runs (``harness/live/netns.py``) put a netem delay on the path into the pool. Kernels built without
``CONFIG_NET_SCH_NETEM`` (this project's development VM among them) cannot, so a host can instead run one relay per
server port: the relay listens on the host's own address, each server on loopback, and every chunk of bytes that
arrives for a server is written on to it ``delay_ms`` later, in order; answers go back at once, as with netem on the
path into the host. What differs from netem: the relay accepts a connection at once (netem also delays the SYN, so
a TCP connect takes the delay too), the delay applies per chunk read rather than per packet, and its timer is an
event loop's (a jitter of tens of microseconds idle, milliseconds on a loaded host: ``RelayStats`` records how late
each chunk went out), and it has no flow control of its own (a server that stops reading lets the relay buffer what
the client sends, as a test tool may). Run it inside the host:

    python -m harness.live.delay_relay --delay-ms 5 10.77.0.1:9001=127.0.0.1:9001 10.77.0.1:9002=127.0.0.1:9002

It prints one ``READY {json}`` line once every listener is up, and stops on SIGTERM or SIGINT with its late-chunk
figures on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import deque
from dataclasses import dataclass, field

from harness.core.errors import InputError


@dataclass(frozen=True)
class Route:
    """One listener: connections to ``listen`` are relayed to ``target``."""

    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    @classmethod
    def parse(cls, text: str) -> Route:
        """``HOST:PORT=HOST:PORT`` (listen = target)."""
        try:
            listen, target = text.split("=")
            lh, lp = listen.rsplit(":", 1)
            th, tp = target.rsplit(":", 1)
            return cls(lh, int(lp), th, int(tp))
        except ValueError:
            raise InputError(f"{text!r}: expected LISTEN_HOST:PORT=TARGET_HOST:PORT", field="route") from None


LATE_BUCKET_MS = 0.05  # the resolution of the late-time median; a histogram keeps a long run's memory flat


@dataclass
class RelayStats:
    """How late the delayed chunks went out (ms past their due time) and how many bytes were held."""

    chunks: int = 0
    bytes: int = 0
    late_counts: dict[int, int] = field(default_factory=dict)  # late time in LATE_BUCKET_MS buckets -> chunks
    late_max_ms: float = 0.0

    def add_late(self, late_ms: float) -> None:
        """Count one chunk that went out ``late_ms`` after its due time."""
        k = int(late_ms / LATE_BUCKET_MS)
        self.late_counts[k] = self.late_counts.get(k, 0) + 1
        self.late_max_ms = max(self.late_max_ms, late_ms)

    def summary(self) -> dict:
        """Counts and the late time's median (to the bucket's upper edge) and maximum."""
        n, seen, p50 = sum(self.late_counts.values()), 0, 0.0
        for k in sorted(self.late_counts):
            seen += self.late_counts[k]
            if 2 * seen >= n:
                p50 = min((k + 1) * LATE_BUCKET_MS, self.late_max_ms)
                break
        return {"chunks": self.chunks, "bytes": self.bytes, "late_p50_ms": p50, "late_max_ms": self.late_max_ms}


_EOF, _CLOSE = "eof", "close"  # markers in a byte stream: its sender half-closed, or closed


class _Half(asyncio.Protocol):
    """One side of a relayed connection; bytes it receives go to its peer's transport (delayed or not)."""

    def __init__(self, delay_s: float, stats: RelayStats | None):
        self.delay_s = delay_s  # 0 for the answers' direction
        self.stats = stats
        self.peer: _Half | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes | str] = []  # what came before the peer's connection was up
        self.held: deque[tuple[float, bytes | str]] = deque()  # (due, chunk, or _EOF / _CLOSE)
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self._pass(data)

    def eof_received(self):
        self._pass(_EOF)
        return True  # keep our side open for the answer still coming

    def connection_lost(self, exc):
        # What is still held goes out first, as packets already on the wire do when their sender closes.
        self._pass(_CLOSE)

    def _pass(self, data: bytes | str) -> None:
        if self.delay_s <= 0.0:
            self._write(data)
            return
        # One timer per connection and a FIFO, rather than a timer per chunk: timers due at the same instant need not
        # run in the order they were made, and the byte stream must keep its order.
        self.held.append((self.loop.time() + self.delay_s, data))
        if self.stats is not None and isinstance(data, bytes):
            self.stats.chunks += 1
            self.stats.bytes += len(data)
        if self.timer is None:
            self.timer = self.loop.call_at(self.held[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.held and self.held[0][0] <= now:
            due, data = self.held.popleft()
            if self.stats is not None and isinstance(data, bytes):
                self.stats.add_late((now - due) * 1000.0)
            self._write(data)
        if self.held:
            self.timer = self.loop.call_at(self.held[0][0], self._flush)

    def _write(self, data: bytes | str) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
            return
        if peer.transport.is_closing():
            return
        if data is _CLOSE:
            peer.transport.close()  # after the bytes it buffered
        elif data is _EOF:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        else:
            peer.transport.write(data)


class DelayRelay:
    """Relays for ``routes``: bytes toward each target wait ``delay_ms``; ``start``/``stop`` inside a running loop."""

    def __init__(self, routes: list[Route], delay_ms: float):
        if not 0.0 <= delay_ms < 10_000.0:
            raise InputError(f"{delay_ms}: a delay in [0, 10000) ms", field="delay_ms")
        self.routes = routes
        self.delay_s = delay_ms / 1000.0
        self.stats = RelayStats()
        self.servers: list[asyncio.AbstractServer] = []
        self._connecting: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    async def start(self) -> None:
        """Listen on every route's address."""
        loop = asyncio.get_running_loop()
        for r in self.routes:
            self.servers.append(
                await loop.create_server(lambda r=r: self._inbound(r), r.listen_host, r.listen_port, reuse_address=True)
            )

    def _inbound(self, route: Route) -> _Half:
        near = _Half(self.delay_s, self.stats)  # the client's side: what it sends is held
        task = asyncio.get_running_loop().create_task(self._connect(near, route))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return near

    async def _connect(self, near: _Half, route: Route) -> None:
        far = _Half(0.0, None)
        far.peer = near  # before it connects: a server may answer (or speak first) before create_connection returns
        try:
            await asyncio.get_running_loop().create_connection(lambda: far, route.target_host, route.target_port)
        except OSError:
            if near.transport is not None:
                near.transport.abort()  # the client sees the connection reset, as from a host with nothing there
            return
        near.peer = far
        early, near.early = near.early, []
        for data in early:
            near._write(data)

    def ports(self) -> list[int]:
        """The port each route listens on (a route given port 0 gets one from the system)."""
        return [s.sockets[0].getsockname()[1] for s in self.servers]

    async def stop(self) -> None:
        """Close the listeners."""
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()


async def _main(routes: list[Route], delay_ms: float) -> dict:
    relay = DelayRelay(routes, delay_ms)
    await relay.start()
    ports = [
        {"listen": f"{r.listen_host}:{port}", "target": f"{r.target_host}:{r.target_port}"}
        for r, port in zip(routes, relay.ports())
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before READY: whoever reads it may stop us at once
        loop.add_signal_handler(sig, stop.set)
    print("READY " + json.dumps({"delay_ms": delay_ms, "routes": ports}), flush=True)
    await stop.wait()
    await relay.stop()
    return relay.stats.summary()


def main(argv: list[str] | None = None) -> int:
    """Run the relays until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, required=True, help="how long every byte toward a target waits")
    p.add_argument("routes", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = p.parse_args(argv)
    try:
        routes = [Route.parse(r) for r in args.routes]
        summary = asyncio.run(_main(routes, args.delay_ms))
    except (InputError, OSError) as exc:
        print(f"delay_relay: {exc}", file=sys.stderr)
        return 2
    print("delay_relay: " + json.dumps(summary), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
