"""The idle-loop lag probe."""

from __future__ import annotations

import asyncio

from benchmarks import idle_loop_lag


def test_windows_time_the_timer_and_read_the_kernels_memory(tmp_path):
    windows = asyncio.run(idle_loop_lag.measure(0.3, 0.1))
    assert 2 <= len(windows) <= 4
    assert all(0.0 <= w.p99_ms <= w.max_ms for w in windows)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nDirty:          741568 kB\nWriteback:        3168 kB\n")
    assert idle_loop_lag.memory_kb(meminfo) == (741568, 3168)
    assert idle_loop_lag.memory_kb(tmp_path / "absent") == (-1, -1)


def test_lateness_is_grouped_by_how_much_the_hypervisor_stole():
    def w(max_ms, steal):
        return idle_loop_lag.LagWindow(1.0, max_ms, 0, 0, steal)

    windows = [w(1.0, 0.5), w(3.0, 1.0), w(2.0, 1.5), w(9.0, 12.0), w(5.0, float("nan")), w(4.0, 3.0)]
    # NaN steal (no /proc) falls in no band; an empty band is left out
    assert idle_loop_lag.by_steal(windows) == [
        (0.0, 2.0, 3, 2.0, 3.0),
        (2.0, 5.0, 1, 4.0, 4.0),
        (10.0, float("inf"), 1, 9.0, 9.0),
    ]
