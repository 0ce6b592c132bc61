"""Shared pieces of the allocator tests."""

from __future__ import annotations

import numpy as np

from harness.allocate.evaluate import EvalSettings
from harness.allocate.run import make_context
from harness.allocate.space import make_problem
from harness.core.profiles import Profile
from tests.conftest import make_profile_frame
from traces.generate import generate_trace


def toy_problem(queries: int):
    """A GPU-like base and a CPU-like type; $1.2/h allows 1 GPU with 0..4 CPUs (5 configurations): the problem and
    its evaluation context over a ``queries``-long trace."""
    spread = np.array([0.9, 1.0, 1.1])
    buckets = range(10, 101, 10)
    profile = Profile.from_frame(
        make_profile_frame(
            {
                ("gpu", "toy"): {b: list((4 + 0.1 * b) * spread) for b in buckets},
                ("cpu", "toy"): {b: list((1 + 0.5 * b) * spread) for b in buckets},
            }
        ),
        drop_max=False,
    )
    problem = make_problem(profile, {"gpu": 1.0, "cpu": 0.05}, "toy", 40.0, 1.2, max_counts={"cpu": 4})
    trace = generate_trace(queries, 1.0, batch_mix="uniform:1:100", model="toy", rng=np.random.default_rng(5))
    return problem, make_context(problem, profile, trace, EvalSettings(queries=queries, rel_tol=0.1))
