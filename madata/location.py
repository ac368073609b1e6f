"""Where a store lives: a local directory, or a prefix on an fsspec file system (``s3://``,
``gs://``, ``memory://``, ...), and the few operations madata needs of it.

Each kind of storage says here how it provides them:

* ``read(key)``: a whole object, or ``FileNotFoundError``;
* ``write(key, data)``: readers see the old object or the new one, never a mix (a local
  directory: temporary file, fsync, rename; object storage: one PUT, which is atomic);
* ``create(key, data)``: the same, only if ``key`` does not exist yet, else
  ``FileExistsError`` (local: a hard link of the fsynced temporary file, which fails when the
  name exists, or without hard links a rename with RENAME_NOREPLACE; S3: a conditional PUT,
  ``If-None-Match: *``). The commit protocol of sharded datasets (:mod:`madata.sharded`)
  rests on it, since object storage has no rename;
* ``keys(prefix)``, ``delete(key)``, ``exists(key)``;
* ``zarr_store()``: a Zarr store here that remembers the CRC-32 of every object it wrote
  (the writer puts them in the commit record), and ``durable(keys)``: make those writes
  survive a power cut before a commit record points at them (fsync locally; a PUT is
  durable when it returns).

A Location pickles as its URL and storage options, so it travels to Dask workers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zlib
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zarr.core.buffer import Buffer
from zarr.storage import FsspecStore, LocalStore

from madata.atomic import fsync_dir, write_bytes_atomic
from madata.errors import MadataError, SchemaError, StorageError


class _Tracking:
    """Mixin for a Zarr store: remember the CRC-32 of every object written, by key."""

    written: dict[str, int]

    async def set(self, key: str, value: Buffer) -> None:
        self.written[key] = zlib.crc32(value.as_buffer_like())
        await super().set(key, value)


class TrackingLocalStore(_Tracking, LocalStore):
    """zarr's LocalStore (each write a temp file and a rename) that remembers what it wrote."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.written = {}


class TrackingFsspecStore(_Tracking, FsspecStore):
    """zarr's FsspecStore (each write one PUT) that remembers what it wrote; a failed write is a
    StorageError naming the object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = {}

    async def set(self, key: str, value: Buffer) -> None:
        try:
            await super().set(key, value)
        except Exception as e:  # noqa: BLE001 - the backend's own kinds (botocore, aiohttp, ...)
            raise storage_error(f"{self.path}/{key}", "writing", e) from e


def location(target: str | os.PathLike | Location, storage_options: dict[str, Any] | None = None) -> Location:
    """The Location of ``target``: a Location as it is, an fsspec URL (``s3://bucket/x.zarr``, with
    ``storage_options`` for its file system), or a local path (also as ``file://``)."""
    if isinstance(target, Location):
        return target
    text = os.fspath(target)
    if "://" in text and not text.startswith("file://"):
        return FsspecLocation(text, storage_options)
    if storage_options:
        raise SchemaError(f"{text}: storage options apply to fsspec URLs (s3://, gs://, ...), not to a local path")
    return LocalLocation(Path(text.removeprefix("file://")))


class Location(ABC):
    """What madata needs of a place to keep a store; ``url`` names it in messages."""

    url: str
    local: bool

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, key: str) -> str:
        """How ``key`` here is named in messages: ``<url>/<key>``."""
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    def child(self, key: str) -> Location:
        """The Location of the prefix ``key`` below this one."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object at ``key``; FileNotFoundError when there is none."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Put ``data`` at ``key``; readers see the old object or the new one, never a mix."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> None:
        """Like ``write``, only if ``key`` does not exist yet; else FileExistsError."""

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """Every object key below ``prefix`` (recursively), sorted, relative to this Location."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key``, if there is one."""

    @abstractmethod
    def exists(self, key: str = "") -> bool:
        """Whether ``key`` (or, with no key, this Location) exists."""

    @abstractmethod
    def zarr_store(self, read_only: bool = False):
        """A Zarr store rooted here that remembers the CRC-32 of every object it writes (``written``)."""

    @abstractmethod
    def size(self) -> int:
        """Bytes of every object here."""

    @abstractmethod
    def durable(self, keys: list[str]) -> None:
        """Make the objects at ``keys`` survive a power cut."""

    def map(self, fn, items: list) -> list:
        """``[fn(x) for x in items]`` for work that waits on this storage: on object storage in threads, so
        that the requests wait side by side rather than one after another."""
        if self.local or len(items) < 2:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(16, len(items))) as pool:
            return list(pool.map(fn, items))

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """The objects at ``keys`` that exist, by key; on object storage as one batch of concurrent GETs."""
        out = {}
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                out[key] = self.read(key)
        return out

    def write_many(self, items: dict[str, bytes]) -> None:
        """``write`` each (key, data); on object storage as one batch of concurrent PUTs."""
        for key, data in items.items():
            self.write(key, data)


class LocalLocation(Location):
    """A directory on this machine."""

    local = True

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def __reduce__(self):
        return (LocalLocation, (self.root,))

    def child(self, key: str) -> LocalLocation:
        return LocalLocation(self.root / key)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.root / key, data)

    def create(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.root / key, data, overwrite=False)  # DatasetExistsError is a FileExistsError

    def keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def exists(self, key: str = "") -> bool:
        return (self.root / key).exists() if key else self.root.exists()

    def zarr_store(self, read_only: bool = False) -> TrackingLocalStore:
        return TrackingLocalStore(self.root, read_only=read_only)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def durable(self, keys: list[str]) -> None:
        dirs = set()
        for key in keys:
            path = self.root / key
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs.add(path.parent)
        for d in dirs:
            fsync_dir(d)


def storage_error(where: str, doing: str, e: BaseException) -> StorageError:
    """One line for a failure of the storage backend: where, what was being done, and the first line of its error."""
    detail = str(e).splitlines()[0] if str(e) else repr(e)
    return StorageError(f"{where}: {doing} failed: {type(e).__name__}: {detail}")


_DOING = {
    "read": "reading",
    "read_many": "reading",
    "write": "writing",
    "write_many": "writing",
    "create": "creating an object",
    "keys": "listing",
    "delete": "deleting",
    "exists": "looking up",
    "size": "measuring the size",
}


def _storage_errors(method):
    """Let FileNotFoundError and FileExistsError through (they mean something to the caller); any other
    failure of the file system (credentials, permissions, no such bucket, the network) becomes a
    StorageError naming the URL and the operation."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (FileNotFoundError, FileExistsError, MadataError):
            raise
        except Exception as e:  # noqa: BLE001 - every backend raises its own kinds (botocore, aiohttp, gcsfs...)
            raise storage_error(self.url, _DOING.get(method.__name__, method.__name__), e) from e

    return wrapper


class FsspecLocation(Location):
    """A prefix on an fsspec file system (object storage has no rename and no directories)."""

    local = False

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, self.path = fsspec.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError) as e:  # an unknown protocol, or its package is not installed
            raise SchemaError(f"{url}: cannot open this URL with fsspec ({e})") from None

    def __reduce__(self):
        return (FsspecLocation, (self.url, self.storage_options))

    def _p(self, key: str) -> str:
        return f"{self.path}/{key}" if key else self.path

    def child(self, key: str) -> FsspecLocation:
        return FsspecLocation(f"{self.url}/{key}", self.storage_options)

    @_storage_errors
    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self._p(key))

    @_storage_errors
    def write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(key), data)

    @_storage_errors
    def create(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(key), data, mode="create")  # FileExistsError when taken

    @_storage_errors
    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        got = self.fs.cat([self._p(k) for k in keys], on_error="return") if keys else {}  # a list: always a dict
        return {k: v for k in keys if isinstance(v := got.get(self._p(k)), bytes)}

    @_storage_errors
    def write_many(self, items: dict[str, bytes]) -> None:
        self.fs.pipe({self._p(k): v for k, v in items.items()})

    @_storage_errors
    def keys(self, prefix: str = "") -> list[str]:
        base = self._p(prefix)
        self.fs.invalidate_cache(base)  # listings are cached; another writer may have added keys
        found = self.fs.find(base)
        return sorted(p[len(self.path) + 1 :] for p in found if p.startswith(self.path + "/"))

    @_storage_errors
    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(key))

    @_storage_errors
    def exists(self, key: str = "") -> bool:
        self.fs.invalidate_cache(self._p(key))
        return self.fs.exists(self._p(key))

    def zarr_store(self, read_only: bool = False) -> TrackingFsspecStore:
        return TrackingFsspecStore.from_url(self.url, storage_options=self.storage_options, read_only=read_only)

    @_storage_errors
    def size(self) -> int:
        self.fs.invalidate_cache(self.path)
        return int(self.fs.du(self.path))

    def durable(self, keys: list[str]) -> None:
        """Nothing to do: an object is durable when its PUT returns."""
