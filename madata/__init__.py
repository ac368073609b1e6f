"""madata: offline multi-agent RL datasets: collect, convert, store, verify, diagnose.

    import madata
    ds = madata.open("grid.zarr")
    ds.episodes.to_pandas()
    batch = ds.transitions(fields=["obs", "action", "reward", "next_obs", "terminated"])

The names below load their modules on first use, so ``import madata`` (and the ``madata``
command's start-up) does not pay for zarr and pyarrow until a dataset is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Dataset": "madata.dataset",
    "Episode": "madata.dataset",
    "open": "madata.dataset",
    "CorruptionError": "madata.errors",
    "DatasetExistsError": "madata.errors",
    "DatasetNotFoundError": "madata.errors",
    "MadataError": "madata.errors",
    "SchemaError": "madata.errors",
    "verify": "madata.integrity",
    "SCHEMA_VERSION": "madata.schema",
    "AgentSpec": "madata.schema",
    "DatasetSpec": "madata.schema",
    "Box": "madata.spaces",
    "Discrete": "madata.spaces",
    "DatasetWriter": "madata.writer",
    "create": "madata.writer",
}

__all__ = [
    "SCHEMA_VERSION",
    "AgentSpec",
    "Box",
    "CorruptionError",
    "Dataset",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DatasetWriter",
    "Discrete",
    "Episode",
    "MadataError",
    "SchemaError",
    "create",
    "open",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'madata' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:  # for type checkers and IDEs
    from madata.dataset import Dataset, Episode, open  # noqa: A004
    from madata.errors import CorruptionError, DatasetExistsError, DatasetNotFoundError, MadataError, SchemaError
    from madata.integrity import verify
    from madata.schema import SCHEMA_VERSION, AgentSpec, DatasetSpec
    from madata.spaces import Box, Discrete
    from madata.writer import DatasetWriter, create
