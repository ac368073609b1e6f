"""``madata train ALGO`` (one subcommand per algorithm of :mod:`madata_algos.registry`) and ``madata eval RUN``.

Every subcommand takes the same run options, then one option per field of its algorithm's
config dataclasses (``madata_algos/configs.py``; an algorithm with a continuous and a
discrete variant offers the fields of both). Each field's help and range come from its
declaration there. An option left out takes the default of the variant that the
dataset's actions select; an option that variant does not have is refused. The
subcommands are built only when ``madata train`` itself runs, and torch is imported only
when training starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cli.errors import handle_errors
from cli.format import print_json
from madata.errors import SchemaError

PRESETS = {
    # the paper's reference code (run_CAST.py): networks 750-750 / 400-300, batch 1024, 20,000 iterations
    "paper": {"batch_size": 1024, "steps": 20_000},
    # Table 2's CPU protocol (docs/results/table2.md): 256-256 networks, batch 256
    "cpu": {"batch_size": 256, "steps": 20_000, "hidden": (256, 256)},
}


def parse_sizes(text: str, option: str) -> tuple[int, ...]:
    """``"400,300"`` -> ``(400, 300)``: positive layer sizes."""
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise SchemaError(f"{option}: expected comma-separated integers like 400,300, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise SchemaError(f"{option}: expected positive sizes, got {text!r}")
    return sizes


def config_fields(spec) -> dict[str, dict[str, Any]]:
    """Every config field of the algorithm's variants: name -> kind, help, flag, default per variant."""
    from madata_algos.configs import flag_name

    out: dict[str, dict[str, Any]] = {}
    for kind, variant in spec.variants().items():
        hints = typing.get_type_hints(variant.config)
        for f in dataclasses.fields(variant.config):
            entry = out.setdefault(
                f.name,
                {"type": hints[f.name], "help": f.metadata.get("help", f.name), "flag": flag_name(f), "defaults": {}},
            )
            entry["defaults"][kind] = f.default
    return out


def _show(value) -> str:
    return (
        ",".join(map(str, value))
        if isinstance(value, tuple)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _config_parameters(spec) -> tuple[list[inspect.Parameter], dict[str, tuple[str, str, bool]]]:
    """One typer option per config field (default None: "not given"); returns them and what each sets."""
    params, fields = [], {}
    multi = len(spec.variants()) > 1
    for name, f in config_fields(spec).items():
        kind, option = f["type"], f["flag"]
        defaults = f["defaults"]
        shown = (
            "; ".join(f"{k}: {_show(v)}" for k, v in defaults.items())
            if multi
            else _show(next(iter(defaults.values())))
        )
        only = f" ({' and '.join(defaults)} actions only)" if multi and len(defaults) == 1 else ""
        text = f"{f['help']}{only} [default {shown}]"
        sizes = typing.get_origin(kind) is tuple
        if kind is bool:
            decl, annot = f"{option}/--no-{option[2:]}", bool | None
        elif sizes:
            decl, annot = option, str | None
        elif kind in (int, float, str):
            decl, annot = option, kind | None
        else:
            raise TypeError(f"{spec.name}.{name}: no command-line option for type {kind}")
        info = typer.Option(decl, help=text, metavar="SIZES" if sizes else None, show_default=False)
        params.append(
            inspect.Parameter(
                f"cfg_{name}", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[annot, info]
            )
        )
        fields[f"cfg_{name}"] = (name, option, sizes)
    return params, fields


def _run_parameters(spec) -> list[inspect.Parameter]:
    state = "with a global state" if spec.needs_state else "(a global state is not needed)"
    shared: list[tuple[str, Any, Any]] = [
        (
            "dataset",
            Annotated[
                str,
                typer.Argument(
                    help=f"A madata dataset {state}: a directory or an fsspec URL (s3://...).", show_default=False
                ),
            ],
            inspect.Parameter.empty,
        ),
        (
            "out",
            Annotated[
                Path,
                typer.Option(
                    "-o", "--out", help="Run directory: config.json, log.csv, learning_curve.png, checkpoint.pt."
                ),
            ],
            inspect.Parameter.empty,
        ),
        (
            "preset",
            Annotated[
                str | None,
                typer.Option(
                    help="Named settings: 'paper' (the reference code's: batch 1024, 20,000 iterations, reference network sizes; days on a laptop CPU) or 'cpu' (Table 2's CPU protocol: 256-256 networks, batch 256, 20,000 iterations). Options given explicitly win.",
                    show_default=False,
                ),
            ],
            None,
        ),
        (
            "steps",
            Annotated[
                int | None,
                typer.Option(help="Training iterations (minibatch updates). [default 100000]", show_default=False),
            ],
            None,
        ),
        ("seed", Annotated[int, typer.Option(help="Seed of torch, numpy, the loader and the evaluation episodes.")], 0),
        (
            "batch_size",
            Annotated[
                int | None,
                typer.Option(
                    help="Minibatch size (CAST-BCQ's reference code: 1024). [default 1024]", show_default=False
                ),
            ],
            None,
        ),
        ("eval_every", Annotated[int, typer.Option(help="Iterations between evaluations (and checkpoints).")], 5000),
        (
            "eval_episodes",
            Annotated[
                int,
                typer.Option(
                    help="Episodes per evaluation in the real environment; 0 trains without one (the log holds the losses)."
                ),
            ],
            10,
        ),
        (
            "eval_max_steps",
            Annotated[int | None, typer.Option(help="Time limit of evaluation episodes (default: the task's).")],
            None,
        ),
        ("device", Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")], None),
        (
            "stream",
            Annotated[bool, typer.Option(help="Sample from the streaming loader: for datasets larger than memory.")],
            False,
        ),
        (
            "validation",
            Annotated[
                float,
                typer.Option(
                    help="Fraction of episodes held out (drawn with the seed); the log adds each loss on them (val_*)."
                ),
            ],
            0.0,
        ),
        ("resume", Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")], False),
    ]
    kind = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter(n, kind, annotation=a, default=d) for n, a, d in shared]


def _command(spec):
    """``madata train <spec.name>``: its function, with a signature built for typer."""
    config_params, fields = _config_parameters(spec)
    run_params = _run_parameters(spec)
    clash = {p.name for p in run_params} & {name for name, _, _ in fields.values()}
    if clash:
        raise TypeError(f"{spec.name}: config fields {sorted(clash)} clash with the run options")

    def command(**kw) -> None:
        import madata
        from madata_algos import registry
        from madata_algos.train import train

        given = {
            name: parse_sizes(kw[p], option) if sizes else kw[p]
            for p, (name, option, sizes) in fields.items()
            if kw[p] is not None
        }
        preset = PRESETS.get(kw["preset"] or "", {})
        if kw["preset"] is not None and kw["preset"] not in PRESETS:
            raise SchemaError(f"--preset {kw['preset']!r}: expected one of {', '.join(PRESETS)}")
        ds = madata.open(kw["dataset"])
        data = registry.describe(ds, need_task=kw["eval_episodes"] > 0)
        variant = spec.variant(data.discrete, str(kw["dataset"]))
        if "hidden" in preset:  # the preset's sizes for every *_hidden / hidden field the variant has
            for f in dataclasses.fields(variant.config):
                if f.name.endswith("hidden") and f.name not in given and f.name != "mixer_hidden":
                    given[f.name] = preset["hidden"]
        cfg = registry.config_from_options(spec, data, given)
        report = None if sys.stderr.isatty() else (lambda line: typer.echo(line, err=True))
        rows = train(
            ds,
            kw["out"],
            algorithm=spec.name,
            steps=kw["steps"] or preset.get("steps", 100_000),
            seed=kw["seed"],
            config=cfg,
            batch_size=kw["batch_size"] or preset.get("batch_size", 1024),
            eval_every=kw["eval_every"],
            eval_episodes=kw["eval_episodes"],
            eval_max_steps=kw["eval_max_steps"],
            device=kw["device"],
            resume=kw["resume"],
            stream=kw["stream"],
            validation=kw["validation"],
            progress=True,
            report=report,
        )
        if rows and "eval_return" in rows[-1]:
            r = rows[-1]
            won = ""
            if r.get("eval_win_rate") is not None:
                from madata.envs.registry import get_task

                won = f", won {r['eval_win_rate']:.0%} ({get_task(data.task).family.results_note})"
            typer.echo(
                f"step {r['step']}: return {r['eval_return']:.1f} (std {r['eval_std']:.1f}){won}; "
                f"log in {kw['out'] / 'log.csv'}"
            )
        elif rows:
            typer.echo(f"step {rows[-1]['step']}: trained without evaluation; losses in {kw['out'] / 'log.csv'}")

    command.__signature__ = inspect.Signature([*run_params, *config_params])
    command.__name__ = spec.name.replace("-", "_")
    return handle_errors(command, interrupted="the run continues from its last checkpoint with --resume")


def _help(spec) -> str:
    kinds = " and ".join(spec.variants())
    execution = (
        "Decentralized execution: agent i acts on its own observation."
        if spec.decentralized
        else "Centralized execution: the policy needs every agent's observation at every step."
    )
    return (
        f"{spec.summary}\n\n{kinds.capitalize()} actions. {execution} Equations and defaults: docs/algorithms.md. "
        "The defaults are the paper's (hours to days on a CPU); --preset cpu is Table 2's CPU protocol."
    )


class LazyAlgorithms(TyperGroup):
    """``madata train``'s subcommands, one per registered algorithm, built when first asked for."""

    def list_commands(self, ctx) -> list[str]:
        from madata_algos.registry import names

        return names()

    def get_command(self, ctx, name: str):
        from madata_algos import registry

        if name not in registry.ALGORITHMS:
            return None
        spec = registry.ALGORITHMS[name]
        sub = typer.Typer()
        sub.command(name, help=_help(spec), short_help=spec.summary)(_command(spec))
        return typer.main.get_command(sub)


app = typer.Typer(cls=LazyAlgorithms, help="Train offline MARL algorithms on a madata dataset.", no_args_is_help=True)


def eval_command(
    run: Annotated[Path, typer.Argument(help="A training run directory.", show_default=False)],
    episodes: Annotated[
        int | None,
        typer.Option(
            help="Evaluation episodes (default: repeat the run's last logged evaluation exactly).", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the episodes (episode k resets with seed + k).", show_default=False)
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Time limit of the episodes (default: the run's).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Evaluate a run's last checkpoint in the real environment, executed as its algorithm executes.

    With no options it repeats the run's last logged evaluation: the same episodes, seeds, time limit
    and random draws, so the return equals the last row of log.csv. The dataset is not needed.
    """
    from madata_algos.train import evaluate_run

    res = evaluate_run(run, episodes=episodes, seed=seed, max_steps=max_steps)
    if as_json:
        print_json(res.to_json())
        return
    norm = (
        "" if res.mean_normalized is None else f", normalized {res.mean_normalized:.1f} (std {res.std_normalized:.1f})"
    )
    lengths = f"episodes of {min(res.lengths)}-{max(res.lengths)} steps"
    won = "" if res.win_rate is None else f", won {res.win_rate:.0%}"
    typer.echo(
        f"{res.task}: return {res.mean_return:.1f} (std {res.std_return:.1f}) over {res.episodes} episodes{norm}{won} "
        f"(reset seeds {res.seed}..{res.seed + res.episodes - 1}, {lengths})" + (f"; {res.note}" if res.note else "")
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")
    root.command("eval")(handle_errors(eval_command))
