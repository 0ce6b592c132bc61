"""Allocation methods, registered by name: each answers with one configuration from what ``MethodContext`` holds.

``pick`` chooses (searching online through the shared ``search`` Evaluator where it needs simulations);
``finish`` may revise the answer once every method's candidates have been measured with the final settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from harness.allocate.anneal import anneal_search
from harness.allocate.bound import pick_candidates, pick_medoid
from harness.allocate.evaluate import Evaluator, stderr_progress
from harness.allocate.homogeneous import best_homogeneous, budget_scaled
from harness.allocate.job import AllocateJob
from harness.allocate.melange import MelangeSettings, melange_allocate
from harness.allocate.oracle import run_oracle
from harness.allocate.ribbon import ribbon_search
from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.errors import InputError
from harness.core.profiles import Profile

# The pruned oracle stops once the best allowable rate found exceeds every remaining fluid bound by this share: the
# search's own bracket tolerance, so a configuration whose light search landed a little above its bound still counts.
PRUNE_SLACK = 0.05

Counts = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class MethodContext:
    """What every method gets: the space with its costs, both bounds and their ranks, the search evaluator, the job."""

    problem: AllocationProblem
    profile: Profile
    configs: np.ndarray
    costs: np.ndarray
    kb: np.ndarray  # Kairos bound (qps) per configuration
    fb: np.ndarray  # fluid bound (qps) per configuration
    k_order: np.ndarray  # rows by Kairos bound, best first
    f_order: np.ndarray  # rows by fluid bound, best first
    k_rank: np.ndarray  # 1-based rank of each row by Kairos bound
    f_rank: np.ndarray
    qe: np.ndarray  # queueing-aware estimate (qps); NaN outside the rows the Kairos pick scores
    search: Evaluator
    workers: int
    job: AllocateJob
    log: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        """Log one progress line (nothing without a log)."""
        if self.log:
            self.log(line)


@dataclass(frozen=True)
class Pick:
    """A method's answer before the final measurement: its configuration, search qps, exploration cost, and the
    candidates to measure with the final settings."""

    counts: Counts
    search_qps: float
    evaluated: int
    evaluated_to_best: int | None
    candidates: tuple[Counts, ...]
    extra: dict = field(default_factory=dict)


class Method(Protocol):
    """An allocation method: ``pick`` answers with one configuration; ``finish`` may revise it once measured."""

    name: ClassVar[str]
    run_order: ClassVar[int]  # online searches run first so later ones (and the oracle's refinement) reuse the cache
    log_search: ClassVar[bool]  # say what the search found and after how many evaluations

    def pick(self, ctx: MethodContext) -> Pick:
        """Choose a configuration."""

    def finish(self, ctx: MethodContext, pick: Pick, measured: Callable[[Counts], float]) -> tuple[Counts, dict]:
        """The answer and its extra fields, given ``measured`` (final allowable qps; NaN when not measuring)."""


class BaseMethod:
    """Convenience base: no search log, and the pick stands as it is after the measurement."""

    name: ClassVar[str] = "base"
    run_order: ClassVar[int] = 0
    log_search: ClassVar[bool] = False

    def finish(self, ctx: MethodContext, pick: Pick, measured: Callable[[Counts], float]) -> tuple[Counts, dict]:
        """The pick unchanged."""
        return pick.counts, dict(pick.extra)


def _row(configs: np.ndarray, i) -> Counts:
    return tuple(int(c) for c in configs[i])


class Oracle(BaseMethod):
    """Simulate every configuration; the final measurement refines the best ``oracle_refine`` of them."""

    name = "oracle"
    run_order = 0

    def pick(self, ctx):
        """The best configuration by search qps; its runners-up are candidates too."""
        where = f"{ctx.workers} worker(s)" if ctx.job.executor.is_local else f"on {ctx.job.executor.label}"
        ctx.say(f"oracle: {len(ctx.configs)} configurations, {where}, {ctx.job.search.queries} queries/point")
        res = run_oracle(ctx.search, ctx.configs, ctx.workers, stderr_progress("oracle") if ctx.log else None)
        top = res.top(max(1, ctx.job.oracle_refine))
        return Pick(
            _row(ctx.configs, res.best_index),
            float(res.allowable_qps[res.best_index]),
            len(ctx.configs),
            None,
            tuple(_row(ctx.configs, i) for i in top),
            {"oracle_seconds": round(res.seconds, 1), "workers": res.workers, "executor": res.executor},
        )

    def finish(self, ctx, pick, measured):
        """The best of the refined candidates by final qps (the cheaper on ties) when measured."""
        if not ctx.job.measure:
            return super().finish(ctx, pick, measured)
        counts = max(pick.candidates, key=lambda c: (measured(c), -ctx.problem.cost_per_h(c)))
        return counts, {**pick.extra, "refined": len(pick.candidates)}


class PrunedOracle(Oracle):
    """The oracle's answer without simulating the whole space: configurations in fluid-bound order, in waves as wide
    as the workers, until the best allowable rate found passes the next configuration's bound by ``PRUNE_SLACK``.

    Exact wherever the fluid limit bounds the allowable rate (the best policy here reached 94% of it), with the
    slack for the search's own resolution; on catalogues of 10^5-10^6 configurations it simulates the few whose bound
    could still beat the best, and fans those out (local processes or ``--executor``) like the oracle."""

    name = "oracle_pruned"

    def pick(self, ctx):
        """The best configuration by search qps among those the bounds could not rule out."""
        order, bounds = ctx.f_order, ctx.fb
        wave = max(2 * ctx.workers, 8)
        ctx.say(f"oracle_pruned: {len(order)} configurations in fluid-bound order, waves of {wave}")
        t0 = time.perf_counter()
        seen: list[tuple[int, float]] = []
        best_i, best = int(order[0]), -1.0
        k = 0
        while k < len(order) and not (best > 0 and bounds[order[k]] * (1.0 + PRUNE_SLACK) <= best):
            chunk = order[k : k + wave]
            for i, e in zip(chunk.tolist(), ctx.search.evaluate_many(ctx.configs[chunk], ctx.workers)):
                seen.append((i, e.allowable_qps))
                if e.allowable_qps > best:
                    best_i, best = i, e.allowable_qps
            k += len(chunk)
        ranked = sorted(seen, key=lambda t: (-t[1], int(ctx.configs[t[0]].sum())))
        top = [i for i, _ in ranked[: max(1, ctx.job.oracle_refine)]]
        ctx.say(f"oracle_pruned: simulated {k} of {len(order)}; the rest have fluid bounds below the best found")
        return Pick(
            _row(ctx.configs, best_i),
            float(best),
            k,
            None,
            tuple(_row(ctx.configs, i) for i in top),
            {"oracle_seconds": round(time.perf_counter() - t0, 1), "pruned": len(order) - k},
        )


class Homogeneous(BaseMethod):
    """The best single-type pool by budget-scaled search qps."""

    name = "homogeneous"
    run_order = 1
    log_search = True

    def pick(self, ctx):
        """Simulate one pool per type."""
        view = ctx.search.view()
        results = best_homogeneous(ctx.problem, view)
        if not results:
            raise InputError("homogeneous: no single instance type fits the budget")
        best = results[0]
        return Pick(
            best.counts,
            best.allowable_qps,
            view.evaluated,
            None,
            (best.counts,),
            {"per_type": {ctx.problem.label(r.counts): round(r.budget_scaled_qps, 3) for r in results}},
        )

    def finish(self, ctx, pick, measured):
        """Add the measured qps scaled to the whole budget."""
        counts, extra = super().finish(ctx, pick, measured)
        extra["budget_scaled_qps"] = budget_scaled(ctx.problem, counts, measured(counts))
        return counts, extra


class Ribbon(BaseMethod):
    """Bayesian-optimisation search (RIBBON), normalised by the best fluid bound."""

    name = "ribbon"
    run_order = 2
    log_search = True

    def pick(self, ctx):
        """Run the search."""
        view = ctx.search.view()
        res = ribbon_search(ctx.configs, view, float(ctx.fb.max()), ctx.job.ribbon)
        return Pick(res.counts, res.allowable_qps, view.evaluated, res.evaluated_to_best, (res.counts,))


class Anneal(BaseMethod):
    """Simulated-annealing search."""

    name = "anneal"
    run_order = 3
    log_search = True

    def pick(self, ctx):
        """Run the search."""
        view = ctx.search.view()
        res = anneal_search(ctx.configs, view, ctx.job.anneal)
        return Pick(res.counts, res.allowable_qps, view.evaluated, res.evaluated_to_best, (res.counts,))


class KairosPick(BaseMethod):
    """The medoid of the near-ties at the top of the Kairos ranking (``PickRule``), without simulating."""

    name = "kairos"
    run_order = 4

    def pick(self, ctx):
        """Pick by the rule; the top-1 by bound is measured too, for comparison."""
        rule = ctx.job.pick
        i = pick_medoid(ctx.configs, ctx.kb, ctx.costs, rule, ctx.qe)
        counts, top1 = _row(ctx.configs, i), _row(ctx.configs, ctx.k_order[0])
        return Pick(
            counts,
            math.nan,
            0,
            None,
            (counts, top1),
            {
                "top_k": rule.top_k,
                "within": rule.within,
                "pick_by": rule.by,
                "queue_estimate_qps": float(ctx.qe[i]),
                "candidates": len(pick_candidates(ctx.kb, ctx.costs, rule, ctx.qe)),
                "top1_config": ctx.problem.as_mapping(top1),
                "pick_rank": int(ctx.k_rank[i]),
            },
        )

    def finish(self, ctx, pick, measured):
        """Add the top-1's measured qps."""
        counts, extra = super().finish(ctx, pick, measured)
        extra["top1_allowable_qps"] = measured(pick.candidates[1])
        return counts, extra


class FluidPick(BaseMethod):
    """The top-1 by the fluid LP bound, without simulating."""

    name = "fluid"
    run_order = 5

    def pick(self, ctx):
        """The first row by fluid bound."""
        top1 = _row(ctx.configs, ctx.f_order[0])
        return Pick(top1, math.nan, 0, None, (top1,))


class Melange(BaseMethod):
    """Mélange's integer program over per-instance rates within QoS from simulated queues, without simulating any
    configuration (``harness/allocate/melange.py``)."""

    name = "melange"
    run_order = 6

    def pick(self, ctx):
        """Solve the program on the trace's batch mix, seeded like the searches."""
        settings = MelangeSettings(seed=ctx.job.search.seed)
        res = melange_allocate(ctx.profile, ctx.problem, BatchMix.from_batch_sizes(ctx.job.trace.batch_size), settings)
        counts = res.solution.counts
        ctx.say(
            f"melange: {ctx.problem.label(counts)}, model {res.solution.scale_qps:.1f} qps, {res.rounds} round(s): "
            f"queues {res.queue_seconds:.1f} s, programs {res.ilp_seconds:.1f} s"
        )
        return Pick(
            counts,
            math.nan,
            0,
            None,
            (counts,),
            {
                "model_qps": res.solution.scale_qps,
                "rounds": res.rounds,
                "buckets": len(res.rates.probs),
                "queue": settings.queue,
                "tail": settings.tail,
                "queue_seconds": round(res.queue_seconds, 3),
                "ilp_seconds": round(res.ilp_seconds, 3),
            },
        )


# In the order the CLI lists them.
METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (KairosPick, Homogeneous, FluidPick, Melange, Ribbon, Anneal, Oracle, PrunedOracle)
}
