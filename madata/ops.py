"""Dataset operations: combine several stores into one, subsample one into a smaller one.

    combine(["medium.zarr", "expert.zarr"], "both.zarr")
    subsample("both.zarr", "half.zarr", count=500, seed=0)
    subsample("both.zarr", "mismatched.zarr", teams="mismatched")

Both write a new store and never touch their sources. They write into a temporary
directory beside the output, run a full ``verify`` on it, and only then rename it into
place, so an interrupted or failed run leaves nothing at the output path. Every episode's
``provenance`` records where it came from::

    {"source": 1, "source_episode": 17, "source_provenance": {...its provenance there...}}

and the dataset's provenance lists the sources (path, commit digest, episode count) and,
for ``subsample``, the selection that was applied.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import madata
from madata.atomic import atomic_directory, check_new_directory
from madata.commit import COMMIT_FILE
from madata.dataset import Dataset
from madata.errors import CorruptionError, SchemaError, UnknownNameError
from madata.integrity import verify
from madata.schema import behaviour_column
from madata.sharded import ShardedStore, record_key
from madata.writer import create

TEAMS = ("matched", "mismatched")  # every agent at the same level, or not


def combine(
    sources: Sequence[str | os.PathLike | Dataset], out: str | os.PathLike, *, progress: bool = False
) -> Dataset:
    """Write the episodes of ``sources`` (in order, each source's episodes in order) to ``out``.

    The sources must hold the same task: the same agents and spaces, state space, reward
    and mask fields, environment record and reference scores; the first difference found
    is named. Returns the new dataset.
    """
    if len(sources) < 2:
        raise SchemaError(f"combine: needs at least two datasets, got {len(sources)}")
    out = check_new_directory(out)
    datasets = [_opened(p) for p in sources]
    first = datasets[0]
    for ds in datasets[1:]:
        diff = _first_difference(first, ds)
        if diff:
            raise SchemaError(f"combine: {ds.root} does not match {first.root}: {diff}")
    provenance = {
        "producer": "madata.combine",
        "sources": [_describe_source(ds) for ds in datasets],
        "madata_version": madata.__version__,
    }
    total = sum(ds.num_episodes for ds in datasets)
    description = f"{total} episodes combined from {len(datasets)} datasets: " + ", ".join(
        f"{_name(ds)} ({ds.num_episodes})" for ds in datasets
    )
    plan = [(k, ds, i) for k, ds in enumerate(datasets) for i in range(ds.num_episodes)]
    return _write(out, first, plan, provenance, description, progress)


def subsample(
    source: str | os.PathLike | Dataset,
    out: str | os.PathLike,
    *,
    count: int | None = None,
    seed: int = 0,
    return_quantiles: tuple[float, float] | None = None,
    behaviour: Mapping[str, str | Sequence[str]] | None = None,
    teams: str | None = None,
    from_source: int | None = None,
    progress: bool = False,
) -> Dataset:
    """Write the episodes of ``source`` that pass every given condition to ``out`` (source order kept).

    ``return_quantiles=(lo, hi)``: returns between the lo- and hi-quantile of the source's
    returns (inclusive; 0 <= lo < hi <= 1). ``behaviour={"agent_0": "medium"}``: those
    labels (a label or a list per agent). ``teams="matched"`` / ``"mismatched"``: every
    agent labelled with the same level, or not (unlabelled episodes are neither).
    ``from_source=k``: the episodes a ``combine`` took from its k-th source. ``count``:
    then keep ``count`` of them drawn uniformly without replacement with ``seed``.
    An empty selection is an error and writes nothing.
    """
    out = check_new_directory(out)
    ds = _opened(source)
    table = ds.episodes
    keep = np.ones(ds.num_episodes, dtype=bool)
    if return_quantiles is not None:
        lo, hi = _quantiles(return_quantiles)
        ret = table.column("return").to_numpy()
        keep &= (ret >= np.quantile(ret, lo)) & (ret <= np.quantile(ret, hi))
    if behaviour:
        keep &= np.isin(ds.episode_ids, ds.select(behaviour=dict(behaviour)).episode_ids)
    if teams is not None:
        keep &= _team_mask(ds, teams)
    if from_source is not None:
        keep &= _from_source(ds, from_source)
    chosen = np.flatnonzero(keep)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise SchemaError(f"subsample: count (--episodes) must be an integer >= 1, got {count!r}")
        if count > len(chosen):
            raise SchemaError(
                f"subsample: {ds.root}: count {count} is more than the {len(chosen)} episodes that pass the other conditions"
            )
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=count, replace=False))
    if len(chosen) == 0:
        raise SchemaError(f"subsample: {ds.root}: no episode passes the selection; nothing was written")
    selection = {
        "count": count,
        "seed": seed if count is not None else None,
        "return_quantiles": list(return_quantiles) if return_quantiles is not None else None,
        "behaviour": dict(behaviour) if behaviour else None,
        "teams": teams,
        "from_source": from_source,
    }
    provenance = {
        "producer": "madata.subsample",
        "sources": [_describe_source(ds)],
        "selection": selection,
        "episodes": [int(ds.episode_ids[i]) for i in chosen],
        "madata_version": madata.__version__,
    }
    said = ", ".join(f"{k}={v}" for k, v in selection.items() if v is not None) or "all"
    description = f"{len(chosen)} of the {ds.num_episodes} episodes of {_name(ds)} ({said})"
    return _write(out, ds, [(0, ds, int(i)) for i in chosen], provenance, description, progress)


# ---------------------------------------------------------------------------- selection


def _quantiles(q: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in q)
    except (TypeError, ValueError):
        raise SchemaError(f"subsample: return_quantiles must be two numbers LO,HI, got {q!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise SchemaError(f"subsample: return_quantiles must satisfy 0 <= LO < HI <= 1, got {lo}, {hi}")
    return lo, hi


def _team_mask(ds: Dataset, teams: str) -> np.ndarray:
    if teams not in TEAMS:
        raise SchemaError(f"subsample: teams must be one of {', '.join(TEAMS)}, got {teams!r}")
    labels = [ds.episodes.column(behaviour_column(a)).to_pylist() for a in ds.agent_ids]
    if all(v is None for col in labels for v in col):
        raise SchemaError(f"subsample: {ds.root}: its episodes carry no behaviour labels, so teams= cannot apply")
    rows = list(zip(*labels, strict=True))
    known = np.array([None not in r for r in rows])
    same = np.array([len(set(r)) == 1 for r in rows])
    return known & (same if teams == "matched" else ~same)


def _from_source(ds: Dataset, k: int) -> np.ndarray:
    n = len(ds.meta.provenance.get("sources", []))
    if ds.meta.provenance.get("producer") != "madata.combine":
        raise SchemaError(f"subsample: {ds.root} was not written by combine, so from_source does not apply")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
        raise UnknownNameError(f"subsample: from_source must be a source index 0..{n - 1}, got {k!r}")
    prov = ds.episodes.column("provenance").to_pylist()
    return np.array([p is not None and json.loads(p).get("source") == k for p in prov])


# ---------------------------------------------------------------------------- checks and writing


def _opened(source: str | os.PathLike | Dataset) -> Dataset:
    return source if isinstance(source, Dataset) else madata.open(source)


def _first_difference(a: Dataset, b: Dataset) -> str | None:
    """The first way two datasets hold different tasks, in words, or None."""
    if a.agent_ids != b.agent_ids:
        return f"agents {b.agent_ids}, expected {a.agent_ids}"
    for x, y in zip(a.agents, b.agents, strict=True):
        for f in fields(x):
            if getattr(x, f.name) != getattr(y, f.name):
                return f"{x.id}.{f.name} is {getattr(y, f.name)}, expected {getattr(x, f.name)}"
    for name in ("state_space", "agent_rewards", "action_masks"):
        if getattr(a.spec, name) != getattr(b.spec, name):
            return f"{name} is {getattr(b.spec, name)}, expected {getattr(a.spec, name)}"
    for key in sorted(set(a.meta.env) | set(b.meta.env)):
        if a.meta.env.get(key) != b.meta.env.get(key):
            return f"env.{key} is {b.meta.env.get(key)!r}, expected {a.meta.env.get(key)!r}"
    if a.meta.reference_scores != b.meta.reference_scores:
        return f"reference_scores are {b.meta.reference_scores}, expected {a.meta.reference_scores}"
    return None


def _name(ds: Dataset) -> str:
    """The last part of a dataset's path or URL."""
    return str(ds.root).rstrip("/").rsplit("/", 1)[-1]


def _describe_source(ds: Dataset) -> dict[str, Any]:
    """Where a source is and the SHA-256 of its commit record (a sharded one's newest root record)."""
    store = ds.store
    key = record_key(store.root_record.sequence) if isinstance(store, ShardedStore) else COMMIT_FILE
    commit = hashlib.sha256(store.location.read(key)).hexdigest()
    path = str(ds.root.resolve()) if isinstance(ds.root, Path) else ds.root
    return {"path": path, "commit_sha256": commit, "episodes": ds.num_episodes}


def _write(
    out: Path,
    like: Dataset,
    plan: list[tuple[int, Dataset, int]],
    provenance: dict[str, Any],
    description: str,
    progress: bool,
) -> Dataset:
    """Copy ``plan`` ((source index, dataset, episode index) in output order) to ``out`` via a verified temporary store."""
    with atomic_directory(out) as tmp:
        writer = create(
            tmp,
            like.agents,
            state_space=like.state_space,
            agent_rewards=like.spec.agent_rewards,
            action_masks=like.spec.action_masks,
            env=like.meta.env,
            description=description,
            reference_scores=like.meta.reference_scores,
            provenance=provenance,
            chunk_rows=like.meta.chunk_rows,
            commit_every=0,
        )
        with writer:
            for k, ds, i in tqdm(plan, unit="ep", desc=provenance["producer"], disable=None if progress else True):
                ep = ds.episode(i)
                writer.add_episode(
                    ep.obs,
                    ep.actions,
                    ep.rewards,
                    ep.terminated,
                    ep.truncated,
                    state=ep.state,
                    agent_rewards=ep.agent_rewards,
                    action_masks=ep.action_masks,
                    behaviour={a: v for a, v in ep.behaviour.items() if v is not None},
                    seed=ep.info["seed"],
                    provenance={
                        "source": k,
                        "source_episode": ep.id,
                        "source_provenance": None
                        if ep.info["provenance"] is None
                        else json.loads(ep.info["provenance"]),
                    },
                )
        report = verify(tmp)
        if not report.ok:
            raise CorruptionError(f"{out}: the written copy failed verify ({report.problems[0]}); nothing was kept")
    return madata.open(out)
