"""What one allocation run does, as data: the problem, the trace, the methods and each one's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.allocate.anneal import AnnealSettings
from harness.allocate.bound import PickRule
from harness.allocate.evaluate import FINAL_SETTINGS, LOCAL, EvalSettings, ExecutorSpec
from harness.allocate.ribbon import RibbonSettings
from harness.allocate.space import AllocationProblem
from harness.core.profiles import Profile
from traces.schema import Trace


@dataclass(frozen=True, eq=False)
class AllocateJob:
    """Everything one ``kairos allocate`` does, as data."""

    problem: AllocationProblem
    profile: Profile
    trace: Trace
    methods: tuple[str, ...] = ("kairos",)
    search: EvalSettings = field(default_factory=EvalSettings)
    final: EvalSettings = FINAL_SETTINGS
    pick: PickRule = field(default_factory=PickRule)
    ribbon: RibbonSettings = field(default_factory=RibbonSettings)
    anneal: AnnealSettings = field(default_factory=AnnealSettings)
    oracle_refine: int = 5
    workers: int | None = None
    measure: bool = True
    threshold: str = "mean"
    executor: ExecutorSpec = LOCAL  # where the oracle's and the final measurement's simulations run
