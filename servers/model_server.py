"""An ONNX Runtime model server speaking the V2 REST protocol (one InferenceSession per model).

Inference runs off the event loop on a dedicated ThreadPoolExecutor; at most ``concurrency`` inferences run at once
(an asyncio.Semaphore). Response parameters: ``queue_ms`` (waiting for the semaphore), ``compute_ms``
(``session.run``), ``batch_size`` and, when configured, ``instance_type``.

Requests are validated before ONNX Runtime sees them (``servers.v2.validate_request``: datatypes, shapes, embedding
ids within their tables), the same validation an emulated instance applies; a request's fault is a 400, never a 500.
Faults on demand (``servers.faults``) wrap it as they do the emulated instance: spikes, stalls, errors, exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiohttp import web

from harness.core.errors import InputError
from servers import v2, v2_http
from servers.cpu_affinity import format_cpus, pin_process
from servers.faults import Fault, FaultState, install
from servers.host_types import CUDA_PROVIDER
from servers.models import build_model, get_spec
from servers.serving import ServerKind

PROVIDERS = ("cpu", "cuda")


@dataclass(frozen=True)
class ModelServerConfig:
    """Which models to serve and how: provider, ORT intra-op threads, concurrent inferences, batch limit."""

    models: tuple[str, ...] = ("rm2",)
    model_dir: Path | None = None
    provider: str = "cpu"
    threads: int = 1
    spin: bool = False  # let ORT's intra-op threads spin-wait between runs (faster alone, costly on a shared host)
    concurrency: int = 1
    max_batch: int = 1000
    seed: int = 0
    instance_type: str | None = None
    client_max_size: int | None = None
    faults: tuple[Fault, ...] = ()
    accept_faults: bool = False
    admin_token: str | None = None
    # Cores this server's threads run on (servers.cpu_affinity), set before ONNX Runtime starts its own; () leaves
    # the process where its parent put it.
    cpus: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.models:
            raise InputError("none given", field="models")
        for m in self.models:
            get_spec(m)
        if self.provider not in PROVIDERS:
            raise InputError(f"{self.provider!r}: expected one of {', '.join(PROVIDERS)}", field="provider")
        for opt in ("threads", "concurrency", "max_batch"):
            if getattr(self, opt) < 1:
                raise InputError(f"{getattr(self, opt)}: must be >= 1", field=opt)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.cpus):
            raise InputError(f"{list(self.cpus)}: expected core numbers >= 0", field="cpus")
        if len(set(self.cpus)) != len(self.cpus):
            raise InputError(f"{list(self.cpus)}: a core is named twice", field="cpus")

    def body_limit(self) -> int:
        """The aiohttp ``client_max_size``: configured, else enough for ``max_batch`` of the largest model."""
        if self.client_max_size:
            return self.client_max_size
        return max(v2_http.max_body_bytes(get_spec(m).metadata(), self.max_batch) for m in self.models)


def choose_providers(provider: str) -> list[str]:
    """ORT providers for ``cpu``/``cuda``; CUDA missing -> a warning on stderr and CPU."""
    import onnxruntime as ort  # loaded in the server process only: pools and clients import this module too

    if provider == "cuda":
        if CUDA_PROVIDER in ort.get_available_providers():
            preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
            if preload is not None:
                # CUDA and cuDNN installed as pip packages (onnxruntime-gpu[cuda,cudnn], or PyTorch's) are not on the
                # loader's path; this loads them first. Its notes go to stderr: stdout carries the READY line.
                with contextlib.redirect_stdout(sys.stderr):
                    preload()
            return [CUDA_PROVIDER, "CPUExecutionProvider"]
        print(
            "kairos serve model: warning: CUDAExecutionProvider is not available in this onnxruntime "
            f"(available: {', '.join(ort.get_available_providers())}); falling back to CPU",
            file=sys.stderr,
            flush=True,
        )
    return ["CPUExecutionProvider"]


def is_input_error(exc: BaseException) -> bool:
    """Whether ONNX Runtime raised ``exc`` because of the input fed (``InvalidArgument``), not a fault of its own."""
    return type(exc).__name__ == "InvalidArgument" and type(exc).__module__.startswith("onnxruntime")


@dataclass
class _Loaded:
    meta: v2.ModelMetadata
    session: object
    output_names: list[str]


@dataclass
class OnnxBackend:
    """The V2 Backend of the model server: sessions, a semaphore and an executor (created at startup)."""

    config: ModelServerConfig
    faults: FaultState = field(default_factory=FaultState)
    models: dict[str, _Loaded] = field(default_factory=dict)
    semaphore: asyncio.Semaphore | None = None
    executor: ThreadPoolExecutor | None = None
    providers: list[str] = field(default_factory=list)
    server_name: str = "kairos-onnx-model-server"
    warned: set[str] = field(default_factory=set)  # models whose input ORT refused (warned once on stderr)

    def metadata(self, model: str) -> v2.ModelMetadata:
        """Metadata of a served model; 404 otherwise."""
        try:
            return self.models[model].meta
        except KeyError:
            raise v2.V2Error(404, f"unknown model {model!r} (served: {', '.join(self.config.models)})") from None

    def ready(self, model: str | None = None) -> bool:
        """True once every session is loaded."""
        return self.semaphore is not None and (model is None or model in self.models)

    def max_batch(self, model: str) -> int:
        """The configured batch limit."""
        return self.config.max_batch

    def _run(self, loaded: _Loaded, feeds: dict[str, np.ndarray]):
        t0 = time.perf_counter()
        outs = loaded.session.run(loaded.output_names, feeds)
        return outs, (time.perf_counter() - t0) * 1e3

    async def infer(self, model: str, req: v2.InferRequest, batch_size: int):
        """Run the session off the loop, one of at most ``concurrency`` at a time.

        ``req`` has passed ``v2.validate_request`` (names, datatypes, shapes, id ranges), so ONNX Runtime should
        accept it. Should it still refuse an input (``InvalidArgument``: an id out of range, a wrong shape) the
        request is at fault: 400, and a warning on stderr (once per model) since validation missed it. Any other ORT
        error is the server's: it propagates to a 500.
        """
        loaded = self.models[model]
        t0 = time.perf_counter()
        async with self.semaphore:
            queue_ms = (time.perf_counter() - t0) * 1e3
            try:
                outs, compute_ms = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._run, loaded, req.inputs
                )
            except Exception as exc:
                if not is_input_error(exc):
                    raise
                message = " ".join(str(exc).split())
                if model not in self.warned:
                    self.warned.add(model)
                    print(
                        f"kairos serve model: warning: ONNX Runtime refused an input that validation let through "
                        f"(answered 400): {message}",
                        file=sys.stderr,
                        flush=True,
                    )
                raise v2.V2Error(400, f"model {model!r} rejected the input: {message}") from None
            extra_s = self.faults.extra_s(asyncio.get_running_loop().time())
            if extra_s:  # an injected spike: the instance stays busy for it, as a slowed machine would
                await asyncio.sleep(extra_s)
                compute_ms += extra_s * 1e3
        params = {"queue_ms": queue_ms, "compute_ms": compute_ms, "batch_size": batch_size}
        if self.config.instance_type:
            params["instance_type"] = self.config.instance_type
        return dict(zip(loaded.output_names, outs)), params


BACKEND = web.AppKey("onnx_backend", OnnxBackend)


def load_session(path: Path, providers: list[str], threads: int, spin: bool = False):
    """An InferenceSession with ``threads`` intra-op threads and one inter-op thread; they spin only if ``spin``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # ORT's pool threads spin-wait after each run by default: on a host whose cores the dispatcher, the load generator
    # and other servers share, that spinning takes the CPU they need (measured on 2 cores: live p99 2x the profile's).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if providers[0] == CUDA_PROVIDER and session.get_providers()[0] != CUDA_PROVIDER:
        # ONNX Runtime lists the provider, fails to start it (a CUDA or cuDNN library missing or of another major
        # version), logs that and runs on the CPU: a `cuda` server would then serve from the CPU under a GPU name.
        built = getattr(ort, "cuda_version", "") or "?"
        raise InputError(
            f"cuda: ONNX Runtime {ort.__version__} lists {CUDA_PROVIDER} but could not start it and fell back to "
            f"{', '.join(session.get_providers())} (its message above names what failed; this build needs CUDA "
            f"{built} and cuDNN 9 on the loader's path, or as pip packages: pip install 'onnxruntime-gpu[cuda,cudnn]')",
            field="provider",
        )
    return session


def create_app(config: ModelServerConfig) -> web.Application:
    """The aiohttp app; models are built if needed and loaded at startup."""
    app = v2_http.v2_app(config.body_limit())
    backend = OnnxBackend(config, install(app, config.faults, config.accept_faults, config.admin_token))
    app[BACKEND] = backend

    async def sessions(app: web.Application):
        # Before the executor and ONNX Runtime start their threads, which inherit the set; given back at cleanup, so
        # an app started inside a test leaves that process as it found it.
        unpinned = pin_process(config.cpus) if config.cpus else None
        backend.providers = choose_providers(config.provider)
        backend.executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="ort")
        loop = asyncio.get_running_loop()
        try:
            for name in config.models:
                spec = get_spec(name)
                path = await loop.run_in_executor(backend.executor, build_model, name, config.model_dir, config.seed)
                session = await loop.run_in_executor(
                    backend.executor, load_session, path, backend.providers, config.threads, config.spin
                )
                backend.models[name] = _Loaded(spec.metadata(v2.PLATFORM_ONNX), session, [t.name for t in spec.outputs])
            backend.semaphore = asyncio.Semaphore(config.concurrency)
            yield
        finally:
            backend.semaphore = None
            backend.executor.shutdown(wait=True, cancel_futures=True)
            backend.models.clear()
            if unpinned is not None:
                pin_process(unpinned)

    app.cleanup_ctx.append(sessions)
    v2_http.add_routes(app, BACKEND)
    return app


KIND = ServerKind(
    "model",
    ModelServerConfig,
    create_app,
    describe=lambda c: {
        "models": list(c.models),
        "provider": c.provider,
        **({"instance_type": c.instance_type} if c.instance_type else {}),
        **({"cpus": format_cpus(c.cpus)} if c.cpus else {}),
    },
)
