"""``madata train ALGO`` (one subcommand per algorithm of :mod:`madata_algos.registry`) and ``madata eval RUN``.

Every subcommand takes the same run options, then one option per field of its algorithm's
config dataclass (``madata_algos/configs.py``): the field's default is the option's default
and the comment on the field's line is its help, so the hyperparameters are described in
one place. Torch is imported only when a command runs, not for ``--help``.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import tokenize
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.errors import handle_errors
from madata.errors import SchemaError
from madata_algos import registry
from madata_algos.registry import AlgorithmSpec

app = typer.Typer(help="Train offline MARL algorithms on a madata dataset.", no_args_is_help=True)

# option names that differ from their config field (kept from before the options were generated)
OPTION_NAMES = {("cast-bcq", "subteam_sampling"): "subteam"}


def field_help(cls: type) -> dict[str, str]:
    """The comment at the end of each field's line in the dataclass ``cls`` (and its dataclass bases)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or "__dataclass_fields__" not in vars(klass):
            continue
        first_name: dict[int, str] = {}
        comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(klass)).readline):
            if tok.type == tokenize.NAME:
                first_name.setdefault(tok.start[0], tok.string)
            elif tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").replace("fmt: skip", "").strip()
        own = {f.name for f in dataclasses.fields(klass)}
        out |= {name: comments[line] for line, name in first_name.items() if name in own and comments.get(line)}
    return out


def parse_sizes(text: str, option: str) -> tuple[int, ...]:
    """``"400,300"`` -> ``(400, 300)``: positive layer sizes."""
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise SchemaError(f"{option}: expected comma-separated integers like 400,300, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise SchemaError(f"{option}: expected positive sizes, got {text!r}")
    return sizes


def _config_parameters(spec: AlgorithmSpec) -> tuple[list[inspect.Parameter], dict[str, tuple[str, str, bool]]]:
    """One typer option per config field; returns the parameters and what each one sets."""
    hints = typing.get_type_hints(spec.config)
    helps = field_help(spec.config)
    defaults = spec.config()
    params, fields = [], {}  # fields: param name -> (field name, option, is a tuple of sizes)
    for f in dataclasses.fields(spec.config):
        option = "--" + OPTION_NAMES.get((spec.name, f.name), f.name).replace("_", "-")
        kind, default = hints[f.name], getattr(defaults, f.name)
        text = helps.get(f.name) or f.name.replace("_", " ")
        sizes = typing.get_origin(kind) is tuple
        if kind is bool:
            decl = f"{option}/--no-{option[2:]}"
        elif sizes:
            kind, default, decl, text = str, ",".join(map(str, default)), option, f"{text} (comma-separated)"
        elif kind in (int, float, str):
            decl = option
        else:
            raise TypeError(f"{spec.config.__name__}.{f.name}: no command-line option for type {kind}")
        name = f"cfg_{f.name}"  # the Python name only; users see `option`
        option_info = typer.Option(decl, help=text, metavar="SIZES" if sizes else None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option_info]))  # fmt: skip
        fields[name] = (f.name, option, sizes)
    return params, fields


def _run_parameters(spec: AlgorithmSpec) -> list[inspect.Parameter]:
    state = "with a global state" if spec.needs_state else "(a global state is not needed)"
    shared: list[tuple[str, Any, Any]] = [
        ("dataset", Annotated[Path, typer.Argument(help=f"A madata dataset {state}.", show_default=False)], inspect.Parameter.empty),
        ("out", Annotated[Path, typer.Option("-o", "--out", help="Run directory: config.json, log.csv, learning_curve.png, checkpoint.pt.")], inspect.Parameter.empty),
        ("steps", Annotated[int, typer.Option(help="Training iterations (minibatch updates).")], 100_000),
        ("seed", Annotated[int, typer.Option(help="Seed of torch, numpy, the loader and the evaluation episodes.")], 0),
        ("batch_size", Annotated[int, typer.Option(help="Minibatch size (CAST-BCQ's reference code: 1024).")], 1024),
        ("eval_every", Annotated[int, typer.Option(help="Iterations between evaluations (and checkpoints).")], 5000),
        ("eval_episodes", Annotated[int, typer.Option(help="Episodes per evaluation in the real environment.")], 10),
        ("eval_max_steps", Annotated[int | None, typer.Option(help="Time limit of evaluation episodes (default: the task's).")], None),
        ("device", Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")], None),
        ("resume", Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")], False),
    ]  # fmt: skip
    kind = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter(n, kind, annotation=a, default=d) for n, a, d in shared]


def _command(spec: AlgorithmSpec):
    """``madata train <spec.name>``: its function, with a signature built for typer."""
    config_params, fields = _config_parameters(spec)
    run_params = _run_parameters(spec)
    clash = {p.name for p in run_params} & {name for name, _, _ in fields.values()}
    if clash:
        raise TypeError(f"{spec.config.__name__}: fields {sorted(clash)} clash with the run options")

    def command(**kw) -> None:
        from madata_algos.train import train

        cfg = spec.config(**{name: parse_sizes(kw[param], option) if sizes else kw[param]
                             for param, (name, option, sizes) in fields.items()})  # fmt: skip
        rows = train(kw["dataset"], kw["out"], algorithm=spec.name, steps=kw["steps"], seed=kw["seed"], config=cfg,
                     batch_size=kw["batch_size"], eval_every=kw["eval_every"], eval_episodes=kw["eval_episodes"],
                     eval_max_steps=kw["eval_max_steps"], device=kw["device"], resume=kw["resume"], progress=True)  # fmt: skip
        if rows:
            r = rows[-1]
            typer.echo(f"step {r['step']}: return {r['eval_return']:.1f} +- {r['eval_std']:.1f}; log in {kw['out'] / 'log.csv'}")

    command.__signature__ = inspect.Signature([*run_params, *config_params])
    command.__name__ = spec.name.replace("-", "_")
    return handle_errors(command)


def _help(spec: AlgorithmSpec) -> str:
    kinds = " and ".join(k for k, b in (("continuous", spec.continuous), ("discrete", spec.discrete)) if b)
    execution = ("Decentralized execution: agent i acts on its own observation." if spec.decentralized
                 else "Centralized execution: the policy needs every agent's observation at every step.")  # fmt: skip
    return f"{spec.summary}\n\n{kinds.capitalize()} actions. {execution} Equations and defaults: docs/algorithms.md."


for _spec in registry.ALGORITHMS.values():
    app.command(_spec.name, help=_help(_spec), short_help=_spec.summary)(_command(_spec))


def eval_command(
    run: Annotated[Path, typer.Argument(help="A training run directory.", show_default=False)],
    episodes: Annotated[int, typer.Option(help="Evaluation episodes.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the episodes (episode k resets with seed + k).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Evaluate a run's last checkpoint in the real environment, executed as its algorithm executes."""
    from madata_algos.train import evaluate_run

    res = evaluate_run(run, episodes=episodes, seed=seed)
    if as_json:
        typer.echo(json.dumps(res.to_json(), indent=2))
        return
    norm = "" if res.mean_normalized is None else f", normalized {res.mean_normalized:.1f} +- {res.std_normalized:.1f}"
    typer.echo(f"{res.task}: return {res.mean_return:.1f} +- {res.std_return:.1f} over {res.episodes} episodes{norm}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train")
    root.command("eval")(handle_errors(eval_command))
