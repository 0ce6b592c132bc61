"""Spells of slow service inside a phase, read from merged records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.service_spells import MIN_QUERIES, phase_spells


def test_the_worst_window_and_the_whole_phase_against_the_profile(fixed_profile):
    # fixed: 10 ms at batch 100 on 'fast'. Phase 0: 40 queries 50 ms apart, those starting in 1.0-1.5 s served in
    # 25 ms (a spell), the rest as profiled; phase 1: as profiled, but a lone slow query in a window of its own.
    start_s = np.arange(40) * 0.05
    seen = np.where((start_s >= 1.0) & (start_s < 1.5), 25.0, 10.0)
    phase0 = pd.DataFrame({"phase": 0, "start_s": start_s, "service_ms": seen})
    phase1 = pd.DataFrame(
        {"phase": 1, "start_s": [*np.arange(MIN_QUERIES) * 0.05, 5.0], "service_ms": [10.0] * 5 + [90.0]}
    )
    queries = pd.concat([phase0, phase1]).assign(status="ok", instance_type="fast", batch_size=100)
    failed = queries.iloc[:1].assign(status="failed", service_ms=500.0)  # no service time: left out
    spell, steady = phase_spells(pd.concat([queries, failed]), fixed_profile, "m", window_s=0.5)
    assert spell.phase == 0 and spell.windows == 4
    assert spell.worst_ratio == pytest.approx(2.5) and spell.worst_at_s == pytest.approx(1.0)
    assert spell.ratio == pytest.approx((30 * 10.0 + 10 * 25.0) / 400.0)
    # The lone slow query counts in the whole phase, but its window has too few queries to judge the host's speed
    assert steady.windows == 1 and steady.worst_ratio == pytest.approx(1.0) and steady.worst_at_s == 0.0
    assert steady.ratio == pytest.approx(140.0 / 60.0)
