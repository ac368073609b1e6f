"""Every error madata raises on bad input or bad data derives from :class:`MadataError`.

Messages say what is wrong, where (file, array or field, episode range), what was
expected, and how to fix it. The CLI prints them on one line and exits with code 2.
"""

from __future__ import annotations


class MadataError(Exception):
    """Base class of all madata errors."""


class SchemaError(MadataError, ValueError):
    """Data or metadata that does not match the dataset schema."""


class DatasetNotFoundError(MadataError, FileNotFoundError):
    """A path that holds no madata dataset."""


class DatasetExistsError(MadataError, FileExistsError):
    """Writing to a path that already holds data, without --resume."""


class OutputError(MadataError, OSError):
    """An output that cannot be written: a missing directory, a directory in the way, a read-only or full disk."""


class OutOfMemoryError(MadataError, MemoryError):
    """A step needed more memory than this machine has; the message says what needs less."""


class StorageError(MadataError, OSError):
    """Storage that cannot be reached or used: missing credentials, no such bucket, access denied, the network."""


class CorruptionError(MadataError):
    """Stored bytes that do not match what was committed (checksum, missing chunk, truncated file)."""


class UnknownNameError(MadataError, KeyError):
    """An unknown task, level, agent or field name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
