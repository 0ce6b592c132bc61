"""The Policy protocol that the simulator and the live dispatcher both call, and the objects it sees."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from harness.dispatch.instance_state import InstanceState
from harness.dispatch.latency_model import LatencyModel


class Query:
    """A query waiting for (or given) an instance; drivers create one per request."""

    __slots__ = ("index", "request_id", "model", "batch_size", "arrival_s", "queued_on")

    def __init__(self, index: int, request_id: str, model: str, batch_size: int, arrival_s: float):
        self.index = index
        self.request_id = request_id
        self.model = model
        self.batch_size = batch_size
        self.arrival_s = arrival_s
        # The instance whose local FIFO it last joined (-1: none), so withdrawing it looks at one instance, not all.
        self.queued_on = -1

    def __repr__(self) -> str:
        return f"Query({self.request_id!r}, {self.model}, b={self.batch_size}, t={self.arrival_s:.6f})"


@dataclass(frozen=True)
class PolicyContext:
    """What a policy is bound to: the pool's instance types, the latency model, the QoS target, an RNG."""

    instance_types: tuple[str, ...]
    latency: LatencyModel
    qos_ms: float
    rng: np.random.Generator


class Decision:
    """What ``decide`` returns: (query, instance index) assignments and queries to drop."""

    __slots__ = ("assign", "drop")

    def __init__(self, assign: list[tuple[Query, int]] | None = None, drop: list[Query] | None = None):
        self.assign = assign or []
        self.drop = drop or []


NOTHING = Decision()


class Policy(Protocol):
    """A dispatch policy: ``decide`` is called after every arrival and every completion.

    Pull policies (``push = False``) assign only to idle instances and leave the rest in the central queue; push
    policies assign every pending query at once to any instance, whose local FIFO the driver keeps.
    """

    name: ClassVar[str]
    push: ClassVar[bool]

    def bind(self, ctx: PolicyContext, instances: Sequence[InstanceState]) -> None:
        """Called once before the run with the pool it will dispatch to."""

    def decide(self, now_s: float, pending: deque[Query], instances: Sequence[InstanceState]) -> Decision:
        """Choose assignments (and drops) for the central queue ``pending`` (FIFO order)."""

    def on_complete(self, now_s: float, query: Query, instance: InstanceState, latency_ms: float) -> None:
        """Feedback after a query finishes (used by adaptive policies)."""


class BasePolicy:
    """Convenience base: stores the context and ignores completion feedback."""

    name: ClassVar[str] = "base"
    push: ClassVar[bool] = False

    def bind(self, ctx: PolicyContext, instances: Sequence[InstanceState]) -> None:
        """Remember the context."""
        self.ctx = ctx

    def on_complete(self, now_s: float, query: Query, instance: InstanceState, latency_ms: float) -> None:
        """No feedback by default."""
