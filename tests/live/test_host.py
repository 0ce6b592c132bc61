"""Host CPU figures from /proc counters, and the dispatcher-side loop-lag sampler."""

import asyncio
import math
import os
import time

import pytest

from harness.live.host import CpuSnapshot, PhaseMonitor, cpu_between, outside_cpu
from servers.loop_lag import LoopLag


def test_cpu_between_turns_ticks_into_percentages():
    a = CpuSnapshot(10.0, {1: 100, 2: None}, ((50, 100), (10, 100)))
    b = CpuSnapshot(12.0, {1: 100 + 2 * os.sysconf("SC_CLK_TCK") // 2, 2: 5}, ((150, 200), (30, 200)))
    out = cpu_between(a, b)
    assert out["process_cpu_percent"][1] == pytest.approx(50.0, abs=1)  # one second of CPU in two
    assert math.isnan(out["process_cpu_percent"][2])  # not running at the start
    assert out["host_cpu_percent"] == pytest.approx(60.0) and out["host_core_max_percent"] == pytest.approx(100.0)


def test_outside_cpu_is_the_hosts_time_less_the_run_trees_and_names_the_busiest_other_process():
    tck = os.sysconf("SC_CLK_TCK")
    # pid 10 is watched; 11 is its child, 12 a grandchild born mid-phase; 20 and 21 are outside; 22 ran and exited.
    a = CpuSnapshot(
        0.0,
        {10: 0},
        host=(1000, 50, 10_000),
        everyone={10: ("locust", 1, 0), 11: ("python3", 10, 100), 20: ("gcc", 5, 40), 21: ("kworker/0:1", 2, 0)},
    )
    b = CpuSnapshot(
        2.0,
        {10: tck // 2},
        host=(1000 + 3 * tck, 50 + tck // 5, 10_000 + 4 * tck),
        everyone={
            10: ("locust", 1, tck // 2),
            11: ("python3", 10, 100 + tck),
            12: ("python3", 11, tck // 2),
            20: ("gcc", 5, 40 + tck // 2),
            21: ("kworker/0:1", 2, tck // 10),
        },
    )
    out = outside_cpu(a, b)
    # 3 s of host CPU in 2 s; the run (10, 11, 12) used 2 s of it: 1 s outside, 50% of a core, the exited one included
    assert out["outside_cpu_percent"] == pytest.approx(50.0)
    assert out["outside_top"] == "gcc (pid 20) 25%"
    assert out["host_steal_percent"] == pytest.approx(5.0)
    assert cpu_between(a, b)["outside_cpu_percent"] == pytest.approx(50.0)
    # without /proc, nothing is claimed
    empty = outside_cpu(CpuSnapshot(0.0), CpuSnapshot(1.0))
    assert (
        math.isnan(empty["outside_cpu_percent"])
        and math.isnan(empty["host_steal_percent"])
        and not empty["outside_top"]
    )


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_a_process_outside_the_run_is_seen_busy_and_named():
    import subprocess
    import sys

    spin = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 1.0: pass"
    # The spinner is started by this process, so the watched set is a sibling's tree: an idle sleeper.
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        first = CpuSnapshot.take([idle.pid])
        busy = subprocess.Popen([sys.executable, "-c", spin])
        busy.wait(timeout=10)
        time.sleep(0.05)
        out = cpu_between(first, CpuSnapshot.take([idle.pid]))
    finally:
        idle.kill()
        idle.wait()
    # The spinner exited before the second snapshot: seen through the host's time, not by name.
    assert out["outside_cpu_percent"] > 40 and out["process_cpu_percent"][idle.pid] < 10


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
