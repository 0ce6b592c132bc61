"""The dispatcher's lean front: the infer route served without aiohttp's server machinery, everything else by aiohttp.

At a few hundred queries per second aiohttp's server side (request and response objects, routing, middlewares, its
stream writer) was about a third of the dispatcher's CPU. The front is an ``asyncio.Protocol`` on the dispatcher's
port that serves the one hot request shape itself: ``POST /v2/models/{name}/infer`` over HTTP/1.1 with a
``Content-Length`` body and no ``Content-Encoding``, ``Transfer-Encoding``, ``Expect`` or ``Upgrade``. It reads the
head with a strict parser, runs the same ``proxy.answer_infer`` as the aiohttp route and writes the answer in one
send. Any other request, anything it does not parse, and any body above the app's limit is not judged here: the
connection, with every byte it has not answered, is handed to aiohttp's own protocol for good
(``transport.set_protocol``), which answers as the plain aiohttp server would (routes, 4xx, 413, chunked bodies,
encodings). So the front adds a fast path and never a second opinion on bad input.

Requests on one connection are answered in order (pipelined ones wait in the buffer; reading pauses when it holds
more than ``MAX_BUFFER`` bytes). A client that goes away does not cancel its query (as with aiohttp): it is served
and recorded, and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import traceback
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict

from servers import v2, v2_http
from servers.dispatcher.proxy import Answer, answer_infer, error_answer
from servers.dispatcher.state import DISPATCHER, Dispatcher

MAX_HEAD = 16 << 10  # a head this long is not the hot path's: aiohttp decides (and refuses above its own limit)
MAX_BUFFER = 1 << 20  # unanswered bytes held before reading pauses
KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this long (aiohttp's default)
PREFIX, SUFFIX = b"/v2/models/", b"/infer"
NOT_OURS = ("transfer-encoding", "content-encoding", "expect", "upgrade")
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # a header name's bytes
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class FrontProtocol(asyncio.Protocol):
    """One client connection: lean infer requests answered here, the connection handed to aiohttp otherwise."""

    def __init__(self, front: Front):
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a request of this connection is being answered
        self.paused = False
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        """Register the connection (so a stopping site can close it)."""
        self.transport = transport
        self.front.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_idle()

    def _arm_idle(self) -> None:
        self.idle_timer = asyncio.get_running_loop().call_later(KEEPALIVE_S, self.close_if_idle)

    def connection_lost(self, exc):
        """Forget the connection; a request still being answered finishes and is recorded."""
        self.closed = True
        self.front.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data):
        """Buffer, and answer what is complete unless a request is already being answered."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.buf += data
        if self.busy:
            if len(self.buf) > MAX_BUFFER and not self.paused:
                self.transport.pause_reading()
                self.paused = True
            return
        self._next()

    def _next(self) -> None:
        """Start the next buffered request, or hand the connection to aiohttp if it is not a lean one."""
        buf = self.buf
        if self.front.closing:  # the site is stopping: no new request starts here
            self.transport.close()
            return
        if not buf:
            self._arm_idle()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._handoff()
            return
        parsed = parse_head(bytes(buf[:end]))
        if parsed is None:
            self._handoff()
            return
        name, headers, length, keep_alive = parsed
        if length > self.front.limit_bytes:
            self._handoff()
            return
        start = end + 4
        if len(buf) < start + length:
            return  # the body is still coming
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._answer(name, body, headers, keep_alive))
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    async def _answer(self, name: str, body: bytes, headers: CIMultiDict, keep_alive: bool) -> None:
        d = self.front.dispatcher
        try:
            a = await answer_infer(d, name, body, headers)
        except v2.V2Error as exc:
            a = error_answer(exc.status, exc.message)
        except Exception as exc:  # a bug: say so in JSON as the aiohttp route's middleware does
            traceback.print_exc(file=sys.stderr)
            a = error_answer(500, f"internal error: {type(exc).__name__}: {exc}")
        if self.closed:
            return
        self.transport.write(render(a, keep_alive))
        if not keep_alive:
            self.transport.close()
            return
        self.busy = False
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        self._next()

    def _handoff(self) -> None:
        """Give the connection, and every byte not yet answered, to aiohttp's protocol for the rest of its life."""
        proto = self.front.fallback()
        transport, data = self.transport, bytes(self.buf)
        self.front.connections.discard(self)
        self.buf = bytearray()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self.paused:
            transport.resume_reading()
        if data:
            proto.data_received(data)

    def close_if_idle(self) -> None:
        """Close the connection unless a request is being answered (then it closes after its answer)."""
        if not self.busy and not self.closed:
            self.transport.close()


def parse_head(head: bytes) -> tuple[str, CIMultiDict, int, bool] | None:
    """(model name, headers, body length, keep-alive) of a lean infer request's head; None for anything else."""
    request_line, _, rest = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    path = parts[1]
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    name = path[len(PREFIX) : -len(SUFFIX)]
    if not name or not name.isascii() or b"/" in name or b"%" in name or b"?" in name or b"#" in name:
        return None
    # No folded lines, no space before the colon, names of token characters only, no NUL and no CR or LF but as
    # line ends: strictness here only sends the odd request to aiohttp's parser, which has the last word.
    n_lines = rest.count(b"\r\n")
    if b"\x00" in rest or rest.count(b"\r") != n_lines or rest.count(b"\n") != n_lines:
        return None
    fields = []
    for line in rest.decode("latin-1").split("\r\n") if rest else ():
        key, sep, value = line.partition(":")
        if not sep or not key or key.encode("latin-1").translate(None, TOKEN):
            return None
        fields.append((key, value.strip(" \t")))
    headers = CIMultiDict(fields)
    if any(h in headers for h in NOT_OURS):
        return None
    lengths = headers.getall("Content-Length", [])
    if len(lengths) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
        return None
    connection = headers.get("Connection", "").lower()
    return name.decode("ascii"), headers, int(lengths[0]), connection != "close"


def render(a: Answer, keep_alive: bool) -> bytes:
    """The HTTP/1.1 response bytes of an answer (one send)."""
    head = [b"HTTP/1.1 %d %s" % (a.status, REASONS.get(a.status, b"Unknown"))]
    for k, v in a.headers.items():
        head.append(b"%s: %s" % (k.encode("latin-1"), str(v).encode("latin-1")))
    head.append(b"Content-Length: %d" % len(a.body))
    if not keep_alive:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + a.body


class Front:
    """What every connection of one listening socket shares: the dispatcher, aiohttp's protocol factory, the limit."""

    def __init__(self, dispatcher: Dispatcher, fallback: Callable[[], asyncio.Protocol], limit_bytes: int):
        self.dispatcher = dispatcher
        self.fallback = fallback
        self.limit_bytes = limit_bytes
        self.connections: set[FrontProtocol] = set()
        self.tasks: set[asyncio.Task] = set()
        self.closing = False

    def protocol(self) -> FrontProtocol:
        """The protocol factory for ``loop.create_server``."""
        return FrontProtocol(self)

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections; let requests being answered finish for up to ``timeout_s``, then cancel them."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.tasks:
            _, late = await asyncio.wait(list(self.tasks), timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for conn in list(self.connections):
            conn.transport.close()


class FrontSite(web.SockSite):
    """A ``SockSite`` whose connections start on the lean front (``create_app``'s app; aiohttp's server behind it)."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, *, shutdown_timeout_s: float = 60.0, **kwargs):
        super().__init__(runner, sock, **kwargs)
        self.front: Front | None = None
        self.shutdown_timeout_s = shutdown_timeout_s  # as long as aiohttp's runner waits for its own handlers

    async def start(self) -> None:
        """Listen with the front's protocol, aiohttp's as the fallback."""
        await web.BaseSite.start(self)
        server = self._runner.server
        app = self._runner.app
        self.front = Front(app[DISPATCHER], server, app[v2_http.BODY_LIMIT])
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.front.protocol, sock=self._sock, backlog=self._backlog)

    async def stop(self) -> None:
        """Stop listening, then wind down the front's connections as aiohttp does its own."""
        await super().stop()
        if self.front is not None:
            await self.front.shutdown(self.shutdown_timeout_s)
