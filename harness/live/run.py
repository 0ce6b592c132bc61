"""A live run, independent of Locust: the stack it starts, its phases, the sweep, merged records, the run folder.

``LiveRun`` starts (or attaches to) a pool, starts a dispatcher, and for each dispatcher policy replays phases of the
trace through a ``LoadGenerator`` (the Locust glue in ``harness/kairos_load.py`` is one). A phase is the trace
rate-scaled to an offered load and cut to ``phase_seconds``. With a sweep, the allowable-throughput search of
``harness.measure.allowable`` drives the phases (a phase lasts ``phase_seconds`` or ``phase_queries`` queries, whichever
is longer, so a low rate still gets a stable p99); it starts from the simulator's answer for the very same phase traces, so a
live sweep needs a few phases, and the simulated answer is reported next to the live one.
"""

from __future__ import annotations

import json
import time
import math
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import pandas as pd

from harness.measure.allowable import SearchConfig, capacity_qps, find_allowable, phase_queries
from harness.measure.analyzer import PointSummary, ValidityRules, percentile_ms, summarize
from harness.core.errors import InputError
from harness.dispatch.latency_model import LatencyModel
from harness.core.paper import PAPER_CONFIG, default_qos_ms
from harness.dispatch.policies import make_policy
from harness.core.profiles import Profile
from harness.live.run_dir import RunDir
from harness.sim.simulator import SimConfig, check_trace, simulate
from traces.io import read_trace, sample_path
from traces.scale import scale_to_rate, speedup
from traces.schema import Trace

DEFAULT_DISPATCHERS = ("kairos", "fcfs", "least_outstanding")


@dataclass(frozen=True)
class LiveOptions:
    """What a live run does; the locustfile's options translate into this."""

    trace: Path | None = None
    model: str | None = None
    pool_file: Path | None = None
    config: str = PAPER_CONFIG
    mode: str = "emulated"
    dispatchers: tuple[str, ...] = DEFAULT_DISPATCHERS
    qos_ms: float | None = None
    rate_qps: float | None = None
    speedup: float | None = None
    sweep: bool = False
    phase_seconds: float = 10.0
    phase_queries: int = 500
    report_dir: Path = Path("reports")
    seed: int = 0
    profiles: Path | None = None
    tolerance: float = 0.05
    growth: float = 1.15
    max_phases: int = 8
    min_queries: int = 200
    criterion: str = "p99"
    lead_s: float = 2.0

    @property
    def sweeping(self) -> bool:
        """A sweep when asked, or when no fixed load (--rate/--speedup) is given."""
        return self.sweep or (self.rate_qps is None and self.speedup is None)

    @property
    def rules(self) -> ValidityRules:
        """Validity of a live phase (after a 5% warm-up); p99 <= QoS by default, early stopping reported too."""
        return ValidityRules(min_queries=self.min_queries, min_duration_s=0.5 * self.phase_seconds,
                             criterion=self.criterion)


@dataclass(frozen=True)
class PhasePlan:
    """One phase as load generators need it: ids, send offsets (s from start_epoch), batch sizes, target URL."""

    index: int
    dispatcher: str
    offered_qps: float
    model: str
    url: str
    start_epoch: float
    request_ids: list[str]
    offsets_s: list[float]
    batch_sizes: list[int]

    def shard(self, k: int, n: int) -> dict:
        """The k-th of n interleaved shards, as a message payload (every query in exactly one shard)."""
        return {"index": self.index, "model": self.model, "url": self.url, "start_epoch": self.start_epoch,
                "request_ids": self.request_ids[k::n], "offsets_s": self.offsets_s[k::n],
                "batch_sizes": self.batch_sizes[k::n]}


@dataclass
class PhaseOutput:
    """What load generators send back: client rows and their own CPU use."""

    rows: list[dict] = field(default_factory=list)
    cpu_percent: float = math.nan


class LoadGenerator(Protocol):
    """Replays phases open-loop; the Locust glue implements it with gevent greenlets and custom messages."""

    def run_phase(self, plan: PhasePlan) -> PhaseOutput:
        """Send the phase's queries at their times; block until all have answered."""

    def partial_rows(self) -> list[dict]:
        """Client rows of the phase in progress (for an interrupted run)."""


def http_json(url: str, doc: dict | None = None, method: str | None = None, timeout_s: float = 300.0) -> dict:
    """A small JSON request (urllib: cooperative under gevent's monkey patching)."""
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def merge_phase(plan: PhasePlan, client_rows: list[dict], dispatcher_cols: dict) -> pd.DataFrame:
    """One row per query of the phase that was sent or reached the dispatcher: client + dispatcher views joined."""
    client = pd.DataFrame(client_rows, columns=["request_id", "intended_s", "sent_s", "client_finish_s",
                                                "http_status", "worker"])
    disp = pd.DataFrame(dispatcher_cols) if dispatcher_cols else pd.DataFrame(columns=["request_id"])
    disp = disp.rename(columns={"finish_s": "backend_finish_s", "status": "dispatcher_status",
                                "http_status": "dispatcher_http_status"})
    base = pd.DataFrame({"request_id": plan.request_ids, "batch_size": plan.batch_sizes,
                         "planned_s": [plan.start_epoch + o for o in plan.offsets_s]})
    merged = base.merge(client, on="request_id", how="left").merge(
        disp.drop(columns=[c for c in ("model", "batch_size", "arrival_s", "policy") if c in disp.columns]),
        on="request_id", how="left")
    merged = merged[merged["sent_s"].notna() | merged.get("dispatcher_status", pd.Series(dtype=object)).notna()]
    ok = merged["http_status"].fillna(0).astype(int) == 200
    dstat = merged.get("dispatcher_status", pd.Series("", index=merged.index)).fillna("")
    status = np.where(ok, "ok", np.where(dstat.isin(["shed", "dropped"]), dstat, "failed"))
    intended = merged["intended_s"].fillna(merged["planned_s"])
    out = pd.DataFrame({
        "request_id": merged["request_id"], "model": plan.model, "batch_size": merged["batch_size"],
        "arrival_s": intended, "dispatch_s": merged.get("dispatch_s"), "start_s": merged.get("start_s"),
        "finish_s": merged["client_finish_s"].where(ok), "instance_id": merged.get("instance_id"),
        "instance_type": merged.get("instance_type"), "policy": plan.dispatcher, "status": status,
        "dispatcher": plan.dispatcher, "phase": plan.index, "offered_qps": plan.offered_qps,
        "sent_s": merged["sent_s"], "send_lag_ms": (merged["sent_s"] - intended) * 1000.0,
        "latency_ms": np.where(ok, (merged["client_finish_s"] - intended) * 1000.0, np.inf),
        "http_status": merged["http_status"].fillna(merged.get("dispatcher_http_status", 0)).fillna(0),
        "queue_ms": merged.get("queue_ms"), "service_ms": merged.get("service_ms"),
        "backend_finish_s": merged.get("backend_finish_s"), "attempts": merged.get("attempts"),
        "worker": merged["worker"],
    })
    return out.sort_values("arrival_s", kind="stable").reset_index(drop=True)


class LiveStack:
    """The processes a live run owns: a pool (unless a pool file is given) and a dispatcher."""

    def __init__(self, options: LiveOptions, model: str, records_path: Path, log: Callable[[str], None]):
        from servers.pool import PoolSpec, load_pool_file, spawn_server, start_pool
        self._pool = None
        if options.pool_file:
            self.pool_file = load_pool_file(options.pool_file)
            if self.pool_file.model != model:
                raise InputError(f"{options.pool_file}: pool serves {self.pool_file.model!r}, the trace is {model!r}")
            pool_path = Path(options.pool_file)
        else:
            log(f"starting {options.mode} pool {options.config} for {model} ...")
            self._pool = start_pool(PoolSpec(options.config, model, options.mode, profiles=options.profiles,
                                             seed=options.seed))
            self.pool_file = self._pool.as_pool_file()
            pool_path = self._pool.write(records_path.parent / "pool.json")
        args = ["dispatcher", "--pool", str(pool_path), "--policy", options.dispatchers[0],
                "--records", str(records_path)]
        if options.qos_ms is not None:
            args += ["--qos-ms", str(options.qos_ms)]
        if options.profiles:
            args += ["--profiles", str(options.profiles)]
        try:
            self.dispatcher = spawn_server(args, name="dispatcher")
        except BaseException:
            self.stop()
            raise
        self.url = self.dispatcher.url
        log(f"dispatcher at {self.url} in front of {len(self.pool_file.instances)} instances")

    def set_policy(self, spec: str) -> None:
        """Switch the dispatcher's policy."""
        http_json(f"{self.url}/admin/policy", {"policy": spec})

    def drain(self, timeout_s: float = 300.0) -> bool:
        """Wait until the dispatcher has nothing queued or in service."""
        return bool(http_json(f"{self.url}/admin/drain?timeout_s={timeout_s}", {}, timeout_s=timeout_s + 10)["drained"])

    def records(self, prefix: str) -> dict:
        """The dispatcher's finished records for request ids starting with ``prefix``."""
        return http_json(f"{self.url}/admin/records?prefix={prefix}")

    def stop(self) -> None:
        """Stop the dispatcher (it writes its parquet footer) and the pool."""
        from servers.pool import stop_processes
        if getattr(self, "dispatcher", None) is not None:
            stop_processes([self.dispatcher])
            self.dispatcher = None
        if self._pool is not None:
            self._pool.stop()
            self._pool = None


class LiveRun:
    """Phases, sweeps and records of one live run; ``run(loadgen)`` does everything, ``close(partial=True)`` ends early."""

    def __init__(self, options: LiveOptions, log: Callable[[str], None] = print):
        self.options = options
        self.log = log
        base = read_trace(options.trace or sample_path())
        if options.model:
            base = base.with_model(options.model)
        if len(base.models) != 1:
            raise InputError(f"{base.source}: holds models {', '.join(base.models)}; pass --model to pick one")
        self.model = base.models[0]
        self.base = speedup(base, options.speedup) if options.speedup else base
        qos = options.qos_ms if options.qos_ms is not None else default_qos_ms(self.model)
        if qos is None:
            raise InputError(f"--qos-ms is required for model {self.model!r} (no paper default)")
        self.qos_ms = float(qos)
        for spec in options.dispatchers:
            make_policy(spec)
        self.profile = Profile.load(options.profiles)
        self.stack: LiveStack | None = None
        self.run_dir: RunDir | None = None
        self.current: PhasePlan | None = None
        self.loadgen: LoadGenerator | None = None
        self.finished = False
        self._phase = 0

    # -- setup ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the run folder and start the stack."""
        o = self.options
        self.run_dir = RunDir(o.report_dir, meta={"kind": "live", "model": self.model, "qos_ms": self.qos_ms,
                                                   "config": {k: (str(v) if isinstance(v, Path) else v)
                                                              for k, v in asdict(o).items()},
                                                   "trace": {"source": self.base.source, "queries": len(self.base),
                                                             "mean_rate_qps": self.base.mean_rate_qps}})
        self.stack = LiveStack(o, self.model, self.run_dir.path / "dispatcher.parquet", self.log)
        pf = self.stack.pool_file
        self.pool_config = pf.config
        check_trace(self.base, self.profile, self.pool_config)
        self.run_dir.update_meta(pool=[i.to_json() for i in pf.instances], pool_config=str(self.pool_config),
                                 cost_per_h=pf.cost_per_h, dispatcher_url=self.stack.url,
                                 dispatcher_pid=self.stack.dispatcher.pid)
        self.log(f"run folder {self.run_dir.path}")

    # -- phases -----------------------------------------------------------------------------------------------
    def phase_trace(self, rate_qps: float) -> Trace:
        """The base trace at ``rate_qps``, cut to the phase length."""
        scaled = scale_to_rate(self.base, rate_qps)
        o = self.options
        return scaled.head(phase_queries(rate_qps, o.phase_seconds, o.rules, o.phase_queries))

    def simulate_point(self, spec: str, trace: Trace) -> PointSummary:
        """The simulator's verdict on a phase trace (same profile, pool, QoS, validity rules)."""
        records = simulate(trace, spec, self.profile, SimConfig(self.pool_config, self.qos_ms, seed=self.options.seed))
        return summarize(records, self.qos_ms, self.options.rules)

    def simulated_allowable(self, spec: str) -> tuple[float, tuple[float, float]]:
        """The simulator's allowable throughput over the same phase construction."""
        latency = LatencyModel(self.profile, self.pool_config.instance_types, [self.model])
        start = 0.5 * capacity_qps(latency, self.pool_config.instance_types, self.model, self.base.batch_size)
        found = find_allowable(lambda r: self.simulate_point(spec, self.phase_trace(r)), start,
                               SearchConfig(rel_tol=self.options.tolerance))
        return found.allowable_qps, found.bracket_qps

    def run_phase(self, spec: str, rate_qps: float) -> PointSummary:
        """Replay one phase through the dispatcher, merge records, summarize, write, log."""
        o = self.options
        trace = self.phase_trace(rate_qps) if rate_qps else self.base.head(
            phase_queries(self.base.mean_rate_qps, o.phase_seconds, o.rules, o.phase_queries))
        offered = rate_qps or trace.mean_rate_qps
        index = self._phase
        self._phase += 1
        plan = PhasePlan(index, spec, float(offered), self.model, self.stack.url,
                         start_epoch=time.time() + o.lead_s,
                         request_ids=[f"p{index}-{i}" for i in range(len(trace))],
                         offsets_s=(trace.arrival_s - trace.arrival_s[0]).tolist(),
                         batch_sizes=trace.batch_size.tolist())
        self.current = plan
        self.log(f"phase {index}: {spec} at {offered:.1f} qps, {len(trace)} queries, ~{trace.duration_s:.0f} s")
        output = self.loadgen.run_phase(plan)
        self.stack.drain()
        merged = merge_phase(plan, output.rows, self.stack.records(f"p{index}-"))
        self.current = None
        summary = summarize(merged, self.qos_ms, o.rules)
        sim = self.simulate_point(spec, trace)
        row = self.summary_row(plan, merged, summary, output.cpu_percent)
        row.update(sim_p99_ms=sim.p99_ms, sim_valid=sim.valid, sim_violation_rate=sim.violation_rate)
        self.run_dir.add_phase(merged, row)
        verdict = "VALID" if summary.valid else "INVALID"
        busy = f", load generator CPU {output.cpu_percent:.0f}%" if math.isfinite(output.cpu_percent) else ""
        warn = " (load generator saturated: latencies inflated)" if output.cpu_percent > 80 else ""
        self.log(f"phase {index}: {spec} at {offered:.1f} qps -> p99 {summary.p99_ms:.1f} ms "
                 f"(sim {sim.p99_ms:.1f}), violations {100 * summary.violation_rate:.2f}%, {verdict}; "
                 f"send lag p99 {row['send_lag_p99_ms']:.1f} ms{busy}{warn}")
        return summary

    def summary_row(self, plan: PhasePlan, merged: pd.DataFrame, summary: PointSummary, cpu_percent: float) -> dict:
        """One summary.parquet row for a phase."""
        cost = self.stack.pool_file.cost_per_h if self.stack else math.nan
        sent = merged["sent_s"].dropna().sort_values().to_numpy()
        return {"dispatcher": plan.dispatcher, "phase": plan.index, **summary.as_dict(),
                "offered_qps": plan.offered_qps, "cost_per_h": cost,
                "qps_per_dollar": summary.achieved_qps / cost if cost else math.nan, "allowable_qps": math.nan,
                "send_lag_p99_ms": percentile_ms(merged["send_lag_ms"].dropna().to_numpy(), 99),
                "sent_qps": (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0] else math.nan,
                "loadgen_cpu_percent": cpu_percent}

    # -- the whole run ----------------------------------------------------------------------------------------
    def run(self, loadgen: LoadGenerator) -> Path | None:
        """Every dispatcher in turn (a sweep or one phase each); returns the report path."""
        self.loadgen = loadgen
        o = self.options
        results = []
        for spec in o.dispatchers:
            self.stack.set_policy(spec)
            if o.sweeping:
                sim_qps, sim_bracket = self.simulated_allowable(spec)
                start = o.rate_qps or sim_qps or 1.0
                self.log(f"{spec}: simulator's allowable throughput {sim_qps:.1f} qps; live sweep starts there")
                found = find_allowable(lambda r, spec=spec: self.run_phase(spec, r), start,
                                       SearchConfig(rel_tol=o.tolerance, max_points=o.max_phases, growth=o.growth))
                self.run_dir.set_allowable(spec, found.allowable_qps, found.bracket_qps, sim_qps)
                results.append((spec, found.allowable_qps, sim_qps))
                self.log(f"{spec}: allowable throughput {found.allowable_qps:.1f} qps live "
                         f"(bracket {found.bracket_qps[0]:.1f}..{found.bracket_qps[1]:.1f}), {sim_qps:.1f} simulated")
            else:
                self.run_phase(spec, o.rate_qps)
        self.finished = True
        if results:
            self.log("allowable throughput (qps):  " + ",  ".join(
                f"{s} {live:.1f} live / {sim:.1f} sim" for s, live, sim in results))
        return self.close(partial=False)

    def close(self, partial: bool) -> Path | None:
        """Record what an interrupted phase completed, stop the stack, finish the run folder (idempotent)."""
        if self.run_dir is None:
            if self.stack:
                self.stack.stop()
            return None
        report = None
        try:
            if partial and self.current is not None and self.stack is not None:
                plan = self.current
                try:
                    cols = self.stack.records(f"p{plan.index}-")
                except OSError:
                    cols = {}
                rows = self.loadgen.partial_rows() if self.loadgen else []
                merged = merge_phase(plan, rows, cols)
                self.current = None
                if len(merged):
                    summary = summarize(merged, self.qos_ms, self.options.rules)
                    row = self.summary_row(plan, merged, summary, math.nan)
                    row.update(valid=False, invalid_reason="interrupted: " + (summary.invalid_reason or "partial phase"))
                    self.run_dir.add_phase(merged, row)
        finally:
            if self.stack:
                self.stack.stop()
                self.stack = None
            report = self.run_dir.finish(partial=partial)
            path, self.run_dir = self.run_dir.path, None
            self.log(f"{'partial ' if partial else ''}report in {path}" + (f": {report}" if report else ""))
        return report
