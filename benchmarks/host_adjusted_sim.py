"""The simulator with this host's service times, against the live figure, from finished live sweeps' run folders:
the profile slowed uniformly by the sweep's median service excess (the rule before) beside the profile rescaled per
(type, batch bucket) by what the dispatcher saw at the final bracket's rates (``LiveRun.host_profile``, the rule now).

Each run folder's queries, summary and profile are read back; the simulator reruns the sweep's search on each
adjusted profile. Sweeps whose live figure is 0 are skipped (nothing to compare).

Run: python benchmarks/host_adjusted_sim.py RUN_DIR [RUN_DIR ...]
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


def adjusted(run_dir: Path) -> list[Adjusted]:
    """Every dispatcher's sweep in ``run_dir`` with a live figure above 0."""
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    summary = pd.read_parquet(run_dir / "summary.parquet")
    queries = pd.read_parquet(run_dir / "queries.parquet")
    profile = Profile.load(run_dir / "profile.parquet") if (run_dir / "profile.parquet").exists() else None
    out = []
    for spec, rows in summary.groupby("dispatcher", sort=False):
        live = rows["allowable_qps"].dropna()
        if not len(live) or not live.iloc[0] > 0:
            continue
        options = LiveOptions(dispatchers=(str(spec),), mode="onnx", model=meta["model"], qos_ms=meta["qos_ms"])
        run = LiveRun(options, log=lambda _: None)
        run.pool_config = PoolConfig.parse(meta["pool_config"])
        if profile is not None:
            run.profile = profile
        for _, q in queries[queries["dispatcher"] == spec].groupby("phase"):
            table = service_vs_profile(q, run.profile, run.model, 1)  # as the live run keeps them
            run.service_tables.setdefault((str(spec), float(q["offered_qps"].iloc[0])), []).append(table)
        excess = float(np.median(rows["service_excess"].dropna())) if rows["service_excess"].notna().any() else 0.0
        bracket = (float(rows["bracket_low_qps"].dropna().iloc[0]), float(rows["bracket_high_qps"].dropna().iloc[0]))
        uniform, _ = run.simulated_allowable(str(spec), run.profile.scaled(1.0 + excess))
        per_bucket, _ = run.simulated_allowable(str(spec), run.host_profile(str(spec), bracket, excess))
        out.append(Adjusted(run_dir.name, str(spec), float(live.iloc[0]), uniform, per_bucket))
    return out


def main(argv: list[str] | None = None) -> None:
    """One line per sweep, then the mean and largest miss of each rule."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    args = ap.parse_args(argv)
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
