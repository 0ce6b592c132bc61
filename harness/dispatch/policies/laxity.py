"""Least-laxity dispatch with reservations: this project's policy past Kairos (issue 13; docs/policies.md).

At every arrival and completion, over the first ``rows x N`` queries of the central queue:

1. **Order by laxity.** Queries are taken in order of their static laxity, ``deadline - best tail service``
   (deadline = arrival + QoS, best tail = the lowest p99 service time of the query's batch size over the pool's
   types), not in arrival order. A batch of 800 has ~20 ms to spare on a CPU type while a batch of 160 has
   ~280 ms; FIFO hands a freed CPU to the older small query and the large one misses.
2. **Place by earliest predicted finish, looking ahead.** Each query goes to the instance that finishes it first
   (its predicted free time plus the mean service time) among those that still meet its deadline with the tail
   service time. Busy instances count with the work already placed on them in this pass, so a query can wait for a
   busy fast instance rather than take a slow idle one (Kairos' matching does the same with busy columns). Only
   placements on idle instances are dispatched; the rest stay queued and are decided again at the next event.
3. **Keep a type ready for the queries only it can serve.** A batch size is *critical* for a type when that type
   is the only one of the pool whose tail service time meets the QoS (rm2's batches above ~860 on g4dn.xlarge
   beside r5n.large). Such a query tolerates ``bound = QoS - tail`` ms of waiting. A non-critical query may take an
   instance of that type only if, afterwards, the type still has an instance free within ``guard x bound`` ms
   (this instance after a short query, or another one of the type). Without this rule the only type that can
   serve the largest batches fills with work any type could do, and the largest batches queue behind it.
4. **Drop the hopeless.** A query that no instance can finish by its deadline even at the mean service time is
   dropped (a QoS violation either way; served late it would also take capacity from queries that can still make
   it), as Clockwork does. A query that meets its deadline only at the mean goes to the earliest finish.

It is exact list scheduling only for the queries it sees; it does not predict arrivals. Tunables: ``rows``
(2: queries considered per decision = rows x N), ``guard`` (1.0: fraction of the critical queries' slack a
reserved type may be committed for; 0 reserves it for critical queries and queries no other type can take, a
large value turns the reservation off).
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import InputError
from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class Laxity(BasePolicy):
    """Least-laxity-first order, earliest-finish placement with lookahead, a reserve for critical batch sizes."""

    name = "laxity"
    push = False

    def __init__(self, rows: int = 2, guard: float = 1.0):
        if int(rows) < 1:
            raise InputError(f"laxity: rows {rows!r} must be >= 1")
        if not float(guard) >= 0.0:
            raise InputError(f"laxity: guard {guard!r} must be >= 0")
        self.rows = int(rows)
        self.guard = float(guard)

    def bind(self, ctx, instances):
        """Precompute per-instance type indices; per-model tables are built on first use."""
        super().bind(ctx, instances)
        self._types = np.array([inst.type_index for inst in instances], dtype=np.intp)
        self._members = [np.nonzero(self._types == t)[0] for t in range(len(ctx.instance_types))]
        self._model: dict[str, tuple] = {}

    def model_tables(self, model: str) -> tuple:
        """(mean ms [type, b], tail ms [type, b], best tail ms [b], fastest mean ms [b], critical type [b] or -1,
        reserve bound ms per type (inf where the type is critical for no batch size))."""
        tables = self._model.get(model)
        if tables is None:
            lat = self.ctx.latency
            mean, tail = lat.table_ms(model), lat.tail_ms(model)
            present = np.unique(self._types)
            ok = np.zeros_like(tail, dtype=bool)
            ok[present] = tail[present] <= self.ctx.qos_ms
            only = ok.sum(axis=0) == 1
            critical = np.where(only, ok.argmax(axis=0), -1)
            bound = np.full(tail.shape[0], np.inf)
            for t in present:
                sizes = np.nonzero(critical == t)[0]
                if len(sizes):
                    bound[t] = self.ctx.qos_ms - tail[t, sizes].max()
            best_tail = tail[present].min(axis=0)
            fastest = mean[present].min(axis=0)
            tables = self._model[model] = (mean, tail, best_tail, fastest, critical, bound)
        return tables

    def decide(self, now_s, pending, instances):
        """Place the most urgent queries on their earliest feasible finish; dispatch those that land on idle ones."""
        if not pending:
            return NOTHING
        qos = self.ctx.qos_ms
        types = self._types
        n = len(instances)
        free = np.empty(n)
        idle = np.zeros(n, dtype=bool)
        for k, inst in enumerate(instances):
            if not inst.alive:
                free[k] = np.inf
            elif inst.idle:
                free[k] = 0.0
                idle[k] = True
            else:
                free[k] = inst.time_left_s(now_s) * 1000.0
        if not np.isfinite(free).any():
            return NOTHING  # every instance is down: keep the queue for when one returns
        rows = [pending[k] for k in range(min(len(pending), self.rows * n))]
        rows.sort(key=lambda q: q.arrival_s * 1000.0 - self.model_tables(q.model)[2][q.batch_size])
        open_idle = int(idle.sum())
        assign, drop = [], []
        for q in rows:
            mean, tail, _, fastest, critical, bound = self.model_tables(q.model)
            b = q.batch_size
            waited = (now_s - q.arrival_s) * 1000.0
            if open_idle == 0:
                # Nothing more can start now; only the hopeless need an answer before the next event.
                if waited + fastest[b] > qos:
                    drop.append(q)
                continue
            m = mean[types, b]
            fin = free + m
            feasible = waited + free + tail[types, b] <= qos
            if not feasible.any():
                if waited + fin.min() > qos:
                    drop.append(q)
                    continue
                j = int(fin.argmin())  # only the mean meets the deadline: the best chance there is
            else:
                allowed = feasible
                if critical[b] < 0 and np.isfinite(bound).any():
                    allowed = feasible & self._reserve_ok(free, tail[types, b], bound)
                    if not allowed.any():
                        allowed = feasible
                j = int(np.where(allowed, fin, np.inf).argmin())
            if idle[j]:
                assign.append((q, instances[j].index))
                idle[j] = False
                open_idle -= 1
            free[j] += m[j]
        if not assign and not drop:
            return NOTHING
        return Decision(assign, drop)

    def _reserve_ok(self, free: np.ndarray, tail_ms: np.ndarray, bound: np.ndarray) -> np.ndarray:
        """Per instance: may a non-critical query go there and leave its type ready for its critical queries?"""
        ok = np.ones(len(free), dtype=bool)
        for t, limit in enumerate(bound):
            if not np.isfinite(limit):
                continue
            members = self._members[t]
            if not len(members):
                continue
            f = free[members]
            order = np.argsort(f, kind="stable")
            first = f[order[0]]
            second = f[order[1]] if len(f) > 1 else np.inf
            others = np.full(len(f), first)
            others[order[0]] = second
            ok[members] = np.minimum(f + tail_ms[members], others) <= self.guard * limit
        return ok
