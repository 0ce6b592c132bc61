"""Pieces of a live run that need no processes: phase plans, shards, merging client and dispatcher rows."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.core.records import QUERY_COLUMNS, QUERY_SCHEMA, conform
from harness.live.options import LiveOptions
from harness.live.phase import ClientRecord, PhasePlan, account, from_columns, merge_phase, to_columns
from harness.live.run import closing_line, crossing_text, flag_text, interval_text
from harness.live.run_dir import RunDir
from harness.measure.allowable import phase_queries
from harness.measure.analyzer import ValidityRules
from harness.measure.interval import AllowableInterval, RatePoint, allowable_interval


@pytest.fixture
def plan():
    return PhasePlan(
        3,
        "kairos",
        50.0,
        "rm2",
        "http://127.0.0.1:1",
        1000.0,
        [f"p3-{i}" for i in range(7)],
        [0.1 * i for i in range(7)],
        [10, 20, 30, 40, 50, 60, 70],
    )


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_cover_every_query_exactly_once(plan, n):
    shards = [plan.shard(k, n) for k in range(n)]
    ids = [rid for s in shards for rid in s.request_ids]
    assert sorted(ids) == sorted(plan.request_ids)
    for s in shards:
        assert len(s.request_ids) == len(s.offsets_s) == len(s.batch_sizes)
        assert s.start_epoch == 1000.0
        assert PhasePlan(**s.to_message()) == s  # what a worker receives is the same plan


def test_merge_joins_client_and_dispatcher_views(plan):
    client = [
        ClientRecord("p3-0", 1000.0, 1000.001, 1000.051, 200, "local"),
        ClientRecord("p3-1", 1000.1, 1000.102, 1000.103, 503, "local"),
    ]
    assert from_columns(to_columns(client)) == client  # the worker -> master message keeps every field
    disp = {
        "request_id": ["p3-0", "p3-1", "p3-2"],
        "status": ["ok", "shed", "ok"],
        "dispatch_s": [1000.002, 1000.102, 1000.21],
        "start_s": [1000.002, math.nan, 1000.21],
        "finish_s": [1000.05, math.nan, 1000.25],
        "instance_id": ["g-0", "", "r-1"],
        "instance_type": ["g", "", "r"],
        "queue_ms": [1.0, math.nan, 0.5],
        "service_ms": [48.0, math.nan, 40.0],
        "http_status": [200, 503, 200],
        "attempts": [1, 0, 1],
    }
    m = merge_phase(plan, client, disp).set_index("request_id")
    # p3-3.. were never sent (interrupted run) and are not rows; p3-2 reached the dispatcher only
    assert list(m.index) == ["p3-0", "p3-1", "p3-2"]
    assert m.loc["p3-0", "status"] == "ok" and m.loc["p3-0", "latency_ms"] == pytest.approx(51.0)
    assert m.loc["p3-0", "send_lag_ms"] == pytest.approx(1.0) and m.loc["p3-0", "instance_type"] == "g"
    assert m.loc["p3-1", "status"] == "shed" and np.isinf(m.loc["p3-1", "latency_ms"])
    assert m.loc["p3-2", "status"] == "failed"  # no client answer: not counted as served
    assert (m["dispatcher"] == "kairos").all() and (m["phase"] == 3).all()
    books = account(plan, client, disp, merge_phase(plan, client, disp))
    assert not books.problems and books.as_row()["accounting_ok"]
    assert (books.planned, books.not_sent, books.sent) == (7, 4, 2)
    assert (books.answered_ok, books.shed, books.failed, books.dispatcher_records) == (1, 1, 1, 3)


def test_accounting_catches_lost_and_doubled_queries(plan):
    client = [ClientRecord("p3-0", 1000.0, 1000.001, 1000.051, 200), ClientRecord("p3-1", 1000.1, 1000.1, 1000.2, 200)]
    disp = {"request_id": ["p3-0"], "status": ["ok"], "http_status": [200]}
    books = account(plan, client, disp, merge_phase(plan, client, disp))
    assert books.problems == ("1 query(ies) answered 200 but not recorded by the dispatcher",)
    doubled = {"request_id": ["p3-0", "p3-0", "p3-1"], "status": ["ok"] * 3, "http_status": [200] * 3}
    stray = [*client, ClientRecord("p9-0", 1000.0, 1000.0, 1000.1, 200)]
    problems = account(plan, stray, doubled, merge_phase(plan, stray, doubled)).problems
    assert "1 query id(s) recorded twice by the dispatcher" in problems
    assert "1 client record(s) of queries this phase never planned" in problems
    assert not account(plan, stray, doubled, merge_phase(plan, stray, doubled)).as_row()["accounting_ok"]


def test_phase_length_has_a_floor_for_validity():
    rules = ValidityRules(min_queries=200)
    assert phase_queries(100.0, 10.0, rules) == 1000
    assert phase_queries(5.0, 10.0, rules) == 212  # ceil(200 / 0.95) + 1
    assert phase_queries(50.0, 10.0, rules, min_queries=1000) == 1000


def test_live_defaults_sweep_and_use_the_p99_criterion():
    o = LiveOptions()
    assert o.sweeping and o.rules.criterion == "p99"
    assert not LiveOptions(rate_qps=50.0).sweeping and LiveOptions(rate_qps=50.0, sweep=True).sweeping


def test_run_dir_streams_queries_and_marks_partial(tmp_path):
    rd = RunDir(tmp_path / "r1", meta={"kind": "live"})
    frame = conform(
        pd.DataFrame({"request_id": ["a", "b"], "batch_size": [10, 20], "status": ["ok", "shed"]}), QUERY_SCHEMA
    )
    rd.add_phase(frame, {"dispatcher": "fcfs", "phase": 0, "p99_ms": 10.0})
    # Mid-run (as a kill -9 would leave it): every file reads, the queries directory holds the phase.
    assert pd.read_parquet(tmp_path / "r1" / "queries.parquet")["request_id"].tolist() == ["a", "b"]
    assert pd.read_parquet(tmp_path / "r1" / "summary.parquet")["p99_ms"].tolist() == [10.0]
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["partial"] is True
    rd.add_queries(frame.assign(request_id=["c", "d"]))
    rd.finish(partial=True, build_html=False)
    q = pd.read_parquet(tmp_path / "r1" / "queries.parquet")
    assert list(q.columns) == list(QUERY_COLUMNS) and q["request_id"].tolist() == ["a", "b", "c", "d"]
    assert q.dtypes.equals(frame.dtypes)
    assert json.loads((tmp_path / "r1" / "run.json").read_text())["partial"] is True
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["queries.parquet", "run.json", "summary.parquet"]


def test_the_closing_line_names_an_unknown_bound_and_why_instead_of_printing_nan():
    known = AllowableInterval(105.0, 94.4, 108.6, False, False)
    half = AllowableInterval(36.2, math.nan, 37.4, False, True)
    line = closing_line(
        [("kairos", 101.5, 108.6, known), ("fcfs", 36.2, 37.4, half)],
        lambda s: " (HOST-LIMITED: 1 of 6 phases)" if s == "fcfs" else "",
    )
    assert "kairos 101.5 live (crossing 105.0 [94.4..108.6]) / 108.6 sim," in line
    assert "fcfs 36.2 live (crossing 36.2 [?..>=37.4]) / 37.4 sim (HOST-LIMITED: 1 of 6 phases)" in line
    assert "nan" not in line and "raise --phase-queries or --replications)" in line
    assert "?:" not in closing_line([("kairos", 101.5, 108.6, known)], lambda s: "")
    assert "<=, >=" in line and "<=, >=" not in closing_line([("kairos", 101.5, 108.6, known)], lambda s: "")


def test_a_figure_below_its_crossing_interval_is_shown_beside_the_crossing_not_inside_brackets_it_misses():
    # rm2 on cpu-2t=1,cpu-1t=1 (2026-12-03): 441.3 passed, 456.1 failed on its two phases pooled, and the share of
    # misses crosses 1% at 453.0 between them, its band's edges at 450.0 and 457.3.
    line = closing_line([("kairos", 441.3, 603.2, AllowableInterval(453.0, 450.0, 457.3, False, False))], lambda s: "")
    assert "kairos 441.3 live (crossing 453.0 [450.0..457.3]) / 603.2 sim" in line
    passed_all = allowable_interval([RatePoint(100.0, 0.002, 0.0, 0.004), RatePoint(115.0, 0.004, 0.001, 0.008)], 0.01)
    assert passed_all.estimate_censored and crossing_text(passed_all) == ">=115.0 [>=115.0..>=115.0]"
    failed_all = allowable_interval([RatePoint(100.0, 0.02, 0.015, 0.03), RatePoint(115.0, 0.05, 0.03, 0.07)], 0.01)
    assert failed_all.estimate_censored and crossing_text(failed_all) == "<=100.0 [<=100.0..<=100.0]"


def test_a_censored_bound_reads_as_at_most_or_at_least_never_as_a_measured_bound():
    assert interval_text(AllowableInterval(108.6, 108.6, 109.6, True, False)) == "<=108.6..109.6"
    assert interval_text(AllowableInterval(105.0, 94.4, 108.6, False, True)) == "94.4..>=108.6"
    assert interval_text(AllowableInterval(105.0, 94.4, 108.6, False, False)) == "94.4..108.6"


def test_the_flag_names_host_limited_phases_the_hosts_simulation_and_where_the_harness_saturated():
    def row(rate, ok, harness_ok=True, why=""):
        return dict(
            dispatcher="kairos",
            offered_qps=rate,
            fidelity_ok=ok,
            harness_ok=harness_ok,
            harness_reasons=why,
            sim_allowable_host_adjusted_qps=138.3,
        )

    rows = [row(172.9, False), row(150.3, False, False, "send lag p99 6.1 ms"), row(145.4, True)]
    assert flag_text(rows) == (
        " (HOST-LIMITED: 2 of 3 phases; 138.3 sim with this host's service times; "
        "harness saturated at 150.3 qps: send lag p99 6.1 ms)"
    )
    # A phase that passed the stricter saturation mark but not the self-checks' own limits: said, so that a figure
    # above that rate does not read as past the harness's ceiling.
    marked = [row(145.4, True), row(93.0, True, False, "load generator send lag p99 5.1 ms"), row(108.6, True)]
    assert flag_text([{**r, "sim_allowable_host_adjusted_qps": math.nan} for r in marked]) == (
        " (harness saturated at 93.0 qps: load generator send lag p99 5.1 ms, the phase still within its self-checks)"
    )
    # The host's simulation is shown wherever the sweep reran it (its service was 5% slower than profiled), flagged
    # or not; a sweep that needed neither carries no flag at all.
    assert flag_text([row(145.4, True), row(150.3, True)]) == " (138.3 sim with this host's service times)"
    clean = {"sim_allowable_host_adjusted_qps": math.nan}
    assert flag_text([{**row(145.4, True), **clean}, {**row(150.3, True), **clean}]) == ""
    assert flag_text([{**row(145.4, False), "sim_allowable_host_adjusted_qps": math.nan}]) == (
        " (HOST-LIMITED: 1 of 1 phases)"
    )
    # live and simulated p99 intervals apart: said, counted each way, and flagging nothing
    apart = [{**row(r, True), **clean, "p99_vs_sim": v} for r, v in [(90, "within"), (100, "slower"), (110, "")]]
    assert flag_text(apart) == " (live p99 outside the simulated interval in 1 of 3 phases: 1 slower)"
    apart[0]["p99_vs_sim"] = "faster"
    assert flag_text(apart).endswith("in 2 of 3 phases: 1 slower and 1 faster)")
    # failed phases on a host that something outside the run kept busy are counted as such; a busy host alone is not
    busy = [
        {**row(r, ok), **clean, "busy_host": b} for r, ok, b in [(90, False, "x"), (100, False, ""), (80, True, "y")]
    ]
    assert flag_text(busy) == " (HOST-LIMITED: 2 of 3 phases, 1 on a busy host)"
