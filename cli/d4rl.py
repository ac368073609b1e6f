"""``madata split-d4rl`` and ``madata export-d4rl``: D4RL HDF5 files to multi-agent datasets, and back."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import handle_errors


class Robot(str, Enum):
    halfcheetah = "halfcheetah"
    hopper = "hopper"
    walker2d = "walker2d"


class FloatDtype(str, Enum):
    float32 = "float32"
    float64 = "float64"


@handle_errors
def split_d4rl(
    robot: Annotated[Robot, typer.Argument(help="The D4RL robot.", show_default=False)],
    agent_conf: Annotated[
        str,
        typer.Argument(help="MaMuJoCo agent_conf: halfcheetah 2x3|6x1, hopper 3x1, walker2d 2x3.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset directory (must not exist, or be empty).")],
    tier: Annotated[
        str,
        typer.Option(
            help="D4RL tier (medium, expert, medium-replay, ...): the file looked up, and every agent's behaviour label."
        ),
    ] = "medium",
    version: Annotated[str, typer.Option(help="D4RL dataset version in the file name.")] = "v2",
    source: Annotated[
        Path | None,
        typer.Option(
            help="The D4RL HDF5 file (default: $D4RL_DATASET_DIR, else ~/.d4rl/datasets, ROBOT_TIER-VERSION.hdf5)."
        ),
    ] = None,
    agent_obsk: Annotated[
        int, typer.Option(help="MaMuJoCo observation depth: joints up to this graph distance are observed.")
    ] = 1,
    strict: Annotated[
        bool, typer.Option(help="Make every boundary quirk or inconsistency in the file an error.")
    ] = False,
    chunk_rows: Annotated[int | None, typer.Option(help="Rows per Zarr chunk (default: madata's).")] = None,
) -> None:
    """Split a D4RL file into a multi-agent dataset by MaMuJoCo's factorization (actions, local observations)."""
    from madata.convert.d4rl import split_d4rl as run

    try:
        ds = run(
            robot.value,
            agent_conf,
            out,
            tier=tier,
            version=version,
            source=source,
            agent_obsk=agent_obsk,
            strict=strict,
            **({} if chunk_rows is None else {"chunk_rows": chunk_rows}),
        )
    except KeyboardInterrupt:  # the converter removed its partial output: there is nothing to resume
        typer.echo(f"madata: interrupted; nothing was written to {out}", err=True)
        raise typer.Exit(130) from None
    report = ds.meta.provenance["report"]
    typer.echo(
        f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out} "
        f"(from {ds.meta.provenance['source']['path']}; local observations from {report['local_obs_from']})"
    )
    for k, v in report["quirks"].items():
        if v:
            typer.echo(f"quirk: {k}: {v} (rows {report['examples'].get(k, [])})")
    for n in report["notes"]:
        typer.echo(f"note: {n}")


@handle_errors
def export_d4rl(
    dataset: Annotated[
        str,
        typer.Argument(help="A MaMuJoCo madata dataset: a directory or an fsspec URL (s3://...).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .hdf5 file.")],
    dtype: Annotated[
        FloatDtype | None,
        typer.Option(help="Float dtype of observations, actions and rewards (default: the dataset's)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write a multi-agent dataset as a single-agent D4RL-format HDF5 file (joint action in the global order)."""
    from madata.convert.d4rl_export import export_d4rl as run

    r = run(dataset, out, dtype=None if dtype is None else dtype.value, overwrite=overwrite)
    typer.echo(f"wrote {r['rows']} transitions ({r['episodes']} episodes, {r['dtype']}) to {r['path']}")


def register(app: typer.Typer) -> None:
    app.command("split-d4rl")(split_d4rl)
    app.command("export-d4rl")(export_d4rl)
