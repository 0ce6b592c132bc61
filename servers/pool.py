"""A pool of instances: one OS process per instance on loopback, a pool file describing them, clean shutdown.

``start_pool(PoolSpec(...))`` starts one server child per instance (``servers.process``: emulated instances or ONNX
Runtime servers), waits for every READY line and for ``/v2/health/ready``, then exposes ``Pool.instances`` and writes
the pool file (``servers.pool_file``). A member that exits leaves the others serving; ``restart`` brings it back on
its own address. Stopping stops every child (and a child whose parent dies exits by itself).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig, instance_ids
from harness.core.prices import load_prices
from harness.core.profiles import Profile
from servers.emulated import EmulatedConfig
from servers.host_types import check_available, host_type
from servers.model_server import ModelServerConfig
from servers.models import build_model
from servers.pool_file import Instance, PoolFile
from servers.process import ServerProcess, stop_processes, wait_healthy

# A pool mode -> the kind of server each instance runs.
MODE_KINDS = {"emulated": "emulated", "onnx": "model"}
MODES = tuple(MODE_KINDS)


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
    accept_faults: bool = False  # instances take POST /admin/fault (chaos runs)

    def __post_init__(self):
        if isinstance(self.config, str):
            object.__setattr__(self, "config", PoolConfig.parse(self.config))
        if self.mode not in MODES:
            raise InputError(f"{self.mode!r}: expected one of {', '.join(MODES)}", field="mode")

    def instance_config(self, instance_type: str, seed: int) -> EmulatedConfig | ModelServerConfig:
        """The server config of one instance of ``instance_type`` in this pool."""
        if self.mode == "emulated":
            return EmulatedConfig(
                instance_type=instance_type,
                model=self.model,
                profiles=self.profiles,
                seed=seed,
                concurrency=self.concurrency,
                accept_faults=self.accept_faults,
            )
        local = host_type(instance_type)  # cpu-2t, cuda: the type fixes provider and threads; else a label
        return ModelServerConfig(
            models=(self.model,),
            model_dir=self.model_dir,
            provider=local.provider if local else "cpu",
            threads=local.threads if local else self.threads,
            concurrency=self.concurrency,
            instance_type=instance_type,
            accept_faults=self.accept_faults,
        )

    def seeds(self) -> list[int]:
        """One seed per instance, derived from the base seed (SeedSequence.spawn)."""
        return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(self.seed).spawn(self.config.size)]


class Pool:
    """Started instances (context manager); ``instances``, ``write(path)``, ``stop()``."""

    def __init__(self, spec: PoolSpec, instances: list[Instance], processes: list[ServerProcess]):
        self.spec = spec
        self.model = spec.model
        self.instances: tuple[Instance, ...] = tuple(instances)
        self.processes = processes
        self._stopped = False
        atexit.register(self.stop)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def to_json(self) -> dict:
        """The pool-file document."""
        return {
            "model": self.model,
            "mode": self.spec.mode,
            "config": str(self.spec.config),
            "instances": [i.to_json() for i in self.instances],
        }

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

    def exit_code(self, instance_id: str) -> int | None:
        """How an instance's process ended (negative: killed by that signal); None while it runs."""
        return self.processes[self._index(instance_id)].proc.poll()

    def kill(self, instance_id: str, sig: int = signal.SIGKILL) -> None:
        """Send an instance's process ``sig`` (SIGKILL: a crash; chaos tests use it)."""
        os.kill(self.processes[self._index(instance_id)].pid, sig)

    def restart(self, instance_id: str) -> Instance:
        """Start an exited instance again with its own config on its own address, so its URL (and any dispatcher
        in front of the pool, which probes it back into service) stays valid; returns its new entry."""
        k = self._index(instance_id)
        old, inst = self.processes[k], self.instances[k]
        stop_processes([old], self.spec.stop_timeout_s)  # reap it, and anything left in its group
        port = int(inst.url.rsplit(":", 1)[1])
        proc = ServerProcess(
            old.kind, old.config, host=self.spec.host, port=port, name=inst.id, python=self.spec.python
        )
        try:
            wait_healthy(proc.wait_ready(self.spec.startup_timeout_s)["url"], self.spec.startup_timeout_s)
        except BaseException:
            stop_processes([proc], self.spec.stop_timeout_s)
            raise
        self.processes[k] = proc
        self.instances = (*self.instances[:k], replace(inst, pid=proc.pid), *self.instances[k + 1 :])
        return self.instances[k]

    def _index(self, instance_id: str) -> int:
        for k, inst in enumerate(self.instances):
            if inst.id == instance_id:
                return k
        raise InputError(f"{instance_id!r}: no such instance in this pool", field="instance")

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


def start_pool(spec: PoolSpec) -> Pool:
    """Start one process per instance, wait until all are ready, and return the Pool (stop it, or use ``with``)."""
    types = spec.config.instance_types
    prices = load_prices(spec.prices)
    missing = sorted({t for t in types if t not in prices})
    if missing:  # prices are optional: only costs need them
        print(
            f"note: no price for instance type(s) {', '.join(missing)}; costs will be unknown (give --prices)",
            file=sys.stderr,
        )
    if spec.mode == "emulated":
        Profile.load(spec.profiles).check(sorted(set(types)), [spec.model])  # fail here, not in 11 children
    else:
        import onnxruntime  # only onnx pools need it; the import costs about a second

        check_available(types, onnxruntime.get_available_providers())
        build_model(spec.model, spec.model_dir)  # once, before the children load it
    ids = instance_ids(types)
    procs: list[ServerProcess] = []
    try:
        for iid, itype, seed in zip(ids, types, spec.seeds()):
            procs.append(
                ServerProcess(
                    MODE_KINDS[spec.mode],
                    spec.instance_config(itype, seed),
                    host=spec.host,
                    name=iid,
                    python=spec.python,
                )
            )
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
