"""Configuration allocation: which instance mix to rent under a budget, and how the choice compares.

``run_allocation(AllocateJob(...))`` ranks every configuration by the Kairos upper bound and the fluid LP bound,
scores the top ones by a queueing-aware estimate, runs the requested methods (kairos, homogeneous, fluid, ribbon,
anneal, oracle: ``harness.allocate.methods``) and measures their picks in the simulator; ``harness.report.allocation``
renders the ranked table.
"""

from harness.allocate.anneal import AnnealSettings, anneal_search
from harness.allocate.bound import KairosStats, PickRule, kairos_bound, kairos_bounds, kairos_stats, pick_medoid
from harness.allocate.evaluate import EvalContext, EvalSettings, Evaluation, Evaluator, evaluate_config, evaluate_many
from harness.allocate.fluid import FluidModel, fluid_bound, fluid_bounds, fluid_model
from harness.allocate.homogeneous import best_homogeneous, budget_scaled, homogeneous_configs
from harness.allocate.job import AllocateJob
from harness.allocate.methods import BaseMethod, Method, MethodContext, Pick
from harness.allocate.oracle import OracleResult, run_oracle
from harness.allocate.queueing import QueueModel, queue_estimate, queue_estimates, queue_model
from harness.allocate.ribbon import RibbonSettings, ribbon_search
from harness.allocate.run import METHODS, AllocationResult, MethodResult, make_context, run_allocation
from harness.allocate.space import AllocationProblem, BatchMix, enumerate_configs, make_problem

__all__ = [
    "METHODS",
    "AllocateJob",
    "AllocationProblem",
    "AllocationResult",
    "AnnealSettings",
    "BaseMethod",
    "BatchMix",
    "EvalContext",
    "EvalSettings",
    "Evaluation",
    "Evaluator",
    "FluidModel",
    "KairosStats",
    "Method",
    "MethodContext",
    "MethodResult",
    "OracleResult",
    "Pick",
    "PickRule",
    "QueueModel",
    "RibbonSettings",
    "anneal_search",
    "best_homogeneous",
    "budget_scaled",
    "enumerate_configs",
    "evaluate_config",
    "evaluate_many",
    "fluid_bound",
    "fluid_bounds",
    "fluid_model",
    "homogeneous_configs",
    "kairos_bound",
    "kairos_bounds",
    "kairos_stats",
    "make_context",
    "make_problem",
    "pick_medoid",
    "queue_estimate",
    "queue_estimates",
    "queue_model",
    "ribbon_search",
    "run_allocation",
    "run_oracle",
]
