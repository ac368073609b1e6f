"""Converters between madata and other formats: D4RL HDF5 files split by MaMuJoCo's factorization, and back.

    from madata.convert import split_d4rl, export_d4rl
    ds = split_d4rl("walker2d", "2x3", "walker-medium", source="walker2d_medium-v2.hdf5")
    export_d4rl("walker-medium", "walker2d-madata.hdf5")

h5py is imported only when a file is read or written (``pip install "madata[d4rl]"``).
"""

from madata.convert.d4rl import split_d4rl
from madata.convert.d4rl_export import export_d4rl
from madata.convert.d4rl_plan import QUIRKS
from madata.convert.d4rl_read import d4rl_dataset_dir, d4rl_file_name
from madata.convert.split import AGENT_CONFS, MaMuJoCoSplit, mamujoco_split

__all__ = [
    "AGENT_CONFS",
    "QUIRKS",
    "MaMuJoCoSplit",
    "d4rl_dataset_dir",
    "d4rl_file_name",
    "export_d4rl",
    "mamujoco_split",
    "split_d4rl",
]
