"""An emulated instance: the model server's API and responses, with the service time sampled from a Profile.

Each query's service time is drawn (seeded Generator) from the profile's samples for (instance_type, model, bucket of
the batch) and awaited with ``asyncio.sleep``; at most ``concurrency`` queries are served at once (default 1, FIFO
by the semaphore). A query's clock starts when it arrives, before its body is read and decoded, so the total
request-to-response time stays at the sampled service time wherever the host can keep up. With one at a time, a
query that waited starts at its predecessor's due end, so queries run back to back as on the real machine however
busy the emulating host is. The process's own lateness after a due end (its timer's 1 ms rounding, the wake-up,
encoding the reply: about 1 ms on an idle 2-core VM) is learned per instance and slept off early, up to
``REPLY_EARLY_MAX_MS``, so replies leave at the due end on average. Outputs are correctly shaped zeros. Response
parameters: ``queue_ms``, ``compute_ms`` (from service start to wake-up, as measured), ``sampled_ms`` (the drawn
service time), ``batch_size`` and ``instance_type``. Faults (``servers.faults``) slow, stall, fail or end it on
demand; a spike lengthens the service itself.

Metadata and input validation come from the model's spec in ``servers.models`` (the ONNX file is never needed), through
the same ``servers.v2.validate_request`` as the model server: the same names, datatypes, shapes and id ranges, so an
emulated pool answers 400 to exactly the requests a real one would refuse. A profiled model without a spec accepts any
inputs that share a batch dimension and answers one ``output`` ``[B, 1]``.

Many instances can share one process (``EmulatedHostConfig``, kind ``emulated_host``): each keeps its own app, port,
sampler, queue and fault/admin endpoints, all on one event loop, so hundreds fit on a small machine. The process is
the unit of failure: a kill, or an injected ``exit``, ends all of its instances at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiohttp import web

from harness.core.errors import InputError
from harness.core.gc_freeze import frozen_gc
from harness.core.profiles import Profile
from servers import models, v2, v2_http
from servers.faults import Fault, FaultState, install

# serving's binder and stdin watch, shared rather than copied: a host must bind and stop exactly as one server does.
from servers.serving import Listen, ServerKind, _bind, _watch_stdin, loop_factory, print_ready

PLATFORM_EMULATED = "kairos_emulated"


@dataclass(frozen=True)
class EmulatedConfig:
    """One emulated instance: its type, model, profile file (None: the shipped one), seed and concurrency."""

    instance_type: str
    model: str = "rm2"
    profiles: Path | None = None
    seed: int = 0
    concurrency: int = 1
    client_max_size: int | None = None
    faults: tuple[Fault, ...] = ()
    accept_faults: bool = False
    admin_token: str | None = None

    def __post_init__(self):
        if self.concurrency < 1:
            raise InputError(f"{self.concurrency}: must be >= 1", field="concurrency")


def model_metadata(model: str) -> v2.ModelMetadata:
    """The V2 metadata of ``model``: its spec's if known, else a permissive one with an ``output [B, 1]``."""
    if model in models.MODEL_NAMES:
        return models.get_spec(model).metadata(PLATFORM_EMULATED)
    return v2.ModelMetadata(model, PLATFORM_EMULATED, inputs=(), outputs=(v2.TensorMeta("output", "FP32", (-1, 1)),))


@dataclass
class EmulatedBackend:
    """The V2 Backend of an emulated instance."""

    config: EmulatedConfig
    profile: Profile
    meta: v2.ModelMetadata
    rng: np.random.Generator
    limit: int
    faults: FaultState
    semaphore: asyncio.Semaphore | None = None
    served: int = field(default=0)
    server_name: str = "kairos-emulated-instance"
    free_at: float = 0.0  # perf_counter time at which the last query's service was due to end
    early_s: float = 0.0  # how early a service's sleep ends: the learned lateness of this process's replies

    def replied(self, late_s: float) -> None:
        """Learn from one reply that left ``late_s`` after its due end (negative: early)."""
        # An integral controller: its fixed point is mean lateness zero. Capped, so it takes out the process's own
        # overhead but not a host starved of CPU: that lateness stays for the live run's fidelity checks to see.
        self.early_s = min(REPLY_EARLY_MAX_MS / 1e3, max(0.0, self.early_s + REPLY_GAIN * late_s))

    def metadata(self, model: str) -> v2.ModelMetadata:
        """Metadata of the emulated model; 404 for any other."""
        if model != self.config.model:
            raise v2.V2Error(404, f"unknown model {model!r} (this instance serves {self.config.model!r})")
        return self.meta

    def ready(self, model: str | None = None) -> bool:
        """True once started."""
        return self.semaphore is not None

    def max_batch(self, model: str) -> int:
        """The profile's largest bucket for this (type, model)."""
        return self.limit

    async def infer(self, model: str, req: v2.InferRequest, batch_size: int):
        """Wait for the instance, sleep a sampled service time, answer zeros of the right shapes."""
        clock = _CLOCK.get()
        t0 = clock.arrived_s if clock is not None else time.perf_counter()
        async with self.semaphore:
            t1 = time.perf_counter()
            try:
                sampled = self.profile.sample_ms(self.config.instance_type, self.config.model, batch_size, self.rng)
            except InputError as exc:
                raise v2.V2Error(400, str(exc)) from None
            # Back to back, a query's service starts when its predecessor's was due to end, not when this process
            # got round to it: the emulated machine's cycle must not stretch with the emulating host's CPU load, nor
            # shrink when the predecessor's sleep ended early to send its reply on time.
            start = max(t0, self.free_at) if self.config.concurrency == 1 else t1
            end = start + sampled / 1e3 + self.faults.extra_s(asyncio.get_running_loop().time())
            self.free_at = end
            if clock is not None:
                clock.due_s = end
            delay = end - self.early_s - time.perf_counter()
            try:
                if delay > 0:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.free_at = time.perf_counter()  # withdrawn (the client went away): the machine is free now
                raise
            t2 = time.perf_counter()
        self.served += 1
        outputs = {
            t.name: np.zeros((batch_size, *t.shape[1:]), dtype=v2.numpy_dtype(t.datatype)) for t in self.meta.outputs
        }
        return outputs, {
            "queue_ms": (start - t0) * 1e3,
            "compute_ms": (t2 - start) * 1e3,
            "sampled_ms": sampled,
            "batch_size": batch_size,
            "instance_type": self.config.instance_type,
        }


BACKEND = web.AppKey("emulated_backend", EmulatedBackend)
REPLY_EARLY_MAX_MS = 2.0  # the most a service's sleep ends early to make up for the process's own reply lateness
REPLY_GAIN = 0.1  # the share of one reply's lateness the next sleep makes up: settles in ~20 queries, damps jitter


@dataclass
class _Clock:
    """One request's emulated clock: when it arrived, and when its service was due to end (None: not served)."""

    arrived_s: float
    due_s: float | None = None


_CLOCK: contextvars.ContextVar[_Clock | None] = contextvars.ContextVar("emulated_clock", default=None)


@web.middleware
async def stamp_arrival(request: web.Request, handler):
    """Note when a request arrived, before its body is read and decoded: the emulated service clock starts there,
    so the instance's own parsing is part of the sampled time instead of adding to it. Once the reply is built,
    tell the instance how late it is against the service's due end."""
    clock = _Clock(time.perf_counter())
    token = _CLOCK.set(clock)
    try:
        response = await handler(request)
    finally:
        _CLOCK.reset(token)  # the connection's next request, in the same task, gets its own
    if clock.due_s is not None:
        request.app[BACKEND].replied(time.perf_counter() - clock.due_s)
    return response


def create_app(config: EmulatedConfig, profile: Profile | None = None) -> web.Application:
    """The aiohttp app; the profile is read (or taken as given) now, so a bad type/model fails before serving."""
    profile = profile if profile is not None else Profile.load(config.profiles)
    table = profile.table(config.instance_type, config.model)  # InputError naming what exists
    meta = model_metadata(config.model)
    limit = table.max_batch
    body_limit = config.client_max_size or v2_http.max_body_bytes(meta, limit)
    app = v2_http.v2_app(body_limit)
    faults = install(app, config.faults, config.accept_faults, config.admin_token)
    app.middlewares.append(stamp_arrival)  # after the faults: a stalled request's clock starts when the stall ends
    backend = EmulatedBackend(config, profile, meta, np.random.default_rng(config.seed), limit, faults)
    app[BACKEND] = backend

    async def lifecycle(app: web.Application):
        backend.semaphore = asyncio.Semaphore(config.concurrency)
        yield
        backend.semaphore = None

    app.cleanup_ctx.append(lifecycle)
    v2_http.add_routes(app, BACKEND)
    return app


def describe(config: EmulatedConfig) -> dict:
    """The READY-line facts of one emulated instance."""
    return {"model": config.model, "instance_type": config.instance_type, "seed": config.seed}


KIND = ServerKind(
    "emulated",
    EmulatedConfig,
    create_app,
    describe=describe,
    # asyncio, not uvloop: libuv timers tick in whole milliseconds and may fire up to 1 ms early, too coarse to
    # emulate service times of a few ms; asyncio's sleeps are never early and late by well under 1 ms.
    default_loop="asyncio",
)


@dataclass(frozen=True)
class EmulatedHostConfig:
    """Several emulated instances in one process: one config each, and one port each (empty: any free ones)."""

    instances: tuple[EmulatedConfig, ...]
    ports: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.instances:
            raise InputError("must hold at least one instance", field="instances")
        if self.ports and len(self.ports) != len(self.instances):
            raise InputError(
                f"{len(self.ports)} port(s) for {len(self.instances)} instance(s): give one each, or none",
                field="ports",
            )


async def serve_host_async(apps: list[web.Application], config: EmulatedHostConfig, listen: Listen) -> None:
    """Start every app on its own port of ``listen.host``, print one READY line listing them, serve until stopped."""
    host = listen.host
    shown = f"[{host}]" if ":" in host else host
    ports = config.ports or (0,) * len(apps)
    runners: list[web.AppRunner] = []
    try:
        served = []
        for app, inst, port in zip(apps, config.instances, ports):
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()  # each app's own startup and cleanup_ctx: its semaphore, its faults armed
            runners.append(runner)
            sock = _bind(host, port)
            await web.SockSite(runner, sock).start()
            actual = sock.getsockname()[1]
            served.append({**describe(inst), "url": f"http://{shown}:{actual}", "port": actual})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if listen.watch_stdin:
            _watch_stdin(loop, stop)
        pid = os.getpid()
        print_ready({"kind": HOST_KIND.name, "url": served[0]["url"], "host": host, "pid": pid, "instances": served})
        with frozen_gc():
            await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def serve_host(config: EmulatedHostConfig, listen: Listen) -> int:
    """Serve every instance of ``config`` in this process, on one event loop (blocking); returns the exit code."""
    factory = loop_factory(listen.loop)
    profiles: dict[Path | None, Profile] = {}  # read each profile file once, not once per instance
    apps = []
    for inst in config.instances:  # bad input (an unknown type) fails before anything binds
        if inst.profiles not in profiles:
            profiles[inst.profiles] = Profile.load(inst.profiles)
        apps.append(create_app(inst, profiles[inst.profiles]))
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_host_async(apps, config, listen))
    return 0


@dataclass(frozen=True)
class HostKind:
    """A kind of server process that serves several apps itself: ``servers.launch`` calls its ``serve``."""

    name: str
    config: type
    serve: Callable[..., int]
    default_loop: str = "asyncio"


# asyncio for the same reason as one instance's KIND: its sleeps are never early.
HOST_KIND = HostKind("emulated_host", EmulatedHostConfig, serve_host, default_loop="asyncio")
