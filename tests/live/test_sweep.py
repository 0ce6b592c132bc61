"""A live sweep without Locust: the allowable rate, its bracket, its 95% interval and the self-checks per phase."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.core.errors import InputError
from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.live.options import LiveOptions
from harness.live.replay import AsyncioLoadGenerator
from harness.live.run import LiveRun


@pytest.mark.slow
def test_a_sweep_reports_its_allowable_rate_with_an_interval_and_self_checks(tmp_path):
    options = LiveOptions(
        model="rm2",
        pool_config="g4dn.xlarge=1,r5n.large=1",
        dispatchers=("kairos",),
        sweep=True,
        phase_seconds=5.0,
        phase_queries=150,
        min_queries=100,
        max_phases=5,
        tolerance=0.1,
        replications=1,
        report_dir=tmp_path,
        lead_s=1.0,
    )
    run = LiveRun(options, log=lambda _: None)
    run.start()
    path = run.run_dir.path
    report = run.run(AsyncioLoadGenerator())
    summary = pd.read_parquet(path / "summary.parquet")
    row = summary.iloc[0]
    assert row["allowable_qps"] > 0 and "band crossing" in row["allowable_method"]
    # Phases this short (150 queries) cannot be sectioned: only the replicated rates carry a band, so a bound that
    # rests on an unreplicated rate is unknown (NaN), never zero-wide.
    low, est, high = row["allowable_low_qps"], row["allowable_estimate_qps"], row["allowable_high_qps"]
    assert not low > est and not high < est and (math.isfinite(low) or math.isfinite(high))
    # the interval sits around the bracket the search found (a crossing between tested rates, or censored at them)
    assert math.isnan(low) or summary["offered_qps"].min() <= low <= row["bracket_high_qps"]
    # (service_excess needs 10 served queries in one (type, bucket): often none in phases this short)
    for col in ("host_cpu_percent", "dispatcher_cpu_percent", "loop_lag_p99_ms", "utilization"):
        assert summary[col].notna().all(), col
    assert summary["fidelity_ok"].isin([True, False]).all()
    # one replicate at each end of the final bracket, on another window of the trace; a rate chased for a bound at
    # the edge of the rates tried (--interval-steps 1) has its own pair, one search step beyond them
    ends = {b for b in (row["bracket_low_qps"], row["bracket_high_qps"]) if 0 < b < math.inf}
    again = set(summary.loc[summary["replicate"] == 1, "offered_qps"])
    chased = again - ends
    assert ends <= again and len(chased) <= 1
    searched = summary.loc[~summary["offered_qps"].isin(chased), "offered_qps"]
    for rate in chased:
        assert (summary["offered_qps"] == rate).sum() == 2
        assert rate == pytest.approx(searched.min() / options.growth) or rate == pytest.approx(
            searched.max() * options.growth
        )
    html = report.read_text(encoding="utf-8")
    assert "95% interval qps" in html and "p99 band crossing" in html


def test_replicate_phases_use_other_windows_of_the_trace_deterministically():
    run = LiveRun(LiveOptions(seed=3), log=lambda _: None)
    first, again, other = run.phase_trace(100.0), run.phase_trace(100.0, 1), run.phase_trace(100.0, 2)
    assert len(first) == len(again) == len(other)
    assert list(first.batch_size[:20]) != list(again.batch_size[:20]) != list(other.batch_size[:20])
    assert list(run.phase_trace(100.0, 1).batch_size) == list(again.batch_size)


def test_negative_replications_are_refused():
    with pytest.raises(InputError) as err:
        LiveOptions(replications=-1)
    assert err.value.field == "replications"


def test_host_excess_and_the_simulators_answer_with_this_hosts_service_times():
    run = LiveRun(LiveOptions(seed=3), log=lambda _: None)
    run.pool_config = PoolConfig.parse(PAPER_CONFIG)
    run.run_dir = SimpleNamespace(
        summary_rows=[
            {"dispatcher": "kairos", "service_excess": 0.10},
            {"dispatcher": "kairos", "service_excess": math.nan},  # a phase that measured none: left out
            {"dispatcher": "kairos", "service_excess": 0.30},
            {"dispatcher": "kairos", "service_excess": 0.20},
            {"dispatcher": "fcfs", "service_excess": 5.0},
        ]
    )
    assert run.host_excess("kairos") == pytest.approx(0.20)
    assert math.isnan(run.host_excess("least_outstanding"))
    plain, _ = run.simulated_allowable("kairos")
    slower, _ = run.simulated_allowable("kairos", run.profile.scaled(1.2))
    assert 0 < slower < plain  # service 20% slower: the pool's allowable rate falls


@pytest.mark.slow
def test_phases_that_saturate_the_harness_fail_when_asked_and_the_saturation_rate_is_reported(tmp_path):
    from harness.measure.fidelity import FidelityLimits

    options = LiveOptions(
        model="rm2",
        pool_config="g4dn.xlarge=1,r5n.large=1",
        dispatchers=("fcfs",),
        sweep=True,
        phase_queries=120,
        min_queries=100,
        max_phases=2,
        replications=0,
        harness_saturation="invalid",
        report_dir=tmp_path,
        lead_s=1.0,
    )
    run = LiveRun(options, log=lambda _: None)
    # Limits no load generator meets: every phase's generator counts as fallen behind.
    run.fidelity_limits = FidelityLimits(saturation_send_lag_p99_ms=-1.0, loadgen_cpu_percent=-1.0)
    run.start()
    path = run.run_dir.path
    run.run(AsyncioLoadGenerator())
    summary = pd.read_parquet(path / "summary.parquet")
    assert (~summary["harness_ok"]).all() and summary["harness_reasons"].str.contains("load generator").all()
    assert (~summary["valid"]).all() and summary["invalid_reason"].str.startswith("harness saturated").all()
    assert summary["harness_saturated_qps"].iloc[0] == summary["offered_qps"].min()
    assert not summary["allowable_qps"].iloc[0] > 0  # nothing the harness could not offer is certified


SEARCHED = [
    (108.6, 348.0, 20.0, 680.0),
    (108.6, 346.0, 270.0, 420.0),
    (112.7, 630.0, 380.0, 980.0),
    (112.7, 670.0, 450.0, 890.0),
]


def chase(steps: int, p99_at, searched=SEARCHED, **options) -> tuple[list[tuple[float, int]], object]:
    """chase_bounds over a sweep that found 108.6 passing (twice, but one window's band reaching past the QoS) and
    112.7 failing; ``p99_at(rate)`` is the (p99, low, high) of each extra phase. Returns the extra phases run."""
    run = LiveRun(LiveOptions(**{"seed": 3, "interval_steps": steps, "replications": 1, **options}), log=lambda _: None)
    row = dict(dispatcher="kairos")
    run.run_dir = SimpleNamespace(
        summary_rows=[
            {**row, "offered_qps": r, "p99_ms": p99, "p99_ci_low_ms": low, "p99_ci_high_ms": high}
            for r, p99, low, high in searched
        ]
    )
    extra = []

    def run_phase(spec, rate, replicate=0):
        extra.append((rate, replicate))
        p99, low, high = p99_at(rate)
        run.run_dir.summary_rows.append(
            {**row, "offered_qps": rate, "p99_ms": p99, "p99_ci_low_ms": low, "p99_ci_high_ms": high}
        )

    run.run_phase = run_phase
    return extra, run.chase_bounds("kairos")


def test_a_lower_bound_at_the_first_rate_tried_is_chased_one_search_step_down():
    extra, iv = chase(1, lambda rate: (320.0, 300.0, 335.0))
    step = 108.6 / LiveOptions().growth
    assert extra == [(pytest.approx(step), 0), (pytest.approx(step), 1)]  # each run 1 + replications times
    assert not iv.low_censored and step < iv.low_qps < 108.6  # the band's upper edge now crosses between the two
    assert iv.low_qps <= iv.estimate_qps <= iv.high_qps <= 112.7


def test_a_bound_still_at_the_edge_after_its_steps_is_reported_censored_and_none_runs_without_steps():
    extra, iv = chase(2, lambda rate: (340.0, 250.0, 500.0))  # the lower rates' bands too reach past the QoS
    assert [r for r, k in extra if k == 0] == pytest.approx([108.6 / 1.15, 108.6 / 1.15**2])
    assert iv.low_censored and iv.low_qps == pytest.approx(108.6 / 1.15**2)
    extra, iv = chase(0, lambda rate: pytest.fail("no phase without --interval-steps"))
    assert extra == [] and iv.low_censored and iv.low_qps == 108.6


def test_negative_interval_steps_are_refused():
    with pytest.raises(InputError) as err:
        LiveOptions(interval_steps=-1)
    assert err.value.field == "interval_steps"


def test_no_rate_is_chased_where_its_phases_could_not_place_a_bound():
    # 300 queries a phase (285 measured) cannot be sectioned, and two replicates give a t-interval with t = 12.7
    extra, iv = chase(1, lambda rate: pytest.fail("a phase that cannot bound"), phase_seconds=1.0, phase_queries=300)
    assert extra == [] and iv.low_censored and iv.low_qps == 108.6
    extra, iv = chase(1, lambda rate: (320.0, math.nan, math.nan), phase_seconds=1.0, phase_queries=300, replications=2)
    assert [k for _, k in extra] == [0, 1, 2]  # three replicates: a t-interval on two degrees of freedom
    run = LiveRun(LiveOptions(), log=lambda _: None)
    assert run.can_bound(94.4) and not run.can_bound(36.2)  # the default's 500 queries: 475 measured
    assert LiveRun(LiveOptions(phase_queries=530), log=lambda _: None).can_bound(36.2)


def test_with_both_bounds_at_the_edge_the_upper_one_is_chased_first():
    # 105.0 passed twice but one window's band reaches past the QoS; 108.6 failed twice, one band reaching under it
    both = [
        (105.0, 340.0, 30.0, 640.0),
        (105.0, 335.0, 300.0, 370.0),
        (108.6, 436.0, 133.0, 739.0),
        (108.6, 420.0, 300.0, 540.0),
    ]
    extra, iv = chase(1, lambda rate: (900.0, 600.0, 1200.0), searched=both)
    assert [r for r, _ in extra] == pytest.approx([108.6 * 1.15] * 2)
    assert not iv.high_censored and 108.6 < iv.high_qps < 108.6 * 1.15 and iv.low_censored and iv.low_qps == 105.0
