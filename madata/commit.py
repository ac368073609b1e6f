"""The commit record: the only thing that says what a store holds.

Data arrays may run ahead of it (a writer killed between two commits); readers never
look past it, and ``--resume`` truncates whatever lies beyond it. It is written to a
temporary file, fsynced and renamed over the old one, so it is always either the old
record or the new one.

Per array it lists the committed row count and, per chunk of ``chunk_rows`` rows,
``content_crc``: CRC-32 of the committed rows' raw little-endian bytes (a partial last
chunk covers only its committed rows, so rows appended later do not change it), and
``stored_crc``: CRC-32 of the encoded chunk file, recorded for full chunks only (they
are written once and never again), ``None`` for a partial last chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madata.atomic import write_bytes_atomic
from madata.errors import CorruptionError, SchemaError
from madata.schema import SCHEMA_VERSION, dumps

COMMIT_FILE = "commit.json"


@dataclass
class ArrayCommit:
    """Committed state of one array."""

    rows: int = 0
    content_crc: list[int] = field(default_factory=list)
    stored_crc: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "content_crc": self.content_crc, "stored_crc": self.stored_crc}


@dataclass
class CommitRecord:
    """What the store holds: episode count, row counts, episode-table parts, per-array checksums."""

    sequence: int = 0
    num_episodes: int = 0
    step_rows: int = 0
    obs_rows: int = 0
    episode_parts: list[str] = field(default_factory=list)  # Parquet files, relative to the store root
    arrays: dict[str, ArrayCommit] = field(default_factory=dict)
    complete: bool = False  # the writer was closed cleanly
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "sequence": self.sequence,
            "num_episodes": self.num_episodes,
            "step_rows": self.step_rows,
            "obs_rows": self.obs_rows,
            "episode_parts": self.episode_parts,
            "arrays": {k: v.to_json() for k, v in self.arrays.items()},
            "complete": self.complete,
        }


def read_commit(root: Path) -> CommitRecord:
    """Read and parse ``root/commit.json``; every failure names the file and the field."""
    path = root / COMMIT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise CorruptionError(f"{path}: commit record missing; the store was never committed or was damaged") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptionError(f"{path}: commit record is not valid JSON ({e}); the file is truncated or damaged") from e
    if not isinstance(obj, dict):
        raise CorruptionError(f"{path}: commit record must be a JSON object")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema_version {obj.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})")
    try:
        arrays = {}
        for name, a in obj["arrays"].items():
            content = [int(c) for c in a["content_crc"]]
            stored = [None if c is None else int(c) for c in a["stored_crc"]]
            if len(content) != len(stored):
                raise CorruptionError(f"{path}: arrays[{name!r}]: content_crc and stored_crc differ in length")
            arrays[name] = ArrayCommit(int(a["rows"]), content, stored)
        rec = CommitRecord(
            sequence=int(obj["sequence"]),
            num_episodes=int(obj["num_episodes"]),
            step_rows=int(obj["step_rows"]),
            obs_rows=int(obj["obs_rows"]),
            episode_parts=[str(p) for p in obj["episode_parts"]],
            arrays=arrays,
            complete=bool(obj.get("complete", False)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptionError(f"{path}: malformed commit record ({type(e).__name__}: {e})") from e
    if rec.obs_rows != rec.step_rows + rec.num_episodes:
        raise CorruptionError(
            f"{path}: obs_rows {rec.obs_rows} != step_rows {rec.step_rows} + num_episodes {rec.num_episodes}"
        )
    return rec


def write_commit(root: Path, rec: CommitRecord) -> None:
    write_bytes_atomic(root / COMMIT_FILE, dumps(rec.to_json()).encode())
