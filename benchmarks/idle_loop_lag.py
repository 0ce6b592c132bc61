"""The host alone: how late an asyncio loop's 10 ms timer fires (``servers.loop_lag``, as in the dispatcher), per
window, with the hypervisor's steal and the kernel's dirty and writeback memory beside it (e.g. run it while ``pip
install`` fills a fresh venv, or beside a live run), and at the end the lateness by how much the hypervisor stole.

Run: python benchmarks/idle_loop_lag.py [--seconds 120] [--window-s 5] [--interval-s 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.live.host import CpuSnapshot, outside_cpu
from servers.loop_lag import LoopLag

STEAL_BANDS = (0.0, 2.0, 5.0, 10.0, math.inf)  # % of the host's CPU


@dataclass(frozen=True)
class LagWindow:
    """One window: the timer's lateness (ms), the kernel's dirty and writeback memory at its end (kB), and the
    hypervisor's steal over it (% of the host's CPU; NaN without /proc)."""

    p99_ms: float
    max_ms: float
    dirty_kb: int
    writeback_kb: int
    steal_percent: float = math.nan


def by_steal(windows: list[LagWindow], bands=STEAL_BANDS) -> list[tuple[float, float, int, float, float]]:
    """(low, high, windows, median and largest of their max lateness in ms) per steal band that holds any."""
    rows = []
    for low, high in zip(bands, bands[1:]):
        late = [w.max_ms for w in windows if low <= w.steal_percent < high]
        if late:
            rows.append((low, high, len(late), float(np.median(late)), max(late)))
    return rows


def memory_kb(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(Dirty, Writeback) in kB, (-1, -1) where the file cannot be read."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        return int(fields["Dirty"].split()[0]), int(fields["Writeback"].split()[0])
    except (OSError, KeyError, ValueError):
        return -1, -1


async def measure(
    seconds: float, window_s: float, interval_s: float = 0.01, on_window: Callable[[LagWindow], None] = lambda w: None
) -> list[LagWindow]:
    """Windows of the timer's lateness (the dispatcher's own ``LoopLag``, here every ``interval_s``) until
    ``seconds`` have passed; ``on_window`` sees each as it ends."""
    lag = LoopLag(interval_s)
    task = asyncio.create_task(lag.run())
    windows, end = [], time.monotonic() + seconds
    before = CpuSnapshot.take([], every_process=False)  # the host's counters only: one file, not the loop's time
    try:
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(window_s, left))
            taken, now = lag.take(), CpuSnapshot.take([], every_process=False)
            steal = outside_cpu(before, now)["host_steal_percent"]
            before = now
            if taken["loop_lag_samples"]:
                windows.append(LagWindow(taken["loop_lag_p99_ms"], taken["loop_lag_max_ms"], *memory_kb(), steal))
                on_window(windows[-1])
    finally:
        task.cancel()
    return windows


def main(argv: list[str] | None = None) -> None:
    """Print one line per window as it ends, then the lateness per steal band."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--interval-s", type=float, default=0.01, help="the timer (default 0.01; the dispatcher's: 0.05)")
    args = ap.parse_args(argv)

    def show(w: LagWindow) -> None:
        print(
            f"{time.strftime('%H:%M:%S')} lag p99 {w.p99_ms:.1f} max {w.max_ms:.1f} ms; steal {w.steal_percent:.1f}%; "
            f"dirty {w.dirty_kb} kB, writeback {w.writeback_kb} kB",
            flush=True,
        )

    windows = asyncio.run(measure(args.seconds, args.window_s, args.interval_s, show))
    print("steal %      windows  lateness max per window: median  largest (ms)")
    for low, high, n, median, largest in by_steal(windows):
        print(f"[{low:g}, {high:g}){'':<6} {n:>7}  {median:>30.1f}  {largest:>7.1f}")


if __name__ == "__main__":
    main()
