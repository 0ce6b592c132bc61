"""A pool of instances: one OS process per instance on loopback, a pool file describing them, clean shutdown.

Each child runs ``python -m harness.cli serve emulated|model ... --port 0 --watch-stdin``, binds a free port itself
and reports it on a ``READY {json}`` stdout line (no port races). The parent waits for every READY line and for
``/v2/health/ready``, then exposes ``Pool.instances`` and writes the pool file::

    {"model": "rm2", "mode": "emulated", "config": "g4dn.xlarge=2,r5n.large=9",
     "instances": [{"id": "g4dn.xlarge-0", "url": "http://127.0.0.1:PORT", "instance_type": "g4dn.xlarge",
                    "usd_per_hour": 0.526, "pid": 1234}, ...]}

Stopping sends SIGTERM to each child's process group, then SIGKILL after a timeout, and reaps them. Children also exit
when their stdin closes, so they do not outlive a parent that is killed outright.

``load_pool_file`` reads a (possibly hand-written) pool file whose instances may be anywhere reachable by URL.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.prices import load_prices
from harness.core.pool_config import PoolConfig
from harness.core.errors import InputError

MODES = ("emulated", "onnx")
_READY = "READY "


@dataclass(frozen=True)
class Instance:
    """One instance of a pool: id, base URL, instance type, price, and the local pid when we started it."""

    id: str
    url: str
    instance_type: str
    usd_per_hour: float | None  # None: no price known (a user's own type); costs are then unknown, not zero
    pid: int | None = None

    def to_json(self) -> dict:
        """The pool-file entry."""
        out = {"id": self.id, "url": self.url, "instance_type": self.instance_type, "usd_per_hour": self.usd_per_hour}
        if self.pid is not None:
            out["pid"] = self.pid
        return out


@dataclass(frozen=True)
class PoolFile:
    """A pool as described by a pool file: the model and its instances."""

    model: str
    instances: tuple[Instance, ...]
    source: str = "<memory>"

    @property
    def cost_per_h(self) -> float:
        """Dollars per hour of all instances (NaN when any price is unknown)."""
        if any(i.usd_per_hour is None for i in self.instances):
            return float("nan")
        return float(sum(i.usd_per_hour for i in self.instances))

    @property
    def config(self) -> PoolConfig:
        """The instance mix, in file order."""
        counts: dict[str, int] = {}
        for i in self.instances:
            counts[i.instance_type] = counts.get(i.instance_type, 0) + 1
        return PoolConfig.from_mapping(counts)


@dataclass(frozen=True)
class PoolSpec:
    """What to start: instance mix (PoolConfig or ``TYPE=N,...``), model, mode, profile/price files, seeds."""

    config: PoolConfig | str
    model: str = "rm2"
    mode: str = "emulated"
    profiles: Path | None = None
    prices: Path | None = None
    seed: int = 0
    concurrency: int = 1
    model_dir: Path | None = None
    threads: int = 1
    host: str = "127.0.0.1"
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 5.0
    python: str | None = None

    def __post_init__(self):
        if isinstance(self.config, str):
            object.__setattr__(self, "config", PoolConfig.parse(self.config))
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: expected one of {', '.join(MODES)}")

    def seeds(self) -> list[int]:
        """One seed per instance, derived from the base seed (SeedSequence.spawn)."""
        return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(self.seed).spawn(self.config.size)]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # importable even without an installed package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """A ``kairos serve ...`` child in its own process group; ``wait_ready`` returns its READY info."""

    def __init__(self, serve_args: list[str], *, name: str = "server", python: str | None = None):
        self.name = name
        self.argv = [python or sys.executable, "-m", "harness.cli", "serve", *serve_args, "--watch-stdin"]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=_child_env(), start_new_session=True)
        self.info: dict | None = None
        self._ready = threading.Event()
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True, name=f"{name}-out"),
                         threading.Thread(target=self._read_stderr, daemon=True, name=f"{name}-err")]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        """The child's pid (also its process-group id)."""
        return self.proc.pid

    @property
    def url(self) -> str:
        """Base URL reported by the child."""
        if self.info is None:
            raise RuntimeError(f"{self.name} is not ready")
        return self.info["url"]

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if self.info is None and line.startswith(_READY):
                try:
                    self.info = json.loads(line[len(_READY):])
                except json.JSONDecodeError:
                    continue
                self._ready.set()
        self._ready.set()  # EOF: wake a waiter (it checks whether the process died)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self._stderr_tail.append(line)
            print(f"[{self.name}] {line}", file=sys.stderr, flush=True)

    def stderr_tail(self) -> str:
        """The last lines the child wrote on stderr."""
        return "\n".join(self._stderr_tail)

    def wait_ready(self, timeout: float) -> dict:
        """Block until READY; an error if the child exits first or ``timeout`` passes."""
        if not self._ready.wait(timeout):
            raise InputError(f"{self.name}: not ready after {timeout:.0f} s")
        if self.info is None:  # stdout closed without a READY line: the child died
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            for t in self._threads:
                t.join(timeout=1)
            tail = self.stderr_tail().strip().splitlines()
            why = tail[-1] if tail else "no message"
            raise InputError(f"{self.name}: exited with code {code} before it was ready: {why}")
        return self.info

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (ignoring one already gone)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close_stdin(self) -> None:
        """Close the child's stdin (it exits on EOF)."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass


def stop_processes(procs: list[ServerProcess], timeout: float = 5.0) -> None:
    """SIGTERM every group, wait up to ``timeout``, SIGKILL the rest, reap all."""
    for p in procs:
        if p.alive():
            p.signal_group(signal.SIGTERM)
        p.close_stdin()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        p.signal_group(signal.SIGKILL)  # also takes any grandchild left in the group
        try:
            p.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.proc.stdout, p.proc.stderr):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass


def spawn_server(serve_args: list[str], *, name: str = "server", timeout: float = 60.0,
                 python: str | None = None) -> ServerProcess:
    """Start ``kairos serve <serve_args>`` (which should bind ``--port 0``) and wait for its READY line."""
    proc = ServerProcess(serve_args, name=name, python=python)
    try:
        proc.wait_ready(timeout)
    except BaseException:
        stop_processes([proc])
        raise
    return proc


def wait_healthy(url: str, timeout: float) -> None:
    """Poll ``GET {url}/v2/health/ready`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise InputError(f"{url}: not ready after {timeout:.0f} s ({last})")


class Pool:
    """Started instances (context manager); ``instances``, ``write(path)``, ``stop()``."""

    def __init__(self, spec: PoolSpec, instances: list[Instance], processes: list[ServerProcess]):
        self.spec = spec
        self.model = spec.model
        self.instances: tuple[Instance, ...] = tuple(instances)
        self.processes = processes
        self._stopped = False
        atexit.register(self.stop)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def to_json(self) -> dict:
        """The pool-file document."""
        return {"model": self.model, "mode": self.spec.mode, "config": str(self.spec.config),
                "instances": [i.to_json() for i in self.instances]}

    def as_pool_file(self) -> PoolFile:
        """The same description as ``load_pool_file`` would return."""
        return PoolFile(self.model, self.instances)

    def write(self, path: str | Path) -> Path:
        """Write the pool file (atomically); returns its path."""
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    def dead(self) -> list[str]:
        """Ids of instances whose process has exited."""
        return [i.id for i, p in zip(self.instances, self.processes) if not p.alive()]

    @property
    def pids(self) -> list[int]:
        """Child pids."""
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        """Stop every child (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        stop_processes(self.processes, self.spec.stop_timeout_s)
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass


def _instance_ids(types: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for t in types:
        ids.append(f"{t}-{seen.get(t, 0)}")
        seen[t] = seen.get(t, 0) + 1
    return ids


def start_pool(spec: PoolSpec) -> Pool:
    """Start one process per instance, wait until all are ready, and return the Pool (stop it, or use ``with``)."""
    types = spec.config.instance_types
    prices = load_prices(spec.prices)
    missing = sorted({t for t in types if t not in prices})
    if missing:  # prices are optional: only costs need them
        print(f"note: no price for instance type(s) {', '.join(missing)}; costs will be unknown (give --prices)",
              file=sys.stderr)
    if spec.mode == "emulated":
        from harness.core.profiles import Profile
        Profile.load(spec.profiles).check(sorted(set(types)), [spec.model])  # fail here, not in 11 children
    else:
        from servers.models import build_model
        build_model(spec.model, spec.model_dir)  # once, before the children load it
    ids = _instance_ids(types)
    procs: list[ServerProcess] = []
    try:
        for iid, itype, seed in zip(ids, types, spec.seeds()):
            if spec.mode == "emulated":
                args = ["emulated", "--instance-type", itype, "--model", spec.model, "--seed", str(seed),
                        "--concurrency", str(spec.concurrency)]
                if spec.profiles:
                    args += ["--profiles", str(spec.profiles)]
            else:
                args = ["model", "--model", spec.model, "--instance-type", itype, "--threads", str(spec.threads),
                        "--concurrency", str(spec.concurrency)]
                if spec.model_dir:
                    args += ["--model-dir", str(spec.model_dir)]
            args += ["--host", spec.host, "--port", "0"]
            procs.append(ServerProcess(args, name=iid, python=spec.python))
        deadline = time.monotonic() + spec.startup_timeout_s
        instances = []
        for iid, itype, p in zip(ids, types, procs):
            info = p.wait_ready(max(1.0, deadline - time.monotonic()))
            wait_healthy(info["url"], max(1.0, deadline - time.monotonic()))
            price = prices.get(itype)
            instances.append(Instance(iid, info["url"], itype, None if price is None else float(price), p.pid))
    except BaseException:
        stop_processes(procs, spec.stop_timeout_s)
        raise
    return Pool(spec, instances, procs)


def load_pool_file(path: str | Path, prices: str | Path | dict[str, float] | None = None) -> PoolFile:
    """Read and validate a pool file; ``id`` defaults to ``TYPE-k`` and ``usd_per_hour`` to the catalogue price."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such pool file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON pool file ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with 'model' and 'instances'")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InputError(f"{path}: missing field 'model' (a model name such as \"rm2\")")
    raw = doc.get("instances")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: missing field 'instances' (a non-empty list)")
    catalogue: dict[str, float] | None = prices if isinstance(prices, dict) else None
    instances: list[Instance] = []
    counts: dict[str, int] = {}
    for k, item in enumerate(raw):
        where = f"{path}: instances[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with 'url' and 'instance_type'")
        for name in ("url", "instance_type"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                raise InputError(f"{where}: missing field {name!r}")
        url = item["url"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InputError(f"{where}: field 'url' must start with http:// or https://, got {url!r}")
        itype = item["instance_type"].strip()
        iid = item.get("id")
        if iid is None:
            iid = f"{itype}-{counts.get(itype, 0)}"
        elif not isinstance(iid, str) or not iid:
            raise InputError(f"{where}: field 'id' must be a non-empty string")
        counts[itype] = counts.get(itype, 0) + 1
        price = item.get("usd_per_hour")
        if price is None:
            if catalogue is None:
                catalogue = load_prices(prices if not isinstance(prices, dict) else None)
            price = catalogue.get(itype)  # None: unknown, costs are then unknown
        elif isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise InputError(f"{where}: field 'usd_per_hour' must be a number >= 0, got {price!r}")
        pid = item.get("pid")
        instances.append(Instance(iid, url, itype, None if price is None else float(price),
                                  pid if isinstance(pid, int) else None))
    dup = sorted({i.id for i in instances if sum(j.id == i.id for j in instances) > 1})
    if dup:
        raise InputError(f"{path}: duplicate instance id(s) {', '.join(dup)}")
    return PoolFile(model, tuple(instances), str(path))
