"""Joint versus per-agent action coverage, on a grid of cells.

Each action component is cut into ``bins`` equal-width bins over the agent's action box
(over the observed range where the box is unbounded); a discrete action is its own cell.
Agent ``i``'s cell is the tuple of its components' bins (``bins ** d_i`` cells), a
joint cell the tuple of all agents' cells. Coverage counts occupied cells, so it depends
on which actions occur and not on how often: a dataset stored twice covers exactly what
it covered once.

The yardstick for the joint count is the same count on copies where each agent's
actions are shuffled across the whole dataset independently of the others (same
per-agent actions, same size, agents independent): ``ratio = joint / independent``.
Data whose agents each cover their actions well while their joint actions are
concentrated (one joint policy steering both) has a ratio well below 1; independent
agents have about 1. The ratio says little once the grid has far more cells than the
data has transitions (every transition then gets a cell of its own, in both counts):
``saturation = independent / transitions`` near 1 flags that; use fewer ``bins``.

Cost: ``O(N * sum d_i)`` to quantize, ``O(N log N)`` per distinct count (one per agent,
one joint, one per shuffle); memory ``O(N)``. No subsampling: the counts are exact.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from madata.diagnostics.neighbours import seeded_pool
from madata.errors import SchemaError
from madata.spaces import Box, Discrete, Space

MAX_CODE = 2**62
SA_POOL = 200_000  # rows state_action_coverage groups, by default
_SA_SALT = 0x5AC0  # state_action_coverage's own stream of the diagnosis seed


def state_action_rows(n: int, seed: int) -> np.ndarray:
    """The rows of ``n`` transitions that :func:`state_action_coverage` reads with its default pool (sorted)."""
    return seeded_pool(n, SA_POOL, seed, _SA_SALT)[1]


def cell_bounds(actions: np.ndarray, space: Box) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) [d] float64 that :func:`action_cells` cuts into bins: the box's bounds, and the observed
    range of ``actions`` [N, *shape] on the components where the box is unbounded."""
    a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
    d = a.shape[1]
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64).reshape(-1), (d,)).copy()
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64).reshape(-1), (d,)).copy()
    if len(a):
        open_ = ~(np.isfinite(low) & np.isfinite(high))
        low[open_], high[open_] = a[:, open_].min(0), a[:, open_].max(0)
    return low, high


def cell_count(space: Space, bins: int) -> int:
    """Cells of one agent's action space: ``n`` of a discrete space, ``bins ** components`` of a box (a
    Python int: exact however many)."""
    if isinstance(space, Discrete):
        return space.n
    return bins ** int(np.prod(space.shape, dtype=np.int64))


def action_cells(
    actions: np.ndarray, space: Space, bins: int, bounds: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, int]:
    """Cell id [N] int64 of every action of ``actions`` [N, *shape] (equal ids = same cell), and the number of cells.

    ``bounds``: the (low, high) to cut, by default :func:`cell_bounds` of ``actions``; a reader that sees the
    data a part at a time passes the whole dataset's, so every part is cut on the same grid.
    """
    if isinstance(space, Discrete):
        return np.asarray(actions, dtype=np.int64).reshape(-1) - space.start, space.n
    if not isinstance(space, Box):
        raise SchemaError(f"coverage: unsupported action space {type(space).__name__}")
    a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
    d = a.shape[1]
    low, high = cell_bounds(a, space) if bounds is None else bounds
    width = np.where(high > low, high - low, 1.0)
    q = np.clip(np.floor((a - low) / width * bins), 0, bins - 1).astype(np.int64)
    cells = cell_count(space, bins)
    if cells >= MAX_CODE:  # too many cells for one int64 code: number the occupied ones instead
        if bounds is not None:
            raise SchemaError(
                f"coverage: {bins} bins on each of {d} action components make {cells:.3g} cells, too many to "
                "number a part of the data at a time; use fewer --bins, or diagnose in memory"
            )
        _, inverse = np.unique(q, axis=0, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), cells
    code = np.zeros(len(a), dtype=np.int64)
    for c in range(d):
        code = code * bins + q[:, c]
    return code, cells


def _joint(codes: list[np.ndarray], cells: list[int]) -> np.ndarray:
    """One int64 per row identifying the tuple of per-agent cells (dense ids when the product overflows)."""
    total = 1
    for c in cells:
        total *= c
    if total < MAX_CODE:
        out = np.zeros(len(codes[0]), dtype=np.int64)
        for code, c in zip(codes, cells, strict=True):
            out = out * c + code
        return out
    _, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def _first_seen(code: np.ndarray) -> np.ndarray:
    """Sorted positions where each distinct value of ``code`` first occurs."""
    _, first = np.unique(code, return_index=True)
    return np.sort(first)


def action_coverage(
    actions: dict[str, np.ndarray],
    spaces: dict[str, Space],
    *,
    bins: int = 4,
    shuffles: int = 3,
    seed: int = 0,
    curve_points: int = 24,
) -> dict:
    """Occupied action cells per agent and jointly, against independently shuffled copies.

    ``actions[agent]`` [N, *act_shape] (integers for discrete spaces), ``spaces[agent]``
    its action space. Returns a JSON-ready dict: per-agent and joint ``cells``,
    ``occupied`` and ``fraction``; ``independent`` (mean joint occupied cells over
    ``shuffles`` shuffled copies), ``ratio``, ``saturation``; and ``curve``: distinct
    cells after the first ``n`` transitions of a seeded random order, for ``n`` on a
    geometric grid up to N (per agent, joint, and joint of one shuffled copy).
    """
    if bins < 1:
        raise SchemaError(f"bins: expected at least 1, got {bins}")
    cells = {a: action_cells(actions[a], spaces[a], bins) for a in actions}
    return coverage_of_cells(
        {a: c[0] for a, c in cells.items()},
        {a: c[1] for a, c in cells.items()},
        bins=bins,
        shuffles=shuffles,
        seed=seed,
        curve_points=curve_points,
    )


def coverage_of_cells(
    codes: dict[str, np.ndarray],
    cells: dict[str, int],
    *,
    bins: int,
    shuffles: int = 3,
    seed: int = 0,
    curve_points: int = 24,
) -> dict:
    """:func:`action_coverage` from each agent's cell ids ``codes[agent]`` [N] (:func:`action_cells`) and
    cell count ``cells[agent]``: what the statistic needs of the data, one int64 per agent and transition."""
    agents = list(codes)
    N = len(codes[agents[0]])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0FE]))
    code_list, cell_list = [codes[a] for a in agents], [cells[a] for a in agents]
    joint = _joint(code_list, cell_list)
    indep, first_copy = [], None
    for _ in range(shuffles):  # one shuffled copy at a time: N int64 per agent in memory, not per copy
        perms = [rng.permutation(N) for _ in agents]
        copy = _joint([code[p] for code, p in zip(code_list, perms, strict=True)], cell_list)
        indep.append(len(np.unique(copy)))
        first_copy = copy if first_copy is None else first_copy
    total_joint = math.prod(cell_list)  # a Python int: exact however many cells

    order = rng.permutation(N)
    sizes = np.unique(np.geomspace(min(100, N), N, curve_points).astype(np.int64))
    curve = {"transitions": sizes.tolist()}
    for a, code in zip(agents, code_list, strict=True):
        curve[a] = np.searchsorted(_first_seen(code[order]), sizes).tolist()
    curve["joint"] = np.searchsorted(_first_seen(joint[order]), sizes).tolist()
    if first_copy is not None:
        curve["independent"] = np.searchsorted(_first_seen(first_copy[order]), sizes).tolist()

    occupied = len(np.unique(joint))
    mean_indep = float(np.mean(indep)) if indep else None
    return {
        "bins": bins,
        "shuffles": shuffles,
        "seed": seed,
        "agents": {
            a: {"cells": c, "occupied": int(len(np.unique(code))), "fraction": len(np.unique(code)) / c}
            for a, code, c in zip(agents, code_list, cell_list, strict=True)
        },
        "joint": {
            "cells": total_joint,
            "occupied": occupied,
            "fraction": occupied / total_joint,
        },
        "independent": mean_indep,
        "ratio": None if not mean_indep else occupied / mean_indep,
        "saturation": None if mean_indep is None or N == 0 else mean_indep / N,
        "curve": curve,
    }


def state_action_coverage(
    cond: np.ndarray,
    actions: dict[str, np.ndarray],
    spaces: dict[str, Space],
    episode: np.ndarray,
    row_return: np.ndarray,
    *,
    groups: int = 256,
    group_size: int = 32,
    bins: int = 2,
    pool: int | None = None,
    shuffles: int = 20,
    top: float = 0.25,
    seed: int = 0,
) -> dict:
    """Joint action coverage among similar states: are the combinations of the agents' actions
    seen at a state actually seen together there?

    Groups of ``group_size`` transitions with similar states (one per episode; as the
    dependence statistic forms them, from a seeded pool of at most ``pool`` rows, SA_POOL by default) are
    formed twice: seeded anywhere, and seeded only at states of the episodes in the top
    ``top`` fraction by return ("the states that matter": where the best behaviour in the
    data goes). In each group every action is put in its cell (``bins`` per component, as
    :func:`action_coverage`); with ``c_i`` cells occupied by agent ``i`` and ``c`` joint
    cells occupied, the group's *combination coverage* is ``c / min(group_size, prod c_i)``:
    the share of the per-agent combinations that could appear in the group that do. The
    yardstick: the same on copies where each agent's actions are shuffled within every
    group (``shuffles`` times), what agents acting independently at those states would
    cover. Returns a JSON-ready dict per group kind: the mean and 10th percentile of the
    coverage over groups, the yardstick's mean, and ``ratio = mean / yardstick mean``.

    How to read it: a ratio near 1, joint actions at similar states are as varied as
    independent agents would make them (per-agent mixing covers mismatched combinations);
    well below 1, the agents' actions come in fixed combinations at the same states (one
    joint policy at a time), so a learner sees few of the joint actions it might take there.

    Cost: grouping ``O(groups * pool * state dim)``; the counts ``O(groups * group_size *
    (agents + shuffles))``; memory ``O(pool * state dim)``.
    """
    pool = SA_POOL if pool is None else pool
    if groups < 1 or group_size < 4 or bins < 1 or shuffles < 1 or pool < 1 or not 0 < top <= 1:
        raise SchemaError(
            f"state_action_coverage: groups, shuffles, pool, bins >= 1, group_size >= 4 and 0 < top <= 1 "
            f"expected, got {groups}, {shuffles}, {pool}, {bins}, {group_size}, {top}"
        )
    from madata.diagnostics.neighbours import similar_state_groups, standardize

    agents = list(actions)
    rng, pool_idx = seeded_pool(len(cond), pool, seed, _SA_SALT)
    ep = episode[pool_idx]
    k = int(min(group_size, len(np.unique(ep))))
    if k < 4:
        return {"skipped": f"a group takes one transition per episode and needs at least 4; the data has {k}"}
    pooled = cond[pool_idx].reshape(len(pool_idx), -1).astype(np.float64)
    z = standardize(pooled, pooled)
    codes = np.stack([action_cells(actions[a][pool_idx], spaces[a], bins)[0] for a in agents], 1)  # [P, n]
    ret = row_return[pool_idx]
    top_rows = ret >= np.quantile(ret, 1 - top)
    n_groups = int(min(groups, max(1, len(pool_idx) // (2 * k))))
    out: dict[str, Any] = {"bins": bins, "group_size": k, "pool": int(len(pool_idx)), "top": top, "seed": seed}
    out["shuffles"] = shuffles
    for kind, seeds in (("all_states", None), ("top_return_states", top_rows)):
        members = similar_state_groups(z, ep, k, n_groups, rng, seed_rows=seeds)
        if len(members) == 0:
            out[kind] = None
            continue
        local = codes[members]  # [G, k, n]
        seen = _combination_coverage(local, k)
        ranks = np.tile(np.arange(k), (len(local), 1))
        null = np.stack([_combination_coverage(_shuffle_within_groups(local, ranks, rng), k) for _ in range(shuffles)])
        mean, ind = float(seen.mean()), float(null.mean())
        out[kind] = {
            "groups": int(len(members)),
            "mean": mean,
            "p10": float(np.quantile(seen, 0.1)),
            "independent_mean": ind,
            "ratio": mean / ind if ind > 0 else None,
        }
    return out


def _combination_coverage(local: np.ndarray, k: int) -> np.ndarray:
    """Per group of ``local`` [G, k, n] per-agent cell codes: occupied joint cells / min(k, prod of per-agent ones)."""
    G, _, n = local.shape
    per_agent = np.ones(G)
    for i in range(n):
        per_agent *= _distinct_per_row(local[:, :, i])
    joint = np.zeros((G, k), dtype=np.int64)
    for i in range(n):  # the rows' tuples numbered densely within each group, one agent at a time (no overflow)
        joint = _dense_per_row(joint * k + _dense_per_row(local[:, :, i]))
    return _distinct_per_row(joint) / np.minimum(k, per_agent)


def _shuffle_within_groups(local: np.ndarray, ranks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``local`` [G, k, n] with each agent's column shuffled within every group, independently."""
    return np.stack(
        [np.take_along_axis(local[:, :, i], rng.permuted(ranks, axis=1), 1) for i in range(local.shape[2])], 2
    )


def _distinct_per_row(x: np.ndarray) -> np.ndarray:
    s = np.sort(x, axis=1)
    return 1 + (np.diff(s, axis=1) != 0).sum(1)


def _dense_per_row(x: np.ndarray) -> np.ndarray:
    """Each row's values renumbered 0..(distinct - 1) (at most k values per row, so codes stay small)."""
    order = np.argsort(x, axis=1, kind="stable")
    s = np.take_along_axis(x, order, 1)
    rank = np.concatenate([np.zeros((len(x), 1), np.int64), np.cumsum(np.diff(s, axis=1) != 0, axis=1)], 1)
    out = np.empty_like(rank)
    np.put_along_axis(out, order, rank, 1)
    return out


def saco(state: np.ndarray, actions: dict[str, np.ndarray], decimals: int | None = None) -> float:
    """OG-MARL's SACo: distinct (state, joint action) pairs over transitions, in (0, 1].

    ``state`` [N, ...] and ``actions[agent]`` [N, ...], concatenated per transition and
    compared exactly (``decimals``: rounded first, as OG-MARL's later ``get_saco`` does; its
    published values used no rounding). 1 means no pair repeats; it counts exact repeats, so
    on continuous data it is 1 unless transitions are duplicated. Cost ``O(N log N)``.
    """
    rows = _saco_rows(state, actions, decimals)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    return len(np.unique(keys)) / max(len(rows), 1)


def saco_digests(state: np.ndarray, actions: dict[str, np.ndarray]) -> np.ndarray:
    """A 128-bit digest [N] (``|V16``) of every (state, joint action) row as :func:`saco` compares them: the
    distinct digests of all parts of a dataset, over its transitions, are its SACo (unless two of the
    N rows collide, probability below N**2 / 2**129), in 16 bytes per transition instead of the rows."""
    out = np.empty(len(state), dtype="V16")
    for start in range(0, len(state), 4096):  # float64 rows a block at a time: the digests are what is kept
        block = slice(start, start + 4096)
        rows = _saco_rows(state[block], {a: x[block] for a, x in actions.items()}, None)
        for i, row in enumerate(rows, start):  # blake2b: a keyless hash with no structure for data to collide on
            out[i] = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
    return out


def _saco_rows(state: np.ndarray, actions: dict[str, np.ndarray], decimals: int | None) -> np.ndarray:
    """[N, D + sum A] float64: each transition's state and actions side by side, exactly as compared."""
    rows = np.concatenate(
        [np.asarray(state, dtype=np.float64).reshape(len(state), -1)]
        + [np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in actions.values()],
        axis=1,
    )
    if decimals is not None:
        rows = rows.round(decimals)
    return np.ascontiguousarray(rows + 0.0)  # -0.0 and 0.0 are one value
