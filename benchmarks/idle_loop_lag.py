"""The host alone: how late an idle asyncio loop's 10 ms timer fires (``servers.loop_lag``, as in the dispatcher),
per window, with the kernel's dirty and writeback memory beside it (e.g. run it while ``pip install`` fills a fresh
venv, then during the writeback).

Run: python benchmarks/idle_loop_lag.py [--seconds 120] [--window-s 5] [--interval-s 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servers.loop_lag import LoopLag


@dataclass(frozen=True)
class LagWindow:
    """One window: the timer's lateness (ms) and the kernel's dirty and writeback memory at its end (kB)."""

    p99_ms: float
    max_ms: float
    dirty_kb: int
    writeback_kb: int


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
    try:
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(window_s, left))
            taken = lag.take()
            if taken["loop_lag_samples"]:
                windows.append(LagWindow(taken["loop_lag_p99_ms"], taken["loop_lag_max_ms"], *memory_kb()))
                on_window(windows[-1])
    finally:
        task.cancel()
    return windows


def main(argv: list[str] | None = None) -> None:
    """Print one line per window as it ends."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--interval-s", type=float, default=0.01, help="the timer (default 0.01; the dispatcher's: 0.05)")
    args = ap.parse_args(argv)

    def show(w: LagWindow) -> None:
        print(
            f"{time.strftime('%H:%M:%S')} lag p99 {w.p99_ms:.1f} max {w.max_ms:.1f} ms; "
            f"dirty {w.dirty_kb} kB, writeback {w.writeback_kb} kB",
            flush=True,
        )

    asyncio.run(measure(args.seconds, args.window_s, args.interval_s, show))


if __name__ == "__main__":
    main()
