"""The fluid LP bound of a configuration: builds the LP's data from a profile and a batch mix (the LP itself is
``harness.core.fluid_lp``, shared with the dispatch policies that route by its split)."""

from __future__ import annotations

import numpy as np

from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.fluid_lp import FluidModel, fluid_bound, fluid_solve
from harness.core.profiles import Profile

__all__ = ["FluidModel", "fluid_bound", "fluid_bounds", "fluid_model", "fluid_solve"]


def fluid_model(profile: Profile, problem: AllocationProblem, mix: BatchMix) -> FluidModel:
    """Per (type, batch size in the mix): mean service time and the share of samples within QoS."""
    n_t, n_s = len(problem.types), len(mix.sizes)
    mean_ms = np.full((n_t, n_s), np.inf)
    ok = np.zeros((n_t, n_s))
    for i, t in enumerate(problem.types):
        tab = profile.table(t, problem.model)
        idx = np.searchsorted(tab.buckets, mix.sizes, side="left")
        for j, k in enumerate(idx):
            if k < len(tab.buckets):
                samples = tab.samples_ms[k]
                mean_ms[i, j] = float(samples.mean())
                ok[i, j] = float(np.count_nonzero(samples <= problem.qos_ms)) / len(samples)
    return FluidModel(problem.types, mix.probs, mean_ms, ok, 1.0 - problem.percentile / 100.0)


def fluid_bounds(model: FluidModel, configs: np.ndarray) -> np.ndarray:
    """``fluid_bound`` of every configuration row."""
    return np.array([fluid_bound(model, row) for row in np.asarray(configs)], dtype=float)
