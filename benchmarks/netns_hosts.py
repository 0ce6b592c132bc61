"""Several hosts on one machine: the pool, the dispatcher, a Locust master and its workers, each in a Linux network
namespace of its own (``harness/live/netns.py``), with a delay on the path to the pool (netem, or where the kernel
has none, the userspace delay line of ``harness/live/delay_relay.py``); one phase sharded across the workers from a
common start time, then checked.

The hosts (private /24 behind a bridge in a namespace of its own; prefix ``kh-``): ``pool`` (``kairos serve pool
--host``), ``disp`` (``kairos serve dispatcher --host --admin-token``), ``master`` (the locustfile with ``--master
--master-bind-host``, ``--pool`` and ``--dispatcher-url``: it starts neither), ``w1``..``wN`` (``--worker
--master-host``). The checks: every query of every phase is in the run folder's ``client.parquet`` exactly once and
the count is the phase's planned queries; each worker's send lag (p99, from ``queries.parquet``) and the master's
per-worker log line. The namespaces and every process in them are removed at the end, on an error, on Ctrl-C or
SIGTERM; ``--teardown`` removes what a SIGKILLed run left.

Needs Linux, root and iproute2. ``--delay-via`` says how the delay is made: ``netem`` (a qdisc on the path into the
pool: every packet, the SYN included, waits), ``relay`` (the pool's servers listen on its loopback and one relay per
port on its address holds every byte toward them: a TCP connect does not wait, a request does), or ``auto`` (netem
where the kernel has it, else the relay; the default).

Run: python benchmarks/netns_hosts.py [--rate 50] [--seconds 20] [--workers 2] [--delay-ms 5] [--delay-via auto]
                                     [--out DIR]
     python benchmarks/netns_hosts.py --teardown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from yarl import URL

from harness.core.errors import InputError
from harness.live.netns import HostSpec, NetnsHosts, Topology, netem_unavailable, unavailable
from harness.measure.analyzer import percentile_ms

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
LOCUSTFILE = ROOT / "harness" / "kairos_load.py"
DISPATCHER_PORT = 8000  # each host has its own ports: fixed ones cannot collide
MASTER_PORT = 5557
READY = "READY "
WORKER_LINE = "load generators:"  # the master's per-worker log line (harness/kairos_load.py)


@dataclass(frozen=True)
class CrossHostRun:
    """One run across namespaces: the phase (rate, length), the workers, the delay to the pool, the pool and policy."""

    rate_qps: float = 50.0
    phase_seconds: float = 20.0
    workers: int = 2
    delay_ms: float = 5.0
    delay_via: str = "netem"  # or "relay" (see delay_method)
    pool_config: str = "g4dn.xlarge=2,r5n.large=4"  # kairos keeps rm2's 350 ms p99 at 50 qps on it (simulated)
    policy: str = "kairos"
    model: str = "rm2"
    seed: int = 0
    prefix: str = "kh-"
    start_timeout_s: float = 120.0  # a server's READY line, on a loaded 2-core VM


@dataclass
class CrossHostResult:
    """What the checks found: per phase planned / logged / unique ids, per worker queries and send lag p99."""

    run_dir: Path
    master_rc: int | None
    phases: list[dict] = field(default_factory=list)
    workers: dict[str, dict] = field(default_factory=dict)
    worker_log_lines: list[str] = field(default_factory=list)
    pool_rtt_ms: float = math.nan
    relay: dict = field(default_factory=dict)  # the delay line's figures, when it made the delay
    started_pids: list[int] = field(default_factory=list)

    @property
    def each_query_once(self) -> bool:
        """Every phase's planned queries logged once each, none missing, none extra."""
        return bool(self.phases) and all(
            p["client_rows"] == p["planned"] == p["unique_ids"] and not p["missing"] and not p["stray"]
            for p in self.phases
        )


DELAY_VIA = ("auto", "netem", "relay")


def delay_method(requested: str, prefix: str) -> tuple[str, str | None]:
    """``netem`` or ``relay`` for ``requested`` (auto: netem where the kernel has it), and why netem is out (or None)."""
    if requested not in DELAY_VIA:
        raise InputError(f"{requested!r}: expected one of {', '.join(DELAY_VIA)}", field="delay_via")
    why = netem_unavailable(prefix) if requested != "relay" else None
    if requested == "auto":
        return ("relay" if why else "netem"), why
    return requested, why


def topology(config: CrossHostRun) -> Topology:
    """The pool (with netem's delay into it, when netem makes it), the dispatcher, the master and the workers."""
    netem_ms = config.delay_ms if config.delay_via == "netem" else 0.0
    hosts = [HostSpec("pool", netem_ms), HostSpec("disp"), HostSpec("master")]
    hosts += [HostSpec(f"w{k + 1}") for k in range(config.workers)]
    return Topology(tuple(hosts), prefix=config.prefix)


def wait_ready(proc: subprocess.Popen, log_path: Path, what: str, timeout_s: float) -> dict:
    """The ``READY {json}`` line a server writes to its log once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith(READY):
                return json.loads(line[len(READY) :])
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}: {tail(log_path)}")
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s: {tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def round_trip_ms(hosts: NetnsHosts, src: str, url: str, tries: int = 20) -> float:
    """Median time from host ``src`` of a fresh connection and one ``GET /v2/health/live`` to ``url``: the delay on
    the path shows in it, whichever way it is made (netem also holds the SYN, the relay only the request)."""
    code = (
        "import statistics,time,urllib.request\n"
        "t=[]\n"
        f"for _ in range({tries}):\n"
        "    s=time.perf_counter()\n"
        f"    urllib.request.urlopen({url + '/v2/health/live'!r},timeout=5).read()\n"
        "    t.append(1000*(time.perf_counter()-s))\n"
        "print(statistics.median(t))\n"
    )
    done = subprocess.run(hosts.hosts[src].argv([sys.executable, "-c", code]), capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 else math.nan


def run_across(
    hosts: NetnsHosts, config: CrossHostRun, out: Path, log: Callable[[str], None] = print
) -> CrossHostResult:
    """Start the pool, the dispatcher, the master and the workers in their namespaces, wait for the run to end, and
    check its run folder. The processes stay until ``hosts`` is torn down."""
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    py = sys.executable
    addr = {name: h.address for name, h in hosts.hosts.items()}
    started: list[int] = []

    def start(host: str, name: str, argv: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        path = logs / f"{name}.log"
        with path.open("wb") as f:  # the child keeps its own descriptor
            proc = hosts.popen(
                host, argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env
            )
        started.append(proc.pid)
        return proc, path

    pool_file = out / "pool.json"
    relayed = config.delay_ms > 0 and config.delay_via == "relay"
    # With the relay, the servers listen on the pool host's loopback and the relay on its address, port for port.
    pool, pool_log = start(
        "pool",
        "pool",
        [py, "-m", "harness.cli", "serve", "pool", "--config", config.pool_config, "--model", config.model]
        + ["--host", LOOPBACK if relayed else addr["pool"], "--pool-file", str(pool_file), "--seed", str(config.seed)],
    )
    info = wait_ready(pool, pool_log, "pool", config.start_timeout_s)
    started += [i["pid"] for i in info["instances"] if i.get("pid")]
    log(f"pool on {addr['pool']} ({hosts.hosts['pool'].namespace}): {len(info['instances'])} instances")
    relay = relay_log = None
    pool_url = info["instances"][0]["url"]
    if relayed:
        doc = json.loads(pool_file.read_text())
        routes = []
        for inst in doc["instances"]:
            url = URL(inst["url"])
            routes.append(f"{addr['pool']}:{url.port}={LOOPBACK}:{url.port}")
            inst["url"] = str(url.with_host(addr["pool"]))
        pool_file.write_text(json.dumps(doc, indent=2))  # what the dispatcher and the master read: the relay
        relay, relay_log = start(
            "pool", "delay-relay", [py, "-m", "harness.live.delay_relay", "--delay-ms", f"{config.delay_ms:g}", *routes]
        )
        wait_ready(relay, relay_log, "delay relay", config.start_timeout_s)
        log(f"delay line: {config.delay_ms:g} ms on every byte toward the pool's {len(routes)} servers (no netem)")
        pool_url = doc["instances"][0]["url"]

    token = secrets.token_hex(16)
    token_file = out / "admin-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    disp, disp_log = start(
        "disp",
        "dispatcher",
        [py, "-m", "harness.cli", "serve", "dispatcher", "--pool", str(pool_file), "--policy", config.policy]
        + ["--host", addr["disp"], "--port", str(DISPATCHER_PORT), "--admin-token", token]
        + ["--records", str(out / "dispatcher.parquet"), "--seed", str(config.seed)],
    )
    url = wait_ready(disp, disp_log, "dispatcher", config.start_timeout_s)["url"]
    pool_rtt = round_trip_ms(hosts, "disp", pool_url)
    log(f"dispatcher at {url} ({hosts.hosts['disp'].namespace}); a request to the pool {pool_rtt:.2f} ms")

    report_dir = out / "reports"
    locust = [py, "-m", "locust", "-f", str(LOCUSTFILE)]
    master, master_log = start(
        "master",
        "master",
        locust
        + ["--headless", "--only-summary", "--master", "--master-bind-host", addr["master"]]
        + ["--master-bind-port", str(MASTER_PORT), "--expect-workers", str(config.workers)]
        + ["--expect-workers-max-wait", str(int(config.start_timeout_s))]
        + ["--pool", str(pool_file), "--dispatcher-url", url, "--dispatcher-token-file", str(token_file)]
        + ["--dispatchers", config.policy, "--rate", f"{config.rate_qps:g}"]
        + ["--phase-seconds", f"{config.phase_seconds:g}", "--seed", str(config.seed), "--report-dir", str(report_dir)],
    )
    workers = [
        start(
            f"w{k + 1}",
            f"worker-{k + 1}",
            locust + ["--worker", "--master-host", addr["master"], "--master-port", str(MASTER_PORT)],
        )[0]
        for k in range(config.workers)
    ]
    log(
        f"master on {addr['master']}, {config.workers} workers; phase {config.phase_seconds:g} s at {config.rate_qps:g} qps"
    )
    try:
        rc = master.wait(timeout=config.start_timeout_s + config.phase_seconds + 300)
    except subprocess.TimeoutExpired:
        rc = None
        log(f"master still running after the phase and 300 s: {tail(master_log)}")
    for w in workers:  # the master's quit message ends them
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    runs = sorted(p for p in report_dir.iterdir() if p.is_dir()) if report_dir.is_dir() else []
    if not runs:
        raise RuntimeError(f"no run folder in {report_dir}: {tail(master_log)}")
    result = check(runs[-1], master_log)
    result.master_rc, result.pool_rtt_ms, result.started_pids = rc, pool_rtt, started
    if relay is not None:
        relay.terminate()  # it prints how late its held bytes went out
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for line in relay_log.read_text(errors="replace").splitlines():
            if line.startswith("delay_relay: {"):
                result.relay = json.loads(line.split(": ", 1)[1])
    return result


def check(run_dir: Path, master_log: Path) -> CrossHostResult:
    """Each phase's planned queries against client.parquet (each id once), and each worker's send lag."""
    result = CrossHostResult(run_dir, None)
    client = pd.read_parquet(run_dir / "client.parquet")
    for plan_path in sorted((run_dir / "phases").glob("phase-*.json")):
        plan = json.loads(plan_path.read_text())
        planned = set(plan["request_ids"])
        rows = client[client["phase"] == plan["index"]]
        ids = set(rows["request_id"])
        result.phases.append(
            {
                "phase": plan["index"],
                "planned": len(plan["request_ids"]),
                "client_rows": len(rows),
                "unique_ids": len(ids),
                "duplicates": len(rows) - len(ids),
                "missing": len(planned - ids),
                "stray": len(ids - planned),
            }
        )
    queries = pd.read_parquet(run_dir / "queries.parquet")
    for worker, rows in queries.groupby("worker"):
        lag = rows["send_lag_ms"].dropna().to_numpy()
        result.workers[str(worker)] = {"queries": len(rows), "send_lag_p99_ms": percentile_ms(lag, 99)}
    result.worker_log_lines = [
        line for line in master_log.read_text(errors="replace").splitlines() if WORKER_LINE in line
    ]
    return result


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def main(argv: list[str] | None = None) -> int:
    """Run a phase across namespaces (or, with --teardown, remove a killed run's) and print what the checks found."""
    d = CrossHostRun
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=d.rate_qps, help=f"offered load, qps (default {d.rate_qps:g})")
    p.add_argument("--seconds", type=float, default=d.phase_seconds, help=f"phase length (default {d.phase_seconds:g})")
    p.add_argument("--workers", type=int, default=d.workers, help=f"Locust workers (default {d.workers})")
    p.add_argument("--delay-ms", type=float, default=d.delay_ms, help=f"delay to the pool (default {d.delay_ms:g})")
    p.add_argument("--delay-via", default="auto", choices=DELAY_VIA, help="netem, relay, or auto (default)")
    p.add_argument("--pool-config", default=d.pool_config, help=f"instance mix (default {d.pool_config})")
    p.add_argument("--policy", default=d.policy, help=f"dispatcher policy (default {d.policy})")
    p.add_argument("--prefix", default=d.prefix, help=f"namespace prefix (default {d.prefix})")
    p.add_argument("--out", default=None, help="folder for pool.json, logs and reports/ (default: a temporary one)")
    p.add_argument("--teardown", action="store_true", help="only remove the namespaces a killed run left")
    args = p.parse_args(argv)
    via, why_not_netem = delay_method(args.delay_via, args.prefix) if args.delay_ms > 0 else ("netem", None)
    config = CrossHostRun(
        rate_qps=args.rate,
        phase_seconds=args.seconds,
        workers=args.workers,
        delay_ms=args.delay_ms,
        delay_via=via,
        pool_config=args.pool_config,
        policy=args.policy,
        prefix=args.prefix,
    )
    hosts = NetnsHosts(topology(config))
    if args.teardown:
        hosts.teardown()
        print(f"left: {hosts.leftovers() or 'nothing'}")
        return 0
    reason = unavailable(config.prefix)
    if reason is None and config.delay_ms > 0 and via == "netem" and why_not_netem:
        reason = f"{why_not_netem} (--delay-via relay makes the delay in userspace)"
    if reason:
        print(f"netns_hosts: cannot run here: {reason}")
        return 2
    if config.delay_ms > 0 and via == "relay" and why_not_netem:
        print(f"netns_hosts: no netem ({why_not_netem}): the delay comes from the userspace relay")
    # SIGTERM unwinds like Ctrl-C, so the namespaces' teardown runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="netns-hosts-"))
    t0 = time.monotonic()
    with hosts:
        result = run_across(hosts, config, out)
    wall = time.monotonic() - t0
    left = hosts.leftovers()
    alive = [pid for pid in result.started_pids if not gone(pid)]
    print(f"\nmachine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; {wall:.0f} s")
    print(f"run folder {result.run_dir}; master exit code {result.master_rc}")
    how = f"{config.delay_via} delay {config.delay_ms:g} ms" if config.delay_ms > 0 else "no delay"
    print(f"a request dispatcher -> pool (fresh connection): {result.pool_rtt_ms:.2f} ms ({how})")
    if result.relay:
        r = result.relay
        print(
            f"delay line: {r['chunks']} chunks ({r['bytes']:,} bytes) held; out late by "
            f"{r['late_p50_ms']:.2f} ms median, {r['late_max_ms']:.2f} ms at most"
        )
    for ph in result.phases:
        print(
            f"phase {ph['phase']}: planned {ph['planned']}, in client.parquet {ph['client_rows']} "
            f"({ph['unique_ids']} distinct ids, {ph['duplicates']} duplicates, {ph['missing']} missing)"
        )
    for worker, w in sorted(result.workers.items()):
        print(f"worker {worker}: {w['queries']} queries, send lag p99 {w['send_lag_p99_ms']:.2f} ms")
    for line in result.worker_log_lines:
        print(f"master log: {line.strip()}")
    print(f"left behind: namespaces {left or 'none'}, processes {alive or 'none'} (of {len(result.started_pids)})")
    ok = result.master_rc == 0 and result.each_query_once and len(result.workers) == config.workers
    print("every query sent exactly once" if result.each_query_once else "QUERIES LOST OR DOUBLED")
    return 0 if ok and not left and not alive else 1


if __name__ == "__main__":
    sys.exit(main())
