"""What serving costs: dollars per million queries answered within the QoS, from a pool's price and its goodput."""

from __future__ import annotations

import math


def usd_per_million(cost_per_h: float | None, goodput_qps: float) -> float:
    """Dollars per million queries served within QoS at ``goodput_qps`` on a pool costing ``cost_per_h`` (NaN when
    either is unknown, or nothing was served within QoS)."""
    if cost_per_h is None or not math.isfinite(cost_per_h) or not math.isfinite(goodput_qps) or goodput_qps <= 0:
        return math.nan
    return cost_per_h / (goodput_qps * 3600.0) * 1e6
