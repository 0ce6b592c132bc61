"""Service against the profile by the server's idle time before each query, read back from a run folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import idle_gap_service


def _profile(path):
    rows = [
        {"instance_type": "x", "model": "rm2", "batch_size": b, "compute_ms": ms, "load_ms": 0.0}
        for b, ms in ((10, 10.0), (20, 20.0))
        for _ in range(5)
    ]
    pd.DataFrame(rows).to_parquet(path)


def _queries():
    # (instance, batch, start s, service ms, status): on a, back to back, then after 4 ms idle, then after 20 ms.
    rows = [
        ("a", 10, 0.000, 10.0, "ok"),  # first on its instance: no gap to speak of
        ("a", 10, 0.010, 9.0, "ok"),  # queued: 10% faster than profiled
        ("a", 10, 0.023, 12.0, "ok"),  # 4 ms idle: 20% slower
        ("a", 20, 0.055, 26.0, "ok"),  # 20 ms idle, batch 20: 30% slower
        ("a", 10, 0.0811, 50.0, "failed"),  # not served: left out
        ("b", 10, 0.000, 99.0, "ok"),  # the only query on b: no gap
    ]
    frame = pd.DataFrame(rows, columns=["instance_id", "batch_size", "start_s", "service_ms", "status"])
    return frame.assign(instance_type="x", finish_s=frame["start_s"] + frame["service_ms"] / 1e3)


def test_queries_are_grouped_by_the_idle_time_before_them(tmp_path):
    from harness.core.profiles import Profile

    _profile(tmp_path / "p.parquet")
    table = idle_gap_service.excess_by_gap(_queries(), Profile.load(tmp_path / "p.parquet"), "rm2")
    got = {r.gap: (r.queries, round(r.median_excess, 3)) for r in table.itertuples()}
    assert got == {"busy (<0.3)": (1, -0.1), "2-5": (1, 0.2), ">10": (1, 0.3), "all": (3, 0.2)}


def test_a_run_folder_is_read_with_the_profile_it_kept_and_says_whether_it_was_pinned(tmp_path, capsys):
    run = tmp_path / "run-1"
    run.mkdir()
    _profile(run / "profile.parquet")
    _queries().to_parquet(run / "dispatcher.parquet")
    (run / "run.json").write_text(json.dumps({"model": "rm2", "pool_config": "x=2", "harness_cpus": "0"}))
    assert idle_gap_service.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "run-1 (x=2, rm2; pinned, harness on cores 0)" in out
    assert "busy (<0.3): -10% (n=1); 2-5: +20% (n=1); >10: +30% (n=1); all: +20% (n=3)" in out
    with pytest.raises(FileNotFoundError):
        idle_gap_service.read_run(tmp_path / "missing")
