"""madata_algos.stats: the IQM, the stratified bootstrap and the probability of improvement that the
Table 1 and Table 2 reports quote, checked against hand-computed values and scipy."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import trim_mean

from madata_algos.stats import bootstrap_interval, iqm, permutation_test, probability_of_improvement

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


def test_permutation_test_by_hand():
    # one task, X = [1, 2] against Y = [3, 4]: of the 6 relabellings, {1, 2} and {3, 4} give |difference| 2
    assert permutation_test([np.array([1.0, 2])], [np.array([3.0, 4])]) == pytest.approx(2 / 6)
    # three runs against three, fully separated on each of three tasks: only the observed relabelling and its
    # mirror are as extreme, 2 of 20**3
    x = [np.array([0.0, 1, 2]) + 100 * t for t in range(3)]
    y = [v + 10 for v in x]
    assert permutation_test(x, y) == pytest.approx(2 / 8000)
    assert permutation_test(x, x) == 1.0
    # sampled, a p-value counts the data's own labelling, so it is never 0 (here 2 / 8000 exactly)
    assert 1 / 1000 <= permutation_test(x, y, exact_limit=0, reps=999) < 0.01


def test_permutation_test_relabels_within_tasks_only():
    # X's runs are the low half of every task, but the tasks' levels differ by far more than X and Y do:
    # relabelling across tasks would hide the difference, within tasks it is plain (2 of 20**2 relabellings)
    x = [np.array([0.0, 1, 2]), np.array([1000.0, 1001, 1002])]
    y = [np.array([3.0, 4, 5]), np.array([1003.0, 1004, 1005])]
    assert permutation_test(x, y) == pytest.approx(2 / 400)
    # the statistic weighs tasks equally, whatever their run counts: against a direct enumeration
    x2 = [np.array([0.0, 1]), np.array([0.0, 0, 0, 5])]
    y2 = [np.array([2.0, 3]), np.array([1.0, 1, 1, 2])]
    assert permutation_test(x2, y2) == pytest.approx(enumerated_p(x2, y2))
    pooled = np.concatenate(x2).mean() - np.concatenate(y2).mean()  # -0.5, where the mean over tasks is -1.5
    assert pooled != pytest.approx(np.mean([a.mean() - b.mean() for a, b in zip(x2, y2, strict=True)]))


def enumerated_p(x, y) -> float:
    """The stratified two-sided p-value by brute force: every relabelling within each task."""

    def stat(parts):
        return np.mean([a.mean() - b.mean() for a, b in parts])

    observed, hits, total = abs(stat(list(zip(x, y, strict=True)))), 0, 0
    choices = [list(itertools.combinations(range(len(a) + len(b)), len(a))) for a, b in zip(x, y, strict=True)]
    for pick in itertools.product(*choices):
        parts = []
        for (a, b), chosen in zip(zip(x, y, strict=True), pick, strict=True):
            pool = np.concatenate([a, b])
            mask = np.zeros(len(pool), bool)
            mask[list(chosen)] = True
            parts.append((pool[mask], pool[~mask]))
        hits += abs(stat(parts)) >= observed - 1e-9
        total += 1
    return hits / total


def test_permutation_test_sampling_approaches_the_exact_value():
    rng = np.random.default_rng(0)
    x = [rng.normal(0.0, 1.0, 4) for _ in range(3)]
    y = [rng.normal(0.8, 1.0, 4) for _ in range(3)]
    exact = permutation_test(x, y)  # 70**3 = 343,000 relabellings: over the default limit, so sampled
    enumerated = permutation_test(x, y, exact_limit=10**6)
    sampled = permutation_test(x, y, exact_limit=0, reps=50_000, seed=1)
    assert exact == pytest.approx(enumerated, abs=0.01)
    assert sampled == pytest.approx(enumerated, abs=0.01)
    assert 0.0 < enumerated < 0.2


def test_permutation_test_refuses_mismatched_or_empty_tasks():
    with pytest.raises(ValueError, match="one array of runs per task"):
        permutation_test([np.ones(2)], [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match="every task needs runs of both methods"):
        permutation_test([np.ones(2)], [np.array([])])
