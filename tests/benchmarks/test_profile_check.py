"""The profile check benchmark against a real emulated instance process."""

from __future__ import annotations

import math

import pytest

from benchmarks import profile_check
from servers.emulated import EmulatedConfig
from servers.process import spawn_server, stop_processes


@pytest.mark.timeout(120)
def test_both_transport_prices_give_one_error_per_batch_size():
    proc = spawn_server("emulated", EmulatedConfig("r5n.large", "rm2"), name="emulated")
    try:
        for idle in (False, True):
            errs = profile_check.errors_pct(proc.url, "r5n.large", "rm2", (10, 100), 4, idle, 0)
            # Four samples of the profile's spread: the mean lands near it, far from a unit or bucket mix-up.
            assert len(errs) == 2 and all(math.isfinite(e) and -60.0 < e < 60.0 for e in errs), errs
    finally:
        stop_processes([proc])
