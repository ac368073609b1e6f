"""Diagnose a dataset larger than memory: one pass over it in parts of whole episodes, on Dask workers if given.

The in-memory path (:func:`~madata.diagnostics.core.load_inputs`) holds every conditioning vector
[N, D] and every action, then SACo's rows in float64 on top. None of the statistics needs all of that:

- the dependence statistic, the state-action coverage and the behaviour types read the
  conditioning vectors and actions only at the rows they sample. Those rows are drawn first, by the
  functions the statistics draw them with (same seeds), and only they are kept
  (:class:`Gathered`);
- action coverage needs one cell id per agent and transition (int64), cut on the whole dataset's
  grid (a first pass over the actions finds the range where an action box is unbounded);
- SACo needs to count distinct (state, joint action) rows: a 128-bit digest of each is kept.

So the driver holds about ``8 * (agents + 5)`` bytes per transition plus the sampled rows, and
each part (a task on a Dask worker when a client is given) holds one part's arrays. The answers
are the in-memory path's, number for number (SACo's unless two of the N digests collide,
probability below N**2 / 2**129).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from madata.dataset import Dataset
from madata.diagnostics.coverage import action_cells, cell_bounds, cell_count, saco_digests, state_action_rows
from madata.diagnostics.dependence import dependence_rows
from madata.diagnostics.types import types_rows
from madata.spaces import Box, Discrete

PART_TRANSITIONS = 32_768  # transitions per part (whole episodes): a part's arrays are what a reader holds at once


@dataclass
class Gathered:
    """The rows ``rows`` (sorted) of an array of ``n`` rows, read where the statistics look and nowhere else.

    Indexing with an array of row numbers returns those rows like the full array would; a row that
    was not read is an error (a statistic reading rows its sampler did not draw is a bug).
    """

    n: int
    rows: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        pos = np.minimum(np.searchsorted(self.rows, idx), max(len(self.rows) - 1, 0))
        if idx.size and (len(self.rows) == 0 or not np.array_equal(self.rows[pos], idx)):
            raise IndexError("diagnose: a statistic read rows that were not gathered for it")
        return self.values[pos]


def conditioning_name(ds: Dataset) -> str:
    return "state" if ds.state_space is not None else "joint observation (every agent's observation side by side)"


def conditioning(ds: Dataset) -> np.ndarray:
    """What the statistics condition on, [N, D]: the global state, else every agent's observation side by
    side (flattened)."""
    if ds.state_space is not None:
        state = ds.transitions(fields=["state"])["state"]
        return state.reshape(len(state), -1)
    # one agent at a time: observations are the largest arrays
    obs = [ds.transitions(fields=["obs"], agents=[a])[f"obs/{a}"] for a in ds.agent_ids]
    return np.concatenate([o.reshape(len(o), -1) for o in obs], axis=1)


def features_of(ds: Dataset, actions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Actions as float features {agent: [N, d]}: Box actions flattened, discrete ones one-hot."""
    out = {}
    for spec in ds.agents:
        x = actions[spec.id]
        if isinstance(spec.action_space, Discrete):
            out[spec.id] = np.eye(spec.action_space.n, dtype=np.float32)[np.asarray(x) - spec.action_space.start]
        else:
            out[spec.id] = x.reshape(len(x), -1)
    return out


def sampled_rows(episode: np.ndarray, *, pool: int, seed: int) -> np.ndarray:
    """Every row (sorted) that the dependence statistic, the state-action coverage and the behaviour
    types read, for ``episode`` [N] each transition's episode and the diagnosis ``pool`` and ``seed``."""
    n = len(episode)
    return np.unique(
        np.concatenate([dependence_rows(n, pool, seed), state_action_rows(n, seed), types_rows(episode, seed)])
    )


def _unbounded(space) -> bool:
    """A Box with a component of infinite bound: coverage cuts it on the data's observed range."""
    return isinstance(space, Box) and not (np.isfinite(space.low).all() and np.isfinite(space.high).all())


def _part_bounds(ds: Dataset, episodes: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per Box agent, the (low, high) that cuts this part's actions (:func:`cell_bounds`)."""
    part = ds.select(episodes=episodes)
    acts = part.transitions(fields=["action"])
    return {
        s.id: cell_bounds(acts[f"action/{s.id}"], s.action_space) for s in ds.agents if isinstance(s.action_space, Box)
    }


def _scan_part(
    ds: Dataset,
    episodes: np.ndarray,
    wanted: np.ndarray,
    bins: int,
    bounds: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """One part's cell ids per agent [n], SACo digests [n] (with a global state), and the conditioning
    vectors and actions at ``wanted`` (row numbers within the part)."""
    part = ds.select(episodes=episodes)
    cond = conditioning(part)
    acts = part.transitions(fields=["action"])
    actions = {a: acts[f"action/{a}"] for a in ds.agent_ids}
    return {
        "codes": {s.id: action_cells(actions[s.id], s.action_space, bins, bounds.get(s.id))[0] for s in ds.agents},
        "digests": saco_digests(cond, actions) if ds.state_space is not None else None,
        "cond": cond[wanted],
        "actions": {a: x[wanted] for a, x in actions.items()},
    }


def _each(client: Any, fn, ds: Any, args: list[tuple], desc: str, sizes: list[int], progress: bool):
    """``(i, fn(ds, *args[i]))`` for every ``i``, as each finishes: here in order, or as Dask tasks on
    ``client``'s workers (``ds`` then the future of the dataset scattered to them). The caller keeps what
    it needs of each result and drops the rest."""
    with tqdm(
        total=sum(sizes), desc=desc, unit="transition", unit_scale=True, disable=None if progress else True,
        file=sys.stderr, mininterval=0.5,
    ) as bar:  # fmt: skip
        if client is None:
            for i, a in enumerate(args):
                yield i, fn(ds, *a)
                bar.update(sizes[i])
            return
        from dask.distributed import as_completed

        futures = [client.submit(fn, ds, *a, pure=False) for a in args]
        index = {f.key: i for i, f in enumerate(futures)}
        for f in as_completed(futures):
            i = index[f.key]
            result = f.result()
            f.release()
            yield i, result
            bar.update(sizes[i])


class _Filled:
    """Arrays of ``n`` rows filled a slice at a time, allocated when the first slice shows dtype and shape."""

    def __init__(self, n: int):
        self.n, self.arrays = n, {}

    def put(self, key: str, at: int, values: np.ndarray) -> None:
        if key not in self.arrays:
            self.arrays[key] = np.empty((self.n, *values.shape[1:]), values.dtype)
        self.arrays[key][at : at + len(values)] = values


def stream_inputs(
    ds: Dataset,
    *,
    bins: int,
    pool: int,
    seed: int,
    client: Any = None,
    part_transitions: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """What :func:`~madata.diagnostics.core.diagnose` reads of ``ds``, read part by part (module docstring).

    Returns ``cond``, ``actions`` and ``features`` as :class:`Gathered` rows, ``episode`` [N],
    ``codes`` {agent: [N] int64} and ``cells`` {agent: int} (:func:`~madata.diagnostics.coverage.
    action_cells` with ``bins``), ``saco`` (None without a global state), ``cond_name`` and ``parts``.
    ``client``: a Dask client whose workers read the parts (they must reach ``ds.root``).
    """
    episode = ds.transitions(fields=["episode_id"])["episode_id"]
    n = len(episode)
    parts = ds.episode_groups(part_transitions or PART_TRANSITIONS)
    ends = np.cumsum(ds.episode_lengths())[np.cumsum([len(p) for p in parts]) - 1]  # each part's last row + 1
    starts = np.r_[0, ends[:-1]].astype(np.int64)
    sizes = (ends - starts).tolist()
    wanted = sampled_rows(episode, pool=pool, seed=seed)
    cut = np.searchsorted(wanted, np.r_[starts, n])
    ds_ref: Any = ds
    if client is not None:  # the dataset's description travels to each worker once, for both passes
        ds_ref = client.scatter(ds, broadcast=True, hash=False)
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if any(_unbounded(s.action_space) for s in ds.agents):  # else every box's own bounds cut its cells
        found = dict(
            _each(client, _part_bounds, ds_ref, [(p,) for p in parts], "diagnose: action ranges", sizes, progress)
        )
        for a in found[0]:
            bounds[a] = (np.min([f[a][0] for f in found.values()], 0), np.max([f[a][1] for f in found.values()], 0))
    args = [(p, wanted[cut[i] : cut[i + 1]] - starts[i], bins, bounds) for i, p in enumerate(parts)]
    per_row, sampled = _Filled(n), _Filled(len(wanted))  # each part's results go straight to their place
    for i, part in _each(client, _scan_part, ds_ref, args, "diagnose: read", sizes, progress):
        for a in ds.agent_ids:
            per_row.put(f"codes/{a}", starts[i], part["codes"][a])
            sampled.put(f"actions/{a}", cut[i], part["actions"][a])
        if part["digests"] is not None:
            per_row.put("digests", starts[i], part["digests"])
        sampled.put("cond", cut[i], part["cond"])
    actions = {a: sampled.arrays[f"actions/{a}"] for a in ds.agent_ids}
    digests = per_row.arrays.get("digests")
    return {
        "cond": Gathered(n, wanted, sampled.arrays["cond"]),
        "cond_name": conditioning_name(ds),
        "actions": {a: Gathered(n, wanted, x) for a, x in actions.items()},
        "features": {a: Gathered(n, wanted, f) for a, f in features_of(ds, actions).items()},
        "episode": episode,
        "codes": {a: per_row.arrays[f"codes/{a}"] for a in ds.agent_ids},
        "cells": {s.id: cell_count(s.action_space, bins) for s in ds.agents},
        "saco": None if digests is None else len(np.unique(digests)) / max(n, 1),
        "parts": len(parts),
    }
