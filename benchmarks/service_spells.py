"""Spells of slow service inside live phases, from run folders: does a phase that failed where the simulator passed
hold a short stretch in which the host served far slower than profiled?

A phase's service excess (the self-check) is one figure over the whole phase, so a spell of a second in which every
query runs twice as slow barely moves it, yet queues a burst behind it and sets the phase's p99. Per phase this cuts
the queries by start time into windows of ``--window-s`` and takes, in each window with at least ``MIN_QUERIES``
queries, the service the dispatcher saw over what the profile says for the same queries (sums, so long queries
weigh by their length); it prints the worst window, where it lies, and the whole phase's ratio beside the phase's
live and simulated share of queries over the QoS. The last lines compare the worst windows of phases that failed
live while the simulator passed them with those of phases where the two agreed.

Run: python benchmarks/service_spells.py [--window-s 0.5] RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.profiles import Profile
from harness.measure.fidelity import profiled_mean_ms

MIN_QUERIES = 5  # fewer queries in a window say too little about the host's speed then


@dataclass(frozen=True)
class PhaseSpell:
    """One phase: the whole phase's and the worst window's observed over profiled service, and the window's start
    (seconds into the phase)."""

    phase: int
    ratio: float
    worst_ratio: float
    worst_at_s: float
    windows: int


def phase_spells(queries: pd.DataFrame, profile: Profile, model: str, window_s: float = 0.5) -> list[PhaseSpell]:
    """Per phase of ``queries`` (merged records: ``phase``, ``status``, ``start_s``, ``service_ms``,
    ``instance_type``, ``batch_size``) its service against the profile, whole and in its worst window (pure)."""
    ok = queries[(queries["status"] == "ok") & queries["service_ms"].notna()]
    out = []
    for phase, q in ok.groupby("phase", sort=True):
        profiled = profiled_mean_ms(q, profile, model)
        seen = q["service_ms"].to_numpy(float)
        window = ((q["start_s"] - q["start_s"].min()) // window_s).to_numpy(int)
        frame = pd.DataFrame({"window": window, "seen": seen, "profiled": profiled})
        sums = frame.groupby("window").agg(seen=("seen", "sum"), profiled=("profiled", "sum"), n=("seen", "size"))
        sums = sums[sums["n"] >= MIN_QUERIES]
        ratios = sums["seen"] / sums["profiled"]
        worst = ratios.idxmax() if len(ratios) else None
        out.append(
            PhaseSpell(
                int(phase),
                float(seen.sum() / profiled.sum()) if profiled.sum() > 0 else np.nan,
                float(ratios.max()) if len(ratios) else np.nan,
                float(worst * window_s) if worst is not None else np.nan,
                len(ratios),
            )
        )
    return out


def read_run(run_dir: Path, window_s: float) -> pd.DataFrame:
    """A run folder's phases: summary figures beside their spells."""
    meta = json.loads((run_dir / "run.json").read_text())
    kept = run_dir / "profile.parquet"
    profile = Profile.load(kept if kept.exists() else None)
    spells = pd.DataFrame(phase_spells(pd.read_parquet(run_dir / "queries.parquet"), profile, meta["model"], window_s))
    summary = pd.read_parquet(run_dir / "summary.parquet")
    cols = ["phase", "dispatcher", "offered_qps", "violation_rate", "sim_violation_rate", "p99_ms", "sim_p99_ms"]
    return summary[[c for c in cols if c in summary]].merge(spells, on="phase").assign(run=run_dir.name)


def main(argv: list[str] | None = None) -> int:
    """One line per phase, then the worst windows of phases the simulator got wrong against those it got right."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="live run folders (reports/<run-id>)")
    parser.add_argument("--window-s", type=float, default=0.5, help="window length in seconds (default 0.5)")
    args = parser.parse_args(argv)
    rows = pd.concat([read_run(d, args.window_s) for d in args.runs], ignore_index=True)
    print(
        f"{'run':<28} {'phase':>5} {'qps':>7} {'over QoS':>9} {'sim':>6} {'p99':>7} {'sim':>7} {'service':>8} "
        f"{'worst':>6} {'at s':>5}"
    )
    for r in rows.itertuples():
        print(
            f"{r.run:<28} {r.phase:>5} {r.offered_qps:>7.1f} {100 * r.violation_rate:>8.2f}% "
            f"{100 * r.sim_violation_rate:>5.2f}% {r.p99_ms:>7.1f} {r.sim_p99_ms:>7.1f} {r.ratio:>7.2f}x "
            f"{r.worst_ratio:>5.2f}x {r.worst_at_s:>5.1f}"
        )
    live_fail, sim_fail = rows["violation_rate"] > 0.01, rows["sim_violation_rate"] > 0.01
    for name, mask in (("failed live, passed simulated", live_fail & ~sim_fail), ("agreed", live_fail == sim_fail)):
        whole, worst = rows.loc[mask, "ratio"].dropna(), rows.loc[mask, "worst_ratio"].dropna()
        print(
            f"{name}: {len(worst)} phases, service over profiled median {whole.median():.2f}x, worst window median "
            f"{worst.median():.2f}x, over 1.5x in {int((worst > 1.5).sum())}"
            if len(worst)
            else f"{name}: no phase"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
