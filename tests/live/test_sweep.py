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
from tests.conftest import sectioned_shares as sectioned


@pytest.mark.slow
def test_a_sweep_reports_its_allowable_rate_with_an_interval_and_self_checks(tmp_path):
    options = LiveOptions(
        model="rm2",
        pool_config="g4dn.xlarge=1,r5n.large=1",
        dispatchers=("kairos",),
        sweep=True,
        phase_seconds=5.0,
        phase_queries=220,
        min_queries=100,
        max_phases=5,
        tolerance=0.1,
        replications=2,
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
    # Phases this short (209 measured queries: two sections) cannot be sectioned alone: only the replicated rates,
    # three phases pooled, carry a band, so a bound that rests on an unreplicated rate is unknown (NaN), never
    # zero-wide.
    low, est, high = row["allowable_low_qps"], row["allowable_estimate_qps"], row["allowable_high_qps"]
    assert not low > est and not high < est and (math.isfinite(low) or math.isfinite(high))
    # the interval sits around the bracket the search found (a crossing between tested rates, or censored at them)
    assert math.isnan(low) or summary["offered_qps"].min() <= low <= row["bracket_high_qps"]
    # (service_excess needs 10 served queries in one (type, bucket): often none in phases this short)
    for col in ("host_cpu_percent", "dispatcher_cpu_percent", "loop_lag_p99_ms", "utilization"):
        assert summary[col].notna().all(), col
    assert summary["fidelity_ok"].isin([True, False]).all()
    assert summary["p99_vs_sim"].isin(["within", "slower", "faster", ""]).all()
    # two replicates at each end of the search's final bracket, on other windows of the trace; a rate chased for a
    # bound at the edge of the rates tried (--interval-steps 1) has its own three, one search step beyond them
    phases = summary.sort_values("phase")
    searched = set(phases["offered_qps"].iloc[: int(phases["replicate"].ne(0).to_numpy().argmax())])
    again = set(summary.loc[summary["replicate"] == 1, "offered_qps"])
    chased = again - searched
    assert 1 <= len(again & searched) <= 2 and len(chased) <= 1
    for rate in again:
        assert (summary["offered_qps"] == rate).sum() == 3
    for rate in chased:
        assert rate == pytest.approx(min(searched) / options.growth) or rate == pytest.approx(
            max(searched) * options.growth
        )
    # the figure and its bracket are rates tried, judged on every phase there pooled
    tried = set(summary["offered_qps"])
    assert row["allowable_qps"] in tried and row["bracket_high_qps"] in {*tried, math.inf}
    html = report.read_text(encoding="utf-8")
    assert "crossing qps [95% interval]" in html and "violation-rate band crossing" in html


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
    # No phase tables kept: the profile scaled by the median excess, either way past the 5% limit, else nothing
    run.service_tables = {}
    assert run.host_adjusted_allowable("kairos", (108.6, 112.7)) == (pytest.approx(0.20), slower)
    run.run_dir.summary_rows = [{"dispatcher": "kairos", "service_excess": e} for e in (-0.25, -0.2, -0.15)]
    excess, faster = run.host_adjusted_allowable("kairos", (108.6, 112.7))
    assert excess == pytest.approx(-0.2) and faster > plain  # the host served faster than it was profiled
    run.run_dir.summary_rows = [{"dispatcher": "kairos", "service_excess": -0.04}]
    excess, none = run.host_adjusted_allowable("kairos", (108.6, 112.7))
    assert excess == pytest.approx(-0.04) and math.isnan(none)


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


BURST = sectioned(*[0] * 8, 8)  # passes (0.9% of queries over the QoS), all of them in one section
QUIET = sectioned(0, 1, 0, 0, 1, 0, 1, 0, 0)
SEARCHED = [(108.6, BURST), (108.6, QUIET), (112.7, sectioned(*[3] * 9)), (112.7, sectioned(*[4] * 9))]


def stubbed_run(phase_at, searched, **options) -> tuple[LiveRun, list[tuple[float, int]]]:
    """A LiveRun holding kairos's phases ``searched`` (rate, latencies) whose ``run_phase`` adds ``phase_at(rate)``
    instead of replaying; returns it and the list the extra phases (rate, replicate) go to."""
    run = LiveRun(LiveOptions(**{"seed": 3, **options}), log=lambda _: None)
    for rate, latencies in searched:
        run.latencies.setdefault("kairos", {}).setdefault(rate, []).append(latencies)
    extra = []

    def run_phase(spec, rate, replicate=0):
        extra.append((rate, replicate))
        run.latencies[spec].setdefault(rate, []).append(phase_at(rate))

    run.run_phase = run_phase
    return run, extra


def chase(steps: int, phase_at, searched=SEARCHED, **options) -> tuple[list[tuple[float, int]], object]:
    """chase_bounds over a sweep that found 108.6 passing (twice, but one window's band reaching past the QoS) and
    112.7 failing; ``phase_at(rate)`` is the measured latencies of each extra phase. Returns the extra phases run."""
    run, extra = stubbed_run(phase_at, searched, **{"interval_steps": steps, "replications": 1, **options})
    return extra, run.chase_bounds("kairos")


def test_a_lower_bound_at_the_first_rate_tried_is_chased_one_search_step_down():
    extra, iv = chase(1, lambda rate: sectioned(*[0] * 9))
    step = 108.6 / LiveOptions().growth
    assert extra == [(pytest.approx(step), 0), (pytest.approx(step), 1)]  # each run 1 + replications times
    assert not iv.low_censored and step < iv.low_qps < 108.6  # the band's upper edge now crosses between the two
    assert iv.low_qps <= iv.estimate_qps <= iv.high_qps <= 112.7


def test_a_bound_still_at_the_edge_after_its_steps_is_reported_censored_and_none_runs_without_steps():
    extra, iv = chase(2, lambda rate: BURST)  # the lower rates' bands too reach past the QoS
    assert [r for r, k in extra if k == 0] == pytest.approx([108.6 / 1.15, 108.6 / 1.15**2])
    assert iv.low_censored and iv.low_qps == pytest.approx(108.6 / 1.15**2)
    extra, iv = chase(0, lambda rate: pytest.fail("no phase without --interval-steps"))
    assert extra == [] and iv.low_censored and iv.low_qps == 108.6


def test_each_rate_is_judged_on_its_phases_pooled_and_a_phase_that_cannot_count_fails_it():
    run = LiveRun(LiveOptions(), log=lambda _: None)
    failing = sectioned(*[0] * 4, *[2] * 5)  # 1.1% over the QoS: p99 past it
    run.latencies["kairos"] = {105.0: [failing, sectioned(*[0] * 9)], 108.6: [failing]}
    assert run.verdicts("kairos") == {105.0: True, 108.6: False}  # together, the 105.0 windows miss on 0.6%
    run.uncounted.add(("kairos", 105.0))  # e.g. one of its phases saturated the harness (--harness-saturation invalid)
    assert run.verdicts("kairos") == {105.0: False, 108.6: False}


def test_negative_interval_steps_are_refused():
    with pytest.raises(InputError) as err:
        LiveOptions(interval_steps=-1)
    assert err.value.field == "interval_steps"


def test_no_rate_is_chased_where_its_phases_could_not_place_a_bound():
    # 300 queries a phase (285 measured) make two sections: too few alone, and two replicates pool only four
    extra, iv = chase(1, lambda rate: pytest.fail("a phase that cannot bound"), phase_seconds=1.0, phase_queries=300)
    assert extra == [] and iv.low_censored and iv.low_qps == 108.6
    extra, iv = chase(1, lambda rate: sectioned(0, 0, 0)[:285], phase_seconds=1.0, phase_queries=300, replications=2)
    assert [k for _, k in extra] == [0, 1, 2]  # three replicates pool six sections
    run = LiveRun(LiveOptions(), log=lambda _: None)
    assert run.can_bound(94.4) and not run.can_bound(36.2)  # the default's 500 queries: 475 measured
    assert LiveRun(LiveOptions(phase_queries=530), log=lambda _: None).can_bound(36.2)


def test_with_both_bounds_at_the_edge_the_lower_one_is_chased_first():
    # 105.0 passed twice but one window's band reaches past the QoS; 108.6 failed twice, one band reaching under it
    both = [
        (105.0, BURST),
        (105.0, QUIET),
        (108.6, sectioned(*[0] * 8, 12)),
        (108.6, sectioned(1, 2, 1, 1, 2, 1, 2, 1, 3)),
    ]
    extra, iv = chase(1, lambda rate: sectioned(*[0] * 9), searched=both)
    assert [r for r, _ in extra] == pytest.approx([105.0 / 1.15] * 2)
    assert not iv.low_censored and 105.0 / 1.15 < iv.low_qps < 105.0 and iv.high_censored and iv.high_qps == 108.6
    extra, iv = chase(2, lambda rate: sectioned(*[0] * 9) if rate < 105.0 else sectioned(*[9] * 9), searched=both)
    assert [r for r, k in extra if k == 0] == pytest.approx([105.0 / 1.15, 108.6 * 1.15])  # then the upper one
    assert not iv.low_censored and not iv.high_censored and 108.6 < iv.high_qps < 108.6 * 1.15


def test_a_sweep_started_far_above_the_pools_limit_still_finds_a_rate_that_passes():
    # The simulator said 426.7 qps where the host serves 140 (rm2 on cpu-1t=1,cpu-2t=1 on a 2-core VM). In 5 phases
    # the small step alone got down to 244 and reported 0; steps that grow while phases miss far past the QoS (30%
    # here) reach a pass, and a miss near it (2%) takes the small step again.
    from harness.measure.analyzer import PointSummary

    run = LiveRun(LiveOptions(seed=3, max_phases=5, replications=0, interval_steps=0), log=lambda _: None)
    tried = []

    def run_phase(spec, rate, replicate=0):
        misses = 0 if rate <= 140.0 else 30 if rate > 210.0 else 2
        tried.append(rate)
        run.latencies.setdefault(spec, {}).setdefault(rate, []).append(sectioned(*[misses] * 9))
        ok = misses == 0
        share = misses / 100
        return PointSummary(900, 900, 9.0, rate, rate, rate, *[1.0] * 7, 9 * misses, share, 0, ok, "", ok, ok)

    run.run_phase = run_phase
    found, _ = run.sweep("kairos", 426.7)
    assert tried == pytest.approx([426.7 / 1.15**k for k in (0, 1, 3, 7, 8)])
    assert found.allowable_qps == pytest.approx(426.7 / 1.15**8) and found.bracket_qps[1] == pytest.approx(tried[3])


def settle(phase_at, searched) -> tuple[list[tuple[float, int]], float]:
    """settle over a sweep's phases (rate, latencies); returns the extra phases it ran and the allowable figure."""
    from harness.measure.interval import allowable_rate

    run, extra = stubbed_run(phase_at, searched)
    assert run.settle("kairos") == bool(extra)
    return extra, allowable_rate(run.verdicts("kairos"))[0]


OVERTURNED = [(150.3, sectioned(*[0] * 9)), (150.3, sectioned(*[4] * 9)), (156.0, sectioned(*[3] * 9))]


def test_a_lowest_pass_its_replicate_overturns_is_followed_down_until_a_rate_passes():
    # 150.3 passed in the search, its replicate missed on 4%: pooled, 2% miss and no rate below it was tried.
    extra, allowable = settle(lambda rate: sectioned(*[0] * 9) if rate < 120 else sectioned(*[2] * 9), OVERTURNED)
    assert extra == [(pytest.approx(150.3 / 1.15), 0), (pytest.approx(150.3 / 1.15**2), 0)]
    assert allowable == pytest.approx(150.3 / 1.15**2)


def test_the_step_down_stops_after_its_steps_and_never_runs_where_a_rate_already_passes():
    from harness.live.run import SETTLE_STEPS

    extra, allowable = settle(lambda rate: sectioned(*[2] * 9), OVERTURNED)
    assert len(extra) == SETTLE_STEPS and allowable == 0.0
    held = [(150.3, sectioned(*[0] * 9)), (150.3, sectioned(*[1] * 9)), (156.0, sectioned(*[3] * 9))]
    extra, allowable = settle(lambda rate: pytest.fail("no phase where the lowest rate passes pooled"), held)
    assert extra == [] and allowable == 150.3


def test_a_chase_below_a_pass_that_fails_is_followed_down_too():
    # 150.3 passed alone; the lower bound's chase at 130.7 then failed twice on a host that had slowed.
    chased = [(150.3, sectioned(*[0] * 9)), (130.7, sectioned(*[3] * 9)), (130.7, sectioned(*[1] * 9))]
    extra, allowable = settle(lambda rate: sectioned(*[0] * 9), chased)
    assert extra == [(pytest.approx(130.7 / 1.15), 0)] and allowable == pytest.approx(130.7 / 1.15)


def test_the_hosts_profile_takes_the_service_seen_at_the_final_bracket_per_type_and_bucket():
    run = LiveRun(LiveOptions(seed=3), log=lambda _: None)
    table = run.profile.table("r5n.large", run.model)
    bucket = int(table.buckets[3])

    def seen(factor, queries=12):
        profiled = float(table.mean_ms[3])
        return pd.DataFrame(
            [("r5n.large", bucket, queries, profiled * factor, profiled)],
            columns=["instance_type", "bucket", "queries", "observed_ms", "profile_ms"],
        )

    run.service_tables = {("kairos", 108.6): [seen(1.5)], ("kairos", 112.7): [seen(1.5)], ("kairos", 94.4): [seen(3.0)]}
    host = run.host_profile("kairos", (108.6, 112.7), 0.2)
    assert host.table("r5n.large", run.model).mean_ms[3] == pytest.approx(1.5 * table.mean_ms[3])
    # a bucket and a type the bracket's phases did not measure take what they did: 1.5 here, not the 1.2 given
    assert host.table("r5n.large", run.model).mean_ms[0] == pytest.approx(1.5 * table.mean_ms[0])
    g4dn = run.profile.table("g4dn.xlarge", run.model)
    assert host.table("g4dn.xlarge", run.model).mean_ms[3] == pytest.approx(1.5 * g4dn.mean_ms[3])
    # where the bracket measured nothing, the whole sweep's phases; where no phase did, the median excess
    run.service_tables = {("kairos", 94.4): [seen(3.0)]}
    assert run.host_profile("kairos", (108.6, 112.7), 0.2).table("r5n.large", run.model).mean_ms[3] == pytest.approx(
        3.0 * table.mean_ms[3]
    )
    run.service_tables = {}
    assert run.host_profile("kairos", (108.6, 112.7), 0.2).table("r5n.large", run.model).mean_ms[3] == pytest.approx(
        1.2 * table.mean_ms[3]
    )
