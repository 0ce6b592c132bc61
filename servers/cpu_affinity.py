"""Pinning ONNX Runtime servers to cores of their own, apart from the dispatcher and the load generator.

On a host whose cores every process shares, a server computing a query loses time to the dispatcher and the load
generator: the harness then measures its own load, not the server (on a 2-core VM, dien's service under a run was
13-36% slower than profiled alone). ``plan_pinning`` gives each server ``threads x concurrency`` cores of its own,
from the highest-numbered down, and leaves the rest (core 0 and up, where interrupts usually land) to the harness;
each server pins every one of its threads before ONNX Runtime starts its own (``pin_process``), and the threads it
starts later inherit the set. Linux only (``os.sched_setaffinity``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError


def available_cpus() -> tuple[int, ...]:
    """The cores this process may run on, ascending (its affinity, not ``os.cpu_count``: a container may have fewer)."""
    if not hasattr(os, "sched_getaffinity"):
        raise InputError("needs Linux (os.sched_getaffinity)", field="pin_cores")
    return tuple(sorted(os.sched_getaffinity(0)))


def format_cpus(cpus) -> str:
    """``0-3,6`` for cores 0, 1, 2, 3, 6 (the kernel's list format, as in ``Cpus_allowed_list``)."""
    out: list[str] = []
    for c in sorted(set(cpus)):
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def parse_cpus(text: str, field: str = "cpus") -> tuple[int, ...]:
    """``0-3,6`` -> (0, 1, 2, 3, 6); an InputError naming ``field`` for anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise InputError(f"{text!r}: expected core numbers such as 0-3,6", field=field) from None
        if a < 0 or b < a:
            raise InputError(f"{text!r}: expected core numbers such as 0-3,6", field=field)
        cpus.update(range(a, b + 1))
    return tuple(sorted(cpus))


@dataclass(frozen=True)
class Pinning:
    """Cores per server (in instance order) and the cores left to the harness (dispatcher, load generator)."""

    servers: tuple[tuple[int, ...], ...]
    harness: tuple[int, ...]

    def to_json(self) -> dict:
        """The run folder's record of it: core lists in the kernel's format."""
        return {"servers": [format_cpus(c) for c in self.servers], "harness": format_cpus(self.harness)}


def plan_pinning(cores_per_server: list[int], cpus: tuple[int, ...]) -> Pinning:
    """Each server its own ``cores_per_server[k]`` cores, taken from the top of ``cpus``; the rest to the harness.

    An InputError when the servers would leave the harness no core: sharing one would bring back what pinning is for.
    """
    need = sum(cores_per_server)
    if need > len(cpus) - 1:
        raise InputError(
            f"needs {need + 1} cores: {need} for the servers (threads x concurrency each) and 1 or more for the "
            f"dispatcher and load generator; this process may run on {len(cpus)} ({format_cpus(cpus)})",
            field="pin_cores",
        )
    free = sorted(cpus, reverse=True)
    servers = []
    for n in cores_per_server:
        servers.append(tuple(sorted(free[:n])))
        free = free[n:]
    return Pinning(tuple(servers), tuple(sorted(free)))


def _tasks() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def pin_process(cpus: tuple[int, ...]) -> tuple[int, ...]:
    """Pin every thread of this process to ``cpus`` (threads started later inherit it); returns the previous set.

    Every thread, not only the caller: ``os.sched_setaffinity(0, ...)`` sets one thread's, and a process such as the
    locustfile's already runs others (the monitor, gevent's hub helpers).
    """
    before = available_cpus()
    try:
        for tid in _tasks():
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
    except OSError as exc:
        raise InputError(
            f"{format_cpus(cpus)}: cannot pin to these cores ({exc.strerror or exc}; this process may use "
            f"{format_cpus(before)})",
            field="cpus",
        ) from None
    return before


def boot_id() -> str:
    """This kernel's boot id ('' where unreadable): processes that read the same one run on the same machine's cores."""
    # Not the hostname: two containers on one machine may name themselves apart, yet share the cores a pinning names.
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_cpus(pid: int) -> tuple[int, ...]:
    """Every core some thread of ``pid`` may run on: the pinning's set once every thread holds it."""
    return tuple(sorted({c for cpus in thread_cpus(pid).values() for c in cpus}))


def thread_cpus(pid: int) -> dict[int, tuple[int, ...]]:
    """Each thread of ``pid`` -> the cores it may run on (from ``/proc``); what a check reads to see a pinning hold."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = tuple(sorted(os.sched_getaffinity(int(task.name))))
        except (ProcessLookupError, OSError):
            pass
    return out
