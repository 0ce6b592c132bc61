"""MLPerf LoadGen's Server scenario against the live paper pool, next to the simulator's allowable throughput.

Starts the emulated pool (default the paper's rm2 pool, 2 x g4dn.xlarge + 9 x r5n.large) and a dispatcher (kairos
policy) as real processes on loopback, and drives the dispatcher with MLPerf LoadGen (``mlperf_loadgen``, from
``pip install mlcommons-loadgen``): Server scenario, PerformanceOnly, p99 target = QoS. Each LoadGen sample is one
KServe V2 JSON infer request of a fixed batch (default 100), sent from an asyncio loop in a background thread so
LoadGen's issue thread never waits on the network; a sample is completed when its answer arrives. By default it
bisects the highest target QPS whose LoadGen result is VALID (between --low and --high, to --resolution), then runs
the simulator's allowable-throughput search for the same pool, model, batch and QoS, and prints both and their ratio.

Run: python benchmarks/loadgen_compare.py [--min-duration-s 60] [--low 200 --high 320] [--target-qps Q] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import psutil

from harness.core.gc_freeze import frozen_gc
from harness.core.paper import PAPER_CONFIG
from harness.core.profiles import Profile
from servers import models, v2
from servers.dispatcher import DispatcherConfig
from servers.pool import PoolSpec, start_pool
from servers.process import spawn_server, stop_processes

try:
    import mlperf_loadgen as lg
except ImportError:  # an optional extra: main() says how to install it
    lg = None

INSTALL_HINT = "mlperf_loadgen is not installed: pip install mlcommons-loadgen (MLPerf LoadGen's Python bindings)"
WITHIN = 0.10  # the issue's acceptance band: LoadGen's limit within 10% of the simulator's allowable throughput
QSL_SAMPLES = 1024  # every sample is the same request; LoadGen only needs indices to draw from


# -- the LoadGen summary -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadGenSummary:
    """What one ``mlperf_log_summary.txt`` says about a Server-scenario run."""

    valid: bool
    achieved_qps: float  # "Completed samples per second"
    scheduled_qps: float
    p99_ms: float
    p50_ms: float
    max_ms: float
    performance_ok: bool
    min_duration_ok: bool
    min_queries_ok: bool
    early_stopping_ok: bool
    early_stopping: str  # LoadGen's "Early Stopping Result" lines, joined
    recommendations: str


def _field(text: str, label: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(label)}\s*:\s*(.*?)\s*$", text, re.MULTILINE)
    return m.group(1) if m else None


def _number(text: str, label: str) -> float:
    value = _field(text, label)
    return float(value) if value is not None else float("nan")


def _block(text: str, heading: str) -> str:
    """The ``* ...`` lines under ``heading`` up to the next heading or blank line, joined into one line."""
    m = re.search(rf"^{re.escape(heading)}:?\s*\n((?:[ *].*\n?)*)", text, re.MULTILINE)
    if not m:
        return ""
    return " ".join(" ".join(m.group(1).split()).split(" * ")).lstrip("* ").strip()


def parse_summary(text: str) -> LoadGenSummary:
    """Parse LoadGen's summary file (Server scenario); ValueError if it is not one."""
    result = _field(text, "Result is")
    if result is None:
        raise ValueError("no 'Result is' line: not an MLPerf LoadGen summary")

    def yes(label: str) -> bool:
        return (_field(text, label) or "").lower() == "yes"

    return LoadGenSummary(
        valid=result.upper() == "VALID",
        achieved_qps=_number(text, "Completed samples per second"),
        scheduled_qps=_number(text, "Scheduled samples per second"),
        p99_ms=_number(text, "99.00 percentile latency (ns)") / 1e6,
        p50_ms=_number(text, "50.00 percentile latency (ns)") / 1e6,
        max_ms=_number(text, "Max latency (ns)") / 1e6,
        performance_ok=yes("Performance constraints satisfied"),
        min_duration_ok=yes("Min duration satisfied"),
        min_queries_ok=yes("Min queries satisfied"),
        early_stopping_ok=yes("Early stopping satisfied"),
        early_stopping=_block(text, "Early Stopping Result"),
        recommendations=_block(text, "Recommendations"),
    )


# -- the sender --------------------------------------------------------------------------------------------------
def json_request(model: str, batch_size: int, seed: int = 0) -> v2.EncodedRequest:
    """The V2 JSON infer request (JSON inputs and outputs) of ``batch_size`` samples of ``model``."""
    spec = models.get_spec(model)
    # Seeded per batch size as harness.live.replay.payloads_for is, but JSON tensors instead of binary ones.
    cache = v2.PayloadCache(
        lambda b: models.make_inputs(spec, b, np.random.default_rng(seed + b)), binary=False, binary_output=False
    )
    return cache.get(batch_size)


class JsonSender:
    """Posts one prepared request per LoadGen sample from an asyncio loop in its own thread; ``complete`` is called
    with the sample id when the answer (or an error) arrives."""

    def __init__(self, base_url: str, model: str, request: v2.EncodedRequest, timeout_s: float = 120.0):
        self.url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
        self.request = request
        self.timeout_s = timeout_s
        self.statuses: Counter[str] = Counter()  # "200", "503", "ClientConnectorError", ...
        self.complete: Callable[[int], None] = lambda sample_id: None
        self.id_prefix = "lg-"
        self._tasks: set[asyncio.Task] = set()
        self._loop = _new_loop()
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="loadgen-sender", daemon=True)
        self._thread.start()
        self._call(self._open())

    def _call(self, coro, timeout_s: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _open(self) -> None:
        # No connection limit: an open-loop client must never queue behind its own pool. No cookie jar: per-request
        # work the servers never need.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _send(self, sample_id: int) -> None:
        headers = {**self.request.headers, "X-Request-ID": f"{self.id_prefix}{sample_id}"}
        try:
            async with self._session.post(self.url, data=self.request.body, headers=headers) as resp:
                await resp.read()
                self.statuses[str(resp.status)] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.statuses[type(exc).__name__] += 1
        self.complete(sample_id)

    def _fire(self, sample_ids: list[int]) -> None:
        for sid in sample_ids:
            task = self._loop.create_task(self._send(sid))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def issue(self, sample_ids: list[int]) -> None:
        """Queue the samples' requests on the sender loop and return at once (called on LoadGen's issue thread)."""
        self._loop.call_soon_threadsafe(self._fire, sample_ids)

    def warm_up(self, n: int) -> Counter[str]:
        """Send ``n`` requests at once and wait for them (opens connections, warms every process's code paths)."""
        done = threading.Semaphore(0)
        self.complete = lambda sample_id: done.release()
        self.issue(list(range(n)))
        for _ in range(n):
            done.acquire(timeout=self.timeout_s)
        return self.take_statuses()

    def take_statuses(self) -> Counter[str]:
        """Answers by status since the last call (call it between runs, with nothing in flight)."""
        seen, self.statuses = self.statuses, Counter()
        return seen

    def close(self) -> None:
        """Close the session and stop the loop thread."""
        if self._session is not None:
            self._call(self._session.close(), timeout_s=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # the servers' loop; it sends and reads with less CPU than asyncio's own
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- CPU accounting ----------------------------------------------------------------------------------------------
class CpuMeter:
    """CPU seconds of named process groups and of the whole host between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self._wall0 = 0.0
        self._before: dict[str, float] = {}

    def _cpu_s(self) -> dict[str, float]:
        out = {}
        for name, procs in self.groups.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass  # an exited process adds nothing
            out[name] = total
        host = psutil.cpu_times()
        out["host"] = sum(host) - host.idle - getattr(host, "iowait", 0.0)
        return out

    def start(self) -> None:
        """Take the first reading."""
        self._before, self._wall0 = self._cpu_s(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Percent of one core used by each group (and ``host``: all processes on the machine) since ``start``."""
        after, wall_s = self._cpu_s(), time.perf_counter() - self._wall0
        return {k: 100.0 * (after[k] - self._before[k]) / wall_s for k in after}


# -- one LoadGen run ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PointSettings:
    """LoadGen settings shared by every point of a search."""

    qos_ms: float = 350.0
    percentile: float = 0.99
    min_duration_s: float = 60.0
    min_queries: int = 100
    seed: int = 0


@dataclass
class PointResult:
    """One LoadGen run: its target, parsed summary, client-side answer counts and CPU use."""

    target_qps: float
    summary: LoadGenSummary
    statuses: Counter[str]
    cpu_pct: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    log_dir: Path | None = None
    # Median service time the dispatcher saw minus the profile's mean for that instance type: what the emulating
    # host adds to every query (HTTP, JSON parsing, late wake-ups); it lowers the live pool's capacity.
    extra_service_ms: float = float("nan")

    @property
    def errors(self) -> int:
        """Answers that were not 200: LoadGen counts them as completed, so they would flatter its latency."""
        return sum(n for status, n in self.statuses.items() if status != "200")

    @property
    def valid(self) -> bool:
        """LoadGen says VALID and every query was answered 200."""
        return self.summary.valid and self.errors == 0

    def line(self) -> str:
        """One row of the per-run table."""
        s = self.summary
        verdict = "VALID" if s.valid else "INVALID"
        es = "ok" if s.early_stopping_ok else "FAILED"
        cpu = self.cpu_pct
        ours = sum(cpu.get(k, 0.0) for k in ("dispatcher", "instances", "loadgen"))
        return (
            f"{self.target_qps:8.1f} {s.achieved_qps:9.2f} {s.p99_ms:8.1f} {verdict:>8} {self.errors:>6} "
            f"{self.extra_service_ms:6.1f}  {cpu.get('dispatcher', 0):5.0f} {cpu.get('instances', 0):5.0f} "
            f"{cpu.get('loadgen', 0):5.0f} {cpu.get('host', 0) - ours:6.0f}  early stopping {es}: {s.early_stopping}"
            + (f" [answers: {dict(self.statuses)}]" if self.errors else "")
        )


HEADER = (
    f"{'target':>8} {'achieved':>9} {'p99 ms':>8} {'result':>8} {'errors':>6} {'svc+ms':>6}  "
    f"{'disp%':>5} {'inst%':>5} {'lg%':>5} {'other%':>6}  early stopping"
)
COLUMNS_NOTE = (
    "# svc+ms: median service time seen by the dispatcher minus the profile's mean; CPU in % of one core over the "
    "run: dispatcher, instances (all), this process (LoadGen + sender), other (rest of the host)"
)


def _blocking(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a thread and wait, so Ctrl-C reaches this thread while LoadGen's C++ code runs."""
    failure: list[BaseException] = []

    def body():
        try:
            fn()
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    t = threading.Thread(target=body, name="loadgen-test", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if failure:
        raise failure[0]


def run_point(
    sender: JsonSender, target_qps: float, settings: PointSettings, log_dir: Path, meter: CpuMeter | None = None
) -> PointResult:
    """One LoadGen Server run at ``target_qps``; logs in ``log_dir``; returns the parsed result."""
    if lg is None:
        raise RuntimeError(INSTALL_HINT)
    log_dir.mkdir(parents=True, exist_ok=True)
    ts = lg.TestSettings()
    ts.scenario = lg.TestScenario.Server
    ts.mode = lg.TestMode.PerformanceOnly
    ts.server_target_qps = float(target_qps)
    ts.server_target_latency_ns = int(round(settings.qos_ms * 1e6))
    ts.server_target_latency_percentile = settings.percentile
    ts.min_duration_ms = int(round(settings.min_duration_s * 1000))
    ts.min_query_count = int(settings.min_queries)
    # The same arrival schedule at each target (scaled): neighbouring points differ by load, not by luck.
    ts.schedule_rng_seed = ts.sample_index_rng_seed = ts.qsl_rng_seed = int(settings.seed)
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    log.enable_trace = False

    def complete(sample_id: int) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    sender.complete = complete
    sender.id_prefix = point_prefix(target_qps)
    sender.take_statuses()
    sut = lg.ConstructSUT(lambda samples: sender.issue([s.id for s in samples]), lambda: None)
    qsl = lg.ConstructQSL(QSL_SAMPLES, QSL_SAMPLES, lambda idx: None, lambda idx: None)
    wall0 = time.perf_counter()
    if meter:
        meter.start()
    with frozen_gc():  # a full collection in the sender stalls every request in flight
        # Interrupted, LoadGen's thread still runs and still uses the SUT and QSL: they are not destroyed then.
        _blocking(lambda: lg.StartTestWithLogSettings(sut, qsl, ts, log))
    cpu = meter.stop() if meter else {}
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    summary = parse_summary((log_dir / "mlperf_log_summary.txt").read_text())
    return PointResult(target_qps, summary, sender.take_statuses(), cpu, time.perf_counter() - wall0, log_dir)


def point_prefix(target_qps: float) -> str:
    """The request-id prefix of one point's queries (so the dispatcher's records can be told apart)."""
    return f"lg{target_qps:g}-"


def extra_service_ms(records: dict[str, list], profile: Profile, model: str, batch_size: int) -> float:
    """Median of (service seen by the dispatcher - the profile's mean for the instance type) over answered queries."""
    means = {}
    extra = []
    for status, itype, service_ms in zip(records["status"], records["instance_type"], records["service_ms"]):
        if status == "ok":
            if itype not in means:
                means[itype] = profile.mean_ms(itype, model, batch_size)
            extra.append(service_ms - means[itype])
    return float(np.median(extra)) if extra else float("nan")


# -- the stack ---------------------------------------------------------------------------------------------------
def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=180) as resp:
        resp.read()


@dataclass(frozen=True)
class Stack:
    """A running pool and dispatcher: the URL to send to and the pids to meter."""

    url: str
    dispatcher_pids: list[int]
    instance_pids: list[int]

    def drain(self) -> None:
        """Wait until the dispatcher has nothing queued or in service (and has flushed its records)."""
        _post(f"{self.url}/admin/drain?timeout_s=120")

    def records(self, prefix: str) -> dict[str, list]:
        """The dispatcher's finished records whose request id starts with ``prefix``, as columns."""
        url = f"{self.url}/admin/records?prefix={urllib.parse.quote(prefix)}"
        with urllib.request.urlopen(url, timeout=60) as resp:
            return orjson.loads(resp.read())

    def meter(self) -> CpuMeter:
        """A CPU meter over the dispatcher, the instances and this process (LoadGen and the sender)."""
        return CpuMeter({"dispatcher": self.dispatcher_pids, "instances": self.instance_pids, "loadgen": [os.getpid()]})


@contextmanager
def serving_stack(
    config: str, model: str, policy: str, qos_ms: float, seed: int, records_dir: Path, **dispatcher_options
) -> Iterator[Stack]:
    """Emulated pool + dispatcher on loopback (as benchmarks/live_paper_pool.py starts them); stopped on exit.
    ``dispatcher_options``: more DispatcherConfig fields (None: the default)."""
    tuning = {k: v for k, v in dispatcher_options.items() if v is not None}
    with start_pool(PoolSpec(config, model, seed=seed)) as pool:
        pool.write(records_dir / "pool.json")
        disp = spawn_server(
            "dispatcher",
            DispatcherConfig(
                pool=pool.as_pool_file(),
                policy=policy,
                qos_ms=qos_ms,
                records_path=records_dir / "dispatcher.parquet",
                seed=seed,
                **tuning,
            ),
            name="dispatcher",
        )
        try:
            yield Stack(disp.url, [disp.pid], list(pool.pids))
        finally:
            stop_processes([disp])


# -- the search --------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The highest passing target found, the bracket around the limit and every point run."""

    limit_qps: float | None  # None: even --low failed
    bracket_qps: tuple[float, float | None]  # (highest passing, lowest failing); None: --high passed
    points: list[PointResult]


def search_limit(
    evaluate: Callable[[float], PointResult], low_qps: float, high_qps: float, resolution: float
) -> SearchResult:
    """Bisect the highest VALID target in [low, high] until the bracket is within ``resolution`` of its low end;
    the bounds are run only if the bisection ends on them (each point costs a minute)."""
    points: list[PointResult] = []

    def passes(qps: float) -> bool:
        points.append(evaluate(qps))
        return points[-1].valid

    lo, hi = low_qps, high_qps
    while hi - lo > resolution * lo:
        mid = round((lo + hi) / 2, 1)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    if lo == low_qps and not passes(low_qps):
        return SearchResult(None, (0.0, low_qps), points)
    if hi == high_qps and passes(high_qps):
        return SearchResult(high_qps, (high_qps, None), points)
    return SearchResult(lo, (lo, hi), points)


# -- the simulator -----------------------------------------------------------------------------------------------
def simulator_argv(config: str, model: str, batch: int, qos_ms: float, policy: str, seed: int) -> list[str]:
    """The ``kairos simulate`` arguments for the allowable throughput of this pool, model, fixed batch and QoS."""
    return [
        "simulate",
        "--config",
        config,
        "--model",
        model,
        "--batch-mix",
        f"fixed:{batch}",
        "--qos-ms",
        f"{qos_ms:g}",
        "--policy",
        policy,
        "--seed",
        str(seed),
        "--allowable",
    ]


def simulator_allowable(argv: list[str]) -> dict:
    """Run ``kairos simulate argv`` in this process; its result for the one policy (allowable_qps, bracket_qps...)."""
    from harness.cli import build_parser
    from harness.cli.simulate import build_job, run_job

    job = build_job(build_parser(["simulate"]).parse_args(argv))
    results, _, _ = run_job(job)
    return results[0]


# -- main --------------------------------------------------------------------------------------------------------
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=PAPER_CONFIG, help=f"instance mix (default {PAPER_CONFIG})")
    ap.add_argument("--model", default="rm2")
    ap.add_argument("--batch", type=int, default=100, help="batch size of every request (default 100)")
    ap.add_argument("--policy", default="kairos", help="dispatcher policy (default kairos)")
    ap.add_argument("--qos-ms", type=float, default=350.0, help="p99 latency target (default 350)")
    ap.add_argument(
        "--prefetch-ms", type=float, help=f"dispatcher's early slot (default {DispatcherConfig.prefetch_ms:g})"
    )
    ap.add_argument(
        "--latency-alpha",
        type=float,
        help=f"dispatcher's online latency-model update weight (default {DispatcherConfig.latency_alpha:g})",
    )
    ap.add_argument("--min-duration-s", type=float, default=60.0, help="LoadGen min duration per point (MLPerf: 60)")
    ap.add_argument("--min-queries", type=int, default=100, help="LoadGen min query count per point (default 100)")
    ap.add_argument("--target-qps", type=float, help="run this one target instead of searching")
    ap.add_argument("--low", type=float, default=200.0, help="search: lowest target (default 200)")
    ap.add_argument("--high", type=float, default=320.0, help="search: highest target (default 320)")
    ap.add_argument("--resolution", type=float, default=0.02, help="search: relative bracket width (default 0.02)")
    ap.add_argument("--seed", type=int, default=0, help="pool, dispatcher, LoadGen schedule and simulator seed")
    ap.add_argument("--out", type=Path, help="directory for LoadGen logs and dispatcher records (default: a temp dir)")
    sim = ap.add_mutually_exclusive_group()
    sim.add_argument("--sim-allowable", type=float, help="use this simulator figure instead of running the simulator")
    sim.add_argument("--no-sim", action="store_true", help="skip the simulator")
    args = ap.parse_args(argv)
    if not 0 < args.low < args.high:
        ap.error("need 0 < --low < --high")
    if args.target_qps is not None and not args.target_qps > 0:
        ap.error("--target-qps must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Search (or run one point), run the simulator, print the comparison."""
    args = parse_args(argv)
    if lg is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed run still stops its pool
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIGINT ignored)
    out = args.out or Path(tempfile.mkdtemp(prefix="kairos-loadgen-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"# {args.config}, {args.model}, batch {args.batch} (JSON), policy {args.policy}, QoS p{100 * 0.99:g} <= "
        f"{args.qos_ms:g} ms, LoadGen Server {args.min_duration_s:g} s/point; logs in {out}; host {os.cpu_count()} "
        f"CPUs",
        flush=True,
    )
    settings = PointSettings(args.qos_ms, 0.99, args.min_duration_s, args.min_queries, args.seed)
    profile = Profile.load()
    sim: dict | None = None
    try:
        if args.sim_allowable is not None:
            sim = {"allowable_qps": args.sim_allowable, "bracket_qps": None}
        elif not args.no_sim:
            # Before the pool starts: the simulator is CPU-bound and would steal cores from the live run.
            sim_argv = simulator_argv(args.config, args.model, args.batch, args.qos_ms, args.policy, args.seed)
            print(f"# simulator: kairos {shlex.join(sim_argv)}", flush=True)
            sim = simulator_allowable(sim_argv)
            print(f"# simulator allowable: {sim['allowable_qps']:.1f} qps", flush=True)
        with serving_stack(
            args.config,
            args.model,
            args.policy,
            args.qos_ms,
            args.seed,
            out,
            prefetch_ms=args.prefetch_ms,
            latency_alpha=args.latency_alpha,
        ) as stack:
            sender = JsonSender(stack.url, args.model, json_request(args.model, args.batch, args.seed))
            try:
                warm = sender.warm_up(32)
                if set(warm) != {"200"}:
                    print(f"warm-up answers: {dict(warm)}", file=sys.stderr)
                    return 1
                print(COLUMNS_NOTE, flush=True)
                print(HEADER, flush=True)

                def evaluate(qps: float) -> PointResult:
                    res = run_point(sender, qps, settings, out / f"qps-{qps:g}", stack.meter())
                    stack.drain()
                    res.extra_service_ms = extra_service_ms(
                        stack.records(point_prefix(qps)), profile, args.model, args.batch
                    )
                    print(res.line(), flush=True)
                    return res

                if args.target_qps is not None:
                    point = evaluate(args.target_qps)
                    found = SearchResult(args.target_qps if point.valid else None, (args.target_qps, None), [point])
                else:
                    found = search_limit(evaluate, args.low, args.high, args.resolution)
            finally:
                sender.close()
    except KeyboardInterrupt:
        print("interrupted: pool and dispatcher stopped", file=sys.stderr, flush=True)
        os._exit(130)  # LoadGen's thread cannot be cancelled; the processes it drove are gone
    print(report(args, found, sim, time.perf_counter() - t0), flush=True)
    return 0


def report(args: argparse.Namespace, found: SearchResult, sim: dict | None, wall_s: float) -> str:
    """The closing lines: LoadGen limit, simulator allowable, ratio and verdict."""
    lines = []
    if args.target_qps is not None:
        p = found.points[0]
        lines.append(
            f"LoadGen at {args.target_qps:g} qps: {'VALID' if p.valid else 'INVALID'} "
            f"(achieved {p.summary.achieved_qps:.2f} qps, p99 {p.summary.p99_ms:.1f} ms, {p.errors} errors)"
        )
    elif found.limit_qps is None:
        lines.append(f"LoadGen limit: below --low {args.low:g} qps (it was INVALID)")
    else:
        lo, hi = found.bracket_qps
        above = f"first INVALID {hi:g}" if hi is not None else f"--high {args.high:g} passed: raise it"
        lines.append(f"LoadGen limit: {found.limit_qps:g} qps (highest VALID target; {above})")
    if sim is not None:
        bracket = sim.get("bracket_qps")
        extra = f" (bracket {bracket[0]:.1f}..{bracket[1]:.1f})" if bracket else " (given)"
        lines.append(f"Simulator allowable: {sim['allowable_qps']:.1f} qps{extra}")
        if found.limit_qps is not None and args.target_qps is None:
            ratio = found.limit_qps / sim["allowable_qps"]
            ok = abs(ratio - 1) <= WITHIN
            lines.append(f"Ratio LoadGen/simulator: {ratio:.3f} -> {'within' if ok else 'NOT within'} {WITHIN:.0%}")
    lines.append(f"Wall time: {wall_s:.0f} s, {len(found.points)} LoadGen runs")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
