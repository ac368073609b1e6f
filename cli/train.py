"""``madata train ALGO`` and ``madata eval RUN``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import handle_errors
from madata_algos.configs import CastBcqConfig

app = typer.Typer(help="Train offline MARL algorithms on a madata dataset.", no_args_is_help=True)

D = CastBcqConfig()  # the defaults shown in --help


@app.command("cast-bcq")
@handle_errors
def cast_bcq(
    dataset: Annotated[Path, typer.Argument(help="A madata dataset (continuous actions, global state).", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run directory: config.json, log.csv, learning_curve.png, checkpoint.pt.")],
    steps: Annotated[int, typer.Option(help="Training iterations (minibatch updates).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed of torch, numpy, the loader and the evaluation episodes.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Minibatch size (reference code: 1024).")] = 1024,
    eval_every: Annotated[int, typer.Option(help="Iterations between evaluations (and checkpoints).")] = 5000,
    eval_episodes: Annotated[int, typer.Option(help="Episodes per evaluation in the real environment.")] = 10,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")] = False,
    vae_hidden: Annotated[str, typer.Option(help="VAE hidden sizes (Eq. 3).")] = ",".join(map(str, D.vae_hidden)),
    latent_scale: Annotated[float, typer.Option(help="Latent dim = this x action dim.")] = D.latent_scale,
    kl_weight: Annotated[float, typer.Option(help="Weight of the KL term of Eq. 3.")] = D.kl_weight,
    latent_clip: Annotated[float, typer.Option(help="|z| bound when sampling the VAE decoder.")] = D.latent_clip,
    actor_hidden: Annotated[str, typer.Option(help="Perturbation actor hidden sizes.")] = ",".join(map(str, D.actor_hidden)),
    phi: Annotated[float, typer.Option(help="Perturbation scale Phi.")] = D.phi,
    critic_hidden: Annotated[str, typer.Option(help="Joint and individual critic hidden sizes.")] = ",".join(map(str, D.critic_hidden)),
    lr: Annotated[float, typer.Option(help="Adam learning rate of every network.")] = D.lr,
    gamma: Annotated[float, typer.Option(help="Discount gamma.")] = D.gamma,
    tau: Annotated[float, typer.Option(help="Polyak rate of the target networks.")] = D.tau,
    lam: Annotated[float, typer.Option(help="Lambda of the soft clipped double Q (Eq. 10).")] = D.lam,
    clipped_double_q: Annotated[bool, typer.Option(help="Twin joint critics (--no-clipped-double-q: ablation, one critic, lambda = 1).")] = D.clipped_double_q,
    n_target: Annotated[int, typer.Option(help="Candidate joint actions n in the target (Eq. 6).")] = D.n_target,
    n_act: Annotated[int, typer.Option(help="Candidates per agent at execution.")] = D.n_act,
    subteams: Annotated[int, typer.Option(help="Subteam samples M (Eq. 8).")] = D.subteams,
    delta_weight: Annotated[bool, typer.Option(help="Weight Eq. 9 by clip(exp(Delta), 0, 10) as the reference code does.")] = D.delta_weight,
    csaa: Annotated[bool, typer.Option(help="Counterfactual SAA (--no-csaa: ablation without it).")] = D.csaa,
    subteam: Annotated[bool, typer.Option(help="Subteam sampling (--no-subteam: the empty subteam only).")] = D.subteam_sampling,
) -> None:
    """CAST-BCQ (continuous actions): decentralized policies from uncoordinated data."""
    from madata.errors import SchemaError
    from madata_algos.train import train

    def sizes(text: str, name: str) -> tuple[int, ...]:
        try:
            out = tuple(int(x) for x in text.split(","))
        except ValueError:
            raise SchemaError(f"--{name}: expected comma-separated integers, got {text!r}") from None
        if not out or min(out) < 1:
            raise SchemaError(f"--{name}: expected positive sizes, got {text!r}")
        return out

    cfg = CastBcqConfig(vae_hidden=sizes(vae_hidden, "vae-hidden"), latent_scale=latent_scale, kl_weight=kl_weight,
                        latent_clip=latent_clip, actor_hidden=sizes(actor_hidden, "actor-hidden"), phi=phi,
                        critic_hidden=sizes(critic_hidden, "critic-hidden"), lr=lr, gamma=gamma, tau=tau, lam=lam,
                        clipped_double_q=clipped_double_q,
                        n_target=n_target, n_act=n_act, subteams=subteams, delta_weight=delta_weight, csaa=csaa,
                        subteam_sampling=subteam)  # fmt: skip
    rows = train(dataset, out, steps=steps, seed=seed, config=cfg, batch_size=batch_size, eval_every=eval_every,
                 eval_episodes=eval_episodes, device=device, resume=resume, progress=True)  # fmt: skip
    if rows:
        r = rows[-1]
        typer.echo(f"step {r['step']}: return {r['eval_return']:.1f} +- {r['eval_std']:.1f}; log in {out / 'log.csv'}")


def eval_command(
    run: Annotated[Path, typer.Argument(help="A training run directory.", show_default=False)],
    episodes: Annotated[int, typer.Option(help="Evaluation episodes.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the episodes (episode k resets with seed + k).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Evaluate a run's last checkpoint in the real environment (decentralized execution)."""
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
