"""``madata behavior``: train, export and list behaviour policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import handle_errors
from cli.format import print_json

app = typer.Typer(
    help="Behaviour policies: train SAC snapshots, export them as levels, list shipped checkpoints.",
    no_args_is_help=True,
)


def _parse_snapshots(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        level, sep, step = item.partition("=")
        if not sep or not level or not step.isdigit():
            raise typer.BadParameter(f"--snapshot {item!r}: expected LEVEL=STEP, e.g. medium=100000")
        out[level] = int(step)
    return out


@app.command()
@handle_errors
def train(
    task: Annotated[str, typer.Argument(help="MaMuJoCo task, e.g. halfcheetah-2x3.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run directory (snapshots, progress.csv).")],
    steps: Annotated[int, typer.Option(help="Environment steps of SAC training.")] = 300_000,
    snapshot: Annotated[list[str], typer.Option(help="LEVEL=STEP to export, e.g. medium=100000 (repeatable).")] = [],  # noqa: B006
    save_every: Annotated[int, typer.Option(help="Steps between snapshots (each evaluated).")] = 25_000,
    seed: Annotated[int, typer.Option(help="Seed of SAC (torch, numpy, env).")] = 0,
    eval_episodes: Annotated[int, typer.Option(help="Episodes to measure each snapshot's average return.")] = 10,
    learning_starts: Annotated[int, typer.Option(help="Random-action steps before SAC updates start.")] = 10_000,
    export_to: Annotated[Path | None, typer.Option(help="Where exported levels go (default RUN/export).")] = None,
) -> None:
    """Train SAC on the whole robot (stable-baselines3) and export snapshots as behaviour levels."""
    from madata.behaviour.train import train_sac

    done = train_sac(
        task,
        out,
        steps=steps,
        snapshots=_parse_snapshots(snapshot),
        save_every=save_every,
        seed=seed,
        eval_episodes=eval_episodes,
        learning_starts=learning_starts,
        export_dir=export_to,
        progress=True,
    )
    for level, path in done.items():
        typer.echo(f"{level}: {path}")


@app.command()
@handle_errors
def export(
    run: Annotated[Path, typer.Argument(help="A training run directory.", show_default=False)],
    step: Annotated[int, typer.Option(help="Snapshot step.")],
    level: Annotated[str, typer.Option(help="Level name to export it as (medium, expert, ...).")],
    to: Annotated[Path, typer.Option(help="Checkpoint directory (TO/<task>/<level>.json).")],
) -> None:
    """Export one snapshot of a training run as a behaviour level."""
    from madata.behaviour.train import export_snapshot

    typer.echo(str(export_snapshot(run, step, level, to)))


@app.command("list")
@handle_errors
def list_(
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint directory (default: $MADATA_CHECKPOINT_DIR, else the shipped ones).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Behaviour levels: `random` (every task: each agent uniform in its own action space), the families'
    built-in ones (SMAX's heuristic), then the checkpoints (TASK/LEVEL) with their measured average returns."""
    from madata.behaviour import resolve_checkpoint_dir
    from madata.behaviour.checkpoint import load_checkpoint

    rows = []
    for js in sorted(resolve_checkpoint_dir(checkpoint_dir).glob("*/*.json")):
        i = load_checkpoint(js).info
        rows.append(
            {
                "task": i.task,
                "level": i.level,
                "train_steps": i.train_steps,
                "seed": i.seed,
                "average_return": i.average_return,
                "return_std": i.return_std,
                "eval_episodes": i.eval_episodes,
            }
        )
    from madata.envs.registry import FAMILIES

    builtin = [
        {"task": f"{f.name}-*", "level": lv, "kind": f.describe_level(lv)} for f in FAMILIES for lv in f.builtin_levels
    ]
    if as_json:
        print_json([{"task": "*", "level": "random", "kind": "uniform in each agent's action space"}, *builtin, *rows])
        return
    typer.echo(f"{'(every task)':<18} {'random':<8} uniform in each agent's own action space, no checkpoint")
    for b in builtin:
        typer.echo(f"{'(' + b['task'] + ')':<18} {b['level']:<8} {b['kind']}, built in")
    for r in rows:
        typer.echo(
            f"{r['task']:<18} {r['level']:<8} {r['train_steps']:>8} steps  seed {r['seed']}  "
            f"return {r['average_return']:.1f} (std {r['return_std']:.1f}, {r['eval_episodes']} episodes)"
        )
    if not rows:
        typer.echo("no behaviour checkpoints")
