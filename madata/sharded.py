"""Sharded datasets: one dataset made of shards, each a whole madata store with one writer.

Object storage has no rename, and two writers in one Zarr chunk silently lose each other's
rows. So a dataset that lives on object storage, or that several workers write at once, is
a root that lists shards::

    DATASET/
      zarr.json                  root group; attribute "madata" holds the metadata (as in a store)
      commits/0000000007.json    root commit records, each created once, never replaced
      shards/000000500-<token>/  a madata store (docs/format.md) holding episodes 500, 501, ...

* A shard is written by exactly one writer, under a name nobody else uses (its first
  episode id and a random token), and nobody writes it once a root record lists it. Its
  own commit protocol is that of any store: on object storage each commit record is one
  PUT, which readers see whole or not at all.
* A root commit record says which shards exist and how many of each shard's episodes
  count. It is created with a create-if-absent write (``If-None-Match: *`` on S3, a hard
  link locally) under the next sequence number, so of two writers that both read record
  ``n``, exactly one creates ``n + 1``; the other gets a clear error and its shard stays
  unlisted. Readers take the record with the highest sequence.
* The dataset is the shards' episodes in id order, from episode 0 up to the first gap:
  a distributed collection commits each shard as it finishes, so one may be listed before
  an earlier one exists; it counts once the gap is filled. A resumed collection collects
  the gaps only.

Nothing is copied to form the dataset, and a reader sees the same arrays and episode table
as from a single store holding the same episodes.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from madata.commit import ArrayCommit, CommitRecord
from madata.errors import CorruptionError, DatasetExistsError, DatasetNotFoundError, SchemaError
from madata.location import Location, location
from madata.schema import SCHEMA_VERSION, Metadata, dumps, episode_table_schema
from madata.store import ATTR, Store, StoreBase, metadata_digest, read_root

COMMITS_DIR = "commits"
SHARDS_DIR = "shards"


class ConcurrentWriterError(DatasetExistsError):
    """Another writer committed to the same sharded dataset first."""


@dataclass(frozen=True)
class ShardRef:
    """One listed shard: its path under the root, the id of its first episode, and how many of its
    episodes count (a prefix of what the shard holds)."""

    path: str
    first_episode: int
    episodes: int

    @property
    def stop(self) -> int:
        return self.first_episode + self.episodes

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "first_episode": self.first_episode, "episodes": self.episodes}


@dataclass
class RootRecord:
    """A root commit record: the listed shards (sorted by first episode, never overlapping)."""

    sequence: int
    metadata_sha256: str
    shards: list[ShardRef] = field(default_factory=list)
    complete: bool = False

    @property
    def visible(self) -> list[ShardRef]:
        """The shards that form the dataset: from episode 0 up to the first gap."""
        out, end = [], 0
        for s in self.shards:
            if s.first_episode != end:
                break
            out.append(s)
            end = s.stop
        return out

    @property
    def num_episodes(self) -> int:
        return sum(s.episodes for s in self.visible)

    def with_shard(self, shard: ShardRef, complete: bool = False) -> RootRecord:
        """The next record: ``shard`` added, or replacing the listed shard of the same path."""
        shards = sorted([s for s in self.shards if s.path != shard.path] + [shard], key=lambda s: s.first_episode)
        return RootRecord(self.sequence + 1, self.metadata_sha256, shards, complete)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "layout": "sharded",
            "sequence": self.sequence,
            "metadata_sha256": self.metadata_sha256,
            "shards": [s.to_json() for s in self.shards],
            "complete": self.complete,
        }


def record_key(sequence: int) -> str:
    return f"{COMMITS_DIR}/{sequence:010d}.json"


def parse_root_record(obj: Any, where: str) -> RootRecord:
    """Parse and check a root commit record; every failure names the file and the field."""
    if not isinstance(obj, dict) or obj.get("layout") != "sharded":
        raise CorruptionError(f"{where}: expected a sharded dataset's commit record (layout 'sharded')")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise CorruptionError(f"{where}: schema_version {obj.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    try:
        shards = [ShardRef(str(s["path"]), int(s["first_episode"]), int(s["episodes"])) for s in obj["shards"]]
        rec = RootRecord(int(obj["sequence"]), str(obj["metadata_sha256"]), shards, obj.get("complete") is True)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError(f"{where}: malformed commit record ({type(e).__name__}: {e})") from None
    end = 0
    for s in rec.shards:
        if not s.path.startswith(SHARDS_DIR + "/") or ".." in Path(s.path).parts:
            raise CorruptionError(f"{where}: shard path {s.path!r} is not under {SHARDS_DIR}/")
        if s.first_episode < end or s.episodes < 0:
            raise CorruptionError(f"{where}: shard {s.path} (episodes from {s.first_episode}) overlaps the one before")
        end = s.stop
    return rec


def read_root_record(loc: Location, listed: list[str] | None = None) -> RootRecord:
    """The newest root commit record (highest sequence); a damaged one is an error, never skipped.
    ``listed``: the keys under ``commits/`` if the caller listed them already."""
    listed = loc.keys(COMMITS_DIR) if listed is None else listed
    keys = [k for k in listed if k.endswith(".json") and k[len(COMMITS_DIR) + 1 : -5].isdigit()]
    if not keys:
        raise DatasetNotFoundError(f"{loc}: not a sharded madata dataset (no commit records under {COMMITS_DIR}/)")
    newest = max(keys, key=lambda k: int(k[len(COMMITS_DIR) + 1 : -5]))
    try:
        obj = json.loads(loc.read(newest).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(f"{loc / newest}: commit record is not valid UTF-8 JSON ({e})") from None
    rec = parse_root_record(obj, loc / newest)
    if record_key(rec.sequence) != newest:
        raise CorruptionError(f"{loc / newest}: holds sequence {rec.sequence}, its name says otherwise")
    return rec


# ---------------------------------------------------------------- writing


def create_root(loc: Location, meta: Metadata) -> RootRecord:
    """Create an empty sharded dataset at ``loc``: the root group and commit record 0, each created
    only if absent, so a second creator is refused before it writes anything else."""
    if loc.local and loc.root.exists() and (not loc.root.is_dir() or any(loc.root.iterdir())):
        raise DatasetExistsError(f"{loc}: path exists and is not empty; use --resume to continue it or choose another")
    attribute = json.loads(json.dumps(meta.to_json()))
    group = {"zarr_format": 3, "node_type": "group", "attributes": {ATTR: attribute}}
    try:
        loc.create("zarr.json", json.dumps(group, indent=2).encode())
    except FileExistsError:
        raise DatasetExistsError(f"{loc}: a dataset exists there; use --resume to continue it") from None
    # so that zarr readers can walk from the root to every shard (Zarr v3 has no implicit groups)
    loc.write(
        f"{SHARDS_DIR}/zarr.json", json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()
    )
    rec = RootRecord(0, metadata_digest(attribute))
    commit_root(loc, rec)
    return rec


def commit_root(loc: Location, rec: RootRecord) -> None:
    """Create record ``rec.sequence``; if another writer created it first, refuse with a clear error."""
    try:
        loc.create(record_key(rec.sequence), dumps(rec.to_json()).encode())
    except FileExistsError:
        raise ConcurrentWriterError(
            f"{loc}: another writer committed record {rec.sequence} first; two collections write this dataset at "
            "once. This one stops; what was committed is intact (its own shard stays unlisted)"
        ) from None


def new_shard_path(first_episode: int) -> str:
    """A shard name nobody else will pick: its first episode (for order when listing) and a random token."""
    return f"{SHARDS_DIR}/{first_episode:09d}-{secrets.token_hex(4)}"


def shard_writer(
    root: str | os.PathLike | Location,
    meta: Metadata | None = None,
    *,
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    commit_every: int = 10,
    commit_seconds: float = 1.0,
):
    """The writer of a sharded dataset for one process: it writes a new shard after the dataset's
    last visible episode, and each of its commits is also a root commit that lists the shard.
    ``meta`` creates the dataset; ``resume=True`` continues one (a new shard, after the gaps-free prefix)."""
    from madata.writer import DatasetWriter, stamp

    loc = location(root, storage_options)
    if resume:
        meta, digest = read_root(loc)
        rec = read_root_record(loc)
        if rec.metadata_sha256 != digest:
            raise CorruptionError(f"{loc / 'zarr.json'}: the metadata does not match the digest in its commit record")
        if len(rec.visible) < len(rec.shards):  # one process appends at the end; a gap is a distributed job's
            gap = rec.shards[len(rec.visible)]
            raise DatasetExistsError(
                f"{loc}: episodes {rec.num_episodes}..{gap.first_episode - 1} are missing before committed ones "
                "(a distributed collection was stopped); resume it with --workers or --scheduler, which fill gaps"
            )
    else:
        rec = create_root(loc, stamp(meta))
    first = rec.num_episodes
    path = new_shard_path(first)
    writer = DatasetWriter.create(loc.child(path), meta, commit_every, commit_seconds)
    return ShardWriter(writer, loc, rec, path, first)


class ShardWriter:
    """A :class:`~madata.writer.DatasetWriter` of one shard whose commits also commit the root.

    ``num_episodes`` and the ids ``add_episode`` returns count from the dataset's first
    episode, not the shard's."""

    def __init__(self, inner, root: Location, record: RootRecord, path: str, first_episode: int):
        self.inner, self.location, self.record, self.path, self.first = inner, root, record, path, first_episode
        self.root = root.root if root.local else root.url
        self._lost = False
        inner.after_commit = self._commit_root

    @property
    def num_episodes(self) -> int:
        return self.first + self.inner.num_episodes

    def add_episode(self, *args: Any, **kwargs: Any) -> int:
        return self.first + self.inner.add_episode(*args, **kwargs)

    def commit(self) -> None:
        self.inner.commit()

    def close(self) -> None:
        self.inner.close()

    def _commit_root(self, shard_record: CommitRecord, closing: bool) -> None:
        if self._lost:  # another writer owns the dataset now: every later commit is refused too
            raise ConcurrentWriterError(f"{self.location}: another writer committed first; this writer cannot commit")
        nxt = self.record.with_shard(ShardRef(self.path, self.first, shard_record.num_episodes), complete=closing)
        try:
            commit_root(self.location, nxt)
        except ConcurrentWriterError:
            self._lost = True
            raise
        self.record = nxt

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.inner.__exit__(exc_type, exc, tb)


# ---------------------------------------------------------------- reading


class ShardedStore(StoreBase):
    """A sharded dataset opened for reading: the same interface as :class:`~madata.store.Store` for
    :class:`~madata.dataset.Dataset` (``meta``, ``record``, ``table``, ``column``, ``read_rows``),
    reading each shard's rows through that shard's own checked Store."""

    def __init__(self, loc: Location, meta: Metadata, record: RootRecord, shards: list[Store], refs: list[ShardRef]):
        self.location, self.meta, self.root_record = loc, meta, record
        self.shards, self.refs = shards, refs
        tables, self._step_start, self._obs_start = [], [0], [0]
        for store, ref in zip(shards, refs, strict=True):
            t = store.table.slice(0, ref.episodes)
            lengths = t.column("length").to_numpy()
            steps = self._step_start[-1]
            tables.append(_shift(t, ref.first_episode, steps, steps + ref.first_episode))
            self._step_start.append(steps + int(lengths.sum()))
            self._obs_start.append(self._step_start[-1] + ref.stop)
        self.table = pa.concat_tables(tables).combine_chunks() if tables else _empty_table(meta)
        n, steps = len(self.table), self._step_start[-1]
        self.record = CommitRecord(
            sequence=record.sequence,
            num_episodes=n,
            step_rows=steps,
            obs_rows=steps + n,
            arrays={s.name: ArrayCommit(steps + n if s.rows == "obs" else steps) for s in meta.spec.arrays()},
            metadata_sha256=record.metadata_sha256,
            complete=record.complete,
        )
        self._columns: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, loc: Location, listed: list[str] | None = None) -> ShardedStore:
        """Open the sharded dataset at ``loc`` (``listed``: the keys under ``commits/``, if known)."""
        meta, digest = read_root(loc)
        record = read_root_record(loc, listed)
        if record.metadata_sha256 != digest:
            raise CorruptionError(
                f"{loc / 'zarr.json'}: the dataset metadata does not match the digest in its commit record; "
                "it was edited or damaged after it was written"
            )
        refs = record.visible

        def open_shard(ref: ShardRef) -> Store:
            store = Store.open(loc.child(ref.path))
            if store.record.metadata_sha256 != digest:
                raise CorruptionError(f"{loc / ref.path}: the shard's metadata differs from the dataset's")
            if store.record.num_episodes < ref.episodes:
                raise CorruptionError(
                    f"{loc / ref.path}: the shard holds {store.record.num_episodes} episodes, "
                    f"the commit record lists {ref.episodes}"
                )
            return store

        return cls(loc, meta, record, loc.map(open_shard, refs), refs)

    def _pieces(self, name: str, start: int, stop: int) -> list[tuple[int, int, int]]:
        """``(shard, start, stop)`` in shard rows of the pieces that make rows ``[start, stop)`` of an array."""
        bounds = self._obs_start if self.spec.array(name).rows == "obs" else self._step_start
        out, i = [], max(int(np.searchsorted(bounds, start, side="right")) - 1, 0)
        while start < stop:
            hi = min(stop, bounds[i + 1])
            if hi > start:
                out.append((i, start - bounds[i], hi - bounds[i]))
            start, i = hi, i + 1
        return out

    def read_rows(self, name: str, start: int = 0, stop: int | None = None, cache: bool = False) -> np.ndarray:
        """Rows ``[start, stop)`` of an array across the shards, each part read (and checked) by its shard."""
        stop = self.rows(name) if stop is None else stop
        if not 0 <= start <= stop <= self.rows(name):
            raise SchemaError(f"{name}: rows {start}..{stop} outside the committed 0..{self.rows(name)}")
        parts = [self.shards[i].read_rows(name, a, b, cache) for i, a, b in self._pieces(name, start, stop)]
        if not parts:
            return self.spec.array(name).empty(0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def prefetch(self, ranges: dict[str, tuple[int, int]]) -> None:
        """Fetch every chunk file of ``{array: (start, stop)}``, in all shards, as one batch (see Store.prefetch)."""
        if self.location.local:
            return
        wanted = {}  # root key -> (shard, shard key)
        for name, (start, stop) in ranges.items():
            for i, a, b in self._pieces(name, start, stop):
                for key in self.shards[i].chunk_keys(name, a, b):
                    wanted[f"{self.refs[i].path}/{key}"] = (i, key)
        per_shard: dict[int, dict[str, bytes]] = {}
        for root_key, data in self.location.read_many(list(wanted)).items():
            i, key = wanted[root_key]
            per_shard.setdefault(i, {})[key] = data
        for i, chunks in per_shard.items():
            self.shards[i].hold(chunks)


def _shift(t: pa.Table, episode0: int, step0: int, obs0: int) -> pa.Table:
    """A shard's episode table with its ids and offsets moved to where its episodes sit in the dataset."""
    for name, by in (("episode_id", episode0), ("step_offset", step0), ("obs_offset", obs0)):
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array(t.column(name).to_numpy() + by, pa.int64()))
    return t


def _empty_table(meta: Metadata) -> pa.Table:
    return episode_table_schema(meta.spec.agent_ids).empty_table()


def open_store(path: str | os.PathLike | Location, storage_options: dict[str, Any] | None = None):
    """A :class:`~madata.store.Store` for a single store, a :class:`ShardedStore` for a sharded dataset."""
    loc = location(path, storage_options)
    listed = loc.keys(COMMITS_DIR)  # a sharded root has commit records there; a single store has none
    return ShardedStore.open(loc, listed) if listed else Store.open(loc)
