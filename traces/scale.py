"""Rescaling a trace's time axis: hit a target mean rate, or speed up / slow down by a factor; burstiness measures.

Only the offsets from the first arrival are multiplied, so every gap shrinks or grows by the same factor
and the burst structure (the relative gaps, hence their coefficient of variation) is kept. Other ways to reach a
rate (thinning, superposing copies) are in ``traces.resample``; ``traces.scalers`` names them all.
"""

from __future__ import annotations

import math

import numpy as np

from harness.core.errors import InputError
from traces.schema import Trace


def gap_cv(arrival_s: np.ndarray) -> float:
    """Burstiness: coefficient of variation of the inter-arrival gaps (1 for Poisson); NaN under 2 gaps."""
    gaps_s = np.diff(np.asarray(arrival_s, dtype=float))
    if len(gaps_s) < 2 or gaps_s.mean() == 0:
        return float("nan")
    return float(gaps_s.std() / gaps_s.mean())


def count_dispersion(arrival_s: np.ndarray, window_s: float) -> float:
    """Burstiness at a time scale: variance / mean of arrivals per ``window_s`` window (1 for Poisson); NaN under 2.

    Windows start at the first arrival; the last, partial one is left out (it would read as a quiet spell). Unlike
    the gap CV, this index is kept when independent copies of a trace are superposed (variances and means add).
    """
    window_s = _positive(window_s, "window_s", "a positive number of seconds")
    arrival_s = np.asarray(arrival_s, dtype=float)
    if len(arrival_s) == 0:
        return float("nan")
    full = int((arrival_s[-1] - arrival_s[0]) // window_s)
    if full < 2:
        return float("nan")
    counts = np.bincount(((arrival_s - arrival_s[0]) // window_s).astype(np.int64), minlength=full + 1)[:full]
    mean = counts.mean()
    return float(counts.var(ddof=1) / mean) if mean > 0 else float("nan")


def _positive(value, field: str, what: str) -> float:
    """``value`` as a finite float > 0, else an InputError about ``field``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{value!r}: must be {what}", field=field)
    return number


def _stretch(trace: Trace, old_span_s: float, new_span_s: float, note: str) -> Trace:
    """The trace with its arrival offsets multiplied by ``new_span_s / old_span_s``."""
    t0 = trace.arrival_s[0]
    # Normalise first so the last offset is exactly new_span_s (x / x == 1 in IEEE arithmetic).
    offsets_s = (trace.arrival_s - t0) / old_span_s * new_span_s
    return Trace(t0 + offsets_s, trace.batch_size, trace.model, dict(trace.extra), f"{trace.source} ({note})")


def scale_to_rate(trace: Trace, rate_qps: float, note: str | None = None) -> Trace:
    """The trace compressed or stretched in time so its mean rate, (n - 1) / span, is ``rate_qps`` (``note``: the
    source's new bracket, default "scaled to R qps")."""
    rate_qps = _positive(rate_qps, "rate", "a positive number of queries per second")
    if trace.duration_s <= 0:
        raise InputError(
            f"{trace.source}: cannot scale to {rate_qps:g} qps: the trace spans zero seconds "
            f"({len(trace)} queries, all at the same instant)"
        )
    n = len(trace)
    scaled = _stretch(trace, trace.duration_s, (n - 1) / rate_qps, note or f"scaled to {rate_qps:g} qps")
    # (n - 1) / span can miss the target by an ulp; nudge the last arrival by a few ulps to the closest
    # float that makes Trace.mean_rate_qps equal rate_qps (exactly, where one exists).
    first, last = scaled.arrival_s[0], scaled.arrival_s[-1]
    candidates = [last]
    for direction in (np.inf, -np.inf):
        x = last
        for _ in range(4):
            x = np.nextafter(x, direction)
            candidates.append(x)
    candidates = [c for c in candidates if c >= scaled.arrival_s[-2]]
    best = min(candidates, key=lambda c: (abs((n - 1) / (c - first) - rate_qps), abs(c - last)))
    scaled.arrival_s[-1] = best
    return scaled


def speedup(trace: Trace, factor: float) -> Trace:
    """The trace played ``factor`` times faster (``factor`` > 1 raises the rate, < 1 lowers it)."""
    factor = _positive(factor, "speedup", "a positive number")
    if trace.duration_s <= 0:  # nothing to stretch; a single query or a single instant stays as it is
        return trace
    return _stretch(trace, trace.duration_s, trace.duration_s / factor, f"sped up x{factor:g}")
