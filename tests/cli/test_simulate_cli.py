import json

import pandas as pd
import pytest

from harness.cli import main


def strict(line: str) -> dict:
    """One line as RFC 8259 JSON: jq and JSON.parse reject NaN and Infinity, so this does too."""
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON: {line}"))


def run_json(capsys, *argv):
    assert main(["simulate", "--json", "--quiet", *argv]) == 0
    return {r["policy"]: r for r in map(strict, capsys.readouterr().out.splitlines())}


def test_json_lines_are_strict_where_the_tail_is_unserved(capsys):
    # clockwork drops the queries it can no longer serve in time: far past capacity its p99 is infinite, and null here
    argv = ["--model", "rm2", "--config", "g4dn.xlarge=2,r5n.large=9", "--qos-ms", "350", "--queries", "5000"]
    r = run_json(capsys, *argv, "--policy", "clockwork,fcfs", "--rate", "200")
    assert r["clockwork"]["p99_ms"] is None and r["clockwork"]["violation_rate"] > 0.01
    assert r["fcfs"]["p99_ms"] > 350 and r["fcfs"]["p99_ci_ms"][0] <= r["fcfs"]["p99_ms"]


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


def _bursts(tmp_path) -> str:
    """12 bursts of 120 queries, each burst at one instant, every 10 s: more than the pool clears within the QoS."""
    arrival_s = [10.0 * i for i in range(12) for _ in range(120)]
    batch_size = [50, 100, 150, 200] * (len(arrival_s) // 4)
    return write(tmp_path, pd.DataFrame({"arrival_s": arrival_s, "batch_size": batch_size, "model": "rm2"}))


def test_scale_thin_finds_an_allowable_rate_where_time_scaling_finds_none(capsys, tmp_path):
    rules = ["--min-queries", "300", "--min-duration-s", "1", "--criterion", "p99", "--tolerance", "0.1"]
    common = ["--trace", _bursts(tmp_path), "--allowable", "--policy", "fcfs", "--queries", "1440", *rules]
    # Compressing time keeps each burst whole at any rate, so no rate passes.
    assert run_json(capsys, *common, "--scale", "time")["fcfs"]["allowable_qps"] == 0
    out = tmp_path / "run"
    thin = run_json(capsys, *common, "--scale", "thin", "--out", str(out))["fcfs"]
    assert 0 < thin["allowable_qps"] < 12.0 and thin["scale"] == "thin" and thin["valid"]  # below the trace's rate
    summary = pd.read_parquet(out / "summary.parquet")
    # Each point names what reached its rate: the search starts above the trace's rate (superposed copies).
    assert set(summary["scale"]) == {"thin", "superpose"}
    assert (summary.loc[summary["offered_qps"] > 11.9, "scale"] == "superpose").all()
    assert json.loads((out / "run.json").read_text())["config"]["scale"] == "thin"
    assert "scale: thin" in (out / "report.html").read_text()


def test_scale_thin_gives_a_point_its_queries_where_time_scaling_cannot(capsys, tmp_path):
    trace = _bursts(tmp_path)  # 1,440 queries
    for scale, queries in (("time", 1440), ("thin", 3000), ("superpose", 3000)):
        res = run_json(
            capsys, "--trace", trace, "--policy", "fcfs", "--rate", "0.5", "--queries", "3000", "--scale", scale
        )
        # thin at 0.5 qps keeps 1 query in 29 and replays the trace end to end for the rest
        assert res["fcfs"]["queries"] == queries and res["fcfs"]["scale"] == scale


def test_unknown_scale_is_refused(capsys):
    assert main(["simulate", "--rate", "1", "--queries", "10", "--scale", "warp"]) == 2
    assert capsys.readouterr().err.startswith(
        "kairos simulate: error: --scale 'warp': expected one of time, thin, superpose"
    )
