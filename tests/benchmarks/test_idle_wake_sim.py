"""The wake-up's share of a live/simulated gap: the table read from dispatcher records, and the simulator with it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import idle_wake_sim
from benchmarks.idle_wake_sim import ExtraSimulation, ExtraTable, extra_table
from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.sim.simulator import SimConfig, simulate
from tests.sim.test_simulator import trace_of


def records(starts_ms, finishes_ms, batches, services_ms, instance="i0", itype="fast"):
    """Dispatcher records of one instance (times in ms from 0)."""
    n = len(starts_ms)
    return pd.DataFrame(
        {
            "instance_id": instance,
            "instance_type": itype,
            "batch_size": batches,
            "start_s": np.asarray(starts_ms, float) / 1e3,
            "finish_s": np.asarray(finishes_ms, float) / 1e3,
            "service_ms": services_ms,
            "status": ["ok"] * n,
        }
    )


def test_the_table_holds_the_median_excess_per_idle_and_batch_band(fixed_profile):
    # fast: 10 ms at batch 100, 100 ms at 1000 (buckets 100, 200, 1000). Back to back, then after 1, 3 and 20 ms idle.
    q = records(
        starts_ms=[0, 10, 22, 35, 156, 161],
        finishes_ms=[10, 21, 35, 155, 157, 162],
        batches=[100, 100, 100, 1000, 100, 100],
        services_ms=[10, 11, 13, 120, 1, 1],
    )
    q.loc[4, "status"] = "failed"  # a failed query is no service time: left out, its instance's gap measured past it
    table = extra_table(q, fixed_profile, "m")
    bands = table.extra_ms
    assert bands.shape == (5, 5)
    # The first query has no idle time to go by; 11 ms back to back (queued) at batch 100: +1; 13 after 1 ms: +3;
    # 120 after 0 ms at 1000: +20; the last, 6 ms after its predecessor finished at 155 (the failed one between
    # does not count): 1 ms against 10: -9
    assert bands[0, 1] == pytest.approx(1.0) and bands[1, 1] == pytest.approx(3.0)
    assert bands[0, 4] == pytest.approx(20.0) and bands[3, 1] == pytest.approx(-9.0)
    assert np.count_nonzero(bands) == 4
    assert table.ms(0.0, 100) == pytest.approx(1.0) and table.ms(0.5, 51) == pytest.approx(3.0)
    assert table.ms(7.0, 100) == pytest.approx(-9.0) and table.ms(50.0, 100) == 0.0
    wake = table.wake_only(2.0).extra_ms
    assert (wake[0] == 0).all() and wake[1, 1] == pytest.approx(6.0) and wake[3, 1] == 0.0  # never below 0


def test_the_simulator_adds_the_extra_only_where_the_table_says(fixed_profile):
    tr = trace_of([0.0, 0.005, 0.032], [100, 100, 100])
    config = SimConfig(PoolConfig.parse("fast=1"), 1000.0)
    extra = np.zeros((5, 5))
    assert_frame = pd.testing.assert_frame_equal
    assert_frame(
        ExtraSimulation(tr, "fcfs", fixed_profile, config, extra=ExtraTable(extra)).run(),
        simulate(tr, "fcfs", fixed_profile, config),
    )
    extra[4, 1] = 5.0  # +5 ms at batch 51-150 after more than 10 ms idle: only the first query (idle since the start)
    extra[3, 1] = 2.0  # +2 ms after 5-10 ms idle: the third (arrives at 32 ms, 7 ms after the second ended at 25)
    rec = ExtraSimulation(tr, "fcfs", fixed_profile, config, extra=ExtraTable(extra)).run()
    service_ms = ((rec["finish_s"] - rec["start_s"]) * 1e3).tolist()
    assert service_ms == pytest.approx([15.0, 10.0, 12.0])  # the second went straight on from the first


def test_a_run_folder_gives_the_simulator_as_profiled_and_with_the_wake_up(tmp_path):
    (tmp_path / "run.json").write_text(
        json.dumps({"model": "rm2", "qos_ms": 350.0, "pool_config": PAPER_CONFIG, "config": {"mode": "emulated"}})
    )
    pd.DataFrame(
        {"dispatcher": ["kairos", "fcfs"], "offered_qps": [108.6, 37.4], "allowable_qps": [108.6, 0.0]}
    ).to_parquet(tmp_path / "summary.parquet")
    # r5n.large-0 runs batch 100 queries 40 ms apart, each 30 ms slower than the shipped profile's mean
    run = idle_wake_sim.live_run_for(tmp_path, "kairos")
    profiled_ms = run.profile.mean_ms("r5n.large", "rm2", 100)
    starts = np.arange(20) * (profiled_ms + 70.0)
    q = records(starts, starts + profiled_ms + 30.0, [100] * 20, [profiled_ms + 30.0] * 20, "r5n.large-0", "r5n.large")
    q.assign(policy="kairos").to_parquet(tmp_path / "dispatcher.parquet")
    q.assign(dispatcher="kairos", phase=0).to_parquet(tmp_path / "queries.parquet")
    (row,) = idle_wake_sim.wake_rows(tmp_path)  # fcfs's live figure is 0: nothing to compare
    assert row.dispatcher == "kairos" and row.live_qps == 108.6
    assert row.table.ms(40.0, 100) == pytest.approx(30.0) and row.table.ms(0.0, 100) == 0.0
    assert row.sim_qps == pytest.approx(run.simulated_allowable("kairos")[0])
    # 30 ms more per query that finds its instance idle, doubled, times five: never a higher figure
    assert row.sim_qps >= row.wake_qps[0] >= row.wake_qps[1] >= row.wake_qps[2] > 0
    assert row.wake_qps[2] < row.sim_qps
    idle_wake_sim.main([str(tmp_path)])
