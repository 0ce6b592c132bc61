"""``kairos allocate --plan`` and ``kairos simulate --plan`` end to end on a toy profile; the plan file's schema."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.core.errors import InputError
from harness.core.plan import PLAN_SCHEMA, Plan, PlanWindow, read_plan, write_plan
from harness.core.pool_config import PoolConfig
from tests.conftest import make_profile_frame
from traces.generate import generate_trace
from traces.io import write_trace

SPREAD = np.array([0.9, 0.95, 1.0, 1.05, 1.1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A toy profile and prices (GPU-like base, CPU-like and cheap types, model 'toy') and a diurnal trace."""
    root = tmp_path_factory.mktemp("plan")
    buckets = range(10, 101, 10)
    make_profile_frame(
        {
            ("gpu", "toy"): {b: list((4 + 0.1 * b) * SPREAD) for b in buckets},
            ("cpu", "toy"): {b: list((1 + 0.3 * b) * SPREAD) for b in buckets},
            ("cheap", "toy"): {b: list((2 + 0.5 * b) * SPREAD) for b in buckets},
        }
    ).to_csv(root / "profile.csv", index=False)
    pd.DataFrame({"instance_type": ["gpu", "cpu", "cheap"], "usd_per_hour": [1.0, 0.25, 0.15]}).to_csv(
        root / "prices.csv", index=False
    )
    rng = np.random.default_rng(7)
    trace = generate_trace(24_000, 60.0, arrivals="diurnal:0.8:400", batch_mix="uniform:10:100", model="toy", rng=rng)
    write_trace(trace, root / "diurnal.csv")
    return root


def _common(root) -> list[str]:
    return [
        "--qos-ms",
        "40",
        "--profiles",
        str(root / "profile.csv"),
        "--prices",
        str(root / "prices.csv"),
        "--policy",
        "fcfs",
        "--quiet",
    ]


def _run(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def planned(files):
    """kairos allocate --plan 100 on the diurnal trace, JSON lines."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(
            [
                "allocate",
                "--budget",
                "2",
                "--trace",
                str(files / "diurnal.csv"),
                "--plan",
                "100",
                "--plan-subwindow-s",
                "20",
                "--plan-margin",
                "1.05",
                "--queries",
                "4000",
                "--plan-file",
                str(files / "plan.csv"),
                "--json",
                *_common(files),
            ]
        )
    return code, [json.loads(line) for line in buf.getvalue().splitlines()]


def test_allocate_plan_writes_a_plan_whose_windows_differ(files, planned):
    code, rows = planned
    assert code == 0 and len(rows) == 4
    plan = read_plan(files / "plan.csv")
    assert [str(w.pool) for w in plan.windows] == [r["config"] for r in rows]
    assert len({r["config"] for r in rows}) > 1
    assert all(r["confirmed"] and r["p99_ms"] <= 40.0 for r in rows)
    assert [w.usd_per_h for w in plan.windows] == pytest.approx([r["usd_per_h"] for r in rows])


def test_simulate_plan_reports_windows_and_dollars_against_the_cheapest_static(files, planned, capsys):
    code, out, _ = _run(
        capsys,
        ["simulate", "--trace", str(files / "diurnal.csv"), "--plan", str(files / "plan.csv"), "--budget", "2"]
        + ["--startup-s", "30", "--json", *_common(files)],
    )
    assert code == 0
    r = json.loads(out)
    assert [w["config"] for w in r["windows"]] == [str(w.pool) for w in read_plan(files / "plan.csv").windows]
    assert sum(w["queries"] for w in r["windows"]) == 24_000
    assert r["qos_met_every_window"] and all(w["p99_ms"] <= 40.0 for w in r["windows"])
    assert r["static_qos_met_every_window"] and r["static_criterion"] == "windows"
    # Billing: the static pool runs its whole instance mix from 30 s before the start to (about) the end.
    span_h = (r["windows"][-1]["end_s"] - r["windows"][0]["start_s"] + 30.0) / 3600.0
    assert r["static_usd"] == pytest.approx(r["static_usd_per_h"] * span_h, rel=1e-3)
    assert r["usd"] < r["static_usd"] and r["saving"] == pytest.approx(1 - r["usd"] / r["static_usd"])


def test_simulate_plan_against_a_given_static_config_prints_the_table(files, planned, capsys):
    code, out, _ = _run(
        capsys,
        ["simulate", "--trace", str(files / "diurnal.csv"), "--plan", str(files / "plan.csv")]
        + ["--config", "gpu=1,cpu=4", *_common(files)],
    )
    assert code == 0
    assert "gpu=1,cpu=4 ($2.000/h), given by --config" in out
    assert out.count(" met") >= 8 and "less than the static configuration" in out


def test_plan_file_round_trip(tmp_path):
    plan = Plan(
        (
            PlanWindow(0.0, 0.1 + 0.2, PoolConfig.parse("gpu=1,cpu=2"), 1.5),
            PlanWindow(0.1 + 0.2, 600.0, PoolConfig.parse("gpu=2"), 2.0),
        )
    )
    for name in ("plan.csv", "plan.parquet"):
        back = read_plan(write_plan(plan, tmp_path / name))
        assert back.windows == plan.windows  # times bit for bit, pools, prices
        assert list(back.to_frame().columns) == list(PLAN_SCHEMA)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("start_s,end_s,config\n0,10,gpu=1\n", "missing column 'usd_per_h'"),
        ("start_s,end_s,config,usd_per_h\n0,10,gpu=1,1\n10,5,gpu=2,2\n", "column 'end_s', row 2: 5 is not after"),
        ("start_s,end_s,config,usd_per_h\n0,10,gpu=1,1\n12,20,gpu=2,2\n", "column 'start_s', row 2: 12 is not the"),
        ("start_s,end_s,config,usd_per_h\n0,10,gpu=1,1\n10,20,gpu=x,2\n", "column 'config', row 2: 'gpu=x'"),
        ("start_s,end_s,config,usd_per_h\n0,10,gpu=1,1\n10,20,gpu=2,abc\n", "column 'usd_per_h', row 2: 'abc'"),
        ("start_s,end_s,config,usd_per_h\nx,10,gpu=1,1\n", "column 'start_s', row 1: 'x'"),
        ("start_s,end_s,config,usd_per_h\n", "the plan has no windows"),
    ],
)
def test_bad_plan_files_name_the_file_column_and_row(tmp_path, files, capsys, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(InputError, match=f"{path}: .*{message}" if "row" not in message else f"{path}: {message}"):
        read_plan(path)
    code, _, err = _run(
        capsys, ["simulate", "--trace", str(files / "diurnal.csv"), "--plan", str(path), *_common(files)]
    )
    assert code == 2 and str(path) in err and message.split(":")[0] in err


def test_simulate_plan_refuses_what_it_cannot_replay(tmp_path, files, capsys):
    short = tmp_path / "short.csv"
    pd.DataFrame({"start_s": [0.0], "end_s": [100.0], "config": ["gpu=1"], "usd_per_h": [1.0]}).to_csv(short)
    code, _, err = _run(
        capsys, ["simulate", "--trace", str(files / "diurnal.csv"), "--plan", str(short), *_common(files)]
    )
    assert code == 2 and f"{short}: the plan ends at 100 s, before the trace's last arrival" in err
    argv = ["simulate", "--trace", str(files / "diurnal.csv"), "--plan", str(short), *_common(files)]
    code, _, err = _run(capsys, [*argv, "--policy", "fcfs,kairos"])
    assert code == 2 and "one policy at a time" in err
    code, _, err = _run(capsys, ["simulate", "--plan", str(tmp_path / "nope.csv"), *_common(files)])
    assert code == 2 and "nope.csv: no such file" in err
    argv = ["allocate", "--budget", "2", "--plan", "0", "--model", "toy", "--rate", "5", "--duration-s", "100"]
    code, _, err = _run(capsys, [*argv, *_common(files)])
    assert code == 2 and "--plan 0.0: must be a positive number of seconds" in err
