"""A pool of instances: OS processes on loopback, a pool file describing them, clean shutdown.

``start_pool(PoolSpec(...))`` starts one server child per instance (``servers.process``: emulated instances or ONNX
Runtime servers), or with ``instances_per_process`` K > 1 one child per K emulated instances (each on its own port,
``servers.emulated.HOST_KIND``), waits for every READY line and for ``/v2/health/ready``, then exposes
``Pool.instances`` and writes the pool file (``servers.pool_file``: every instance with its own URL, whichever process
hosts it). A process that exits takes its instances down and leaves the others serving; ``restart`` brings it back
with all of its instances on their own addresses. Stopping stops every child (and a child whose parent dies exits by
itself).
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
from servers.cpu_affinity import Pinning, available_cpus, plan_pinning
from servers.emulated import HOST_KIND, EmulatedConfig, EmulatedHostConfig
from servers.host_types import check_available, host_type
from servers.model_server import ModelServerConfig
from servers.models import build_model
from servers.pool_file import Instance, PoolFile
from servers.process import ServerProcess, stop_processes, wait_healthy

# A pool mode -> the kind of server each instance runs.
MODE_KINDS = {"emulated": "emulated", "onnx": "model"}
MODES = tuple(MODE_KINDS)


def check_instances_per_process(value, mode: str) -> int:
    """``value`` if it is a valid number of instances per process for a pool of ``mode``, else an InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{value!r}: must be an integer >= 1", field="instances_per_process")
    if value > 1 and mode != "emulated":
        # An ONNX server computes on the CPU: K of them in one process would run one at a time, not side by side.
        raise InputError(
            f"{value}: only emulated instances share a process (mode {mode!r})", field="instances_per_process"
        )
    return value


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
    # Emulated instances hosted by each process. One by default, as before: each instance then has its own event
    # loop, so no instance's work delays another's wake-ups, and a kill takes down exactly one instance as a machine's
    # crash would. More trade that isolation for memory and start-up time (a Python process is ~50 MB), which is what
    # lets hundreds of instances fit on a small machine; a kill then takes down all K of a process.
    instances_per_process: int = 1
    # ONNX Runtime servers on cores of their own (threads x concurrency each, from the highest-numbered down), the
    # cores left over for the caller's own processes (servers.cpu_affinity): what keeps the load generator and the
    # dispatcher from taking a server's CPU while it computes.
    pin_cores: bool = False

    def __post_init__(self):
        if isinstance(self.config, str):
            object.__setattr__(self, "config", PoolConfig.parse(self.config))
        if self.mode not in MODES:
            raise InputError(f"{self.mode!r}: expected one of {', '.join(MODES)}", field="mode")
        check_instances_per_process(self.instances_per_process, self.mode)
        if self.pin_cores and self.mode != "onnx":
            # An emulated instance sleeps through its service time: no core of its own would change it.
            raise InputError(f"only ONNX Runtime servers are pinned (mode {self.mode!r}: use onnx)", field="pin_cores")

    def pinning(self) -> Pinning | None:
        """Which cores each instance (id order) and the caller's processes get; None unless ``pin_cores``."""
        if not self.pin_cores:
            return None
        configs = [self.instance_config(t, 0) for t in self.config.instance_types]
        return plan_pinning([c.threads * c.concurrency for c in configs], available_cpus())

    def instance_configs(self, pinning: Pinning | None = None) -> list[EmulatedConfig | ModelServerConfig]:
        """Every instance's server config, in id order, with its seed and, given a pinning, its cores."""
        types = self.config.instance_types
        cores = pinning.servers if pinning else [()] * len(types)
        return [self.instance_config(t, seed, c) for t, seed, c in zip(types, self.seeds(), cores, strict=True)]

    def instance_config(
        self, instance_type: str, seed: int, cpus: tuple[int, ...] = ()
    ) -> EmulatedConfig | ModelServerConfig:
        """The server config of one instance of ``instance_type`` in this pool (on ``cpus``, if any)."""
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
            cpus=cpus,
        )

    def seeds(self) -> list[int]:
        """One seed per instance, derived from the base seed (SeedSequence.spawn)."""
        return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(self.seed).spawn(self.config.size)]

    def groups(self) -> list[range]:
        """Which instances (indices in id order) each process hosts: consecutive runs of ``instances_per_process``."""
        k, n = self.instances_per_process, self.config.size
        return [range(first, min(first + k, n)) for first in range(0, n, k)]

    def spawn(self, configs: list, names: list[str], ports: list[int] | None = None) -> ServerProcess:
        """Start the process of one group: ``configs`` (one per instance) on ``ports`` (None: any free ones)."""
        if self.instances_per_process == 1:
            return ServerProcess(
                MODE_KINDS[self.mode],
                configs[0],
                host=self.host,
                port=ports[0] if ports else 0,
                name=names[0],
                python=self.python,
            )
        host = EmulatedHostConfig(tuple(configs), tuple(ports or ()))
        name = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        return ServerProcess(HOST_KIND.name, host, host=self.host, name=name, python=self.python)


class Pool:
    """Started instances (context manager); ``instances``, ``write(path)``, ``stop()``."""

    def __init__(
        self,
        spec: PoolSpec,
        instances: list[Instance],
        processes: list[ServerProcess],
        process_of: list[int] | None = None,
        pinning: Pinning | None = None,
    ):
        self.spec = spec
        self.pinning = pinning  # the cores each instance runs on, and those left to the caller (None: not pinned)
        self.model = spec.model
        self.instances: tuple[Instance, ...] = tuple(instances)
        self.processes = processes
        # Instance index -> index of the process hosting it (None: one process per instance, in order).
        self.process_of: tuple[int, ...] = tuple(process_of if process_of is not None else range(len(instances)))
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
        return [i.id for i, k in zip(self.instances, self.process_of) if not self.processes[k].alive()]

    def exit_code(self, instance_id: str) -> int | None:
        """How an instance's process ended (negative: killed by that signal); None while it runs."""
        return self._process(instance_id).proc.poll()

    def process_mates(self, instance_id: str) -> list[str]:
        """Ids of the instances sharing ``instance_id``'s process, itself included (what a kill of it takes down)."""
        k = self.process_of[self._index(instance_id)]
        return [i.id for i, g in zip(self.instances, self.process_of) if g == k]

    def kill(self, instance_id: str, sig: int = signal.SIGKILL) -> None:
        """Send an instance's process ``sig`` (SIGKILL: a crash; chaos tests use it); it takes down every instance
        of that process (``process_mates``)."""
        os.kill(self._process(instance_id).pid, sig)

    def restart(self, instance_id: str) -> Instance:
        """Start an exited instance's process again, with every instance it hosts on its own config and address, so
        their URLs (and any dispatcher in front of the pool, which probes them back into service) stay valid;
        returns the instance's new entry."""
        g = self.process_of[self._index(instance_id)]
        members = [k for k, x in enumerate(self.process_of) if x == g]
        old = self.processes[g]
        stop_processes([old], self.spec.stop_timeout_s)  # reap it, and anything left in its group
        ports = [int(self.instances[k].url.rsplit(":", 1)[1]) for k in members]
        hosted = old.config.instances if isinstance(old.config, EmulatedHostConfig) else (old.config,)
        proc = self.spec.spawn(list(hosted), [self.instances[k].id for k in members], ports)
        try:
            proc.wait_ready(self.spec.startup_timeout_s)
            for url in proc.urls:
                wait_healthy(url, self.spec.startup_timeout_s)
        except BaseException:
            stop_processes([proc], self.spec.stop_timeout_s)
            raise
        self.processes[g] = proc
        back = list(self.instances)
        for k in members:
            back[k] = replace(back[k], pid=proc.pid)
        self.instances = tuple(back)
        return self.instances[self._index(instance_id)]

    def _process(self, instance_id: str) -> ServerProcess:
        return self.processes[self.process_of[self._index(instance_id)]]

    def _index(self, instance_id: str) -> int:
        for k, inst in enumerate(self.instances):
            if inst.id == instance_id:
                return k
        raise InputError(f"{instance_id!r}: no such instance in this pool", field="instance")

    @property
    def pids(self) -> list[int]:
        """Child pids, one per process (fewer than the instances when processes host several)."""
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
    """Start the pool's processes, wait until every instance is ready, and return the Pool (stop it, or use
    ``with``)."""
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
    pinning = spec.pinning()
    configs = spec.instance_configs(pinning)
    groups = spec.groups()
    procs: list[ServerProcess] = []
    try:
        for group in groups:
            procs.append(spec.spawn([configs[k] for k in group], [ids[k] for k in group]))
        deadline = time.monotonic() + spec.startup_timeout_s
        instances, process_of = [], []
        for g, (group, p) in enumerate(zip(groups, procs)):
            p.wait_ready(max(1.0, deadline - time.monotonic()))
            for k, url in zip(group, p.urls, strict=True):
                wait_healthy(url, max(1.0, deadline - time.monotonic()))
                price = prices.get(types[k])
                instances.append(Instance(ids[k], url, types[k], None if price is None else float(price), p.pid))
                process_of.append(g)
    except BaseException:
        stop_processes(procs, spec.stop_timeout_s)
        raise
    return Pool(spec, instances, procs, process_of, pinning)
