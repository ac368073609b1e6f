"""madata: offline multi-agent RL datasets: collect, convert, store, verify, diagnose.

    import madata
    ds = madata.open("grid.zarr")
    ds.episodes.to_pandas()
    batch = ds.transitions(fields=["obs", "action", "reward", "next_obs", "terminated"])
"""

from madata.dataset import Dataset, Episode, open  # noqa: A004
from madata.errors import CorruptionError, DatasetExistsError, DatasetNotFoundError, MadataError, SchemaError
from madata.integrity import verify
from madata.schema import SCHEMA_VERSION, AgentSpec, DatasetSpec
from madata.spaces import Box, Discrete
from madata.writer import DatasetWriter, create

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION", "AgentSpec", "Box", "CorruptionError", "Dataset", "DatasetExistsError",
    "DatasetNotFoundError", "DatasetSpec", "DatasetWriter", "Discrete", "Episode", "MadataError",
    "SchemaError", "create", "open", "verify",
]  # fmt: skip
