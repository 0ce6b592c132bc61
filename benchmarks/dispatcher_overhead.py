"""Dispatcher overhead: p99 through the dispatcher minus p99 straight to one emulated instance.

One emulated instance with a fixed 5 ms service time (a user-supplied profile written here), Poisson arrivals at
--rate QPS (batch 10). Direct and proxied phases alternate --rounds times on the same trace so machine noise hits
both alike; the figure is the median over rounds of p99(proxied) - p99(direct). Target (issue 3): <= 3 ms here.

Run: python benchmarks/dispatcher_overhead.py [--rate 100] [--seconds 20] [--rounds 3] [--prefetch-ms MS] [--loop L]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness.live.phase import client_frame
from harness.live.replay import replay
from harness.measure.analyzer import percentile_ms
from servers.dispatcher import DispatcherConfig
from servers.emulated import EmulatedConfig
from servers.pool_file import Instance, PoolFile
from servers.process import spawn_server, stop_processes
from servers.serving import LOOPS, loop_factory
from traces.generate import generate_trace


def main() -> None:
    """Print direct and proxied p50/p99 per round and the median overhead."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policy", default="kairos")
    ap.add_argument(
        "--prefetch-ms",
        type=float,
        default=None,
        help="the dispatcher's --prefetch-ms (default: its own default; 0 = send only to an idle "
        "instance, which then idles for every proxy round trip)",
    )
    ap.add_argument(
        "--loop",
        default="auto",
        choices=LOOPS,
        help="event loop of the dispatcher and this load generator (default auto; the emulated "
        "instance keeps its own default, asyncio, for exact sleeps)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kairos-overhead-"))
    profile = tmp / "fixed5.parquet"
    pd.DataFrame(
        {
            "instance_type": "fixed5",
            "model": "rm2",
            "batch_size": [10, 1000],
            "sample": 0,
            "compute_ms": 5.0,
            "load_ms": 0.0,
        }
    ).to_parquet(profile)
    trace = generate_trace(int(args.rate * args.seconds), args.rate, batch_mix="fixed:10", rng=np.random.default_rng(7))
    inst = spawn_server(
        "emulated", EmulatedConfig(instance_type="fixed5", model="rm2", profiles=profile), name="fixed5"
    )
    prefetch = {} if args.prefetch_ms is None else {"prefetch_ms": args.prefetch_ms}
    pool = PoolFile("rm2", (Instance("fixed5-0", inst.url, "fixed5", 0.0),))
    disp = spawn_server(
        "dispatcher",
        DispatcherConfig(pool=pool, policy=args.policy, qos_ms=100.0, profiles=profile, **prefetch),
        loop=args.loop,
        name="dispatcher",
    )
    print(
        f"# {platform.machine()}, {args.rate:g} qps Poisson, {len(trace)} queries per phase, fixed 5 ms service, "
        f"policy {args.policy}, dispatcher prefetch "
        f"{'default' if args.prefetch_ms is None else args.prefetch_ms} ms, "
        f"{args.loop} event loop"
    )
    print(
        f"{'round':>5} {'direct p50':>10} {'direct p99':>10} {'proxy p50':>10} {'proxy p99':>10} {'overhead p99':>12}"
    )
    overheads = []

    def run(coro):
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            return runner.run(coro)

    try:
        for r in range(args.rounds):
            direct = client_frame(run(replay(trace, inst.url)))["latency_ms"].to_numpy()
            proxied = client_frame(run(replay(trace, disp.url)))["latency_ms"].to_numpy()
            d99, p99 = percentile_ms(direct, 99), percentile_ms(proxied, 99)
            overheads.append(p99 - d99)
            print(
                f"{r:>5} {percentile_ms(direct, 50):10.2f} {d99:10.2f} {percentile_ms(proxied, 50):10.2f} "
                f"{p99:10.2f} {p99 - d99:12.2f}",
                flush=True,
            )
    finally:
        stop_processes([disp, inst])
    print(f"median p99 overhead: {np.median(overheads):.2f} ms (target <= 3 ms)")


if __name__ == "__main__":
    main()
