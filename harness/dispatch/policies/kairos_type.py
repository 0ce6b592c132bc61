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

A matching of several queries over one or two types (one model) is first tried without the solver: within QoS a
pair costs c_t x (t_left + L_t(b)), a row term plus a slot term, so ignoring the QoS check the matching is a split
of the rows between the two types (by their cost difference; the split size by bisection, as the cost is convex in
it), each type's earliest slots going to its rows in order of latest feasible start. If every pair then passes the
QoS check, that matching attains a lower bound on every matching's cost: it is optimal, and the solver is not
called. This matters because scipy's solver is slow on exactly these matrices: a row term plus a column term makes
many matchings cost nearly the same, and its augmenting paths then visit every row (64 x 128 took ~500 us, a random
matrix of that shape ~55 us). The first-free slot of a type goes to its tightest row, where the solver leaves that
tie to chance.

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
  throughput against exact Kairos' 1111.96; the sample reaches 1111.96 (``kairos simulate``'s search). On the
  sample, where a type holds more tight rows than early slots, the row of its tight prefix cheapest to move goes to
  the other type (up to ``MAX_MOVES`` moves) and the check is repeated; where no row of the prefix fits the other
  type, the one with the largest row term is left out and takes a slot no row uses (a near miss or a miss, as a
  penalty it would pay anywhere). The matching is then not proven optimal. On g4dn.xlarge=100,r5n.large=900 (rm2),
  against the solver on the same samples: at capacity (10,486 qps) 87% had the optimum's cost and the rest were
  within 0.51% (p99 0.19%); at the allowable rate (10,585 qps), where some rows miss QoS, 78%, p99 0.26%, and at
  worst 14.8% above it, in a sample with a pair that misses QoS. Allowable throughput is the
  same as with the solver deciding these samples (N = 11, 100 and 1,000); a sample that needs more moves goes to
  the solver;
- with a QoS above ``penalty_near`` (500 ms): a pair within QoS can then cost more than a near miss, so a later
  instance can be cheaper and the earliest-free slots need not hold the optimum;
- at concurrency above 1 (and on the live dispatcher's early slots, ``servers/dispatcher/prefetch.py``): an
  instance with a free slot may still be running queries, and the idle slots of a type are any R of its idle
  instances, not the R that are free first.

Tunables: those of ``kairos``, and ``max_rows`` (64): the most queries one matching holds. Near saturation the
window is deep and each matching has max_rows queries and up to types x max_rows slots: on the 2-core development
VM at N = 1,000 a decision takes ~90 us at capacity and at the allowable rate (1.015 x capacity), 0.1-0.5 ms where
the solver decides (exact Kairos: tens of ms).
"""

from __future__ import annotations

from bisect import bisect_left
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
    MAX_MOVES = 8

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
        self._type_lat: dict[tuple[str, int], tuple[float, list[float], list[float]]] = {}

    def match(self, now_s, pending, instances, idle_only=False) -> list[tuple[object, InstanceState, bool]]:
        """Kairos' matching over type slots (a deep queue sampled): (query, instance, instance is idle) per pair, in
        queue order; with ``idle_only`` at least the pairs whose instance is idle (those a decision dispatches)."""
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
        chains: list[tuple[list[InstanceState], int]] = []  # per type with slots: idle then busy ones, and n idle
        all_idle = True  # every type that has instances offers n_rows idle ones
        for t in range(self._n_types):
            got = index.idle_of(t, n_rows)
            idle += got
            want = min(n_rows, max(len(got), -(-index.alive[t] * n_rows // window))) if deep else n_rows
            more = index.earliest_busy(t, want - len(got)) if len(got) < want else []
            busy += more
            if got or more:
                chains.append((got + more, len(got)))
            if len(got) < want:
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
        if n_rows == 1:
            return self._cheapest_slot(now_s, rows[0], idle + busy, len(idle))
        if len(chains) <= 2:
            pairs = self._chain_match(now_s, rows, chains, not deep, idle_only)
            if pairs is not None:
                return pairs
        cols = idle + busy  # the solver's columns: built only when it decides
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

    def _chain_match(self, now_s, rows, chains, exact=True, idle_only=False):
        """The matching of ``rows`` to one or two types' slot chains without a cost matrix, or None (the assignment
        solver then decides).

        Within QoS a pair costs c_t x (t_left + L_t(b)): a row term plus a slot term. Ignoring the QoS check the
        matching is a split of the rows between the types, the rows with the smallest c_A L_A - c_B L_B to A, each
        type using its earliest slots; the best split size is found by bisection, O(R log R) in all. Within a type
        the earliest slot goes to the row whose latest feasible start (slack minus p99 service) comes first. If every
        pair then passes the QoS check, its cost is this relaxed optimum, a lower bound on any matching's cost as
        long as no penalty undercuts its pair's relaxed cost (checked per type): an optimal matching.

        Where a type holds more tight rows than early slots, the row of its tight prefix cheapest to move goes to
        the other type (at its place in that type's order), and the check is repeated (up to MAX_MOVES moves). If
        no row of the prefix fits the other type, the one with the largest row term is left out and then takes the
        cheapest slot no row uses. The cost is then no longer proven optimal: such a matching is returned only with
        ``exact`` false (the sampled deep queue, itself a model of Kairos' matching), else None. None too with
        several models among the rows (coefficients differ)."""
        model = rows[0].model
        near, qos_ms, guard = self.penalty_near, self.ctx.qos_ms, self._guard_ms
        if not (qos_ms <= near <= self.penalty_miss):
            return None
        if len(self.ctx.latency.models) > 1 and any(q.model != model for q in rows):
            return None
        n = len(rows)
        if sum(len(slots) for slots, _ in chains) < n:
            return None  # more rows than slots: which rows stay out is the solver's choice
        slack = [qos_ms - (now_s - q.arrival_s) * 1000.0 for q in rows]
        batches = [q.batch_size for q in rows]
        coef, taus, means, checks = [], [], [], []
        for slots, n_idle in chains:
            t = slots[0].type_index
            c, mean_of, check_of = self._by_type(model, t)
            # ms until each slot is free (idle ones, then the earliest busy), as cost_rows computes it
            tau = [(f - now_s) * 1000.0 if f > now_s else 0.0 for f in [inst.expected_free_s for inst in slots]]
            if any(tau[:n_idle]) and tau != sorted(tau):
                return None  # an idle slot still busy (concurrency > 1, an early slot): the chain is not in order
            mean = [mean_of[b] for b in batches]
            if c * (tau[-1] + max(mean)) > near:
                return None  # a penalty could undercut a pair's relaxed cost: no bound
            coef.append(c)
            taus.append(tau)
            means.append(mean)
            checks.append([check_of[b] for b in batches])
        if len(chains) == 1:
            split = [list(range(n))]
        else:
            (ca, cb), (tau_a, tau_b) = coef, taus
            diff = [ca * a - cb * b for a, b in zip(*means)]  # row term on A minus row term on B
            order = sorted(range(n), key=diff.__getitem__)
            # cost(k), rows order[:k] on A and the rest on B with each type's earliest slots, is convex in k: the
            # step cost(k + 1) - cost(k) = diff[order[k]] + c_A tau_A[k] - c_B tau_B[n - k - 1] never falls
            # (each term is sorted that way). So the least k whose step is not negative is the first minimum.
            lo, hi = max(0, n - len(tau_b)), min(n, len(tau_a))
            while lo < hi:
                k = (lo + hi) // 2
                if diff[order[k]] + ca * tau_a[k] - cb * tau_b[n - k - 1] >= 0.0:
                    hi = k
                else:
                    lo = k + 1
            best_k = lo
            split = [order[:best_k], order[best_k:]]
        # Per chain, (latest feasible start, row) in order: the k-th row takes the k-th slot.
        placed = [sorted([(slack[i] - check[i], i) for i in members]) for members, check in zip(split, checks)]
        verified = [0] * len(placed)  # per chain: the rows placed before this position pass the QoS check
        moves = 0
        missed: list[int] = []  # rows left out of a prefix where none could move: placed last
        while True:
            failed = None
            for c, (members, tau, check) in enumerate(zip(placed, taus, checks)):
                for j in range(verified[c], len(members)):
                    i = members[j][1]
                    if slack[i] - (tau[j] + check[i]) < guard:
                        failed = c, j
                        break
                else:
                    verified[c] = len(members)
                    continue
                break
            if failed is None:
                break
            if exact:
                return None
            c, j = failed
            o = 1 - c
            tight = [e[1] for e in placed[c][: j + 1]]  # rows of the failing prefix: moving any one frees a slot
            movable = []
            if len(chains) == 2 and len(placed[o]) < len(taus[o]):
                # A row moved to the other type takes the slot of its place in that order (the rows after it there
                # shift one slot later, and are checked again).
                tau_o, check_o, placed_o = taus[o], checks[o], placed[o]
                movable = [
                    p
                    for p, i in enumerate(tight)
                    if slack[i] - (tau_o[bisect_left(placed_o, (slack[i] - check_o[i], i))] + check_o[i]) >= guard
                ]
            if movable:
                if moves == self.MAX_MOVES:
                    return None
                moves += 1
                # The move that raises the row term least: c_o L_o - c_c L_c.
                sign = 1.0 if o == 0 else -1.0
                pos = min(movable, key=lambda p: sign * diff[tight[p]])
            else:
                # No row of the prefix fits the other type: one of them is left out (it misses QoS or takes a later
                # slot). Whichever it is, the rows after it move one slot earlier, so the choice changes only its
                # own cost: leave out the row whose pair within QoS would cost most, the largest row term here.
                mean_c = means[c]
                pos = max(range(j + 1), key=lambda p: (mean_c[tight[p]], p))
            i = placed[c].pop(pos)[1]
            # Rows after pos move one slot earlier (they still pass); the failing row is now at j - 1, or j's
            # successor at j if it was the one moved. In the other chain, the rows from the insertion shift later.
            verified[c] = j if pos == j else j - 1
            if not movable:
                missed.append(i)
                continue
            entry = (slack[i] - check_o[i], i)
            at = bisect_left(placed[o], entry)
            placed[o].insert(at, entry)
            verified[o] = min(verified[o], at)
        # Each row left out takes the cheapest of the first slots no row uses, by kairos' cost (a near miss costs
        # less than a miss). Slots outnumber rows, so there is one for each.
        for i in missed:
            best = None
            for c, (members, tau, check) in enumerate(zip(placed, taus, checks)):
                k = len(members)
                if k < len(tau):
                    residual = slack[i] - (tau[k] + check[i])
                    if residual >= guard:
                        cost = coef[c] * (tau[k] + means[c][i])
                    else:
                        cost = near if residual >= 0.0 else self.penalty_miss
                    if best is None or (cost, tau[k]) < best[0]:
                        best = (cost, tau[k]), c
            placed[best[1]].append((None, i))
        if idle_only:  # a decision dispatches these only: skip building the rest (the deep queue's ~64 rows)
            now = sorted(
                (i, c, j)
                for c, (members, (_, n_idle)) in enumerate(zip(placed, chains))
                for j, (_, i) in enumerate(members[:n_idle])
            )
            return [(rows[i], chains[c][0][j], True) for i, c, j in now]
        pairs: list = [None] * n
        for members, (slots, n_idle) in zip(placed, chains):  # every row: a row left out took a free slot
            for j, (_, i) in enumerate(members):
                pairs[i] = (rows[i], slots[j], j < n_idle)
        return pairs

    def _by_type(self, model, t):
        """Type index ``t``'s (coefficient, mean ms by batch size, QoS-check ms by batch size) as Python floats: the
        values ``latencies`` gives, cached while the table is fixed."""
        got = self._type_lat.get((model, t))
        if got is None:
            lat = self.ctx.latency
            coef = self.coefficients(model)[t].item()
            got = coef, lat.table_ms(model)[t].tolist(), self.check_table_ms(model)[t].tolist()
            if lat.alpha <= 0.0:  # online updates move the table: read it afresh each time
                self._type_lat[model, t] = got
        return got

    def _cheapest_slot(self, now_s, row, cols, n_idle):
        """One query: the matching is its cheapest slot (the first of equals, as the assignment solver takes)."""
        j = self.best_for_one(now_s, row, cols)
        return [(row, cols[j], j < n_idle)]

    def decide(self, now_s, pending, instances):
        """Match the queue's head to type slots; dispatch the pairs whose instance is idle."""
        out = [(q, inst.index) for q, inst, now in self.match(now_s, pending, instances, idle_only=True) if now]
        return Decision(out) if out else NOTHING
