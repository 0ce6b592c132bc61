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
4. **Route batch sizes by the fluid LP's split.** The policy counts the batch sizes that arrive, and every
   ``resolve`` arrivals solves the fluid LP (``harness.core.fluid_lp``) of its pool on that mix, whose counts then
   decay by half so the split follows the load. A non-critical query of size b may take a type only where the LP
   prices b within ``split`` of its cheapest type (the shadow price of the type's busy time times b's service
   time): at the limit the LP puts each size where it costs the scarcest capacity least. When no routed instance
   can meet the deadline, any feasible one may take it, so the rule never strands a query.
5. **Drop the hopeless.** A query that no instance can finish by its deadline even at the mean service time is
   dropped (a QoS violation either way; served late it would also take capacity from queries that can still make
   it), as Clockwork does. A query that meets its deadline only at the mean goes to the earliest finish.

It is exact list scheduling only for the queries it sees; it does not predict arrivals. Tunables: ``rows``
(2: queries considered per decision = rows x N), ``guard`` (1.0: fraction of the critical queries' slack a
reserved type may be committed for; 0 reserves it for critical queries and queries no other type can take, a
large value turns the reservation off), ``split`` (0.2: price tolerance of the LP routing; ``inf`` turns it off),
``resolve`` (500: arrivals between LP solves, ~6 ms each for ~100 profile buckets; one LP per model, each over the
whole pool).
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import InputError
from harness.core.fluid_lp import FluidModel, fluid_prices
from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class Laxity(BasePolicy):
    """Least-laxity-first order, earliest-finish placement with lookahead, a reserve for critical batch sizes."""

    name = "laxity"
    push = False

    def __init__(self, rows: int = 2, guard: float = 1.0, split: float = 0.2, resolve: int = 500):
        if int(rows) < 1:
            raise InputError(f"laxity: rows {rows!r} must be >= 1")
        if not float(guard) >= 0.0:
            raise InputError(f"laxity: guard {guard!r} must be >= 0")
        if not float(split) >= 0.0:
            raise InputError(f"laxity: split {split!r} must be >= 0 (inf turns the LP routing off)")
        if int(resolve) < 1:
            raise InputError(f"laxity: resolve {resolve!r} must be >= 1")
        self.rows = int(rows)
        self.guard = float(guard)
        self.split = float(split)
        self.resolve = int(resolve)

    def bind(self, ctx, instances):
        """Precompute per-instance type indices; per-model tables are built on first use."""
        super().bind(ctx, instances)
        self._types = np.array([inst.type_index for inst in instances], dtype=np.intp)
        self._members = [np.nonzero(self._types == t)[0] for t in range(len(ctx.instance_types))]
        self._model: dict[str, tuple] = {}
        self._bucket_tables: dict[str, tuple] = {}
        self._seen = -1  # highest query index counted into the batch mix
        self._mix: dict[str, np.ndarray] = {}  # model -> decayed arrival count per profile bucket
        self._since: dict[str, int] = {}  # model -> arrivals since its last LP solve
        self._route: dict[str, np.ndarray] = {}  # model -> may size b go to type t [type, b], once solved

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

    def _observe(self, pending) -> None:
        """Count the queries that arrived since the last call into their model's batch mix; re-solve the LP when due.

        Arrivals are the queue's newest entries (drivers number queries in arrival order and a query leaves the
        queue only through ``decide``), so walking back from the tail to the last index seen finds them all.
        """
        seen = self._seen
        self._seen = max(seen, pending[-1].index)
        for k in range(len(pending) - 1, -1, -1):
            q = pending[k]
            if q.index <= seen:
                break
            bucket = self._buckets(q.model)[0]
            mix = self._mix.get(q.model)
            if mix is None:
                mix = self._mix[q.model] = np.zeros(int(bucket.max()) + 1)
                self._since[q.model] = 0
            mix[bucket[q.batch_size]] += 1.0
            self._since[q.model] += 1
        for model, since in self._since.items():
            if since >= self.resolve or (since and model not in self._route and self._mix[model].sum() >= 100):
                self._solve(model)

    def _buckets(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch sizes grouped by profile bucket (sizes with the same mean and tail on every type): the bucket of each
        size, and each bucket's mean and tail ms per type (the LP runs over buckets, a few dozen instead of ~1,000)."""
        got = self._bucket_tables.get(model)
        if got is None:
            mean, tail = self.model_tables(model)[:2]
            cols = np.vstack([mean, tail])
            _, first, bucket = np.unique(cols, axis=1, return_index=True, return_inverse=True)
            bucket = bucket.ravel()
            got = self._bucket_tables[model] = (bucket, mean[:, first], tail[:, first])
        return got

    def _solve(self, model: str) -> None:
        """Route by the fluid LP of the pool on the recent batch mix: size b may use type t if the LP prices it there
        within ``split`` of its cheapest type. The counts then decay by half, so the mix follows the load."""
        mix = self._mix[model]
        self._since[model] = 0
        bucket, mean, tail = self._buckets(model)
        counts = np.array([len(m) for m in self._members], dtype=float)
        used = np.nonzero(mix > 0)[0]
        ok = (tail[:, used] <= self.ctx.qos_ms).astype(float)
        tail_share = 1.0 - self.ctx.latency.tail_percentile / 100.0
        fm = FluidModel(self.ctx.instance_types, mix[used] / mix[used].sum(), mean[:, used], ok, tail_share)
        _, _, price = fluid_prices(fm, counts)
        full = np.full((len(counts), len(mix)), np.inf)
        full[:, used] = price
        best = full.min(axis=0)
        allowed = np.isfinite(full) & (full <= best * (1.0 + self.split) + 1e-12)
        allowed[:, ~np.isfinite(best)] = True  # a bucket no type serves within QoS: no opinion
        self._route[model] = allowed[:, bucket]
        mix *= 0.5

    def decide(self, now_s, pending, instances):
        """Place the most urgent queries on their earliest feasible finish; dispatch those that land on idle ones."""
        if not pending:
            return NOTHING
        if self.split != np.inf:  # with the routing off there is nothing to count or solve
            self._observe(pending)
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
                if critical[b] < 0:
                    route = self._route.get(q.model)
                    if route is not None:
                        routed = feasible & route[types, b]
                        if routed.any():
                            allowed = routed
                    if np.isfinite(bound).any():
                        kept = allowed & self._reserve_ok(free, tail[types, b], bound)
                        if kept.any():
                            allowed = kept
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
