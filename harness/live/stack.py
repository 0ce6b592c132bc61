"""The processes a live run owns: a pool (unless a pool file names running instances) and a dispatcher.

The dispatcher runs in its own process (``servers.process``), started from a frozen ``DispatcherConfig``, unless the
options name one already running (another host's, reached with its admin token); the run talks to it over its admin
endpoints (switch policy, drain, fetch records).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError
from harness.core.paper import resolve_qos_ms
from harness.live.chaos import PoolTarget
from harness.live.local_profile import LocalProfileConfig, local_profile, pool_settings
from harness.live.options import LiveOptions
from servers.cpu_affinity import Pinning, format_cpus, pin_process
from servers.dispatcher import DispatcherConfig
from servers.pool import PoolSpec, start_pool
from servers.pool_file import load_pool_file
from servers.process import ServerProcess, spawn_server, stop_processes


def http_json(
    url: str, doc: dict | None = None, method: str | None = None, timeout_s: float = 300.0, token: str | None = None
) -> dict:
    """A small JSON request (urllib: cooperative under gevent's monkey patching); ``token``: the admin bearer token."""
    data = json.dumps(doc).encode() if doc is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers=headers,
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@dataclass(frozen=True)
class ExternalDispatcher:
    """A dispatcher this run did not start: its address, and no process of ours (``pid`` None)."""

    url: str
    pid: None = None


def read_token(path: Path | None) -> str | None:
    """The admin token kept in ``path`` (None without a file)."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}", field="dispatcher_token_file") from None
    if not token:
        raise InputError(f"{path}: empty", field="dispatcher_token_file")
    return token


def pool_spec(options: LiveOptions, model: str) -> PoolSpec:
    """The pool a run with ``options`` starts for ``model``."""
    return PoolSpec(
        options.pool_config,
        model,
        options.mode,
        profiles=options.profiles,
        seed=options.seed,
        accept_faults=bool(options.chaos),
        instances_per_process=options.instances_per_process,
        pin_cores=options.pin_cores,
    )


class LiveStack:
    """Starts (or attaches to) the pool, then the dispatcher in front of it; ``stop()`` stops what it started."""

    def __init__(
        self, options: LiveOptions, model: str, records_path: Path, log: Callable[[str], None], max_batch: int = 1000
    ):
        self._pool = None
        self._unpinned: tuple[int, ...] | None = None  # this process's cores before it pinned itself
        self.dispatcher: ServerProcess | ExternalDispatcher | None = None
        self._token = read_token(options.dispatcher_token_file)
        self.profiles = options.profiles
        self.profile_info: dict | None = None
        if options.pool_file:
            self.pool_file = load_pool_file(options.pool_file)
            if self.pool_file.model != model:
                raise InputError(
                    f"{options.pool_file}: serves {self.pool_file.model!r}, the trace is {model!r}", field="pool_file"
                )
        else:
            log(f"starting {options.mode} pool {options.pool_config} for {model} ...")
            self._pool = start_pool(pool_spec(options, model))
            self.pool_file = self._pool.as_pool_file()
            pinning = self._pool.pinning
            if pinning is not None:
                # This process (the load generator, the profiler) and the dispatcher started below, which inherits it.
                try:
                    self._unpinned = pin_process(pinning.harness)
                except BaseException:
                    self.stop()
                    raise
                log(
                    "pinned: "
                    + ", ".join(
                        f"{i.id} on cores {format_cpus(c)}" for i, c in zip(self.pool_file.instances, pinning.servers)
                    )
                    + f"; load generator and dispatcher on {format_cpus(pinning.harness)}"
                )
            self._pool.write(records_path.parent / "pool.json")
            if options.profiles_local:
                try:
                    self._profile_pool(options, model, records_path.parent / "profile.parquet", log, max_batch)
                except BaseException:
                    self.stop()
                    raise
        if options.dispatcher_url:
            self.dispatcher = ExternalDispatcher(options.dispatcher_url.rstrip("/"))
            self.url = self.dispatcher.url
            self._check_external(model, resolve_qos_ms(model, options.qos_ms))
            log(
                f"dispatcher at {self.url} (not started by this run) in front of {len(self.pool_file.instances)} instances"
            )
            return
        config = DispatcherConfig(
            pool=self.pool_file,
            policy=options.dispatchers[0],
            qos_ms=options.qos_ms,
            profiles=self.profiles,
            records_path=records_path,
        )
        try:
            self.dispatcher = spawn_server("dispatcher", config, name="dispatcher")
        except BaseException:
            self.stop()
            raise
        self.url = self.dispatcher.url
        log(f"dispatcher at {self.url} in front of {len(self.pool_file.instances)} instances")

    def _admin(self, path: str, doc: dict | None = None, timeout_s: float = 300.0) -> dict:
        return http_json(f"{self.url}{path}", doc, timeout_s=timeout_s, token=self._token)

    def _check_external(self, model: str, qos_ms: float) -> None:
        """A dispatcher this run did not start must answer its admin endpoints, front the pool file's instances for
        this model at this QoS, and hold no records yet (query ids start again at ``p0-`` in every run)."""
        url = self.url
        try:
            status = self._admin("/admin/status", timeout_s=10.0)
        except urllib.error.HTTPError as exc:
            if exc.code == 403:
                raise InputError(
                    f"missing or wrong: {url} refused its admin endpoints; give the dispatcher's admin token in a file",
                    field="dispatcher_token_file",
                ) from None
            raise InputError(f"{url}: /admin/status answered HTTP {exc.code}", field="dispatcher_url") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{url}: no dispatcher answers ({exc})", field="dispatcher_url") from None
        if status.get("model") != model:
            raise InputError(f"{url} serves {status.get('model')!r}, the trace is {model!r}", field="dispatcher_url")
        theirs = sorted(i["id"] for i in status.get("instances", []))
        ours = sorted(i.id for i in self.pool_file.instances)
        if theirs != ours:
            raise InputError(f"lists instances {ours}, the dispatcher at {url} fronts {theirs}", field="pool_file")
        if not math.isclose(float(status.get("qos_ms", math.nan)), qos_ms):
            raise InputError(
                f"{qos_ms:g}: the dispatcher at {url} runs a QoS of {status.get('qos_ms')} ms; give both the same",
                field="qos_ms",
            )
        if status.get("records"):
            raise InputError(
                f"{url} already holds {status['records']} query record(s): start it afresh for each run",
                field="dispatcher_url",
            )

    def _profile_pool(
        self, options: LiveOptions, model: str, out: Path, log: Callable[[str], None], max_batch: int
    ) -> None:
        """Measure (or take from the cache) the profile of the servers just started; the run then uses it."""
        settings = pool_settings(self._pool)
        config = LocalProfileConfig(contention=options.profile_local, refresh=options.reprofile, seed=options.seed)
        self.profile_info = local_profile(list(self.pool_file.instances), settings, model, max_batch, out, config, log)
        self.profiles = out

    @property
    def pinning(self) -> Pinning | None:
        """The cores of each started server and of this process and the dispatcher (None: not pinned)."""
        return self._pool.pinning if self._pool is not None else None

    def set_policy(self, spec: str) -> None:
        """Switch the dispatcher's policy."""
        self._admin("/admin/policy", {"policy": spec})

    def drain(self, timeout_s: float = 300.0) -> bool:
        """Wait until the dispatcher has nothing queued or in service."""
        return bool(self._admin(f"/admin/drain?timeout_s={timeout_s}", {}, timeout_s=timeout_s + 10)["drained"])

    def records(self, prefix: str) -> dict:
        """The dispatcher's finished records for request ids starting with ``prefix``."""
        return self._admin(f"/admin/records?prefix={prefix}")

    def chaos_target(self) -> PoolTarget:
        """What chaos acts on: this stack's instances (kill and restart only when it started the pool)."""
        return PoolTarget(self.pool_file.instances, self._pool, http_json)

    def pids(self) -> list[int]:
        """Processes this stack started: the dispatcher, then the pool's instances (none for a pool from a file)."""
        started = isinstance(self.dispatcher, ServerProcess)
        return ([self.dispatcher.pid] if started else []) + (list(self._pool.pids) if self._pool else [])

    def loop_lag(self) -> dict:
        """The dispatcher's event-loop lag since the last call (which starts a new window)."""
        return self._admin("/admin/loop_lag")

    def wait_in_service(self, timeout_s: float = 30.0) -> bool:
        """Wait until the dispatcher has every instance in service again (after chaos); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self._admin("/admin/status")
            if all(i["alive"] for i in status["instances"]):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the dispatcher (it writes its parquet footer) and the pool: the ones this stack started."""
        if isinstance(self.dispatcher, ServerProcess):
            stop_processes([self.dispatcher])
        self.dispatcher = None
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._unpinned is not None:  # a run inside a longer-lived process (tests, notebooks) gives its cores back
            pin_process(self._unpinned)
            self._unpinned = None
