"""Statistics for reporting offline RL results over few seeds, as ``rliable`` defines them.

Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice": the interquartile
mean (IQM) of run scores, percentile bootstrap confidence intervals that resample runs
within each task (stratified), and the probability of improvement P(X > Y); beside them, a
permutation test stratified by task, exact at these run counts. Written here
with numpy because ``rliable`` 1.2 pins ``arch<8``, whose 7.x releases fail to import
beside pandas 3. Every function takes an explicit seed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of all scores (rliable's ``aggregate_iqm``,
    scipy's ``trim_mean(x, 0.25)`` over the flattened array)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def bootstrap_interval(
    groups: Sequence[np.ndarray],
    statistic: Callable[[list[np.ndarray]], float],
    reps: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``groups`` (one array of run scores
    per task), each group resampled with replacement on its own (stratified bootstrap)."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("bootstrap_interval: every group needs at least one score")
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for k in range(reps):
        stats[k] = statistic([g[rng.integers(0, len(g), len(g))] for g in map(np.asarray, groups)])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def probability_of_improvement(x: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
    """P(X > Y): for each task, the probability that a run of X scores above a run of Y
    (ties count 1/2, the Mann-Whitney U statistic over all pairs), averaged over tasks."""
    per_task = []
    for a, b in zip(x, y, strict=True):
        a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
        per_task.append(float(((a > b) + 0.5 * (a == b)).mean()))
    return float(np.mean(per_task))


def permutation_test(
    x: Sequence[np.ndarray], y: Sequence[np.ndarray], exact_limit: int = 100_000, reps: int = 20_000, seed: int = 0
) -> float:
    """Two-sided p-value that X's and Y's runs differ, from a permutation test stratified by task.

    The statistic is the mean over tasks of (mean of X's runs - mean of Y's runs); the null
    hypothesis is that within each task the labels X and Y are exchangeable, so runs are
    relabelled within their task, never across. Every relabelling is enumerated when there are at
    most ``exact_limit`` (3 runs against 3 on three tasks: 20**3 = 8,000), which makes the
    p-value exact; otherwise ``reps`` random relabellings give (1 + hits) / (1 + reps).
    """
    if len(x) != len(y) or not x:
        raise ValueError("permutation_test: one array of runs per task, for both methods")
    tasks = [(np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for a, b in zip(x, y, strict=True)]
    if any(len(a) == 0 or len(b) == 0 for a, b in tasks):
        raise ValueError("permutation_test: every task needs runs of both methods")

    def diffs(pool: np.ndarray, n: int, picks: np.ndarray) -> np.ndarray:
        """mean(pool[picks]) - mean(the rest), for each row of picks [R, n]."""
        chosen = pool[picks].sum(1)
        return chosen / n - (pool.sum() - chosen) / (len(pool) - n)

    observed = np.mean([a.mean() - b.mean() for a, b in tasks])
    extreme = abs(observed) * (1 - 1e-12) - 1e-12  # relabellings as extreme as the data, rounding aside
    sizes = [math.comb(len(a) + len(b), len(a)) for a, b in tasks]
    if math.prod(sizes) <= exact_limit:
        per_task = [
            diffs(
                np.concatenate([a, b]), len(a), np.array(list(itertools.combinations(range(len(a) + len(b)), len(a))))
            )
            for a, b in tasks
        ]
        # every combination of one relabelling per task: the sum over tasks by broadcasting
        total = sum(d.reshape([-1 if i == k else 1 for i in range(len(per_task))]) for k, d in enumerate(per_task))
        stats = total.ravel() / len(tasks)
        return float(np.mean(np.abs(stats) >= extreme))
    rng = np.random.default_rng(seed)
    stats = np.zeros(reps)
    for a, b in tasks:
        pool = np.concatenate([a, b])
        picks = np.argsort(rng.random((reps, len(pool))), axis=1)[:, : len(a)]
        stats += diffs(pool, len(a), picks)
    stats /= len(tasks)
    hits = int(np.sum(np.abs(stats) >= extreme))
    return (1 + hits) / (1 + reps)
