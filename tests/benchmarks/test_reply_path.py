"""The request/reply path probe against real server processes on loopback."""

from __future__ import annotations

import math

import pytest

from benchmarks import reply_path


@pytest.mark.timeout(120)
def test_every_path_and_wait_is_timed_from_the_servers_stamps():
    rows = reply_path.measure((0.0, 20.0), samples=10, warmup=5)
    assert [(r.path, r.hold_ms) for r in rows] == [(path, hold) for path in reply_path.PATHS for hold in (0.0, 20.0)]
    for r in rows:
        # Stamped by the server on arrival and as it built the reply, so neither the hold nor the client's wait is in
        # these: about 1 ms on loopback, far below the 20 ms hold (a 3 ms hold left too little room: a stalled host
        # once made the round trip outside the server 4.1 ms), and the round trip outside the server is both ways.
        assert all(math.isfinite(x) and 0.0 < x < 10.0 for x in (r.in_ms, r.back_ms, r.outside_ms)), r
        assert r.outside_ms >= max(r.in_ms, r.back_ms), r
