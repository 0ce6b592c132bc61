"""Host CPU figures from /proc counters, and the dispatcher-side loop-lag sampler."""

import asyncio
import math
import os
import time

import pytest

from harness.live.host import CpuSnapshot, PhaseMonitor, cpu_between
from servers.loop_lag import LoopLag


def test_cpu_between_turns_ticks_into_percentages():
    a = CpuSnapshot(10.0, {1: 100, 2: None}, ((50, 100), (10, 100)))
    b = CpuSnapshot(12.0, {1: 100 + 2 * os.sysconf("SC_CLK_TCK") // 2, 2: 5}, ((150, 200), (30, 200)))
    out = cpu_between(a, b)
    assert out["process_cpu_percent"][1] == pytest.approx(50.0, abs=1)  # one second of CPU in two
    assert math.isnan(out["process_cpu_percent"][2])  # not running at the start
    assert out["host_cpu_percent"] == pytest.approx(60.0) and out["host_core_max_percent"] == pytest.approx(100.0)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_phase_monitor_measures_a_busy_process_from_its_start():
    calls = []
    start = time.time() + 0.1
    mon = PhaseMonitor([os.getpid()], start, at_start=lambda: calls.append(1))
    time.sleep(0.15)  # idle before the start does not count; busy after it does
    t, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t < 0.4:
        pass
    cpu_s = time.process_time() - cpu0
    out = mon.finish()
    # What this process really got since the start (other jobs on the host may take part of a core from it).
    expected = 100.0 * cpu_s / (time.time() - start)
    assert calls == [1] and expected > 20
    assert out["process_cpu_percent"][os.getpid()] == pytest.approx(expected, abs=max(10.0, 0.15 * expected))


async def test_loop_lag_sees_a_blocked_loop_and_resets():
    lag = LoopLag(interval_s=0.01)
    task = asyncio.create_task(lag.run())
    await asyncio.sleep(0.05)
    time.sleep(0.06)  # block the loop
    await asyncio.sleep(0.05)
    first = lag.take()
    assert first["loop_lag_max_ms"] >= 40 and first["loop_lag_samples"] >= 3
    await asyncio.sleep(0.05)
    second = lag.take()
    task.cancel()
    assert second["loop_lag_max_ms"] < 40
    assert LoopLag().take()["loop_lag_samples"] == 0
