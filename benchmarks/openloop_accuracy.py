"""Open-loop accuracy of the Locust harness: send lag and achieved arrival rate at a high offered load.

Replays a Poisson trace at --rate QPS (default 300) through `locust -f harness/kairos_load.py` against a fast emulated
pool (a user-supplied profile with a fixed 1 ms service time, 4 instances) with one dispatcher, then reads the run's
queries.parquet. Targets (issue 4): p99 send lag <= 5 ms and achieved arrival rate within 2% of the trace's.

Run: python benchmarks/openloop_accuracy.py [--rate 300] [--seconds 20] [--processes 1]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness.measure.analyzer import percentile_ms
from traces.generate import generate_trace
from traces.io import write_trace

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Run Locust once and print send-lag percentiles and the achieved arrival rate."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kairos-openloop-"))
    profile = tmp / "fast1.parquet"
    pd.DataFrame(
        {
            "instance_type": "fast1",
            "model": "rm2",
            "batch_size": [10, 1000],
            "sample": 0,
            "compute_ms": 1.0,
            "load_ms": 0.0,
        }
    ).to_parquet(profile)
    n = int(args.rate * args.seconds)
    trace = write_trace(
        generate_trace(n, args.rate, batch_mix="fixed:10", rng=np.random.default_rng(3)), tmp / "trace.parquet"
    )
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "harness" / "kairos_load.py"),
        "--headless",
        "--only-summary",
        "--trace",
        str(trace),
        "--profiles",
        str(profile),
        "--pool-config",
        "fast1=4",
        "--dispatchers",
        "fcfs",
        "--qos-ms",
        "100",
        "--rate",
        str(args.rate),
        "--phase-seconds",
        str(args.seconds),
        "--phase-queries",
        "0",
        "--report-dir",
        str(tmp / "reports"),
    ]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    subprocess.run(cmd, check=True, capture_output=True)
    (run,) = (tmp / "reports").iterdir()
    q = pd.read_parquet(run / "queries.parquet")
    sent = np.sort(q["sent_s"].dropna().to_numpy())
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    lag = q["send_lag_ms"].dropna().to_numpy()
    s = pd.read_parquet(run / "summary.parquet").iloc[0]
    print(
        f"# {platform.machine()}, {platform.python_version()}, {len(q)} queries at {args.rate:g} qps, "
        f"{args.processes} load-generating process(es)"
    )
    print(
        f"send lag ms: p50 {percentile_ms(lag, 50):.2f}  p99 {percentile_ms(lag, 99):.2f}  "
        f"max {lag.max():.2f}   (target p99 <= 5 ms)"
    )
    print(
        f"arrival rate: trace {args.rate:.1f} qps, achieved {achieved:.1f} qps "
        f"({100 * (achieved / args.rate - 1):+.2f}%, target within 2%)"
    )
    print(
        f"load generator CPU: {s['loadgen_cpu_percent']:.0f}% of a core; p99 latency {s['p99_ms']:.1f} ms; "
        f"run folder {run}"
    )


if __name__ == "__main__":
    main()
