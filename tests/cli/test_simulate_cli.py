import json

import pandas as pd
import pytest

from harness.cli import main


def run_json(capsys, *argv):
    assert main(["simulate", "--json", "--quiet", *argv]) == 0
    return {r["policy"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


@pytest.mark.slow
def test_paper_setup_kairos_doubles_fcfs_allowable_throughput(capsys):
    res = run_json(
        capsys,
        "--model",
        "rm2",
        "--config",
        "g4dn.xlarge=2,r5n.large=9",
        "--qos-ms",
        "350",
        "--arrivals",
        "poisson",
        "--batch-mix",
        "kairos",
        "--allowable",
        "--policy",
        "kairos,fcfs",
        "--queries",
        "20000",
    )
    k, f = res["kairos"], res["fcfs"]
    assert k["allowable_qps"] >= 2.0 * f["allowable_qps"] > 0
    for r in (k, f):
        lo, hi = r["bracket_qps"]
        assert lo == r["allowable_qps"] < hi <= lo * 1.03
        assert r["p99_ms"] <= 350 and r["valid"]
        assert {"policy", "queries", "p99_ms", "violation_rate", "allowable_qps", "bracket_qps"} <= set(r)


def test_fixed_rate_run_reports_rate_and_writes_parquet(capsys, tmp_path):
    res = run_json(
        capsys, "--policy", "fcfs,least_outstanding", "--rate", "60", "--queries", "3000", "--out", str(tmp_path)
    )
    assert res["fcfs"]["rate_qps"] == 60 and res["fcfs"]["queries"] == 3000
    queries = pd.read_parquet(tmp_path / "queries.parquet")
    assert len(queries) == 6000 and set(queries["policy"]) == {"fcfs", "least_outstanding"}
    assert len(pd.read_parquet(tmp_path / "summary.parquet")) == 2


def test_shipped_trace_replays(capsys):
    from traces.io import sample_path

    res = run_json(capsys, "--trace", str(sample_path()), "--policy", "kairos", "--rate", "70", "--queries", "4000")
    assert res["kairos"]["queries"] == 4000 and res["kairos"]["violation_rate"] < 0.05


def write(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "frame, extra, needle",
    [
        (pd.DataFrame({"arrival_s": [0.0, 1.0], "model": ["rm2"] * 2}), [], "missing column(s) 'batch_size'"),
        (
            pd.DataFrame({"arrival_s": [0.0, 2.0, 1.0], "batch_size": [10] * 3, "model": ["rm2"] * 3}),
            [],
            "column 'arrival_s', row 3",
        ),
        (
            pd.DataFrame({"arrival_s": [0.0, 1.0], "batch_size": [10, 0], "model": ["rm2"] * 2}),
            [],
            "column 'batch_size', row 2",
        ),
        (
            pd.DataFrame({"arrival_s": [0.0, 1.0], "batch_size": [10, 10], "model": ["rm2"] * 2}),
            ["--config", "p3.2xlarge=1"],
            "unknown instance type 'p3.2xlarge'",
        ),
        (
            pd.DataFrame({"arrival_s": [0.0, 1.0], "batch_size": [10, 10], "model": ["bert"] * 2}),
            ["--qos-ms", "10"],
            "unknown model 'bert'",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, frame, extra, needle):
    path = write(tmp_path, frame)
    assert main(["simulate", "--trace", path, "--rate", "10", "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "r5n.large=x"], "kairos simulate: error: --config 'r5n.large=x': count must be an integer"),
        (["--policy", "kairos:nope=1"], "kairos simulate: error: --policy 'kairos:nope=1': 'nope=1' is not a tunable"),
        (["--model", "bert"], "kairos simulate: error: --qos-ms is required for model 'bert'"),
        (["--criterion", "p99", "--batch-mix", "fixed:0"], "kairos simulate: error: --batch-mix 'fixed:0': N must be"),
    ],
)
def test_errors_name_the_option_the_user_typed(capsys, args, message):
    assert main(["simulate", "--rate", "1", "--queries", "10", "--quiet", *args]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_unknown_policy_and_missing_file(capsys, tmp_path):
    assert main(["simulate", "--policy", "magic", "--rate", "1"]) == 2
    assert "unknown policy" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(tmp_path / "none.parquet"), "--rate", "1"]) == 2
    assert "none.parquet" in capsys.readouterr().err
