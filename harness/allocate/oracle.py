"""The exhaustive oracle: simulate every configuration of the space and keep the best.

Configurations are spread over worker processes (``concurrent.futures.ProcessPoolExecutor``, ``os.cpu_count()``
workers by default), or over a Dask cluster when the evaluator's executor names one, with progress on stderr. Its
exploration cost is the whole space. Because every evaluation uses a light search (few queries, a loose bracket),
the oracle then re-measures its ``refine`` best configurations at the final fidelity and keeps the best of those,
so a lucky draw at the light fidelity does not decide the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from harness.allocate.evaluate import Evaluation, Evaluator, default_workers


@dataclass(frozen=True)
class OracleResult:
    """Every configuration's light-fidelity evaluation, the index of the best, and the wall time."""

    evaluations: tuple[Evaluation, ...]
    best_index: int
    seconds: float
    workers: int  # local processes; with a Dask executor, the cluster's workers set the parallelism
    executor: str = "local"

    @property
    def allowable_qps(self) -> np.ndarray:
        """Light-fidelity allowable qps per configuration row."""
        return np.array([e.allowable_qps for e in self.evaluations])

    def top(self, k: int) -> list[int]:
        """Row indices of the ``k`` best, best first (fewer instances first among equals)."""
        qps = self.allowable_qps
        order = sorted(range(len(qps)), key=lambda i: (-qps[i], sum(self.evaluations[i].counts)))
        return order[:k]


def run_oracle(evaluator: Evaluator, configs: np.ndarray, workers: int | None = None, progress=None) -> OracleResult:
    """Evaluate every row of ``configs`` (in parallel, on ``evaluator.executor``) through ``evaluator``'s cache."""
    t0 = time.perf_counter()
    workers = default_workers() if workers is None else workers
    evaluations = evaluator.evaluate_many(configs, workers, progress)
    qps = [e.allowable_qps for e in evaluations]
    best = int(np.argmax(qps))
    return OracleResult(tuple(evaluations), best, time.perf_counter() - t0, workers, evaluator.executor.label)
