"""The host alone: how late an idle asyncio loop's 10 ms timer fires, per window, with the kernel's dirty and
writeback memory beside it (e.g. run it while ``pip install`` fills a fresh venv, then during the writeback).

Run: python benchmarks/idle_loop_lag.py [--seconds 120] [--window-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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


async def measure(seconds: float, window_s: float, tick_s: float = 0.01) -> list[LagWindow]:
    """Windows of the timer's lateness until ``seconds`` have passed."""
    windows, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        lags, w_end = [], time.monotonic() + window_s
        while time.monotonic() < w_end:
            t0 = time.monotonic()
            await asyncio.sleep(tick_s)
            lags.append((time.monotonic() - t0 - tick_s) * 1e3)
        windows.append(LagWindow(float(np.percentile(lags, 99)), float(max(lags)), *memory_kb()))
    return windows


def main(argv: list[str] | None = None) -> None:
    """Print one line per window as it ends."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--window-s", type=float, default=5.0)
    args = ap.parse_args(argv)

    async def run() -> None:
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            (w,) = await measure(min(args.window_s, end - time.monotonic()), args.window_s)
            print(
                f"{time.strftime('%H:%M:%S')} lag p99 {w.p99_ms:.1f} max {w.max_ms:.1f} ms; "
                f"dirty {w.dirty_kb} kB, writeback {w.writeback_kb} kB",
                flush=True,
            )

    asyncio.run(run())


if __name__ == "__main__":
    main()
