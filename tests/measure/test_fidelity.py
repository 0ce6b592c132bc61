"""Fidelity checks: observed service against the profile, and the verdict with its reasons."""

import math

import pandas as pd
import pytest

from harness.core.profiles import Profile
from harness.measure.fidelity import (
    FidelityLimits,
    bucket_factors,
    busy_host,
    fidelity_checks,
    harness_checks,
    p99_against_sim,
    service_vs_profile,
    weighted_excess,
)
from tests.conftest import make_profile_frame


def _profile():
    return Profile.from_frame(make_profile_frame({("t.x", "m"): {10: [10.0, 10.0], 20: [20.0, 20.0]}}), drop_max=False)


def test_service_vs_profile_per_type_and_bucket():
    prof = _profile()
    itype, model = prof.instance_types[0], prof.models[0]
    table = prof.table(itype, model)
    b0, b1 = int(table.buckets[0]), int(table.buckets[1])
    queries = pd.DataFrame(
        {
            "instance_type": [itype] * 30 + ["unknown.x"] * 30,
            "batch_size": [b0] * 20 + [b1] * 5 + [b1] * 5 + [b0] * 30,
            "status": ["ok"] * 29 + ["failed"] + ["ok"] * 30,
            "service_ms": [table.mean_ms[0] * 1.1] * 20 + [table.mean_ms[1]] * 10 + [1.0] * 30,
        }
    )
    out = service_vs_profile(queries, prof, model, min_queries=10)
    # bucket b1 has 9 served queries (one failed): not judged; the unknown type is skipped
    assert out[["instance_type", "bucket", "queries"]].values.tolist() == [[itype, b0, 20]]
    assert out["excess"].iloc[0] == pytest.approx(0.1)
    assert weighted_excess(out) == pytest.approx(0.1)
    assert math.isnan(weighted_excess(out.iloc[:0]))


def test_harness_checks_flag_a_generator_or_dispatcher_that_cannot_keep_up_and_nothing_else():
    # Issue 12's limits: send lag p99 above 5 ms, load generator CPU above 85% of a core, the dispatcher's loop.
    assert harness_checks({"send_lag_p99_ms": 4.9, "loadgen_cpu_percent": 84.0, "host_cpu_percent": 99.0})[0]
    ok, reasons = harness_checks({"send_lag_p99_ms": 5.5, "loadgen_cpu_percent": 90.0, "service_excess": 0.5})
    assert not ok and reasons == ["load generator CPU 90% of a core", "load generator send lag p99 5.5 ms"]
    ok, reasons = harness_checks({"loop_lag_p99_ms": 12.0, "sent_qps": 90.0, "planned_send_qps": 100.0})
    assert reasons == ["sent 90.0 qps where the plan sends 100.0", "dispatcher event-loop lag p99 12.0 ms"]
    # A lag that breaks the 5 ms schedule need not move the figure: the fidelity verdict keeps its own 10 ms limit.
    assert fidelity_checks({"send_lag_p99_ms": 7.0})[0] and not harness_checks({"send_lag_p99_ms": 7.0})[0]
    assert not fidelity_checks({"loadgen_cpu_percent": 90.0})[0]


def test_fidelity_checks_name_each_failure_and_skip_what_is_missing():
    ok, reasons = fidelity_checks(
        {
            "host_cpu_percent": 50.0,
            "loop_lag_p99_ms": math.nan,
            "sent_qps": 99.0,
            "planned_send_qps": 100.0,
            "service_excess": 0.02,
        }
    )
    assert ok and reasons == []
    ok, reasons = fidelity_checks(
        {
            "host_cpu_percent": 97.0,
            "dispatcher_cpu_percent": 95.0,
            "loop_lag_p99_ms": 25.0,
            "send_lag_p99_ms": 12.0,
            "sent_qps": 80.0,
            "planned_send_qps": 100.0,
            "service_excess": 0.09,
            "utilization": 0.9,
            "sim_p99_host_adjusted_ms": 400.0,
        }
    )
    assert not ok and len(reasons) == 6
    assert reasons[-1] == (
        "service 9.0% slower than profiled at 90% utilization (limit 5%); the simulator with this host's service "
        "times gives p99 400.0 ms"
    )
    assert reasons[0] == "host CPU 97% (limit 90%)" and "sent 80.0 qps where the plan sends 100.0" in reasons
    assert fidelity_checks({"service_excess": 0.09, "utilization": 0.3})[0]  # a lightly loaded pool: the tail holds
    # ...unless the simulator, given this host's service times, says the tail moves: then it is judged at any load
    slow_tail = {"service_excess": 0.2, "utilization": 0.3, "sim_p99_ms": 26.0, "sim_p99_host_adjusted_ms": 31.0}
    ok, reasons = fidelity_checks(slow_tail)
    assert not ok and reasons[0].startswith("service 20.0% slower than profiled at 30% utilization")
    assert fidelity_checks({**slow_tail, "sim_p99_host_adjusted_ms": 27.0})[0]  # 3.8% on the p99: below 5%
    assert fidelity_checks({**slow_tail, "utilization": 0.9, "sim_p99_host_adjusted_ms": 26.5})[0]
    assert fidelity_checks({"service_excess": 0.09, "utilization": 0.9}, FidelityLimits(service_excess=0.10))[0]


def test_a_busy_host_is_named_as_the_cause_of_a_failed_check_and_fails_nothing_on_its_own():
    busy = {"outside_cpu_percent": 48.0, "outside_top": "python (pid 7) 45%", "host_steal_percent": 6.0}
    assert busy_host(busy) == (
        "processes outside the run took 48% of a core (most: python (pid 7) 45%); the hypervisor stole 6% of the CPU"
    )
    quiet = {"outside_cpu_percent": 19.0, "outside_top": "kworker (pid 9) 3%", "host_steal_percent": 4.9}
    assert busy_host(quiet) == "" and busy_host({"outside_cpu_percent": math.nan}) == "" and busy_host({}) == ""
    assert busy_host({"outside_cpu_percent": 30.0}) == "processes outside the run took 30% of a core"
    assert fidelity_checks(busy) == (True, []) and harness_checks(busy) == (True, [])
    lagged = {**busy, "loop_lag_p99_ms": 15.0, "send_lag_p99_ms": 6.0}
    ok, reasons = fidelity_checks(lagged)
    assert not ok and reasons == ["dispatcher event-loop lag p99 15.0 ms", f"busy host: {busy_host(busy)}"]
    ok, reasons = harness_checks(lagged)
    assert reasons[-1] == f"busy host: {busy_host(busy)}" and len(reasons) == 3
    assert fidelity_checks({**lagged, **quiet})[1] == ["dispatcher event-loop lag p99 15.0 ms"]


def test_live_p99_against_the_simulated_one_by_their_intervals():
    def phase(live, sim):
        return {
            "p99_ci_low_ms": live[0],
            "p99_ci_high_ms": live[1],
            "sim_p99_ci_low_ms": sim[0],
            "sim_p99_ci_high_ms": sim[1],
        }

    assert p99_against_sim(phase((300.0, 340.0), (320.0, 360.0))) == "within"  # overlapping
    assert p99_against_sim(phase((361.0, 400.0), (320.0, 360.0))) == "slower"
    assert p99_against_sim(phase((250.0, 319.0), (320.0, 360.0))) == "faster"
    assert p99_against_sim(phase((361.0, math.inf), (320.0, 360.0))) == "slower"  # an unserved tail, live
    assert p99_against_sim(phase((300.0, 340.0), (320.0, math.inf))) == "within"
    assert p99_against_sim(phase((math.nan, math.nan), (320.0, 360.0))) == ""  # too short to section
    assert p99_against_sim({"p99_ci_low_ms": 1.0, "p99_ci_high_ms": 2.0}) == ""  # no simulation


def test_bucket_factors_pool_the_phases_before_counting_and_fill_what_they_did_not_measure():
    profile = _profile()  # t.x: buckets 10 and 20 at 10 and 20 ms

    def table(bucket, queries, observed_ms):
        frame = pd.DataFrame(
            [("t.x", bucket, queries, observed_ms, {10: 10.0, 20: 20.0}[bucket])],
            columns=["instance_type", "bucket", "queries", "observed_ms", "profile_ms"],
        )
        return frame.assign(excess=frame["observed_ms"] / frame["profile_ms"] - 1)

    # bucket 10: 6 + 6 queries (neither phase enough alone), 12 and 14 ms -> 1.3x; bucket 20: 4 queries, too few
    factors, overall = bucket_factors([table(10, 6, 12.0), table(10, 6, 14.0), table(20, 4, 30.0)], profile, "m")
    assert factors[("t.x", "m")] == pytest.approx([1.3, 1.3])  # bucket 20 takes its type's measured factor
    assert overall == pytest.approx(1.3)
    factors, overall = bucket_factors([table(10, 12, 11.0), table(20, 10, 30.0)], profile, "m")
    assert factors[("t.x", "m")] == pytest.approx([1.1, 1.5])
    assert overall == pytest.approx((12 * 11 + 10 * 30) / (12 * 10 + 10 * 20))
    assert bucket_factors([table(20, 4, 30.0)], profile, "m") == ({}, 1.0)  # nothing measured enough
    assert bucket_factors([], profile, "m") == ({}, 1.0)
    slowed = profile.scaled_by(factors, overall)
    assert slowed.mean_ms("t.x", "m", 10) == pytest.approx(11.0) and slowed.mean_ms("t.x", "m", 20) == pytest.approx(
        30.0
    )
    assert profile.scaled_by({}, 2.0).mean_ms("t.x", "m", 20) == pytest.approx(40.0)  # no factors: the default
