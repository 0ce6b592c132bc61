"""kairos-harness locustfile: ``locust -f harness/kairos_load.py --headless``.

With no options it starts the paper's emulated pool (rm2: 2 x g4dn.xlarge + 9 x r5n.large) and a dispatcher on
loopback, replays the shipped Kairos-mix trace, sweeps the allowable throughput of kairos, fcfs and
least_outstanding, writes ``reports/<run-id>/`` (queries.parquet, summary.parquet, report.html) and stops everything
it started.

How it uses Locust: options come through ``init_command_line_parser`` (so they work on the command line, in
locust.conf, as LOCUST_* environment variables and in the web UI); the run starts on ``test_start`` and ends itself
when the last phase is done; each phase is broadcast to every load-generating process (``--processes N`` or
``--master``/``--worker``) with ``register_message``, each process replays its interleaved shard open loop with one
greenlet per query (so no user count caps the arrival rate), and sends its per-query rows back to the master. Every
request also fires Locust's ``request`` event, so Locust's own statistics, ``--html`` and ``--csv`` keep working.
Locust owns ``--config`` (its config-file option), so the instance mix is ``--pool-config``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
from locust import User, constant, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import MasterRunner, WorkerRunner

from harness.core.errors import InputError
from harness.core.gc_freeze import frozen_gc
from harness.live.run import DEFAULT_DISPATCHERS, LiveOptions, LiveRun, PhaseOutput, PhasePlan
from harness.core.paper import PAPER_CONFIG
from harness.live.replay import payloads_for

PHASE_MESSAGE = "kairos_phase"
DONE_MESSAGE = "kairos_phase_done"
log = logging.getLogger("kairos")


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    """The harness's options (command line, locust.conf, LOCUST_* environment variables, web UI)."""
    parser.add_argument("--trace", default="", include_in_web_ui=True,
                        help="trace file (parquet/CSV); default: the shipped Kairos-mix rm2 trace")
    parser.add_argument("--model", default="", include_in_web_ui=True, help="model (default: the trace's)")
    parser.add_argument("--pool", default="", include_in_web_ui=True,
                        help="pool file of running instances (default: start a local pool from --pool-config)")
    parser.add_argument("--pool-config", default=PAPER_CONFIG, include_in_web_ui=True,
                        help=f"instance mix TYPE=N,... for the local pool (default {PAPER_CONFIG})")
    parser.add_argument("--mode", default="emulated", choices=["emulated", "onnx"], include_in_web_ui=True,
                        help="local pool of emulated instances (default) or ONNX Runtime servers")
    parser.add_argument("--dispatchers", default=",".join(DEFAULT_DISPATCHERS), include_in_web_ui=True,
                        help="policies compared head-to-head, NAME[:k=v],...")
    parser.add_argument("--qos-ms", type=float, default=None, include_in_web_ui=True,
                        help="p99 target in ms (default: the paper's for the model)")
    parser.add_argument("--rate", type=float, default=None, include_in_web_ui=True,
                        help="offered load in qps (one phase per dispatcher; with --sweep, where the sweep starts)")
    parser.add_argument("--speedup", type=float, default=None, include_in_web_ui=True,
                        help="replay the trace this many times faster than recorded (one phase per dispatcher)")
    parser.add_argument("--sweep", action="store_true", default=False, include_in_web_ui=True,
                        help="search each dispatcher's allowable throughput (default without --rate/--speedup)")
    parser.add_argument("--phase-seconds", type=float, default=10.0, include_in_web_ui=True,
                        help="length of one phase in seconds (default 10; see --phase-queries)")
    parser.add_argument("--phase-queries", type=int, default=500, include_in_web_ui=True,
                        help="a phase also lasts until this many queries were sent (default 500; a p99 from "
                             "fewer is mostly noise, more gives steadier answers: see README)")
    parser.add_argument("--report-dir", default="reports", include_in_web_ui=True,
                        help="where reports/<run-id>/ goes (default reports)")
    parser.add_argument("--seed", type=int, default=0, include_in_web_ui=True, help="seed (default 0)")
    parser.add_argument("--profiles", default="", include_in_web_ui=True,
                        help="latency profile for emulated instances and the simulator (default: shipped)")
    parser.add_argument("--tolerance", type=float, default=0.05, include_in_web_ui=True,
                        help="sweep stops when the bracket is this narrow, relatively (default 0.05)")
    parser.add_argument("--max-phases", type=int, default=8, include_in_web_ui=True,
                        help="most phases one dispatcher's sweep may run (default 8)")
    parser.add_argument("--min-queries", type=int, default=200, include_in_web_ui=True,
                        help="validity: fewest measured queries a phase needs (default 200)")
    parser.add_argument("--criterion", default="p99", choices=["p99", "mlperf"], include_in_web_ui=True,
                        help="what makes a phase pass: measured p99 <= QoS (default; short phases) or MLPerf "
                             "early stopping at 99%% confidence (needs long phases); both are reported")


def live_options(opts) -> LiveOptions:
    """Translate Locust's parsed options into LiveOptions."""
    return LiveOptions(
        trace=Path(opts.trace) if opts.trace else None, model=opts.model or None,
        pool_file=Path(opts.pool) if opts.pool else None, config=opts.pool_config, mode=opts.mode,
        dispatchers=tuple(d.strip() for d in opts.dispatchers.split(",") if d.strip()), qos_ms=opts.qos_ms,
        rate_qps=opts.rate, speedup=opts.speedup, sweep=opts.sweep, phase_seconds=opts.phase_seconds,
        phase_queries=opts.phase_queries,
        report_dir=Path(opts.report_dir), seed=opts.seed, profiles=Path(opts.profiles) if opts.profiles else None,
        tolerance=opts.tolerance, max_phases=opts.max_phases, criterion=opts.criterion,
        min_queries=opts.min_queries)


class ShardReplayer:
    """Replays one shard of a phase open loop in this process; rows accumulate in ``rows`` as queries finish."""

    def __init__(self, environment, worker: str):
        self.environment = environment
        self.worker = worker
        self.rows: list[dict] = []
        self._payloads = {}

    def run(self, shard: dict) -> PhaseOutput:
        """Sleep to each absolute send time on the monotonic clock and fire the query in its own greenlet."""
        model = shard["model"]
        payloads = self._payloads.get(model) or self._payloads.setdefault(model, payloads_for(model))
        for b in set(shard["batch_sizes"]):
            payloads.get(b)  # encode once per batch size, before the clock starts
        session = FastHttpSession(shard["url"], self.environment.events.request, None, concurrency=10_000,
                                  network_timeout=600.0, connection_timeout=60.0)
        path = f"/v2/models/{model}/infer"
        start_epoch = shard["start_epoch"]
        mono0 = time.monotonic() + (start_epoch - time.time())
        rows = self.rows = []
        worker = self.worker

        def send(rid: str, batch: int, target: float) -> None:
            enc = payloads.get(batch)
            sent = time.monotonic()
            resp = session.post(path, data=enc.body, headers={**enc.headers, "X-Request-ID": rid}, name=path)
            done = time.monotonic()
            rows.append({"request_id": rid, "intended_s": start_epoch + (target - mono0),
                         "sent_s": start_epoch + (sent - mono0), "client_finish_s": start_epoch + (done - mono0),
                         "http_status": int(resp.status_code or 0), "worker": worker})

        group = gevent.pool.Group()
        cpu0, wall0 = time.process_time(), time.monotonic()
        with frozen_gc():
            for rid, offset, batch in zip(shard["request_ids"], shard["offsets_s"], shard["batch_sizes"]):
                target = mono0 + offset
                delay = target - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
                group.spawn(send, rid, batch, target)
            group.join()
        busy = time.monotonic() - max(wall0, mono0)
        cpu = 100.0 * (time.process_time() - cpu0) / busy if busy > 0 else math.nan
        return PhaseOutput(rows, cpu)


class LocustLoadGenerator:
    """The master's side: broadcast shards to every load-generating process, gather their rows."""

    def __init__(self, environment):
        self.environment = environment
        self._outputs: list[dict] = []
        self._expect = 0
        self._index = -1
        self._done = gevent.event.Event()
        self.local: ShardReplayer | None = None

    def _workers(self) -> list[str | None]:
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            return sorted(runner.clients.keys())
        return [None]

    def run_phase(self, plan: PhasePlan) -> PhaseOutput:
        """Send each process its shard; wait for all of them to report back."""
        workers = self._workers()
        if not workers:
            raise InputError("no load-generating worker is connected")
        self._outputs, self._expect, self._index = [], len(workers), plan.index
        self._done.clear()
        for k, client_id in enumerate(workers):
            self.environment.runner.send_message(PHASE_MESSAGE, plan.shard(k, len(workers)), client_id=client_id)
        timeout = plan.offsets_s[-1] + 600.0 if plan.offsets_s else 600.0
        if not self._done.wait(timeout=timeout):
            log.warning("phase %d: %d of %d load generators answered in time", plan.index, len(self._outputs),
                        self._expect)
        rows = [row for out in self._outputs for row in _rows_of(out)]
        cpus = [out["cpu_percent"] for out in self._outputs if out.get("cpu_percent") is not None]
        return PhaseOutput(rows, max(cpus) if cpus else math.nan)

    def on_done(self, environment, msg, **kwargs) -> None:
        """A process finished its shard."""
        if msg.data.get("index") != self._index:
            return
        self._outputs.append(msg.data)
        if len(self._outputs) >= self._expect:
            self._done.set()

    def partial_rows(self) -> list[dict]:
        """Rows received so far, plus this process's own in-progress rows (local runs)."""
        rows = [row for out in self._outputs for row in _rows_of(out)]
        if not rows and self.local is not None and not isinstance(self.environment.runner, MasterRunner):
            rows = list(self.local.rows)  # a local run reports only when its shard is done
        return rows


def _columns(rows: list[dict]) -> dict:
    keys = ("request_id", "intended_s", "sent_s", "client_finish_s", "http_status", "worker")
    return {k: [r[k] for r in rows] for k in keys}


def _rows_of(out: dict) -> list[dict]:
    cols = out["rows"]
    keys = list(cols)
    return [dict(zip(keys, values)) for values in zip(*(cols[k] for k in keys))]


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

    def on_phase(self, environment, msg, **kwargs) -> None:
        """Worker side: replay the shard in a greenlet (the message loop must not block), then report."""
        def work():
            output = self.replayer.run(msg.data)
            environment.runner.send_message(DONE_MESSAGE, {"index": msg.data["index"], "rows": _columns(output.rows),
                                                           "cpu_percent": output.cpu_percent,
                                                           "worker": self.replayer.worker})
        gevent.spawn(work)

    def start(self, environment) -> None:
        """Master side, on test_start: build the run from the options and drive it in a greenlet."""
        if self.controller is not None and not self.controller.dead:
            return  # a run is in progress (web UI: "start" pressed again)
        try:
            self.run = LiveRun(live_options(environment.parsed_options), log=log.info)
        except InputError as exc:
            log.error("kairos: %s", exc)
            environment.process_exit_code = 2
            gevent.spawn_later(0, environment.runner.quit)
            return
        self.controller = gevent.spawn(self._drive, environment)

    def _drive(self, environment) -> None:
        try:
            self.run.start()
            self.run.run(self.loadgen)
        except InputError as exc:
            log.error("kairos: %s", exc)
            environment.process_exit_code = 2
            self.run.close(partial=True)
        except Exception:
            log.exception("kairos: run failed")
            environment.process_exit_code = 1
            self.run.close(partial=True)
        finally:
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


@events.init.add_listener
def on_init(environment, **kwargs) -> None:
    """Hang the session on the environment and register the phase messages."""
    session = environment.kairos = KairosSession(environment)
    runner = environment.runner
    if runner is None:
        return
    if not isinstance(runner, MasterRunner):
        runner.register_message(PHASE_MESSAGE, session.on_phase)
    if not isinstance(runner, WorkerRunner):
        runner.register_message(DONE_MESSAGE, session.loadgen.on_done)


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
