"""One allocation run: bounds for the whole space, the requested methods, their picks measured alike.

Every method answers with one configuration. Methods that search online (homogeneous, ribbon, anneal, oracle)
measure candidates with the light ``search`` settings through one shared cache, each counting the distinct
configurations it asked for (its exploration cost). Then every method's pick is re-measured with the
``final`` settings (more queries, tighter bracket), so the reported ``allowable_qps`` of all methods are
comparable: simulated, under the same policy (``kairos`` by default), trace and seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.allocate.bound import KairosStats, kairos_bounds, kairos_stats, rank_order, top_rows
from harness.allocate.evaluate import EvalContext, EvalSettings, Evaluator, default_workers, stderr_progress
from harness.allocate.fluid import fluid_bounds, fluid_model
from harness.allocate.job import AllocateJob
from harness.allocate.methods import METHODS as METHOD_CLASSES
from harness.allocate.methods import MethodContext, Pick
from harness.allocate.queueing import queue_estimates, queue_model
from harness.allocate.space import AllocationProblem, BatchMix, config_costs, enumerate_configs
from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.measure.cost import usd_per_million
from traces.schema import Trace

METHODS = tuple(METHOD_CLASSES)  # the names, in the order the CLI lists them


def parse_methods(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of METHODS, in the order given (duplicates dropped)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        return METHODS
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise InputError(
            f"{text!r}: unknown method {bad[0] if bad else ''!r} (choose from {', '.join(METHODS)}, or all)",
            field="method",
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class MethodResult:
    """One method's answer: its configuration, bounds, measured allowable qps and exploration cost."""

    method: str
    counts: tuple[int, ...]
    config: dict
    cost_per_h: float
    kairos_bound_qps: float
    fluid_bound_qps: float
    allowable_qps: float
    search_allowable_qps: float
    evaluated: int
    evaluated_to_best: int | None
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def usd_per_million(self) -> float:
        """Dollars per million queries served within QoS at the measured allowable throughput (NaN unmeasured)."""
        return usd_per_million(self.cost_per_h, self.allowable_qps)

    def as_json(self) -> dict:
        """The ``--json`` line: method, config, cost_per_h, allowable_qps, usd_per_million, evaluated, the rest."""
        out = {
            "method": self.method,
            "config": self.config,
            "cost_per_h": round(self.cost_per_h, 6),
            "allowable_qps": _num(self.allowable_qps),
            "usd_per_million": _num(self.usd_per_million),
            "evaluated": self.evaluated,
            "kairos_bound_qps": _num(self.kairos_bound_qps),
            "fluid_bound_qps": _num(self.fluid_bound_qps),
            "search_allowable_qps": _num(self.search_allowable_qps),
            "evaluated_to_best": self.evaluated_to_best,
            "seconds": round(self.seconds, 3),
        }
        out.update({k: (_num(v) if isinstance(v, float) else v) for k, v in self.extra.items()})
        return out


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


@dataclass(frozen=True, eq=False)
class AllocationResult:
    """The ranked table of every configuration, each method's answer, and the Kairos bound's inputs."""

    problem: AllocationProblem
    table: pd.DataFrame
    methods: tuple[MethodResult, ...]
    stats: KairosStats
    n_configs: int

    def method(self, name: str) -> MethodResult:
        """The result of one method."""
        for m in self.methods:
            if m.method == name:
                return m
        raise KeyError(name)


def make_context(problem: AllocationProblem, profile: Profile, trace: Trace, settings: EvalSettings) -> EvalContext:
    """An EvalContext on the first ``settings.queries`` of ``trace``, its fluid limit from those queries' mix."""
    head = trace.head(min(settings.queries, len(trace)))
    return EvalContext(
        problem, profile, head, fluid_model(profile, problem, BatchMix.from_batch_sizes(head.batch_size)), settings
    )


def run_allocation(job: AllocateJob, log: Callable[[str], None] | None = None) -> AllocationResult:
    """Compute the bounds, run the requested methods, measure their picks; see the module docstring."""
    problem, profile = job.problem, job.profile
    say = log or (lambda line: None)
    mix = BatchMix.from_batch_sizes(job.trace.batch_size)
    stats = kairos_stats(profile, problem, mix, job.threshold)
    configs = enumerate_configs(problem)
    costs = config_costs(problem, configs)
    t0 = time.perf_counter()
    kb = kairos_bounds(stats, configs)
    fm = fluid_model(profile, problem, mix)
    fb = np.maximum(fluid_bounds(fm, configs), 0.0)
    # The queueing-aware estimate costs dozens of LPs per configuration: only the rows the pick scores get one.
    qe = np.full(len(configs), np.nan)
    prep_s: dict[str, float] = {}  # time a method's own inputs took here, counted in its seconds
    if "kairos" in job.methods and job.pick.by == "queue":
        t_qe = time.perf_counter()
        top = top_rows(kb, costs, job.pick)
        qe[top] = queue_estimates(queue_model(profile, problem, mix, fm), configs[top])
        prep_s["kairos"] = time.perf_counter() - t_qe
    say(f"bounds of {len(configs)} configurations in {time.perf_counter() - t0:.1f} s")
    k_order = rank_order(kb, costs)
    f_order = rank_order(fb, costs)
    k_rank = np.empty(len(configs), dtype=np.int64)
    k_rank[k_order] = np.arange(1, len(configs) + 1)
    f_rank = np.empty(len(configs), dtype=np.int64)
    f_rank[f_order] = np.arange(1, len(configs) + 1)
    index = {tuple(int(c) for c in row): i for i, row in enumerate(configs)}
    workers = default_workers() if job.workers is None else job.workers

    search = Evaluator(make_context(problem, profile, job.trace, job.search), job.executor)
    final = Evaluator(make_context(problem, profile, job.trace, job.final), job.executor)
    ctx = MethodContext(
        problem, profile, configs, costs, kb, fb, k_order, f_order, k_rank, f_rank, qe, search, workers, job, log
    )
    chosen = {name: METHOD_CLASSES[name]() for name in sorted(job.methods, key=lambda n: METHOD_CLASSES[n].run_order)}
    picks: dict[str, Pick] = {}
    seconds: dict[str, float] = {}
    for name, method in chosen.items():
        t = time.perf_counter()
        picks[name] = pick = method.pick(ctx)
        seconds[name] = time.perf_counter() - t + prep_s.get(name, 0.0)
        if method.log_search:
            say(f"{name}: {problem.label(pick.counts)} after {pick.evaluated} evaluations ({seconds[name]:.0f} s)")

    if job.measure:
        wanted = list(dict.fromkeys(c for pick in picks.values() for c in pick.candidates))
        say(f"measuring {len(wanted)} pick(s) at {job.final.queries} queries/point, tolerance {job.final.rel_tol:g}")
        final.evaluate_many(wanted, workers, stderr_progress("final") if log else None)
    measured = (lambda c: final.cache[c].allowable_qps) if job.measure else (lambda c: math.nan)

    results = []
    for name in job.methods:
        pick = picks[name]
        counts, extra = chosen[name].finish(ctx, pick, measured)
        i = index.get(counts)
        search_qps = search.cache[counts].allowable_qps if counts in search.cache else pick.search_qps
        results.append(
            MethodResult(
                name,
                counts,
                problem.as_mapping(counts),
                problem.cost_per_h(counts),
                float(kb[i]) if i is not None else float(kairos_bounds(stats, np.array([counts]))[0]),
                float(fb[i]) if i is not None else float(np.maximum(fluid_bounds(fm, np.array([counts])), 0)[0]),
                measured(counts),
                search_qps,
                pick.evaluated,
                pick.evaluated_to_best,
                seconds[name],
                extra,
            )
        )

    table = ranked_table(problem, configs, costs, kb, fb, k_rank, f_rank, search, final, results, stats, fm, qe)
    return AllocationResult(problem, table, tuple(results), stats, len(configs))


def ranked_table(
    problem, configs, costs, kb, fb, k_rank, f_rank, search: Evaluator, final: Evaluator, results, stats, fm, qe
) -> pd.DataFrame:
    """One row per configuration (plus evaluated ones outside the space), ranked by the Kairos bound."""
    rows = [tuple(int(c) for c in r) for r in configs]
    extra_rows = [c for c in list(search.cache) + list(final.cache) + [m.counts for m in results] if c not in set(rows)]
    extra_rows = list(dict.fromkeys(extra_rows))
    all_rows = rows + extra_rows
    arr = np.array(all_rows, dtype=np.int64).reshape(-1, len(problem.types))
    n_extra = len(extra_rows)
    picked: dict[tuple[int, ...], list[str]] = {}
    for m in results:
        picked.setdefault(m.counts, []).append(m.method)
    frame = pd.DataFrame({"config": [problem.label(c) for c in all_rows]})
    for j, t in enumerate(problem.types):
        frame[f"n_{t}"] = arr[:, j]
    frame["cost_per_h"] = np.concatenate([costs, config_costs(problem, arr[len(rows) :])]) if n_extra else costs
    if n_extra:
        frame["kairos_bound_qps"] = np.concatenate([kb, kairos_bounds(stats, arr[len(rows) :])])
        frame["fluid_bound_qps"] = np.concatenate([fb, np.maximum(fluid_bounds(fm, arr[len(rows) :]), 0.0)])
    else:
        frame["kairos_bound_qps"] = kb
        frame["fluid_bound_qps"] = fb
    frame["queue_estimate_qps"] = np.concatenate([qe, np.full(n_extra, np.nan)])
    frame["kairos_rank"] = np.concatenate([k_rank, np.zeros(n_extra, dtype=np.int64)])
    frame["fluid_rank"] = np.concatenate([f_rank, np.zeros(n_extra, dtype=np.int64)])
    frame["in_space"] = [True] * len(rows) + [False] * n_extra
    frame["allowable_qps"] = [search.cache[c].allowable_qps if c in search.cache else math.nan for c in all_rows]
    frame["final_allowable_qps"] = [final.cache[c].allowable_qps if c in final.cache else math.nan for c in all_rows]
    # At the best figure measured: the final fidelity where there is one, else the search's.
    best_qps = frame["final_allowable_qps"].fillna(frame["allowable_qps"])
    frame["usd_per_million"] = [usd_per_million(c, q) for c, q in zip(frame["cost_per_h"], best_qps)]
    frame["picked_by"] = [",".join(picked.get(c, [])) for c in all_rows]
    order = np.lexsort(
        (frame["cost_per_h"].to_numpy(), -frame["kairos_bound_qps"].to_numpy(), ~frame["in_space"].to_numpy())
    )
    frame = frame.iloc[order].reset_index(drop=True)
    frame.attrs.update(
        {
            "model": problem.model,
            "qos_ms": problem.qos_ms,
            "budget_per_h": problem.budget_per_h,
            "base_type": problem.base_type,
            "types": list(problem.types),
        }
    )
    return frame
