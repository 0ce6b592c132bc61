"""Dispatcher ceiling: the highest rate the dispatcher forwards with p99 overhead under a bound, per policy and pool.

    python benchmarks/dispatcher_ceiling.py                          # kairos and fcfs, 8 instances of 0.2 ms
    python benchmarks/dispatcher_ceiling.py --service-ms 0 --instances 8,64
    git worktree add /tmp/before REV && python benchmarks/dispatcher_ceiling.py --before /tmp/before

Setup (issue 12): N emulated instances in one process, each with a fixed service time (``--service-ms``; 0 is the
"zero-service-time" ceiling), batch 10, JSON requests (``--binary`` for binary tensors), Poisson arrivals from an
open-loop asyncio client on the same host. Rates climb the ladder; at each rate the same trace is sent straight to
the instances (round robin, the baseline) and through the dispatcher. Overhead is p99(proxied) - p99(direct).

Each rate runs ``--rounds`` times (direct and every code alternating) and the table shows medians. A rate *passes*
when every query answered 200 and the median p99 overhead is at most ``--overhead-ms`` (default 2); the ceiling is
the highest rate that passed with every rate below it. The table also says whether the p99 through the dispatcher
stays within ``--hold-p99-ms`` (default 50: "holds 600 QPS within 50 ms p99"), the dispatcher's CPU per query (one
core over it is the rate at which the dispatcher alone would fill a core: a capacity that host noise moves far less
than a tail) and the client's send-lag p99: a rate where the client lagged more than 5 ms or used more than 85% of a
core is marked CLIENT-LIMITED, since there the load generator, not the dispatcher, set the figure. A code whose p99
passes twice the hold bound has collapsed and climbs no further.

``--before DIR`` runs a second checkout's dispatcher (another revision) in the same run, rate by rate alternated
with this one, so the host's noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from harness.live.phase import PhasePlan, client_frame
from harness.live.replay import replay_plan
from harness.measure.analyzer import percentile_ms
from servers import models, v2
from servers.dispatcher import DispatcherConfig
from servers.emulated import EmulatedConfig, EmulatedHostConfig
from servers.pool_file import Instance, PoolFile
from servers.process import spawn_server, stop_processes
from traces.generate import generate_trace

TYPE = "fixed"
MODEL = "rm2"
BATCH = 10
CLIENT_LAG_MS = 5.0
CLIENT_CPU_PCT = 85.0


def write_profile(path: Path, service_ms: float) -> Path:
    """A profile whose every batch takes ``service_ms`` (the emulated instances sleep that long)."""
    pd.DataFrame(
        {
            "instance_type": TYPE,
            "model": MODEL,
            "batch_size": [10, 1000],
            "sample": 0,
            "compute_ms": service_ms,
            "load_ms": 0.0,
        }
    ).to_parquet(path)
    return path


async def send_all(plans: list[PhasePlan], payloads: v2.PayloadCache) -> list:
    """Replay several plans at once (one per target); their records, concatenated."""
    out = await asyncio.gather(*(replay_plan(p, payloads=payloads, timeout_s=30.0) for p in plans))
    return [r for recs in out for r in recs]


def phase(targets: list[str], rate: float, seconds: float, seed: int, payloads: v2.PayloadCache) -> dict:
    """Send one Poisson phase round robin over ``targets``; latency percentiles, errors, send lag and client CPU."""
    trace = generate_trace(
        max(1, int(rate * seconds)), rate, batch_mix=f"fixed:{BATCH}", rng=np.random.default_rng(seed)
    )
    start = time.time() + 0.3
    whole = PhasePlan.from_trace(trace, url=targets[0], start_epoch=start, id_prefix=f"r{rate:g}-")
    m = len(targets)
    plans = [
        replace(
            whole,
            url=url,
            request_ids=whole.request_ids[k::m],
            offsets_s=whole.offsets_s[k::m],
            batch_sizes=whole.batch_sizes[k::m],
        )
        for k, url in enumerate(targets)
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    records = asyncio.run(send_all(plans, payloads))
    busy = time.perf_counter() - wall0
    frame = client_frame(records)
    ok = frame["http_status"] == 200
    lat = frame["latency_ms"].to_numpy()
    return {
        "n": len(frame),
        "errors": int((~ok).sum()),
        "p50_ms": percentile_ms(lat, 50),
        "p99_ms": percentile_ms(lat, 99),
        "lag_p99_ms": percentile_ms(frame["send_lag_ms"].to_numpy(), 99),
        "client_cpu_pct": 100.0 * (time.process_time() - cpu0) / busy,
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> int:
    """Climb the rate ladder per (revision, policy, pool size); print one row per rate and the ceilings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="kairos,fcfs")
    ap.add_argument("--instances", default="8", help="pool sizes, comma list (default 8)")
    ap.add_argument("--service-ms", type=float, default=0.2, help="each instance's fixed service time (default 0.2)")
    ap.add_argument("--rates", default="100,200,300,400,600,800,1000,1200,1500,2000", help="QPS ladder")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per phase (default 10)")
    ap.add_argument("--overhead-ms", type=float, default=2.0, help="p99 overhead bound of the ceiling (default 2)")
    ap.add_argument("--hold-p99-ms", type=float, default=50.0, help="p99 bound of the 'holds' column (default 50)")
    ap.add_argument("--binary", action="store_true", help="binary tensors instead of JSON")
    ap.add_argument("--before", type=Path, help="another checkout whose dispatcher runs beside this one")
    ap.add_argument("--rounds", type=int, default=3, help="phases per rate and code; medians are shown (default 3)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    roots: list[tuple[str, Path | None]] = [("now", None)]
    if args.before is not None:
        roots.insert(0, ("before", args.before.resolve()))
    tmp = Path(tempfile.mkdtemp(prefix="kairos-ceiling-"))
    profile = write_profile(tmp / "fixed.parquet", args.service_ms)
    spec = models.get_spec(MODEL)
    payloads = v2.PayloadCache(lambda b: models.make_inputs(spec, b, np.random.default_rng(b)), binary=args.binary)
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{args.service_ms:g} ms service, batch {BATCH}, {'binary' if args.binary else 'JSON'} requests, "
        f"{args.seconds:g} s Poisson phases; ceiling: p99 overhead <= {args.overhead_ms:g} ms and no errors"
    )
    head = (
        f"{'code':>6} {'policy':>8} {'N':>4} {'qps':>6} {'direct p99':>10} {'proxy p50':>9} {'proxy p99':>9} "
        f"{'ovh p99':>8} {'err':>5} {'us/q':>6} {'lag p99':>7} {'client cpu':>10}  verdict"
    )
    ceilings: dict[tuple[str, str, int], dict] = {}
    for n in [int(x) for x in args.instances.split(",")]:
        host = spawn_server(
            "emulated_host",
            EmulatedHostConfig(tuple(EmulatedConfig(TYPE, MODEL, profile, seed=i) for i in range(n))),
            name="instances",
        )
        urls = host.urls
        pool = PoolFile(MODEL, tuple(Instance(f"{TYPE}-{i}", u, TYPE, 0.0) for i, u in enumerate(urls)))
        print(head)
        try:
            for policy in args.policies.split(","):
                disps = {}
                for label, root in roots:
                    cfg = DispatcherConfig(pool=pool, policy=policy, qos_ms=100.0, profiles=profile)
                    disps[label] = spawn_server("dispatcher", cfg, name=f"dispatcher-{label}", code_root=root)
                found = {
                    label: {"ceiling": 0.0, "held": 0.0, "us": [], "us_at": {}, "open": True, "unbroken": True}
                    for label in disps
                }
                try:
                    for i, rate in enumerate(rates):
                        live = [label for label in disps if found[label]["open"]]
                        if not live:
                            break
                        rounds: dict[str, list[dict]] = {label: [] for label in live}
                        for k in range(args.rounds):  # direct and each code alternate, so noise hits all alike
                            seed = args.seed + 100 * i + k
                            direct = phase(urls, rate, args.seconds, seed, payloads)
                            for label in live:
                                disp = disps[label]
                                c0 = cpu_s(disp.pid)
                                r = phase([disp.url], rate, args.seconds, seed, payloads)
                                r["us_per_q"] = 1e6 * (cpu_s(disp.pid) - c0) / r["n"]
                                r["direct_p99_ms"] = direct["p99_ms"]
                                r["ovh_ms"] = r["p99_ms"] - direct["p99_ms"]
                                rounds[label].append(r)
                        for label in live:
                            rs = rounds[label]
                            med = {key: float(np.median([r[key] for r in rs])) for key in rs[0]}
                            errors = sum(r["errors"] for r in rs)
                            f = found[label]
                            passed = errors == 0 and med["ovh_ms"] <= args.overhead_ms
                            held = errors == 0 and med["p99_ms"] <= args.hold_p99_ms
                            f["unbroken"] = f["unbroken"] and passed
                            if f["unbroken"]:
                                f["ceiling"] = rate  # this rate and every one below passed
                            if held:
                                f["held"] = rate
                                f["us"].append(med["us_per_q"])
                            if errors == 0:
                                f["us_at"][rate] = med["us_per_q"]
                            # Collapsed (p99 past twice the hold bound, or errors): higher rates only take longer.
                            f["open"] = errors == 0 and med["p99_ms"] <= 2 * args.hold_p99_ms
                            limited = med["lag_p99_ms"] > CLIENT_LAG_MS or med["client_cpu_pct"] > CLIENT_CPU_PCT
                            verdict = ("pass" if passed else "FAIL") + (" CLIENT-LIMITED" if limited else "")
                            verdict += f"; holds {args.hold_p99_ms:g} ms" if held else ""
                            verdict += "" if f["open"] else "; collapsed"
                            print(
                                f"{label:>6} {policy:>8} {n:>4} {rate:6g} {med['direct_p99_ms']:10.2f} "
                                f"{med['p50_ms']:9.2f} {med['p99_ms']:9.2f} {med['ovh_ms']:8.2f} {errors:5d} "
                                f"{med['us_per_q']:6.0f} {med['lag_p99_ms']:7.2f} {med['client_cpu_pct']:9.0f}%  "
                                f"{verdict}",
                                flush=True,
                            )
                finally:
                    stop_processes(list(disps.values()))
                for label in disps:
                    ceilings[(label, policy, n)] = found[label]
        finally:
            stop_processes([host])
    print(
        f"\nper code: ceiling (median p99 overhead <= {args.overhead_ms:g} ms at it and every rate below), the highest "
        f"rate held within {args.hold_p99_ms:g} ms p99, and the dispatcher's CPU per query where it held (one core "
        f"over it: the rate at which the dispatcher alone would fill a core; against --before, the ratio of the two "
        f"codes' CPU per query at each rate both served without errors)"
    )
    for (label, policy, n), f in ceilings.items():
        us = float(np.median(f["us"])) if f["us"] else float("nan")
        ratio = ""
        before = ceilings.get(("before", policy, n))
        if label == "now" and before is not None:
            # Rate by rate: CPU per query falls as the rate rises (each loop wakeup serves more), so medians over
            # the rates each code held would favour the code that held more of the high ones.
            both = sorted(set(before["us_at"]) & set(f["us_at"]))
            ratios = [before["us_at"][r] / f["us_at"][r] for r in both]
            span = (
                f"x{min(ratios):.2f}..x{max(ratios):.2f} at {', '.join(f'{r:g}' for r in both)} qps" if ratios else ""
            )
            ratio = (
                f"  (before: ceiling {before['ceiling']:g}, holds {before['held']:g}; CPU capacity rate by rate: "
                f"median x{np.median(ratios) if ratios else float('nan'):.2f}, {span})"
            )
        print(
            f"  {label:>6} {policy:>8} N={n:<4} ceiling {f['ceiling']:6g} qps, holds {f['held']:6g} qps, "
            f"{us:5.0f} us/query -> {1e6 / us:6.0f} qps a core{ratio}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
