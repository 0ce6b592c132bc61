"""Would the cost of waking from idle move the simulator's answer? Live run folders' sweeps rerun in the simulator
with the service the dispatcher saw, by the server's idle time before each query, added to the profile.

A back-to-back profile times every query as if its server went straight on from the one before. Under a run, a query
that finds its server idle runs slower (``idle_gap_service.py``, ``idle_wake.py``), and queued ones may run faster.
From each run folder's dispatcher records this takes the median service less the profile's mean, per band of idle
time and band of batch size (``extra_table``), and reruns the sweep's simulated search (same phase traces, seed,
pool, QoS and profile) three ways: as profiled; with the wake-up alone (the bands after an idle spell, never
below 0), also doubled and times five; and with every band as seen, queued ones included. Beside the live figure,
that says how much of a live/simulated gap the wake-up, or the service as seen, explains.

Run (from the project root, as a module: it reads two sibling benchmarks): python -m benchmarks.idle_wake_sim RUN_DIR
[RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.host_adjusted_sim import figured_sweeps, live_run_for
from benchmarks.idle_gap_service import GAP_EDGES_MS, with_idle_ms
from harness.core.profiles import Profile
from harness.live.run import LiveRun
from harness.measure.allowable import SearchConfig, find_allowable
from harness.measure.analyzer import summarize
from harness.measure.fidelity import profiled_mean_ms
from harness.sim.simulator import SimConfig, Simulation

BATCH_EDGES = (50, 150, 300, 600)  # batch bands: 1-50, 51-150, 151-300, 301-600, over 600
WAKE_FACTORS = (1.0, 2.0, 5.0)


@dataclass(frozen=True)
class ExtraTable:
    """Milliseconds to add to a profile draw, per idle band (``GAP_EDGES_MS``; band 0: queued) and batch band."""

    extra_ms: np.ndarray  # (idle bands, batch bands)

    def ms(self, idle_ms: float, batch_size: int) -> float:
        """The extra for a query of ``batch_size`` that found its server idle for ``idle_ms`` (0: queued)."""
        return float(
            self.extra_ms[bisect.bisect_right(GAP_EDGES_MS, idle_ms), bisect.bisect_left(BATCH_EDGES, batch_size)]
        )

    def wake_only(self, factor: float = 1.0) -> ExtraTable:
        """The idle bands' extra alone (queued: 0, never below 0), times ``factor``."""
        wake = np.clip(self.extra_ms, 0.0, None) * factor
        wake[0] = 0.0
        return ExtraTable(wake)


def extra_table(queries: pd.DataFrame, profile: Profile, model: str) -> ExtraTable:
    """Median observed less profiled service (ms) per idle band and batch band from dispatcher records (pure); a
    band without queries adds nothing. An instance's first query, with no idle time to go by, is left out."""
    ok = with_idle_ms(queries).dropna(subset=["idle_ms"])
    profiled = profiled_mean_ms(ok, profile, model)
    frame = pd.DataFrame(
        {
            "idle": np.searchsorted(GAP_EDGES_MS, ok["idle_ms"].to_numpy(float), side="right"),
            "batch": np.searchsorted(BATCH_EDGES, ok["batch_size"].to_numpy(int), side="left"),
            "extra_ms": ok["service_ms"].to_numpy(float) - profiled,
        }
    )
    out = np.zeros((len(GAP_EDGES_MS) + 1, len(BATCH_EDGES) + 1))
    for (idle, batch), extra in frame.groupby(["idle", "batch"])["extra_ms"]:
        out[idle, batch] = float(extra.median())
    return ExtraTable(out)


class ExtraSimulation(Simulation):
    """The simulator with a table's extra added to each profile draw, by the instance's idle time and the batch."""

    def __init__(self, *args, extra: ExtraTable, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = extra

    def service_ms(self, q, inst, sampled_ms: float, idle_ms: float) -> float:
        """The draw plus the table's extra, never below a tenth of the draw."""
        return max(0.1 * sampled_ms, sampled_ms + self.extra.ms(idle_ms, q.batch_size))


def simulated_allowable(run: LiveRun, spec: str, extra: ExtraTable) -> float:
    """``LiveRun.simulated_allowable`` with ``extra`` added to the service draws."""
    config = SimConfig(run.pool_config, run.qos_ms, seed=run.options.seed)

    def point(rate_qps: float):
        records = ExtraSimulation(run.phase_trace(rate_qps), spec, run.profile, config, extra=extra).run()
        return summarize(records, run.qos_ms, run.options.rules)

    return find_allowable(point, run.half_capacity_qps(), SearchConfig(rel_tol=run.options.tolerance)).allowable_qps


@dataclass(frozen=True)
class WakeRow:
    """One sweep: the live figure and the simulator's, as profiled, with the wake-up (per factor) and as seen."""

    run: str
    dispatcher: str
    live_qps: float
    sim_qps: float
    wake_qps: tuple[float, ...]
    as_seen_qps: float
    table: ExtraTable


def wake_rows(run_dir: Path) -> list[WakeRow]:
    """Every dispatcher's sweep in ``run_dir`` with a live figure above 0."""
    dispatched = pd.read_parquet(run_dir / "dispatcher.parquet")
    out = []
    for spec, _, _, live_qps in figured_sweeps(run_dir):
        run = live_run_for(run_dir, spec)
        mine = dispatched[dispatched["policy"] == spec] if "policy" in dispatched else dispatched
        table = extra_table(mine, run.profile, run.model)
        wake = tuple(simulated_allowable(run, spec, table.wake_only(f)) for f in WAKE_FACTORS)
        out.append(
            WakeRow(
                run_dir.name,
                spec,
                live_qps,
                run.simulated_allowable(spec)[0],
                wake,
                simulated_allowable(run, spec, table),
                table,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """One line per sweep, and each one's table of extra milliseconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="live run folders (reports/<run-id>)")
    args = parser.parse_args(argv)
    rows = [r for d in args.runs for r in wake_rows(d)]
    wake_head = " ".join(f"{f'wake x{f:g}':>9}" for f in WAKE_FACTORS)
    print(f"{'run':<28} {'dispatcher':<10} {'live':>7} {'sim':>7} {wake_head} {'as seen':>8}")
    for r in rows:
        wake = " ".join(f"{q:>9.1f}" for q in r.wake_qps)
        print(f"{r.run:<28} {r.dispatcher:<10} {r.live_qps:>7.1f} {r.sim_qps:>7.1f} {wake} {r.as_seen_qps:>8.1f}")
    idle = ["queued"] + [f">{e:g}" for e in GAP_EDGES_MS]
    batch = [f"<={e}" for e in BATCH_EDGES] + [f">{BATCH_EDGES[-1]}"]
    for r in rows:
        print(f"\n{r.run} {r.dispatcher}: observed less profiled service (ms), idle before the query x batch size")
        print(pd.DataFrame(r.table.extra_ms, index=idle, columns=batch).round(2).to_string())
    for name, pick in [(f"wake x{f:g}", lambda r, k=k: r.wake_qps[k]) for k, f in enumerate(WAKE_FACTORS)] + [
        ("as seen", lambda r: r.as_seen_qps)
    ]:
        moved = [pick(r) / r.sim_qps - 1 for r in rows]
        within = sum(abs(pick(r) / r.live_qps - 1) <= 0.15 for r in rows)
        print(
            f"{name}: simulator moved {100 * min(moved):+.1f}% to {100 * max(moved):+.1f}%; within 15% of live in "
            f"{within} of {len(rows)} (as profiled: {sum(abs(r.sim_qps / r.live_qps - 1) <= 0.15 for r in rows)})"
            if rows
            else f"{name}: no sweep"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
