"""What ``madata info`` shows: sizes, spaces, return statistics, behaviour labels, metadata."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from madata.dataset import Dataset
from madata.schema import behaviour_column
from madata.spaces import Box

REFERENCE_HORIZON = 1000  # D4RL's reference scores are returns of 1000-step episodes


def normalized_score(returns, reference: dict[str, float] | None):
    """D4RL's convention: 100 * (return - min) / (max - min); None without reference scores."""
    if not reference:
        return None
    return 100.0 * (np.asarray(returns, dtype=np.float64) - reference["min"]) / (reference["max"] - reference["min"])


def _stats(x: np.ndarray) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def _space(s) -> dict[str, Any]:
    if isinstance(s, Box):
        lo, hi = np.asarray(s.low), np.asarray(s.high)
        bounds = [float(lo.min()), float(hi.max())] if lo.size else []
        return {"type": "box", "shape": list(s.shape), "dtype": s.dtype, "bounds": bounds}
    return {"type": "discrete", "n": s.n, "start": s.start}


def episode_wins(ds: Dataset) -> np.ndarray | None:
    """Whether each episode was won [E] bool, where the collector records it (SMAX: ``provenance["won"]``
    of every episode), else None."""
    flags = []
    for p in ds.episodes.column("provenance").to_pylist():
        won = json.loads(p).get("won") if p else None
        if not isinstance(won, bool):
            return None
        flags.append(won)
    return np.asarray(flags, dtype=bool) if flags else None


def summarize(ds: Dataset) -> dict[str, Any]:
    """A JSON-ready summary of a dataset (or selection)."""
    t = ds.episodes
    returns = t.column("return").to_numpy()
    lengths = t.column("length").to_numpy()
    ends = t.column("end").to_pylist()
    ref = ds.meta.reference_scores
    labels = {a: t.column(behaviour_column(a)).to_pylist() for a in ds.agent_ids}
    per_agent = {}
    for a in ds.agent_ids:
        if any(x is not None for x in labels[a]):
            names, counts = np.unique(np.asarray(labels[a], dtype=object).astype(str), return_counts=True)
            per_agent[a] = {str(k): int(v) for k, v in zip(names, counts, strict=True)}
    won = episode_wins(ds)
    combos: dict[str, list[int]] = {}
    if per_agent:
        for i in range(len(returns)):
            key = ",".join(f"{a}={labels[a][i]}" for a in ds.agent_ids)
            combos.setdefault(key, []).append(i)
    size = ds.store.location.size()
    norm = normalized_score(returns, ref)
    note = None
    horizon = ds.meta.env.get("max_steps")
    if norm is not None and horizon is not None and horizon < REFERENCE_HORIZON:
        note = (
            f"against D4RL's reference returns of {REFERENCE_HORIZON}-step episodes; these episodes stop at "
            f"{horizon} steps, so the scores are not comparable to D4RL's"
        )
    return {
        "path": str(ds.root),
        "env": ds.meta.env,
        "description": ds.meta.description,
        "agents": [
            {"id": a.id, "observation": _space(a.observation_space), "action": _space(a.action_space)}
            for a in ds.agents
        ],
        "state": None if ds.state_space is None else _space(ds.state_space),
        "num_episodes": ds.num_episodes,
        "num_transitions": ds.num_transitions,
        "bytes_on_disk": size,
        "returns": _stats(returns),
        "normalized_scores": None if norm is None else _stats(norm),
        "normalized_note": note,
        "lengths": _stats(lengths.astype(np.float64)),
        "ends": {k: ends.count(k) for k in ("terminated", "truncated")},
        "behaviour_labels": per_agent,
        "wins": None if won is None else {"episodes": int(won.sum()), "rate": float(won.mean())},
        "behaviour_combinations": {
            k: {"episodes": len(v), **_stats(returns[v])} | ({} if won is None else {"win_rate": float(won[v].mean())})
            for k, v in combos.items()
        },
        "reference_scores": ref,
        "schema_version": ds.meta.schema_version,
        "chunk_rows": ds.meta.chunk_rows,
        "created": ds.meta.created,
        "versions": ds.meta.versions,
        "provenance": ds.meta.provenance,
        "complete": ds.record.complete,
    }
