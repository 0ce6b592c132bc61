"""Allocation search space: the paper's 331 configurations, caps, base type, and clear input errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.run import parse_methods
from harness.allocate.space import BatchMix, config_costs, enumerate_configs, make_problem
from harness.core.errors import InputError
from harness.core.prices import load_prices

PAPER_TYPES = ["g4dn.xlarge", "c5n.2xlarge", "r5n.large", "t3.xlarge"]


@pytest.fixture(scope="module")
def prices():
    return load_prices()


def test_paper_space_has_331_configurations(shipped_profile, prices):
    problem = make_problem(shipped_profile, prices, "rm2", 350.0, 2.5, PAPER_TYPES)
    configs = enumerate_configs(problem)
    assert problem.base_type == "g4dn.xlarge"
    assert configs.shape == (331, 4)
    assert np.all(config_costs(problem, configs) <= 2.5 + 1e-9)
    assert np.all(configs[:, problem.base_index] >= 1)
    assert len({tuple(r) for r in configs}) == 331


def test_without_base_requirement_the_space_grows(shipped_profile, prices):
    problem = make_problem(shipped_profile, prices, "rm2", 350.0, 2.5, PAPER_TYPES, require_base=False)
    configs = enumerate_configs(problem)
    assert len(configs) > 331
    assert not np.any(configs.sum(axis=1) == 0)


def test_max_count_caps_each_type(shipped_profile, prices):
    problem = make_problem(shipped_profile, prices, "rm2", 350.0, 2.5, PAPER_TYPES, {"r5n.large": 3})
    configs = enumerate_configs(problem)
    assert configs[:, problem.types.index("r5n.large")].max() == 3
    assert problem.max_counts[problem.types.index("g4dn.xlarge")] == 4  # floor(2.5 / 0.526)


def test_batch_mix_comes_from_the_sizes():
    mix = BatchMix.from_batch_sizes([10, 10, 30, 10])
    assert mix.sizes.tolist() == [10, 30]
    assert mix.probs.tolist() == [0.75, 0.25]
    assert mix.max_batch == 30


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget_per_h=0.0), "budget"),
        (dict(budget_per_h=-1.0), "budget"),
        (dict(types=["g4dn.xlarge", "p5.48xlarge"]), "unknown instance type 'p5.48xlarge'"),
        (dict(max_counts={"m5.xlarge": 2}), "max count"),
        (dict(qos_ms=0.0), "qos ms"),
    ],
)
def test_bad_input_is_an_input_error(shipped_profile, prices, kwargs, message):
    args = dict(model="rm2", qos_ms=350.0, budget_per_h=2.5, types=PAPER_TYPES)
    args.update(kwargs)
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("(", r"\(")):
        make_problem(shipped_profile, prices, args.pop("model"), args.pop("qos_ms"), args.pop("budget_per_h"), **args)


def test_budget_below_the_base_price_has_no_configuration(shipped_profile, prices):
    problem = make_problem(shipped_profile, prices, "rm2", 350.0, 0.3, PAPER_TYPES)
    with pytest.raises(InputError, match="no configuration fits"):
        enumerate_configs(problem)


def test_methods_parse_and_reject_unknown_names():
    assert parse_methods("all") == (
        "kairos",
        "homogeneous",
        "fluid",
        "melange",
        "ribbon",
        "anneal",
        "oracle",
        "oracle_pruned",
    )
    assert parse_methods("oracle, kairos,oracle") == ("oracle", "kairos")
    with pytest.raises(InputError, match="unknown method 'greedy'"):
        parse_methods("kairos,greedy")


def test_type_order_is_canonical(shipped_profile, prices):
    a = make_problem(shipped_profile, prices, "rm2", 350.0, 2.5, PAPER_TYPES, {"t3.xlarge": 2})
    b = make_problem(shipped_profile, prices, "rm2", 350.0, 2.5, list(reversed(PAPER_TYPES)), {"t3.xlarge": 2})
    assert a == b
    assert a.types == tuple(sorted(PAPER_TYPES))
    assert a.max_counts[a.types.index("t3.xlarge")] == 2 and a.max_counts[a.types.index("g4dn.xlarge")] == 4
