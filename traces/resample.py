"""Reaching a rate by choosing queries instead of moving them: thinning below a trace's own rate, superposing
time-shifted copies above it.

The trace is read as one period of a periodic arrival stream with period ``P = n / mean rate`` (n queries per
period, the trace's own mean rate, one mean gap across the wrap). ``copies`` copies of that stream are merged, the
first as recorded and each other one shifted by a random offset in [0, P) (a cyclic shift: what falls past the
period's end wraps to its start). A uniform random subset of the merged queries is kept, the first and the last
always (so the span stays the merged stream's), as many as the target rate needs; a uniform stretch of the time
axis by at most ``1 / (2 (m - 1))`` (m queries kept) then makes the mean rate, ``(m - 1) / span``, exact.

With one copy this is thinning: the queries kept are the trace's own, in order, at their own times (up to that
stretch); bursts keep their timing and lose queries. When more queries are asked for than one period holds at the
target rate, periods follow one another (the trace replayed end to end, each period thinned afresh).

Burstiness: superposing independent copies keeps the index of dispersion of counts per window
(``traces.scale.count_dispersion``: variances and means both add) while the gaps tend to a Poisson stream's (gap CV
towards 1), which is how aggregate traffic behaves as independent users are added; thinning with keep fraction p
moves the index towards Poisson's, to ``p (I - 1) + 1``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from harness.core.errors import InputError
from traces.scale import _positive, scale_to_rate
from traces.schema import Trace

# A fixed second word of the seed, so the scaling draws are not the simulator's service-time draws for the same seed.
_STREAM = 0x5CA1E
# Most merged queries one period may hold (memory for a few arrays of this length); beyond it, a clear error.
MAX_MERGED = 100_000_000


def _seed(seed) -> int:
    """``seed`` as a non-negative int, else an InputError about ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"{seed!r}: must be a non-negative integer", field="seed")
    return int(seed)


def _queries(queries) -> int | None:
    """``queries`` as None or an int >= 1, else an InputError about ``queries``."""
    if queries is None:
        return None
    if isinstance(queries, bool) or not isinstance(queries, numbers.Integral) or queries < 1:
        raise InputError(f"{queries!r}: must be an integer >= 1", field="queries")
    return int(queries)


def _spread(trace: Trace, rate_qps: float) -> float:
    """The trace's mean rate; an InputError when it has no span to thin or copy."""
    if trace.duration_s <= 0:
        raise InputError(
            f"{trace.source}: cannot scale to {rate_qps:g} qps: the trace spans zero seconds "
            f"({len(trace)} queries, all at the same instant)"
        )
    return trace.mean_rate_qps


def copies_for(trace: Trace, rate_qps: float) -> int:
    """How many copies of ``trace`` superposing needs for ``rate_qps``: 1 (thinning) up to the trace's own rate."""
    rate_qps = _positive(rate_qps, "rate", "a positive number of queries per second")
    # A relative slack of 1e-12 so a target equal to the trace's rate, computed another way, still needs one copy.
    return max(1, math.ceil(rate_qps / _spread(trace, rate_qps) * (1 - 1e-12)))


def resample(trace: Trace, rate_qps: float, copies: int, *, seed: int = 0, queries: int | None = None) -> Trace:
    """``copies`` copies of ``trace`` (all but the first shifted at random) merged and thinned to exactly ``rate_qps``.

    With ``queries``: the first that many queries, the trace's period repeated as often as that needs.
    """
    rate_qps = _positive(rate_qps, "rate", "a positive number of queries per second")
    seed, queries = _seed(seed), _queries(queries)
    mean_qps = _spread(trace, rate_qps)
    if isinstance(copies, bool) or not isinstance(copies, numbers.Integral) or copies < 1:
        raise InputError(f"{copies!r}: must be an integer >= 1", field="copies")
    n, k = len(trace), int(copies)
    if k * n > MAX_MERGED:
        raise InputError(
            f"{rate_qps:g} qps needs {k} copies of {trace.source} ({k * n:,} queries per period, more than "
            f"{MAX_MERGED:,}): use a lower rate or a shorter trace",
            field="rate",
        )
    if rate_qps > k * mean_qps * (1 + 1e-12):
        raise InputError(
            f"{rate_qps:g} qps: {k} cop{'y' if k == 1 else 'ies'} of a {mean_qps:g} qps trace cannot reach it",
            field="rate",
        )
    period_s = n / mean_qps
    rng = np.random.default_rng((seed, _STREAM))
    shifts_s = np.concatenate([[0.0], rng.uniform(0.0, period_s, k - 1)])
    offsets_s = trace.arrival_s - trace.arrival_s[0]
    # One period of the merged stream, copy-major, then in time order (stable: on a tie the earlier copy first).
    merged_s = np.remainder(offsets_s[None, :] + shifts_s[:, None], period_s).ravel()
    merged_s = np.minimum(merged_s, np.nextafter(period_s, 0.0))  # rounding must not put a query at the next period
    order = np.argsort(merged_s, kind="stable")
    period_times_s, source = merged_s[order], order % n
    per_period = k * n

    def kept_count(periods: int) -> int:
        span_s = (periods - 1) * period_s + period_times_s[-1] - period_times_s[0]
        return min(periods * per_period, int(round(float(rate_qps * span_s))) + 1)

    need = max(2, queries or 0)
    periods = max(1, math.ceil((need - 1) / (rate_qps * period_s)))
    while kept_count(periods) < need:
        periods += 1
    kept = kept_count(periods)
    population = periods * per_period
    if kept >= population:
        index = np.arange(population, dtype=np.int64)
    else:  # the first and the last always, the rest a uniform sample of the queries between them
        inner = rng.choice(population - 2, size=kept - 2, replace=False) + 1
        index = np.sort(np.concatenate([[0], inner, [population - 1]]).astype(np.int64))
    period, rank = np.divmod(index, per_period)
    how = f"thinned to {rate_qps:g} qps" if k == 1 else f"{k} copies superposed, thinned to {rate_qps:g} qps"
    if periods > 1:
        how += f", {periods} periods"
    # Times first, over every query kept (the exact rate is the whole stream's), with the source row standing in for
    # the columns: they are gathered for the queries returned only (a high rate can keep millions to return 50,000).
    rows = source[rank]
    arrival_s = trace.arrival_s[0] + period * period_s + period_times_s[rank]
    timed = scale_to_rate(Trace(arrival_s, rows, rows, {}, trace.source), rate_qps, note=how)
    if queries:
        timed = timed.head(queries)
    rows = timed.batch_size
    extra = {name: values[rows] for name, values in trace.extra.items()}
    if "request_id" in extra and (k > 1 or periods > 1):
        copy, period = order[rank[: len(rows)]] // n, period[: len(rows)]
        # Ids stay unique and traceable: "17" is the trace's query 17, "17.c2.r1" its third copy, second period.
        extra["request_id"] = np.array(
            [
                rid + (f".c{c}" if c else "") + (f".r{p}" if p else "")
                for rid, c, p in zip(extra["request_id"].tolist(), copy.tolist(), period.tolist())
            ],
            dtype=object,
        )
    return Trace(timed.arrival_s, trace.batch_size[rows], trace.model[rows], extra, timed.source)


def superpose(trace: Trace, rate_qps: float, *, seed: int = 0, queries: int | None = None) -> Trace:
    """``rate_qps`` from ceil(rate / the trace's rate) shifted copies of ``trace``, thinned to the exact rate."""
    return resample(trace, rate_qps, copies_for(trace, rate_qps), seed=seed, queries=queries)


def thin(trace: Trace, rate_qps: float, *, seed: int = 0, queries: int | None = None) -> Trace:
    """A random subset of ``trace``'s queries at their own times; above the trace's own rate, ``superpose``."""
    # Thinning cannot add queries. Refusing a rate above the trace's would stop every sweep that climbs past it, so
    # such a rate superposes copies instead (one copy thinned is exactly what thinning is, so the two meet there).
    return superpose(trace, rate_qps, seed=seed, queries=queries)


def replicate_start(trace_len: int, queries: int, seed: int, replicate: int) -> int:
    """Where replicate ``replicate`` starts in a trace of ``trace_len`` queries when it needs ``queries``: 0 for
    replicate 0 or a trace no longer than that, else a start drawn from ``(seed, replicate)``, so the live harness's
    and the simulator's replicates take the same windows."""
    if not replicate or trace_len <= queries:
        return 0
    return int(np.random.default_rng((seed, replicate)).integers(0, trace_len - queries + 1))
