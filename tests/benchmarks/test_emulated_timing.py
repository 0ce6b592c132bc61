"""The emulated reply-timing benchmark against a real emulated instance process."""

from __future__ import annotations

import pytest

from benchmarks import emulated_timing
from servers.emulated import REPLY_EARLY_MAX_MS, EmulatedConfig
from servers.process import spawn_server, stop_processes


@pytest.mark.timeout(60)
def test_replies_land_near_the_sampled_time():
    proc = spawn_server("emulated", EmulatedConfig("r5n.large", "rm2"), name="emulated")
    try:
        empty_ms, rows = emulated_timing.measure(proc.url, "rm2", (10, 100), samples=10, warmup=10)
    finally:
        stop_processes([proc])
    assert 0 < empty_ms < 50
    assert [r.batch_size for r in rows] == [10, 100]
    by_batch = {r.batch_size: r for r in rows}
    assert 2.0 < by_batch[10].sampled_ms < by_batch[100].sampled_ms  # the r5n.large buckets: ~6 and ~43 ms
    for r in rows:
        # The instance wakes at most the cap before its due end; later than that only on a host it cannot keep up on.
        assert -REPLY_EARLY_MAX_MS - 0.5 < r.wake_minus_due_ms < 20.0, r
        assert -5.0 < r.excess_ms < 50.0, r
