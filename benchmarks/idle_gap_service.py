"""Service against the profile by how long the server had idled before each query, from live run folders.

A query that starts while its server is still busy with the one before (queued) and one that finds it idle are
timed alike by a back-to-back profile. This reads each run folder's dispatcher records (``dispatcher.parquet``: start
and finish of every query, per instance) and the profile the run used, and gives the median of observed over
profiled service (the bucket's mean) for queries grouped by their server's idle time just before them. Pinned runs
(``--pin-cores``) are marked, so the two can be told apart: on a shared host queued queries are slowed by the
harness's own processes, on a pinned one they are not, and what is left is the cost of waking from idle.

Run: python benchmarks/idle_gap_service.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.profiles import Profile
from harness.measure.fidelity import profiled_mean_ms

# Idle time before a query (ms): under 0.3 ms the server went from one query straight to the next.
GAP_EDGES_MS = (0.3, 2.0, 5.0, 10.0)
GAP_LABELS = ("busy (<0.3)", "0.3-2", "2-5", "5-10", ">10")


def with_idle_ms(queries: pd.DataFrame) -> pd.DataFrame:
    """The answered queries by instance and start, each with ``idle_ms``: its start less the finish of the query
    before it on its instance (NaN for each instance's first)."""
    ok = queries[queries["status"] == "ok"].sort_values(["instance_id", "start_s"], kind="stable")
    return ok.assign(idle_ms=(ok["start_s"] - ok.groupby("instance_id")["finish_s"].shift(1)) * 1e3)


def excess_by_gap(queries: pd.DataFrame, profile: Profile, model: str) -> pd.DataFrame:
    """Per idle-gap band: queries and the median of observed / profiled service - 1 (pure).

    ``queries``: dispatcher records (``instance_id``, ``instance_type``, ``batch_size``, ``start_s``, ``finish_s``,
    ``service_ms``, ``status``). A query's gap is its start less the finish of the query before it on its instance; the
    first query of each instance has none and is left out.
    """
    ok = with_idle_ms(queries)
    gap_ms = ok["idle_ms"]
    profiled = profiled_mean_ms(ok, profile, model)
    frame = pd.DataFrame({"gap_ms": gap_ms.to_numpy(), "ratio": ok["service_ms"].to_numpy(float) / profiled})
    frame = frame.dropna()
    band = np.searchsorted(np.asarray(GAP_EDGES_MS), frame["gap_ms"].to_numpy(), side="right")
    rows = [
        {"gap": GAP_LABELS[k], "queries": int((band == k).sum()), "median_excess": float(g.median() - 1.0)}
        for k, g in frame.groupby(band)["ratio"]
    ]
    rows.append({"gap": "all", "queries": len(frame), "median_excess": float(frame["ratio"].median() - 1.0)})
    return pd.DataFrame(rows, columns=["gap", "queries", "median_excess"])


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """A run folder's run.json and its ``excess_by_gap`` table (the profile it kept, else the shipped one)."""
    meta = json.loads((run_dir / "run.json").read_text())
    kept = run_dir / "profile.parquet"
    profile = Profile.load(kept if kept.exists() else None)
    queries = pd.read_parquet(run_dir / "dispatcher.parquet")
    return meta, excess_by_gap(queries, profile, str(meta["model"]))


def main(argv: list[str] | None = None) -> int:
    """Print each run folder's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="live run folders (reports/<run-id>)")
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        meta, table = read_run(run_dir)
        pinned = f"pinned, harness on cores {meta['harness_cpus']}" if meta.get("harness_cpus") else "not pinned"
        print(f"{run_dir.name} ({meta.get('pool_config')}, {meta.get('model')}; {pinned})")
        print(
            "  median service vs profile by idle time before the query (ms): "
            + "; ".join(f"{r.gap}: {r.median_excess:+.0%} (n={r.queries})" for r in table.itertuples())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
