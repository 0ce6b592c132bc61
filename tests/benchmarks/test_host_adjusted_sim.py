"""The host-adjusted simulation, read back from a run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from benchmarks import host_adjusted_sim
from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.live.options import LiveOptions
from harness.live.run import LiveRun


def test_a_run_folder_gives_both_adjusted_figures_and_skips_a_sweep_without_a_figure(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"model": "rm2", "qos_ms": 350.0, "pool_config": PAPER_CONFIG}))
    pd.DataFrame(
        {
            "dispatcher": ["kairos", "kairos", "fcfs"],
            "offered_qps": [108.6, 112.7, 37.4],
            "allowable_qps": [108.6, np.nan, 0.0],
            "bracket_low_qps": [108.6, np.nan, 0.0],
            "bracket_high_qps": [112.7, np.nan, 37.4],
            "service_excess": [0.02, 0.02, 0.02],
        }
    ).to_parquet(tmp_path / "summary.parquet")
    # Both bracket phases: 20 queries of batch 100 on r5n.large each, served 1.1 times as slowly as profiled. No
    # profile.parquet: the shipped profile, as a live run's --mode onnx with --profile-local off would use.
    profiled_ms = LiveRun(LiveOptions(mode="onnx", model="rm2"), log=lambda _: None).profile.mean_ms(
        "r5n.large", "rm2", 100
    )
    pd.DataFrame(
        {
            "dispatcher": "kairos",
            "phase": np.repeat([0, 1], 20),
            "offered_qps": np.repeat([108.6, 112.7], 20),
            "batch_size": 100,
            "instance_type": "r5n.large",
            "status": "ok",
            "service_ms": 1.1 * profiled_ms,
        }
    ).to_parquet(tmp_path / "queries.parquet")
    (row,) = host_adjusted_sim.adjusted(tmp_path)  # fcfs's live figure is 0: nothing to compare
    assert row.dispatcher == "kairos" and row.live_qps == 108.6
    # uniform: 2% slower; per bucket: every bucket and type 1.1x (the one measured lends its factor to the rest)
    assert 0 < row.per_bucket_qps < row.uniform_qps
    host_adjusted_sim.main([str(tmp_path)])


def test_each_slow_phase_is_simulated_on_its_own_rebuilt_trace_both_ways(tmp_path):
    (tmp_path / "run.json").write_text(
        json.dumps({"model": "rm2", "qos_ms": 350.0, "pool_config": PAPER_CONFIG, "config": {"mode": "emulated"}})
    )
    pd.DataFrame(
        {
            "dispatcher": ["kairos", "kairos", "kairos"],
            "phase": [0, 1, 2],
            "offered_qps": [94.4, 94.4, 108.6],
            "replicate": [0, 1, 0],
            "p99_ms": [330.0, 335.0, 345.0],
            "service_excess": [0.02, 0.02, np.nan],  # the last phase measured none: left out
        }
    ).to_parquet(tmp_path / "summary.parquet")
    profiled_ms = LiveRun(LiveOptions(), log=lambda _: None).profile.mean_ms("r5n.large", "rm2", 100)
    pd.DataFrame(
        {
            "dispatcher": "kairos",
            "phase": np.repeat([0, 1], 20),
            "batch_size": 100,
            "instance_type": "r5n.large",
            "status": "ok",
            "service_ms": 1.3 * profiled_ms,
        }
    ).to_parquet(tmp_path / "queries.parquet")
    rows = host_adjusted_sim.phase_adjusted(tmp_path)
    assert [(r.phase, r.live_p99_ms) for r in rows] == [(0, 330.0), (1, 335.0)]
    run = LiveRun(LiveOptions(), log=lambda _: None)
    run.pool_config = PoolConfig.parse(PAPER_CONFIG)  # set when a live run starts its pool
    for r in rows:
        # the phase's trace as the run built it (the replicate on its own window), simulated as profiled
        replicate = r.phase
        assert r.sim_p99_ms == run.simulate_point("kairos", run.phase_trace(94.4, replicate)).p99_ms
        # batch 100 on r5n.large 30% slow (every bucket and type takes that factor) against 2% uniformly
        assert r.sim_p99_ms < r.uniform_p99_ms < r.per_bucket_p99_ms
    host_adjusted_sim.main(["--phases", str(tmp_path)])
