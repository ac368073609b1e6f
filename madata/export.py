"""Export to formats other tools read: the flat transition table as Parquet.

One row per transition, for DuckDB, polars and pandas users. Column names are
SQL-friendly: ``episode_id``, ``timestep``, ``obs_<agent>``, ``action_<agent>``,
``next_obs_<agent>``, ``state``, ``next_state``, ``reward``, ``terminated``,
``truncated``, ``behaviour_<agent>``. Vector fields are fixed-size lists (flattened
row-major; the original shapes are in the schema metadata under ``madata.shapes``).
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
    writer = None
    rows = 0
    with atomic_output(out, overwrite) as tmp:
        for group in _episode_groups(ds, rows_per_group):
            tr = ds.select(episodes=group).transitions(fields)
            cols = {"episode_id": tr.pop("episode_id"), "timestep": tr.pop("timestep")}
            for key, v in tr.items():
                name = key.replace("/", "_")
                cols[name] = v
                shapes[name] = list(v.shape[1:])
            arrays = {k: _column(v) for k, v in cols.items()}
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


def _episode_groups(ds: Dataset, rows_per_group: int):
    """Consecutive runs of episode ids of about ``rows_per_group`` transitions."""
    ids = ds.episode_ids
    lengths = ds.episode_lengths()
    start, acc = 0, 0
    for i, n in enumerate(lengths):
        acc += int(n)
        if acc >= rows_per_group:
            yield ids[start : i + 1]
            start, acc = i + 1, 0
    if start < len(ids):
        yield ids[start:]
