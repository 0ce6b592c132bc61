"""A minimal discrete-event core in the SimPy manner: a heap of (time, priority, seq) events and a run loop."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from itertools import count

URGENT = 0  # completions: free an instance before a simultaneous arrival looks for one
NORMAL = 1  # arrivals


class EventLoop:
    """Virtual clock plus event heap; ``schedule`` callbacks, then ``run(until=...)``."""

    def __init__(self):
        self.now = 0.0
        self._heap: list = []
        self._seq = count()

    def schedule(self, time_s: float, priority: int, callback: Callable, arg=None) -> None:
        """Call ``callback(arg)`` at virtual time ``time_s``; ties broken by priority, then insertion order."""
        heapq.heappush(self._heap, (time_s, priority, next(self._seq), callback, arg))

    def run(self, until: float = math.inf) -> float:
        """Process events in time order until the heap is empty or the next event is after ``until``."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            time_s, _, _, callback, arg = pop(heap)
            self.now = time_s
            callback(arg)
        return self.now

    def __len__(self) -> int:
        return len(self._heap)
