"""What a fault cost: the queries that arrived while it was in force, against the rest of their phase."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.core.records import OK, latency_ms
from harness.measure.analyzer import percentile_ms


def fault_cost(queries: pd.DataFrame, start_s: float, end_s: float, qos_ms: float) -> dict:
    """Counts and p99 of the queries arriving in ``[start_s, end_s)`` (epoch s) and of the others, in one phase.

    A query that was not served counts as a QoS violation with infinite latency, as in the phase's own p99.
    """
    arrival = queries["arrival_s"].to_numpy(float)
    inside = (arrival >= start_s) & (arrival < (end_s if math.isfinite(end_s) else np.inf))
    lat = latency_ms(queries)
    status = queries["status"].to_numpy()

    def part(mask: np.ndarray) -> tuple[int, int, int, float]:
        n = int(mask.sum())
        return n, int((status[mask] != OK).sum()), int((lat[mask] > qos_ms).sum()), percentile_ms(lat[mask], 99)

    n_in, failed_in, viol_in, p99_in = part(inside)
    n_out, failed_out, viol_out, p99_out = part(~inside)
    return {
        "queries_in_window": n_in,
        "not_served_in_window": failed_in,
        "violations_in_window": viol_in,
        "p99_in_window_ms": p99_in,
        "queries_outside": n_out,
        "not_served_outside": failed_out,
        "violations_outside": viol_out,
        "p99_outside_ms": p99_out,
    }
