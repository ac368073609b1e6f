"""Integrity checks shared by ``madata.open`` (quick) and ``madata verify`` (everything).

Each check yields :class:`Problem` values instead of raising, so ``verify`` can list
everything that is wrong at once; ``open`` raises on the first few.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from madata.dataset import Dataset
from madata.errors import CorruptionError, MadataError
from madata.schema import END_KINDS
from madata.spaces import Discrete
from madata.store import partial_files


@dataclass(frozen=True)
class Problem:
    """Something wrong with a store: where (file or array, chunk, episodes) and what."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Report:
    """What ``verify`` found. ``ok`` when there are no problems; notes are informational."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    num_episodes: int = 0
    num_transitions: int = 0
    chunks_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "problems": [str(p) for p in self.problems],
            "notes": self.notes,
            "num_episodes": self.num_episodes,
            "num_transitions": self.num_transitions,
            "chunks_checked": self.chunks_checked,
        }


def quick_problems(ds: Dataset) -> Iterator[Problem]:
    """Structure, shapes, chunk presence and stored checksums; decodes only partial last chunks."""
    yield from _table_problems(ds)
    rec, C = ds.record, ds.meta.chunk_rows
    for spec in ds.spec.arrays():
        name = spec.name
        committed = rec.arrays.get(name)
        if committed is None:
            yield Problem(f"{ds.root}: commit record lacks the array {name}")
            continue
        want_rows = rec.obs_rows if spec.rows == "obs" else rec.step_rows
        if committed.rows != want_rows:
            yield Problem(
                f"{ds.root}: {name} has {committed.rows} committed rows, expected {want_rows} "
                f"({spec.rows} rows of {rec.num_episodes} episodes): per-agent arrays of different lengths"
            )
            continue
        try:
            arr = ds.array(name)
        except CorruptionError as e:
            yield Problem(str(e))
            continue
        if str(arr.dtype) != spec.dtype or tuple(arr.shape[1:]) != spec.feature_shape:
            yield Problem(
                f"{ds.root}: {name} has dtype {arr.dtype} and row shape {tuple(arr.shape[1:])}, "
                f"expected {spec.dtype} and {spec.feature_shape}"
            )
            continue
        if arr.shape[0] < committed.rows:
            first_missing = ds.chunk_location(name, arr.shape[0] // C) if arr.shape[0] else name
            yield Problem(f"{ds.root}: {name} has {arr.shape[0]} rows but {committed.rows} were committed (from {first_missing})")
            continue
        n_chunks = -(-committed.rows // C)
        if len(committed.content_crc) != n_chunks:
            yield Problem(f"{ds.root}: commit record lists {len(committed.content_crc)} checksums for {name}, expected {n_chunks}")
            continue
        for k in range(n_chunks):
            path = ds.chunk_path(name, k)
            stored = committed.stored_crc[k]
            try:
                if stored is None:  # partial last chunk: check its decoded committed rows
                    ds.read_rows(name, k * C, min((k + 1) * C, committed.rows))
                elif zlib.crc32(path.read_bytes()) != stored:
                    yield Problem(f"{ds.root}: {ds.chunk_location(name, k)} does not match its stored checksum ({path})")
            except FileNotFoundError:
                yield Problem(f"{ds.root}: {ds.chunk_location(name, k)} is missing ({path} does not exist)")
            except CorruptionError as e:
                yield Problem(str(e))


def _table_problems(ds: Dataset) -> Iterator[Problem]:
    t, rec = ds._table, ds.record
    where = f"{ds.root}: episode table"
    E = rec.num_episodes
    if E == 0:
        return
    ids = t.column("episode_id").to_numpy()
    lengths = t.column("length").to_numpy()
    step_off = t.column("step_offset").to_numpy()
    obs_off = t.column("obs_offset").to_numpy()
    if not np.array_equal(ids, np.arange(E)):
        bad = int(np.flatnonzero(ids != np.arange(E))[0])
        yield Problem(f"{where}: episode_id must be 0..{E - 1} in order; row {bad} has {ids[bad]}")
    if (lengths < 1).any():
        yield Problem(f"{where}: episodes {np.flatnonzero(lengths < 1)[:5].tolist()} have length < 1")
    expect = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if not np.array_equal(step_off, expect):
        bad = int(np.flatnonzero(step_off != expect)[0])
        yield Problem(f"{where}: step_offset of episode {bad} is {step_off[bad]}, expected {expect[bad]}")
    if not np.array_equal(obs_off, step_off + np.arange(E)):
        bad = int(np.flatnonzero(obs_off != step_off + np.arange(E))[0])
        yield Problem(f"{where}: obs_offset of episode {bad} is {obs_off[bad]}, expected {step_off[bad] + bad}")
    if int(lengths.sum()) != rec.step_rows:
        yield Problem(f"{where}: lengths sum to {int(lengths.sum())} but the commit record has {rec.step_rows} step rows")
    ends = set(t.column("end").to_pylist())
    if not ends <= set(END_KINDS):
        yield Problem(f"{where}: column 'end' holds {sorted(ends - set(END_KINDS))}, expected {list(END_KINDS)}")


def full_problems(ds: Dataset) -> Iterator[Problem]:
    """Decode every chunk against its content checksum, then check the data's meaning."""
    C = ds.meta.chunk_rows
    data: dict[str, np.ndarray] = {}
    damaged = False
    for spec in ds.spec.arrays():
        rows = ds.record.arrays[spec.name].rows
        parts = []
        for k in range(-(-rows // C)):
            try:
                parts.append(ds.read_rows(spec.name, k * C, min((k + 1) * C, rows)))
            except CorruptionError as e:
                damaged = True
                yield Problem(str(e))
        if spec.name in ("terminated", "truncated", "reward") or spec.name.startswith(("action", "obs/")):
            data[spec.name] = np.concatenate(parts) if parts else spec.empty(0)
    if damaged or ds.record.num_episodes == 0:
        return
    yield from _semantic_problems(ds, data)


def _semantic_problems(ds: Dataset, data: dict[str, np.ndarray]) -> Iterator[Problem]:
    t = ds._table
    lengths = t.column("length").to_numpy()
    starts = t.column("step_offset").to_numpy()
    last = starts + lengths - 1
    term, trunc = data["terminated"], data["truncated"]
    flagged = np.flatnonzero(term | trunc)
    early = np.setdiff1d(flagged, last)
    if early.size:
        ep = np.searchsorted(starts, early, side="right") - 1
        yield Problem(f"{ds.root}: terminated/truncated set before the last step in episodes {np.unique(ep)[:10].tolist()}")
    both = term[last] == trunc[last]
    if both.any():
        yield Problem(f"{ds.root}: episodes {np.flatnonzero(both)[:10].tolist()} end neither or both terminated and truncated")
    end = np.where(term[last], "terminated", "truncated")
    stored_end = np.asarray(t.column("end").to_pylist())
    if (end != stored_end).any():
        bad = np.flatnonzero(end != stored_end)[:10].tolist()
        yield Problem(f"{ds.root}: episode table column 'end' disagrees with the terminated/truncated arrays in episodes {bad}")
    returns = np.add.reduceat(data["reward"], starts) if len(starts) else np.zeros(0)
    stored_ret = t.column("return").to_numpy()
    off = ~np.isclose(returns, stored_ret, rtol=1e-9, atol=1e-9)
    if off.any():
        bad = np.flatnonzero(off)[:10].tolist()
        yield Problem(f"{ds.root}: episode table column 'return' differs from the sum of rewards in episodes {bad}")
    for a in ds.spec.agents:
        act = data[f"action/{a.id}"]
        if isinstance(a.action_space, Discrete):
            lo, hi = a.action_space.start, a.action_space.start + a.action_space.n - 1
            bad_rows = np.flatnonzero((act < lo) | (act > hi))
            if bad_rows.size:
                ep = np.unique(np.searchsorted(starts, bad_rows, side="right") - 1)[:10].tolist()
                yield Problem(f"{ds.root}: action/{a.id} outside {lo}..{hi} in episodes {ep}")
            if ds.spec.action_masks:
                mask = ds.read_rows(f"action_mask/{a.id}")
                ep_of = np.repeat(np.arange(len(lengths)), lengths)
                allowed = mask[np.arange(len(act)) + ep_of, np.clip(act - lo, 0, a.action_space.n - 1)]
                if not allowed.all():
                    ep = np.unique(ep_of[~allowed])[:10].tolist()
                    yield Problem(f"{ds.root}: action/{a.id} takes actions its action mask forbids in episodes {ep}")


def verify(path: str | Path, full: bool = True) -> Report:
    """Check a store completely; returns a :class:`Report` listing every problem found."""
    report = Report(str(path))
    try:
        ds = Dataset.load(path)
    except MadataError as e:
        report.problems.append(Problem(str(e)))
        return report
    report.num_episodes, report.num_transitions = ds.num_episodes, ds.num_transitions
    report.problems += list(quick_problems(ds))
    if full and not report.problems:
        report.problems += list(full_problems(ds))
    C = ds.meta.chunk_rows
    report.chunks_checked = sum(-(-a.rows // C) for a in ds.record.arrays.values())
    for spec in ds.spec.arrays():
        try:
            extra = ds.array(spec.name).shape[0] - ds.record.arrays[spec.name].rows
        except (CorruptionError, KeyError):
            continue
        if extra > 0:
            report.notes.append(f"{spec.name}: {extra} rows beyond the last commit (an interrupted write); --resume discards them")
            break
    leftovers = partial_files(Path(path))
    if leftovers:
        report.notes.append(f"{len(leftovers)} temporary files from an interrupted write (e.g. {leftovers[0]}); --resume removes them")
    if not ds.record.complete:
        report.notes.append("the writer did not close this store (interrupted or still running); it can be resumed")
    return report
