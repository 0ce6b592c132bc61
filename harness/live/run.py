"""A live run, independent of Locust: its phases, the sweep, merged records, the run folder.

``LiveRun`` starts (or attaches to) a pool and a dispatcher (``LiveStack``), and for each dispatcher policy replays
phases of the trace through a ``LoadGenerator`` (the Locust glue in ``harness/kairos_load.py`` is one). A phase is the
trace rate-scaled to an offered load and cut to ``phase_seconds``. With a sweep, the allowable-throughput search of
``harness.measure.allowable`` drives the phases (a phase lasts ``phase_seconds`` or ``phase_queries`` queries,
whichever is longer, so a low rate still gets a stable p99); it starts from the simulator's answer for the very same
phase traces, so a live sweep needs a few phases, and the simulated answer is reported next to the live one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.paper import resolve_qos_ms
from harness.core.profiles import Profile
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import make_policy
from harness.live.chaos import Chaos
from harness.live.host import PhaseMonitor
from harness.live.options import LiveOptions
from harness.live.phase import AccountingError, LoadGenerator, PhasePlan, account, merge_phase, phase_summary_row
from harness.live.run_dir import RunDir, new_run_id, replace_file
from harness.live.stack import LiveStack, pool_spec
from harness.measure.allowable import AllowableResult, SearchConfig, capacity_qps, find_allowable, phase_queries
from harness.measure.analyzer import (
    MIN_SECTIONS,
    SECTION_QUERIES,
    PointSummary,
    after_warmup,
    latency_ms,
    sections,
    summarize,
)
from harness.measure.fault_cost import fault_cost
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
from harness.measure.interval import AllowableInterval, RatePoint, allowable_interval, allowable_rate, combine
from harness.sim.simulator import SimConfig, check_trace, simulate
from traces.io import read_trace, sample_path
from traces.resample import replicate_start
from traces.scale import speedup
from traces.scalers import scale_trace
from traces.schema import Trace

UNKNOWN_INTERVAL = (
    f" (?: a rate whose phases are too short to section, under {MIN_SECTIONS * SECTION_QUERIES} measured queries "
    "together; raise --phase-queries or --replications)"
)
CENSORED_INTERVAL = " (<=, >=: a bound at the edge of the rates tried, which may lie beyond; raise --interval-steps)"
# Steps a sweep takes below the lowest rate tried when that rate fails after the search had passed one (``settle``):
# 1.15^3 = 1.52, so a figure a third below where the search found one is still placed; further than that, the host
# moved under the run, which its HOST-LIMITED flags say.
SETTLE_STEPS = 3
# A live phase with this many times the allowed share of queries over the QoS (5% for p99) is far past the limit, and
# the search's steps down grow (SearchConfig.far_violation_rate). The default run's failing phases miss by 1.05-3.2%,
# near the limit, where the small step is what places the figure.
FAR_OVER = 5.0


def _bound(iv: AllowableInterval, q: float, censored: bool, usual: str) -> str:
    """One value of ``iv``: ``?`` unknown; censored, marked by the edge of the rates tried it sits at (``usual``
    when the interval does not know them)."""
    if math.isnan(q):
        return "?"
    mark = (iv.beyond(q, censored) or usual) if censored else ""
    return f"{mark}{q:.1f}"


def interval_text(iv: AllowableInterval) -> str:
    """``low..high`` in qps, ``?`` for a bound the phases could not fix; a bound censored at the edge of the rates
    tried reads ``<=`` at the lowest rate and ``>=`` at the highest (it may lie beyond), never as if it were measured
    there."""
    return f"{_bound(iv, iv.low_qps, iv.low_censored, '<=')}..{_bound(iv, iv.high_qps, iv.high_censored, '>=')}"


def crossing_text(iv: AllowableInterval) -> str:
    """``estimate [low..high]``: where the share of queries over the QoS crosses the limit, and its interval."""
    return f"{_bound(iv, iv.estimate_qps, iv.estimate_censored, '>=')} [{interval_text(iv)}]"


def unknown_bound(iv: AllowableInterval) -> bool:
    """Whether either bound of ``iv`` is unknown."""
    return math.isnan(iv.low_qps) or math.isnan(iv.high_qps)


def closing_line(results: list[tuple[str, float, float, AllowableInterval]], flagged: Callable[[str], str]) -> str:
    """The run's last line: per dispatcher, allowable qps live (where the QoS is crossed [interval]) / simulated,
    and what limited it."""
    # The figure is the highest rate tried that passed, on the search's grid; the interval is on the rate where the
    # share of misses crosses the limit, between the rates tried. The figure can lie below that interval (441.3
    # against a crossing at 453.0 [450.0..457.3]), so both are shown, each for what it is.
    return (
        "allowable throughput (qps):  "
        + ",  ".join(
            f"{s} {live:.1f} live (crossing {crossing_text(iv)}) / {sim:.1f} sim{flagged(s)}"
            for s, live, sim, iv in results
        )
        + (f" {UNKNOWN_INTERVAL}" if any(unknown_bound(iv) for *_, iv in results) else "")
        + (f" {CENSORED_INTERVAL}" if any(iv.censored for *_, iv in results) else "")
    )


def saturated_qps(rows: list[dict]) -> float:
    """The lowest offered rate among one sweep's summary rows whose phase failed the harness's own checks (NaN:
    none did)."""
    return min((r["offered_qps"] for r in rows if r.get("harness_ok") is False), default=math.nan)


def flag_text(rows: list[dict]) -> str:
    """`` (HOST-LIMITED: k of n phases[, b on a busy host]; S sim with this host's service times; live p99 outside
    the simulated interval in j of n phases: ...; harness saturated at R qps: why)`` from one sweep's summary rows,
    each part only when some phase failed those checks (S: where the simulator was rerun with the host's service
    times, shown whenever it was); '' when none did."""
    failed = [r for r in rows if r.get("fidelity_ok") is not None and not r["fidelity_ok"]]  # NaN: not checked
    busy = sum(bool(r.get("busy_host")) for r in failed)
    # Where something outside the run kept the host busy, a quieter host is the remedy, not a smaller pool.
    notes = []
    if failed:
        notes.append(
            f"HOST-LIMITED: {len(failed)} of {len(rows)} phases" + (f", {busy} on a busy host" if busy else "")
        )
    host_sim = next((r.get("sim_allowable_host_adjusted_qps", math.nan) for r in rows), math.nan)
    if isinstance(host_sim, (int, float)) and math.isfinite(host_sim):
        # Beside the simulator's figure, how much of the live/simulated gap this host explains.
        notes.append(f"{host_sim:.1f} sim with this host's service times")
    apart = [r.get("p99_vs_sim") for r in rows if r.get("p99_vs_sim") in ("slower", "faster")]
    if apart:  # informs only: the gap may be the policy's or the simulator's as much as the host's
        ways = " and ".join(f"{apart.count(w)} {w}" for w in ("slower", "faster") if w in apart)
        notes.append(f"live p99 outside the simulated interval in {len(apart)} of {len(rows)} phases: {ways}")
    saturated = saturated_qps(rows)
    if math.isfinite(saturated):  # with its reason: a 6 ms send lag and a generator at 100% CPU read differently
        first = next(r for r in rows if r.get("harness_ok") is False and r["offered_qps"] == saturated)
        # The saturation mark is stricter than the self-checks (a 5 ms send lag against 10): where the phase still
        # passed them, say so, or a figure above that rate reads as past the harness's own ceiling.
        within = ", the phase still within its self-checks" if first.get("fidelity_ok") is True else ""
        notes.append(f"harness saturated at {saturated:.1f} qps: {first['harness_reasons']}{within}")
    return f" ({'; '.join(notes)})" if notes else ""


def pinning_hint(rows: list[dict], can_pin: bool, limit: float) -> str:
    """A note for an unpinned onnx run where this host has the cores to pin its servers and some phase failed
    because they served more than ``limit`` slower than profiled with nothing outside the run to blame ('' else)."""
    slowed = [
        r
        for r in rows
        if r.get("fidelity_ok") is False and not r.get("busy_host") and (r.get("service_excess") or 0.0) > limit
    ]
    if not (can_pin and slowed):
        return ""
    # The load generator and the dispatcher take CPU from a server while it computes: pinned, dien on 2 cores came
    # within 15% of the simulator in 4 of 6 runs, unpinned in none (docs/measurements.md).
    return (
        f"note: in {len(slowed)} of {len(rows)} phases the servers served slower than profiled while they shared this "
        "host's cores with the load generator and the dispatcher; --pin-cores gives each server cores of its own"
    )


class LiveRun:
    """Phases, sweeps and records of one live run; ``run(loadgen)`` does everything, ``close(partial=True)`` ends early."""

    def __init__(self, options: LiveOptions, log: Callable[[str], None] = print):
        self.options = options
        self.log = log
        base = read_trace(options.trace or sample_path())
        if options.model:
            base = base.with_model(options.model)
        self.model = base.only_model()
        self.base = speedup(base, options.speedup) if options.speedup else base
        self.qos_ms = resolve_qos_ms(self.model, options.qos_ms)
        for spec in options.dispatchers:
            make_policy(spec)
        self.profile = Profile.load(options.profiles)
        # ONNX Runtime servers compute on this host's cores, so a busy host is the pool at work, not a distortion:
        # there the checks are whether their service stayed at the profile and whether sender and dispatcher kept up.
        self.fidelity_limits = FidelityLimits(host_cpu_percent=math.inf) if options.mode == "onnx" else FidelityLimits()
        self.stack: LiveStack | None = None
        self.run_dir: RunDir | None = None
        self.current: PhasePlan | None = None
        self.loadgen: LoadGenerator | None = None
        self.chaos: Chaos | None = None
        self.fault_rows: list[dict] = []
        # Each phase's measured latencies (arrival order) by dispatcher and offered rate: the interval and the figure
        # pool a rate's replicates, which the summary rows cannot.
        self.latencies: dict[str, dict[float, list[np.ndarray]]] = {}
        self.uncounted: set[tuple[str, float]] = set()  # (dispatcher, rate) with a phase that cannot count
        # (dispatcher, rate) -> each phase's observed service against the profile per (type, bucket)
        self.service_tables: dict[tuple[str, float], list[pd.DataFrame]] = {}
        self._chaos_armed: set[str] = set()
        self.finished = False
        self._phase = 0

    # -- setup ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the run folder and start the stack."""
        o = self.options
        self.run_dir = RunDir(
            o.report_dir / new_run_id(),
            meta={
                "kind": "live",
                "model": self.model,
                "qos_ms": self.qos_ms,
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
                "trace": {
                    "source": self.base.source,
                    "queries": len(self.base),
                    "mean_rate_qps": self.base.mean_rate_qps,
                },
            },
        )
        self.stack = LiveStack(
            o, self.model, self.run_dir.path / "dispatcher.parquet", self.log, int(self.base.batch_size.max())
        )
        if self.stack.profile_info is not None:  # the servers were measured: everything downstream uses that
            self.profile = Profile.load(self.stack.profiles)
            self.run_dir.update_meta(profile=self.stack.profile_info)
        pf = self.stack.pool_file
        self.pool_config = pf.config
        check_trace(self.base, self.profile, self.pool_config)
        pinned = self.stack.pinning.to_json() if self.stack.pinning else {}
        cores = pinned.get("servers", [None] * len(pf.instances))
        self.run_dir.update_meta(
            pool=[i.to_json() | ({"cpus": c} if c else {}) for i, c in zip(pf.instances, cores)],
            **({"harness_cpus": pinned["harness"]} if pinned else {}),
            pool_config=str(self.pool_config),
            cost_per_h=pf.cost_per_h,
            dispatcher_url=self.stack.url,
            dispatcher_pid=self.stack.dispatcher.pid,
        )
        if o.chaos:
            self.chaos = Chaos(o.chaos, self.stack.chaos_target(), self.log)
            self.run_dir.update_meta(chaos=[e.label for e in o.chaos])
        self.log(f"run folder {self.run_dir.path}")

    # -- phases -----------------------------------------------------------------------------------------------
    def phase_trace(self, rate_qps: float, replicate: int = 0) -> Trace:
        """The base trace at ``rate_qps`` (time-scaled, thinned or superposed: ``options.scale``), cut to the phase;
        a replicate starts at a random point of the base trace and draws with its own seed."""
        o = self.options
        queries = phase_queries(rate_qps, o.phase_seconds, o.rules, o.phase_queries)
        base = self.base
        start = replicate_start(len(base), queries, o.seed, replicate)
        if start:
            base = base.tail_from(start)
        return scale_trace(base, rate_qps, o.scale, seed=o.seed + replicate, queries=queries)

    def simulate_point(self, spec: str, trace: Trace, profile: Profile | None = None) -> PointSummary:
        """The simulator's verdict on a phase trace (same profile unless given, pool, QoS, validity rules)."""
        config = SimConfig(self.pool_config, self.qos_ms, seed=self.options.seed)
        records = simulate(trace, spec, profile or self.profile, config)
        return summarize(records, self.qos_ms, self.options.rules)

    def half_capacity_qps(self) -> float:
        """Half the pool's capacity by the profile for the trace's batch mix: where the simulator's search starts."""
        latency = LatencyModel(self.profile, self.pool_config.instance_types, [self.model])
        return 0.5 * capacity_qps(latency, self.pool_config.instance_types, self.model, self.base.batch_size)

    def simulated_allowable(self, spec: str, profile: Profile | None = None) -> tuple[float, tuple[float, float]]:
        """The simulator's allowable throughput over the same phase construction (the run's profile unless given)."""
        found = find_allowable(
            lambda r: self.simulate_point(spec, self.phase_trace(r), profile),
            self.half_capacity_qps(),
            SearchConfig(rel_tol=self.options.tolerance),
        )
        return found.allowable_qps, found.bracket_qps

    def run_phase(self, spec: str, rate_qps: float, replicate: int = 0) -> PointSummary:
        """Replay one phase through the dispatcher, merge records, summarize, write, log."""
        o = self.options
        trace = (
            self.phase_trace(rate_qps, replicate)
            if rate_qps
            else self.base.head(phase_queries(self.base.mean_rate_qps, o.phase_seconds, o.rules, o.phase_queries))
        )
        offered = rate_qps or trace.mean_rate_qps
        index = self._phase
        self._phase += 1
        plan = PhasePlan.from_trace(
            trace,
            url=self.stack.url,
            start_epoch=time.time() + o.lead_s,
            index=index,
            dispatcher=spec,
            offered_qps=offered,
        )
        self.current = plan
        if self.chaos is not None and spec not in self._chaos_armed:
            self._chaos_armed.add(spec)
            self.chaos.arm(plan.start_epoch, spec)  # the schedule counts from each dispatcher's first phase
        again = f" (replicate {replicate})" if replicate else ""
        self.log(f"phase {index}: {spec} at {offered:.1f} qps{again}, {len(trace)} queries, ~{trace.duration_s:.0f} s")
        client_log = self.run_dir.start_phase(plan)  # the plan and the client's records on disk, for a kill -9
        monitor = PhaseMonitor([os.getpid(), *self.stack.pids()], plan.start_epoch, at_start=self.stack.loop_lag)
        output = self.loadgen.run_phase(plan, client_log)
        client_log.close(output.records)
        cpu = monitor.finish()
        lag = self.stack.loop_lag()
        self.stack.drain()
        dispatcher_cols = self.stack.records(f"p{index}-")
        merged = merge_phase(plan, output.records, dispatcher_cols)
        self.current = None
        summary = summarize(merged, self.qos_ms, o.rules)
        sim = self.simulate_point(spec, trace)
        row = self.summary_row(plan, merged, summary, output.cpu_percent)
        row.update(
            sim_p99_ms=sim.p99_ms,
            sim_p99_ci_low_ms=sim.p99_ci_low_ms,
            sim_p99_ci_high_ms=sim.p99_ci_high_ms,
            sim_valid=sim.valid,
            sim_violation_rate=sim.violation_rate,
        )
        row["p99_vs_sim"] = p99_against_sim(row)
        row.update(self.fidelity(plan, trace, merged, row, cpu, lag))
        harness_failed = o.harness_saturation == "invalid" and not row["harness_ok"]
        if harness_failed and summary.valid:
            # The rate was not offered as planned, or the dispatcher could not keep up: no pass can be certified.
            why = "harness saturated: " + row["harness_reasons"]
            summary = replace(summary, valid=False, invalid_reason=why)
            row.update(valid=False, invalid_reason=why)
        self.keep_latencies(spec, offered, merged, summary, harness_failed)
        row["replicate"] = replicate
        books = account(plan, output.records, dispatcher_cols, merged)
        row.update(books.as_row())
        row.update(self.mark_faults(plan, merged))
        if books.problems:
            row.update(valid=False, invalid_reason="accounting: " + "; ".join(books.problems))
        self.run_dir.add_phase(merged, row)
        if books.problems:  # recorded first, then loud: a run that lost or doubled queries has no figure to give
            raise AccountingError(f"phase {index}: " + "; ".join(books.problems))
        verdict = "VALID" if summary.valid else "INVALID"
        busy = f", load generator CPU {output.cpu_percent:.0f}%" if math.isfinite(output.cpu_percent) else ""
        warn = " (load generator saturated: latencies inflated)" if output.cpu_percent > 80 else ""
        if not row["fidelity_ok"]:
            warn += f"; HOST-LIMITED: {row['fidelity_reasons']}"
        apart = f"; live {row['p99_vs_sim']}: the intervals apart" if row["p99_vs_sim"] in ("slower", "faster") else ""
        self.log(
            f"phase {index}: {spec} at {offered:.1f} qps -> p99 {summary.p99_ms:.1f} ms "
            f"(sim {sim.p99_ms:.1f}{apart}), violations {100 * summary.violation_rate:.2f}%, {verdict}; "
            f"send lag p99 {row['send_lag_p99_ms']:.1f} ms{busy}{warn}"
        )
        return summary

    def fidelity(self, plan: PhasePlan, trace: Trace, merged: pd.DataFrame, row: dict, cpu: dict, lag: dict) -> dict:
        """The phase's self-checks: host and process CPU, the dispatcher's loop lag, the sender, the service time
        against the profile; ``fidelity_ok`` and the reasons it failed."""
        pids = self.stack.pids()
        procs = cpu["process_cpu_percent"]
        instances = [procs.get(p, math.nan) for p in pids[1:]]
        offsets = plan.offsets_s
        span = offsets[-1] - offsets[0] if len(offsets) > 1 else 0.0
        # Instances slowed on purpose (a chaos spike or stall) are not the host's doing: left out of the comparison.
        slowed = {
            e["instance"]
            for e in (self.chaos.entries if self.chaos else [])
            if e["dispatcher"] == plan.dispatcher and e["action"] in ("spike", "stall")
        }
        # Every bucket served, however few times, is kept: the sweep pools phases before it asks for
        # min_bucket_queries (host_profile); this phase's own checks ask it of the phase alone.
        every = service_vs_profile(merged[~merged["instance_id"].isin(slowed)], self.profile, self.model, 1)
        self.service_tables.setdefault((plan.dispatcher, plan.offered_qps), []).append(every)
        table = every[every["queries"] >= self.fidelity_limits.min_bucket_queries]
        worst = table.loc[table["excess"].idxmax()] if len(table) else None
        m = {
            "host_cpu_percent": cpu["host_cpu_percent"],
            "host_core_max_percent": cpu["host_core_max_percent"],
            "host_steal_percent": cpu["host_steal_percent"],
            "outside_cpu_percent": cpu["outside_cpu_percent"],
            "outside_top": cpu["outside_top"],
            "harness_cpu_percent": procs.get(os.getpid(), math.nan),
            "dispatcher_cpu_percent": procs.get(pids[0], math.nan) if pids else math.nan,
            "instance_cpu_max_percent": max((c for c in instances if math.isfinite(c)), default=math.nan),
            **{k: (math.nan if v is None else v) for k, v in lag.items()},
            "planned_send_qps": (len(offsets) - 1) / span if span > 0 else math.nan,
            "service_excess": weighted_excess(table),
            "service_excess_worst": float(worst["excess"]) if worst is not None else math.nan,
            "service_excess_worst_at": f"{worst['instance_type']} batch<={worst['bucket']}"
            if worst is not None
            else "",
        }
        latency = LatencyModel(self.profile, self.pool_config.instance_types, [self.model])
        capacity = capacity_qps(latency, self.pool_config.instance_types, self.model, trace.batch_size)
        m["utilization"] = plan.offered_qps / capacity if capacity > 0 else math.nan
        excess = m["service_excess"]
        if math.isfinite(excess) and excess > 0:  # the same phase, simulated with this host's service times
            adjusted = self.simulate_point(plan.dispatcher, trace, self.phase_host_profile(every))
            m["sim_p99_host_adjusted_ms"] = adjusted.p99_ms
        else:
            m["sim_p99_host_adjusted_ms"] = row.get("sim_p99_ms", math.nan)
        m["busy_host"] = busy_host(m, self.fidelity_limits)
        ok, reasons = fidelity_checks({**row, **m}, self.fidelity_limits)
        harness_ok, harness_reasons = harness_checks({**row, **m}, self.fidelity_limits)
        return {
            **m,
            "fidelity_ok": ok,
            "fidelity_reasons": "; ".join(reasons),
            "harness_ok": harness_ok,
            "harness_reasons": "; ".join(harness_reasons),
        }

    def mark_faults(self, plan: PhasePlan, merged: pd.DataFrame) -> dict:
        """Log each chaos event in force during this phase with what it cost; the phase row's fault columns."""
        if self.chaos is None:
            return {}
        end = max(time.time(), float(np.nanmax(merged["finish_s"], initial=plan.start_epoch)))
        hits = []
        for entry in self.chaos.entries:
            until = entry["end_epoch"] if math.isfinite(entry["end_epoch"]) else math.inf
            if entry["dispatcher"] != plan.dispatcher or entry["fired_epoch"] > end or until < plan.start_epoch:
                continue
            hits.append(f"{entry['action']} {entry['instance']}" + (" (failed)" if entry["error"] else ""))
            row = {**entry, "phase": plan.index, "offered_qps": plan.offered_qps}
            if entry["action"] != "restart" and not entry["error"]:
                row.update(fault_cost(merged, entry["fired_epoch"], min(until, end), self.qos_ms))
            self.fault_rows.append(row)
        if self.fault_rows:
            frame = pd.DataFrame(self.fault_rows)
            replace_file(self.run_dir.path / "faults.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
        return {"faults": "; ".join(hits), "fault_count": len(hits)}

    def host_excess(self, spec: str) -> float:
        """Median over ``spec``'s phases of how much slower the dispatcher saw service than the profile says (NaN if
        no phase measured it)."""
        values = [r.get("service_excess", math.nan) for r in self.run_dir.summary_rows if r["dispatcher"] == spec]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return float(np.median(values)) if values else math.nan

    def host_adjusted_allowable(self, spec: str, bracket_qps: tuple[float, float]) -> tuple[float, float]:
        """``spec``'s median service excess, and the simulator's allowable rate with this host's service times where
        that excess passes the fidelity limit either way (NaN else)."""
        # Slower or faster: either way, how much of a live/simulated gap the host explains (pinned dien, 2026-12-03,
        # one profile: the dispatcher saw service 4-22% faster than it in one run, 1-19% slower in the one before).
        excess = self.host_excess(spec)
        if not (math.isfinite(excess) and abs(excess) > self.fidelity_limits.service_excess):
            return excess, math.nan
        return excess, self.simulated_allowable(spec, self.host_profile(spec, bracket_qps, excess))[0]

    def rescaled_profile(self, tables: list[pd.DataFrame]) -> Profile | None:
        """The profile rescaled per (type, batch bucket) by ``service_vs_profile`` tables pooled (``bucket_factors``);
        None where no bucket reached ``min_bucket_queries``."""
        factors, overall = bucket_factors(tables, self.profile, self.model, self.fidelity_limits.min_bucket_queries)
        return self.profile.scaled_by(factors, overall) if factors else None

    def phase_host_profile(self, table: pd.DataFrame) -> Profile:
        """The profile with the service times one phase saw, per (type, batch bucket) (as profiled where it measured
        too few)."""
        # Per bucket, not by the phase's one time-weighted excess: the hop to an instance costs small batches a larger
        # share than large ones (142 dien phases, benchmarks/host_adjusted_sim.py --phases: median miss on the live
        # p99 25.1% against 26.6%).
        rescaled = self.rescaled_profile([table])
        return self.profile if rescaled is None else rescaled

    def host_profile(self, spec: str, bracket_qps: tuple[float, float], excess: float) -> Profile:
        """The profile with the service times the dispatcher saw in ``spec``'s phases at the final bracket's rates,
        per (type, batch bucket) (the whole sweep's where those measured none), else slowed uniformly by ``excess``."""
        # dien on cpu-1t=1, 11 sweeps on a host that slowed under them (benchmarks/host_adjusted_sim.py): against
        # live, the median excess applied uniformly missed by 11.9% on average and by up to 43.8% (a sweep whose
        # high-rate phases ran 50-70% slow); per bucket at the bracket, by 8.7% and at most 15.8%.
        near = [t for rate in bracket_qps for t in self.service_tables.get((spec, rate), [])]
        if not any(len(t) for t in near):
            near = [t for (s, _), tables in self.service_tables.items() if s == spec for t in tables]
        rescaled = self.rescaled_profile(near)
        return self.profile.scaled(1.0 + excess) if rescaled is None else rescaled

    def keep_latencies(
        self, spec: str, rate_qps: float, records: pd.DataFrame, summary: PointSummary, harness_failed: bool = False
    ) -> None:
        """Keep a phase's measured latencies (after warm-up, arrival order) for ``spec``'s points at ``rate_qps``; a
        phase too short to count (``summary``) or that saturated the harness keeps that rate from passing."""
        measured = latency_ms(after_warmup(records, self.options.rules))
        self.latencies.setdefault(spec, {}).setdefault(rate_qps, []).append(measured)
        if harness_failed or not self.options.rules.sized(summary.measured_queries, summary.duration_s):
            self.uncounted.add((spec, rate_qps))

    def verdicts(self, spec: str) -> dict[float, bool]:
        """Whether ``spec`` passed at each rate it ran, on the phases there pooled (every one of them counting)."""
        rules = self.options.rules
        return {
            rate: (spec, rate) not in self.uncounted and rules.criterion_ok(np.concatenate(phases), self.qos_ms)
            for rate, phases in self.latencies.get(spec, {}).items()
        }

    def points(self, spec: str) -> list[RatePoint]:
        """``spec``'s share of queries over the QoS and its 95% band at every rate it ran, the phases at a rate
        pooled."""
        return [
            combine(rate, phases, self.qos_ms, self.options.rules.ci_batches)
            for rate, phases in self.latencies.get(spec, {}).items()
        ]

    def interval(self, spec: str) -> AllowableInterval:
        """The 95% interval on ``spec``'s allowable rate from the share of queries over the QoS (and its band) at
        every rate it ran."""
        return allowable_interval(self.points(spec), self.options.rules.max_violation_rate)

    def sweep(self, spec: str, start_qps: float) -> tuple[AllowableResult, AllowableInterval]:
        """``spec``'s search from ``start_qps``, its replicates at both ends of the final bracket, and its interval
        after ``chase_bounds``: every phase through ``run_phase``. The allowable figure and bracket returned rest on
        every phase, each rate judged on its phases pooled (``verdicts``), not on the search's single phases."""
        o = self.options
        found = find_allowable(
            lambda r: self.run_phase(spec, r),
            start_qps,
            SearchConfig(
                rel_tol=o.tolerance,
                max_points=o.max_phases,
                growth=o.growth,
                far_violation_rate=FAR_OVER * o.rules.max_violation_rate,
            ),
        )
        for rate in (r for r in found.bracket_qps if 0 < r < math.inf):
            for k in range(1, o.replications + 1):  # independent windows and seeds at both bracket ends
                self.run_phase(spec, rate, replicate=k)
        iv = self.chase_bounds(spec)
        if found.allowable_qps > 0 and self.settle(spec):
            iv = self.interval(spec)
        allowable, bracket = allowable_rate(self.verdicts(spec))
        return replace(found, allowable_qps=allowable, bracket_qps=bracket), iv

    def settle(self, spec: str) -> bool:
        """Where the lowest rate tried fails on its phases pooled although the search had passed one (replicates
        overturned it, or a chase below it failed), step down one search step (``growth``) at a time, one phase each,
        until a rate passes or ``SETTLE_STEPS`` are spent: the figure then rests on a rate that passed, not on 0.
        Returns whether it ran a phase."""
        # Live onnx sweeps (dien, cpu-1t=1, 2026-12-03) on a host that slowed under them: 150.3 qps passed, then its
        # replicate failed (3.15% over the QoS, the server 32% slower than profiled), or the lower bound's chase at
        # 130.7 failed twice (1.13%, 3.38%): each run said "0.0 live" of a pool that serves over 100 qps.
        o = self.options
        ran = False
        for _ in range(SETTLE_STEPS):
            verdicts = self.verdicts(spec)
            if not verdicts or allowable_rate(verdicts)[0] > 0:
                break
            rate = min(verdicts) / o.growth
            if rate < SearchConfig.min_qps:
                break
            self.log(f"{spec}: no rate tried passes on its phases pooled; {rate:.1f} qps, one search step down")
            self.run_phase(spec, rate)
            ran = True
        return ran

    def chase_bounds(self, spec: str) -> AllowableInterval:
        """``spec``'s interval after up to ``interval_steps`` more rates, each one search step (``growth``) past a
        bound censored at the edge of the rates tried and run ``1 + replications`` times: a bound the phases could not
        fix is measured further rather than reported at that edge."""
        o = self.options
        iv = self.interval(spec)
        for _ in range(o.interval_steps):
            rates = list(self.latencies.get(spec, {}))
            # The lower side first: it is the rate the pool meets the QoS at with confidence, what a capacity plan
            # rests on. Simulated, on the default run (benchmarks/interval_study.py): lower first places the lower
            # bound in all 20 runs and leaves the upper at >=124.9, 15% past the figure, in 17; upper first places
            # the upper one in all 20 and leaves the lower at <=108.6, the figure itself, in 16.
            if iv.low_censored and iv.low_qps <= min(rates):
                rate, side = min(rates) / o.growth, "lower"
            elif (iv.high_censored and iv.high_qps >= max(rates)) or (iv.low_censored and iv.low_qps >= max(rates)):
                rate, side = max(rates) * o.growth, "upper"
            else:
                break
            if rate < SearchConfig.min_qps:
                break
            if not self.can_bound(rate):
                self.log(
                    f"{spec}: the interval's {side} bound lies beyond the rates tried, and phases at {rate:.1f} qps "
                    "would be too short to section alone: it stays there (--replications 2 or more chases it)"
                )
                break
            self.log(f"{spec}: the interval's {side} bound lies beyond the rates tried; {rate:.1f} qps measures it")
            for k in range(o.replications + 1):
                self.run_phase(spec, rate, replicate=k)
            iv = self.interval(spec)
        return iv

    def can_bound(self, rate_qps: float) -> bool:
        """Whether a chase runs phases at ``rate_qps``: each can be sectioned alone, or ``--replications`` >= 2 pools
        three or more."""
        # The default's two 475-query phases (fcfs, least_outstanding) pool into 8 sections, enough for a band, yet
        # are not chased: their 0.7% of big batches on r5n miss the QoS at any load, so their band reaches past it at
        # every rate below the bracket. Simulated with such chases allowed (benchmarks/interval_study.py), their lower
        # bound stayed censored one step lower in all 20 runs of each, and live the chase adds a minute.
        o = self.options
        queries = phase_queries(rate_qps, o.phase_seconds, o.rules, o.phase_queries)
        measured = queries - o.rules.warmup_queries(queries)
        return bool(sections(measured, o.rules.ci_batches)) or o.replications >= 2

    def heal_chaos(self) -> None:
        """Bring back what the chaos schedule took down, and wait until the dispatcher serves with it again."""
        if self.chaos is None:
            return
        self.chaos.disarm()
        if self.chaos.heal() and self.stack is not None and not self.stack.wait_in_service(30.0):
            self.log("chaos: not every instance is back in service; the next dispatcher starts without it")

    def summary_row(self, plan: PhasePlan, merged: pd.DataFrame, summary: PointSummary, cpu_percent: float) -> dict:
        """One summary.parquet row for a phase."""
        cost = self.stack.pool_file.cost_per_h if self.stack else math.nan
        return phase_summary_row(plan, merged, summary, cpu_percent, cost)

    # -- the whole run ----------------------------------------------------------------------------------------
    def run(self, loadgen: LoadGenerator) -> Path | None:
        """Every dispatcher in turn (a sweep or one phase each); returns the report path."""
        self.loadgen = loadgen
        o = self.options
        results = []
        for k, spec in enumerate(o.dispatchers):
            if k:
                self.heal_chaos()  # each dispatcher starts with the whole pool, as the first did
            self.stack.set_policy(spec)
            if o.sweeping:
                sim_qps, sim_bracket = self.simulated_allowable(spec)
                # Where the simulator finds no passing rate, half the pool's capacity: a phase at 1 qps would last
                # --phase-queries seconds.
                start = o.rate_qps or sim_qps or self.half_capacity_qps()
                self.log(f"{spec}: simulator's allowable throughput {sim_qps:.1f} qps; live sweep starts there")
                found, iv = self.sweep(spec, start)
                excess, host_sim = self.host_adjusted_allowable(spec, found.bracket_qps)
                self.run_dir.set_allowable(
                    spec,
                    found.allowable_qps,
                    found.bracket_qps,
                    sim_allowable_qps=sim_qps,
                    allowable_estimate_qps=iv.estimate_qps,
                    allowable_estimate_censored=iv.estimate_censored,
                    allowable_low_qps=iv.low_qps,
                    allowable_high_qps=iv.high_qps,
                    allowable_low_censored=iv.low_censored,
                    allowable_high_censored=iv.high_censored,
                    allowable_method=iv.method,
                    service_excess_median=excess,
                    sim_allowable_host_adjusted_qps=host_sim,
                    harness_saturated_qps=self.harness_saturated_qps(spec),
                )
                results.append((spec, found.allowable_qps, sim_qps, iv))
                self.log(
                    f"{spec}: allowable throughput {found.allowable_qps:.1f} qps live "
                    f"(bracket {found.bracket_qps[0]:.1f}..{found.bracket_qps[1]:.1f}; p99 crosses the QoS at "
                    f"{crossing_text(iv)} (95% interval)"
                    f"{CENSORED_INTERVAL if iv.censored else ''}"
                    f"{UNKNOWN_INTERVAL if unknown_bound(iv) else ''}), "
                    f"{sim_qps:.1f} simulated"
                    + (
                        f", {host_sim:.1f} simulated with this host's service times ({100 * excess:+.0f}%)"
                        if math.isfinite(host_sim)
                        else ""
                    )
                )
            else:
                self.run_phase(spec, o.rate_qps)
            if self.chaos is not None:
                self.chaos.disarm()
        self.finished = True
        if results:
            self.log(closing_line(results, self.flagged))
        hint = pinning_hint(self.run_dir.summary_rows, self.could_pin(), self.fidelity_limits.service_excess)
        if hint:
            self.log(hint)
        return self.close(partial=False)

    def could_pin(self) -> bool:
        """Whether this run's servers were not pinned but this host has the cores to pin them (``--pin-cores``)."""
        o = self.options
        if o.mode != "onnx" or o.pin_cores or o.pool_file is not None:
            return False
        try:
            replace(pool_spec(o, self.model), pin_cores=True).pinning()
        except InputError:  # too few cores, or not Linux
            return False
        return True

    def flagged(self, spec: str) -> str:
        """What limited ``spec``'s sweep, for the closing line (``flag_text``)."""
        return flag_text([r for r in self.run_dir.summary_rows if r.get("dispatcher") == spec])

    def harness_saturated_qps(self, spec: str) -> float:
        """The lowest offered rate at which ``spec``'s phase failed the harness's own checks (NaN: none did)."""
        return saturated_qps([r for r in self.run_dir.summary_rows if r.get("dispatcher") == spec])

    def close(self, partial: bool) -> Path | None:
        """Record what an interrupted phase completed, stop the stack, finish the run folder (idempotent)."""
        if self.run_dir is None:
            if self.stack:
                self.stack.stop()
            return None
        report = None
        if self.chaos is not None:
            self.chaos.disarm()
        try:
            if partial and self.current is not None and self.stack is not None:
                plan = self.current
                try:
                    cols = self.stack.records(f"p{plan.index}-")
                except OSError:
                    cols = {}
                records = self.loadgen.partial_records() if self.loadgen else []
                merged = merge_phase(plan, records, cols)
                self.current = None
                if len(merged):
                    summary = summarize(merged, self.qos_ms, self.options.rules)
                    row = self.summary_row(plan, merged, summary, math.nan)
                    row.update(
                        valid=False, invalid_reason="interrupted: " + (summary.invalid_reason or "partial phase")
                    )
                    self.run_dir.add_phase(merged, row)
        finally:
            if self.stack:
                self.stack.stop()
                self.stack = None
            report = self.run_dir.finish(partial=partial)
            path, self.run_dir = self.run_dir.path, None
            self.log(f"{'partial ' if partial else ''}report in {path}" + (f": {report}" if report else ""))
        return report
