"""Online searches without a simulator: the bracket search, the GP, Ribbon-style BO and annealing on a known
objective (the Kairos bound of the paper's space, which is monotone with a known best)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.allocate.anneal import AnnealSettings, anneal_search, neighbours
from harness.allocate.bound import kairos_bounds, kairos_stats
from harness.allocate.evaluate import EvalSettings, Evaluator, bracket_search
from harness.allocate.gp import GaussianProcess, expected_improvement
from harness.allocate.ribbon import RibbonSettings, dominated, ribbon_search
from harness.allocate.space import BatchMix, enumerate_configs, make_problem
from harness.core.prices import load_prices


@pytest.fixture(scope="module")
def landscape(shipped_profile):
    """The 331 paper configurations for rm2 and their Kairos bounds as a stand-in objective."""
    problem = make_problem(
        shipped_profile, load_prices(), "rm2", 350.0, 2.5, ["g4dn.xlarge", "c5n.2xlarge", "r5n.large", "t3.xlarge"]
    )
    mix = BatchMix.from_batch_sizes(np.random.default_rng(0).integers(1, 1001, 4000))
    configs = enumerate_configs(problem)
    values = kairos_bounds(kairos_stats(shipped_profile, problem, mix), configs)
    table = {tuple(int(c) for c in row): float(v) for row, v in zip(configs, values)}
    return configs, table


def _counting(table):
    calls = []

    def f(counts):
        calls.append(tuple(counts))
        return table[tuple(counts)]

    return f, calls


@pytest.mark.parametrize("threshold", [12.0, 55.0, 97.0])
def test_bracket_search_finds_the_threshold(threshold):
    lo, hi, points = bracket_search(lambda r: r <= threshold, 100.0, EvalSettings(rel_tol=0.02, max_points=20))
    assert lo <= threshold < hi
    assert (hi - lo) / lo <= 0.02
    assert points <= (7 if threshold > 50 else 20)


def test_bracket_search_stops_at_its_point_budget():
    calls = []
    bracket_search(lambda r: calls.append(r) or r <= 12.0, 100.0, EvalSettings(max_points=5))
    assert len(calls) == 5


def test_bracket_search_goes_above_a_limit_that_is_no_bound():
    lo, hi, _ = bracket_search(lambda r: r <= 130.0, 100.0, EvalSettings(rel_tol=0.05, max_points=20))
    assert 100.0 < lo <= 130.0 < hi


def test_bracket_search_gives_zero_when_nothing_passes():
    lo, _, points = bracket_search(lambda r: False, 100.0, EvalSettings())
    assert lo == 0.0 and points >= 1
    assert bracket_search(lambda r: True, 0.0, EvalSettings()) == (0.0, 0.0, 0)


def test_gp_interpolates_and_is_unsure_far_away():
    x = np.array([[0.0], [0.5], [1.0]])
    gp = GaussianProcess.fit(x, np.array([1.0, 3.0, 2.0]), noise=1e-6)
    mean, sd = gp.predict(np.array([[0.5], [5.0]]))
    assert mean[0] == pytest.approx(3.0, abs=1e-3)
    assert sd[0] < 0.01 < sd[1]
    ei = expected_improvement(np.array([1.0, 1.0]), np.array([0.1, 1.0]), best=1.5, xi=0.0)
    assert ei[1] > ei[0] > 0


def test_ribbon_finds_the_best_with_few_evaluations_and_prunes_dominated(landscape):
    configs, table = landscape
    f, calls = _counting(table)
    result = ribbon_search(configs, f, max(table.values()), RibbonSettings(max_evals=40, seed=1))
    assert result.allowable_qps >= 0.98 * max(table.values())
    assert result.evaluated == len(calls) <= 40 < len(configs)
    for i, c in enumerate(calls):  # never evaluates a configuration dominated by an earlier one
        assert not any(dominated(np.array([c]), earlier)[0] for earlier in calls[:i])
    again = ribbon_search(configs, _counting(table)[0], max(table.values()), RibbonSettings(max_evals=40, seed=1))
    assert again.history == result.history


def test_anneal_climbs_and_is_reproducible(landscape):
    configs, table = landscape
    f, calls = _counting(table)
    result = anneal_search(configs, f, AnnealSettings(max_evals=40, seed=2))
    assert result.evaluated == len(set(calls)) <= 40
    assert result.allowable_qps >= 0.85 * max(table.values())
    assert result.allowable_qps == max(v for _, v in result.history)
    again = anneal_search(configs, _counting(table)[0], AnnealSettings(max_evals=40, seed=2))
    assert again.history == result.history


def test_neighbours_stay_in_the_space():
    space = {(1, 0), (1, 1), (2, 0), (0, 1)}
    assert sorted(neighbours((1, 0), space)) == [(0, 1), (1, 1), (2, 0)]


def test_counting_views_count_their_own_distinct_configurations():
    class Stub(Evaluator):
        def __init__(self):
            super().__init__(ctx=None)
            self.sims = 0

        def evaluation(self, counts):
            key = tuple(counts)
            if key not in self.cache:
                self.sims += 1
                self.cache[key] = type("E", (), {"allowable_qps": float(sum(key))})()
            return self.cache[key]

    shared = Stub()
    a, b = shared.view(), shared.view()
    assert a((1, 2)) == 3.0 and a((1, 2)) == 3.0 and a((2, 2)) == 4.0
    assert b((1, 2)) == 3.0
    assert (a.evaluated, b.evaluated, shared.sims) == (2, 1, 2)
