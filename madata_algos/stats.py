"""Statistics for reporting offline RL results over few seeds, as ``rliable`` defines them.

Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice": the interquartile
mean (IQM) of run scores, percentile bootstrap confidence intervals that resample runs
within each task (stratified), and the probability of improvement P(X > Y). Written here
with numpy because ``rliable`` 1.2 pins ``arch<8``, whose 7.x releases fail to import
beside pandas 3. Every function takes an explicit seed.
"""

from __future__ import annotations

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
