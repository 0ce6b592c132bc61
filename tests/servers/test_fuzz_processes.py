"""Bad input at scale against the servers as real processes: no 5xx, no crash, no lasting memory growth.

``benchmarks/fuzz_servers.py`` starts the ONNX model server, an emulated instance and a dispatcher (two emulated
instances behind it) as processes, warms them up with malformed requests, reads each process's VmRSS, sends a
thousand more malformed requests to each, and reads VmRSS again. A leak per bad request (a buffer kept, a task never
finished, a record never dropped) shows as growth here long before it shows in production.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import fuzz_servers

GROWTH_LIMIT_KB = 50 * 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_thousands_of_malformed_requests_leave_no_5xx_no_crash_and_no_lasting_growth(model_dir):
    report = fuzz_servers.run(requests=1000, warmup=300, seed=1, model_dir=model_dir)
    print(fuzz_servers.format_report(report))
    for name, r in report.servers.items():
        assert not r.exited, f"{name} exited"
        assert r.rss_before_kb and r.rss_after_kb, name
        assert r.rss_after_kb - r.rss_before_kb < GROWTH_LIMIT_KB, (name, r.rss_before_kb, r.rss_after_kb)
    for name in fuzz_servers.SERVERS:
        r = report.servers[name]
        assert r.requests == 1000 and not r.failures, (name, r.failures[:3])
        assert r.server_errors == 0, (name, r.by_kind)
        # Every request is malformed: each a 4xx with a JSON error (a negative status marks one without).
        assert all(400 <= s < 500 for s in r.statuses), (name, r.statuses, r.by_kind)
