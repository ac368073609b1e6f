"""Disjoint groups of transitions with similar states, by brute-force nearest neighbours.

Distances come from one matrix product per block of seeds (exact, and a group needs the
free rows nearest to its seed, which a static k-d tree does not track). ``G`` groups of
``k`` from a pool of ``P`` rows in ``D`` dimensions cost ``O(G * P * D)`` time for the distances plus ``O(G * P)`` for the selection, and
``O(block * P)`` memory.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 64 << 20  # one block of squared distances (float32)


def seeded_pool(n: int, pool: int, seed: int, salt: int) -> tuple[np.random.Generator, np.ndarray]:
    """A statistic's generator (seeded by ``seed`` and the statistic's own ``salt``) and the sorted rows
    [min(pool, n)] it draws first: one function, so a reader that fetches only these rows fetches the same."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    return rng, np.sort(rng.choice(n, min(pool, n), replace=False))


def standardize(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` [N, D] z-scored with the mean and std of ``ref`` [P, D]; columns constant in ``ref`` are dropped."""
    mu, sd = ref.mean(0), ref.std(0)
    keep = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
    return (x[:, keep] - mu[keep]) / sd[keep]


def similar_state_groups(
    z: np.ndarray,
    episode: np.ndarray,
    k: int,
    groups: int,
    rng: np.random.Generator,
    seed_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``groups`` disjoint groups of ``k`` rows of ``z`` [P, D] (standardized), each a seed row
    and the ``k - 1`` rows nearest to it (Euclidean) that are still free, at most one row per
    episode; returns [G, k] int64 row indices, the seed first.

    Disjoint groups make "shuffle an agent's actions within every group" one consistent
    shuffled copy of the data, so a permutation test on them is exact when the actions are
    exchangeable within a group. One row per episode keeps a group's membership a function
    of each member's own state: two rows of one episode would tie a member's state to
    another member's actions through the dynamics. Seeds come in a random order, and rows
    are searched in a random order, so ties between equal distances (states repeat in
    discrete worlds) go to random rows. ``seed_rows`` [P] bool: only these rows may seed a
    group (members still come from every row).
    """
    P = len(z)
    shuffle = rng.permutation(P)
    z, episode = z[shuffle].astype(np.float32), episode[shuffle]  # float32: half the time, ample for a ranking
    free = np.ones(P, dtype=bool)
    out: list[np.ndarray] = []
    z_sq = np.einsum("pd,pd->p", z, z)
    block = max(1, _BLOCK_BYTES // (4 * max(1, P)))
    M = min(P, 8 * k)  # candidates kept per seed; most seeds find k free rows from distinct episodes among them
    order = np.arange(P) if seed_rows is None else np.flatnonzero(np.asarray(seed_rows)[shuffle])
    at = 0
    while len(out) < groups and at < len(order) and free.sum() >= k:
        seeds = order[at : at + block]
        at += len(seeds)
        d = z_sq[None, :] - 2.0 * (z[seeds] @ z.T)  # (b, P): squared distance minus |seed|^2, same ranking
        cand = np.argpartition(d, M - 1, axis=1)[:, :M] if M < P else np.broadcast_to(np.arange(P), (len(seeds), P))
        for row, s in enumerate(seeds):
            if len(out) >= groups or not free[s]:
                continue
            members = _nearest_distinct(s, cand[row], d[row], free, episode, k)
            m = M
            while members is None and m < P:  # the candidates ran short: take more, from the free rows only
                m = min(P, 4 * m)
                dist = np.where(free, d[row], np.inf)
                more = np.argpartition(dist, m - 1)[:m] if m < P else np.arange(P)
                members = _nearest_distinct(s, more, d[row], free, episode, k)
            if members is None:  # fewer than k - 1 other episodes have free rows left: no seed can do better
                return _done(out, shuffle, k)
            free[members] = False
            out.append(members)
    return _done(out, shuffle, k)


def _done(out: list[np.ndarray], shuffle: np.ndarray, k: int) -> np.ndarray:
    """The groups found, as row indices of the caller's (unshuffled) ``z``."""
    return shuffle[np.stack(out)] if out else np.empty((0, k), dtype=np.int64)


def _nearest_distinct(
    seed: int, cand: np.ndarray, dist: np.ndarray, free: np.ndarray, episode: np.ndarray, k: int
) -> np.ndarray | None:
    """``seed`` and the ``k - 1`` free rows of ``cand`` nearest by ``dist``, all from different episodes."""
    cand = cand[free[cand] & (episode[cand] != episode[seed])]
    cand = cand[np.argsort(dist[cand], kind="stable")]
    _, first = np.unique(episode[cand], return_index=True)
    if len(first) < k - 1:
        return None
    return np.concatenate([[seed], cand[np.sort(first)[: k - 1]]])
