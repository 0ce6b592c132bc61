"""The idle-wake benchmark: its table, and one small run against a real pinned server."""

from __future__ import annotations

import os

import pytest

from benchmarks import idle_wake
from benchmarks.idle_wake import Sample, summarize


def test_each_gap_is_set_against_its_batch_back_to_back():
    samples = [Sample(10, 0.0, 1.0, 0.2), Sample(10, 0.0, 1.2, 0.2), Sample(10, 8.0, 2.2, 0.3)]
    samples += [Sample(100, 0.0, 4.0, 2.0), Sample(100, 8.0, 5.0, 2.5)]
    table = summarize(samples).set_index(["batch", "gap_ms"])
    assert table.loc[(10, 0.0), "e2e_ms"] == pytest.approx(1.1)  # the median of the two
    assert table.loc[(10, 8.0), "e2e_vs_back_to_back"] == pytest.approx(1.0)
    assert table.loc[(10, 8.0), "compute_vs_back_to_back"] == pytest.approx(0.5)
    assert table.loc[(100, 8.0), "e2e_vs_back_to_back"] == pytest.approx(0.25)
    assert table.loc[(100, 0.0), "compute_vs_back_to_back"] == 0.0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may use")
def test_a_small_run_prints_every_batch_and_gap_and_leaves_this_process_unpinned(capsys):
    before = os.sched_getaffinity(0)
    argv = ["--model", "ncf", "--batches", "10,20", "--gaps-ms", "1", "--rounds", "1", "--samples", "3"]
    assert idle_wake.main(argv) == 0
    out = capsys.readouterr().out
    assert "ncf: server on core" in out
    for batch in (10, 20):
        for gap in (0, 1):
            assert f"batch {batch:>5}  gap {gap:>5g} ms: round trip" in out
    assert os.sched_getaffinity(0) == before
