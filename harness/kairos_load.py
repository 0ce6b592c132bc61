"""kairos-harness locustfile: ``locust -f harness/kairos_load.py --headless``.

With no options it starts the paper's emulated pool (rm2: 2 x g4dn.xlarge + 9 x r5n.large) and a dispatcher on
loopback, replays the shipped Kairos-mix trace, sweeps the allowable throughput of kairos, fcfs and
least_outstanding, writes ``reports/<run-id>/`` (queries.parquet, summary.parquet, report.html) and stops everything
it started.

How it uses Locust: options come through ``init_command_line_parser`` (so they work on the command line, in
locust.conf, as LOCUST_* environment variables and, file paths excepted, in the web UI); the run starts on
``test_start`` and ends itself when the last phase is done; each phase is broadcast to every load-generating process
(``--processes N`` or ``--master``/``--worker``) with ``register_message``, each process replays its interleaved shard
open loop with one greenlet per query (so no user count caps the arrival rate), sends the records of the queries it
finished to the master about once a second (the master writes them to the run folder's client.parquet at once, so a
kill -9 of the master loses about the last second of them) and all of its records when its shard is done. Every
request also fires Locust's ``request`` event, so Locust's own statistics, ``--html`` and ``--csv`` keep working.
Locust owns ``--config`` (its config-file option), so the instance mix is ``--pool-config``.

The web UI is safe by default (docs/security.md): it binds 127.0.0.1 unless ``--web-host`` says otherwise; file paths
(``--trace``, ``--pool``, ``--report-dir``, ``--profiles``) come only from the command line, locust.conf or LOCUST_*
variables; a start request from the UI is checked before Locust's handler sees it (values typed, one clear error
naming the option, fields for options the UI does not show dropped).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
import numpy as np
from flask import jsonify, request
from flask_login import current_user
from locust import User, constant, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import MasterRunner, WorkerRunner
from werkzeug.datastructures import ImmutableMultiDict

from harness.core.errors import InputError
from harness.core.gc_freeze import frozen_gc
from harness.live.chaos import parse_chaos
from harness.live.options import HARNESS_SATURATION, PROFILE_LOCAL, LiveOptions
from harness.live.phase import ClientLog, ClientRecord, PhaseOutput, PhasePlan, from_columns, to_columns
from harness.live.replay import payloads_for
from harness.live.run import LiveRun
from harness.measure.analyzer import percentile_ms
from servers.cpu_affinity import boot_id, format_cpus, pin_process, process_cpus
from servers.pool import MODES
from traces.scalers import SCALERS

PHASE_MESSAGE = "kairos_phase"
DONE_MESSAGE = "kairos_phase_done"
RECORDS_MESSAGE = "kairos_phase_records"
PIN_MESSAGE = "kairos_pin"  # master -> worker: pin to these cores (--pin-cores), or back to the cores it had
PINNED_MESSAGE = "kairos_pinned"  # worker -> master: the cores it now runs on, or why it did not move
PIN_TIMEOUT_S = 10.0  # how long the master waits for every worker to answer a pin message
RECORDS_INTERVAL_S = 1.0  # how often finished queries' records travel to the master and on to disk
PARENT_CHECK_S = 1.0  # how often a worker forked by --processes checks that the process that forked it lives
log = logging.getLogger("kairos")
# The field names of LiveOptions (and of the values library errors are about) as this locustfile's options.
FLAGS = {
    "trace": "--trace",
    "model": "--model",
    "pool_file": "--pool",
    "pool": "--pool",
    "pool_config": "--pool-config",
    "mode": "--mode",
    "instances_per_process": "--instances-per-process",
    "policy": "--dispatchers",
    "dispatchers": "--dispatchers",
    "qos_ms": "--qos-ms",
    "rate": "--rate",
    "rate_qps": "--rate",
    "speedup": "--speedup",
    "scale": "--scale",
    "sweep": "--sweep",
    "phase_seconds": "--phase-seconds",
    "phase_queries": "--phase-queries",
    "report_dir": "--report-dir",
    "seed": "--seed",
    "profiles": "--profiles",
    "tolerance": "--tolerance",
    "max_phases": "--max-phases",
    "min_queries": "--min-queries",
    "criterion": "--criterion",
    "chaos": "--chaos",
    "replications": "--replications",
    "interval_steps": "--interval-steps",
    "harness_saturation": "--harness-saturation",
    "profile_local": "--profile-local",
    "reprofile": "--reprofile",
    "pin_cores": "--pin-cores",
    "dispatcher_url": "--dispatcher-url",
    "dispatcher_token_file": "--dispatcher-token-file",
}
# The web UI binds this unless --web-host (or LOCUST_WEB_HOST, or web-host in locust.conf) says otherwise; so does the
# master's port for workers (--master-bind-host): a run across machines names the interface it means.
WEB_HOST = "127.0.0.1"
LOCAL_LEAD_S = 0.5  # a phase's lead when no worker processes take part (see KairosSession.start)
# Options that name files (or where the run sends its admin calls): set only on the command line, in locust.conf or as
# LOCUST_* variables, never in the web UI (anyone who can reach the UI could otherwise make the harness read or write
# any file this user may, or send a dispatcher's admin token elsewhere).
PATH_OPTIONS = ("trace", "pool", "report_dir", "profiles", "dispatcher_url", "dispatcher_token_file")
# The options the web UI shows and may set; their form values arrive as text and are parsed by option_value.
WEB_UI_OPTIONS = (
    "model",
    "pool_config",
    "mode",
    "instances_per_process",
    "dispatchers",
    "qos_ms",
    "rate",
    "speedup",
    "scale",
    "sweep",
    "phase_seconds",
    "phase_queries",
    "seed",
    "tolerance",
    "max_phases",
    "min_queries",
    "criterion",
    "replications",
    "interval_steps",
    "harness_saturation",
    "chaos",
    "profile_local",
    "reprofile",
    "pin_cores",
)
NUMBERS = {
    "instances_per_process": int,
    "qos_ms": float,
    "rate": float,
    "speedup": float,
    "phase_seconds": float,
    "phase_queries": int,
    "seed": int,
    "tolerance": float,
    "max_phases": int,
    "min_queries": int,
    "replications": int,
    "interval_steps": int,
}
OPTIONAL = ("qos_ms", "rate", "speedup")  # None (an empty field in the web UI) means the default
SWITCHES = {"true": True, "on": True, "1": True, "yes": True, "false": False, "off": False, "0": False, "no": False}
CHOICES = {
    "mode": tuple(MODES),
    "criterion": ("p99", "mlperf"),
    "harness_saturation": HARNESS_SATURATION,
    "scale": tuple(SCALERS),
    "profile_local": tuple(PROFILE_LOCAL),
}
# The fields of Locust's own start form, which its handler (locust/web.py, swarm()) applies itself; it copies any other
# field that names a parsed option onto environment.parsed_options, whether the UI shows that option or not.
LOCUST_FORM_FIELDS = frozenset(
    {"user_count", "spawn_rate", "host", "user_classes", "shape_class", "run_time", "profile"}
)


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    """The harness's options (command line, locust.conf, LOCUST_* environment variables; the web UI all but paths),
    and the web UI's address: loopback unless the user says otherwise."""
    D = LiveOptions  # defaults are stated once, on the dataclass
    # Locust's own default, "", is every interface. (`locust --help` prints Locust's text for --web-host: it runs
    # before the locustfile is imported, so it shows none of this file's options.)
    parser.set_defaults(web_host=WEB_HOST, master_bind_host=WEB_HOST)
    parser.add_argument(
        "--trace",
        default="",
        include_in_web_ui=False,
        help="trace file (parquet/CSV); default: the shipped Kairos-mix rm2 trace",
    )
    parser.add_argument("--model", default="", include_in_web_ui=True, help="model (default: the trace's)")
    parser.add_argument(
        "--pool",
        default="",
        include_in_web_ui=False,
        help="pool file of running instances (default: start a local pool from --pool-config)",
    )
    parser.add_argument(
        "--pool-config",
        default=D.pool_config,
        include_in_web_ui=True,
        help=f"instance mix TYPE=N,... for the local pool (default {D.pool_config})",
    )
    parser.add_argument(
        "--mode",
        default=D.mode,
        choices=list(CHOICES["mode"]),
        include_in_web_ui=True,
        help="local pool of emulated instances (default) or ONNX Runtime servers",
    )
    # No argparse type: option_value types it, as it does the web UI's text, so a bad value gets the harness's one-line
    # error naming the option rather than Locust's usage dump.
    parser.add_argument(
        "--instances-per-process",
        default=D.instances_per_process,
        include_in_web_ui=True,
        help="--mode emulated: emulated instances hosted by each process of the local pool, each on its own port "
        f"with its own timing (default {D.instances_per_process}: one process each; e.g. 50 for a pool of hundreds)",
    )
    parser.add_argument(
        "--dispatchers",
        default=",".join(D.dispatchers),
        include_in_web_ui=True,
        help="policies compared head-to-head, NAME[:k=v],...",
    )
    parser.add_argument(
        "--qos-ms",
        type=float,
        default=None,
        include_in_web_ui=True,
        help="p99 target in ms (default: the paper's for the model)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        include_in_web_ui=True,
        help="offered load in qps (one phase per dispatcher; with --sweep, where the sweep starts)",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=None,
        include_in_web_ui=True,
        help="replay the trace this many times faster than recorded (one phase per dispatcher)",
    )
    parser.add_argument(
        "--scale",
        default=D.scale,
        choices=list(CHOICES["scale"]),
        include_in_web_ui=True,
        help="how a phase reaches its rate: time (compress the trace's time axis; default), thin (a random subset "
        "of its queries: fewer users of the same bursty service) or superpose (time-shifted copies merged: more "
        "independent users); thin and superpose thin below the trace's own rate and superpose above it",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        default=False,
        include_in_web_ui=True,
        help="search each dispatcher's allowable throughput (default without --rate/--speedup)",
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=D.phase_seconds,
        include_in_web_ui=True,
        help=f"length of one phase in seconds (default {D.phase_seconds:g}; see --phase-queries)",
    )
    parser.add_argument(
        "--phase-queries",
        type=int,
        default=D.phase_queries,
        include_in_web_ui=True,
        help=f"a phase also lasts until this many queries were sent (default {D.phase_queries}; a p99 from "
        "fewer is mostly noise, more gives steadier answers: see README)",
    )
    parser.add_argument(
        "--report-dir",
        default=str(D.report_dir),
        include_in_web_ui=False,
        help=f"where reports/<run-id>/ goes (default {D.report_dir})",
    )
    parser.add_argument("--seed", type=int, default=D.seed, include_in_web_ui=True, help=f"seed (default {D.seed})")
    parser.add_argument(
        "--profiles",
        default="",
        include_in_web_ui=False,
        help="latency profile for emulated instances and the simulator (default: shipped)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=D.tolerance,
        include_in_web_ui=True,
        help=f"sweep stops when the bracket is this narrow, relatively (default {D.tolerance:g})",
    )
    parser.add_argument(
        "--max-phases",
        type=int,
        default=D.max_phases,
        include_in_web_ui=True,
        help=f"most phases one dispatcher's sweep may run (default {D.max_phases})",
    )
    parser.add_argument(
        "--min-queries",
        type=int,
        default=D.min_queries,
        include_in_web_ui=True,
        help=f"validity: fewest measured queries a phase needs (default {D.min_queries})",
    )
    parser.add_argument(
        "--criterion",
        default=D.criterion,
        choices=list(CHOICES["criterion"]),
        include_in_web_ui=True,
        help="what makes a phase pass: measured p99 <= QoS (default; short phases) or MLPerf "
        "early stopping at 99%% confidence (needs long phases); both are reported",
    )
    parser.add_argument(
        "--replications",
        type=int,
        default=D.replications,
        include_in_web_ui=True,
        help="after a sweep, rerun each end of the final bracket this many times on other trace windows and seeds; "
        f"the allowable rate and its interval then pool them (default {D.replications}; 0: the sweep's phases alone)",
    )
    parser.add_argument(
        "--interval-steps",
        type=int,
        default=D.interval_steps,
        include_in_web_ui=True,
        help="then, where a bound of that interval still lies at the edge of the rates tried, measure up to this many "
        f"rates one search step (x{D.growth:g}) beyond it, each 1 + --replications times (default {D.interval_steps}; 0: none)",
    )
    parser.add_argument(
        "--harness-saturation",
        default=D.harness_saturation,
        choices=list(CHOICES["harness_saturation"]),
        include_in_web_ui=True,
        help="a phase where the load generator fell behind (send lag p99 > 5 ms, CPU > 85%%) or the dispatcher's "
        "loop lagged: flag it and report the rate where the harness saturated (default), or also count it as "
        "failing (invalid), so the allowable rate stays below it",
    )
    parser.add_argument(
        "--profile-local",
        default=D.profile_local,
        choices=list(CHOICES["profile_local"]),
        include_in_web_ui=True,
        help="--mode onnx: measure the servers this run starts before the sweep, all at once (together; default: "
        "they share this machine's cores as in the sweep) or one at a time (alone), cached per model, threads "
        "and machine; off uses --profiles or the shipped profile",
    )
    parser.add_argument(
        "--reprofile",
        action="store_true",
        default=False,
        include_in_web_ui=True,
        help="measure the local servers again even when the profile cache holds this pool",
    )
    parser.add_argument(
        "--pin-cores",
        action="store_true",
        default=False,
        include_in_web_ui=True,
        help="--mode onnx: give each server threads x concurrency cores of its own (the highest-numbered) and keep "
        "this process and the dispatcher on the rest, so the load generator does not take a server's CPU; the "
        "profile is measured pinned too",
    )
    parser.add_argument(
        "--dispatcher-url",
        default="",
        include_in_web_ui=False,
        help="a running dispatcher to load (e.g. on another host: `kairos serve dispatcher --host ADDR --admin-token "
        "T`) instead of starting one; --pool names the pool it fronts (default: start a dispatcher on loopback)",
    )
    parser.add_argument(
        "--dispatcher-token-file",
        default="",
        include_in_web_ui=False,
        help="file holding the --dispatcher-url dispatcher's admin token (its admin endpoints answer only on "
        "loopback without one)",
    )
    parser.add_argument(
        "--chaos",
        default="",
        include_in_web_ui=True,
        help="faults during each dispatcher's phases, ACTION:INSTANCE@AT[:DURATION[:SIZE]],... e.g. "
        "kill:r5n.large-3@30s,stall:g4dn.xlarge-0@45s:5s (actions: kill, restart, spike, stall, error, exit)",
    )


def reaches_beyond_this_machine(host: str) -> bool:
    """Whether a bind address is reachable from other machines ("" and "*" are every interface; a name may be)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def option_value(dest: str, value):
    """One option's value in its type. Values set in the web UI arrive as text ("30", "on", ""); a value that does not
    parse is an InputError about ``dest`` (FLAGS names it as the option the user typed)."""
    kind = NUMBERS.get(dest)
    if kind is not None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if dest in OPTIONAL:
                return None
            raise InputError(f"{value!r}: a value is required", field=dest)
        what = "an integer" if kind is int else "a number"
        if isinstance(value, bool):
            raise InputError(f"{value!r}: must be {what}", field=dest)
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{value!r}: must be {what}", field=dest) from None
        if kind is int and not isinstance(value, (int, str)) and number != value:
            raise InputError(f"{value!r}: must be {what}", field=dest)  # 2.5 -> 2 would be a silent change
        if not math.isfinite(number):
            raise InputError(f"{value!r}: must be a finite number", field=dest)
        return number
    if dest in ("sweep", "reprofile", "pin_cores"):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if value is not None else "false"
        if word not in SWITCHES:
            raise InputError(f"{value!r}: must be on or off (true/false, 1/0)", field=dest)
        return SWITCHES[word]
    if dest in CHOICES and value not in CHOICES[dest]:
        raise InputError(f"{value!r}: expected one of {', '.join(CHOICES[dest])}", field=dest)
    return value


def live_options(opts, pinned: Mapping[str, object] | None = None) -> LiveOptions:
    """Translate Locust's parsed options into LiveOptions, each value in its type (the web UI sets text).

    ``pinned``: the path options as the command line, locust.conf or LOCUST_* variables set them, taken at init; they
    win over whatever ``opts`` holds now, so nothing that arrives later (a web-UI form) can point the run at a file.
    """
    v = {dest: option_value(dest, getattr(opts, dest)) for dest in WEB_UI_OPTIONS}
    paths = {dest: getattr(opts, dest) for dest in PATH_OPTIONS} | dict(pinned or {})
    return LiveOptions(
        trace=Path(paths["trace"]) if paths["trace"] else None,
        model=v["model"] or None,
        pool_file=Path(paths["pool"]) if paths["pool"] else None,
        pool_config=v["pool_config"],
        mode=v["mode"],
        instances_per_process=v["instances_per_process"],
        dispatchers=tuple(d.strip() for d in v["dispatchers"].split(",") if d.strip()),
        qos_ms=v["qos_ms"],
        rate_qps=v["rate"],
        speedup=v["speedup"],
        scale=v["scale"],
        sweep=v["sweep"],
        phase_seconds=v["phase_seconds"],
        phase_queries=v["phase_queries"],
        report_dir=Path(paths["report_dir"]),
        seed=v["seed"],
        profiles=Path(paths["profiles"]) if paths["profiles"] else None,
        tolerance=v["tolerance"],
        max_phases=v["max_phases"],
        criterion=v["criterion"],
        min_queries=v["min_queries"],
        replications=v["replications"],
        interval_steps=v["interval_steps"],
        harness_saturation=v["harness_saturation"],
        chaos=parse_chaos(v["chaos"], "chaos") if (v["chaos"] or "").strip() else (),
        profile_local=v["profile_local"],
        reprofile=v["reprofile"],
        pin_cores=v["pin_cores"],
        dispatcher_url=paths["dispatcher_url"] or None,
        dispatcher_token_file=Path(paths["dispatcher_token_file"]) if paths["dispatcher_token_file"] else None,
    )


class ShardReplayer:
    """Replays one shard of a phase open loop in this process; records accumulate in ``records`` as queries finish."""

    def __init__(self, environment, worker: str):
        self.environment = environment
        self.worker = worker
        self.records: list[ClientRecord] = []
        self._taken = 0
        self._payloads = {}

    def take_new(self) -> list[ClientRecord]:
        """The records finished since the last call (of the phase in progress)."""
        records = self.records
        new = records[self._taken :]
        self._taken += len(new)
        return new

    def run(self, plan: PhasePlan) -> PhaseOutput:
        """Sleep to each absolute send time on the monotonic clock and fire the query in its own greenlet."""
        model = plan.model
        payloads = self._payloads.get(model) or self._payloads.setdefault(model, payloads_for(model))
        for b in set(plan.batch_sizes):
            payloads.get(b)  # encode once per batch size, before the clock starts
        session = FastHttpSession(
            plan.url,
            self.environment.events.request,
            None,
            concurrency=10_000,
            network_timeout=600.0,
            connection_timeout=60.0,
        )
        path = f"/v2/models/{model}/infer"
        start_epoch = plan.start_epoch
        mono0 = time.monotonic() + (start_epoch - time.time())
        records = self.records = []
        self._taken = 0
        worker = self.worker

        def send(rid: str, batch: int, target: float) -> None:
            enc = payloads.get(batch)
            sent = time.monotonic()
            resp = session.post(path, data=enc.body, headers={**enc.headers, "X-Request-ID": rid}, name=path)
            done = time.monotonic()
            records.append(
                ClientRecord(
                    rid,
                    start_epoch + (target - mono0),
                    start_epoch + (sent - mono0),
                    start_epoch + (done - mono0),
                    int(resp.status_code or 0),
                    worker,
                    "" if getattr(resp, "error", None) is None else str(resp.error)[:200],
                )
            )

        group = gevent.pool.Group()
        cpu0, wall0 = time.process_time(), time.monotonic()
        with frozen_gc():
            for rid, offset, batch in zip(plan.request_ids, plan.offsets_s, plan.batch_sizes):
                target = mono0 + offset
                delay = target - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
                group.spawn(send, rid, batch, target)
            group.join()
        busy = time.monotonic() - max(wall0, mono0)
        cpu = 100.0 * (time.process_time() - cpu0) / busy if busy > 0 else math.nan
        return PhaseOutput(records, cpu)


class LocustLoadGenerator:
    """The master's side: broadcast shards to every load-generating process, gather their records."""

    def __init__(self, environment):
        self.environment = environment
        self._outputs: list[dict] = []
        self._expect = 0
        self._index = -1
        self._done = gevent.event.Event()
        self._log: ClientLog | None = None
        self._log_failed = False
        self.local: ShardReplayer | None = None
        self._pin_seq = 0
        self._pin_answers: list[dict] = []
        self._pin_expect = 0
        self._pin_done = gevent.event.Event()

    def _workers(self) -> list[str | None]:
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            return sorted(runner.clients.keys())
        return [None]

    def run_phase(self, plan: PhasePlan, client_log: ClientLog | None = None) -> PhaseOutput:
        """Send each process its shard; stream the records they send as they go to ``client_log``; wait for all of
        them to report back."""
        workers = self._workers()
        if not workers:
            raise InputError("no load-generating worker is connected")
        self._outputs, self._expect, self._index = [], len(workers), plan.index
        self._log, self._log_failed = client_log, False
        self._done.clear()
        for k, client_id in enumerate(workers):
            self.environment.runner.send_message(
                PHASE_MESSAGE, plan.shard(k, len(workers)).to_message(), client_id=client_id
            )
        timeout = plan.offsets_s[-1] + 600.0 if plan.offsets_s else 600.0
        if not self._done.wait(timeout=timeout):
            log.warning(
                "phase %d: %d of %d load generators answered in time", plan.index, len(self._outputs), self._expect
            )
        self._log = None  # the caller closes it with every record
        cpus = [out["cpu_percent"] for out in self._outputs if out.get("cpu_percent") is not None]
        if isinstance(self.environment.runner, MasterRunner):
            log.info("phase %d: load generators: %s", plan.index, "; ".join(per_worker(self._outputs)))
        return PhaseOutput(self._received(), max(cpus) if cpus else math.nan)

    def on_records(self, environment, msg, **kwargs) -> None:
        """A process's queries finished in the last second: to disk now (one part per process and second)."""
        if msg.data.get("index") != self._index or self._log is None:
            return
        self._log.add(from_columns(msg.data["records"]))
        try:
            self._log.flush()
        except OSError as exc:  # the rows stay buffered and the next flush retries; the phase goes on meanwhile
            if not self._log_failed:
                log.warning("phase %d: client records not written yet: %s", self._index, exc)
            self._log_failed = True

    def on_done(self, environment, msg, **kwargs) -> None:
        """A process finished its shard."""
        if msg.data.get("index") != self._index:
            return
        self._outputs.append(msg.data)
        if len(self._outputs) >= self._expect:
            self._done.set()

    def pin_workers(self, cpus: tuple[int, ...] | None, wait: bool = True) -> tuple[list[dict], int]:
        """Ask every worker process to pin itself to ``cpus`` (None: back to the cores it had before); the answers
        that came within ``PIN_TIMEOUT_S`` (none unless ``wait``), and how many workers were asked."""
        runner = self.environment.runner
        if not isinstance(runner, MasterRunner):
            return [], 0
        workers = self._workers()
        self._pin_seq += 1
        self._pin_answers, self._pin_expect = [], len(workers)
        self._pin_done.clear()
        # The master's boot id travels with the cores: a worker on another machine has other cores, and stays put.
        data = {"seq": self._pin_seq, "cpus": None if cpus is None else list(cpus), "boot_id": boot_id()}
        for client_id in workers:
            runner.send_message(PIN_MESSAGE, data, client_id=client_id)
        if workers and wait:
            self._pin_done.wait(timeout=PIN_TIMEOUT_S)
        return list(self._pin_answers), len(workers)

    def on_pinned(self, environment, msg, **kwargs) -> None:
        """A worker's answer to a pin message."""
        if msg.data.get("seq") != self._pin_seq:
            return  # an answer to an earlier request, come too late
        self._pin_answers.append(msg.data)
        if len(self._pin_answers) >= self._pin_expect:
            self._pin_done.set()

    def _received(self) -> list[ClientRecord]:
        return [r for out in self._outputs for r in from_columns(out["records"])]

    def partial_records(self) -> list[ClientRecord]:
        """Records received so far, plus this process's own in-progress ones (local runs)."""
        records = self._received()
        if not records and self.local is not None and not isinstance(self.environment.runner, MasterRunner):
            records = list(self.local.records)  # a local run reports only when its shard is done
        return records


def worker_pinning(answers: list[dict], asked: int, cpus: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """What came of asking ``asked`` workers to pin themselves to ``cpus``, from their answers: lines to log as
    information, and warnings."""
    want = format_cpus(cpus)
    info, warnings = [], []
    for answer in sorted(answers, key=lambda a: str(a.get("worker"))):
        name = answer.get("worker")
        if answer.get("error"):
            warnings.append(f"worker {name} could not be pinned ({answer['error']}): it shares the servers' cores")
        elif answer.get("skipped"):
            info.append(f"worker {name} runs on another machine: its cores are its own, left as they are")
        elif answer.get("cpus") == want:
            info.append(f"pinned: worker {name} on cores {want}, with the dispatcher")
        else:
            warnings.append(f"worker {name} runs on cores {answer.get('cpus')}, not on {want} alone")
    if len(answers) < asked:
        warnings.append(
            f"{asked - len(answers)} of {asked} workers did not answer within {PIN_TIMEOUT_S:g} s and may share the "
            f"servers' cores: start them with taskset -c {want}"
        )
    return info, warnings


def per_worker(outputs: list[dict]) -> list[str]:
    """Each load generator's queries, send lag p99 (actual send after intended) and CPU, from what it sent back: a
    late shard would otherwise hide in the phase's pooled figure."""
    lines = []
    for out in sorted(outputs, key=lambda o: str(o.get("worker"))):
        cols = out["records"]
        lag_ms = 1000.0 * (np.asarray(cols["sent_s"], float) - np.asarray(cols["intended_s"], float))
        cpu = out.get("cpu_percent")
        lines.append(
            f"{out.get('worker')} {len(lag_ms)} queries, send lag p99 {percentile_ms(lag_ms, 99):.1f} ms"
            + (f", CPU {cpu:.0f}%" if cpu is not None and math.isfinite(cpu) else "")
        )
    return lines


class KairosSession:
    """Per-process state hung on the Locust environment (no module globals)."""

    def __init__(self, environment):
        self.environment = environment
        runner = environment.runner
        worker = getattr(runner, "client_id", None) or "local"
        self.replayer = ShardReplayer(environment, worker)
        self.loadgen = LocustLoadGenerator(environment)
        self.loadgen.local = self.replayer
        self.run: LiveRun | None = None
        self.controller = None
        self.cores_before_pin: tuple[int, ...] | None = None  # a worker's cores before the master pinned it
        self.workers_pinned = False  # the master asked its workers to pin themselves
        # The path options as the command line, locust.conf or LOCUST_* variables set them: the only source of paths.
        opts = environment.parsed_options
        self.pinned = {dest: getattr(opts, dest, None) for dest in PATH_OPTIONS} if opts is not None else {}

    def check_start_form(self):
        """The web UI's ``before_request`` hook: a start request (POST /swarm) is checked before Locust applies it.

        Locust's handler copies every form field that names a parsed option onto ``parsed_options`` (the ones its UI
        does not show too), as text where the option's value is None, and answers a 500 where ``type(value)(text)``
        fails. So here: this harness's UI options are parsed (a bad one answers Locust's JSON error naming the option,
        and nothing is applied), then set in their types; fields for any other parsed option (paths, Locust's own
        options) are dropped, with a warning; the rest of the form goes on to Locust's handler.
        """
        environment = self.environment
        opts = environment.parsed_options
        if request.endpoint != "locust.swarm" or request.method != "POST" or opts is None:
            return None
        if self.login_required():
            return None  # Locust's login check answers, and applies nothing
        typed, kept, ignored = {}, [], []
        for key, value in request.form.items(multi=True):
            if key in WEB_UI_OPTIONS:
                try:
                    typed[key] = option_value(key, value)
                except InputError as exc:
                    message = f"kairos: {exc.shown_as(FLAGS)}"
                    log.error(message)
                    return jsonify({"success": False, "message": message, "host": environment.host})
            elif key in LOCUST_FORM_FIELDS or not hasattr(opts, key):
                kept.append((key, value))
            else:
                ignored.append(FLAGS.get(key, key))
        if ignored:
            log.warning(
                "kairos: ignored %s from the web UI (paths and options the UI does not show come only from the "
                "command line, locust.conf or LOCUST_* variables)",
                ", ".join(sorted(set(ignored))),
            )
        for dest, value in typed.items():
            setattr(opts, dest, value)
        request.form = ImmutableMultiDict(kept)  # werkzeug's cached_property: setting it sets the cached form
        return None

    def login_required(self) -> bool:
        """With --web-login, whether this request still has to log in (Locust's own check then answers it)."""
        web_ui = self.environment.web_ui
        if web_ui is None or not web_ui.web_login:
            return False
        try:
            return not current_user.is_authenticated
        except Exception:  # flask-login raises a bare Exception when no user loader is set up; Locust reports it
            return True

    def on_phase(self, environment, msg, **kwargs) -> None:
        """Worker side: replay the shard in a greenlet (the message loop must not block), then report."""

        def stream(index: int, stop: gevent.event.Event) -> None:
            # Finished queries' records, about once a second; the shard's end sends all of them anyway.
            while not stop.wait(RECORDS_INTERVAL_S):
                new = self.replayer.take_new()
                if new:
                    environment.runner.send_message(RECORDS_MESSAGE, {"index": index, "records": to_columns(new)})

        def work():
            plan = PhasePlan(**msg.data)
            stop = gevent.event.Event()
            streamer = gevent.spawn(stream, plan.index, stop)
            try:
                output = self.replayer.run(plan)
            finally:
                stop.set()  # not kill(): a batch half-sent would be lost
                streamer.join()
            environment.runner.send_message(
                DONE_MESSAGE,
                {
                    "index": msg.data["index"],
                    "records": to_columns(output.records),
                    "cpu_percent": output.cpu_percent,
                    "worker": self.replayer.worker,
                },
            )

        gevent.spawn(work)

    def on_pin(self, environment, msg, **kwargs) -> None:
        """Worker side: pin every thread of this process to the master's cores where it runs on the master's machine
        (cpus None: back to the cores it had), and answer with the cores it now runs on, read back from /proc."""
        data = msg.data
        answer = {"seq": data.get("seq"), "worker": self.replayer.worker}
        try:
            if data.get("cpus") is None:
                if self.cores_before_pin is not None:
                    pin_process(self.cores_before_pin)
                    self.cores_before_pin = None
            elif not data.get("boot_id") or data["boot_id"] != boot_id():
                answer["skipped"] = "another machine"
            else:
                before = pin_process(tuple(data["cpus"]))
                if self.cores_before_pin is None:  # a second pin keeps the cores from before the first
                    self.cores_before_pin = before
            if "skipped" not in answer:
                answer["cpus"] = format_cpus(process_cpus(os.getpid()))
        except (InputError, OSError) as exc:
            answer["error"] = str(exc)
        environment.runner.send_message(PINNED_MESSAGE, answer)

    def pin_workers(self, cpus: tuple[int, ...] | None) -> None:
        """Master side: move the worker processes on this machine onto ``cpus`` (None: back), and log how it went."""
        if cpus is None:
            if self.workers_pinned:
                self.loadgen.pin_workers(None, wait=False)  # a run that failed may have lost its workers
                self.workers_pinned = False
            return
        self.workers_pinned = True
        info, warnings = worker_pinning(*self.loadgen.pin_workers(cpus), cpus)
        for line in info:
            log.info("%s", line)
        for line in warnings:
            log.warning("kairos: %s", line)

    def start(self, environment) -> None:
        """Master side, on test_start: build the run from the options and drive it in a greenlet."""
        if self.controller is not None and not self.controller.dead:
            return  # a run is in progress (web UI: "start" pressed again)
        try:
            options = live_options(environment.parsed_options, self.pinned)
            if not isinstance(environment.runner, MasterRunner):
                # Alone, this process replays each phase itself: encoding its payloads takes ~50 ms (rm2, 100 batch
                # sizes), so half a second is lead enough, where workers on other hosts get the default's 2 s.
                options = replace(options, lead_s=LOCAL_LEAD_S)
            self.run = LiveRun(options, log=log.info)
        except InputError as exc:
            log.error("kairos: %s", exc.shown_as(FLAGS))
            environment.process_exit_code = 2
            gevent.spawn_later(0, environment.runner.quit)
            return
        self.controller = gevent.spawn(self._drive, environment)

    def _drive(self, environment) -> None:
        try:
            self.run.start()
            if self.run.stack.pinning is not None:
                # Workers (--processes, --worker) started before the run pinned this process: they join it on the
                # harness's cores, or would load the servers' cores as the load generator did before pinning.
                self.pin_workers(self.run.stack.pinning.harness)
            self.run.run(self.loadgen)
            # A finished run succeeded, whatever its requests met: answers such as 504 past the queue deadline in an
            # overloaded phase are what a sweep measures (recorded, counted as violations), not errors of the run.
            environment.process_exit_code = 0
        except InputError as exc:
            log.error("kairos: %s", exc.shown_as(FLAGS))
            environment.process_exit_code = 2
            self.run.close(partial=True)
        except Exception:
            log.exception("kairos: run failed")
            environment.process_exit_code = 1
            self.run.close(partial=True)
        finally:
            self.pin_workers(None)  # web UI: the next run may pin other cores, or none
            opts = environment.parsed_options
            if opts.headless:
                gevent.spawn_later(0, environment.runner.quit)
            else:
                environment.runner.stop()  # the web UI stays up with the results, unless --autostart --autoquit N
                if getattr(opts, "autostart", False) and getattr(opts, "autoquit", -1) != -1:
                    gevent.sleep(opts.autoquit)
                    environment.runner.quit()
                    if environment.web_ui:
                        environment.web_ui.stop()

    def stop(self) -> None:
        """On quitting: an unfinished run becomes a partial report; processes we started are stopped."""
        if self.run is not None and not self.run.finished:
            if self.controller is not None and gevent.getcurrent() is not self.controller:
                self.controller.kill(block=True, timeout=5)
            self.run.close(partial=True)


def quit_when_orphaned(runner, parent_pid: int) -> None:
    """A worker forked by ``--processes`` quits once the process that forked it is gone (kill -9 included), rather
    than after Locust's 60 s without a heartbeat from the master."""
    while os.getppid() == parent_pid:
        gevent.sleep(PARENT_CHECK_S)
    log.error("kairos: the process that started this worker is gone; quitting")
    runner.quit()


@events.init.add_listener
def on_init(environment, web_ui=None, **kwargs) -> None:
    """Hang the session on the environment, guard the web UI's start form, and register the phase messages."""
    session = environment.kairos = KairosSession(environment)
    web_ui = web_ui or environment.web_ui
    if web_ui is not None:
        web_ui.app.before_request(session.check_start_form)
        if reaches_beyond_this_machine(web_ui.host) and not web_ui.web_login:
            log.warning(
                "kairos: the web UI listens on %s port %s without a login: anyone who can reach it can start runs "
                "and read results. Add --web-login (Locust's authentication) or leave --web-host at %s "
                "(docs/security.md)",
                web_ui.host or "every interface",
                web_ui.port,
                WEB_HOST,
            )
    runner = environment.runner
    if runner is None:
        return
    if not isinstance(runner, MasterRunner):
        runner.register_message(PHASE_MESSAGE, session.on_phase)
    if isinstance(runner, WorkerRunner) and getattr(environment.parsed_options, "processes", None):
        gevent.spawn(quit_when_orphaned, runner, os.getppid())
    if isinstance(runner, WorkerRunner):
        runner.register_message(PIN_MESSAGE, session.on_pin)
    if isinstance(runner, MasterRunner):
        runner.register_message(PINNED_MESSAGE, session.loadgen.on_pinned)
    if not isinstance(runner, WorkerRunner):
        runner.register_message(DONE_MESSAGE, session.loadgen.on_done)
        runner.register_message(RECORDS_MESSAGE, session.loadgen.on_records)


@events.test_start.add_listener
def on_test_start(environment, **kwargs) -> None:
    """Start the run on the master (or the only process)."""
    if not isinstance(environment.runner, WorkerRunner):
        environment.kairos.start(environment)


@events.quitting.add_listener
def on_quitting(environment, **kwargs) -> None:
    """Leave a readable (partial if need be) report and no process behind."""
    if not isinstance(environment.runner, WorkerRunner) and hasattr(environment, "kairos"):
        environment.kairos.stop()


class TraceReplayUser(User):
    """Placeholder user: phases are replayed by per-query greenlets (open loop), never by user tasks, so Locust's
    user count cannot cap the arrival rate. Locust requires one User class."""

    wait_time = constant(3600)

    @task
    def idle(self) -> None:
        """Nothing: the trace drives the load."""
        gevent.sleep(3600)
