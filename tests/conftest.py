"""Shared pytest fixtures: the shipped profile, tiny hand-made profiles, the paper's pool."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.core.pool_config import PoolConfig
from harness.core.profiles import Profile


def make_profile_frame(service_ms: dict[tuple[str, str], dict[int, list[float]]]) -> pd.DataFrame:
    """A profile frame from {(type, model): {batch: [samples_ms]}} (all time in compute_ms)."""
    rows = []
    for (itype, model), buckets in service_ms.items():
        for batch, samples in buckets.items():
            for k, s in enumerate(samples):
                rows.append((itype, model, batch, k, float(s), 0.0))
    return pd.DataFrame(rows, columns=["instance_type", "model", "batch_size", "sample", "compute_ms", "load_ms"])


def sectioned_shares(*misses: int, qos_ms: float = 350.0) -> np.ndarray:
    """A phase's latencies in arrival order: one section of 100 queries per entry, that many of them over ``qos_ms``."""
    return np.concatenate([[0.2 * qos_ms] * (100 - m) + [3.0 * qos_ms] * m for m in misses])


@pytest.fixture(scope="session")
def shipped_profile() -> Profile:
    """The shipped AWS recommendation-model profiles."""
    return Profile.load()


@pytest.fixture
def fixed_profile() -> Profile:
    """Two types with deterministic service: 'fast' 10 ms per 100 batch, 'slow' 40 ms per 100 batch."""
    frame = make_profile_frame(
        {
            ("fast", "m"): {100: [10.0], 200: [20.0], 1000: [100.0]},
            ("slow", "m"): {100: [40.0], 200: [80.0], 1000: [400.0]},
        }
    )
    return Profile.from_frame(frame, source="fixed", drop_max=False)


@pytest.fixture
def fast_slow_profile() -> Profile:
    """Deterministic service for model 'm': 'fast' 10 ms at batch 100, 20 ms at 200; 'slow' 40 / 80 ms."""
    return Profile.from_frame(
        make_profile_frame(
            {
                ("fast", "m"): {100: [10.0], 200: [20.0]},
                ("slow", "m"): {100: [40.0], 200: [80.0]},
            }
        ),
        drop_max=False,
    )


@pytest.fixture
def paper_pool() -> PoolConfig:
    """The Kairos paper's rm2 pool: 2 GPU + 9 r5n.large."""
    return PoolConfig.parse("g4dn.xlarge=2,r5n.large=9")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator."""
    return np.random.default_rng(12345)
