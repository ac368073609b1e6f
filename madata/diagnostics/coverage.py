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

import math

import numpy as np

from madata.errors import SchemaError
from madata.spaces import Box, Discrete, Space

_MAX_CODE = 2**62


def action_cells(actions: np.ndarray, space: Space, bins: int) -> tuple[np.ndarray, int]:
    """Cell id [N] int64 of every action of ``actions`` [N, *shape] (equal ids = same cell), and the number of cells."""
    if isinstance(space, Discrete):
        return np.asarray(actions, dtype=np.int64).reshape(-1) - space.start, space.n
    if not isinstance(space, Box):
        raise SchemaError(f"coverage: unsupported action space {type(space).__name__}")
    a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
    d = a.shape[1]
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64).reshape(-1), (d,)).copy()
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64).reshape(-1), (d,)).copy()
    if len(a):
        open_ = ~(np.isfinite(low) & np.isfinite(high))
        low[open_], high[open_] = a[:, open_].min(0), a[:, open_].max(0)
    width = np.where(high > low, high - low, 1.0)
    q = np.clip(np.floor((a - low) / width * bins), 0, bins - 1).astype(np.int64)
    cells = bins**d  # a Python int: exact however many
    if cells >= _MAX_CODE:  # too many cells for one int64 code: number the occupied ones instead
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
    if total < _MAX_CODE:
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
    agents = list(actions)
    N = len(actions[agents[0]])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0FE]))
    codes, cells = [], []
    for a in agents:
        code, c = action_cells(actions[a], spaces[a], bins)
        codes.append(code)
        cells.append(c)
    joint = _joint(codes, cells)
    perms = [[rng.permutation(N) for _ in agents] for _ in range(shuffles)]
    indep_codes = [_joint([code[p] for code, p in zip(codes, ps, strict=True)], cells) for ps in perms]
    indep = [len(np.unique(c)) for c in indep_codes]
    total_joint = math.prod(cells)  # a Python int: exact however many cells

    order = rng.permutation(N)
    sizes = np.unique(np.geomspace(min(100, N), N, curve_points).astype(np.int64))
    curve = {"transitions": sizes.tolist()}
    for a, code in zip(agents, codes, strict=True):
        curve[a] = np.searchsorted(_first_seen(code[order]), sizes).tolist()
    curve["joint"] = np.searchsorted(_first_seen(joint[order]), sizes).tolist()
    if indep_codes:
        curve["independent"] = np.searchsorted(_first_seen(indep_codes[0][order]), sizes).tolist()

    occupied = len(np.unique(joint))
    mean_indep = float(np.mean(indep)) if indep else None
    return {
        "bins": bins,
        "shuffles": shuffles,
        "seed": seed,
        "agents": {
            a: {"cells": c, "occupied": int(len(np.unique(code))), "fraction": len(np.unique(code)) / c}
            for a, code, c in zip(agents, codes, cells, strict=True)
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
