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

import collections
import json
import os
from collections.abc import Iterator
from typing import Any

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
    ds: Dataset,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    rows_per_group: int = 65536,
    progress=None,
    client: Any = None,
) -> int:
    """Write the flat transition table of ``ds`` to ``out``; returns the number of rows.

    Streams groups of whole episodes (about ``rows_per_group`` transitions each), so
    memory stays bounded; the file appears atomically when complete. With a Dask
    ``client``, its workers read the groups and build their tables (at most two per worker
    in flight) while this process writes them, in order.
    """
    check_output(out, overwrite)
    writer = None
    rows = 0
    with atomic_output(out, overwrite) as tmp:
        for table in _group_tables(ds, ds.episode_groups(rows_per_group), client):
            if writer is None:
                meta = {**table.schema.metadata, b"madata.source": str(ds.root).encode()}
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata(meta), compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
            if progress is not None:
                progress(table.num_rows)
        if writer is None:
            raise SchemaError(f"{ds.root}: the dataset has no transitions to export")
        writer.close()
    return rows


def group_table(ds: Dataset, episodes: np.ndarray) -> pa.Table:
    """The flat transition table of ``episodes`` (ids) of ``ds``; the vector columns' shapes are in its
    schema metadata (``madata.shapes``)."""
    fields = ds.default_fields() + ["episode_id", "timestep"]
    tr = ds.select(episodes=episodes).transitions(fields)
    cols = {"episode_id": tr.pop("episode_id"), "timestep": tr.pop("timestep")}
    shapes = {}
    for key, v in tr.items():
        name = key.replace("/", "_")
        cols[name] = v
        shapes[name] = list(v.shape[1:])
    arrays = {k: _column(v) for k, v in cols.items()}
    ep = pa.array(cols["episode_id"])
    facts = {"episode_return": "return", "episode_length": "length", "episode_end": "end", "episode_seed": "seed"}
    for name, col in facts.items():
        arrays[name] = ds.store.table.column(col).take(ep)
    for a in ds.agent_ids:
        arrays[f"behaviour_{a}"] = pa.array(ds.store.column(behaviour_column(a))[cols["episode_id"]], pa.string())
    table = pa.table(arrays)
    return table.replace_schema_metadata({"madata.shapes": json.dumps(shapes)})


def _group_tables(ds: Dataset, groups: list[np.ndarray], client: Any) -> Iterator[pa.Table]:
    """:func:`group_table` of each group, in order: here, or on ``client``'s workers, a window at a time."""
    if client is None:
        for g in groups:
            yield group_table(ds, g)
        return
    shared = client.scatter(ds, broadcast=True, hash=False)
    window = 2 * max(1, len(client.scheduler_info()["workers"]))
    pending: collections.deque = collections.deque()
    for g in groups:
        pending.append(client.submit(group_table, shared, g, pure=False))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


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
