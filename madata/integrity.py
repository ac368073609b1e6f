"""Integrity checks shared by ``madata.open`` (quick) and ``madata verify`` (everything).

Each check yields :class:`Problem` values instead of raising, so ``verify`` can list
everything that is wrong at once; ``open`` raises on the first few. Both work on a
:class:`~madata.store.Store`. ``verify`` streams: it decodes one chunk at a time and keeps
only the per-step flags and rewards (a few bytes per transition), so its memory stays at a
few chunks whatever the dataset's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from madata.commit import PartRecord, write_commit
from madata.errors import CorruptionError, MadataError
from madata.schema import END_KINDS
from madata.sharded import SHARDS_DIR, open_store
from madata.spaces import Box, Discrete
from madata.store import Store, partial_files, read_root


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


def quick_problems(store: Store) -> Iterator[Problem]:
    """The episode table's index, each array's Zarr metadata, every chunk's presence and stored checksum
    (on object storage: its presence, by listing); decodes only partial last chunks (their stored bytes
    change as they fill)."""
    yield from _table_problems(store)
    for group in sorted({str(Path(s.name).parent) for s in store.spec.arrays()} - {"."}):
        problem = store.group_meta_problem(group)
        if problem:
            yield Problem(problem)
    rec = store.record
    # on object storage, reading every chunk to open a dataset would download all of it: there the quick
    # check lists the chunks instead (one request per thousand), and each read still checks what it reads
    listed = None if store.location.local else set(store.location.keys())
    for spec in store.spec.arrays():
        name = spec.name
        problem = store.array_meta_problem(name)
        if problem:
            yield Problem(problem)
            continue
        committed = rec.arrays[name]
        for k in range(store.num_chunks(name)):
            try:
                if committed.stored_crc[k] is None:  # partial last chunk: check its decoded committed rows
                    store.read_chunk(name, k, owned=False)
                elif listed is not None:  # object storage: present, and checked when read
                    if store.chunk_file(name, k) not in listed:
                        where = store.location / store.chunk_file(name, k)
                        yield Problem(str(store.damaged(name, k, f"is missing ({where})")))
                elif zlib.crc32(store.chunk_bytes(name, k)) != committed.stored_crc[k]:
                    yield Problem(
                        f"{store.root}: {store.chunk_location(name, k)} does not match its stored checksum "
                        f"({store.chunk_file(name, k)})"
                    )
            except CorruptionError as e:
                yield Problem(str(e))


def _table_problems(store: Store) -> Iterator[Problem]:
    rec = store.record
    where = f"{store.root}: episode table"
    E = rec.num_episodes
    if E == 0:
        return
    ids, lengths = store.column("episode_id"), store.column("length")
    step_off, obs_off = store.column("step_offset"), store.column("obs_offset")
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
        yield Problem(
            f"{where}: lengths sum to {int(lengths.sum())} but the commit record has {rec.step_rows} step rows"
        )
    ends = set(store.table.column("end").to_pylist())
    if not ends <= set(END_KINDS):
        yield Problem(f"{where}: column 'end' holds {sorted(ends - set(END_KINDS))}, expected {list(END_KINDS)}")


def _episodes_of(store: Store, spec_rows: str, lo: int, rows: np.ndarray) -> np.ndarray:
    """Episode ids of rows ``lo + rows`` (indices into a chunk) of a step or obs array."""
    offsets = store.column("obs_offset" if spec_rows == "obs" else "step_offset")
    return np.unique(np.searchsorted(offsets, lo + rows, side="right") - 1)


def _value_problems(store: Store, name: str, lo: int, block: np.ndarray) -> Iterator[Problem]:
    """A decoded chunk's values against their spaces: finite, inside their Box, valid discrete actions."""
    spec = store.spec.array(name)
    agent = store.spec.agent(spec.agent) if spec.agent else None
    space = None
    if name.startswith("obs/"):
        space = agent.observation_space
    elif name.startswith("action/"):
        space = agent.action_space
    elif name == "state":
        space = store.spec.state_space
    where = f"{store.root}: {name}"
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block).reshape(len(block), -1).all(1)
        if bad.any():
            eps = _episodes_of(store, spec.rows, lo, np.flatnonzero(bad))[:10].tolist()
            yield Problem(f"{where} holds NaN or inf in episodes {eps}")
            return
    if isinstance(space, Box) and np.isfinite(np.r_[np.ravel(space.low), np.ravel(space.high)]).any():
        # the bounds as the writer compared them: cast to the stored dtype (unbounded spaces need no pass)
        low = np.asarray(space.low, dtype=np.float64).astype(block.dtype).reshape(space.shape)
        high = np.asarray(space.high, dtype=np.float64).astype(block.dtype).reshape(space.shape)
        flat = block.reshape(len(block), *space.shape)
        bad = ((flat < low) | (flat > high)).reshape(len(block), -1).any(1)
        if bad.any():
            eps = _episodes_of(store, spec.rows, lo, np.flatnonzero(bad))[:10].tolist()
            yield Problem(f"{where} lies outside its space's bounds in episodes {eps}")
    elif isinstance(space, Discrete):
        first, last = space.start, space.start + space.n - 1
        bad = (block < first) | (block > last)
        if bad.any():
            eps = _episodes_of(store, spec.rows, lo, np.flatnonzero(bad))[:10].tolist()
            yield Problem(f"{where} outside {first}..{last} in episodes {eps}")
        elif store.spec.action_masks:
            ep = np.searchsorted(store.column("step_offset"), lo + np.arange(len(block)), side="right") - 1
            obs_rows = lo + np.arange(len(block)) + ep
            mask = store.read_rows(f"action_mask/{agent.id}", int(obs_rows[0]), int(obs_rows[-1]) + 1, cache=True)
            allowed = mask[obs_rows - obs_rows[0], block - first]
            if not allowed.all():
                yield Problem(
                    f"{where} takes actions its action mask forbids in episodes {np.unique(ep[~allowed])[:10].tolist()}"
                )


def full_problems(store: Store) -> Iterator[Problem]:
    """Decode every chunk against its content checksum and check its values, one chunk at a time;
    the episodes' meaning (ends, returns) is accumulated from the flag and reward chunks as they pass
    (:class:`_EpisodeChecks`: memory per episode, not per step)."""
    episodes = _EpisodeChecks(store)
    damaged = False
    for spec in store.spec.arrays():
        for k in range(store.num_chunks(spec.name)):
            try:
                block = store.read_chunk(spec.name, k, owned=False)
            except CorruptionError as e:
                damaged = True
                yield Problem(str(e))
                continue
            lo = k * store.meta.chunk_rows
            yield from _value_problems(store, spec.name, lo, block)
            episodes.add(spec.name, lo, block)
            del block  # before the next chunk is read: one chunk less at the peak
    if damaged or store.record.num_episodes == 0:
        return
    yield from episodes.problems()


class _EpisodeChecks:
    """Each episode's end flags and return, summed chunk by chunk from the step arrays: O(episodes) memory."""

    def __init__(self, store: Store):
        self.store = store
        self.starts, lengths = store.column("step_offset"), store.column("length")
        self.last = self.starts + lengths - 1
        n = len(self.starts)
        self.end_flag = {"terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool)}
        self.early: set[int] = set()  # episodes with a flag before their last step
        self.returns = np.zeros(n)

    def add(self, name: str, lo: int, block: np.ndarray) -> None:
        """Take chunk rows ``lo ..`` of ``name`` (other arrays are ignored)."""
        if name not in ("terminated", "truncated", "reward") or not len(block):
            return
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1  # the episode of the chunk's first row
        if name == "reward":
            ep = np.searchsorted(self.starts, lo + np.arange(len(block)), side="right") - 1
            sums = np.bincount(ep - first, weights=block.astype(np.float64))
            self.returns[first : first + len(sums)] += sums
            return
        rows = lo + np.flatnonzero(block)
        ep = np.searchsorted(self.starts, rows, side="right") - 1
        at_last = rows == self.last[ep]
        self.end_flag[name][ep[at_last]] = True
        self.early.update(ep[~at_last].tolist())

    def problems(self) -> Iterator[Problem]:
        root = self.store.root
        if self.early:
            yield Problem(
                f"{root}: terminated/truncated set before the last step in episodes {sorted(self.early)[:10]}"
            )
        term, trunc = self.end_flag["terminated"], self.end_flag["truncated"]
        both = term == trunc
        if both.any():
            yield Problem(
                f"{root}: episodes {np.flatnonzero(both)[:10].tolist()} end neither or both terminated and truncated"
            )
        end = np.where(term, "terminated", "truncated")
        stored_end = np.asarray(self.store.table.column("end").to_pylist())
        if (end != stored_end).any():
            bad = np.flatnonzero(end != stored_end)[:10].tolist()
            yield Problem(
                f"{root}: episode table column 'end' disagrees with the terminated/truncated arrays in episodes {bad}"
            )
        off = ~np.isclose(self.returns, self.store.column("return"), rtol=1e-9, atol=1e-9)
        if off.any():
            bad = np.flatnonzero(off)[:10].tolist()
            yield Problem(f"{root}: episode table column 'return' differs from the sum of rewards in episodes {bad}")


def verify(path: str | Path, full: bool = True, storage_options: dict | None = None) -> Report:
    """Check a store (or every shard of a sharded dataset) completely; returns a :class:`Report`
    listing every problem found. ``path``: a directory or an fsspec URL."""
    report = Report(str(path))
    try:
        opened = open_store(path, storage_options)
    except MadataError as e:
        report.problems.append(Problem(str(e)))
        return report
    report.num_episodes, report.num_transitions = opened.record.num_episodes, opened.record.step_rows
    stores = getattr(opened, "shards", [opened])
    for store in stores:
        report.problems += list(quick_problems(store))
    if full and not report.problems:
        for store in stores:
            report.problems += list(full_problems(store))
    report.chunks_checked = sum(store.num_chunks(s.name) for store in stores for s in store.spec.arrays())
    for store in stores:
        extra = next((n for n in (store.extra_rows(s.name) for s in store.spec.arrays()) if n > 0), 0)
        if extra:
            report.notes.append(
                f"{store.root}: {extra} rows beyond the last commit (an interrupted write); --resume discards them"
            )
    leftovers = partial_files(opened.location) if opened.location.local else []
    if leftovers:
        report.notes.append(
            f"{len(leftovers)} temporary files from an interrupted write (e.g. {leftovers[0]}); --resume removes them"
        )
    if hasattr(opened, "root_record"):
        listed = {ref.path for ref in opened.root_record.shards}
        present = {"/".join(k.split("/")[:2]) for k in opened.location.keys(SHARDS_DIR) if k.count("/") > 1}
        if present - listed:
            report.notes.append(
                f"{len(present - listed)} shard(s) no commit lists (left by a killed or refused writer; never read), "
                f"e.g. {sorted(present - listed)[0]}"
            )
        waiting = len(opened.root_record.shards) - len(opened.root_record.visible)
        if waiting:
            report.notes.append(
                f"{waiting} committed shard(s) wait for an earlier gap to be filled (--resume fills it)"
            )
    if not opened.record.complete:
        report.notes.append("the writer did not close this store (interrupted or still running); it can be resumed")
    if opened.record.legacy:
        report.notes.append(
            "written by madata 0.1.0: its metadata and episode table are not covered by checksums "
            "(the arrays are); `madata upgrade` adds them"
        )
    return report


def upgrade(path: str | Path) -> bool:
    """Give a store written by madata 0.1.0 the digests of its metadata and episode-table parts.

    Only after a full :func:`verify` finds nothing wrong (a damaged store is not stamped as
    sound), and only on a store its writer closed. Nothing but ``commit.json`` changes, and
    that atomically. Returns False when the store has the digests already.
    """
    root = Path(path)
    store = Store.open(root)
    if not store.record.legacy:
        return False
    if not store.record.complete:
        raise CorruptionError(
            f"{root}: its writer did not close it (interrupted or still running); "
            "finish or resume the collection before upgrading"
        )
    report = verify(root)
    if not report.ok:
        raise CorruptionError(
            f"{root}: not upgraded, verify found {len(report.problems)} problem(s), the first: {report.problems[0]}"
        )
    _, digest = read_root(root)
    parts = [
        PartRecord(p.path, hashlib.sha256((root / p.path).read_bytes()).hexdigest()) for p in store.record.episode_parts
    ]
    record = dataclasses.replace(
        store.record, episode_parts=parts, metadata_sha256=digest, sequence=store.record.sequence + 1
    )
    write_commit(root, record)
    return True
