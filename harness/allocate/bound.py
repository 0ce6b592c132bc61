"""Kairos' configuration ranking: a throughput upper bound per configuration, computed from profiles only.

As in the Kairos artifact (``kairos_resource_allocator.py``), from the latency profiles and the trace's batch mix:

* the base type (fastest at the largest batch; the GPU) serves the whole mix at ``base_qps`` per instance;
* each auxiliary type ``i`` meets QoS up to ``max_ok_batch_i`` (the batch just below the first one whose mean
  latency exceeds QoS, ``violating_batch_i``; ``threshold="p99"`` compares the 99th percentile of the profile
  samples instead of the mean); the queries up to it are its *small* queries, a fraction
  ``small_ratio_i`` of the mix that takes a share ``base_time_ratio_i`` of a base instance's busy time;
* the auxiliary instances present are pooled at the largest threshold among them (``agg``), each contributing
  its throughput on the queries up to that threshold, ``qps_at[i, agg]``.

With ``n_b`` base instances and pooled auxiliary capacity ``A = sum_i n_i qps_at[i, agg]``:
``Q_all = A / small`` is the rate at which the auxiliaries are saturated with small queries; a base instance
serving only large queries does ``base_qps (1 - small) / (1 - time)`` of them. If the large queries at ``Q_all``
exceed what the base instances can do, the base instances bound the system: ``n_b large_qps / (1 - small)``;
otherwise the base instances' spare time serves the mix too: ``Q_all + n_b base_qps (1 - usage)``.

The bound ignores queueing, so several configurations near the top are hard to tell apart. The paper picks
among the top-ranked configurations by their similarity to one another; ``PickRule`` makes that concrete: among
the ``top_k`` best ranks whose bound is within ``within`` of the best (the near-ties), the medoid (least total
Euclidean distance, in instance counts, to the others), ties broken by the better rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.allocate.space import AllocationProblem, BatchMix
from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.dispatch.latency_model import LatencyModel


@dataclass(frozen=True)
class AuxProfile:
    """What the bound needs of one auxiliary type (see the module docstring for the definitions)."""

    instance_type: str
    violating_batch: int | None
    max_ok_batch: int
    small_ratio: float
    base_time_ratio: float
    small_qps: float


@dataclass(frozen=True, eq=False)
class KairosStats:
    """Per-type inputs of the bound, aligned with ``types``; ``qps_at[i, j]``: type i on type j's small queries."""

    types: tuple[str, ...]
    base_index: int
    base_qps: float
    max_ok_batch: np.ndarray
    small_ratio: np.ndarray
    base_time_ratio: np.ndarray
    qps_at: np.ndarray
    tail: float

    def aux_profiles(self) -> list[AuxProfile]:
        """The auxiliary types' numbers, for reports."""
        out = []
        for i, t in enumerate(self.types):
            if i == self.base_index:
                continue
            ok = int(self.max_ok_batch[i])
            out.append(
                AuxProfile(
                    t,
                    None if ok < 0 else ok + 1,
                    ok,
                    float(self.small_ratio[i]),
                    float(self.base_time_ratio[i]),
                    float(self.qps_at[i, i]),
                )
            )
        return out


def first_violation(row_ms: np.ndarray, qos_ms: float) -> int:
    """Smallest batch size (index into a dense ``[batch]`` row, entry 0 unused) whose latency exceeds QoS; -1 if none."""
    bad = np.nonzero(row_ms[1:] > qos_ms)[0]
    return int(bad[0] + 1) if len(bad) else -1


def threshold_table(profile: Profile, problem: AllocationProblem, size: int, threshold: str) -> np.ndarray:
    """Dense ``[type, batch]`` latency compared with QoS: bucket means (``mean``) or a percentile (``p99``)."""
    if threshold == "mean":
        return LatencyModel(profile, list(problem.types), [problem.model]).table_ms(problem.model)
    q = float(threshold[1:])
    out = np.full((len(problem.types), size), np.inf)
    for i, t in enumerate(problem.types):
        tab = profile.table(t, problem.model)
        pct = np.array([np.percentile(s, q) for s in tab.samples_ms])
        idx = np.searchsorted(tab.buckets, np.arange(1, size), side="left")
        out[i, 1:] = np.where(idx < len(pct), pct[np.minimum(idx, len(pct) - 1)], np.inf)
    return out


def parse_threshold(text: str) -> str:
    """``mean`` or ``pNN`` (a percentile of the profile samples, 0 < NN <= 100)."""
    text = text.strip().lower()
    if text == "mean":
        return text
    try:
        q = float(text[1:]) if text.startswith("p") else math.nan
    except ValueError:
        q = math.nan
    if not 0 < q <= 100:
        raise InputError(f"{text!r}: expected mean or pNN (e.g. p99)", field="threshold")
    return f"p{q:g}"


def kairos_stats(profile: Profile, problem: AllocationProblem, mix: BatchMix, threshold: str = "mean") -> KairosStats:
    """Derive the bound's inputs from the profile and the batch mix (``threshold``: see ``threshold_table``)."""
    latency = LatencyModel(profile, list(problem.types), [problem.model])
    table = latency.table_ms(problem.model)
    if mix.max_batch >= table.shape[1]:
        raise InputError(
            f"the batch mix reaches batch {mix.max_batch}, above the largest batch every candidate type "
            f"serves for {problem.model} ({table.shape[1] - 1}); narrow the candidate types or the batch "
            f"mix"
        )
    lat = table[:, mix.sizes]  # [type, size] mean ms
    p = mix.probs
    base = problem.base_index
    base_mean = float(p @ lat[base])
    n = len(problem.types)
    max_ok = np.empty(n, dtype=np.int64)
    limit = threshold_table(profile, problem, table.shape[1], parse_threshold(threshold))
    for i in range(n):
        v = first_violation(limit[i], problem.qos_ms)
        max_ok[i] = table.shape[1] - 1 if v < 0 else v - 1
    small_mask = mix.sizes[None, :] <= max_ok[:, None]  # [type, size]
    small = small_mask.astype(float) @ p
    base_time = (small_mask * (p * lat[base])[None, :]).sum(axis=1) / base_mean
    qps_at = np.zeros((n, n))
    for j in range(n):
        mask = small_mask[j]
        if mask.any():
            w = p[mask] / p[mask].sum()
            qps_at[:, j] = 1000.0 / (lat[:, mask] @ w)
    return KairosStats(
        problem.types, base, 1000.0 / base_mean, max_ok, small, base_time, qps_at, 1.0 - problem.percentile / 100.0
    )


def kairos_bound(stats: KairosStats, counts) -> float:
    """Throughput upper bound (qps) of one configuration (count vector aligned with ``stats.types``)."""
    counts = np.asarray(counts, dtype=float)
    b = stats.base_index
    n_base = counts[b]
    aux = [i for i in range(len(counts)) if i != b and counts[i] > 0]
    if not aux:
        return float(n_base * stats.base_qps)
    agg = max(aux, key=lambda i: (stats.max_ok_batch[i], i))
    small = float(stats.small_ratio[agg])
    time = float(stats.base_time_ratio[agg])
    if small <= 0.0:
        return float(n_base * stats.base_qps)
    aux_qps = float(sum(counts[i] * stats.qps_at[i, agg] for i in aux))
    if n_base == 0:  # auxiliaries alone: valid only if the queries they cannot serve fit in the percentile's tail
        return aux_qps / small if 1.0 - small <= stats.tail + 1e-12 else 0.0
    if time >= 1.0 or small >= 1.0:  # every query is small: everyone serves the whole mix
        return aux_qps / small + n_base * stats.base_qps
    large_qps = stats.base_qps * (1.0 - small) / (1.0 - time)
    all_qps = aux_qps / small
    large_target = all_qps - aux_qps
    if large_target >= large_qps * n_base:  # base instances are the bottleneck; extra auxiliaries are useless
        return float(large_qps * n_base / (1.0 - small))
    usage = large_target / (large_qps * n_base)
    return float(all_qps + stats.base_qps * n_base * (1.0 - usage))


def kairos_bounds(stats: KairosStats, configs: np.ndarray) -> np.ndarray:
    """``kairos_bound`` of every configuration row."""
    return np.array([kairos_bound(stats, row) for row in np.asarray(configs)], dtype=float)


def rank_order(bounds: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Row order by bound (highest first), then cost (highest first: the budget is spent either way, and
    among equal bounds more instances can only shorten queues), then row order."""
    n = len(bounds)
    return np.lexsort((np.arange(n), -np.asarray(costs), -np.asarray(bounds)))


@dataclass(frozen=True)
class PickRule:
    """Kairos' pick among the top ranks: the medoid, in instance-count space, of the near-ties at the top.

    The candidates are the ``top_k`` best-ranked configurations by the Kairos bound. They are scored by ``by``:
    ``queue`` (default), the queueing-aware estimate of ``queueing.py``, which sees what the bound cannot (slack
    left for waiting, how many instances share a queue); or ``bound``, the bound itself (the paper's rule: near-ties
    of the ranking). Those whose score is within ``within`` (relative) of the best score are near-ties; their
    medoid (least total Euclidean distance to the others) is picked, equal distances going to the better score.
    ``top_k=1`` or ``within=0`` with ``by=bound`` is the top-1.
    """

    top_k: int = 50
    within: float = 0.01
    by: str = "queue"

    def __post_init__(self):
        if self.top_k < 1:
            raise InputError(f"{self.top_k}: must be >= 1", field="top_k")
        if not 0 <= self.within < 1:
            raise InputError(f"{self.within}: must be in [0, 1)", field="pick_within")
        if self.by not in ("queue", "bound"):
            raise InputError(f"{self.by!r}: expected queue or bound", field="pick_by")


def top_rows(bounds: np.ndarray, costs: np.ndarray, rule: PickRule = PickRule()) -> np.ndarray:
    """Row indices of the ``top_k`` best ranks by bound, best first (the rows the pick scores)."""
    return rank_order(bounds, costs)[: rule.top_k]


def pick_candidates(
    bounds: np.ndarray, costs: np.ndarray, rule: PickRule = PickRule(), scores: np.ndarray | None = None
) -> np.ndarray:
    """Row indices the pick chooses among (near-ties by score), best score first; ``scores`` (aligned with the
    rows, needed where ``rule.by`` is ``queue``) at least on ``top_rows``."""
    top = top_rows(bounds, costs, rule)
    if rule.by == "queue":
        if scores is None:
            raise ValueError("PickRule(by='queue') needs the queueing-aware scores of the top rows")
        key = np.asarray(scores, dtype=float)[top]
    else:
        key = np.asarray(bounds, dtype=float)[top]
    key = np.where(np.isfinite(key), key, -np.inf)
    order = np.argsort(-key, kind="stable")
    top, key = top[order], key[order]
    return top[key >= key[0] * (1.0 - rule.within) - 1e-12]


def pick_medoid(
    configs: np.ndarray,
    bounds: np.ndarray,
    costs: np.ndarray,
    rule: PickRule = PickRule(),
    scores: np.ndarray | None = None,
) -> int:
    """Row index of the configuration Kairos picks (see ``PickRule``), without running any."""
    top = pick_candidates(np.asarray(bounds, dtype=float), np.asarray(costs, dtype=float), rule, scores)
    x = np.asarray(configs, dtype=float)[top]
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)).sum(axis=1)
    # Among equal total distances keep the better score (candidates come best first).
    return int(top[int(np.argmin(dist))])
