"""Atomic file output, written once: readers see the old file or the new one, never a mix.

Every file madata writes outside a store's chunks goes through here: a temporary file in
the same directory, flushed and fsynced, renamed over the target, and the directory
fsynced so the rename survives a power cut. Targets are checked before the first byte is
written (the parent exists, the target is not a directory, it does not exist unless
overwriting is asked for), and OS errors (read-only file system, full disk) become one
madata error naming the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from madata.errors import DatasetExistsError, MadataError, OutputError


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output(path: str | os.PathLike, overwrite: bool = True, what: str = "file") -> Path:
    """Refuse, before anything is written, an output ``path`` that cannot become a file:
    a missing parent directory, a directory in its place, or an existing file without ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a {what} path")
    if path.exists() and not overwrite:
        raise DatasetExistsError(f"{path}: exists; pass --overwrite to replace it, or choose another path")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: its directory {path.parent} does not exist; create it first")
    return path


def _appeared(path: Path) -> DatasetExistsError:
    return DatasetExistsError(f"{path}: appeared while it was being written; nothing was replaced")


@contextlib.contextmanager
def _os_errors_named(path: Path) -> Iterator[None]:
    """OS errors (read-only file system, full disk) inside the block become one OutputError naming ``path``."""
    try:
        yield
    except MadataError:
        raise
    except OSError as e:
        raise OutputError(f"{path}: cannot be written ({e.strerror or e})") from e


# errors of os.link on file systems that have no hard links (FAT, exFAT, some network and FUSE mounts)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (FileExistsError), in one step: Linux's
    renameat2(RENAME_NOREPLACE). OSError where neither the C library nor the file system offers it."""
    libc = _libc()
    if not hasattr(libc, "renameat2"):
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
    at_fdcwd, rename_noreplace = -100, 1
    if libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(dst))  # EEXIST makes it a FileExistsError


def _link_noreplace(src: Path, dst: Path) -> None:
    """Give ``src``'s file the name ``dst`` unless ``dst`` exists (FileExistsError), atomically: a hard link,
    or where the file system has none, a rename that refuses to replace."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        _rename_noreplace(src, dst)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True, what: str = "file") -> Iterator[Path]:
    """A temporary path to write to; on success it replaces ``path`` (durably), on any error it is removed.
    Without ``overwrite`` it becomes ``path`` only if no one else created it first (a hard link, or a
    rename with RENAME_NOREPLACE on file systems without links: atomic, refused when the name exists);
    madata's create-if-absent commits rest on that."""
    path = check_output(path, overwrite, what)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with _os_errors_named(path):
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:  # refused if the name was taken meanwhile: never replace what someone else wrote
                try:
                    _link_noreplace(tmp, path)
                except FileExistsError:
                    raise _appeared(path) from None
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path."""
    with atomic_output(path, overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def check_new_directory(path: str | os.PathLike) -> Path:
    """Refuse, before anything is written, an output directory that exists or whose parent does not."""
    path = Path(path)
    if path.exists():
        raise DatasetExistsError(f"{path}: exists; choose another output path (nothing was written)")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: its directory {path.parent} does not exist; create it first")
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory path beside ``path`` to build a whole directory in (a store, a vault); on
    success it is renamed to ``path`` (durably), on any error removed. ``path`` must not exist, and
    its parent must."""
    path = check_new_directory(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this very process id
    try:
        with _os_errors_named(path):
            yield tmp
            if path.exists():  # appeared meanwhile: never replace what a user wrote
                raise _appeared(path)
            os.rename(tmp, path)
            fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
