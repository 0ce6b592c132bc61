"""The interval on allowable throughput from replicated searches: a t-interval on the mean of R figures."""

import math

import numpy as np
import pytest
from scipy import stats

from harness.measure.replication import METHOD, intervals_overlap, replicated_allowable


def test_one_search_has_a_mean_and_no_interval():
    fig = replicated_allowable([42.0])
    assert fig.mean_qps == 42.0 and fig.replicates == 1 and not fig.has_interval
    assert math.isnan(fig.low_qps) and math.isnan(fig.high_qps)


def test_t_interval_on_the_mean_of_the_figures():
    fig = replicated_allowable([10.0, 11.0, 12.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd 1
    assert fig.mean_qps == pytest.approx(11.0)
    assert fig.low_qps == pytest.approx(11.0 - half) and fig.high_qps == pytest.approx(11.0 + half)
    assert fig.low_qps < fig.mean_qps < fig.high_qps and fig.replicates == 3 and fig.none == 0
    assert fig.method == METHOD and "t-interval" in fig.method


def test_a_wider_level_gives_a_wider_interval_and_equal_figures_a_zero_width_one():
    narrow, wide = replicated_allowable([5.0, 6.0, 7.5], level=0.8), replicated_allowable([5.0, 6.0, 7.5], level=0.99)
    assert wide.low_qps < narrow.low_qps < narrow.high_qps < wide.high_qps
    same = replicated_allowable([3.0, 3.0, 3.0])
    assert same.low_qps == same.mean_qps == same.high_qps == 3.0


def test_a_search_where_nothing_passed_counts_as_zero_and_the_bound_stays_non_negative():
    fig = replicated_allowable([0.0, math.nan, 1.0])
    assert fig.none == 2 and fig.mean_qps == pytest.approx(1.0 / 3)
    assert fig.low_qps == 0.0 < fig.mean_qps < fig.high_qps
    all_none = replicated_allowable([0.0, 0.0])
    assert all_none.mean_qps == all_none.low_qps == all_none.high_qps == 0.0 and all_none.none == 2


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    draws = rng.normal(50.0, 4.0, size=(4000, 5))
    covered = [(f.low_qps <= 50.0 <= f.high_qps) for f in map(replicated_allowable, draws)]
    assert 0.94 <= np.mean(covered) <= 0.96


def test_overlapping_intervals_are_a_tie_and_disjoint_ones_are_not():
    a, b, c = (replicated_allowable(v) for v in ([10.0, 11.0, 12.0], [11.5, 12.5, 13.5], [30.0, 31.0, 32.0]))
    assert intervals_overlap(a, b) and intervals_overlap(b, a)
    assert not intervals_overlap(a, c) and not intervals_overlap(c, a)
    with pytest.raises(ValueError, match="two or more replicates"):
        intervals_overlap(a, replicated_allowable([10.0]))


@pytest.mark.parametrize(
    "values, level, needle",
    [([], 0.95, "no replicates"), ([1.0, math.inf], 0.95, "infinite"), ([1.0, 2.0], 1.0, "confidence level")],
)
def test_bad_input_is_refused(values, level, needle):
    with pytest.raises(ValueError, match=needle):
        replicated_allowable(values, level=level)
