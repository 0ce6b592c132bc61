"""MLPerf LoadGen's Server scenario end to end against a small emulated pool behind the dispatcher (one short point)."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks import loadgen_compare

VALID_SUMMARY = """\
Completed samples per second    : 194.58
Result is : VALID
  Performance constraints satisfied : Yes
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: Yes
Early Stopping Result:
 * Run successful.

Scheduled samples per second : 197.91
Max latency (ns)                : 62417491
50.00 percentile latency (ns)   : 50513014
99.00 percentile latency (ns)   : 55768264
"""


def test_parse_summary_reads_verdict_rate_and_p99():
    s = loadgen_compare.parse_summary(VALID_SUMMARY)
    assert s.valid and s.early_stopping_ok and s.min_duration_ok
    assert s.achieved_qps == pytest.approx(194.58)
    assert s.p99_ms == pytest.approx(55.768264)
    assert s.early_stopping == "Run successful."
    with pytest.raises(ValueError):
        loadgen_compare.parse_summary("not a summary")


def test_search_brackets_the_limit_and_runs_bounds_only_when_reached():
    def fake(limit_qps):
        def evaluate(qps):
            summary = loadgen_compare.parse_summary(
                VALID_SUMMARY.replace("VALID", "VALID" if qps <= limit_qps else "INVALID")
            )
            return loadgen_compare.PointResult(qps, summary, Counter({"200": 1}))

        return evaluate

    found = loadgen_compare.search_limit(fake(270.0), 200.0, 320.0, 0.02)
    lo, hi = found.bracket_qps
    assert lo <= 270.0 < hi and hi - lo <= 0.02 * lo and found.limit_qps == lo
    assert 200.0 not in [p.target_qps for p in found.points]
    assert loadgen_compare.search_limit(fake(100.0), 200.0, 320.0, 0.02).limit_qps is None
    assert loadgen_compare.search_limit(fake(500.0), 200.0, 320.0, 0.02).limit_qps == 320.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_short_loadgen_server_point_is_valid(tmp_path):
    pytest.importorskip("mlperf_loadgen", reason="the optional extra: pip install mlcommons-loadgen")
    # Batch 10 on one instance of each type: ~5 ms service, so 120 qps is light load; 600 queries in 5 s are enough
    # for LoadGen's early stopping to pass a p99 with no query over the target (at least 459 are needed).
    settings = loadgen_compare.PointSettings(qos_ms=350.0, min_duration_s=5.0, min_queries=100)
    with loadgen_compare.serving_stack("g4dn.xlarge=1,r5n.large=1", "rm2", "kairos", 350.0, 0, tmp_path) as stack:
        sender = loadgen_compare.JsonSender(stack.url, "rm2", loadgen_compare.json_request("rm2", 10))
        try:
            assert sender.warm_up(4) == {"200": 4}
            point = loadgen_compare.run_point(sender, 120.0, settings, tmp_path / "point", stack.meter())
        finally:
            sender.close()
    s = point.summary
    assert (tmp_path / "point" / "mlperf_log_summary.txt").exists()
    assert s.valid and point.valid and point.errors == 0, (s, point.statuses)
    assert s.early_stopping_ok and s.min_duration_ok and s.min_queries_ok
    assert 0 < s.p99_ms < 350.0
    assert s.achieved_qps == pytest.approx(120.0, rel=0.2)
    assert point.statuses["200"] >= 500
    assert set(point.cpu_pct) == {"dispatcher", "instances", "loadgen", "host"}
