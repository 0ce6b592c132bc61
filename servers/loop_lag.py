"""Event-loop lag: how late a timer fires in a server's loop, the first sign that the process, not the work, is slow.

A task sleeps ``interval_s`` over and over and notes how much later than asked it woke. A loop busy with callbacks (or
a process starved of CPU) wakes it late; an idle loop wakes it within a fraction of a millisecond. ``take()`` returns
the percentiles since the last call and starts afresh, so a caller can read one phase's lag.
"""

from __future__ import annotations

import asyncio

import numpy as np


class LoopLag:
    """Samples the running loop's lag every ``interval_s``; ``take()`` reads and resets."""

    def __init__(self, interval_s: float = 0.05, keep: int = 100_000):
        self.interval_s = interval_s
        self.keep = keep
        self.samples_ms: list[float] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval_s)
            if len(self.samples_ms) < self.keep:
                self.samples_ms.append(max(0.0, (loop.time() - t0 - self.interval_s) * 1e3))

    def take(self) -> dict:
        """p50, p99 and max lag (ms) and the sample count since the last take; the samples are then dropped."""
        samples, self.samples_ms = self.samples_ms, []
        if not samples:
            return {"loop_lag_p50_ms": None, "loop_lag_p99_ms": None, "loop_lag_max_ms": None, "loop_lag_samples": 0}
        arr = np.asarray(samples)
        return {
            "loop_lag_p50_ms": float(np.percentile(arr, 50)),
            "loop_lag_p99_ms": float(np.percentile(arr, 99)),
            "loop_lag_max_ms": float(arr.max()),
            "loop_lag_samples": len(samples),
        }
