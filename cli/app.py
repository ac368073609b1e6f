"""The ``madata`` command. Thin: parse options, call the library, print.

Library errors (:class:`madata.errors.MadataError`) are printed as one line on stderr
and exit with code 2; no traceback.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli import behavior, d4rl, diagnose, train
from cli.errors import handle_errors, main_with
from cli.format import print_json
from cli.options import Scheduler, Workers

app = typer.Typer(
    name="madata",
    help="Offline multi-agent RL datasets: collect, convert, inspect, verify, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(behavior.app, name="behavior")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
DatasetArg = Annotated[
    str,
    typer.Argument(
        help="A madata dataset: a directory or an fsspec URL (s3://bucket/x.zarr; credentials and endpoint "
        "from the usual AWS_* environment variables).",
        show_default=False,
    ),
]


@app.command()
@handle_errors
def info(path: DatasetArg, as_json: JsonOpt = False) -> None:
    """Agents, spaces, sizes, return statistics, behaviour labels and metadata of a dataset."""
    import madata
    from madata.summary import summarize

    s = summarize(madata.open(path))
    if as_json:
        print_json(s)
        return
    from cli.format import format_summary

    typer.echo(format_summary(s))


@app.command()
@handle_errors
def verify(
    path: DatasetArg,
    quick: Annotated[
        bool, typer.Option(help="Skip decoding every chunk (structure and stored checksums only).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check schema, shapes, episode index, terminated/truncated semantics and every checksum.

    Exit code 0 when the dataset is sound, 2 with the list of problems otherwise.
    """
    from madata.integrity import verify as run_verify

    report = run_verify(path, full=not quick)
    if as_json:
        print_json(report.to_json())
    else:
        for n in report.notes:
            typer.echo(f"note: {n}")
        if report.ok:
            typer.echo(
                f"OK: {report.path}: {report.num_episodes} episodes, {report.num_transitions} transitions, "
                f"{report.chunks_checked} chunks checked"
            )
        for p in report.problems:
            typer.echo(f"problem: {p}", err=True)
    if not report.ok:
        if not as_json:
            typer.echo(f"madata: error: {len(report.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(2)


@app.command()
@handle_errors
def upgrade(path: DatasetArg) -> None:
    """Add checksums of the metadata and episode table to a dataset written by madata 0.1.0.

    Verifies the dataset fully first and refuses a damaged or unfinished one; only its
    commit record is rewritten (atomically), never its data.
    """
    from madata.integrity import upgrade as run_upgrade

    if run_upgrade(path):
        typer.echo(f"upgraded {path}: its metadata and episode table are now covered by checksums")
    else:
        typer.echo(f"{path} is current: nothing to upgrade")


import_app = typer.Typer(help="Bring datasets in from other formats.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("og-marl")
@handle_errors
def import_og_marl_command(
    vault: Annotated[Path, typer.Argument(help="A vault directory (holding uid directories), or one uid directory.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset directory (must not exist).")],
    uid: Annotated[str | None, typer.Option(help="Which uid of the vault (needed when it holds several).")] = None,
    strict: Annotated[
        bool, typer.Option(help="Refuse a vault that ends inside an episode instead of dropping it.")
    ] = False,
) -> None:
    """Import an OG-MARL (flashbax) vault: episodes split where every agent is done, state and legal actions kept."""
    from madata.convert.og_marl import import_og_marl

    ds = import_og_marl(vault, out, uid=uid, strict=strict)
    report = ds.meta.provenance["report"]
    typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out}")
    if report["dropped_unfinished_steps"]:
        typer.echo(f"note: dropped {report['dropped_unfinished_steps']} steps of an unfinished last episode", err=True)
    if report["padded_agents"]:
        typer.echo(f"note: agents {', '.join(report['padded_agents'])} are all zeros (padding?)", err=True)
    typer.echo(f"note: final observation of each episode {report['final_observation']}", err=True)


def _collect_pettingzoo(
    task, out, policy, env_arg, episodes, seed, max_steps, resume, commit_every, commit_seconds, given
):
    from madata.errors import SchemaError
    from madata.pettingzoo import collect_pettingzoo, env_from_spec, parse_env_args, policy_from_spec

    refused = [k for k, v in given.items() if v is not None]
    if refused:
        raise SchemaError(f"{', '.join(refused)}: built-in tasks only; a pettingzoo: task takes --policy AGENT=POLICY")
    if not policy:
        raise SchemaError("a pettingzoo: task needs --policy AGENT=random (or AGENT=MODULE:CALLABLE) for every agent")
    policies: dict[str, dict] = {}
    for item in policy:
        agent, sep, spec = item.partition("=")
        if not sep or not agent or not spec:
            raise SchemaError(f"--policy {item!r}: expected AGENT=random or AGENT=MODULE:CALLABLE")
        policies.setdefault(agent, {})[spec] = policy_from_spec(spec)
    kwargs = parse_env_args(env_arg or [])
    ds = collect_pettingzoo(
        env_from_spec(task, kwargs),
        out,
        policies=policies,
        episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        env_name=task,
        env_kwargs=kwargs,
        resume=resume,
        commit_every=commit_every,
        commit_seconds=commit_seconds,
        progress=True,
    )
    typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out}")


@app.command()
@handle_errors
def combine(
    paths: Annotated[list[Path], typer.Argument(help="Two or more datasets of the same task.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset directory (must not exist).")],
) -> None:
    """Write the episodes of several datasets of one task, in order, into a new verified dataset.

    Each episode's provenance names its source and its id there.
    """
    from madata.ops import combine as run_combine

    ds = run_combine(paths, out, progress=True)
    typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out}")


class Teams(str, Enum):
    matched = "matched"
    mismatched = "mismatched"


@app.command()
@handle_errors
def subsample(
    path: DatasetArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset directory (must not exist).")],
    episodes: Annotated[
        int | None, typer.Option(help="Keep this many episodes, drawn without replacement with --seed.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --episodes draw.")] = 0,
    return_quantiles: Annotated[
        str | None, typer.Option(help="LO,HI: returns between these quantiles, e.g. 0.75,1 for the top quarter.")
    ] = None,
    behaviour: Annotated[
        str | None, typer.Option(help="Behaviour labels to keep, e.g. agent_0=medium,agent_1=expert.")
    ] = None,
    teams: Annotated[Teams | None, typer.Option(help="matched: every agent at one level; mismatched: not.")] = None,
    from_source: Annotated[
        int | None, typer.Option(help="The episodes a combine took from its K-th source (0-based).")
    ] = None,
) -> None:
    """Write the episodes that pass every given condition into a new verified dataset (source order kept)."""
    import madata
    from madata.behaviour.mix import parse_combo
    from madata.ops import subsample as run_subsample

    labels = None
    if behaviour is not None:
        labels = parse_combo(behaviour, madata.open(path).agent_ids, partial=True)
    quantiles = None
    if return_quantiles is not None:
        from madata.errors import SchemaError

        try:
            quantiles = tuple(float(x) for x in return_quantiles.split(","))
        except ValueError:
            raise SchemaError(f"--return-quantiles: expected LO,HI like 0.75,1, got {return_quantiles!r}") from None
        if len(quantiles) != 2:
            raise SchemaError(f"--return-quantiles: expected two numbers LO,HI, got {return_quantiles!r}")
    ds = run_subsample(
        path,
        out,
        count=episodes,
        seed=seed,
        return_quantiles=quantiles,
        behaviour=labels,
        teams=None if teams is None else teams.value,
        from_source=from_source,
        progress=True,
    )
    typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out}")


class ExportFormat(str, Enum):
    parquet = "parquet"
    og_marl = "og-marl"


class ExportTable(str, Enum):
    transitions = "transitions"
    episodes = "episodes"


@app.command()
@handle_errors
def export(
    path: DatasetArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = ExportFormat.parquet,
    table: Annotated[
        ExportTable, typer.Option(help="transitions: one row per transition; episodes: the episode table alone.")
    ] = ExportTable.transitions,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """Write the flat transition table (one row per transition, with each episode's return, end, seed and
    behaviour labels), or the episode table alone, for DuckDB, polars or pandas; or (--format og-marl) an
    OG-MARL vault at OUT/madata that flashbax reads (docs/sources.md)."""
    from tqdm import tqdm

    import madata
    from madata.distributed import check_cluster, dask_client
    from madata.errors import SchemaError
    from madata.export import export_episodes, export_parquet

    workers = check_cluster(workers, scheduler)
    on_dask = workers is not None or scheduler is not None
    if on_dask and (fmt is not ExportFormat.parquet or table is not ExportTable.transitions):
        raise SchemaError("--workers and --scheduler apply to the transition table in Parquet (the default export)")
    ds = madata.open(path)
    if fmt is ExportFormat.og_marl:
        from madata.convert.og_marl import export_og_marl

        if table is not ExportTable.transitions or overwrite:
            raise SchemaError(
                "--table and --overwrite apply to --format parquet; an OG-MARL vault is always written new"
            )
        vault = export_og_marl(ds, out)
        typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to the vault {vault}")
        return
    if table is ExportTable.episodes:
        typer.echo(f"wrote {export_episodes(ds, out, overwrite=overwrite)} episodes to {out}")
        return
    with (
        dask_client(workers, scheduler) as client,
        tqdm(total=ds.num_transitions, unit="tr", desc="export", disable=None, file=sys.stderr) as bar,
    ):
        rows = export_parquet(ds, out, overwrite=overwrite, progress=bar.update, client=client)
    typer.echo(f"wrote {rows} transitions to {out}")


@app.command()
@handle_errors(interrupted="committed episodes are kept (rerun with --resume to continue)")
def collect(
    task: Annotated[str, typer.Argument(help="Task name, e.g. grid or halfcheetah-2x3.", show_default=False)],
    out: Annotated[str, typer.Option("-o", "--out", help="Output dataset: a directory or an fsspec URL (s3://...).")],
    mix: Annotated[
        str | None,
        typer.Option(help="Comma-separated behaviour levels; every per-agent combination gets an equal share."),
    ] = None,
    combo: Annotated[
        str | None, typer.Option(help="One explicit combination, e.g. agent_0=medium,agent_1=expert.")
    ] = None,
    mix_by: Annotated[
        str | None,
        typer.Option(
            help="With --mix: 'agent' draws each agent's level (default; uncoordinated), "
            "'team' one level for the whole team per episode (coordinated, like D4RL's medium-expert)."
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(help="Number of episodes.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed reproduces the dataset bit for bit.")] = 0,
    envs: Annotated[
        int, typer.Option(help="Environment copies stepped side by side (the data does not depend on it).")
    ] = 16,
    noise: Annotated[
        float, typer.Option(help="Std of Gaussian action noise added per action component (clipped to the box).")
    ] = 0.0,
    epsilon: Annotated[float, typer.Option(help="Probability that an agent acts uniformly at random in a step.")] = 0.0,
    max_steps: Annotated[
        int | None, typer.Option(help="Time limit below the task's own; ends there are truncated.")
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory of TASK/LEVEL.json behaviour checkpoints (default: $MADATA_CHECKPOINT_DIR, else the shipped ones)."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted collection into --out.")] = False,
    commit_every: Annotated[int, typer.Option(help="Episodes between commits (each commit is crash-safe).")] = 10,
    commit_seconds: Annotated[
        float, typer.Option(help="Seconds at least between commits (a crash loses at most this much work).")
    ] = 5.0,
    chunk_rows: Annotated[int | None, typer.Option(help="Rows per Zarr chunk (default: madata's).")] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="pettingzoo: tasks only: AGENT=random or AGENT=MODULE:CALLABLE, repeated; several per agent "
            "are its levels (every per-agent combination gets an equal share)."
        ),
    ] = None,
    env_arg: Annotated[
        list[str] | None, typer.Option(help="pettingzoo: tasks only: KEY=VALUE passed to the env function, repeated.")
    ] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    shard_episodes: Annotated[
        int | None,
        typer.Option(
            help="With --workers/--scheduler: episodes per shard (one Dask task each; default: 4 per worker)."
        ),
    ] = None,
) -> None:
    """Run behaviour policies in TASK and write a dataset; each episode records each agent's level.

    TASK is a built-in task (grid, halfcheetah-2x3, ...) or pettingzoo:MODULE[:FUNCTION], any
    PettingZoo ParallelEnv (with --policy)."""
    from madata.behaviour.mix import parse_combo, parse_mix
    from madata.collect import collect as run_collect
    from madata.envs.registry import get_task

    if task.startswith("pettingzoo:"):
        if "://" in out or workers is not None or scheduler is not None or shard_episodes is not None:
            raise typer.BadParameter(
                "pettingzoo: tasks are collected by one process into a local directory "
                "(no URL, --workers, --scheduler or --shard-episodes)"
            )
        _collect_pettingzoo(
            task,
            Path(out),
            policy,
            env_arg,
            episodes,
            seed,
            max_steps,
            resume,
            commit_every,
            commit_seconds,
            given={
                "--mix": mix,
                "--combo": combo,
                "--mix-by": mix_by,
                "--checkpoint-dir": checkpoint_dir,
                "--noise": noise or None,
                "--epsilon": epsilon or None,
                "--chunk-rows": chunk_rows,
            },
        )
        return
    if policy or env_arg:
        raise typer.BadParameter(
            "--policy and --env-arg apply to pettingzoo:MODULE tasks only; built-in tasks take --mix or --combo"
        )
    info_ = get_task(task)
    if (mix is None) == (combo is None):
        raise typer.BadParameter("give exactly one of --mix and --combo")
    ds = run_collect(
        info_,
        out,
        mix=parse_mix(mix) if mix is not None else None,
        combo=parse_combo(combo, info_.agent_ids) if combo is not None else None,
        mix_by=mix_by,
        episodes=episodes,
        seed=seed,
        envs=envs,
        noise=noise,
        epsilon=epsilon,
        max_steps=max_steps,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        commit_every=commit_every,
        commit_seconds=commit_seconds,
        chunk_rows=chunk_rows,
        progress=True,
        report=None if sys.stderr.isatty() else (lambda line: typer.echo(line, err=True)),
        workers=workers,
        scheduler=scheduler,
        shard_episodes=shard_episodes,
    )
    typer.echo(f"wrote {ds.num_episodes} episodes, {ds.num_transitions} transitions to {out}")


d4rl.register(app)  # split-d4rl, export-d4rl
train.register(app)  # train ALGO, eval
diagnose.register(app)  # diagnose


@app.callback(invoke_without_command=True)
def root(
    version: Annotated[bool, typer.Option("--version", help="Print madata's version and exit.", is_eager=True)] = False,
) -> None:
    """Offline multi-agent RL datasets: collect, convert, inspect, verify, export, train."""
    if version:
        import madata

        typer.echo(f"madata {madata.__version__}")
        raise typer.Exit(0)


def main() -> None:
    main_with(app)


if __name__ == "__main__":
    main()
