"""An interval on allowable throughput from replicated searches: the same search repeated with independent seeds.

Method: each of R searches (another seed for service times and for thinning/superposition, another window of the
trace where it is long enough) gives one allowable figure; the figures are independent draws of the same quantity,
so their mean has a Student-t 95% interval, ``mean +- t(0.975, R - 1) * sd / sqrt(R)``, cut at 0 (no rate is
negative). A search where no rate passed ("none") counts as 0: its allowable rate lies below the lowest rate tried,
and leaving it out would flatter the policy. One replicate has no interval (NaN bounds). This interval covers what
changes between replicates (trace window, scaling draws, service-time draws); the band crossing of
``harness.measure.interval`` covers one search's sampling error at its own rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

METHOD = "t-interval (95%) on the mean of R independent allowable searches (none counts as 0)"


@dataclass(frozen=True)
class ReplicatedAllowable:
    """The mean allowable rate of ``replicates`` searches and its interval (NaN bounds for a single search)."""

    mean_qps: float
    low_qps: float
    high_qps: float
    replicates: int
    none: int  # searches where no rate passed, counted as 0 qps
    level: float = 0.95
    method: str = METHOD

    @property
    def has_interval(self) -> bool:
        """True when there were at least two replicates to form an interval from."""
        return self.replicates >= 2


def replicated_allowable(allowable_qps, level: float = 0.95) -> ReplicatedAllowable:
    """Mean and t-interval of the allowable figures of independent searches (``<= 0`` or NaN: none, counted as 0)."""
    values = np.asarray(allowable_qps, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no replicates: need at least one allowable figure")
    if not 0.0 < level < 1.0:
        raise ValueError(f"{level!r}: the confidence level must lie in (0, 1)")
    if np.isinf(values).any():
        raise ValueError("an allowable figure is infinite")
    none = ~(values > 0)  # NaN too: a search that found no passing rate
    values = np.where(none, 0.0, values)
    mean = float(values.mean())
    if values.size == 1:
        return ReplicatedAllowable(mean, math.nan, math.nan, 1, int(none.sum()), level)
    half = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return ReplicatedAllowable(mean, max(0.0, mean - half), mean + half, int(values.size), int(none.sum()), level)


def intervals_overlap(a: ReplicatedAllowable, b: ReplicatedAllowable) -> bool:
    """True when the two intervals share a rate (the figures cannot be told apart at this level): a tie."""
    if not (a.has_interval and b.has_interval):
        raise ValueError("overlap needs an interval on both sides (two or more replicates each)")
    return a.low_qps <= b.high_qps and b.low_qps <= a.high_qps
