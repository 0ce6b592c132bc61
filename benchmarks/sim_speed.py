"""Simulator speed: simulated queries per second per policy on the paper's 11-instance rm2 pool.

Targets (issue 2): >= 100,000 queries/s with fcfs and >= 15,000/s with kairos on this 2-core machine.
Run: python benchmarks/sim_speed.py [--queries 200000] [--rate 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile
from harness.sim.simulator import SimConfig, simulate
from traces.generate import generate_trace

TARGETS = {"fcfs": 100_000, "kairos": 15_000}


def main() -> None:
    """Print queries/s (best of --repeat) for each policy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=100.0, help="offered qps (100 ~ kairos' allowable on this pool)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--policies", default="fcfs,kairos,clockwork,deeprecsys,least_outstanding,least_expected_work")
    args = ap.parse_args()
    profile = Profile.load()
    config = SimConfig(PoolConfig.parse("g4dn.xlarge=2,r5n.large=9"), 350.0)
    trace = generate_trace(args.queries, args.rate, rng=np.random.default_rng(0))
    print(
        f"# {platform.processor() or platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {args.queries} queries at {args.rate:g} qps, 11 instances"
    )
    print(f"{'policy':<22} {'queries/s':>12} {'target':>10}")
    for policy in args.policies.split(","):
        best = 0.0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            simulate(trace, policy, profile, config)
            best = max(best, args.queries / (time.perf_counter() - t0))
        target = TARGETS.get(policy)
        mark = "" if target is None else (f"{target:>10,}" + ("  ok" if best >= target else "  BELOW"))
        print(f"{policy:<22} {best:12,.0f} {mark}")


if __name__ == "__main__":
    main()
