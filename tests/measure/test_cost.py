"""Dollars per million queries served within QoS."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.measure.analyzer import ValidityRules, summarize, summary_row
from harness.measure.cost import usd_per_million


def test_usd_per_million_from_price_and_goodput():
    # $3.60/h serving 100 queries/s within QoS: 360,000 queries an hour -> $10 per million
    assert usd_per_million(3.6, 100.0) == pytest.approx(10.0)
    assert usd_per_million(2.393, 110.07) == pytest.approx(2.393 / (110.07 * 3600) * 1e6)
    for cost, goodput in ((None, 100.0), (math.nan, 100.0), (3.6, 0.0), (3.6, math.nan)):
        assert math.isnan(usd_per_million(cost, goodput)), (cost, goodput)


def test_every_summary_row_carries_its_cost_per_million_queries_in_qos():
    # 1,000 queries 10 ms apart, the last 100 over a 50 ms QoS: goodput 900 queries over ~10 s
    n = 1000
    arrival = np.arange(n) * 0.01
    lat_s = np.where(np.arange(n) >= 900, 0.2, 0.02)
    frame = pd.DataFrame({"arrival_s": arrival, "finish_s": arrival + lat_s, "status": ["ok"] * n})
    summary = summarize(frame, 50.0, ValidityRules(min_queries=1, min_duration_s=0.0, warmup_fraction=0.0))
    row = summary_row("kairos", 0, summary, 100.0, 3.6)
    assert row["usd_per_million_in_qos"] == pytest.approx(3.6 / (summary.goodput_qps * 3600) * 1e6)
    assert summary.goodput_qps < summary.achieved_qps  # queries over QoS are served but not counted
    assert math.isnan(summary_row("kairos", 0, summary, 100.0, None)["usd_per_million_in_qos"])
