"""Push (load-balancer) policies: every query is assigned on arrival; each instance keeps a local FIFO.

Sources: round robin and join-the-shortest-queue are classic load-balancer rules (nginx, Envoy);
power-of-two-choices is Mitzenmacher (2001); least-expected-work is join-the-shortest-expected-workload
(Harchol-Balter et al.) using the latency model's per-type predictions.
"""

from __future__ import annotations

from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class RoundRobin(BasePolicy):
    """Cyclic assignment in configuration order, ignoring state. No tunables."""

    name = "round_robin"
    push = True

    def bind(self, ctx, instances):
        """Start the cycle at the first instance."""
        super().bind(ctx, instances)
        self._next = 0

    def decide(self, now_s, pending, instances):
        """Assign every pending query to the next live instance in the cycle."""
        if not pending:
            return NOTHING
        out = []
        n = len(instances)
        for q in pending:
            for _ in range(n):
                inst = instances[self._next]
                self._next = (self._next + 1) % n
                if inst.alive:
                    out.append((q, inst.index))
                    break
        return Decision(out)


class LeastOutstanding(BasePolicy):
    """Join-the-shortest-queue: the live instance with the fewest outstanding queries (ties: config order)."""

    name = "least_outstanding"
    push = True

    def decide(self, now_s, pending, instances):
        """Assign every pending query to the least-loaded live instance."""
        if not pending:
            return NOTHING
        out = []
        added: dict[int, int] = {}  # queries this decision already gave each instance, so a burst spreads
        for q in pending:
            best, best_n = None, 0
            for inst in instances:
                n = inst.outstanding + added.get(inst.index, 0)
                if inst.alive and (best is None or n < best_n):
                    best, best_n = inst, n
            if best is None:
                break
            added[best.index] = best_n - best.outstanding + 1
            out.append((q, best.index))
        return Decision(out)


class PowerOfTwo(BasePolicy):
    """Power-of-d choices: sample ``d`` distinct live instances (seeded RNG), join the least outstanding.

    Tunables: ``d`` (default 2).
    """

    name = "power_of_two"
    push = True

    def __init__(self, d: int = 2):
        self.d = int(d)

    def decide(self, now_s, pending, instances):
        """Assign every pending query to the better of ``d`` random live instances."""
        if not pending:
            return NOTHING
        live = [inst for inst in instances if inst.alive]
        if not live:
            return NOTHING
        d = min(self.d, len(live))
        out = []
        rng = self.ctx.rng
        for q in pending:
            picks = rng.choice(len(live), size=d, replace=False)
            best = min((live[int(i)] for i in picks), key=lambda s: (s.outstanding, s.index))
            out.append((q, best.index))
        return Decision(out)


class LeastExpectedWork(BasePolicy):
    """Join the instance that would finish the query first: argmin of predicted backlog + predicted latency.

    Uses the latency model only (no true service times). No tunables.
    """

    name = "least_expected_work"
    push = True

    def decide(self, now_s, pending, instances):
        """Assign every pending query to the instance with the earliest predicted completion."""
        if not pending:
            return NOTHING
        lat = self.ctx.latency
        out = []
        extra = {}
        for q in pending:
            table = lat.table_ms(q.model)
            best, best_t = None, float("inf")
            for inst in instances:
                if not inst.alive:
                    continue
                t = inst.time_left_s(now_s) * 1000.0 + extra.get(inst.index, 0.0) + table[inst.type_index, q.batch_size]
                if t < best_t:
                    best, best_t = inst, t
            if best is None:
                break
            extra[best.index] = extra.get(best.index, 0.0) + table[best.type_index, q.batch_size]
            out.append((q, best.index))
        return Decision(out)
