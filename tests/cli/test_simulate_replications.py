"""``kairos simulate --replications R``: R independent allowable searches per policy, a mean and a 95% interval."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from traces.generate import generate_trace
from traces.io import write_trace

# Short points and a coarse bracket: the test is about what is replicated and reported, not about the figures.
FAST = ["--min-queries", "300", "--min-duration-s", "1", "--criterion", "p99", "--tolerance", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def bursty_trace(tmp_path_factory) -> str:
    """4,000 queries of gamma arrivals (gap CV ~4), longer than --queries so each replicate gets its own window."""
    trace = generate_trace(4000, 5.0, arrivals="gamma:0.06", model="rm2", rng=np.random.default_rng(3))
    return str(write_trace(trace, tmp_path_factory.mktemp("trace") / "bursty.parquet"))


def run_json(capsys, *argv) -> dict:
    assert main(["simulate", "--json", *FAST, *argv]) == 0
    return {r["policy"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


def test_three_replications_report_a_mean_inside_a_positive_width_interval(capsys, tmp_path, bursty_trace):
    out = tmp_path / "run"
    common = ["--trace", bursty_trace, "--allowable", "--scale", "thin", "--queries", "1000", "--seed", "7"]
    res = run_json(capsys, *common, "--policy", "fcfs,kairos", "--replications", "3", "--out", str(out))
    for r in res.values():
        reps = r["replicates"]
        assert r["replications"] == 3 and [x["replicate"] for x in reps] == [0, 1, 2]
        assert [x["seed"] for x in reps] == [7, 8, 9]
        assert len({x["start_query"] for x in reps}) == 3  # each replicate on its own window of the trace
        figures = [x["allowable_qps"] for x in reps]
        assert r["allowable_qps"] == pytest.approx(np.mean(figures)) and r["none_replicates"] == 0
        assert r["allowable_low_qps"] < r["allowable_qps"] < r["allowable_high_qps"]
        assert "t-interval" in r["allowable_method"]
    summary = pd.read_parquet(out / "summary.parquet")
    for policy, rows in summary.groupby("dispatcher"):
        assert set(rows["replicate"]) == {0, 1, 2} and set(rows["replicate_seed"]) == {7, 8, 9}
        assert (rows["allowable_qps"] == res[policy]["allowable_qps"]).all()
        assert (rows["allowable_low_qps"] == res[policy]["allowable_low_qps"]).all()
        per_search = rows.groupby("replicate")["replicate_allowable_qps"].first().tolist()
        assert per_search == [x["allowable_qps"] for x in res[policy]["replicates"]]
    assert json.loads((out / "run.json").read_text())["config"]["replications"] == 3


def test_one_replication_is_the_plain_search_with_no_interval(capsys, tmp_path, bursty_trace):
    common = ["--trace", bursty_trace, "--allowable", "--scale", "thin", "--queries", "1000", "--policy", "fcfs"]
    plain = run_json(capsys, *common)["fcfs"]
    one = run_json(capsys, *common, "--replications", "1", "--out", str(tmp_path / "run"))["fcfs"]
    assert not {"allowable_low_qps", "allowable_high_qps", "replicates", "replications"} & set(one)
    assert one["allowable_qps"] == plain["allowable_qps"] and one["bracket_qps"] == plain["bracket_qps"]
    summary = pd.read_parquet(tmp_path / "run" / "summary.parquet")
    assert "replicate" not in summary and "allowable_low_qps" not in summary


def test_the_table_shows_the_interval_and_every_search(capsys, bursty_trace):
    argv = ["simulate", *FAST, "--trace", bursty_trace, "--scale", "thin", "--queries", "1000", "--policy", "fcfs"]
    assert main([*argv, "--allowable", "--replications", "2"]) == 0
    out = capsys.readouterr().out
    assert "95% interval" in out and "per replicate" in out and "mean of 2 searches (seeds 0..1" in out


def test_without_a_trace_each_replicate_generates_its_own(capsys):
    r = run_json(capsys, "--allowable", "--queries", "1000", "--policy", "fcfs", "--replications", "2")["fcfs"]
    assert [x["start_query"] for x in r["replicates"]] == [0, None] and [x["seed"] for x in r["replicates"]] == [0, 1]
    assert r["allowable_low_qps"] <= r["allowable_qps"] <= r["allowable_high_qps"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--replications", "0"], "kairos simulate: error: --replications 0: must be >= 1"),
        (
            ["--replications", "2", "--rate", "5"],
            "kairos simulate: error: --replications 2: repeats the allowable search: use it with --allowable",
        ),
    ],
)
def test_bad_replications_are_refused(capsys, extra, message):
    assert main(["simulate", "--queries", "10", "--quiet", *extra]) == 2
    assert capsys.readouterr().err.startswith(message)
