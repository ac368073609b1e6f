"""Export to formats other tools read: the flat transition table, or the episode table, as Parquet.

The transition table has one row per transition, for DuckDB, polars and pandas users. Column
names are SQL-friendly: ``episode_id``, ``timestep``, ``obs_<agent>``, ``action_<agent>``,
``next_obs_<agent>``, ``state``, ``next_state``, ``reward``, ``terminated``, ``truncated``,
and the episode's own facts on every row: ``episode_return``, ``episode_length``,
``episode_end``, ``episode_seed``, ``behaviour_<agent>``. Vector fields are fixed-size lists
(flattened row-major; the original shapes are in the schema metadata under ``madata.shapes``).

The episode table (:func:`export_episodes`) has one row per episode: id, length, return,
end, seed, each agent's behaviour label and the producer's provenance (JSON).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from madata.atomic import atomic_output, check_output
from madata.dataset import Dataset
from madata.errors import SchemaError
from madata.schema import behaviour_column

FORMATS = ("parquet",)


def _column(values: np.ndarray) -> pa.Array:
    if values.ndim == 1:
        return pa.array(values)
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def export_parquet(
    ds: Dataset, out: str | os.PathLike, *, overwrite: bool = False, rows_per_group: int = 65536, progress=None
) -> int:
    """Write the flat transition table of ``ds`` to ``out``; returns the number of rows.

    Streams groups of whole episodes (about ``rows_per_group`` transitions each), so
    memory stays bounded; the file appears atomically when complete.
    """
    check_output(out, overwrite)
    fields = ds.default_fields() + ["episode_id", "timestep"]
    shapes = {}
    labels = {a: ds.store.column(behaviour_column(a)) for a in ds.agent_ids}
    facts = {"episode_return": "return", "episode_length": "length", "episode_end": "end", "episode_seed": "seed"}
    per_episode = {name: ds.store.table.column(col) for name, col in facts.items()}
    writer = None
    rows = 0
    with atomic_output(out, overwrite) as tmp:
        for group in ds.episode_groups(rows_per_group):
            tr = ds.select(episodes=group).transitions(fields)
            cols = {"episode_id": tr.pop("episode_id"), "timestep": tr.pop("timestep")}
            for key, v in tr.items():
                name = key.replace("/", "_")
                cols[name] = v
                shapes[name] = list(v.shape[1:])
            arrays = {k: _column(v) for k, v in cols.items()}
            ep = pa.array(cols["episode_id"])
            for name, col in per_episode.items():
                arrays[name] = col.take(ep)
            for a in ds.agent_ids:
                arrays[f"behaviour_{a}"] = pa.array(labels[a][cols["episode_id"]], pa.string())
            table = pa.table(arrays)
            if writer is None:
                meta = {"madata.shapes": json.dumps(shapes), "madata.source": str(ds.root)}
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata(meta), compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
            if progress is not None:
                progress(table.num_rows)
        if writer is None:
            raise SchemaError(f"{ds.root}: the dataset has no transitions to export")
        writer.close()
    return rows


def export_episodes(ds: Dataset, out: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Write the episode table of ``ds`` (one row per episode of the dataset or selection) to ``out``
    as Parquet, atomically; returns the number of rows."""
    check_output(out, overwrite)
    table = ds.episodes.drop_columns(["step_offset", "obs_offset"])
    table = table.rename_columns(
        [c.replace(".", "_") for c in table.column_names]
    )  # behaviour.agent_0 -> behaviour_agent_0
    with atomic_output(out, overwrite) as tmp:
        pq.write_table(table.replace_schema_metadata({"madata.source": str(ds.root)}), tmp, compression="zstd")
    return table.num_rows
