"""The HTML report: pure data-shaping helpers, the page's structure on synthetic run directories, the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.report.data import (
    CDF_POINTS,
    UTIL_BINS,
    batch_heatmap,
    bracket,
    cdf_points,
    normalize_queries,
    normalize_summary,
    shown_step,
    step_queries,
    utilization,
)
from harness.report.page import CHART_IDS, PARTIAL_BANNER, build_report

# (dispatcher, offered qps, p99 ms, valid, allowable qps, cost $/h): kairos passes at 100, fcfs drops queries at
# 150 (p99 = inf), clockwork never passes (no allowable throughput); NaN costs where the pool had no prices.
STEPS = [
    ("kairos", 50.0, 120.0, True, 100.0, 3.2),
    ("kairos", 100.0, 300.0, True, 100.0, 3.2),
    ("kairos", 150.0, 900.0, False, 100.0, 3.2),
    ("fcfs", 50.0, 200.0, True, 50.0, math.nan),
    ("fcfs", 100.0, 2000.0, False, 50.0, math.nan),
    ("fcfs", 150.0, math.inf, False, 50.0, math.nan),
    ("clockwork", 50.0, 400.0, False, math.nan, 3.2),
    ("clockwork", 100.0, 800.0, False, math.nan, 3.2),
    ("clockwork", 150.0, math.inf, False, math.nan, 3.2),
]
POOL = [
    {"id": "gpu-0", "instance_type": "g4dn.xlarge", "url": "http://127.0.0.1:9001", "usd_per_hour": 0.526},
    {"id": "gpu-1", "instance_type": "g4dn.xlarge", "url": "http://127.0.0.1:9002", "usd_per_hour": 0.526},
    {"id": "cpu-0", "instance_type": "r5n.large", "url": "http://127.0.0.1:9003", "usd_per_hour": 0.149},
    {"id": "cpu-1", "instance_type": "r5n.large", "url": "http://127.0.0.1:9004", "usd_per_hour": 0.149},
]


def synthetic_summary(steps=STEPS) -> pd.DataFrame:
    """A summary.parquet frame with every column the live harness writes, from (dispatcher, rate, p99, ...) rows."""
    rows = []
    for phase, (d, rate, p99, valid, allowable, cost) in enumerate(steps):
        rows.append(
            dict(
                dispatcher=d,
                phase=phase,
                offered_qps=rate,
                achieved_qps=rate * 0.98,
                queries=400,
                p50_ms=p99 / 4,
                p90_ms=p99 / 2,
                p95_ms=p99 * 0.7,
                p99_ms=p99,
                p999_ms=p99 * 1.5,
                p99_ci_low_ms=p99 * 0.9,
                p99_ci_high_ms=p99 * 1.1,
                violation_rate=0.0 if valid else 0.05,
                valid=valid,
                invalid_reason="" if valid else "early stopping: 20 violations in 400 queries",
                cost_per_h=cost,
                qps_per_dollar=rate / cost,
                allowable_qps=allowable,
                sim_p99_ms=p99 * 0.9,
                sim_valid=valid,
                sim_allowable_qps=allowable,
                send_lag_p99_ms=1.5,
                loadgen_cpu_percent=40.0,
            )
        )
    return pd.DataFrame(rows)


def synthetic_queries(summary: pd.DataFrame, per_step: int = 400, seed: int = 0) -> pd.DataFrame:
    """Live-style per-query records for every summary step (epoch clock, some dropped, some types missing)."""
    rng = np.random.default_rng(seed)
    parts, t0 = [], 1.7e9
    ids = [p["id"] for p in POOL]
    for row in summary.itertuples():
        n = per_step
        arrival = t0 + np.cumsum(rng.exponential(1.0 / row.offered_qps, n))
        start = arrival + rng.exponential(0.01, n)
        finish = start + rng.uniform(0.02, 0.2, n)
        inst = rng.choice(ids, n)
        status = np.where(rng.random(n) < 0.02, "dropped", "ok")
        served = status == "ok"
        itype = np.array([next(p["instance_type"] for p in POOL if p["id"] == i) for i in inst], dtype=object)
        itype[::7] = None  # live records may lack the type: the pool in run.json fills it in
        parts.append(
            pd.DataFrame(
                dict(
                    request_id=[f"{row.phase}-{k}" for k in range(n)],
                    model="rm2",
                    batch_size=rng.integers(1, 1001, n),
                    arrival_s=arrival,
                    dispatch_s=start,
                    start_s=start,
                    finish_s=np.where(served, finish, np.nan),
                    instance_id=np.where(served, inst, None),
                    instance_type=np.where(served, itype, None),
                    policy=row.dispatcher,
                    status=status,
                    dispatcher=row.dispatcher,
                    phase=row.phase,
                    offered_qps=row.offered_qps,
                    backend_finish_s=np.where(served, finish - 0.001, np.nan),
                )
            )
        )
        t0 = float(finish.max()) + 1.0
    return pd.concat(parts, ignore_index=True)


def write_run(run_dir: Path, *, partial: bool = False, steps=STEPS, queries: bool = True) -> Path:
    """A complete synthetic run directory (run.json, summary.parquet, queries.parquet)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = synthetic_summary(steps)
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    if queries:
        synthetic_queries(summary).to_parquet(run_dir / "queries.parquet", index=False)
    meta = {
        "run_id": "test-run",
        "kind": "live",
        "started_at": "2024-05-01T10:00:00Z",
        "finished_at": "2024-05-01T11:00:00Z",
        "partial": partial,
        "model": "rm2",
        "qos_ms": 350.0,
        "config": {"policies": "kairos,fcfs,clockwork", "step_s": 60, "seed": 0},
        "pool": POOL,
        "pool_config": "g4dn.xlarge=2,r5n.large=2",
        "cost_per_h": 1.35,
        "trace": {"source": "kairos_rm2_poisson.parquet", "queries": 20000, "mean_rate_qps": 100.0},
        "versions": {"python": "3.11.9", "kairos-harness": "0.1.0", "locust": "2.31"},
        "machine": {"platform": "Linux-x86_64", "cpus": 2},
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A complete, finished synthetic run."""
    return write_run(tmp_path / "run")


def chart_data(html: str) -> list[dict]:
    """The charts' JSON from the page; bare NaN/Infinity would make this raise."""
    match = re.search(r'<script type="application/json" id="report-chart-data">(.*?)</script>', html, re.S)
    assert match, "chart data script missing"

    def reject(token):
        raise AssertionError(f"bare {token} in the chart JSON")

    return json.loads(match.group(1), parse_constant=reject)


# ---------------------------------------------------------------- pure helpers


def test_cdf_points_counts_unserved_queries_and_thins_to_n():
    x, y = cdf_points([3.0, 1.0, 2.0, np.inf], n=10)
    assert x.tolist() == [1.0, 2.0, 3.0]
    assert y.tolist() == [0.25, 0.5, 0.75]  # the dropped query keeps the curve below 1
    x, y = cdf_points(np.arange(1, 10001, dtype=float), n=101)
    assert len(x) == 101 and x[0] == 1 and x[-1] == 10000 and y[-1] == 1.0
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    assert [a.size for a in cdf_points([np.inf, np.nan])] == [0, 0]


def test_utilization_busy_fraction_per_bin():
    q = pd.DataFrame(
        {"instance_id": ["a", "a", "b", "c"], "start_s": [0.0, 2.0, 1.0, 0.0], "finish_s": [1.0, 4.0, 3.0, np.nan]}
    )
    util = utilization(q, bins=[0.0, 2.0, 4.0])
    assert util.index.tolist() == ["a", "b"]  # c never finished: not counted
    assert util.loc["a"].tolist() == pytest.approx([0.5, 1.0])
    assert util.loc["b"].tolist() == pytest.approx([0.5, 0.5])
    assert util.columns.tolist() == [0.0, 2.0]


def test_utilization_prefers_backend_finish_and_keeps_precision_on_epoch_clock():
    t0 = 1.7e9
    q = pd.DataFrame(
        {
            "instance_id": ["a", "a"],
            "start_s": [t0, t0 + 5.0],
            "finish_s": [t0 + 5.0, t0 + 10.0],
            "backend_finish_s": [t0 + 2.5, np.nan],
        }
    )
    util = utilization(q, bins=2)
    assert util.loc["a"].tolist() == pytest.approx([0.5, 1.0], abs=1e-6)


def test_batch_heatmap_buckets_right_closed_per_type():
    q = pd.DataFrame(
        {
            "batch_size": [1, 100, 101, 1000, 500],
            "instance_type": ["g", "g", "c", "c", None],
            "instance_id": ["g0", "g1", "c0", "c0", None],
        }
    )  # the last was never dispatched
    counts = batch_heatmap(q)
    assert counts.columns[0] == "0-100" and counts.columns[-1] == "900-1000" and len(counts.columns) == 10
    assert counts.loc["g", "0-100"] == 2
    assert counts.loc["c", "100-200"] == 1 and counts.loc["c", "900-1000"] == 1
    assert counts.to_numpy().sum() == 4


def test_batch_heatmap_unknown_type_and_large_batches():
    q = pd.DataFrame({"batch_size": [1500], "instance_type": [""], "instance_id": ["x"]})
    counts = batch_heatmap(q)
    assert counts.loc["unknown", "1400-1500"] == 1


def test_shown_step_and_bracket():
    summary = normalize_summary(synthetic_summary(), "s")
    by = {d: g for d, g in summary.groupby("dispatcher")}
    assert shown_step(by["kairos"])["offered_qps"] == 100.0  # at its allowable rate
    assert bracket(by["kairos"]) == (100.0, 150.0)
    assert bracket(by["fcfs"]) == (50.0, 100.0)
    assert shown_step(by["clockwork"]) is None  # nothing VALID, no allowable: all its queries
    lo, hi = bracket(by["clockwork"])
    assert math.isnan(lo) and hi == 50.0
    assert bracket(by["fcfs"].assign(bracket_low_qps=48.0, bracket_high_qps=52.0)) == (48.0, 52.0)
    no_sweep = by["fcfs"].assign(allowable_qps=math.nan)
    assert shown_step(no_sweep)["offered_qps"] == 50.0  # highest VALID rate


def test_step_queries_selects_phase_else_rate_else_all():
    q = pd.DataFrame({"dispatcher": ["a", "a", "a", "b"], "phase": [0, 1, 1, 2], "offered_qps": [5.0, 10.0, 10.0, 5.0]})
    step = pd.Series({"phase": 1, "offered_qps": 10.0})
    sel, label = step_queries(q, "a", step)
    assert len(sel) == 2 and "phase 1" in label
    sel, _ = step_queries(q.drop(columns="phase"), "a", step)
    assert len(sel) == 2
    sel, label = step_queries(q, "a", None)
    assert len(sel) == 3 and "all phases" in label


def test_normalize_queries_latency_and_pool_types():
    q = pd.DataFrame(
        {
            "policy": ["p", "p"],
            "status": ["ok", "dropped"],
            "arrival_s": [0.0, 0.0],
            "finish_s": [0.25, np.nan],
            "instance_id": ["gpu-0", None],
            "instance_type": [None, None],
        }
    )
    out = normalize_queries(q, "q", POOL)
    assert out["latency_ms"].tolist() == [250.0, math.inf]
    assert out["dispatcher"].tolist() == ["p", "p"]
    assert out["instance_type"].tolist()[0] == "g4dn.xlarge"
    # finish - arrival (harness.core.records.latency_ms) wherever both exist, whatever a latency_ms column says;
    # only a frame with nothing but the client's latency_ms (older files) takes that.
    out = normalize_queries(q.assign(latency_ms=[np.nan, 5.0]), "q")
    assert out["latency_ms"].tolist() == [250.0, math.inf]
    out = normalize_queries(q.assign(latency_ms=[300.0, np.nan]), "q")
    assert out["latency_ms"].tolist() == [250.0, math.inf]
    out = normalize_queries(q.drop(columns=["arrival_s", "finish_s"]).assign(latency_ms=[300.0, 5.0]), "q")
    assert out["latency_ms"].tolist() == [300.0, math.inf]


# ---------------------------------------------------------------- the page


def test_report_has_every_chart_and_is_self_contained(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text(encoding="utf-8")
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in html and f'data-chart="{chart_id}"' in html
    assert f'data-charts-expected="{len(CHART_IDS)}"' in html
    assert [c["id"] for c in chart_data(html)] == list(CHART_IDS)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I), "a script loaded from elsewhere"
    assert not re.search(r"<link[^>]*\bhref=", html, re.I)
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined once, not per chart
    assert PARTIAL_BANNER not in html
    assert 'id="report-errors"' in html
    # Apart from plotly.js the page stays small.
    assert len(html) - len(get_plotlyjs()) < 600_000
    for text in (
        "Results per dispatcher",
        "g4dn.xlarge=2,r5n.large=2",
        "locust",
        "Linux-x86_64",
        "kairos_rm2_poisson.parquet",
        "allowable throughput",
    ):
        assert text in html


def test_partial_banner_only_when_partial(tmp_path):
    html = build_report(write_run(tmp_path / "p", partial=True)).read_text(encoding="utf-8")
    assert PARTIAL_BANNER in html and 'id="partial-banner"' in html


def test_chart_json_strict_and_p99_chart_content(run_dir):
    charts = {c["id"]: c for c in chart_data(build_report(run_dir).read_text(encoding="utf-8"))}
    p99 = charts["chart-p99-vs-load"]
    lines = {t["name"]: t for t in p99["data"] if t.get("mode") == "lines+markers"}
    assert set(lines) == {"kairos", "fcfs", "clockwork"}
    assert lines["kairos"]["marker"]["symbol"] == ["circle", "circle", "circle-open"]
    fcfs_y = lines["fcfs"]["y"]
    assert fcfs_y[-1] is not None and fcfs_y[-1] > 2000  # inf p99 drawn at the top, not lost
    assert lines["fcfs"]["marker"]["symbol"][-1] == "triangle-up-open"
    assert {t["name"] for t in p99["data"] if t.get("line", {}).get("dash") == "dash"} >= {"kairos (simulated)"}
    shapes = p99["layout"]["shapes"]
    assert any(s["y0"] == 350.0 and s["xref"] == "paper" for s in shapes)  # QoS line
    assert sorted(s["x0"] for s in shapes if s["yref"] == "paper") == [50.0, 100.0]  # allowable markers
    cdf = charts["chart-latency-cdf"]
    assert cdf["layout"]["xaxis"]["type"] == "log" and len(cdf["data"]) == 3
    assert all(len(t["x"]) <= CDF_POINTS for t in cdf["data"])
    util = charts["chart-utilization"]
    assert len(util["data"]) == 3 and all(len(t["x"]) == UTIL_BINS for t in util["data"])
    assert "gpu-0 (g4dn.xlarge)" in util["data"][0]["y"]
    batch = charts["chart-batch-placement"]
    assert len(batch["data"]) == 3 and set(batch["data"][0]["y"]) == {"g4dn.xlarge", "r5n.large"}


def test_text_is_escaped(tmp_path):
    steps = [("<script>alert(1)</script>", 50.0, 100.0, True, 50.0, 1.0)]
    html = build_report(write_run(tmp_path / "x", steps=steps)).read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html


def test_report_without_queries_or_run_json_from_older_summary(tmp_path):
    # kairos simulate --out writes `policy` and `rate_qps`; no run.json, no queries.
    run_dir = tmp_path / "sim"
    run_dir.mkdir()
    pd.DataFrame(
        {
            "policy": ["fcfs", "fcfs"],
            "rate_qps": [10.0, 20.0],
            "p99_ms": [50.0, math.inf],
            "valid": [True, False],
            "invalid_reason": ["", "x"],
        }
    ).to_parquet(run_dir / "summary.parquet")
    out = tmp_path / "elsewhere" / "r.html"
    assert build_report(run_dir, out=out) == out
    html = out.read_text(encoding="utf-8")
    assert 'data-charts-expected="1"' in html and 'id="chart-p99-vs-load"' in html
    assert 'id="chart-latency-cdf"' not in html and "No queries.parquet" in html
    assert [c["id"] for c in chart_data(html)] == ["chart-p99-vs-load"]


def test_report_of_kairos_simulate_out(tmp_path):
    run_dir = tmp_path / "sim"
    assert (
        main(
            [
                "simulate",
                "--rate",
                "40",
                "--queries",
                "1500",
                "--policy",
                "fcfs,least_outstanding",
                "--quiet",
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert [c["id"] for c in chart_data(html)] == list(CHART_IDS)
    # what serving cost: dollars per million queries answered within QoS, per dispatcher and step
    summary = pd.read_parquet(run_dir / "summary.parquet")
    expected = summary["cost_per_h"] / (summary["goodput_qps"] * 3600) * 1e6
    assert np.allclose(summary["usd_per_million_in_qos"], expected) and (expected > 0).all()
    assert html.count("$ per million queries in QoS") == 1 and "$ per M queries in QoS" in html


def test_allocation_section_when_present(run_dir):
    pd.DataFrame(
        {
            "kairos_rank": [1, 2],
            "config": ["g4dn.xlarge=1", "r5n.large=4"],
            "cost_per_h": [0.5, 0.6],
            "kairos_bound_qps": [90.0, 80.0],
            "picked_by": ["kairos", ""],
        }
    ).to_parquet(run_dir / "allocation.parquet")
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "kairos-allocation" in html and "r5n.large=4" in html


# ---------------------------------------------------------------- the command


def test_cli_writes_and_prints_path(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    out = run_dir / "other.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0 and out.is_file()


def test_cli_missing_dir_and_summary(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "summary.parquet" in err and err.count("\n") == 1


def test_cli_bad_summary_names_file_and_column(tmp_path, capsys):
    run_dir = tmp_path / "bad"
    run_dir.mkdir()
    pd.DataFrame({"dispatcher": ["a"], "offered_qps": [1.0]}).to_parquet(run_dir / "summary.parquet")
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "summary.parquet" in err and "p99_ms" in err


def test_faults_section_lists_each_fault_with_its_cost_and_draws_the_timeline(run_dir):
    queries = pd.read_parquet(run_dir / "queries.parquet")
    kairos = queries[queries["dispatcher"] == "kairos"]
    armed = float(kairos["arrival_s"].min())
    faults = pd.DataFrame(
        [
            dict(
                event="kill:r5n.large-1@2s",
                action="kill",
                instance="r5n.large-1",
                dispatcher="kairos",
                phase=0,
                offered_qps=50.0,
                armed_epoch=armed,
                fired_epoch=armed + 2,
                end_epoch=math.nan,
                error="",
                queries_in_window=123,
                not_served_in_window=4,
                violations_in_window=9,
                p99_in_window_ms=812.5,
                queries_outside=77,
                p99_outside_ms=140.0,
            ),
            dict(
                event="error:g4dn.xlarge-0@3s:1s",
                action="error",
                instance="g4dn.xlarge-0",
                dispatcher="kairos",
                phase=0,
                offered_qps=50.0,
                armed_epoch=armed,
                fired_epoch=armed + 3,
                end_epoch=armed + 4,
                error="ConnectionRefusedError: nobody home",
            ),
        ]
    )
    faults.to_parquet(run_dir / "faults.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "Faults injected" in html and 'id="chart-faults"' in html
    for text in ("kill:r5n.large-1@2s", "+2.0 s", "123", "812.5", "140.0", "ConnectionRefusedError: nobody home"):
        assert text in html, text
    chart = next(c for c in chart_data(html) if c["id"] == "chart-faults")
    assert [t["name"] for t in chart["data"]] == ["kairos: p99 per second", "kairos: not served"]
    shapes = chart["layout"]["shapes"]
    assert shapes[0]["x0"] == pytest.approx(2.0) and shapes[1]["type"] == "rect" and shapes[1]["x1"] == 4.0
    assert f'data-charts-expected="{len(CHART_IDS) + 1}"' in html


def test_a_run_without_faults_has_no_faults_section(run_dir):
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "Faults injected" not in html and "chart-faults" not in html


def test_failed_self_checks_make_a_host_limited_banner(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    summary["fidelity_ok"] = True
    summary["fidelity_reasons"] = ""
    summary["host_cpu_percent"] = 40.0
    summary["loop_lag_p99_ms"] = 1.5
    summary["service_excess"] = 0.012
    summary.loc[2, ["fidelity_ok", "fidelity_reasons", "host_cpu_percent"]] = [False, "host CPU 97% (limit 90%)", 97.0]
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert 'id="fidelity-banner"' in html and "Host-limited: 1 of 9 phases" in html
    assert "kairos at 150.0 qps: host CPU 97% (limit 90%)" in html
    assert "HOST-LIMITED: host CPU 97% (limit 90%)" in html and "<td>1.2</td>" in html
    summary["fidelity_ok"] = True
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert 'id="fidelity-banner"' not in html and 'id="fidelity-note"' in html
    assert "passed in every phase.</p>" in html  # a run from before the host's own figures: nothing claimed
    summary["outside_cpu_percent"] = [3.0, 12.4] + [5.0] * (len(summary) - 2)
    summary["host_steal_percent"] = [0.2, float("nan")] + [1.26] * (len(summary) - 2)
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert (
        "passed in every phase; meanwhile other processes took up to 12% of a core and the hypervisor up to 1.3% of "
        "the CPU.</p>"
    ) in html
    # The summary table's "harness saturated at" column, explained beside "passed": the mark is stricter than the
    # self-checks, so a phase can pass it and them.
    summary["harness_ok"] = True
    summary["harness_reasons"] = ""
    summary["harness_saturated_qps"] = 100.0
    summary.loc[[3, 5], ["harness_ok", "harness_reasons"]] = [False, "load generator send lag p99 6.2 ms"]
    summary.loc[5, "offered_qps"] = 12.5  # below every other rate: the lowest is named
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert 'id="fidelity-banner"' not in html
    assert (
        f"the CPU. In 2 of {len(summary)} phases the load generator or the dispatcher passed the harness&#x27;s stricter "
        "saturation mark (lowest at 12.5 qps: load generator send lag p99 6.2 ms), not far enough to fail those "
        "checks.</p>"
    ) in html


def test_an_unknown_interval_bound_shows_as_unknown(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    summary["allowable_low_qps"] = 90.0
    summary["allowable_high_qps"] = math.nan
    summary["allowable_method"] = "p99 band crossing"
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    assert "crossing qps [95% interval]" in html and "[90.0, ?]" in html


def test_a_censored_bound_shows_which_side_it_may_lie_beyond(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    summary["allowable_method"] = "p99 band crossing"
    summary["allowable_high_qps"] = 110.0
    summary["allowable_low_qps"] = summary.groupby("dispatcher")["offered_qps"].transform("min")
    summary["allowable_low_censored"], summary["allowable_high_censored"] = True, False
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    low = summary["allowable_low_qps"].iloc[0]
    assert f"[≤{low:.1f}, 110.0]" in html and "≥" not in html.split("Crossing: the rate at which")[0]
    # a run written before the side was recorded: one flag, and the bound sitting at the edge is the censored one
    old = summary.drop(columns=["allowable_low_censored", "allowable_high_censored"])
    old["allowable_interval_censored"] = True
    old.to_parquet(run_dir / "summary.parquet", index=False)
    assert f"[≤{low:.1f}, 110.0]" in build_report(run_dir).read_text(encoding="utf-8")


def test_a_known_crossing_shows_even_when_both_bounds_are_unknown(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    summary["allowable_method"] = "violation-rate band crossing"
    summary["allowable_low_qps"] = summary["allowable_high_qps"] = math.nan  # fcfs in the default run: [?..?]
    summary["allowable_estimate_qps"] = 41.0
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    assert "41.0 [?, ?]" in build_report(run_dir).read_text(encoding="utf-8")


def test_bounds_censored_at_the_highest_rate_read_as_at_least_on_both_sides(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    top = summary.groupby("dispatcher")["offered_qps"].transform("max")
    summary["allowable_method"] = "violation-rate band crossing"
    summary["allowable_low_qps"] = summary["allowable_high_qps"] = summary["allowable_estimate_qps"] = top
    summary["allowable_low_censored"] = summary["allowable_high_censored"] = True
    summary["allowable_estimate_censored"] = True  # every rate passed: all three lie at or above the highest
    summary.to_parquet(run_dir / "summary.parquet", index=False)
    html = build_report(run_dir).read_text(encoding="utf-8")
    t = f"{top.iloc[0]:.1f}"
    assert f"≥{t} [≥{t}, ≥{t}]" in html and f"≤{t}" not in html


def test_dispatcher_table_cells_sit_under_their_headers_with_every_optional_column():
    from html import unescape

    from harness.report.page import dispatcher_table

    summary = synthetic_summary().assign(
        allowable_low_qps=90.0,
        allowable_high_qps=110.0,
        allowable_estimate_qps=100.0,
        harness_saturated_qps=77.7,
    )
    html = dispatcher_table(summary, None)
    header = [unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", html)]
    first = [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html.split("</tr>")[1])]
    cell = dict(zip(header, first))
    assert len(first) == len(header)
    assert cell["harness saturated at qps"] == "77.7"
    assert cell["crossing qps [95% interval]"] == "100.0 [90.0, 110.0]"


def test_a_host_limited_sweep_shows_the_simulator_with_this_hosts_service_times_beside_its_figure():
    from html import unescape

    from harness.report.page import dispatcher_table

    # dien on cpu-1t=1 (2026-12-03): 172.9 simulated from the profile, 138.3 with the service the dispatcher saw.
    summary = synthetic_summary([("kairos", 145.4, 30.0, True, 145.4, 0.1)]).assign(
        sim_allowable_qps=172.9, sim_allowable_host_adjusted_qps=138.3
    )
    html = dispatcher_table(summary, None)
    header = [unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", html)]
    cell = dict(zip(header, [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html.split("</tr>")[1])]))
    assert cell["simulated allowable qps"] == "172.9 (138.3 with this host's service times)"
    plain = dispatcher_table(summary.assign(sim_allowable_host_adjusted_qps=math.nan), None)
    assert "with this host" not in plain and "<td>172.9</td>" in plain


def test_each_step_shows_the_live_and_the_simulated_p99_with_their_intervals():
    from html import unescape

    from harness.report.page import steps_table

    summary = synthetic_summary([("kairos", 100.0, 300.0, True, 100.0, 0.1)])
    html = steps_table(summary.assign(sim_p99_ci_low_ms=250.0, sim_p99_ci_high_ms=math.inf))
    header = [unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", html)]
    cell = dict(zip(header, [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html.split("</tr>")[1])]))
    assert cell["p99 ms"] == "300.0" and cell["p99 95% CI ms"] == "[270.0, 330.0]"
    assert cell["sim p99 ms"] == "270.0" and cell["sim p99 95% CI ms"] == "[250.0, ∞]"
    assert "sim p99 95% CI" not in steps_table(summary)  # a summary from before the column: no empty cells
    html = steps_table(summary.assign(p99_vs_sim="slower"))
    header = [unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", html)]
    cell = dict(zip(header, [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html.split("</tr>")[1])]))
    assert cell["live p99 vs sim"] == "slower"
    assert "p99 95% CI: from the phase alone, by sectioning" in html  # the method, under the table
