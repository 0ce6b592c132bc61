"""The ways to bring a trace to an offered rate, by name (``--scale``): a plain dict of small functions.

Each answers a different question about a recorded trace, so the choice is the user's:

- ``time``: the same arrival pattern on a faster or slower clock (``traces.scale.scale_to_rate``). Right for
  stationary or synthetic traces; on a bursty one, queries that arrive together stay together at any rate.
- ``thin``: fewer users of the same bursty service: a random subset of the queries at their own times.
- ``superpose``: more independent users: time-shifted copies of the trace merged, then thinned to the exact rate.

``thin`` and ``superpose`` are one construction (``traces.resample``): below the trace's own mean rate both thin,
above it both superpose, so a sweep may cross the trace's rate with either. ``applied_scale`` names the one a rate
gets. Every function takes ``(trace, rate_qps, *, seed, queries)``: ``seed`` seeds the random choices (``time`` has
none), ``queries`` cuts the result to its first that many queries (``thin``/``superpose`` replay the trace end to end
when it holds too few; ``time`` cannot add queries).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.core.errors import InputError
from traces.resample import _queries, _seed, copies_for, superpose, thin
from traces.scale import scale_to_rate
from traces.schema import Trace


def time_scale(trace: Trace, rate_qps: float, *, seed: int = 0, queries: int | None = None) -> Trace:
    """The time axis compressed or stretched to ``rate_qps``, cut to ``queries``; ``seed`` is unused."""
    _seed(seed)  # checked all the same, so a bad seed is an error whichever method runs
    queries = _queries(queries)
    scaled = scale_to_rate(trace, rate_qps)
    return scaled.head(queries) if queries else scaled


Scaler = Callable[..., Trace]  # (trace, rate_qps, *, seed=0, queries=None) -> Trace
SCALERS: dict[str, Scaler] = {"time": time_scale, "thin": thin, "superpose": superpose}
DEFAULT_SCALE = "time"


def check_scale(method: str) -> str:
    """``method`` when it names a scaler, else an InputError about ``scale`` listing them."""
    if method not in SCALERS:
        raise InputError(f"{method!r}: expected one of {', '.join(SCALERS)}", field="scale")
    return method


def scale_trace(
    trace: Trace, rate_qps: float, method: str = DEFAULT_SCALE, *, seed: int = 0, queries: int | None = None
) -> Trace:
    """``trace`` brought to the mean rate ``rate_qps`` by ``method`` (a key of ``SCALERS``)."""
    return SCALERS[check_scale(method)](trace, rate_qps, seed=seed, queries=queries)


def applied_scale(trace: Trace, rate_qps: float, method: str) -> str:
    """What ``method`` does at ``rate_qps``: ``time``, or ``thin`` up to the trace's own rate and ``superpose`` above."""
    if check_scale(method) == "time":
        return "time"
    return "thin" if copies_for(trace, rate_qps) == 1 else "superpose"
