"""The dispatcher's counters: finished requests by policy and status, and a latency histogram of served ones."""

from __future__ import annotations

import bisect

from harness.core.records import OK

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 350, 500, 1000, 2000, 5000, 10000)


class RequestStats:
    """Finished requests by (policy, status), and a latency histogram of the served ones per policy."""

    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.latency_sum_ms: dict[str, float] = {}

    def count(self, policy: str, status: str, latency_ms: float) -> None:
        """Count one finished request (its latency only when it was served)."""
        key = (policy, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        if status == OK:
            hist = self.hist.setdefault(policy, [0] * (len(LATENCY_BUCKETS_MS) + 1))
            hist[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1  # first bucket with latency <= le
            self.latency_sum_ms[policy] = self.latency_sum_ms.get(policy, 0.0) + latency_ms
