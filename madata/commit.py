"""The commit record: the only thing that says what a store holds.

Data arrays may run ahead of it (a writer killed between two commits); readers never
look past it, and ``--resume`` truncates whatever lies beyond it. It is written to a
temporary file, fsynced and renamed over the old one (on object storage: one PUT, which
readers see whole or not at all), so it is always either the old record or the new one.

It covers everything a reader trusts:

* per array, the committed row count and, per chunk of ``chunk_rows`` rows,
  ``content_crc``: CRC-32 of the committed rows' raw little-endian bytes (a partial last
  chunk covers only its committed rows, so rows appended later do not change it), and
  ``stored_crc``: CRC-32 of the encoded chunk file, recorded for full chunks only (they
  are written once and never again), ``None`` for a partial last chunk;
* ``metadata_sha256``: SHA-256 of the canonical JSON of the dataset's metadata (the root
  group's ``madata`` attribute: spaces, agents, flags, env, reference scores, ...);
* ``episode_parts``: each episode-table part with the SHA-256 of its bytes.

Stores written before the metadata and table digests existed (madata 0.1.0) list their
parts as bare paths and have no ``metadata_sha256``; they are read as they are, and
``madata verify`` says that those two parts are not covered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madata.errors import CorruptionError, DatasetNotFoundError, SchemaError
from madata.location import Location, location
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


@dataclass(frozen=True)
class PartRecord:
    """One committed episode-table part: its path relative to the store root and the SHA-256 of its bytes
    (None for stores written before parts were checksummed)."""

    path: str
    sha256: str | None = None

    def to_json(self) -> dict[str, Any] | str:
        return self.path if self.sha256 is None else {"path": self.path, "sha256": self.sha256}


@dataclass
class CommitRecord:
    """What the store holds: episode count, row counts, episode-table parts, per-array checksums."""

    sequence: int = 0
    num_episodes: int = 0
    step_rows: int = 0
    obs_rows: int = 0
    episode_parts: list[PartRecord] = field(default_factory=list)
    arrays: dict[str, ArrayCommit] = field(default_factory=dict)
    metadata_sha256: str | None = None
    complete: bool = False  # the writer was closed cleanly
    schema_version: int = SCHEMA_VERSION

    @property
    def legacy(self) -> bool:
        """Written before the metadata and episode table were checksummed."""
        return self.metadata_sha256 is None

    def to_json(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "sequence": self.sequence,
            "num_episodes": self.num_episodes,
            "step_rows": self.step_rows,
            "obs_rows": self.obs_rows,
            "episode_parts": [p.to_json() for p in self.episode_parts],
            "arrays": {k: v.to_json() for k, v in self.arrays.items()},
            "complete": self.complete,
        }
        if self.metadata_sha256 is not None:
            out["metadata_sha256"] = self.metadata_sha256
        return out


def _sha256_field(value: Any, where: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise CorruptionError(f"{where}: expected a SHA-256 hex digest, got {value!r}")
    return value


def _nonneg_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorruptionError(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def parse_commit(obj: Any, path: Path | str) -> CommitRecord:
    """Parse and validate a commit record's JSON; every failure names the file and the field."""
    if not isinstance(obj, dict):
        raise CorruptionError(f"{path}: commit record must be a JSON object, got {type(obj).__name__}")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: schema_version {obj.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        arrays = {}
        if not isinstance(obj["arrays"], dict):
            raise CorruptionError(f"{path}: 'arrays' must be an object")
        for name, a in obj["arrays"].items():
            where = f"{path}: arrays[{name!r}]"
            if (
                not isinstance(a, dict)
                or not isinstance(a.get("content_crc"), list)
                or not isinstance(a.get("stored_crc"), list)
            ):
                raise CorruptionError(f"{where}: expected rows, content_crc and stored_crc")
            content = [_nonneg_int(c, f"{where}.content_crc") for c in a["content_crc"]]
            stored = [None if c is None else _nonneg_int(c, f"{where}.stored_crc") for c in a["stored_crc"]]
            if len(content) != len(stored):
                raise CorruptionError(f"{where}: content_crc and stored_crc differ in length")
            arrays[name] = ArrayCommit(_nonneg_int(a["rows"], f"{where}.rows"), content, stored)
        raw_parts = obj["episode_parts"]
        if not isinstance(raw_parts, list):
            raise CorruptionError(f"{path}: 'episode_parts' must be a list")
        digest = obj.get("metadata_sha256")
        parts = []
        for k, p in enumerate(raw_parts):
            where = f"{path}: episode_parts[{k}]"
            if isinstance(p, str) and digest is None:  # a store from before the digests
                parts.append(PartRecord(p))
            elif isinstance(p, dict) and isinstance(p.get("path"), str) and digest is not None:
                parts.append(PartRecord(p["path"], _sha256_field(p.get("sha256"), f"{where}.sha256")))
            else:
                raise CorruptionError(f"{where}: expected {{'path', 'sha256'}}, got {p!r}")
            if parts[-1].path.startswith("/") or ".." in Path(parts[-1].path).parts:
                raise CorruptionError(f"{where}: path {parts[-1].path!r} leaves the store")
        rec = CommitRecord(
            sequence=_nonneg_int(obj["sequence"], f"{path}: sequence"),
            num_episodes=_nonneg_int(obj["num_episodes"], f"{path}: num_episodes"),
            step_rows=_nonneg_int(obj["step_rows"], f"{path}: step_rows"),
            obs_rows=_nonneg_int(obj["obs_rows"], f"{path}: obs_rows"),
            episode_parts=parts,
            arrays=arrays,
            metadata_sha256=None if digest is None else _sha256_field(digest, f"{path}: metadata_sha256"),
            complete=obj.get("complete", False) is True,
        )
    except KeyError as e:
        raise CorruptionError(f"{path}: commit record lacks the field {e.args[0]!r}") from None
    if rec.obs_rows != rec.step_rows + rec.num_episodes:
        raise CorruptionError(
            f"{path}: obs_rows {rec.obs_rows} != step_rows {rec.step_rows} + num_episodes {rec.num_episodes}"
        )
    return rec


def read_commit(root: Location | Path | str) -> CommitRecord:
    """Read and parse ``root/commit.json``; every failure names the file and what is wrong."""
    root = location(root)
    path = root / COMMIT_FILE
    try:
        raw = root.read(COMMIT_FILE)
    except FileNotFoundError:
        raise CorruptionError(f"{path}: commit record missing; the store was never committed or was damaged") from None
    except IsADirectoryError:
        raise CorruptionError(f"{path}: is a directory, expected the commit record (a JSON file)") from None
    except NotADirectoryError:
        raise DatasetNotFoundError(f"{root}: not a directory; a madata dataset is one") from None
    except OSError as e:
        raise CorruptionError(f"{path}: commit record cannot be read ({e.strerror or e})") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(
            f"{path}: commit record is not valid UTF-8 JSON ({e}); the file is truncated or damaged"
        ) from None
    return parse_commit(obj, path)


def write_commit(root: Location | Path | str, rec: CommitRecord) -> None:
    """Replace the commit record: readers see the old one or the new one (a rename locally, one PUT elsewhere)."""
    location(root).write(COMMIT_FILE, dumps(rec.to_json()).encode())
