"""The storage layer: a committed madata store's metadata, commit record, episode table and
checked chunk reads. :class:`Store` is what the user-facing :class:`~madata.dataset.Dataset`,
``verify``, the exporters and the loaders read through.

Layout of a store (details in docs/format.md)::

    DATASET/
      zarr.json              root group; attribute "madata" holds the metadata
      commit.json            the commit record (madata.commit)
      episodes/part-*.parquet  the episode table, one part per commit until compacted
      obs/<agent>/           [obs_rows, *obs_shape]   one Zarr array per field and agent
      state/                 [obs_rows, *state_shape] (optional)
      action_mask/<agent>/   [obs_rows, n]            (optional)
      action/<agent>/        [step_rows, *act_shape]
      reward/, agent_reward/<agent>/, terminated/, truncated/   [step_rows]

Arrays are chunked along time only (``chunk_rows`` rows, all features) and each chunk is
one zstd frame (with its frame checksum) of the rows' little-endian bytes: a valid Zarr v3
store that zarr-python reads as it is. madata reads the chunk files itself and decodes them
against the schema, so what it returns depends only on the committed checksums and the
schema, never on an array's (editable) ``zarr.json``; ``verify`` checks those too.

Every failure to read a damaged or foreign store is a :class:`~madata.errors.CorruptionError`,
:class:`~madata.errors.SchemaError` or :class:`~madata.errors.DatasetNotFoundError` naming
the file and what was expected; OS, JSON, decoding and Arrow errors are caught where they
happen, by cause.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numcodecs import Zstd

from madata.commit import CommitRecord, read_commit
from madata.errors import CorruptionError, DatasetNotFoundError, MadataError, SchemaError
from madata.location import Location, location
from madata.schema import ArraySpec, DatasetSpec, Metadata, dumps, episode_table_schema, parse_metadata

ATTR = "madata"
EPISODES_DIR = "episodes"
LOCK_FILE = ".madata.lock"
DEFAULT_CHUNK_ROWS = 65536  # chosen with benchmarks/store_io.py, see docs/store.md
ZSTD_LEVEL = 3
_CACHE_BYTES = 256 << 20


def compressor():
    """The zstd codec of every array (zarr's), with its frame checksum on."""
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=ZSTD_LEVEL, checksum=True)


def content_crc(block: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of the rows' raw little-endian bytes, continuing from ``crc``."""
    block = np.ascontiguousarray(block)
    if block.dtype.byteorder == ">":
        block = block.byteswap().view(block.dtype.newbyteorder("<"))
    return zlib.crc32(block.view(np.uint8).reshape(-1), crc)


def chunk_key(array_name: str, k: int, ndim: int) -> str:
    """Store key of chunk ``k`` of an array chunked along its first axis only."""
    return "/".join([array_name, "c", str(k)] + ["0"] * (ndim - 1))


def metadata_digest(attribute: Any) -> str:
    """SHA-256 of the canonical JSON of the ``madata`` attribute: what the commit record's metadata_sha256 holds."""
    return hashlib.sha256(dumps(attribute).encode()).hexdigest()


def partial_files(loc: Location) -> list[str]:
    """Keys of temporary files a killed writer left behind (zarr's ``*.partial`` and madata's ``.*.tmp-*``)."""
    return [k for k in loc.keys() if k.endswith(".partial") or ".tmp-" in k.rsplit("/", 1)[-1]]


def read_json_file(loc: Location, key: str, what: str) -> Any:
    """A JSON file's content; any failure is a CorruptionError naming the file and ``what`` it should be."""
    path = loc / key
    try:
        return json.loads(loc.read(key).decode("utf-8"))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise CorruptionError(f"{path}: is a directory, expected {what} (a JSON file)") from None
    except OSError as e:
        raise CorruptionError(f"{path}: {what} cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(
            f"{path}: {what} is not valid UTF-8 JSON ({e}); the file is truncated or damaged"
        ) from None


def read_root(root: Location | str | Path) -> tuple[Metadata, str]:
    """The store's metadata, parsed and checked, and the digest of its ``madata`` attribute."""
    root = location(root)
    path = root / "zarr.json"
    if root.local and root.root.exists() and not root.root.is_dir():
        raise DatasetNotFoundError(f"{root}: is a file, not a dataset directory")
    try:
        obj = read_json_file(root, "zarr.json", "the root group's metadata")
    except FileNotFoundError:
        if not root.exists():
            raise DatasetNotFoundError(
                f"{root}: no such dataset directory" if root.local else f"{root}: no madata dataset at this URL"
            ) from None
        raise DatasetNotFoundError(f"{root}: not a madata dataset (no zarr.json)") from None
    if not isinstance(obj, dict):
        raise CorruptionError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("zarr_format") != 3 or obj.get("node_type") != "group":
        raise CorruptionError(
            f"{path}: expected a Zarr v3 group (zarr_format 3, node_type 'group'), "
            f"got zarr_format {obj.get('zarr_format')!r}, node_type {obj.get('node_type')!r}"
        )
    attrs = obj.get("attributes")
    if not isinstance(attrs, dict) or ATTR not in attrs:
        raise DatasetNotFoundError(f"{path}: a Zarr group but not a madata dataset (no '{ATTR}' attribute)")
    return parse_metadata(attrs[ATTR], str(path)), metadata_digest(attrs[ATTR])


def expected_array_meta(spec: ArraySpec, chunk_rows: int) -> dict[str, Any]:
    """The fields of an array's zarr.json that madata's chunk encoding relies on: little-endian bytes
    (single-byte types carry no endianness) compressed by zstd."""
    endian = {} if np.dtype(spec.dtype).itemsize == 1 else {"endian": "little"}
    return {
        "zarr_format": 3,
        "node_type": "array",
        "data_type": spec.dtype,
        "chunk_shape": [chunk_rows, *spec.feature_shape],
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "codecs": [("bytes", endian), ("zstd", {"level": ZSTD_LEVEL, "checksum": True})],
    }


class StoreBase:
    """What a single store and a sharded dataset (:class:`~madata.sharded.ShardedStore`) share for readers:
    the description parsed when it was opened (``location``, ``meta``, ``record``, ``table``)."""

    location: Location
    meta: Metadata
    record: CommitRecord
    table: pa.Table
    _columns: dict[str, np.ndarray]

    @property
    def root(self) -> Path | str:
        """The store's directory (a Path), or its URL on other storage."""
        return self.location.root if self.location.local else self.location.url

    @property
    def spec(self) -> DatasetSpec:
        return self.meta.spec

    def column(self, name: str) -> np.ndarray:
        """One column of the episode table as numpy (all episodes, in id order)."""
        if name not in self._columns:
            self._columns[name] = self.table.column(name).to_numpy(zero_copy_only=False)
        return self._columns[name]

    def rows(self, name: str) -> int:
        """Committed rows of a stored array."""
        return self.record.arrays[name].rows


class Store(StoreBase):
    """A committed madata store, opened for reading: everything readers trust, checked as it is read.

    ``meta`` (:class:`~madata.schema.Metadata`), ``record`` (:class:`~madata.commit.CommitRecord`) and
    ``table`` (the whole episode table, Arrow) are parsed once at :meth:`open`. Chunk reads are
    checked against the committed content checksums; a small LRU cache serves episode reads.
    """

    def __init__(self, loc: Location, meta: Metadata, record: CommitRecord, table: pa.Table):
        self.location, self.meta, self.record, self.table = loc, meta, record, table
        self._columns: dict[str, np.ndarray] = {}
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._codec = Zstd()
        self._prefetched: dict[str, bytes] = {}  # encoded chunks fetched together, each used once

    @classmethod
    def open(cls, path: str | Path | Location, storage_options: dict[str, Any] | None = None) -> Store:
        """Parse the metadata, the commit record and the episode table and check them against each
        other (digests, declared arrays, row counts); no chunk is read. ``path``: a directory or an
        fsspec URL (``storage_options`` for its file system)."""
        root = location(path, storage_options)
        meta, digest = read_root(root)
        record = read_commit(root)
        if record.metadata_sha256 is not None and record.metadata_sha256 != digest:
            raise CorruptionError(
                f"{root / 'zarr.json'}: the dataset metadata (attribute '{ATTR}') does not match the "
                "digest in the commit record; it was edited or damaged after it was written"
            )
        declared = {s.name for s in meta.spec.arrays()}
        listed = set(record.arrays)
        if declared != listed:
            missing, extra = sorted(declared - listed), sorted(listed - declared)
            raise CorruptionError(
                f"{root}: the metadata and the commit record disagree on the stored arrays "
                f"(declared but not committed: {missing}; committed but not declared: {extra})"
            )
        for spec in meta.spec.arrays():
            want = record.obs_rows if spec.rows == "obs" else record.step_rows
            committed = record.arrays[spec.name]
            if committed.rows != want:
                raise CorruptionError(
                    f"{root / 'commit.json'}: {spec.name} has {committed.rows} committed rows, "
                    f"expected {want} ({spec.rows} rows of {record.num_episodes} episodes): "
                    "the arrays have different lengths"
                )
            n_chunks = -(-committed.rows // meta.chunk_rows)
            if len(committed.content_crc) != n_chunks:
                raise CorruptionError(
                    f"{root / 'commit.json'}: {len(committed.content_crc)} checksums for {spec.name}, "
                    f"expected {n_chunks}"
                )
        table = read_episode_table(root, record, meta.spec.agent_ids)
        return cls(root, meta, record, table)

    # ------------------------------------------------------------ description

    def num_chunks(self, name: str) -> int:
        return -(-self.rows(name) // self.meta.chunk_rows)

    def chunk_file(self, name: str, k: int) -> str:
        """Key of chunk ``k``'s file in the store."""
        return chunk_key(name, k, 1 + len(self.spec.array(name).feature_shape))

    def chunk_location(self, name: str, k: int) -> str:
        """``"<array> chunk k (rows a..b, episodes e0..e1)"`` for error messages."""
        C, rows = self.meta.chunk_rows, self.rows(name)
        lo, hi = k * C, min((k + 1) * C, rows) - 1
        offsets = self.column("obs_offset" if self.spec.array(name).rows == "obs" else "step_offset")
        e0 = max(int(np.searchsorted(offsets, lo, side="right")) - 1, 0)
        e1 = max(int(np.searchsorted(offsets, hi, side="right")) - 1, 0)
        return f"{name} chunk {k} (rows {lo}..{hi}, episodes {e0}..{e1})"

    def damaged(self, name: str, k: int, what: str) -> CorruptionError:
        return CorruptionError(f"{self.root}: {self.chunk_location(name, k)} {what}; the data there cannot be trusted")

    # ------------------------------------------------------------ chunk reads

    def chunk_bytes(self, name: str, k: int) -> bytes:
        """The encoded bytes of chunk ``k`` as stored; a missing or unreadable file is a CorruptionError."""
        key = self.chunk_file(name, k)
        if key in self._prefetched:
            return self._prefetched.pop(key)
        path = self.location / key
        try:
            return self.location.read(key)
        except FileNotFoundError:
            raise self.damaged(name, k, f"is missing ({path} does not exist)") from None
        except IsADirectoryError:
            raise self.damaged(name, k, f"is not a file ({path} is a directory)") from None
        except OSError as e:
            raise self.damaged(name, k, f"cannot be read ({e.strerror or e})") from None

    def chunk_keys(self, name: str, start: int, stop: int) -> list[str]:
        """Keys of the chunk files that hold rows ``[start, stop)`` of an array."""
        C = self.meta.chunk_rows
        return [self.chunk_file(name, k) for k in range(start // C, (stop - 1) // C + 1)] if stop > start else []

    def prefetch(self, ranges: dict[str, tuple[int, int]]) -> None:
        """Fetch the chunk files of ``{array: (start, stop)}`` side by side, for the reads that follow: on
        object storage each chunk is a request, and one after another they would wait in turn. Locally a no-op."""
        if not self.location.local:
            keys = [key for name, (a, b) in ranges.items() for key in self.chunk_keys(name, a, b)]
            self.hold(self.location.read_many(keys))

    def hold(self, chunks: dict[str, bytes]) -> None:
        """Keep encoded chunk files fetched elsewhere (by key) for the next read of each; they are checked then."""
        self._prefetched.update(chunks)

    def read_chunk(self, name: str, k: int, owned: bool = True) -> np.ndarray:
        """Chunk ``k``'s committed rows, decoded and checked against the committed content checksum: a
        writable array the caller owns, or with ``owned=False`` a read-only view of the decoded bytes (one
        chunk less memory, for readers that only look)."""
        spec = self.spec.array(name)
        C, committed = self.meta.chunk_rows, self.record.arrays[name]
        n = min(C, committed.rows - k * C)
        raw = self.chunk_bytes(name, k)
        try:
            data = self._codec.decode(raw)
        except (RuntimeError, ValueError, TypeError, MemoryError) as e:  # zstd: corrupt frame, bad checksum
            raise self.damaged(name, k, f"cannot be decoded ({type(e).__name__}: {e})") from None
        del raw  # the encoded bytes are not needed past here: a chunk less at the peak
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        row_bytes = dtype.itemsize * int(np.prod(spec.feature_shape, dtype=np.int64))
        if len(data) != C * row_bytes:
            raise self.damaged(name, k, f"decodes to {len(data)} bytes, expected {C * row_bytes}")
        block = np.frombuffer(data, dtype=dtype).reshape(C, *spec.feature_shape)[:n]
        if content_crc(block) != committed.content_crc[k]:
            raise self.damaged(name, k, "does not match its committed checksum")
        if not owned and block.dtype == np.dtype(spec.dtype):
            return block
        return block.astype(spec.dtype, copy=True)

    def iter_chunks(self, name: str) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) of every committed chunk in order, checked: bounded memory whatever the size."""
        C = self.meta.chunk_rows
        for k in range(self.num_chunks(name)):
            yield k * C, self.read_chunk(name, k)

    def read_rows(self, name: str, start: int = 0, stop: int | None = None, cache: bool = False) -> np.ndarray:
        """Rows ``[start, stop)`` of a stored array, checked against the committed checksums."""
        spec = self.spec.array(name)
        committed = self.rows(name)
        stop = committed if stop is None else stop
        if not 0 <= start <= stop <= committed:
            raise SchemaError(f"{name}: rows {start}..{stop} outside the committed 0..{committed}")
        if start == stop:
            return spec.empty(0)
        C = self.meta.chunk_rows
        k0, k1 = start // C, (stop - 1) // C
        read = self._cached_chunk if cache else self.read_chunk
        blocks = [read(name, k) for k in range(k0, k1 + 1)]
        block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return block[start - k0 * C : stop - k0 * C]

    def _cached_chunk(self, name: str, k: int) -> np.ndarray:
        key = (name, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        block = self.read_chunk(name, k)
        block.setflags(write=False)  # shared by every reader of the cache
        self._cache[key] = block
        self._cache_bytes += block.nbytes
        while self._cache_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return block

    # ------------------------------------------------------------ the arrays' Zarr metadata

    def array_meta_problem(self, name: str) -> str | None:
        """What is wrong with an array's zarr.json for madata's encoding and for zarr readers, or None.
        Also reports fewer rows than committed."""
        spec = self.spec.array(name)
        path = self.location / f"{name}/zarr.json"
        try:
            obj = read_json_file(self.location, f"{name}/zarr.json", f"array {name}'s metadata")
        except FileNotFoundError:
            return f"{path}: array {name}'s metadata is missing"
        except CorruptionError as e:
            return str(e)
        want = expected_array_meta(spec, self.meta.chunk_rows)
        try:
            got = {
                "zarr_format": obj["zarr_format"],
                "node_type": obj["node_type"],
                "data_type": obj["data_type"],
                "chunk_shape": obj["chunk_grid"]["configuration"]["chunk_shape"],
                "chunk_key_encoding": obj["chunk_key_encoding"],
                "codecs": [(c["name"], c.get("configuration", {})) for c in obj["codecs"]],
            }
            shape = obj["shape"]
        except (KeyError, TypeError, IndexError) as e:
            return f"{path}: array {name}'s Zarr metadata is malformed (missing {e})"
        for key, value in want.items():
            if got[key] != value:
                return f"{path}: {key} is {got[key]!r}, expected {value!r}"
        if not isinstance(shape, list) or shape[1:] != list(spec.feature_shape) or not isinstance(shape[0], int):
            return f"{path}: shape {shape!r} does not match the row shape {list(spec.feature_shape)}"
        if shape[0] < self.rows(name):
            first = self.chunk_location(name, shape[0] // self.meta.chunk_rows)
            return f"{path}: {name} has {shape[0]} rows but {self.rows(name)} were committed (missing from {first})"
        return None

    def group_meta_problem(self, name: str) -> str | None:
        """What is wrong with an intermediate group's zarr.json (``obs``, ``action``, ...), or None:
        madata does not read it, zarr readers need it."""
        path = self.location / f"{name}/zarr.json"
        try:
            obj = read_json_file(self.location, f"{name}/zarr.json", f"group {name}'s metadata")
        except FileNotFoundError:
            return f"{path}: group {name}'s Zarr metadata is missing (zarr readers need it)"
        except CorruptionError as e:
            return str(e)
        if not isinstance(obj, dict) or obj.get("zarr_format") != 3 or obj.get("node_type") != "group":
            return f"{path}: expected a Zarr v3 group (zarr_format 3, node_type 'group')"
        return None

    def extra_rows(self, name: str) -> int:
        """Rows beyond the last commit (an interrupted write), 0 when none or unknown."""
        try:
            shape = read_json_file(self.location, f"{name}/zarr.json", "array metadata")["shape"]
            return max(0, int(shape[0]) - self.rows(name))
        except (MadataError, FileNotFoundError, KeyError, TypeError, ValueError, IndexError):
            return 0


def read_episode_table(root: Location, record: CommitRecord, agent_ids: list[str]) -> pa.Table:
    """The committed episode table, each part checked against its digest, and its rows against the record."""
    schema = episode_table_schema(agent_ids)
    tables = []
    for part in record.episode_parts:
        path = root / part.path
        try:
            raw = root.read(part.path)
        except FileNotFoundError:
            raise CorruptionError(f"{path}: episode table part listed in the commit record is missing") from None
        except OSError as e:
            raise CorruptionError(f"{path}: episode table part cannot be read ({e.strerror or e})") from None
        if part.sha256 is not None and hashlib.sha256(raw).hexdigest() != part.sha256:
            raise CorruptionError(
                f"{path}: episode table part does not match its digest in the commit record; "
                "it was edited or damaged after it was written"
            )
        try:
            t = pq.read_table(pa.BufferReader(raw))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise CorruptionError(f"{path}: episode table part cannot be read as Parquet ({e})") from None
        if not t.schema.equals(schema, check_metadata=False):
            raise CorruptionError(
                f"{path}: episode table columns {t.schema.names} do not match the schema {schema.names}"
            )
        tables.append(t)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if table.num_rows != record.num_episodes:
        raise CorruptionError(
            f"{root}: episode table has {table.num_rows} rows but the commit record says {record.num_episodes} episodes"
        )
    return table.combine_chunks()
