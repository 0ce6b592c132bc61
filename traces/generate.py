"""Synthetic traces: batch-size mixes and arrival processes, each drawn from a caller-seeded Generator.

Specs are short strings so the CLI, configs and reports can name them:
batch mixes ``kairos``, ``fixed:N``, ``uniform:A:B``, ``lognormal:MU:SIGMA``;
arrivals ``poisson``, ``gamma:K``, ``constant``, ``artifact``, ``mmpp:RATIO:MEAN_STATE_S``, ``diurnal:AMPLITUDE:PERIOD_S``.
"""

from __future__ import annotations

import math

import numpy as np

from harness.core.errors import InputError
from traces.schema import Trace

BATCH_MIXES = ("kairos", "fixed:N", "uniform:A:B", "lognormal:MU:SIGMA")
ARRIVALS = ("poisson", "gamma:K", "constant", "artifact", "mmpp:RATIO:MEAN_STATE_S", "diurnal:AMPLITUDE:PERIOD_S")


def _args(spec: str, field: str, n: int, usage: str) -> list[float]:
    parts = spec.split(":")[1:]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != n:
        raise InputError(f"{spec!r}: expected {usage}", field=field)
    return values


def kairos_mix(n: int, rng: np.random.Generator) -> np.ndarray:
    """The Kairos paper's batch mix: 8% U[1,99], 22% U[200,599], 5% U[600,999], 65% lognormal(5.1, 0.2)
    kept in [100,200] (else U[190,199]); every size rounded up to a multiple of 10."""
    u = rng.random(n)
    small = rng.integers(1, 100, n)
    medium = rng.integers(200, 600, n)
    large = rng.integers(600, 1000, n)
    body = rng.lognormal(5.1, 0.2, n)
    body = np.where((body >= 100) & (body <= 200), body, rng.integers(190, 200, n))
    b = np.where(u < 0.08, small, np.where(u < 0.30, medium, np.where(u < 0.35, large, body)))
    return (np.ceil(b / 10.0) * 10).astype(np.int64)


def batch_sizes(spec: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` batch sizes (ints >= 1) from a batch-mix spec."""
    kind = spec.split(":")[0]
    if kind == "kairos" and spec == "kairos":
        return kairos_mix(n, rng)
    if kind == "fixed":
        (size,) = _args(spec, "batch_mix", 1, "fixed:N with N >= 1")
        if size < 1 or size != int(size):
            raise InputError(f"{spec!r}: N must be an integer >= 1", field="batch_mix")
        return np.full(n, int(size), dtype=np.int64)
    if kind == "uniform":
        lo, hi = _args(spec, "batch_mix", 2, "uniform:A:B with 1 <= A <= B")
        if not 1 <= lo <= hi or lo != int(lo) or hi != int(hi):
            raise InputError(f"{spec!r}: expected integers 1 <= A <= B", field="batch_mix")
        return rng.integers(int(lo), int(hi) + 1, n).astype(np.int64)
    if kind == "lognormal":
        mu, sigma = _args(spec, "batch_mix", 2, "lognormal:MU:SIGMA with SIGMA >= 0")
        if sigma < 0:
            raise InputError(f"{spec!r}: SIGMA must be >= 0", field="batch_mix")
        return np.maximum(1, np.ceil(rng.lognormal(mu, sigma, n))).astype(np.int64)
    raise InputError(f"{spec!r}: unknown mix (choose from {', '.join(BATCH_MIXES)})", field="batch_mix")


def _time_change(
    n: int, rate_qps: float, grid_s: np.ndarray, intensity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Arrivals of a Poisson process with piecewise-constant ``intensity`` (relative, mean 1) on ``grid_s``."""
    cum = np.concatenate([[0.0], np.cumsum(intensity[:-1] * np.diff(grid_s))]) * rate_qps
    targets = np.cumsum(rng.exponential(1.0, n))
    if targets[-1] > cum[-1]:  # extend by repetition until the process covers n arrivals
        reps = int(math.ceil(targets[-1] / cum[-1]))
        span = grid_s[-1]
        grid_s = np.concatenate([grid_s[:-1] + k * span for k in range(reps)] + [[reps * span]])
        intensity = np.tile(intensity[:-1], reps)
        intensity = np.append(intensity, intensity[-1])
        cum = np.concatenate([[0.0], np.cumsum(intensity[:-1] * np.diff(grid_s))]) * rate_qps
    return np.interp(targets, cum, grid_s)


def arrival_times(spec: str, n: int, rate_qps: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` non-decreasing arrival times (s, first at 0) with mean rate ``rate_qps`` from an arrival spec."""
    if not rate_qps > 0 or not math.isfinite(rate_qps):
        raise InputError(f"{rate_qps!r}: must be a positive number of queries per second", field="rate")
    kind = spec.split(":")[0]
    if spec == "poisson":
        gaps = rng.exponential(1.0 / rate_qps, n)
    elif kind == "gamma":
        (k,) = _args(spec, "arrivals", 1, "gamma:K with K > 0 (K=1 is Poisson, K<1 burstier)")
        if k <= 0:
            raise InputError(f"{spec!r}: K must be > 0", field="arrivals")
        gaps = rng.gamma(k, 1.0 / (k * rate_qps), n)
    elif spec == "constant":
        gaps = np.full(n, 1.0 / rate_qps)
    elif spec == "artifact":
        # The Kairos artifact draws integer-millisecond gaps from a Poisson law with mean 1000/rate ms.
        gaps = rng.poisson(1000.0 / rate_qps, n) / 1000.0
    elif kind == "mmpp":
        ratio, mean_state_s = _args(spec, "arrivals", 2, "mmpp:RATIO:MEAN_STATE_S with RATIO >= 1")
        if ratio < 1 or mean_state_s <= 0:
            raise InputError(f"{spec!r}: need RATIO >= 1 and MEAN_STATE_S > 0", field="arrivals")
        # Two states with equal mean sojourn; high rate = RATIO x low rate; overall mean rate = rate_qps.
        n_states = max(2, int(4 * n / max(rate_qps * mean_state_s, 1e-9)) + 2)
        sojourn = rng.exponential(mean_state_s, n_states)
        levels = np.where(np.arange(n_states) % 2 == 0, 1.0, ratio) * (2.0 / (1.0 + ratio))
        grid = np.concatenate([[0.0], np.cumsum(sojourn)])
        times = _time_change(n, rate_qps, grid, np.append(levels, levels[-1]), rng)
    elif kind == "diurnal":
        amp, period_s = _args(spec, "arrivals", 2, "diurnal:AMPLITUDE:PERIOD_S with 0 <= AMPLITUDE < 1")
        if not 0 <= amp < 1 or period_s <= 0:
            raise InputError(f"{spec!r}: need 0 <= AMPLITUDE < 1 and PERIOD_S > 0", field="arrivals")
        grid = np.linspace(0.0, period_s, 2049)
        intensity = 1.0 + amp * np.sin(2 * np.pi * grid / period_s)
        times = _time_change(n, rate_qps, grid, intensity, rng)
    else:
        raise InputError(f"{spec!r}: unknown process (choose from {', '.join(ARRIVALS)})", field="arrivals")
    if kind not in ("mmpp", "diurnal"):
        times = np.cumsum(gaps)
    return times - times[0]  # every process starts at 0, as the schema and the docstring promise


def generate_trace(
    n_queries: int,
    rate_qps: float,
    *,
    arrivals: str = "poisson",
    batch_mix: str = "kairos",
    model: str = "rm2",
    rng: np.random.Generator,
) -> Trace:
    """A synthetic trace of ``n_queries`` for ``model``: arrivals first, then batch sizes, from ``rng``."""
    if n_queries < 1:
        raise InputError(f"{n_queries}: must be >= 1", field="queries")
    arr = arrival_times(arrivals, n_queries, rate_qps, rng)
    sizes = batch_sizes(batch_mix, n_queries, rng)
    return Trace(
        arr,
        sizes,
        np.full(n_queries, model, dtype=object),
        source=f"generated({arrivals}, {batch_mix}, {rate_qps:g} qps, n={n_queries})",
    )
