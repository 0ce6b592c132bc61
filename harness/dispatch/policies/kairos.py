"""Kairos query distribution (Li et al., "Kairos: Building Cost-Efficient Machine Learning Inference Systems
with Heterogeneous Cloud Resources", HPDC'23), as in the authors' artifact.

At every arrival and completion: take the first ``min(len(queue), 2N)`` queries of the central FIFO and all N
instances (busy ones too) and build the cost matrix

    cost[i, j] = c_j * (t_left_j + L_j(b_i))                       (ms)

with heterogeneity coefficient ``c_j = L_base(B) / L_j(B)`` (B = the largest batch every type serves, base =
the type fastest at B, i.e. the GPU). A pair whose residual QoS, ``QoS - waited_i - (t_left_j + L_j(b_i))``,
falls below a safeguard of 2% of QoS gets a flat cost: 500 if the residual is still >= 0, else 1000.
``scipy.optimize.linear_sum_assignment`` solves it; only pairs whose instance is idle are dispatched, the rest
of the matching (queries matched to busy instances) stays queued — that is how a large query waits for a
busy GPU instead of violating QoS on an idle CPU.

One deliberate difference: the residual QoS is checked with the bucket's p99 service time (``feasibility="tail"``)
rather than its mean (``feasibility="mean"``, the artifact's rule). The cost still uses means. With means, an
auxiliary type whose mean latency sits just under the QoS is handed queries that then miss it a large share of the
time: on t3.xlarge, mtwnd batch 190 averages 22 ms with a p99 of 39 ms against a 25 ms QoS, and mean-based Kairos
falls to zero allowable throughput on g4dn.xlarge=2,t3.xlarge=6 where FCFS sustains 40 QPS; tail-based Kairos
sustains 165 QPS there and is unchanged on the paper's rm2 setup (111 QPS).

Tunables: ``row_factor`` (2: rows = row_factor x N), ``safeguard`` (0.02 of QoS), ``penalty_near`` (500),
``penalty_miss`` (1000), ``feasibility`` ("tail" or "mean").
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from harness.core.errors import InputError
from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision

# Up to this many instances a lone query's row is solved on Python floats (best_for_one), and up to this many cells
# a small matrix is built on them (cost_rows); past them numpy is cheaper.
SCALAR_MAX_INSTANCES = 32
SCALAR_MAX_CELLS = 160


class Kairos(BasePolicy):
    """Bipartite matching of queued queries to instances, min-cost with QoS-penalties (HPDC'23 artifact)."""

    name = "kairos"
    push = False

    def __init__(
        self,
        row_factor: int = 2,
        safeguard: float = 0.02,
        penalty_near: float = 500.0,
        penalty_miss: float = 1000.0,
        feasibility: str = "tail",
    ):
        if feasibility not in ("mean", "tail"):
            raise InputError(f"kairos: feasibility {feasibility!r} must be 'mean' or 'tail'")
        self.feasibility = feasibility
        self.row_factor = int(row_factor)
        self.safeguard = float(safeguard)
        self.penalty_near = float(penalty_near)
        self.penalty_miss = float(penalty_miss)

    def bind(self, ctx, instances):
        """Precompute per-instance type indices and per-model heterogeneity coefficients."""
        super().bind(ctx, instances)
        self._bound = instances
        self._types = np.array([inst.type_index for inst in instances], dtype=np.intp)
        self._coef: dict[str, np.ndarray] = {}
        self._lat: dict[str, list[list[tuple[float, float, float]]]] = {}  # per model, when latencies are fixed
        self._guard_ms = self.safeguard * ctx.qos_ms

    def coefficients(self, model: str) -> np.ndarray:
        """c per instance type index: L_base(B) / L_type(B), B = largest common batch, base = fastest at B."""
        coef = self._coef.get(model)
        if coef is None:
            # Floored so a profile with zero service times (a user's synthetic one) gives finite coefficients.
            at_max = np.maximum(self.ctx.latency.table_ms(model)[:, -1], 1e-9)
            coef = self._coef[model] = at_max.min() / at_max
        return coef

    def check_table_ms(self, model: str) -> np.ndarray:
        """The ``[type_index, batch_size]`` table the QoS check reads: the bucket's p99 ("tail") or its mean."""
        lat = self.ctx.latency
        return lat.tail_ms(model) if self.feasibility == "tail" else lat.table_ms(model)

    def latencies(self, model: str, batch_size: int) -> list[tuple[float, float, float]]:
        """Per type index: (coefficient, mean ms, ms the QoS check uses) for ``batch_size``, as Python floats."""
        table = self._lat.get(model)
        if table is None:
            lat = self.ctx.latency
            mean, coef, check = lat.table_ms(model), self.coefficients(model), self.check_table_ms(model)
            if lat.alpha > 0.0:  # online updates move the table: read this batch size's column afresh
                b = batch_size
                return list(zip(coef.tolist(), mean[:, b].tolist(), check[:, b].tolist()))
            table = self._lat[model] = [
                list(zip(coef.tolist(), ms, ks)) for ms, ks in zip(mean.T.tolist(), check.T.tolist())
            ]
        return table[batch_size]

    def costs(self, now_s, rows, instances) -> np.ndarray:
        """The cost matrix of ``rows`` against ``instances``, built the cheaper way for its size (the same doubles)."""
        if len(rows) * len(instances) <= SCALAR_MAX_CELLS:
            return np.array(self.cost_rows(now_s, rows, instances))
        return self.cost_matrix(now_s, rows, instances)

    def cost_matrix(self, now_s, rows, instances) -> np.ndarray:
        """The (len(rows) x len(instances)) cost matrix described in the module docstring."""
        types = (
            self._types
            if instances is self._bound
            else np.fromiter((inst.type_index for inst in instances), dtype=np.intp, count=len(instances))
        )
        t_left_ms = (
            np.fromiter((inst.time_left_s(now_s) for inst in instances), dtype=float, count=len(instances)) * 1000.0
        )
        return self.pair_costs(now_s, rows, types, t_left_ms)

    def pair_costs(self, now_s, rows, types: np.ndarray, t_left_ms: np.ndarray) -> np.ndarray:
        """The cost matrix of ``rows`` against instances given by type index and predicted ms until free."""
        lat = self.ctx.latency
        batches = np.fromiter((q.batch_size for q in rows), dtype=np.intp, count=len(rows))
        waited_ms = (now_s - np.fromiter((q.arrival_s for q in rows), dtype=float, count=len(rows))) * 1000.0
        model = rows[0].model
        tail = self.feasibility == "tail"
        if all(q.model == model for q in rows):
            l_ms = lat.table_ms(model)[types[None, :], batches[:, None]]
            coef = self.coefficients(model)[types][None, :]
            l_check = lat.tail_ms(model)[types[None, :], batches[:, None]] if tail else l_ms
        else:
            l_ms = np.stack([lat.table_ms(q.model)[types, q.batch_size] for q in rows])
            coef = np.stack([self.coefficients(q.model)[types] for q in rows])
            l_check = np.stack([lat.tail_ms(q.model)[types, q.batch_size] for q in rows]) if tail else l_ms
        finish_ms = t_left_ms[None, :] + l_ms
        cost = coef * finish_ms
        residual = self.ctx.qos_ms - waited_ms[:, None] - (t_left_ms[None, :] + l_check)
        late = residual < self._guard_ms
        if late.any():
            cost[late] = np.where(residual[late] >= 0.0, self.penalty_near, self.penalty_miss)
        return cost

    def cost_rows(self, now_s, rows, instances) -> list[list[float]]:
        """``cost_matrix`` on Python floats: the same arithmetic in the same order, so bit for bit its entries.

        On a few rows and instances this costs ~10 us where numpy's calls cost ~50 us."""
        guard, near, miss, qos_ms = self._guard_ms, self.penalty_near, self.penalty_miss, self.ctx.qos_ms
        cols = []
        for inst in instances:
            left = inst.expected_free_s - now_s
            cols.append((inst.type_index, (left if left > 0.0 else 0.0) * 1000.0))
        out = []
        for q in rows:
            per_type = self.latencies(q.model, q.batch_size)
            slack_ms = qos_ms - (now_s - q.arrival_s) * 1000.0
            row = []
            for t, t_left_ms in cols:
                coef, mean_ms, check_ms = per_type[t]
                residual = slack_ms - (t_left_ms + check_ms)
                if residual < guard:
                    row.append(near if residual >= 0.0 else miss)
                else:
                    row.append(coef * (t_left_ms + mean_ms))
            out.append(row)
        return out

    def best_for_one(self, now_s, q, instances) -> int:
        """The position in ``instances`` that the matching gives a lone query: the first cheapest of its cost row
        (``cost_rows``), which is what ``linear_sum_assignment`` picks for one row."""
        row = self.cost_rows(now_s, [q], instances)[0]
        return row.index(min(row))

    def decide(self, now_s, pending, instances):
        """Solve the matching over the head of the queue; dispatch the pairs whose instance is idle."""
        if not pending:
            return NOTHING
        n_rows = min(len(pending), self.row_factor * len(instances))
        rows = [pending[i] for i in range(n_rows)]
        if not all(inst.alive for inst in instances):
            instances = [inst for inst in instances if inst.alive]
            if not instances:
                return NOTHING
        if n_rows == 1 and len(instances) <= SCALAR_MAX_INSTANCES:
            j = self.best_for_one(now_s, rows[0], instances)
            return Decision([(rows[0], instances[j].index)]) if instances[j].idle else NOTHING
        r, c = linear_sum_assignment(self.costs(now_s, rows, instances))
        out = [(rows[i], instances[j].index) for i, j in zip(r.tolist(), c.tolist()) if instances[j].idle]
        return Decision(out) if out else NOTHING
