"""Faults on demand in a V2 server: latency spikes, stalls, error answers and exits, at a set time or when asked.

Kinds, each over a window of ``duration_s`` starting ``at_s`` after it is armed:

- ``spike``: each query's service takes ``extra_ms`` longer (inside the instance's service, so its queue grows as a
  slowed machine's would);
- ``stall``: the server answers nothing (every route but ``/admin``); requests wait and then proceed;
- ``error``: inference answers ``status`` (500) with a JSON error, as a broken backend would; health stays ready;
- ``exit``: the process ends at once with exit code 1 (``os._exit``: no cleanup, as a crash).

A server arms the faults of its config when it starts serving (``at_s`` counts from then). With ``accept_faults``
it also takes ``POST /admin/fault`` (one fault as JSON, ``at_s`` counting from the request) and lists what it has
armed on ``GET /admin/faults``; these answer only on loopback or to ``Authorization: Bearer <admin_token>``. Off by
default: a server that can be told to exit must not be told so by anyone who can reach it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import orjson
from aiohttp import web

from harness.core.errors import InputError
from servers import v2_http
from servers.admin_auth import admin_allowed

FAULT_KINDS = ("spike", "stall", "error", "exit")


@dataclass(frozen=True)
class Fault:
    """One fault: its kind, when (seconds after arming), for how long, and its size (spike) or status (error)."""

    kind: str
    at_s: float = 0.0
    duration_s: float = 0.0
    extra_ms: float = 0.0
    status: int = 500

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise InputError(f"kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}", field="fault")
        for name in ("at_s", "duration_s", "extra_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e6:
                raise InputError(f"{value!r}: expected a number from 0 to 1e6", field=name)
        if self.kind in ("spike", "stall", "error") and self.duration_s <= 0:
            raise InputError(f"a {self.kind} needs a duration above 0 (KIND@AT:DURATION)", field="fault")
        if self.kind == "spike" and self.extra_ms <= 0:
            raise InputError("a spike needs extra_ms above 0", field="fault")
        if not isinstance(self.status, int) or not 500 <= self.status <= 599:
            raise InputError(f"{self.status!r}: an injected error is a 5xx status", field="status")

    @classmethod
    def from_json(cls, doc) -> Fault:
        """A fault from a JSON object (unknown keys are an error)."""
        if not isinstance(doc, dict):
            raise InputError("expected a JSON object", field="fault")
        unknown = sorted(set(doc) - {"kind", "at_s", "duration_s", "extra_ms", "status"})
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(map(str, unknown))}", field="fault")
        if "kind" not in doc:
            raise InputError("missing", field="kind")
        return cls(**doc)


def parse_seconds(text: str, field_name: str) -> float:
    """``30s``, ``500ms``, ``2m`` or a bare number of seconds."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], factor
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise InputError(f"{text!r}: expected a time such as 30s, 500ms or 2m", field=field_name) from None
    if not 0 <= value < 1e6:
        raise InputError(f"{text!r}: out of range", field=field_name)
    return value


def parse_fault(text: str, field_name: str = "fault") -> Fault:
    """``KIND@AT[:DURATION[:SIZE]]``: e.g. ``spike@10s:5s:200ms``, ``stall@45s:5s``, ``error@5s:10s:503``, ``exit@30s``.

    SIZE is the extra service time of a spike, or the status of an error.
    """
    kind, at, *rest = [*text.strip().split("@", 1), ""][:2] if "@" in text else (text.strip(), "0")
    parts = at.split(":") if at else ["0"]
    if len(parts) > 3:
        raise InputError(f"{text!r}: expected KIND@AT[:DURATION[:SIZE]]", field=field_name)
    at_s = parse_seconds(parts[0], field_name)
    duration_s = parse_seconds(parts[1], field_name) if len(parts) > 1 else 0.0
    extra_ms, status = 0.0, 500
    if len(parts) > 2:
        if kind == "spike":
            extra_ms = parse_seconds(parts[2] if parts[2][-1:].isalpha() else parts[2] + "ms", field_name) * 1e3
        elif kind == "error" and parts[2].isdigit():
            status = int(parts[2])
        else:
            raise InputError(f"{text!r}: only a spike (ms) or an error (status) takes a size", field=field_name)
    if kind == "spike" and not extra_ms:
        extra_ms = 100.0  # a spike without a size: +100 ms a query
    try:
        return Fault(kind, at_s, duration_s, extra_ms, status)
    except InputError as exc:
        raise InputError(f"{text!r}: {exc.message}", field=field_name) from None


@dataclass
class FaultState:
    """The faults armed on one server, as windows on the event loop's clock, and the log of what fired."""

    windows: list[tuple[Fault, float, float]] = field(default_factory=list)
    armed: list[dict] = field(default_factory=list)

    def arm(self, fault: Fault, loop: asyncio.AbstractEventLoop) -> dict:
        """Arm ``fault`` from now; returns its log entry (epoch times)."""
        now = loop.time()
        start = now + fault.at_s
        entry = {**asdict(fault), "start_epoch": time.time() + fault.at_s}
        entry["end_epoch"] = entry["start_epoch"] + fault.duration_s
        if fault.kind == "exit":
            loop.call_at(start, _exit_now)
        else:
            self.windows.append((fault, start, start + fault.duration_s))
        self.armed.append(entry)
        return entry

    def _active(self, kind: str, now: float):
        return [f for f, start, end in self.windows if f.kind == kind and start <= now < end]

    def stall_until(self, now: float) -> float:
        """The loop time until which the server stalls (``now`` when it does not)."""
        ends = [end for f, start, end in self.windows if f.kind == "stall" and start <= now < end]
        return max(ends, default=now)

    def error_status(self, now: float) -> int | None:
        """The status an injected error answers now, if one is in force."""
        active = self._active("error", now)
        return active[-1].status if active else None

    def extra_s(self, now: float) -> float:
        """Extra service time (s) a query starting now takes under the spikes in force."""
        return sum(f.extra_ms for f in self._active("spike", now)) / 1e3


def _exit_now() -> None:
    print("fault: exit (injected)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # a crash, not a shutdown: no cleanup, connections reset mid-answer


FAULTS = web.AppKey("faults", FaultState)
FAULT_TOKEN = web.AppKey("fault_admin_token", str)


@web.middleware
async def fault_middleware(request: web.Request, handler):
    """Hold requests through a stall; answer injected errors on inference."""
    if request.path.startswith("/admin"):
        return await handler(request)
    state = request.app[FAULTS]
    loop = asyncio.get_running_loop()
    until = state.stall_until(loop.time())
    if until > loop.time():
        await asyncio.sleep(until - loop.time())
    if request.path.endswith("/infer"):
        status = state.error_status(loop.time())
        if status is not None:
            return v2_http.json_error(status, "injected fault: error")
    return await handler(request)


async def post_fault(request: web.Request) -> web.Response:
    """``POST /admin/fault``: arm one fault now (its ``at_s`` counts from this request)."""
    if not admin_allowed(request, request.app[FAULT_TOKEN]):
        return v2_http.json_error(403, "admin endpoints answer only on loopback or with the admin token")
    try:
        doc = orjson.loads(await request.read())
        fault = Fault.from_json(doc)
    except orjson.JSONDecodeError as exc:
        return v2_http.json_error(400, f"fault: not JSON ({exc})")
    except (InputError, TypeError) as exc:
        return v2_http.json_error(400, f"fault: {exc}")
    return v2_http.json_response(request.app[FAULTS].arm(fault, asyncio.get_running_loop()))


async def get_faults(request: web.Request) -> web.Response:
    """``GET /admin/faults``: every fault armed so far, with its epoch window."""
    if not admin_allowed(request, request.app[FAULT_TOKEN]):
        return v2_http.json_error(403, "admin endpoints answer only on loopback or with the admin token")
    return v2_http.json_response({"faults": request.app[FAULTS].armed})


def install(app: web.Application, faults: tuple[Fault, ...], accept: bool, admin_token: str | None) -> FaultState:
    """Give ``app`` its fault state: the configured faults armed at startup, the admin routes when ``accept``."""
    state = FaultState()
    app[FAULTS] = state
    app[FAULT_TOKEN] = admin_token or ""
    if faults or accept:  # without either, no request pays for the middleware
        app.middlewares.append(fault_middleware)

    async def arm_configured(app: web.Application):
        loop = asyncio.get_running_loop()
        for fault in faults:
            state.arm(fault, loop)

    app.on_startup.append(arm_configured)
    if accept:
        app.router.add_post("/admin/fault", post_fault)
        app.router.add_get("/admin/faults", get_faults)
    return state
