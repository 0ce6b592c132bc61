"""Host CPU during a phase: each process the run started, and every core, from Linux's /proc counters.

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


def _process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks (None once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])


def _core_ticks() -> list[tuple[int, int]]:
    """(busy, total) ticks per core from /proc/stat; empty when unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if line.startswith("cpu") and line[3:4].isdigit():
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            out.append((sum(values) - idle, sum(values)))
    return out


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one moment: wall clock, ticks per watched process, (busy, total) ticks per core."""

    wall_s: float
    processes: dict[int, int | None] = field(default_factory=dict)
    cores: tuple[tuple[int, int], ...] = ()

    @classmethod
    def take(cls, pids) -> CpuSnapshot:
        """Read the counters of ``pids`` and of every core now."""
        return cls(time.monotonic(), {p: _process_ticks(p) for p in pids}, tuple(_core_ticks()))


def cpu_between(a: CpuSnapshot, b: CpuSnapshot) -> dict:
    """Per-process CPU % (of one core) and host busy % (mean and busiest core) between two snapshots."""
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
