"""First-come first-served: one global FIFO; idle instances pull the oldest query, in configuration order."""

from __future__ import annotations

from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class FCFS(BasePolicy):
    """Global FIFO, idle instances served in configuration order (the Kairos paper's FCFS baseline). No tunables."""

    name = "fcfs"
    push = False

    def decide(self, now_s, pending, instances):
        """Hand the oldest queries to idle instances, first instance first."""
        n = len(pending)
        if not n:
            return NOTHING
        out = []
        k = 0
        for inst in instances:
            if not inst.alive:
                continue
            free = inst.capacity - inst.running
            while free > 0 and k < n:
                out.append((pending[k], inst.index))
                k += 1
                free -= 1
            if k == n:
                break
        return Decision(out) if out else NOTHING
