"""Plans that follow the load: target rates, flattened confirming traces, per-window picks, the cheapest static."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.plan import (
    PlanSettings,
    backlog_violations,
    cheapest_static,
    flatten_to_rate,
    peak_rate_qps,
    plan_for_trace,
    window_edges,
)
from harness.allocate.space import enumerate_configs, make_problem
from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import latency_ms
from harness.measure.analyzer import percentile_ms
from harness.sim.simulator import SimConfig, simulate
from tests.conftest import make_profile_frame
from traces.generate import generate_trace
from traces.schema import Trace

SPREAD = np.array([0.9, 0.95, 1.0, 1.05, 1.1])
QOS_MS = 40.0


@pytest.fixture(scope="module")
def toy():
    """A GPU-like base, a CPU-like and a cheap type for model 'toy' (as in the allocate CLI tests), $2/h."""
    buckets = range(10, 101, 10)
    profile = Profile.from_frame(
        make_profile_frame(
            {
                ("gpu", "toy"): {b: list((4 + 0.1 * b) * SPREAD) for b in buckets},
                ("cpu", "toy"): {b: list((1 + 0.3 * b) * SPREAD) for b in buckets},
                ("cheap", "toy"): {b: list((2 + 0.5 * b) * SPREAD) for b in buckets},
            }
        ),
        source="toy",
    )
    problem = make_problem(profile, {"gpu": 1.0, "cpu": 0.25, "cheap": 0.15}, "toy", QOS_MS, 2.0)
    return profile, problem


@pytest.fixture(scope="module")
def diurnal():
    """One 400 s period of a diurnal load around 60 qps (peak 108, trough 12), uniform batches 10..100."""
    rng = np.random.default_rng(7)
    return generate_trace(24_000, 60.0, arrivals="diurnal:0.8:400", batch_mix="uniform:10:100", model="toy", rng=rng)


def _trace(times) -> Trace:
    t = np.asarray(times, dtype=float)
    return Trace(t, np.full(len(t), 50, dtype=np.int64), np.full(len(t), "toy", dtype=object))


def test_windows_cover_the_trace_and_a_short_remainder_joins_the_last():
    trace = _trace(np.linspace(0.0, 1000.0, 5001))
    assert window_edges(trace, 300.0, 60.0) == [(0.0, 300.0), (300.0, 600.0), (600.0, 900.0), (900.0, 1000.0)]
    assert window_edges(trace, 330.0, 60.0) == [(0.0, 330.0), (330.0, 660.0), (660.0, 1000.0)]  # 10 s left: joined


def test_peak_rate_is_the_busiest_sub_window():
    times = np.concatenate([np.arange(0, 60, 0.1), 60 + np.arange(0, 60, 0.02), 120 + np.arange(0, 60, 0.1)])
    assert peak_rate_qps(times, 0.0, 180.0, 60.0) == pytest.approx(50.0)
    assert peak_rate_qps(times, 0.0, 180.0, 180.0) == pytest.approx(len(times) / 180.0)


def test_flattening_runs_every_sub_window_at_the_target_and_keeps_the_queries():
    # A ramp: 10, 20, 30, 40 qps over four 10 s sub-windows.
    times = np.concatenate([10 * k + np.arange(0, 10, 1 / r) for k, r in enumerate((10, 20, 30, 40))])
    trace = Trace(times, np.arange(len(times)) + 1, np.full(len(times), "toy", dtype=object))
    flat = flatten_to_rate(trace, 0.0, 40.0, 10.0, 50.0)
    assert np.array_equal(flat.batch_size, trace.batch_size)  # same queries, same order
    assert np.all(np.diff(flat.arrival_s) >= 0)
    counts = np.array([100, 200, 300, 400])
    edges = np.concatenate([[0.0], np.cumsum(counts / 50.0)])
    got, _ = np.histogram(flat.arrival_s, bins=edges)
    assert got.tolist() == counts.tolist()  # each sub-window now spans count / 50 qps seconds


def test_backlog_bound_counts_what_a_rate_cannot_serve_in_time():
    times = np.arange(0.0, 100.0, 0.01)  # 100 qps for 100 s
    assert backlog_violations(times, 200.0, 1.0, 10.0) == 0.0
    # At 50 qps the backlog grows by 500 per 10 s: 5000 at the end, of which 50 x 1 s may still wait.
    assert backlog_violations(times, 50.0, 1.0, 10.0) == pytest.approx(5000 - 50, abs=2)


def test_settings_refuse_bad_values():
    with pytest.raises(InputError, match="window s"):
        PlanSettings(0.0)
    with pytest.raises(InputError, match="margin"):
        PlanSettings(60.0, margin=-1.0)
    with pytest.raises(InputError, match="startup s"):
        PlanSettings(60.0, startup_s=float("nan"))


@pytest.fixture(scope="module")
def toy_plan(toy, diurnal):
    profile, problem = toy
    settings = PlanSettings(100.0, subwindow_s=20.0, margin=1.05, queries=4000, policy="fcfs")
    return plan_for_trace(problem, profile, diurnal, settings), settings


def test_plan_follows_the_load(toy_plan, diurnal):
    result, _ = toy_plan
    plan = result.plan
    assert plan.start_s == diurnal.arrival_s[0] and plan.end_s == diurnal.arrival_s[-1]
    assert len(plan.windows) == 4 and all(c.confirmed for c in result.choices)
    costs = [w.usd_per_h for w in plan.windows]
    assert len({str(w.pool) for w in plan.windows}) > 1  # the windows differ
    # Sine from 0: windows 0 and 1 hold the peak, window 3 the trough.
    assert max(costs[:2]) > costs[3]
    for c in result.choices:
        assert c.target_qps == pytest.approx(1.05 * c.peak_qps)
        assert c.fluid_bound_qps >= c.target_qps and c.p99_ms <= QOS_MS


def test_each_window_gets_the_cheapest_configuration_the_simulator_confirms(toy, toy_plan, diurnal):
    """Brute force on the peak window: every cheaper configuration fails the same confirming simulation."""
    profile, problem = toy
    result, settings = toy_plan
    k = int(np.argmax([c.target_qps for c in result.choices]))
    choice = result.choices[k]
    confirm = flatten_to_rate(diurnal, choice.start_s, choice.end_s, settings.subwindow_s, choice.target_qps)
    confirm = confirm.head(settings.queries)
    configs = enumerate_configs(problem)
    cheaper = [c for c in configs if problem.cost_per_h(c) < choice.usd_per_h - 1e-9]
    assert cheaper
    for counts in cheaper:
        pool = PoolConfig.from_mapping(problem.as_mapping(counts))
        records = simulate(confirm, "fcfs", profile, SimConfig(pool, QOS_MS))
        skip = int(len(confirm) * settings.rules.warmup_fraction)
        assert percentile_ms(latency_ms(records.iloc[skip:]), 99.0) > QOS_MS, problem.label(counts)


def test_cheapest_static_meets_qos_in_every_window_and_nothing_cheaper_does(toy, toy_plan, diurnal):
    profile, problem = toy
    result, settings = toy_plan
    windows = [(w.start_s, w.end_s) for w in result.plan.windows]
    static = cheapest_static(problem, profile, diurnal, settings, windows)
    assert static.config is not None
    # The static pool must carry the peak, so it costs at least the plan's dearest window.
    assert static.usd_per_h >= max(w.usd_per_h for w in result.plan.windows) - 1e-9
    where = result.plan.window_index(diurnal.arrival_s)

    def worst_window_p99(counts) -> float:
        pool = PoolConfig.from_mapping(problem.as_mapping(counts))
        lat = latency_ms(simulate(diurnal, "fcfs", profile, SimConfig(pool, QOS_MS)))
        return max(percentile_ms(lat[where == k], 99.0) for k in range(len(windows)))

    assert worst_window_p99(static.counts) <= QOS_MS
    for counts in enumerate_configs(problem):
        if problem.cost_per_h(counts) < static.usd_per_h - 1e-9:
            assert worst_window_p99(counts) > QOS_MS, problem.label(counts)
