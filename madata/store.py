"""Zarr v3 plumbing shared by the writer, the reader and ``verify``.

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

Arrays are chunked along time only (``chunk_rows`` rows, all features) and compressed
with zstd with its frame checksum on.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

ATTR = "madata"
EPISODES_DIR = "episodes"
LOCK_FILE = ".madata.lock"
DEFAULT_CHUNK_ROWS = 65536  # chosen with benchmarks/store_io.py, see docs/store.md
ZSTD_LEVEL = 3


def compressor() -> ZstdCodec:
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


class TrackingStore(LocalStore):
    """A LocalStore (atomic writes: temp file + rename) that remembers what it wrote.

    The writer needs the CRC of each encoded chunk for the commit record and the list of
    files to fsync before the commit record may point at them.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.written: dict[str, int] = {}  # key -> CRC-32 of the bytes written

    async def set(self, key: str, value: Buffer) -> None:
        self.written[key] = zlib.crc32(value.as_buffer_like())
        await super().set(key, value)


def open_group(root: Path, store: LocalStore | None = None, mode: str = "r") -> zarr.Group:
    return zarr.open_group(store=store or LocalStore(root, read_only=mode == "r"), mode=mode)


def partial_files(root: Path) -> list[Path]:
    """Temporary files a killed writer left behind (zarr's ``*.partial`` and madata's ``.*.tmp-*``)."""
    return [p for p in root.rglob("*") if p.is_file() and (p.name.endswith(".partial") or ".tmp-" in p.name)]
