"""The half of a driver that the simulator and the live dispatcher share: central queue, policy calls, instance state.

A driver (virtual clock or real one) feeds it arrivals and completions and is called back when a query is
assigned to an instance, starts on it, or is dropped. Keeping this in one place means the simulator and the
dispatcher cannot disagree about what a policy decision does: only the clock and the service times differ.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from harness.dispatch.instance_state import InstanceState
from harness.dispatch.latency_model import LatencyModel
from harness.dispatch.policies import Policy, PolicyContext, Query


class DispatchCore:
    """Central FIFO + policy + per-instance state; callbacks ``on_assign``, ``on_start``, ``on_drop``."""

    def __init__(
        self,
        policy: Policy,
        latency: LatencyModel,
        instances: list[InstanceState],
        qos_ms: float,
        rng: np.random.Generator,
        *,
        on_assign: Callable[[Query, InstanceState], None],
        on_start: Callable[[Query, InstanceState], None],
        on_drop: Callable[[Query], None],
        on_drained: Callable[[float, InstanceState], None] | None = None,
    ):
        self.latency = latency
        self.instances = instances
        self.qos_ms = float(qos_ms)
        self.rng = rng
        self.pending: deque[Query] = deque()
        self.total_slots = sum(inst.capacity for inst in instances)
        self.running = 0
        self.on_assign, self.on_start, self.on_drop = on_assign, on_start, on_drop
        # Retired instances still finishing their work (indices); their slots count until they are empty, so the
        # all-busy shortcut in decide() never skips a live idle instance while a retiring one is still busy.
        self.draining: set[int] = set()
        self.on_drained = on_drained
        self.set_policy(policy)

    def set_policy(self, policy: Policy) -> None:
        """Bind ``policy`` to this pool (also used to switch policies between test phases)."""
        policy.bind(
            PolicyContext(tuple(self.latency.instance_types), self.latency, self.qos_ms, self.rng), self.instances
        )
        self.policy = policy
        self._push = policy.push

    def arrive(self, now_s: float, query: Query) -> None:
        """A query enters the central queue; the policy decides right away."""
        self.pending.append(query)
        self.decide(now_s)

    def decide(self, now_s: float) -> None:
        """Ask the policy, then apply its assignments and drops (pull policies are skipped while all are busy)."""
        pending = self.pending
        if not pending or (not self._push and self.running >= self.total_slots):
            return
        d = self.policy.decide(now_s, pending, self.instances)
        predict = self.latency.predict_ms
        for q, j in d.assign:
            if pending[0] is q:
                pending.popleft()
            else:
                pending.remove(q)
            inst = self.instances[j]
            pred_s = predict(inst.type_index, q.model, q.batch_size) / 1000.0
            self.on_assign(q, inst)
            if inst.assign(now_s, pred_s):
                self.running += 1
                self.on_start(q, inst)
            else:
                q.queued_on = j
                inst.queue.append((q, pred_s))
        for q in d.drop:
            pending.remove(q)
            self.on_drop(q)

    def complete(self, now_s: float, query: Query, inst: InstanceState, service_ms: float | None) -> None:
        """A query left ``inst`` (``service_ms`` None when it failed): update state, start queued work, decide."""
        self.running -= 1
        inst.finish(now_s)
        if service_ms is not None:
            self.policy.on_complete(now_s, query, inst, (now_s - query.arrival_s) * 1000.0)
            self.latency.observe(inst.type_index, query.model, query.batch_size, service_ms)
        if inst.queue and inst.running < inst.capacity and (inst.alive or inst.index in self.draining):
            nq, pred_s = inst.queue.pop(0)
            inst.start_queued(now_s, pred_s)
            self.running += 1
            self.on_start(nq, inst)
        elif not inst.alive and inst.outstanding == 0 and inst.index in self.draining:
            self._drained(now_s, inst)
        self.decide(now_s)

    def withdraw(self, now_s: float, query: Query) -> bool:
        """Take a query that has not started out of the system (its deadline passed, its client left); False if it
        is not waiting anywhere (it started, or already left)."""
        try:
            self.pending.remove(query)
            return True
        except ValueError:
            # Only the instance it last queued on can hold it; if it left that FIFO since, it started (or failed
            # and was requeued: then it was found in pending above).
            j = query.queued_on
            if j < 0 or not self.instances[j].withdraw(query):
                return False
            inst = self.instances[j]
            if inst.outstanding == 0 and inst.index in self.draining:
                self._drained(now_s, inst)
            return True

    def requeue(self, now_s: float, queries: list[Query]) -> None:
        """Put queries back at the head of the central queue (oldest first), e.g. after their instance failed."""
        for q in sorted(queries, key=lambda q: q.arrival_s, reverse=True):
            self.pending.appendleft(q)
        self.decide(now_s)

    def mark_dead(self, now_s: float, inst: InstanceState) -> list[Query]:
        """Take ``inst`` out of service; returns the queries waiting in its local FIFO (the caller requeues)."""
        inst.alive = False
        self.draining.discard(inst.index)
        waiting = [q for q, _ in inst.queue]
        inst.outstanding -= len(waiting)
        inst.queue.clear()
        inst.backlog_s = 0.0
        inst.changed()  # an index of idle instances (TypeIndex) must drop it now, not when it next looks
        self.total_slots -= inst.capacity
        return waiting

    def mark_alive(self, now_s: float, inst: InstanceState) -> None:
        """Put ``inst`` back in service."""
        if not inst.alive:
            inst.alive = True
            inst.changed()  # an index of idle instances (TypeIndex) must see it come back
            if inst.index in self.draining:
                self.draining.discard(inst.index)  # its retirement is called off: its slots never left the count
            else:
                self.total_slots += inst.capacity
            self.decide(now_s)

    def retire(self, now_s: float, inst: InstanceState) -> bool:
        """Stop giving ``inst`` queries, let it finish what it holds; True if empty now, else ``on_drained`` follows."""
        if not inst.alive:
            return inst.index not in self.draining
        inst.alive = False
        inst.changed()  # an index of idle instances (TypeIndex) must see it leave
        if inst.outstanding == 0:
            self.total_slots -= inst.capacity
            return True
        self.draining.add(inst.index)
        return False

    def _drained(self, now_s: float, inst: InstanceState) -> None:
        """A retired instance finished its last query: it leaves the pool for good."""
        self.draining.discard(inst.index)
        self.total_slots -= inst.capacity
        if self.on_drained is not None:
            self.on_drained(now_s, inst)

    def add_instance(self, now_s: float, inst: InstanceState) -> None:
        """Append ``inst`` to the pool (``inst.index`` must be its position) and bind the policy again to see it."""
        self.instances.append(inst)
        if inst.alive:
            self.total_slots += inst.capacity
        self.set_policy(self.policy)
        self.decide(now_s)
