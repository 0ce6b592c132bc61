"""The reply-path probe against real server processes on loopback."""

from __future__ import annotations

import math

import pytest

from benchmarks import reply_path


@pytest.mark.timeout(120)
def test_every_path_and_hold_is_timed_from_the_servers_stamp():
    rows = reply_path.measure((0.0, 3.0), samples=10, warmup=5)
    assert [(r.path, r.hold_ms) for r in rows] == [
        (path, hold) for path in ("socket/socket", "aiohttp/socket", "aiohttp/http.client") for hold in (0.0, 3.0)
    ]
    for r in rows:
        # Stamped by the server as it built the reply, so the hold itself is not in it: far below 3 ms on loopback.
        assert math.isfinite(r.mean_ms) and 0.0 < r.median_ms < 3.0, r
