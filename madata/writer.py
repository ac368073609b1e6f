"""The streaming writer: numpy episodes in, a crash-safe Zarr store out.

Memory stays bounded: each array keeps at most one chunk of rows in memory (its tail)
plus the episode being added. A full chunk is written once and never again; the
partial tail is written at each commit. ``commit()`` makes everything added so far
durable (fsync; on object storage a PUT is durable when it returns) and then atomically
replaces the commit record, so a writer killed at any moment leaves a store that opens
and holds every episode committed before the kill. ``DatasetWriter.resume`` discards
whatever lies beyond the last commit and continues. The store may be a local directory or
a shard on object storage (:mod:`madata.location`, :mod:`madata.sharded`).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.storage import MemoryStore

from madata.atomic import fsync_dir
from madata.commit import ArrayCommit, CommitRecord, PartRecord, read_commit, write_commit
from madata.errors import CorruptionError, DatasetExistsError, DatasetNotFoundError, OutputError, SchemaError
from madata.location import Location, location
from madata.schema import (
    AgentSpec,
    ArraySpec,
    DatasetSpec,
    Metadata,
    behaviour_column,
    dumps,
    episode_table_schema,
    parse_chunk_rows,
)
from madata.spaces import Box, Discrete
from madata.store import (
    ATTR,
    DEFAULT_CHUNK_ROWS,
    EPISODES_DIR,
    LOCK_FILE,
    chunk_key,
    compressor,
    content_crc,
    metadata_digest,
    partial_files,
    read_episode_table,
    read_root,
)

COMPACT_AFTER_PARTS = 32
# every chunk must exist on disk, even one equal to the fill value: a missing chunk file
# would otherwise read back as zeros and could not be told from a deleted one
_WRITE_CONFIG = {"write_empty_chunks": True}  # merge episode-table parts once there are this many


def stamp(meta: Metadata) -> Metadata:
    """Give new metadata its creation time and library versions (kept when it has them)."""
    meta.created = meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta.versions = meta.versions or library_versions()
    return meta


def library_versions() -> dict[str, str]:
    """Versions of madata and of the libraries that shape its data (absent ones are skipped)."""
    out = {}
    for name in ("madata", "numpy", "zarr", "pyarrow", "gymnasium", "gymnasium-robotics", "mujoco", "torch"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


class _Column:
    """One array being written: full chunks go to Zarr at once, the tail waits in memory."""

    def __init__(self, spec: ArraySpec, arr: zarr.Array, store, chunk_rows: int, committed: ArrayCommit):
        self.spec, self.arr, self.store, self.C = spec, arr, store, chunk_rows
        self.full_chunks = committed.rows // chunk_rows
        self.content_crc = list(committed.content_crc[: self.full_chunks])
        self.stored_crc = list(committed.stored_crc[: self.full_chunks])
        self.tail = spec.empty(chunk_rows)
        self.tail_len = committed.rows - self.full_chunks * chunk_rows
        self.tail_crc = 0
        self.tail_dirty = False
        if self.tail_len:
            base = self.full_chunks * chunk_rows
            self.tail[: self.tail_len] = arr[base : base + self.tail_len]
            self.tail_crc = content_crc(self.tail[: self.tail_len])
            if self.tail_crc != committed.content_crc[-1]:
                raise CorruptionError(
                    f"{spec.name}: chunk {self.full_chunks} (rows {base}..{base + self.tail_len - 1}) does not match "
                    "its committed checksum; the store is damaged, run `madata verify`"
                )

    @property
    def rows(self) -> int:
        return self.full_chunks * self.C + self.tail_len

    def append(self, block: np.ndarray) -> None:
        pos = 0
        while pos < len(block):
            n = min(self.C - self.tail_len, len(block) - pos)
            part = block[pos : pos + n]
            self.tail[self.tail_len : self.tail_len + n] = part
            self.tail_crc = content_crc(self.tail[self.tail_len : self.tail_len + n], self.tail_crc)
            self.tail_len += n
            self.tail_dirty = True
            pos += n
            if self.tail_len == self.C:
                self._write_full_chunk()

    def _write_full_chunk(self) -> None:
        k = self.full_chunks
        lo, hi = k * self.C, (k + 1) * self.C
        if self.arr.shape[0] < hi:
            self.arr.resize((hi, *self.spec.feature_shape))
        self.arr[lo:hi] = self.tail
        key = chunk_key(self.spec.name, k, 1 + len(self.spec.feature_shape))
        self.content_crc.append(self.tail_crc)
        self.stored_crc.append(self.store.written[key])
        self.full_chunks += 1
        self.tail_len, self.tail_crc, self.tail_dirty = 0, 0, False

    def flush(self) -> ArrayCommit:
        """Write the partial tail (if it changed) and return this array's committed state."""
        rows = self.rows
        if self.arr.shape[0] != rows:
            self.arr.resize((rows, *self.spec.feature_shape))
        if self.tail_len and self.tail_dirty:
            base = self.full_chunks * self.C
            self.arr[base:rows] = self.tail[: self.tail_len]
            self.tail_dirty = False
        content, stored = list(self.content_crc), list(self.stored_crc)
        if self.tail_len:
            content.append(self.tail_crc)
            stored.append(None)  # a partial chunk is rewritten as it fills
        return ArrayCommit(rows, content, stored)


class DatasetWriter:
    """Appends whole episodes to a store; use :func:`madata.create` or :meth:`DatasetWriter.resume`.

    ``commit_every``: episodes between automatic commits (0: only on ``commit()``/``close()``);
    ``commit_seconds``: and at least this many seconds since the last commit, so that
    datasets of very short episodes do not spend their time in fsync.
    Use as a context manager: leaving the block commits and closes; an exception inside
    it still commits the episodes added whole, and leaves the store resumable.
    """

    def __init__(
        self, root: Location, meta: Metadata, record: CommitRecord, commit_every: int, commit_seconds: float = 1.0
    ):
        self.location, self.meta, self.record = root, meta, record
        self.root = root.root if root.local else root.url  # for messages and callers: a Path locally
        self.spec = meta.spec
        self.commit_every, self.commit_seconds = commit_every, commit_seconds
        self._last_commit = time.monotonic()
        self._lock = _acquire_lock(root)
        self.store = root.zarr_store()

        def column(s: ArraySpec) -> _Column:
            arr = zarr.open_array(store=self.store, path=s.name, mode="r+").with_config(_WRITE_CONFIG)
            return _Column(s, arr, self.store, meta.chunk_rows, record.arrays.get(s.name, ArrayCommit()))

        specs = self.spec.arrays()
        self.columns: dict[str, _Column] = dict(zip([s.name for s in specs], root.map(column, specs), strict=True))
        self._schema = episode_table_schema(self.spec.agent_ids)
        self._pending: list[dict[str, Any]] = []  # episode-table rows not yet committed
        self._pending_steps = 0
        self._closed = False

    # ------------------------------------------------------------ construction

    @classmethod
    def create(
        cls, path: str | os.PathLike | Location, meta: Metadata, commit_every: int = 10, commit_seconds: float = 1.0
    ) -> DatasetWriter:
        loc = location(path)
        stamp(meta)
        if not loc.local:  # a shard on object storage: its name is new and it has one writer
            if loc.keys():
                raise DatasetExistsError(f"{loc}: holds objects already; choose another URL (nothing was overwritten)")
            return cls(loc, meta, _build(loc, meta), commit_every, commit_seconds)
        root = loc.root
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            if not root.is_dir():
                raise DatasetExistsError(
                    f"{root}: is a file; a dataset is a directory, choose another path (nothing was overwritten)"
                )
            hint = "use --resume to continue it" if (root / "zarr.json").exists() else "choose another path"
            raise DatasetExistsError(f"{root}: path exists and is not empty; {hint} (nothing was overwritten)")
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            # build the empty store beside its final place and rename it there, so that `root`
            # is either absent (or the user's empty directory) or a whole, committed store
            staging = root.with_name(f".{root.name}.creating")
            shutil.rmtree(staging, ignore_errors=True)  # left by a creation that was killed
            try:
                staging.mkdir()
                record = _build(location(staging), meta)
                if root.exists():
                    root.rmdir()  # the user's empty directory (checked above)
                os.rename(staging, root)
                fsync_dir(root.parent)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as e:  # read-only file system, full disk, a file where a directory should be
            raise OutputError(f"{root}: the dataset cannot be created ({e.strerror or e}); nothing was kept") from e
        return cls(loc, meta, record, commit_every, commit_seconds)

    @classmethod
    def resume(
        cls, path: str | os.PathLike | Location, commit_every: int = 10, commit_seconds: float = 1.0
    ) -> DatasetWriter:
        """Reopen a store for appending, discarding whatever lies beyond its last commit."""
        root = location(path)
        if not root.exists("zarr.json"):
            raise DatasetNotFoundError(f"{root}: no madata dataset to resume (no zarr.json)")
        meta, digest = read_root(root)
        record = read_commit(root)
        if record.metadata_sha256 is not None and record.metadata_sha256 != digest:
            raise CorruptionError(
                f"{root / 'zarr.json'}: the dataset metadata does not match the digest in the commit "
                "record; it was edited or damaged after it was written"
            )
        for s in meta.spec.arrays():
            if s.name not in record.arrays:
                raise CorruptionError(f"{root}: commit record lacks the array {s.name!r}")
        read_episode_table(root, record, meta.spec.agent_ids)  # the committed parts are whole
        lock = _acquire_lock(root)  # hold it while discarding, so no live writer is disturbed
        try:
            for key in partial_files(root):
                root.delete(key)
            keep = {p.path for p in record.episode_parts}
            for key in root.keys(EPISODES_DIR):
                if key.endswith(".parquet") and key not in keep:
                    root.delete(key)
            store = root.zarr_store()
            for s in meta.spec.arrays():
                arr = zarr.open_array(store=store, path=s.name, mode="r+")
                rows = record.arrays[s.name].rows
                if arr.shape[0] < rows:
                    raise CorruptionError(
                        f"{root}: array {s.name} has {arr.shape[0]} rows but {rows} were committed; run `madata verify`"
                    )
                if arr.shape[0] > rows:
                    arr.resize((rows, *s.feature_shape))
        finally:
            _release_lock(lock)
        record.complete = False
        return cls(root, meta, record, commit_every, commit_seconds)

    # ------------------------------------------------------------ writing

    @property
    def num_episodes(self) -> int:
        """Episodes added so far, committed or not."""
        return self.record.num_episodes + len(self._pending)

    def add_episode(
        self,
        obs: Mapping[str, np.ndarray],
        actions: Mapping[str, np.ndarray],
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        *,
        state: np.ndarray | None = None,
        agent_rewards: Mapping[str, np.ndarray] | None = None,
        action_masks: Mapping[str, np.ndarray] | None = None,
        behaviour: Mapping[str, str] | None = None,
        seed: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one whole episode of T steps; returns its episode id.

        Shapes: ``obs[agent]`` [T+1, *obs_shape] (the final observation included),
        ``actions[agent]`` [T, *act_shape] (int for Discrete), ``rewards`` [T] team reward,
        ``terminated``/``truncated`` [T] bool with only the last step set, exactly one of them;
        ``state`` [T+1, *state_shape]; ``agent_rewards[agent]`` [T]; ``action_masks[agent]`` [T+1, n].
        ``behaviour`` maps agent ids to behaviour labels (e.g. ``{"agent_0": "medium"}``).
        """
        if self._closed:
            raise SchemaError(f"{self.root}: writer is closed")
        ep = self.num_episodes
        blocks = self._validate(ep, obs, actions, rewards, terminated, truncated, state, agent_rewards, action_masks)
        labels = dict(behaviour or {})
        for k in labels:
            if k not in self.spec.agent_ids:
                raise SchemaError(
                    f"episode {ep}: behaviour label for unknown agent {k!r}; agents are {self.spec.agent_ids}"
                )
        try:
            prov = None if provenance is None else dumps(dict(provenance))
        except (TypeError, ValueError) as e:
            raise SchemaError(f"episode {ep}: provenance must be plain JSON: {e}") from e
        T = len(blocks["reward"])
        step_offset = self.record.step_rows + self._pending_steps
        row = {
            "episode_id": ep,
            "step_offset": step_offset,
            "obs_offset": step_offset + ep,
            "length": T,
            "return": float(np.sum(blocks["reward"], dtype=np.float64)),
            "end": "terminated" if blocks["terminated"][-1] else "truncated",
            "seed": None if seed is None else int(seed),
            "provenance": prov,
        }
        for a in self.spec.agent_ids:
            row[behaviour_column(a)] = None if labels.get(a) is None else str(labels[a])
        # nothing is appended before everything is validated: a rejected episode leaves no trace
        for name, block in blocks.items():
            self.columns[name].append(block)
        self._pending.append(row)
        self._pending_steps += T
        if (
            self.commit_every
            and len(self._pending) >= self.commit_every
            and time.monotonic() - self._last_commit >= self.commit_seconds
        ):
            self.commit()
        return ep

    def _validate(self, ep, obs, actions, rewards, terminated, truncated, state, agent_rewards, action_masks):
        spec = self.spec
        where = f"episode {ep}"
        rewards = _as(rewards, "float64", f"{where}: rewards")
        if rewards.ndim != 1 or len(rewards) < 1:
            raise SchemaError(f"{where}: rewards must have shape [T] with T >= 1, got {rewards.shape}")
        if not np.all(np.isfinite(rewards)):
            raise SchemaError(
                f"{where}: rewards contain NaN or inf at steps {np.flatnonzero(~np.isfinite(rewards))[:5].tolist()}"
            )
        T = len(rewards)
        blocks: dict[str, np.ndarray] = {}

        def take(name: str, value, rows: int, field: str, space: Box | None = None) -> None:
            s = spec.array(name)
            a = _as(value, s.dtype, f"{where}: {field}")
            want = (rows, *s.feature_shape)
            if a.shape != want:
                raise SchemaError(f"{where}: {field} has shape {a.shape}, expected {want} (T={T})")
            if a.dtype.kind == "f":
                bad = ~np.isfinite(a).reshape(rows, -1).all(1)
                if bad.any():
                    raise SchemaError(f"{where}: {field} holds NaN or inf at rows {np.flatnonzero(bad)[:5].tolist()}")
            if space is not None:
                _check_box(a, space, f"{where}: {field}")
            blocks[name] = a

        def per_agent(mapping, field: str) -> Mapping[str, Any]:
            if mapping is None or set(mapping) != set(spec.agent_ids):
                got = None if mapping is None else sorted(mapping)
                raise SchemaError(f"{where}: {field} needs one entry per agent {spec.agent_ids}, got {got}")
            return mapping

        obs = per_agent(obs, "obs")
        actions = per_agent(actions, "actions")
        steps = {"rewards": T, "terminated": _rows(terminated), "truncated": _rows(truncated)}
        steps |= {f"actions[{a!r}]": _rows(actions[a]) for a in spec.agent_ids}
        rows = {f"obs[{a!r}]": _rows(obs[a]) for a in spec.agent_ids}
        if (
            len(set(steps.values()) | {r - 1 for r in rows.values()}) > 1
        ):  # name every length: which is wrong is the user's to see
            got = ", ".join(f"{k} {v}" for k, v in (steps | rows).items())
            raise SchemaError(
                f"{where}: the episode's lengths disagree ({got} rows); rewards, flags and actions "
                "need T rows each, observations T + 1"
            )
        for a in spec.agents:
            take(f"obs/{a.id}", obs[a.id], T + 1, f"obs[{a.id!r}]", a.observation_space)
        if spec.state_space is not None:
            if state is None:
                raise SchemaError(f"{where}: this dataset stores a global state; pass state with shape [T+1, ...]")
            take("state", state, T + 1, "state", spec.state_space)
        elif state is not None:
            raise SchemaError(f"{where}: state given but the dataset was created without state_space")
        if spec.action_masks:
            masks = per_agent(action_masks, "action_masks")
            for a in spec.agents:
                take(f"action_mask/{a.id}", masks[a.id], T + 1, f"action_masks[{a.id!r}]")
        for a in spec.agents:
            _check_action(a, actions[a.id], where)
            box = a.action_space if isinstance(a.action_space, Box) else None
            take(f"action/{a.id}", actions[a.id], T, f"actions[{a.id!r}]", box)
        blocks["reward"] = rewards
        if spec.agent_rewards:
            ar = per_agent(agent_rewards, "agent_rewards")
            for a in spec.agents:
                take(f"agent_reward/{a.id}", ar[a.id], T, f"agent_rewards[{a.id!r}]")
        take("terminated", terminated, T, "terminated")
        take("truncated", truncated, T, "truncated")
        term, trunc = blocks["terminated"], blocks["truncated"]
        if term[:-1].any() or trunc[:-1].any():
            bad = np.flatnonzero(term[:-1] | trunc[:-1])[:5].tolist()
            raise SchemaError(
                f"{where}: terminated/truncated set before the last step (steps {bad}); split the episode there"
            )
        if term[-1] == trunc[-1]:
            raise SchemaError(
                f"{where}: the last step must be either terminated or truncated (got terminated={bool(term[-1])}, "
                f"truncated={bool(trunc[-1])}); mark an episode cut off by the collector as truncated"
            )
        return blocks

    # ------------------------------------------------------------ committing

    def commit(self) -> None:
        """Make every episode added so far durable and visible to readers."""
        if not self._pending and not self._closing:
            return
        seq = self.record.sequence + 1
        arrays = dict(zip(self.columns, self.location.map(_Column.flush, list(self.columns.values())), strict=True))
        parts = list(self.record.episode_parts)
        if self._pending:
            table = pa.Table.from_pylist(self._pending, schema=self._schema)
            parts.append(self._write_part(table, f"part-{seq:06d}.parquet"))
        obsolete: list[PartRecord] = []
        if len(parts) > COMPACT_AFTER_PARTS or (self._closing and len(parts) > 1):
            obsolete = parts
            table = pa.concat_tables(
                pq.read_table(pa.BufferReader(self.location.read(p.path)), schema=self._schema) for p in parts
            )
            parts = [self._write_part(table, f"table-{seq:06d}.parquet")]
        _make_durable(self.location, self.store)
        n_new, new_steps = len(self._pending), self._pending_steps
        record = CommitRecord(
            sequence=seq,
            num_episodes=self.record.num_episodes + n_new,
            step_rows=self.record.step_rows + new_steps,
            obs_rows=self.record.obs_rows + new_steps + n_new,
            episode_parts=parts,
            arrays=arrays,
            metadata_sha256=self.record.metadata_sha256,
            complete=self._closing,
        )
        for name, a in arrays.items():
            want = record.obs_rows if self.spec.array(name).rows == "obs" else record.step_rows
            if a.rows != want:  # a bug here must never reach the disk
                raise CorruptionError(f"{self.root}: internal error: {name} has {a.rows} rows, expected {want}")
        write_commit(self.location, record)
        self._last_commit = time.monotonic()
        self.record = record
        self._pending, self._pending_steps = [], 0
        for p in obsolete:
            self.location.delete(p.path)
        if self.after_commit is not None:
            self.after_commit(record, self._closing)

    _closing = False
    after_commit = None  # called with each new record and whether the writer is closing (a sharded root's hook)

    def _write_part(self, table: pa.Table, name: str) -> PartRecord:
        rel = f"{EPISODES_DIR}/{name}"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        raw = buf.getvalue()
        self.location.write(rel, raw)
        return PartRecord(rel, hashlib.sha256(raw).hexdigest())

    def close(self) -> None:
        """Commit what is pending, compact the episode table, mark the store complete."""
        if self._closed:
            return
        self._closing = True
        try:
            self.commit()
        finally:
            self._closing = False
            self._closed = True
            _release_lock(self._lock)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the whole episodes added so far; the store stays resumable
            try:
                self.commit()
            finally:
                self._closed = True
                _release_lock(self._lock)


# ---------------------------------------------------------------- helpers


def _check_action(agent: AgentSpec, value, where: str) -> None:
    space = agent.action_space
    a = np.asarray(value)
    if isinstance(space, Discrete):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(a == np.round(a)):
                raise SchemaError(f"{where}: actions[{agent.id!r}] must be integers for a Discrete({space.n}) space")
        lo, hi = space.start, space.start + space.n - 1
        if a.size and (a.min() < lo or a.max() > hi):
            raise SchemaError(
                f"{where}: actions[{agent.id!r}] outside Discrete range {lo}..{hi} (got {a.min()}..{a.max()})"
            )


def _check_box(a: np.ndarray, space: Box, field: str) -> None:
    """Every row of ``a`` inside the Box's bounds (as stored: the bounds cast to the array's dtype)."""
    low = np.asarray(space.low, dtype=np.float64).astype(a.dtype).reshape(space.shape)
    high = np.asarray(space.high, dtype=np.float64).astype(a.dtype).reshape(space.shape)
    bad = ((a < low) | (a > high)).reshape(len(a), -1).any(1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise SchemaError(
            f"{field} lies outside its space's bounds at rows {rows} (low {list(space.low)[:4]}..., "
            f"high {list(space.high)[:4]}...); clip it or declare wider bounds"
        )


def _rows(value) -> int:
    """The length of an array-like's first axis (0 for a scalar)."""
    shape = np.shape(value)
    return shape[0] if shape else 0


def _as(value, dtype: str, field: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise SchemaError(f"{field}: cannot be read as an array ({e})") from e
    if dtype == "bool" and a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise SchemaError(f"{field}: expected booleans, got values {np.unique(a)[:5].tolist()}")
    return np.ascontiguousarray(a, dtype=dtype)


def _build(loc: Location, meta: Metadata) -> CommitRecord:
    """Write an empty store at ``loc`` (root group, one empty array per field and agent, the first
    commit record) and return that record."""
    # built in memory, then written in one batch: on object storage each of zarr's own checks
    # and writes would be a request, one after another
    built: dict[str, Any] = {}
    store = MemoryStore(built)
    attribute = json.loads(json.dumps(meta.to_json()))  # as a reader will parse it back
    group = zarr.create_group(store=store, attributes={ATTR: attribute})
    for s in meta.spec.arrays():
        group.create_array(
            s.name,
            shape=(0, *s.feature_shape),
            chunks=(meta.chunk_rows, *s.feature_shape),
            dtype=s.dtype,
            compressors=compressor(),
            fill_value=False if s.dtype == "bool" else 0,
            config=_WRITE_CONFIG,
        )
    loc.write_many({key: buf.to_bytes() for key, buf in built.items()})
    if loc.local:
        (loc.root / EPISODES_DIR).mkdir()
    record = CommitRecord(
        arrays={s.name: ArrayCommit() for s in meta.spec.arrays()}, metadata_sha256=metadata_digest(attribute)
    )
    write_commit(loc, record)
    return record


def _make_durable(loc: Location, store) -> None:
    """Make every object the store wrote since the last call durable (fsync locally), and forget them."""
    loc.durable(list(store.written))
    store.written.clear()


def _acquire_lock(loc: Location):
    """Hold the store's lock file (flock) while writing it locally. A shard on object storage needs no
    lock: its name is new to its one writer, and the sharded root's commit refuses a second writer."""
    if not loc.local:
        return None
    f = open(loc.root / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        f.close()
        raise DatasetExistsError(f"{loc}: another process is writing this dataset") from e
    return f


def _release_lock(f) -> None:
    if f is None:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()


def new_metadata(
    agents: list[AgentSpec] | tuple[AgentSpec, ...],
    *,
    state_space: Box | None = None,
    agent_rewards: bool = False,
    action_masks: bool = False,
    env: Mapping[str, Any] | None = None,
    description: str = "",
    reference_scores: Mapping[str, float] | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Metadata:
    """A new dataset's metadata, validated (spaces, reference scores, plain JSON) and stamped with
    its creation time and library versions; the arguments are those of :func:`create`."""
    spec = DatasetSpec(tuple(agents), state_space, agent_rewards, action_masks)
    if reference_scores is not None:
        try:
            reference_scores = {"min": float(reference_scores["min"]), "max": float(reference_scores["max"])}
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaError(
                f"reference_scores must be {{'min': float, 'max': float}}, got {reference_scores!r}"
            ) from e
    meta = Metadata(
        spec=spec,
        chunk_rows=parse_chunk_rows(chunk_rows),
        env=dict(env or {}),
        description=description,
        reference_scores=reference_scores,
        provenance=dict(provenance or {}),
        extra=dict(extra or {}),
    )
    try:  # fail before writing if anything is not JSON
        json.dumps(meta.to_json(), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"dataset metadata (env, provenance, extra) must be plain JSON: {e}") from e
    return stamp(meta)


def create(
    path: str | os.PathLike,
    agents: list[AgentSpec] | tuple[AgentSpec, ...],
    *,
    commit_every: int = 10,
    commit_seconds: float = 1.0,
    storage_options: Mapping[str, Any] | None = None,
    sharded: bool | None = None,
    **fields: Any,
):
    """Create a new dataset at ``path`` (which must not exist or be empty) and return its writer.

    ``fields`` are those of :func:`new_metadata`: ``state_space``, ``agent_rewards``, ``action_masks``,
    ``env``, ``description``, ``reference_scores``, ``provenance``, ``extra``, ``chunk_rows``.
    ``path``: a directory or an fsspec URL (``s3://bucket/x.zarr``, ``storage_options`` for its file
    system). A dataset on object storage is sharded (:mod:`madata.sharded`: no rename there);
    ``sharded=True`` makes a local one sharded too. Everything is validated before the first byte is written.
    """
    loc = location(path, dict(storage_options) if storage_options else None)
    if sharded is False and not loc.local:
        raise SchemaError(
            f"{loc}: a dataset on object storage is always sharded (it has no rename); drop sharded=False"
        )
    meta = new_metadata(agents, **fields)
    if sharded or not loc.local:
        from madata.sharded import shard_writer

        return shard_writer(loc, meta, commit_every=commit_every, commit_seconds=commit_seconds)
    return DatasetWriter.create(loc, meta, commit_every, commit_seconds)
