"""``kairos allocate`` end to end on a tiny hand-made profile: JSON lines, parquet, HTML, errors, --launch."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from harness.allocate.run import parse_methods
from harness.cli import main
from harness.report.allocation import allocation_html
from tests.conftest import make_profile_frame

pytestmark = pytest.mark.slow  # whole stacks or long searches: left out of the quick loop

SPREAD = np.array([0.9, 0.95, 1.0, 1.05, 1.1])


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """A profile with a GPU-like base, a CPU-like and a cheap type for model 'toy', and their prices."""
    root = tmp_path_factory.mktemp("toy")
    buckets = range(10, 101, 10)
    frame = make_profile_frame(
        {
            ("gpu", "toy"): {b: list((4 + 0.1 * b) * SPREAD) for b in buckets},
            ("cpu", "toy"): {b: list((1 + 0.3 * b) * SPREAD) for b in buckets},
            ("cheap", "toy"): {b: list((2 + 0.5 * b) * SPREAD) for b in buckets},
        }
    )
    frame.to_csv(root / "profile.csv", index=False)
    pd.DataFrame({"instance_type": ["gpu", "cpu", "cheap"], "usd_per_hour": [1.0, 0.25, 0.15]}).to_csv(
        root / "prices.csv", index=False
    )
    return root


def _args(root, *extra):
    return [
        "allocate",
        "--model",
        "toy",
        "--qos-ms",
        "40",
        "--budget",
        "2",
        "--profiles",
        str(root / "profile.csv"),
        "--prices",
        str(root / "prices.csv"),
        "--batch-mix",
        "uniform:1:100",
        "--queries",
        "1000",
        "--final-queries",
        "1500",
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def all_methods(toy_files, tmp_path_factory):
    """One run of every method with JSON output and --out."""
    out = tmp_path_factory.mktemp("out")
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(
            _args(
                toy_files,
                "--method",
                "all",
                "--ribbon-evals",
                "6",
                "--anneal-evals",
                "6",
                "--oracle-refine",
                "2",
                "--json",
                "--out",
                str(out),
            )
        )
    return code, [json.loads(line) for line in buf.getvalue().splitlines()], out


def test_every_method_answers_with_the_required_fields(all_methods):
    code, lines, _ = all_methods
    assert code == 0
    assert [r["method"] for r in lines] == list(parse_methods("all"))  # the order tests/allocate checks
    for r in lines:
        assert set(r) >= {"method", "config", "cost_per_h", "allowable_qps", "usd_per_million", "evaluated", "seconds"}
        assert r["cost_per_h"] <= 2.0 + 1e-9
        assert r["allowable_qps"] > 0
        assert r["allowable_qps"] <= r["fluid_bound_qps"] * 1.0001
        assert r["usd_per_million"] == pytest.approx(r["cost_per_h"] / (r["allowable_qps"] * 3600) * 1e6, rel=1e-6)
    by = {r["method"]: r for r in lines}
    assert by["kairos"]["evaluated"] == 0 and by["fluid"]["evaluated"] == 0 and by["melange"]["evaluated"] == 0
    assert by["melange"]["model_qps"] > 0 and by["melange"]["config"].get("gpu", 0) >= 1
    assert by["homogeneous"]["evaluated"] == 3  # one per type
    assert by["ribbon"]["evaluated"] <= 6 and by["anneal"]["evaluated"] <= 6
    assert by["oracle"]["evaluated"] == 21  # gpu >= 1 under $2
    assert by["oracle"]["allowable_qps"] >= max(
        by[m]["allowable_qps"] for m in ("kairos", "fluid", "melange", "ribbon", "anneal")
    )
    # Pruned by the fluid bounds, the oracle simulates fewer configurations and still ends on the same answer.
    assert by["oracle_pruned"]["evaluated"] + by["oracle_pruned"]["pruned"] == 21
    assert by["oracle_pruned"]["config"] == by["oracle"]["config"]
    assert by["oracle_pruned"]["allowable_qps"] == by["oracle"]["allowable_qps"]
    assert by["homogeneous"]["budget_scaled_qps"] == pytest.approx(
        by["homogeneous"]["allowable_qps"] * 2.0 / by["homogeneous"]["cost_per_h"]
    )


def test_out_writes_the_ranked_table_and_html(all_methods):
    _, lines, out = all_methods
    table = pd.read_parquet(out / "allocation.parquet")
    assert {
        "config",
        "cost_per_h",
        "kairos_bound_qps",
        "fluid_bound_qps",
        "allowable_qps",
        "final_allowable_qps",
        "usd_per_million",
        "picked_by",
    } <= set(table.columns)
    ranked = table[table["in_space"]]
    assert len(ranked) == 21 and ranked["kairos_bound_qps"].is_monotonic_decreasing
    assert ranked["allowable_qps"].notna().all()  # the oracle evaluated every configuration
    assert (ranked["fluid_bound_qps"] >= ranked["allowable_qps"] - 1e-9).all()
    # Priced at the best figure measured: the final fidelity where there is one, else the search's.
    best = ranked["final_allowable_qps"].fillna(ranked["allowable_qps"])
    assert np.allclose(ranked["usd_per_million"], ranked["cost_per_h"] / (best * 3600) * 1e6)
    assert "kairos" in table.loc[table["kairos_rank"] >= 1, "picked_by"].str.cat(sep=",")
    html = (out / "allocation.html").read_text()
    assert html.startswith('<section class="kairos-allocation">') and html.rstrip().endswith("</section>")
    assert html.count("<tr") >= 2 and "<script" not in html


def test_allocation_html_escapes_and_marks_picks():
    frame = pd.DataFrame(
        {
            "kairos_rank": [1, 2],
            "config": ["a<b=1", "c=2"],
            "cost_per_h": [1.0, 2.0],
            "kairos_bound_qps": [10.0, 9.0],
            "fluid_bound_qps": [11.0, 9.5],
            "allowable_qps": [float("nan"), 8.0],
            "final_allowable_qps": [float("nan")] * 2,
            "usd_per_million": [float("nan"), 69.444],
            "picked_by": ["", "kairos"],
        }
    )
    html = allocation_html(frame)
    assert "$ per million queries" in html and ">69.444<" in html  # 2 $/h over 8 qps
    assert "a&lt;b=1" in html and "a<b" not in html
    assert html.count('style="background:#fff4cc"') == 1
    assert "&ndash;" in html


def test_console_report(toy_files, capsys):
    assert main(_args(toy_files, "--method", "kairos,fluid", "--top-k", "3", "--pick-within", "0.5")) == 0
    out = capsys.readouterr().out
    assert "auxiliary type" in out and "medoid of 3 of the top 3 within 50% of the best queueing-aware" in out
    assert "queue est" in out and "$/Mq" in out and out.count("\n") > 10
    assert main(_args(toy_files, "--method", "kairos,melange")) == 0
    out = capsys.readouterr().out
    melange = next(line for line in out.splitlines() if line.startswith("melange "))
    assert "gpu=" in melange and "model " in melange and "pooled queues" in melange
    assert main(_args(toy_files, "--method", "kairos", "--pick-by", "bound", "--top-k", "1")) == 0
    assert "medoid of 1 of the top 1 within 1% of the best bound" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "greedy"], "unknown method 'greedy'"),
        (["--types", "gpu,tpu"], "unknown instance type 'tpu'"),
        (["--budget", "0"], "--budget"),
        (["--max-count", "gpu"], "--max-count"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(toy_files, capsys, extra, message):
    args = _args(toy_files)
    if extra[0] == "--budget":
        args[args.index("--budget") + 1] = extra[1]
        extra = []
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_launch_execs_the_pool(toy_files, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: calls.append(argv))
    assert main(_args(toy_files, "--no-measure", "--launch", "--pool-file", "p.json")) == 0
    (argv,) = calls
    assert argv[3:5] == ["serve", "pool"] and argv[argv.index("--pool-file") + 1] == "p.json"
    assert argv[argv.index("--model") + 1] == "toy" and "gpu=" in argv[argv.index("--config") + 1]
