"""Clockwork-style earliest-deadline-first with admission control (Gujarati et al., OSDI'20).

Each query's deadline is ``arrival + QoS - buffer``. Idle instances are filled in EDF order (with one QoS target
EDF is arrival order); a query goes to the idle instance that would finish it first, provided it meets its
deadline by the latency model's prediction. Queries that no instance type can still finish in time (even
starting now on the fastest type) are dropped and count as QoS violations, as Clockwork rejects requests it
cannot serve on time.

Tunables: ``buffer_ms`` (default 2% of QoS), ``lookahead`` (how deep into the queue one decision looks, 64), and
two ablations for docs/policies.md: ``drop`` (true; false serves hopeless queries late instead of dropping them)
and ``placement`` ("fastest" idle instance; "first" takes idle instances in configuration order, as FCFS does).
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import InputError
from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class Clockwork(BasePolicy):
    """EDF on predicted latency with deadline-based dropping."""

    name = "clockwork"
    push = False

    def __init__(
        self, buffer_ms: float | None = None, lookahead: int = 64, drop: bool = True, placement: str = "fastest"
    ):
        if placement not in ("fastest", "first"):
            raise InputError(f"clockwork: placement {placement!r} must be 'fastest' or 'first'")
        self.buffer_ms = buffer_ms
        self.lookahead = int(lookahead)
        self.drop = bool(drop)
        self.placement = placement

    def bind(self, ctx, instances):
        """Fix the deadline slack and the per-model fastest-type latency."""
        super().bind(ctx, instances)
        buffer_ms = 0.02 * ctx.qos_ms if self.buffer_ms is None else float(self.buffer_ms)
        self._slack_s = (ctx.qos_ms - buffer_ms) / 1000.0
        self._fastest: dict[str, np.ndarray] = {}

    def _fastest_ms(self, model: str) -> np.ndarray:
        fastest = self._fastest.get(model)
        if fastest is None:
            fastest = self._fastest[model] = self.ctx.latency.table_ms(model).min(axis=0)
        return fastest

    def decide(self, now_s, pending, instances):
        """Drop hopeless queries among the first ``lookahead``; give feasible ones to the fastest idle instance."""
        if not pending:
            return NOTHING
        idle = [inst for inst in instances if inst.idle]
        assign, drop = [], []
        lat = self.ctx.latency
        for k in range(min(len(pending), self.lookahead)):
            q = pending[k]
            deadline_s = q.arrival_s + self._slack_s
            table = lat.table_ms(q.model)
            hopeless = now_s + self._fastest_ms(q.model)[q.batch_size] / 1000.0 > deadline_s
            if hopeless and self.drop:
                drop.append(q)
                continue
            if not idle:
                break
            best, best_ms = None, np.inf
            for inst in idle:
                t_ms = table[inst.type_index, q.batch_size]
                if t_ms < best_ms:
                    best, best_ms = inst, t_ms
                if self.placement == "first":
                    break
            if hopeless or now_s + best_ms / 1000.0 <= deadline_s:
                assign.append((q, best.index))
                idle.remove(best)
        if not assign and not drop:
            return NOTHING
        return Decision(assign, drop)
