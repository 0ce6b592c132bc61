"""The simulator with this host's service times, against the live figure, from finished live sweeps' run folders:
the profile slowed uniformly by the sweep's median service excess (the rule before) beside the profile rescaled per
(type, batch bucket) by what the dispatcher saw at the final bracket's rates (``LiveRun.host_profile``, the rule now).

Each run folder's queries, summary and profile are read back; the simulator reruns the sweep's search on each
adjusted profile. Sweeps whose live figure is 0 are skipped (nothing to compare).

With ``--phases``, each phase whose service the dispatcher saw slower than profiled instead: its live p99 against the
simulator's on its own arrivals (from queries.parquet), with the profile slowed by the phase's time-weighted excess
(the per-phase rule before) and rescaled per (type, batch bucket) by what the phase saw (the rule now).

Run: python benchmarks/host_adjusted_sim.py [--phases] RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.live.options import LiveOptions
from harness.live.run import LiveRun
from harness.measure.fidelity import service_vs_profile


@dataclass(frozen=True)
class Adjusted:
    """One sweep: its live figure and the simulator's, given the host's service times both ways (qps)."""

    run: str
    dispatcher: str
    live_qps: float
    uniform_qps: float
    per_bucket_qps: float


@dataclass(frozen=True)
class PhaseAdjusted:
    """One phase: its live p99 and the simulator's on its arrivals, as profiled and given the host's service times
    both ways (ms)."""

    run: str
    dispatcher: str
    phase: int
    offered_qps: float
    excess: float
    live_p99_ms: float
    sim_p99_ms: float
    uniform_p99_ms: float
    per_bucket_p99_ms: float


def live_run_for(run_dir: Path, spec: str) -> LiveRun:
    """A LiveRun set up as ``run_dir``'s was for ``spec``: model, QoS, pool and (where kept) the profile."""
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    config = meta.get("config", {})
    options = LiveOptions(
        dispatchers=(spec,),
        mode=config.get("mode", "onnx"),
        model=meta["model"],
        qos_ms=meta["qos_ms"],
        seed=config.get("seed", 0),
        min_queries=config.get("min_queries", LiveOptions.min_queries),
        trace=Path(config["trace"]) if config.get("trace") else None,
        scale=config.get("scale", LiveOptions.scale),
        phase_seconds=config.get("phase_seconds", LiveOptions.phase_seconds),
        phase_queries=config.get("phase_queries", LiveOptions.phase_queries),
    )
    run = LiveRun(options, log=lambda _: None)
    run.pool_config = PoolConfig.parse(meta["pool_config"])
    if (run_dir / "profile.parquet").exists():
        run.profile = Profile.load(run_dir / "profile.parquet")
    return run


def sweeps(run_dir: Path):
    """(dispatcher, its summary rows, its queries) for each sweep in ``run_dir``."""
    summary = pd.read_parquet(run_dir / "summary.parquet")
    queries = pd.read_parquet(run_dir / "queries.parquet")
    for spec, rows in summary.groupby("dispatcher", sort=False):
        yield str(spec), rows, queries[queries["dispatcher"] == spec]


def figured_sweeps(run_dir: Path):
    """(dispatcher, its summary rows, its queries, its live figure) for each sweep in ``run_dir`` whose live figure
    is above 0 (a sweep without one has nothing to compare)."""
    for spec, rows, queries in sweeps(run_dir):
        live = rows["allowable_qps"].dropna()
        if len(live) and live.iloc[0] > 0:
            yield spec, rows, queries, float(live.iloc[0])


def phase_adjusted(run_dir: Path) -> list[PhaseAdjusted]:
    """Every phase in ``run_dir`` whose dispatcher saw service slower than profiled."""
    out = []
    for spec, rows, queries in sweeps(run_dir):
        run = live_run_for(run_dir, spec)
        for _, row in rows.iterrows():
            excess = row.get("service_excess", np.nan)
            if not (np.isfinite(excess) and excess > 0):
                continue
            q = queries[queries["phase"] == row["phase"]]
            # The phase's trace rebuilt as the run built it (its arrivals in queries.parquet are epoch seconds, whose
            # rounding reorders near-ties and so the simulator's service draws).
            trace = run.phase_trace(float(row["offered_qps"]), int(row.get("replicate", 0) or 0))
            host = run.phase_host_profile(service_vs_profile(q, run.profile, run.model, 1))  # as the live run does
            out.append(
                PhaseAdjusted(
                    run_dir.name,
                    spec,
                    int(row["phase"]),
                    float(row["offered_qps"]),
                    float(excess),
                    float(row["p99_ms"]),
                    run.simulate_point(spec, trace).p99_ms,
                    run.simulate_point(spec, trace, run.profile.scaled(1.0 + excess)).p99_ms,
                    run.simulate_point(spec, trace, host).p99_ms,
                )
            )
    return out


def adjusted(run_dir: Path) -> list[Adjusted]:
    """Every dispatcher's sweep in ``run_dir`` with a live figure above 0."""
    out = []
    for spec, rows, queries, live_qps in figured_sweeps(run_dir):
        run = live_run_for(run_dir, spec)
        for _, q in queries.groupby("phase"):
            table = service_vs_profile(q, run.profile, run.model, 1)  # as the live run keeps them
            run.service_tables.setdefault((spec, float(q["offered_qps"].iloc[0])), []).append(table)
        excess = float(np.median(rows["service_excess"].dropna())) if rows["service_excess"].notna().any() else 0.0
        bracket = (float(rows["bracket_low_qps"].dropna().iloc[0]), float(rows["bracket_high_qps"].dropna().iloc[0]))
        uniform, _ = run.simulated_allowable(spec, run.profile.scaled(1.0 + excess))
        per_bucket, _ = run.simulated_allowable(spec, run.host_profile(spec, bracket, excess))
        out.append(Adjusted(run_dir.name, spec, live_qps, uniform, per_bucket))
    return out


def show_phases(rows: list[PhaseAdjusted]) -> None:
    """One line per phase, then each rule's miss on the live p99 (log ratio, as a share) where the host moved it."""
    print(
        f"{'run':<28} {'dispatcher':<12} {'phase':>5} {'qps':>7} {'excess':>7} {'live p99':>9} {'sim':>8} "
        f"{'uniform':>8} {'per bucket':>10}"
    )
    for r in rows:
        print(
            f"{r.run:<28} {r.dispatcher:<12} {r.phase:>5} {r.offered_qps:>7.1f} {100 * r.excess:>+6.1f}% "
            f"{r.live_p99_ms:>9.1f} {r.sim_p99_ms:>8.1f} {r.uniform_p99_ms:>8.1f} {r.per_bucket_p99_ms:>10.1f}"
        )
    finite = [r for r in rows if all(np.isfinite([r.live_p99_ms, r.sim_p99_ms, r.uniform_p99_ms, r.per_bucket_p99_ms]))]
    for name, attr in (
        ("as profiled", "sim_p99_ms"),
        ("uniform", "uniform_p99_ms"),
        ("per bucket", "per_bucket_p99_ms"),
    ):
        miss = np.array([abs(np.log(getattr(r, attr) / r.live_p99_ms)) for r in finite])
        print(
            f"{name}: {len(finite)} phases with finite p99s, median miss {100 * np.expm1(np.median(miss)):.1f}%, "
            f"mean {100 * np.expm1(miss.mean()):.1f}%"
            if len(finite)
            else f"{name}: no phase"
        )


def main(argv: list[str] | None = None) -> None:
    """One line per sweep, then the mean and largest miss of each rule (or per phase with ``--phases``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--phases", action="store_true", help="each phase's p99 rather than each sweep's figure")
    args = ap.parse_args(argv)
    if args.phases:
        show_phases([r for d in args.run_dirs for r in phase_adjusted(d)])
        return
    print(f"{'run':<28} {'dispatcher':<12} {'live':>7} {'uniform':>8} {'miss':>7} {'per bucket':>10} {'miss':>7}")
    rows = [r for d in args.run_dirs for r in adjusted(d)]
    for r in rows:
        u, b = r.uniform_qps / r.live_qps - 1, r.per_bucket_qps / r.live_qps - 1
        print(
            f"{r.run:<28} {r.dispatcher:<12} {r.live_qps:>7.1f} {r.uniform_qps:>8.1f} {100 * u:>+6.1f}% "
            f"{r.per_bucket_qps:>10.1f} {100 * b:>+6.1f}%"
        )
    for name, attr in (("uniform", "uniform_qps"), ("per bucket", "per_bucket_qps")):
        miss = np.array([abs(getattr(r, attr) / r.live_qps - 1) for r in rows])
        within = int(np.sum(miss <= 0.15))
        print(
            f"{name}: mean miss {100 * miss.mean():.1f}%, largest {100 * miss.max():.1f}%, within 15% in {within} of "
            f"{len(rows)}"
            if len(rows)
            else f"{name}: no sweep"
        )


if __name__ == "__main__":
    main()
