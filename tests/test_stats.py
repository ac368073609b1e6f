"""madata_algos.stats: the IQM, the stratified bootstrap and the probability of improvement that the
Table 1 and Table 2 reports quote, checked against hand-computed values and scipy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import trim_mean

from madata_algos.stats import bootstrap_interval, iqm, probability_of_improvement

scores = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40)


@given(scores)
@settings(max_examples=200, deadline=None)
def test_iqm_is_scipys_quarter_trimmed_mean(xs):
    assert iqm(np.array(xs)) == pytest.approx(trim_mean(xs, 0.25), rel=1e-9, abs=1e-6)


def test_iqm_drops_a_quarter_from_each_end():
    # 8 scores: the two lowest and two highest go, whatever their size
    assert iqm(np.array([-1000.0, 0, 1, 2, 3, 10, 20, 1000])) == 4.0
    assert iqm(np.array([[1.0, 2], [3, 4]])) == 2.5  # flattened: [2, 3] remain


def test_bootstrap_resamples_within_each_task():
    # each task's runs agree, so a stratified resample keeps every task's mean and the pooled mean is fixed;
    # resampling the pooled runs would move it
    groups = [np.zeros(3), np.full(3, 10.0)]
    lo, hi = bootstrap_interval(groups, lambda g: float(np.concatenate(g).mean()), reps=500)
    assert lo == hi == 5.0


def test_bootstrap_interval_is_the_percentile_interval_of_the_statistic():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, 50)
    lo, hi = bootstrap_interval([x], lambda g: float(g[0].mean()), reps=4000, seed=3)
    se = x.std(ddof=1) / np.sqrt(len(x))  # the normal approximation's interval is close for 50 runs
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    narrow = bootstrap_interval([x], lambda g: float(g[0].mean()), reps=4000, seed=3, level=0.5)
    assert lo < narrow[0] < narrow[1] < hi
    assert bootstrap_interval([x], lambda g: float(g[0].mean()), reps=200, seed=7) == bootstrap_interval(
        [x], lambda g: float(g[0].mean()), reps=200, seed=7
    )


def test_bootstrap_refuses_a_task_without_runs():
    with pytest.raises(ValueError, match="every group needs at least one score"):
        bootstrap_interval([np.ones(3), np.array([])], lambda g: 0.0)


def test_probability_of_improvement_counts_pairs_and_halves_ties():
    # task 1: X above Y in 2 of 4 pairs, tied in 1 -> 2.5 / 4; task 2: X above in every pair -> 1; task 3: never
    x = [np.array([1.0, 3.0]), np.array([5.0]), np.array([2.0])]
    y = [np.array([1.0, 2.0]), np.array([0.0, 4.0]), np.array([3.0])]
    assert probability_of_improvement(x, y) == pytest.approx((2.5 / 4 + 1.0 + 0.0) / 3)  # the mean over tasks
    assert probability_of_improvement(y, x) == pytest.approx(1 - (2.5 / 4 + 1.0 + 0.0) / 3)
    with pytest.raises(ValueError):  # one list per task on both sides
        probability_of_improvement(x, y[:1])
