"""Host CPU during a phase: each process the run started, every core, the hypervisor's steal, and what processes
outside the run took, from Linux's /proc counters.

``CpuSnapshot.take(pids)`` reads the counters; ``cpu_between(a, b)`` turns two snapshots into percentages. Where
/proc is missing (not Linux) every figure is NaN and the checks that need them say so instead of passing.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/``pid``/stat; None once it has exited."""
    # os.open/os.read rather than Path.read_text: a third of the time, and every process is read twice a phase.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            text = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return None
    # The command name may hold spaces and parentheses: it runs from the first "(" to the last ")".
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


def _process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all its threads) in clock ticks (None once it has exited)."""
    stat = _stat_fields(pid)
    return None if stat is None else int(stat[1][11]) + int(stat[1][12])


def _every_process() -> dict[int, tuple[str, int, int]]:
    """(name, parent pid, utime + stime ticks) of every process now; empty when /proc is unreadable."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.isdigit() and (stat := _stat_fields(name)) is not None:
            out[int(name)] = (stat[0], int(stat[1][1]), int(stat[1][11]) + int(stat[1][12]))
    return out


def _stat_ticks() -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """From one read of /proc/stat: (busy, total) ticks per core, and the host's (user + nice + system, steal, total)
    ticks over all cores; ([], ()) when unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return [], ()
    cores, host = [], ()
    for line in lines:
        if not line.startswith("cpu"):
            continue
        values = [int(v) for v in line.split()[1:]]
        if line[3:4].isdigit():
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            cores.append((sum(values) - idle, sum(values)))
        else:
            # Fields: user nice system idle iowait irq softirq steal [guest guest_nice, already inside user and nice].
            host = (values[0] + values[1] + values[2], values[7] if len(values) > 7 else 0, sum(values[:8]))
    return cores, host


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one moment: wall clock, ticks per watched process, (busy, total) ticks per core, the host's
    (user + nice + system, steal, total) ticks, and (name, parent, ticks) of every process."""

    wall_s: float
    processes: dict[int, int | None] = field(default_factory=dict)
    cores: tuple[tuple[int, int], ...] = ()
    host: tuple[int, ...] = ()
    everyone: dict[int, tuple[str, int, int]] = field(default_factory=dict)

    @classmethod
    def take(cls, pids, every_process: bool = True) -> CpuSnapshot:
        """Read the counters of ``pids``, of every core and (unless told not to: it reads a file per process) of
        every process now."""
        wall_s, (cores, host) = time.monotonic(), _stat_ticks()
        everyone = _every_process() if every_process else {}
        # A watched process is read once: from every process's counters where those were read (absent: exited).
        if every_process:
            ticks = {p: everyone[p][2] if p in everyone else None for p in pids}
        else:
            ticks = {p: _process_ticks(p) for p in pids}
        return cls(wall_s, ticks, tuple(cores), host, everyone)


def _descendants(roots, everyone: dict[int, tuple[str, int, int]]) -> set[int]:
    """``roots`` and every process below them in ``everyone``'s parent links."""
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in everyone.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def outside_cpu(a: CpuSnapshot, b: CpuSnapshot) -> dict:
    """CPU the run did not use between two snapshots: processes outside the watched ones' trees (% of one core;
    those that ran and exited in between count too), the busiest of them, and the hypervisor's steal (% of the host)."""
    wall = b.wall_s - a.wall_s
    out = {"outside_cpu_percent": math.nan, "outside_top": "", "host_steal_percent": math.nan}
    if len(a.host) < 3 or len(b.host) < 3 or wall <= 0:
        return out
    (used0, steal0, total0), (used1, steal1, total1) = a.host[:3], b.host[:3]
    if total1 > total0:
        out["host_steal_percent"] = 100.0 * (steal1 - steal0) / (total1 - total0)
    if not a.everyone or not b.everyone:
        return out
    run = _descendants(a.processes, {**a.everyone, **b.everyone})

    def since(pid: int) -> int:  # a process born in between counts from zero (a reused pid, too)
        return max(0, b.everyone[pid][2] - (a.everyone[pid][2] if pid in a.everyone else 0))

    # A run process that exited in between (an instance killed by chaos) counts as outside: its last ticks are lost.
    run_ticks = sum(since(p) for p in b.everyone if p in run)
    # The host's user and system time less the run's: what other processes (and kernel threads) took, including
    # those too short-lived to be seen in either snapshot. Interrupt time is left out: the run's traffic causes it.
    outside = max(0, (used1 - used0) - run_ticks)
    out["outside_cpu_percent"] = 100.0 * outside / _TICKS_PER_S / wall
    others = [(since(p), p) for p in b.everyone if p not in run]
    ticks, pid = max(others, default=(0, 0))
    if ticks > 0:
        out["outside_top"] = f"{b.everyone[pid][0]} (pid {pid}) {100.0 * ticks / _TICKS_PER_S / wall:.0f}%"
    return out


def cpu_between(a: CpuSnapshot, b: CpuSnapshot) -> dict:
    """Per-process CPU % (of one core), host busy % (mean and busiest core) and ``outside_cpu``'s figures between
    two snapshots."""
    wall = b.wall_s - a.wall_s
    procs = {}
    for pid, t0 in a.processes.items():
        t1 = b.processes.get(pid)
        procs[pid] = (
            100.0 * (t1 - t0) / _TICKS_PER_S / wall if t0 is not None and t1 is not None and wall > 0 else math.nan
        )
    cores = []
    for (busy0, total0), (busy1, total1) in zip(a.cores, b.cores):
        cores.append(100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else math.nan)
    finite = [c for c in cores if math.isfinite(c)]
    return {
        "process_cpu_percent": procs,
        "host_cpu_percent": sum(finite) / len(finite) if finite else math.nan,
        "host_core_max_percent": max(finite) if finite else math.nan,
        **outside_cpu(a, b),
    }


class PhaseMonitor:
    """CPU counters over one phase's load: the first snapshot at ``start_epoch`` (not at the lead-in before it),
    the second at ``finish()``; ``at_start`` (e.g. resetting the dispatcher's loop-lag window) runs with the first."""

    def __init__(self, pids, start_epoch: float, at_start=None):
        self.pids = list(pids)
        self.first: CpuSnapshot | None = None
        self._at_start = at_start
        self._timer = threading.Timer(max(0.0, start_epoch - time.time()), self._start)
        self._timer.daemon = True
        self._timer.start()

    def _start(self) -> None:
        if self._at_start is not None:
            try:
                self._at_start()
            except Exception:  # a measurement aid: a failure leaves its figure NaN, never stops the phase
                pass
        self.first = CpuSnapshot.take(self.pids)

    def finish(self) -> dict:
        """CPU use since the phase's start (``cpu_between``' figures)."""
        self._timer.cancel()
        if self.first is None:
            self._start()
        return cpu_between(self.first, CpuSnapshot.take(self.pids))
