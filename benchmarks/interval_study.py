"""What the live run's interval on allowable throughput covers: its whole procedure, rerun with the simulator as the pool.

Each of --runs runs is ``LiveRun.sweep`` exactly as a live run does it (the search from the simulator's answer, the
replicates at both ends of the final bracket, ``chase_bounds``, ``settle``), with every phase simulated on its own
service-time draws instead of replayed: the run-to-run noise a live rerun of the same command has, without the host's.
It prints:

- each run's allowable figure and 95% interval (``<=``/``>=``: censored at the edge of the rates tried);
- how often one run's figure lies inside another run's interval (issue 10's check on three default runs);
- how wide the intervals are, and how many bounds are censored;
- the long-run crossing: the rate where --windows windows pooled meet the QoS (at most 1% of queries over it: p99
  at the QoS), what a run many times longer would find, and how many intervals hold it. On a bursty trace
  10-second phases see the tail in bursts, so a phase's p99 spreads widely across windows; the search's figure, and
  the interval around it, describe this command's phases rather than that long run.

Run: python benchmarks/interval_study.py [--runs 20] [--windows 40] [--dispatcher kairos] [--steps 1]
[--replications 1] [--pool g4dn.xlarge=2,r5n.large=9]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import time
from dataclasses import replace

import numpy as np

from harness.core.paper import PAPER_CONFIG
from harness.core.pool_config import PoolConfig
from harness.live.options import LiveOptions
from harness.live.run import LiveRun, interval_text
from harness.measure.analyzer import after_warmup, latency_ms, summarize
from harness.measure.interval import crossing_qps
from harness.sim.simulator import SimConfig, simulate


def simulated_run(options: LiveOptions, pool: str, spec: str, noise_seed: int):
    """One run of the live procedure with simulated phases; (allowable figure, interval, phases run)."""
    run = LiveRun(options, log=lambda _: None)
    run.pool_config = PoolConfig.parse(pool)
    phases = itertools.count()

    def run_phase(spec: str, rate_qps: float, replicate: int = 0):
        trace = run.phase_trace(rate_qps, replicate)
        config = SimConfig(run.pool_config, run.qos_ms, seed=noise_seed * 1000 + next(phases))
        records = simulate(trace, spec, run.profile, config)
        summary = summarize(records, run.qos_ms, options.rules)
        run.keep_latencies(spec, rate_qps, records, summary)
        return summary

    run.run_phase = run_phase
    start, _ = run.simulated_allowable(spec)
    found, iv = run.sweep(spec, start)
    return found.allowable_qps, iv, next(phases)


def long_run_crossing(options: LiveOptions, pool: str, spec: str, rates: np.ndarray, windows: int) -> float:
    """Where ``windows`` windows of the trace pooled meet the QoS: the rate where their share of queries over it
    crosses the percentile's allowance (1%: p99 at the QoS), log-interpolated between ``rates``."""
    run = LiveRun(options, log=lambda _: None)
    run.pool_config = PoolConfig.parse(pool)
    shares = []
    for rate in rates:
        lat = []
        for k in range(windows):
            records = simulate(
                run.phase_trace(rate, k), spec, run.profile, SimConfig(run.pool_config, run.qos_ms, seed=10_000 + k)
            )
            lat.append(latency_ms(after_warmup(records, options.rules)))
        shares.append(float(np.mean(np.concatenate(lat) > run.qos_ms)))
    crossing, censored = crossing_qps(rates, np.array(shares), options.rules.max_violation_rate)
    return math.nan if censored else crossing


def holds(iv, qps: float) -> bool:
    """Whether ``qps`` lies in the interval; an unknown bound (``?``) excludes nothing on its side."""
    return not qps < iv.low_qps and not qps > iv.high_qps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--windows", type=int, default=40, help="windows pooled for the long-run crossing (0: skip)")
    parser.add_argument("--dispatcher", default="kairos")
    parser.add_argument("--pool", default=PAPER_CONFIG)
    parser.add_argument("--steps", type=int, default=LiveOptions.interval_steps, help="--interval-steps")
    parser.add_argument("--replications", type=int, default=LiveOptions.replications)
    parser.add_argument("--phase-seconds", type=float, default=LiveOptions.phase_seconds)
    args = parser.parse_args()
    options = replace(
        LiveOptions(dispatchers=(args.dispatcher,)),
        interval_steps=args.steps,
        replications=args.replications,
        phase_seconds=args.phase_seconds,
    )
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs; {args.dispatcher} on {args.pool}, the default trace; "
        f"--replications {args.replications} --interval-steps {args.steps} --phase-seconds {args.phase_seconds:g}; "
        f"{args.runs} runs"
    )
    t0 = time.perf_counter()
    results = []
    for k in range(args.runs):
        figure, iv, phases = simulated_run(options, args.pool, args.dispatcher, k + 1)
        results.append((figure, iv))
        print(f"run {k:2d}: {figure:6.1f} qps [{interval_text(iv)}], {phases} phases")
    figures = np.array([f for f, _ in results])
    inside = [
        holds(iv, figures[i])
        for i, (j, (_, iv)) in itertools.product(range(len(results)), enumerate(results))
        if i != j
    ]
    half = [max(f - iv.low_qps, iv.high_qps - f) / f for f, iv in results]  # NaN where a bound is unknown
    print(f"figures: {', '.join(f'{v:.1f} x{n}' for v, n in zip(*np.unique(figures.round(1), return_counts=True)))}")
    print(f"one run's figure inside another run's interval: {np.mean(inside):.0%} of {len(inside)} pairs")
    unknown = np.mean([math.isnan(iv.low_qps) or math.isnan(iv.high_qps) for _, iv in results])
    print(
        f"half-width (wider side / figure, of runs with both bounds): median {np.nanmedian(half):.1%}, "
        f"max {np.nanmax(half):.1%}; a bound unknown in {unknown:.0%} of runs; censored bounds: "
        f"lower {np.mean([iv.low_censored for _, iv in results]):.0%}, "
        f"upper {np.mean([iv.high_censored for _, iv in results]):.0%} of runs"
    )
    if args.windows:
        rates = np.linspace(figures.min() * 0.8, figures.max() * 1.25, 25)  # ~2% steps: the crossing barely moves
        truth = long_run_crossing(options, args.pool, args.dispatcher, rates, args.windows)
        covered = np.mean([holds(iv, truth) for _, iv in results])
        print(
            f"long-run crossing ({args.windows} windows pooled): {truth:.1f} qps; inside {covered:.0%} of the intervals"
        )
    print(f"# {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
