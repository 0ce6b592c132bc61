"""Instance state kept by a driver (simulator or live dispatcher) and read by policies.

Policies see the same fields from both drivers: ``idle``, ``outstanding``, ``expected_free_s``. The estimate of
when an instance frees up uses the latency model's predictions, never the true (sampled or measured) time.
"""

from __future__ import annotations

from harness.core.pool_config import instance_ids


class InstanceState:
    """One instance: its type, how many queries it holds, and when the driver expects it to be free."""

    __slots__ = (
        "index",
        "instance_id",
        "instance_type",
        "type_index",
        "capacity",
        "running",
        "outstanding",
        "expected_free_s",
        "backlog_s",
        "queue",
        "alive",
        "watcher",
    )

    def __init__(self, index: int, instance_id: str, instance_type: str, type_index: int, capacity: int = 1):
        self.index = index
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.type_index = type_index
        self.capacity = capacity
        self.running = 0  # queries being served now
        self.outstanding = 0  # running + waiting in this instance's local FIFO (push policies)
        self.expected_free_s = 0.0  # predicted time at which everything assigned here is done
        self.backlog_s = 0.0  # predicted work waiting in the local FIFO, not yet started
        self.queue: list = []  # local FIFO (push policies); pull policies never fill it
        self.alive = True
        # An index over the pool (harness.dispatch.type_index) that wants every change of this state; None: nobody.
        self.watcher = None

    @property
    def idle(self) -> bool:
        """True when the instance could start a query now."""
        return self.running < self.capacity and not self.queue and self.alive

    def time_left_s(self, now_s: float) -> float:
        """Predicted seconds until all assigned work is done (0 when idle)."""
        left = self.expected_free_s - now_s
        return left if left > 0.0 else 0.0

    def assign(self, now_s: float, predicted_s: float) -> bool:
        """Account for a new query; True if it can start now, False if it waits in the local FIFO."""
        self.outstanding += 1
        if self.running < self.capacity and not self.queue:
            self.running += 1
            started = True
        else:
            self.backlog_s += predicted_s
            started = False
        self.expected_free_s = (self.expected_free_s if self.expected_free_s > now_s else now_s) + predicted_s
        if self.watcher is not None:
            self.watcher.update(self)
        return started

    def finish(self, now_s: float) -> None:
        """Account for a finished (or failed) running query."""
        self.outstanding -= 1
        self.running -= 1
        if self.outstanding == 0:
            self.expected_free_s = now_s
            self.backlog_s = 0.0
        if self.watcher is not None:
            self.watcher.update(self)

    def withdraw(self, query) -> bool:
        """Take ``query`` out of the local FIFO before it starts (its client gave up); False if it is not there."""
        for k, (q, predicted_s) in enumerate(self.queue):
            if q is query:
                del self.queue[k]
                self.outstanding -= 1
                self.backlog_s = max(0.0, self.backlog_s - predicted_s)
                self.expected_free_s -= predicted_s
                if self.watcher is not None:
                    self.watcher.update(self)
                return True
        return False

    def start_queued(self, now_s: float, predicted_s: float) -> None:
        """Move one query from the local FIFO into service."""
        self.running += 1
        self.backlog_s -= predicted_s
        if self.backlog_s < 1e-12:
            self.backlog_s = 0.0
        # Re-anchor the estimate on the real start time: what runs now plus what still waits.
        self.expected_free_s = now_s + predicted_s + self.backlog_s
        if self.watcher is not None:
            self.watcher.update(self)

    def changed(self) -> None:
        """Tell the watcher about a change made by writing fields directly (``alive``, ``capacity``, the queue)."""
        if self.watcher is not None:
            self.watcher.update(self)


def build_instances(
    instance_types: list[str],
    type_index: dict[str, int],
    capacity: int = 1,
    ids: list[str] | None = None,
    cls: type[InstanceState] = InstanceState,
) -> list[InstanceState]:
    """Instances in configuration order, named ``TYPE-k`` unless ``ids`` are given."""
    ids = ids or instance_ids(instance_types)
    return [cls(i, ids[i], t, type_index[t], capacity) for i, t in enumerate(instance_types)]
