"""Kairos matching over instance types rather than instances: its decisions at a cost that does not grow with N.

Exact Kairos (``kairos``) solves a min(Q, 2N) x N assignment over the head of the queue and every instance at each
arrival and completion. At N = 1,000 that is about half a millisecond per decision with one query queued (reading
N instances' state is O(N) Python), and far more once the queue is long.

Instances of one type differ only in when they are predicted to be free, and a query's cost on an instance never
falls as that time grows: the finish time grows and the residual QoS shrinks, moving the pair to the flat 500 and
then 1000 penalties (with QoS <= 500 ms, ``penalty_near``, a pair within QoS costs at most c x QoS <= 500). So an
optimal matching of R queries needs at most R instances of each type, the R that are free first: swap a used
instance for an unused earlier one of its type and no cost rises. This policy takes, per type, up to R idle
instances (free now) and then the busy ones that free up first, as "type slots", solves the R x (types x R)
matching of the queue's head to them with ``kairos``' costs, and dispatches the pairs whose slot is idle; the rest
of the matching stays queued, as in ``kairos``. A ``TypeIndex`` that the instances update on every change keeps the
idle and busy instances of each type, so finding the slots reads O(R) entries and the matching does not depend on N.
When every type has R idle instances (a large pool below saturation) no two queries compete, and each simply takes
its cheapest type; one query alone takes its cheapest slot. Both are computed without the matrix, in the same
floating-point operations as ``kairos``' cost matrix, and so is any matching of up to 160 cells (``Kairos.costs``):
below saturation, where most matchings are that small, numpy's per-call cost would dominate.

Exactness. While the window Kairos matches, min(Q, 2N) queries, fits in ``max_rows`` (64), the matching has exact
Kairos' optimal cost in every pool state (tests/dispatch/test_kairos_type.py checks it on random states); in
particular, when the instances of each type are in one state it makes the same type-level decisions (which queries
go, to which types). Equal-cost matchings are the exception: two queries of one batch bucket both within QoS cost
the same anywhere, a query past QoS costs 1000 anywhere, and an idle instance ties with a busy one predicted free
in the past; there either policy may choose either option, and which instance of a type serves is unspecified.
It is not exact:

- when the window holds more than ``max_rows`` queries (near and past saturation, the queue holds large queries
  waiting for a GPU): it then matches a scaled-down model of the window, every (window / max_rows)-th query, against
  the same proportion of each type's instances (all its idle ones, then the earliest free), so that queries
  outnumber instances in the same ratio as in Kairos' matching. Matching only the head instead fills the matching
  with large queries waiting for a GPU, and the small ones behind them, which Kairos sends to idle CPU instances,
  wait: on rm2 at g4dn.xlarge=20,r5n.large=80 (QoS 350 ms) the head alone reached 1094.85 qps of allowable
  throughput against exact Kairos' 1111.96; the sample reaches 1111.96 (``kairos simulate``'s search);
- with a QoS above ``penalty_near`` (500 ms): a pair within QoS can then cost more than a near miss, so a later
  instance can be cheaper and the earliest-free slots need not hold the optimum;
- at concurrency above 1 (and on the live dispatcher's early slots, ``servers/dispatcher/prefetch.py``): an
  instance with a free slot may still be running queries, and the idle slots of a type are any R of its idle
  instances, not the R that are free first.

Tunables: those of ``kairos``, and ``max_rows`` (64): the most queries one matching holds. Near saturation the
window is deep and each matching has max_rows queries and up to types x max_rows slots: at N = 1,000 a decision then
takes about 0.7 ms (exact Kairos: tens of ms); 32 or 16 are two to four times faster there, and reached 1094.85 qps
on the pool above, one search step below.
"""

from __future__ import annotations

from itertools import islice

from scipy.optimize import linear_sum_assignment

from harness.core.errors import InputError
from harness.dispatch.instance_state import InstanceState
from harness.dispatch.policies.base import NOTHING, Decision
from harness.dispatch.policies.kairos import Kairos
from harness.dispatch.type_index import TypeIndex


class KairosType(Kairos):
    """Kairos' matching solved over per-type slots (idle first, then earliest free): cost independent of pool size."""

    name = "kairos_type"
    push = False

    def __init__(
        self,
        row_factor: int = 2,
        safeguard: float = 0.02,
        penalty_near: float = 500.0,
        penalty_miss: float = 1000.0,
        feasibility: str = "tail",
        max_rows: int = 64,
    ):
        super().__init__(row_factor, safeguard, penalty_near, penalty_miss, feasibility)
        if int(max_rows) < 1:
            raise InputError(f"kairos_type: max_rows {max_rows!r} must be >= 1")
        self.max_rows = int(max_rows)

    def bind(self, ctx, instances):
        """As ``kairos``, and index the pool's instances by type (the instances keep the index current)."""
        super().bind(ctx, instances)
        self._n_types = len(ctx.instance_types)
        self._index = TypeIndex.of(instances, self._n_types)

    def match(self, now_s, pending, instances) -> list[tuple[object, InstanceState, bool]]:
        """Kairos' matching over type slots (a deep queue sampled): (query, instance, instance is idle) per pair."""
        if not pending or not instances:
            return []
        index = self._index
        if index.instances is not instances or index.size != len(instances):
            # Not the list it was bound to (a caller's own subset): index it afresh, O(N), leaving the instances be.
            index = TypeIndex(instances, self._n_types, attach=False)
        window = min(len(pending), self.row_factor * len(instances))
        if window == 1:  # one query, the common case below saturation: its cheapest slot, one per type
            cols: list[InstanceState] = []
            n_idle = 0
            for t in range(self._n_types):
                got = index.idle_of(t, 1)
                if got:
                    cols.insert(n_idle, got[0])
                    n_idle += 1
                else:
                    cols += index.earliest_busy(t, 1)
            return self._cheapest_slot(now_s, pending[0], cols, n_idle) if n_idle else []
        n_rows = min(window, self.max_rows)
        deep = window > n_rows
        idle: list[InstanceState] = []
        busy: list[InstanceState] = []
        all_idle = True  # every type that has instances offers n_rows idle ones
        for t in range(self._n_types):
            got = index.idle_of(t, n_rows)
            idle += got
            want = min(n_rows, max(len(got), -(-index.alive[t] * n_rows // window))) if deep else n_rows
            if len(got) < want:
                more = index.earliest_busy(t, want - len(got))
                busy += more
                all_idle = all_idle and not more and not got
            elif len(got) < n_rows:
                all_idle = all_idle and not got and not index.alive[t]
        if not idle:
            return []
        if deep:
            # A scaled-down model of the window: every (window / n_rows)-th query, against as many instances of
            # each type in proportion (above); the head alone would be all large queries waiting for a GPU.
            step = window / n_rows
            rows = [pending[int(k * step)] for k in range(n_rows)]
        else:
            rows = list(islice(pending, n_rows))
        if all_idle and all(inst.expected_free_s <= now_s for inst in idle):
            return self._cheapest_type(now_s, rows, idle, n_rows)
        cols = idle + busy
        if n_rows == 1:
            return self._cheapest_slot(now_s, rows[0], cols, len(idle))
        cost = self.costs(now_s, rows, cols)
        r, c = linear_sum_assignment(cost)
        n_idle = len(idle)
        return [(rows[i], cols[j], j < n_idle) for i, j in zip(r.tolist(), c.tolist())]

    def _cheapest_type(self, now_s, rows, idle, n_rows):
        """Every type has a free instance for every row: no row competes, so each takes its cheapest type."""
        # idle holds n_rows instances per type, type by type, all free now. Scalar arithmetic rather than
        # pair_costs' matrix: for the one or two rows a decision usually has, numpy's call overhead would cost more
        # than the whole decision.
        qos_ms, guard_ms = self.ctx.qos_ms, self._guard_ms
        near, miss = self.penalty_near, self.penalty_miss
        types = [inst.type_index for inst in idle[::n_rows]]
        used = [0] * len(types)
        out = []
        for row in rows:
            per_type = self.latencies(row.model, row.batch_size)
            waited_ms = (now_s - row.arrival_s) * 1000.0
            best, best_k = 0.0, -1
            for k, t in enumerate(types):
                coef, mean_ms, check_ms = per_type[t]
                residual = qos_ms - waited_ms - (0.0 + check_ms)
                if residual < guard_ms:
                    cost = near if residual >= 0.0 else miss
                else:
                    cost = coef * (0.0 + mean_ms)
                if best_k < 0 or cost < best:
                    best, best_k = cost, k
            out.append((row, idle[best_k * n_rows + used[best_k]], True))
            used[best_k] += 1
        return out

    def _cheapest_slot(self, now_s, row, cols, n_idle):
        """One query: the matching is its cheapest slot (the first of equals, as the assignment solver takes)."""
        j = self.best_for_one(now_s, row, cols)
        return [(row, cols[j], j < n_idle)]

    def decide(self, now_s, pending, instances):
        """Match the queue's head to type slots; dispatch the pairs whose instance is idle."""
        out = [(q, inst.index) for q, inst, now in self.match(now_s, pending, instances) if now]
        return Decision(out) if out else NOTHING
