"""How often a phase's p99 interval holds the true p99, and how wide it is: the analyzer's interval (the sectioned
share over each latency, inverted) beside the symmetric one it replaced (p99 +- t x sd of the sections' p99s).

Phases are independent exponential latencies (true p99 = 10 ln 100 ms), and slices of two long runs (true p99: that of
the whole run) where latencies come in busy periods as they do near the allowable rate: an M/M/1 queue at 80%
utilization, and calm stretches broken by bursts of slow queries, as on a bursty trace. Then the phases the README's
first command runs, simulated: kairos on the paper pool at 94.4 and 108.6 qps, each phase another window of the
default trace with its own service-time draws (true p99: that of all those phases pooled).

Run: python benchmarks/p99_interval_coverage.py [--phases 300] [--harness-phases 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.live.options import LiveOptions
from harness.live.run import LiveRun
from harness.measure.analyzer import after_warmup, latency_ms, percentile_ci_ms, percentile_ms, section_parts
from harness.sim.simulator import SimConfig, simulate

Interval = Callable[[np.ndarray, float], tuple[float, float]]


def symmetric_ci_ms(lat_ms: np.ndarray, p: float, batches: int = 20, level: float = 0.95) -> tuple[float, float]:
    """The interval before: the phase's percentile +- t * sd(the sections' percentiles) / sqrt(k), floored at 0."""
    per = np.array([percentile_ms(part, p) for part in section_parts(lat_ms, batches)])
    k, overall = len(per), percentile_ms(lat_ms, p)
    half = stats.t.ppf(0.5 + level / 2, k - 1) * per.std(ddof=1) / math.sqrt(k)
    return max(0.0, overall - half), overall + half


METHODS: dict[str, Interval] = {"share inverted": percentile_ci_ms, "symmetric": symmetric_ci_ms}


@dataclass(frozen=True)
class Coverage:
    """One method on one kind of phase: the share of phases whose interval holds the true p99, and its shape."""

    case: str
    method: str
    phases: int
    covered: float
    median_width_ms: float
    median_up_over_down: float  # (high - p99) / (p99 - low): 1 is symmetric
    outside: float  # share of intervals reaching past the phase's fastest or slowest query


def mm1_latency_ms(n: int, utilization: float, rng: np.random.Generator, service_ms: float = 10.0) -> np.ndarray:
    """Sojourn times of ``n`` queries through one FIFO server (Lindley's recursion), exponential gaps and service."""
    gaps = rng.exponential(service_ms / utilization, n)
    service = rng.exponential(service_ms, n)
    wait = np.zeros(n)
    for i in range(1, n):
        wait[i] = max(0.0, wait[i - 1] + service[i - 1] - gaps[i])
    return wait + service


def on_off_latency_ms(
    n: int, rng: np.random.Generator, burst_queries: float = 20.0, calm_queries: float = 1000.0
) -> np.ndarray:
    """Latencies of a bursty trace: calm stretches (exponential, mean 20 ms) broken by bursts of slow queries
    (300-700 ms), both of geometric length, so that about 2% of queries fall in a burst."""
    out, calm = [], True
    while sum(len(o) for o in out) < n:
        length = int(rng.geometric(1.0 / (calm_queries if calm else burst_queries)))
        out.append(rng.exponential(20.0, length) if calm else rng.uniform(300.0, 700.0, length))
        calm = not calm
    return np.concatenate(out)[:n]


def default_run_phases(rate_qps: float, phases: int, spec: str = "kairos") -> list[np.ndarray]:
    """Measured latencies (after warm-up, arrival order) of ``phases`` simulated phases of the default live run at
    ``rate_qps``: replicate k is the window and seed a live replicate k would run."""
    options = LiveOptions(dispatchers=(spec,))
    run = LiveRun(options, log=lambda _: None)
    run.pool_config = PoolConfig.parse(PAPER_CONFIG)
    out = []
    for k in range(phases):
        config = SimConfig(run.pool_config, run.qos_ms, seed=20_000 + k)
        out.append(
            latency_ms(after_warmup(simulate(run.phase_trace(rate_qps, k), spec, run.profile, config), options.rules))
        )
    return out


def measure(case: str, phases: list[np.ndarray], true_p99_ms: float) -> list[Coverage]:
    """Each method's coverage of ``true_p99_ms`` over ``phases``."""
    rows = []
    for name, method in METHODS.items():
        bounds = np.array([method(lat, 99.0) for lat in phases])
        p99 = np.array([percentile_ms(lat, 99.0) for lat in phases])
        fastest, slowest = np.array([lat.min() for lat in phases]), np.array([lat.max() for lat in phases])
        lo, hi = bounds[:, 0], bounds[:, 1]
        down = np.maximum(p99 - lo, 1e-9)
        rows.append(
            Coverage(
                case=case,
                method=name,
                phases=len(phases),
                covered=float(np.mean((lo <= true_p99_ms) & (true_p99_ms <= hi))),
                median_width_ms=float(np.median(hi - lo)),
                median_up_over_down=float(np.median((hi - p99) / down)),
                outside=float(np.mean((lo < fastest) | (hi > slowest))),
            )
        )
    return rows


def study(phases: int, rng: np.random.Generator, harness_phases: int = 0) -> list[Coverage]:
    """The synthetic kinds of phase, ``phases`` of each, and ``harness_phases`` of the default run at two rates."""
    rows = []
    for n in (2000, 20000):
        lat = [rng.exponential(10.0, n) for _ in range(phases)]
        rows += measure(f"exponential, {n} queries", lat, 10.0 * math.log(100.0))
    n = 4000
    run = mm1_latency_ms(n * phases + 10_000, 0.8, rng)[10_000:]  # the first 10,000 leave the empty start behind
    slices = [run[i * n : (i + 1) * n] for i in range(phases)]
    rows += measure(f"M/M/1 at 80%, {n} queries", slices, percentile_ms(run, 99.0))
    run = on_off_latency_ms(n * phases, rng)
    slices = [run[i * n : (i + 1) * n] for i in range(phases)]
    rows += measure(f"bursts, {n} queries", slices, percentile_ms(run, 99.0))
    for rate in (94.4, 108.6) if harness_phases else ():
        lat = default_run_phases(rate, harness_phases)
        rows += measure(f"default run, {rate:g} qps", lat, percentile_ms(np.concatenate(lat), 99.0))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print one line per kind of phase and method."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phases", type=int, default=300)
    ap.add_argument("--harness-phases", type=int, default=100, help="simulated phases of the default run a rate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"{'phases':<28} {'method':<15} {'covered':>8} {'width ms':>9} {'up/down':>8} {'outside':>8}")
    for r in study(args.phases, np.random.default_rng(args.seed), args.harness_phases):
        print(
            f"{r.case:<28} {r.method:<15} {100 * r.covered:>7.1f}% {r.median_width_ms:>9.2f} "
            f"{r.median_up_over_down:>8.2f} {100 * r.outside:>7.1f}%"
        )


if __name__ == "__main__":
    main()
