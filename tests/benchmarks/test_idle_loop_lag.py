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
