"""Dependence between agents' actions given the state, and its independent null.

The question: once the state is known, does one agent's action still tell anything
about another's? Agents that act on the state alone, each with its own randomness, give
none (their actions are conditionally independent given the state); agents that share
something the state does not hold (correlated exploration noise, a signal, a joint
latent plan, state features missing from the stored state) give some.

Estimator (*local residual RV*), for each pair of agents ``(i, j)``:

1. Up to ``groups`` disjoint groups of ``group_size`` transitions with similar states are
   formed from a pool of at most ``pool`` transitions (both seeded): a random seed
   transition and its nearest free transitions by the standardized conditioning vector
   (the global state, else all agents' observations side by side), at most one per
   episode (:func:`~madata.diagnostics.neighbours.similar_state_groups`).
2. Inside each group every agent's actions (one-hot for discrete actions) are regressed
   on the conditioning vector (local linear, ridge 0.1, on at most ``group_size // 3``
   principal components); the residuals are what the state does not explain there.
3. The dependence of the two agents' residuals is their RV coefficient (Escoufier 1973):
   ``RV = ||E_i' E_j||_F^2 / (||E_i' E_i||_F ||E_j' E_j||_F)`` for residual matrices
   ``E`` [group_size, action dim], the normalized HSIC with linear kernels: 0 when no
   residual component of one agent correlates with any of the other's, 1 when one is a
   rotation and scaling of the other. The statistic is its mean over the groups.
4. The null: the same statistic on copies of the data where agent ``j``'s actions are
   shuffled within every group (among similar states), ``permutations`` times. Groups
   are disjoint, so each copy is one consistent shuffled dataset and the permutation
   p-value ``(1 + #{null >= statistic}) / (1 + permutations)`` is exact when the
   actions are exchangeable within a group. Reported: the statistic, the null's mean
   and std, ``excess = statistic - null mean``, ``z = excess / null std``, the p-value.

How to read it: ``excess`` is roughly the squared correlation between the parts of the
two agents' actions that the state does not explain (agents sharing noise with
correlation rho give about rho**2). Near 0 (p above 0.05): no dependence beyond the
state is detectable, which is what independently acting agents produce. It is also what
a joint policy with independent per-agent noise produces (madata's collected data,
whatever the mix of levels), so a null-level value does not by itself separate
coordinated from uncoordinated behaviour; the behaviour-mix table and the
miscoordination gap do that where labels exist. A clearly positive excess means the
agents share randomness or information the state does not show. The local linear fit
removes state effects to first order only: policies that bend sharply within a group
(SAC policies on MuJoCo) leave an excess up to about 0.02 even when their actions are
conditionally independent; denser data shrinks it for some policies (docs/diagnostics.md
gives measured values).

Cost: grouping ``O(groups * pool * state dim)`` (the dominant term), local fits
``O(groups * group_size^2 * components)``, each permutation
``O(groups * group_size^2 * action dim)`` per pair of agents; memory
``O(groups * group_size^2)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from madata.diagnostics.neighbours import seeded_pool, similar_state_groups, standardize
from madata.errors import SchemaError

RIDGE = 0.1
_PCA_ROWS = 20_000  # rows used to fit the principal components of the local regressions
_SALT = 0xD1A6  # this statistic's own stream of the diagnosis seed


def dependence_rows(n: int, pool: int, seed: int) -> np.ndarray:
    """The rows of ``n`` transitions that :func:`action_dependence` reads (sorted)."""
    return seeded_pool(n, pool, seed, _SALT)[1]


@dataclass
class PairDependence:
    """Local residual RV of one pair of agents and its shuffled null."""

    agents: tuple[str, str]
    statistic: float
    null: np.ndarray = field(repr=False)  # (permutations,)

    @property
    def null_mean(self) -> float:
        return float(self.null.mean())

    @property
    def null_std(self) -> float:
        return float(self.null.std(ddof=1)) if len(self.null) > 1 else 0.0

    @property
    def excess(self) -> float:
        return self.statistic - self.null_mean

    @property
    def z(self) -> float | None:
        return self.excess / self.null_std if self.null_std > 0 else None

    @property
    def p_value(self) -> float:
        """One-sided permutation p-value: (1 + #{null >= statistic}) / (1 + permutations)."""
        return float((1 + np.sum(self.null >= self.statistic)) / (1 + len(self.null)))

    def to_json(self) -> dict:
        if not np.isfinite(self.statistic):
            return {
                "agents": list(self.agents),
                "statistic": None,
                "null_mean": None,
                "null_std": None,
                "excess": None,
                "z": None,
                "p_value": None,
                "null": [],
                "note": "one of the agents' actions is constant in every group: no dependence to measure",
            }
        return {
            "agents": list(self.agents),
            "statistic": self.statistic,
            "null_mean": self.null_mean,
            "null_std": self.null_std,
            "excess": self.excess,
            "z": self.z,
            "p_value": self.p_value,
            "null": self.null.tolist(),
        }


def action_dependence(
    cond: np.ndarray,
    actions: dict[str, np.ndarray],
    episode: np.ndarray,
    *,
    groups: int = 2048,
    group_size: int = 64,
    permutations: int = 20,
    pool: int = 500_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Local residual RV of every pair of agents against its shuffled-among-similar-states null.

    ``cond`` [N, D] float: what the actions are conditioned on (state or joint
    observation); ``actions[agent]`` [N, d_i] float (one-hot for discrete actions);
    ``episode`` [N] int: each transition's episode (a group holds at most one transition
    per episode). Returns a JSON-ready dict: the sizes actually used and the seed,
    ``pairs`` (one :meth:`PairDependence.to_json` each) and the mean ``excess`` over
    pairs; or ``{"skipped": reason}`` when the data cannot fill one group.
    ``progress(n)`` is called after each unit of work (1 for the grouping, then 1 per pair).
    """
    N = len(cond)
    agents = list(actions)
    if len(agents) < 2:
        raise SchemaError(f"action dependence needs at least 2 agents, got {agents}")
    if group_size < 4:
        raise SchemaError(f"group_size: expected at least 4, got {group_size}")
    if permutations < 1 or groups < 1 or pool < 1:
        raise SchemaError(f"groups, pool and permutations must be >= 1, got {groups}, {pool}, {permutations}")
    rng, pool_idx = seeded_pool(N, pool, seed, _SALT)
    n_episodes = len(np.unique(episode[pool_idx]))
    k = int(min(group_size, n_episodes))
    if k < 4:
        return {
            "skipped": f"a group takes at most one transition per episode and needs at least 4; the data has "
            f"{n_episodes} episode(s)"
        }
    # groups use at most half the pool, so that the last ones formed still find near neighbours
    n_groups = int(min(groups, max(1, len(pool_idx) // (2 * k))))
    pooled = cond[pool_idx].astype(np.float64)
    z = standardize(pooled, pooled)
    members = similar_state_groups(z, episode[pool_idx], k, n_groups, rng)  # (G, k) pool positions
    if len(members) == 0:
        return {"skipped": f"no group of {k} transitions from distinct episodes could be formed"}
    if progress:
        progress(1)

    resid = _residual_maker(z, members, k, rng)  # (G, k, k)
    rows = pool_idx[members]  # (G, k) dataset rows
    local = {a: actions[a][rows].astype(np.float64) for a in agents}  # (G, k, d_a)
    fitted = {a: resid @ local[a] for a in agents}
    pairs = []
    for i, j in combinations(agents, 2):
        stat = _mean_rv(fitted[i], fitted[j])
        null = np.empty(permutations)
        for r in range(permutations):
            perm = np.argsort(rng.random(members.shape), axis=1)  # (G, k): one shuffle per group
            shuffled = np.take_along_axis(local[j], perm[:, :, None], axis=1)
            null[r] = _mean_rv(fitted[i], resid @ shuffled)
        pairs.append(PairDependence((i, j), stat, null))
        if progress:
            progress(1)
    defined = [p for p in pairs if np.isfinite(p.statistic)]
    # how far apart a group's states are: mean distance to its seed, in standardized units
    spread = np.linalg.norm(z[members[:, 1:]] - z[members[:, :1]], axis=2).mean() if z.shape[1] else 0.0
    return {
        "estimator": "local residual RV",
        "groups": len(members),
        "group_size": k,
        "pool": len(pool_idx),
        "permutations": permutations,
        "seed": seed,
        "components": resid_components(z.shape[1], k),
        "group_radius": float(spread),
        "pairs": [p.to_json() for p in pairs],
        "excess": float(np.mean([p.excess for p in defined])) if defined else None,
        "max_z": _max_or_none([p.z for p in defined]),
        "min_p_value": float(min(p.p_value for p in defined)) if defined else None,
    }


def resid_components(dim: int, k: int) -> int:
    """Principal components the local regressions use: all of ``dim``, at most ``k // 3``."""
    return int(min(dim, max(1, k // 3)))


def _residual_maker(z: np.ndarray, members: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``I - H`` [G, k, k] per group, ``H`` the hat matrix of a ridge local linear fit on the top components."""
    G = len(members)
    if z.shape[1] == 0:  # a constant conditioning vector: the local fit is the mean
        return np.broadcast_to(np.eye(k) - 1.0 / k, (G, k, k)).copy()
    m = resid_components(z.shape[1], k)
    fit_rows = z[rng.choice(len(z), min(_PCA_ROWS, len(z)), replace=False)]
    _, _, vt = np.linalg.svd(fit_rows - fit_rows.mean(0), full_matrices=False)
    X = z[members] @ vt[:m].T  # (G, k, m)
    X = X - X.mean(axis=1, keepdims=True)
    X = np.concatenate([np.ones((G, k, 1)), X], axis=2)  # (G, k, m + 1)
    penalty = RIDGE * np.diag(np.r_[0.0, np.ones(m)])  # the intercept is not shrunk
    gram = np.einsum("gki,gkj->gij", X, X) + penalty
    hat = X @ np.linalg.solve(gram, np.transpose(X, (0, 2, 1)))
    return np.eye(k)[None] - hat


def _mean_rv(Ei: np.ndarray, Ej: np.ndarray) -> float:
    """Mean RV coefficient over groups of residuals ``Ei`` [G, k, di], ``Ej`` [G, k, dj];
    groups where either agent's residuals are all zero are left out."""
    cij = np.einsum("gki,gkj->gij", Ei, Ej)
    cii = np.einsum("gki,gkj->gij", Ei, Ei)
    cjj = np.einsum("gki,gkj->gij", Ej, Ej)
    den = np.sqrt((cii**2).sum((1, 2)) * (cjj**2).sum((1, 2)))
    ok = den > 1e-24
    if not ok.any():
        return float("nan")
    return float(np.mean((cij[ok] ** 2).sum((1, 2)) / den[ok]))


def _max_or_none(xs):
    xs = [x for x in xs if x is not None]
    return float(max(xs)) if xs else None
