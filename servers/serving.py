"""Run one server app in this process: bind, print the READY line, serve until told to stop.

A server that has bound its port prints one line ``READY {"url": ..., "port": ..., "pid": ..., ...}`` on stdout (so
port 0 is usable: the caller reads the actual port), then serves until SIGINT/SIGTERM or, with ``watch_stdin``, until
its stdin closes (a pool's children use it so they never outlive the parent). The CLI and the child-process entry
point (``servers.launch``) both serve through here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from harness.core.errors import InputError
from harness.core.gc_freeze import frozen_gc


@dataclass(frozen=True)
class Listen:
    """Where and how a server listens: address, port (0: any free one), event loop, whether stdin EOF stops it."""

    host: str = "127.0.0.1"
    port: int = 0
    loop: str = "auto"
    watch_stdin: bool = False


@dataclass(frozen=True)
class ServerKind:
    """A kind of server a process can run: its frozen config class, its app factory, its READY-line facts."""

    name: str
    config: type
    create_app: Callable[..., web.Application]
    describe: Callable[[object], dict]
    # asyncio, not uvloop, where timer precision matters more than per-request cost (the emulated instance).
    default_loop: str = "auto"
    # The listening site's class: aiohttp's SockSite, or one that puts a lean front before it (the dispatcher).
    site: type[web.SockSite] = web.SockSite


READY_PREFIX = "READY "


def print_ready(info: dict) -> None:
    """Print the one ``READY {json}`` line callers wait for."""
    print(READY_PREFIX + json.dumps(info, sort_keys=True), flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin reaches EOF (raw fd reads: no buffered-reader lock held at interpreter exit)."""
    fd = sys.stdin.fileno()

    def readable():
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
    except (OSError, ValueError, PermissionError):  # not pollable (a regular file): a thread waits instead
        os.set_blocking(fd, True)

        def wait_eof():
            try:
                while os.read(fd, 65536):
                    pass
            except OSError:
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_eof, name="stdin-watch", daemon=True).start()


async def serve_async(
    app: web.Application, listen: Listen, info: dict, site_class: type[web.SockSite] = web.SockSite
) -> None:
    """Start ``app`` (running its startup), bind, print READY with the actual URL, serve until told to stop."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    host = listen.host
    try:
        sock = _bind(host, listen.port)
        site = site_class(runner, sock)
        await site.start()
        actual = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if listen.watch_stdin:
            _watch_stdin(loop, stop)
        print_ready({**info, "url": f"http://{shown}:{actual}", "host": host, "port": actual, "pid": os.getpid()})
        with frozen_gc():  # startup's objects (libraries, models, profiles) are never scanned while serving
            await stop.wait()
    finally:
        await runner.cleanup()


LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str):
    """The event-loop constructor for ``name``: ``uvloop``, ``asyncio``, or ``auto`` (uvloop when installed)."""
    if name not in LOOPS:
        raise InputError(f"{name!r}: expected auto, uvloop or asyncio", field="loop")
    if name == "asyncio":
        return None
    try:  # an optional dependency (no wheels on Windows): imported only when asked for
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise InputError("uvloop: uvloop is not installed (pip install uvloop)", field="loop") from None
        return None
    return uvloop.new_event_loop


def serve(kind: ServerKind, config, listen: Listen = Listen()) -> int:
    """Build ``kind``'s app from ``config`` and serve it on the chosen event loop (blocking); returns the exit code."""
    factory = loop_factory(listen.loop)
    app = kind.create_app(config)  # bad input (an unknown type, a missing profile) fails before binding
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_async(app, listen, {"kind": kind.name, **kind.describe(config)}, kind.site))
    return 0
