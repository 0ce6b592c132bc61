"""The live dispatcher's prefetch ("early slot"): the one piece of dispatch state the simulator never has.

With one query per instance at a time, an instance would idle for the proxy's round trip (response back to the
dispatcher, decision, next request out) after every query. So shortly before the running query's *predicted* end the
dispatcher opens one extra slot on that instance: the policy decides as usual, seeing the instance free in a moment,
and the chosen query waits at the instance, which serves FIFO. The next completion closes the slot. Everything here
extends the shared ``InstanceState``/``DispatchCore`` without changing a line of theirs, so the simulator and the
dispatcher still share every line that decides.
"""

from __future__ import annotations

from harness.dispatch.dispatch_core import DispatchCore
from harness.dispatch.instance_state import InstanceState


class PrefetchInstance(InstanceState):
    """Instance state with an early slot: open while the running query nears its predicted end."""

    __slots__ = ("early", "early_pred_s")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.early = False
        self.early_pred_s = 0.0  # predicted service of the query sent through the early slot

    def assign(self, now_s: float, predicted_s: float) -> bool:
        """As InstanceState.assign; a query that starts through the early slot has its prediction remembered."""
        started = super().assign(now_s, predicted_s)
        if started and self.early:
            self.early_pred_s = predicted_s
        return started

    def finish(self, now_s: float) -> None:
        """As InstanceState.finish; a completion also closes an open early slot."""
        super().finish(now_s)
        if self.early:
            self.close_early(now_s)

    def open_early(self) -> None:
        """One extra slot while the running query nears its predicted end."""
        self.early = True
        self.capacity += 1
        self.changed()  # a type-level policy's index must see the slot open

    def close_early(self, now_s: float) -> None:
        """Close the early slot; a query sent through it starts now, so re-anchor the estimate on now (prediction
        errors must not pile up over a burst)."""
        self.early = False
        self.capacity -= 1
        if self.running:
            self.expected_free_s = now_s + self.early_pred_s + self.backlog_s
        self.changed()


class PrefetchCore(DispatchCore):
    """DispatchCore over PrefetchInstances, with ``open_early``; its slot count follows the early slots."""

    def open_early(self, now_s: float, inst: PrefetchInstance) -> None:
        """Let a busy ``inst`` take its next query now, shortly before its running one is predicted to end, so the
        proxy's round trip overlaps service; the instance queues it. Closed by the next completion."""
        if inst.early or not inst.alive or inst.running < inst.capacity:
            return
        inst.open_early()
        self.total_slots += 1
        if inst.queue:  # push policies: the head of its local FIFO goes now
            nq, pred_s = inst.queue.pop(0)
            inst.start_queued(max(now_s, inst.expected_free_s - inst.backlog_s), pred_s)
            inst.early_pred_s = pred_s
            self.running += 1
            self.on_start(nq, inst)
        else:
            self.decide(now_s)

    def complete(self, now_s, query, inst: PrefetchInstance, service_ms) -> None:
        """As DispatchCore.complete; the completion closes an open early slot (``PrefetchInstance.finish``)."""
        if inst.early:
            self.total_slots -= 1
        super().complete(now_s, query, inst, service_ms)

    def mark_dead(self, now_s, inst: PrefetchInstance):
        """Close an open early slot, then take ``inst`` out of service as DispatchCore does."""
        if inst.early:
            inst.close_early(now_s)
            self.total_slots -= 1
        return super().mark_dead(now_s, inst)
