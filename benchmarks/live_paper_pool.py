"""Live check: the paper's emulated pool behind the dispatcher, driven open-loop, versus the simulator.

Starts 11 emulated instances (rm2: 2 x g4dn.xlarge + 9 x r5n.large) and a dispatcher as real processes on loopback,
replays a Poisson trace of the Kairos batch mix at --rate QPS for --seconds with each policy in turn (same trace,
policy switched through the admin endpoint, drained between phases), and prints live p99 next to the simulator's
prediction for the same trace and profiles.

Run: python benchmarks/live_paper_pool.py [--rate 80] [--seconds 60] [--policies kairos,fcfs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.core.records import latency_ms
from harness.live.phase import client_frame
from harness.live.replay import replay
from harness.measure.analyzer import percentile_ms
from harness.sim.simulator import SimConfig, simulate
from servers.dispatcher import DispatcherConfig
from servers.pool import PoolSpec, start_pool
from servers.process import spawn_server, stop_processes
from traces.generate import generate_trace


def post(url: str, doc: dict | None = None) -> dict:
    """POST JSON (or nothing) and return the JSON answer."""
    data = json.dumps(doc).encode() if doc is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def main() -> None:
    """Run the phases and print live vs simulated p99."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=80.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--policies", default="kairos,fcfs")
    ap.add_argument("--qos-ms", type=float, default=350.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    trace = generate_trace(n, args.rate, rng=np.random.default_rng(args.seed))
    profile = Profile.load()
    tmp = Path(tempfile.mkdtemp(prefix="kairos-live-"))
    print(f"# {PAPER_CONFIG}, rm2, {n} queries Poisson at {args.rate:g} qps, QoS {args.qos_ms:g} ms; records in {tmp}")
    print(
        f"{'policy':<20} {'live p50':>9} {'live p99':>9} {'sim p99':>9} {'live viol%':>10} {'sim viol%':>9} "
        f"{'lag p99':>8} {'ok':>6}"
    )
    with start_pool(PoolSpec(PAPER_CONFIG, "rm2", seed=args.seed)) as pool:
        pool.write(tmp / "pool.json")
        disp = spawn_server(
            "dispatcher",
            DispatcherConfig(
                pool=pool.as_pool_file(), policy="fcfs", qos_ms=args.qos_ms, records_path=tmp / "dispatcher.parquet"
            ),
            name="dispatcher",
        )
        try:
            for policy in args.policies.split(","):
                post(f"{disp.url}/admin/policy", {"policy": policy})
                frame = client_frame(asyncio.run(replay(trace, disp.url, id_prefix=f"{policy}-")))
                post(f"{disp.url}/admin/drain?timeout_s=120")
                lat = np.where(frame["http_status"] == 200, frame["latency_ms"], np.inf)
                sim = latency_ms(
                    simulate(
                        trace, policy, profile, SimConfig(PoolConfig.parse(PAPER_CONFIG), args.qos_ms, seed=args.seed)
                    )
                )
                print(
                    f"{policy:<20} {percentile_ms(lat, 50):9.1f} {percentile_ms(lat, 99):9.1f} "
                    f"{percentile_ms(sim, 99):9.1f} {100 * np.mean(lat > args.qos_ms):10.2f} "
                    f"{100 * np.mean(sim > args.qos_ms):9.2f} {percentile_ms(frame['send_lag_ms'].to_numpy(), 99):8.2f} "
                    f"{int((frame['http_status'] == 200).sum()):>6}",
                    flush=True,
                )
        finally:
            stop_processes([disp])


if __name__ == "__main__":
    main()
