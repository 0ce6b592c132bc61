"""Per instance type: which instances are idle, and the busy ones ordered by predicted free time.

A policy that reasons about types rather than instances (``kairos_type``) asks, at every decision, for a few idle
instances of each type and the few busy ones that free up first. Scanning all N instances for that is O(N) Python
per decision; this index is kept current instead by the instances themselves: ``InstanceState`` calls ``update``
after each of its own state changes (its ``watcher``). An update is a set operation and a bisection into a sorted
list (its memmove is O(N) but in C: about a microsecond at N = 1,000), and the k busy instances of a type that free
up first are a slice, so a decision reads O(k) entries whatever N.

Fields a driver writes directly (``alive``, ``capacity``) reach the index through ``InstanceState.changed``; reads
check what they return against the instance, so a missed notice can delay an instance's use but never hand out a
dead or busy one.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence

from harness.dispatch.instance_state import InstanceState


class TypeIndex:
    """Idle instances per type (sets of indices) and busy ones per type (lists sorted by ``expected_free_s``)."""

    def __init__(self, instances: Sequence[InstanceState], n_types: int = 0, attach: bool = True):
        self.instances = instances
        self.size = len(instances)
        n_types = max([n_types, *(inst.type_index + 1 for inst in instances)])
        self.idle: list[set[int]] = [set() for _ in range(n_types)]
        self.busy: list[list[tuple[float, int]]] = [[] for _ in range(n_types)]  # (expected_free_s, index), sorted
        self._key: list[tuple[float, int] | None] = [None] * len(instances)  # each instance's entry in busy, if any
        self._alive = [False] * len(instances)  # as last seen
        self.alive = [0] * n_types  # live instances per type, as last seen
        for inst in instances:
            self.update(inst)
            if attach:
                inst.watcher = self

    @classmethod
    def of(cls, instances: Sequence[InstanceState], n_types: int = 0) -> TypeIndex:
        """The index the instances already report to, brought up to date, or a new one: policies bound to one pool
        share it (an instance has one watcher)."""
        index = instances[0].watcher if instances else None
        if isinstance(index, cls) and index.instances is instances and index.size == len(instances):
            if n_types <= len(index.idle):
                for inst in instances:  # fields written directly since (a test's, a driver's) are read again
                    index.update(inst)
                return index
        return cls(instances, n_types)

    def update(self, inst: InstanceState) -> None:
        """Record the current state of ``inst`` (called by the instance after every change)."""
        i = inst.index
        t = inst.type_index
        alive = inst.alive
        if alive != self._alive[i]:
            self._alive[i] = alive
            self.alive[t] += 1 if alive else -1
        old = self._key[i]
        if alive and inst.running < inst.capacity and not inst.queue:  # InstanceState.idle, inlined: the hot path
            self.idle[t].add(i)
            new = None
        else:
            self.idle[t].discard(i)
            new = (inst.expected_free_s, i) if alive else None
        if new != old:
            busy = self.busy[t]
            if old is not None:
                del busy[bisect_left(busy, old)]
            if new is not None:
                insort(busy, new)
            self._key[i] = new

    def idle_of(self, type_index: int, k: int) -> list[InstanceState]:
        """Up to ``k`` idle instances of the type (any ``k`` of them: at concurrency 1 they are interchangeable)."""
        out: list[InstanceState] = []
        if k <= 0:
            return out
        stale = None
        instances = self.instances
        for i in self.idle[type_index]:
            inst = instances[i]
            if inst.alive and inst.running < inst.capacity and not inst.queue:
                out.append(inst)
                if len(out) == k:
                    break
            else:
                stale = [*(stale or ()), inst]
        if stale:
            for inst in stale:  # written directly since its last notice (alive, capacity)
                self.update(inst)
        return out

    def earliest_busy(self, type_index: int, k: int) -> list[InstanceState]:
        """The (up to) ``k`` live busy instances of the type with the earliest predicted free time, earliest first."""
        if k <= 0:
            return []
        busy, instances = self.busy[type_index], self.instances
        head = busy[:k]
        out = [instances[i] for _, i in head]
        # One comprehension rather than a loop with a break (the hot path): each still live, not idle, and filed
        # under its current predicted free time.
        fresh = [
            inst
            for (free_s, _), inst in zip(head, out)
            if inst.alive and inst.expected_free_s == free_s and (inst.running >= inst.capacity or inst.queue)
        ]
        if len(fresh) == len(out):
            return out
        # Something was written directly since its last notice: re-file every instance read, then read again.
        for inst in out:
            self.update(inst)
        return self.earliest_busy(type_index, k)
