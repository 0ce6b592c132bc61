"""The dispatcher's forwarding client: keep-alive HTTP/1.1 connections to each instance, one request at a time on each.

The per-query forward is the dispatcher's hottest path, and ``aiohttp.ClientSession.post`` spends ~330 us of CPU on
it on the development VM (request objects, tracing hooks, timeouts, multidicts), against ~70 us for writing the
request bytes and parsing the answer with ``httptools`` (llhttp, the parser uvicorn uses) on an asyncio protocol
(benchmarks/dispatcher_ceiling.py). The path is fixed, the body is forwarded as bytes and only a few headers go
either way, so the lean client loses nothing the proxy needs. Health checks and metadata stay on aiohttp.

A connection that served a request before may have been closed by the instance meanwhile (keep-alive timeout): when
such a reused connection is lost before any byte of the answer came back, the request is sent again once on a fresh
connection, as browsers and HTTP client libraries do. Every other failure is the caller's to count.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass

import httptools
from yarl import URL


class ForwardError(Exception):
    """The forward failed at the transport level; ``refused``: the connection could not be made (nothing listens)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


@dataclass(slots=True)
class Reply:
    """An instance's answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Lost(Exception):
    """The connection closed before the answer was complete; ``answered``: some of it had arrived."""

    def __init__(self, message: str, answered: bool):
        super().__init__(message)
        self.answered = answered


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` sends a request and waits for its whole answer."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # has served a request before (so the instance may have timed it out meanwhile)
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._got_bytes = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the parser sees the end; else the answer ends at EOF

    # -- asyncio.Protocol -----------------------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Lost(f"malformed answer: {exc}", answered=True))
            self.close()

    def connection_lost(self, exc):
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and not self._framed:  # an answer delimited by the connection's end
                self._complete()
            else:
                self._fail(_Lost(f"connection lost: {exc or 'closed by the instance'}", answered=self._got_bytes))

    # -- httptools callbacks --------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes):
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self):
        self._headers_done = True
        h = self._headers
        self._framed = "content-length" in h or "chunked" in h.get("transfer-encoding", "").lower()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes):
        self._body.append(body)

    def on_message_complete(self):
        self._complete()

    # -- requests -------------------------------------------------------------------------------------------------
    def _complete(self):
        if self._waiter is not None and not self._waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._waiter.set_result(Reply(self._parser.get_status_code(), self._headers, body))

    def _fail(self, exc: Exception):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _time_out(self):
        self._fail(TimeoutError("no answer from the instance in time"))

    async def exchange(self, head: bytes, body: bytes, deadline: float) -> Reply:
        """Send one request (``head`` ends with the blank line) and wait for its answer until the loop time
        ``deadline`` (TimeoutError after it)."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._headers, self._body = {}, []
        self._got_bytes = self._headers_done = False
        self.used = True
        self.transport.writelines((head, body))
        # One timer handle rather than asyncio.timeout's context manager (a Timeout object, a reschedule and a task
        # cancellation): ~3% of the dispatcher's CPU per query on the development VM.
        timer = loop.call_at(deadline, self._time_out)
        try:
            return await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self):
        """Drop the connection now (its state is unknown after a timeout or a cancelled request)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Forwarder:
    """Keep-alive connections to each instance of the pool; ``post`` forwards one request and returns the answer."""

    def __init__(self, urls: list[URL], timeout_s: float):
        self.timeout_s = timeout_s
        self._targets: list[tuple[str, int, ssl.SSLContext | None]] = []
        self._heads: list[bytes] = []
        for url in urls:
            tls = ssl.create_default_context() if url.scheme == "https" else None
            self._targets.append((url.host, url.port, tls))
            # The request line and Host header never change per instance: encoded once.
            self._heads.append(f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n".encode("latin-1"))
        self._idle: list[deque[_Connection]] = [deque() for _ in urls]

    async def _connect(self, index: int) -> _Connection:
        host, port, tls = self._targets[index]
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port, ssl=tls)
        except OSError as exc:
            raise ForwardError(f"cannot connect to {host}:{port}: {exc}", refused=True) from None
        return conn

    async def _connect_by(self, index: int, deadline: float) -> _Connection:
        """A fresh connection, or TimeoutError at the loop time ``deadline``."""
        async with asyncio.timeout_at(deadline):  # connects are rare (keep-alive): the context manager's cost is fine
            return await self._connect(index)

    async def post(self, index: int, body: bytes, headers: dict[str, str]) -> Reply:
        """POST ``body`` to instance ``index``; ForwardError or TimeoutError when no answer comes back."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way forwards them unchanged.
        head = self._heads[index] + f"{extra}Content-Length: {len(body)}\r\n\r\n".encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s  # one deadline for the whole forward, connects included
        idle = self._idle[index]
        while idle:
            conn = idle.pop()
            if not conn.closed:
                break
        else:
            conn = await self._connect_by(index, deadline)
        reused = conn.used
        try:
            try:
                reply = await conn.exchange(head, body, deadline)
            except _Lost as exc:
                if not reused or exc.answered:
                    raise
                # A reused connection the instance had closed: send once more on a fresh one.
                conn = await self._connect_by(index, deadline)
                reply = await conn.exchange(head, body, deadline)
        except _Lost as exc:
            conn.close()
            raise ForwardError(str(exc)) from None
        except BaseException:  # timeout, cancellation: the answer may still come, so the connection is spent
            conn.close()
            raise
        if conn.keep_alive and not conn.closed:
            idle.append(conn)
        else:
            conn.close()
        return reply

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle:
            while idle:
                idle.pop().close()
