"""Training runs: dataset -> loader -> algorithm -> periodic evaluation -> logs, plots, checkpoints.

A run directory holds ``config.json`` (algorithm, dataset, seed, hyperparameters),
``log.csv`` (one row per evaluation), ``learning_curve.png`` and ``checkpoint.pt`` (the
networks, optimizers and every random generator, written atomically). ``resume=True``
continues a killed run from its last checkpoint and gives the same numbers as a run
that was never interrupted.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import madata
from madata.envs.registry import get_task
from madata.errors import DatasetExistsError, SchemaError
from madata.spaces import Box, Discrete
from madata_algos.cast_bcq import CastBcq
from madata_algos.cast_bcq_discrete import CastBcqDiscrete
from madata_algos.configs import CastBcqConfig, DiscreteConfig
from madata_algos.evaluate import evaluate
from madata_algos.loader import Batch, TransitionLoader, default_device
from madata_algos.networks import pad_agents

LOG_FIELDS = ["step", "seconds", "vae", "classifier", "joint_critic", "individual_critic", "actor", "eval_return",
              "eval_std", "eval_normalized"]  # fmt: skip


def agent_major(batch: Batch) -> dict[str, torch.Tensor]:
    """Loader batch -> CastBcq's layout: per-agent fields [N, B, max dim] (zero-padded)."""

    def per_agent(x):
        return x.transpose(0, 1) if batch.stacked else pad_agents(x)

    return {
        "obs": per_agent(batch.obs),
        "action": per_agent(batch.action),
        "next_obs": per_agent(batch.next_obs),
        "reward": batch.reward,
        "terminated": batch.terminated,
        "state": batch.state,
        "next_state": batch.next_state,
    }


def check_dataset(ds: madata.Dataset) -> tuple[str, bool]:
    """The dataset's task and whether its actions are discrete, after checking CAST-BCQ can learn from it."""
    task = ds.meta.env.get("id")
    if task is None:
        raise SchemaError(f"{ds.root}: metadata names no environment (env.id); evaluation needs one")
    get_task(task)
    if ds.state_space is None:
        raise SchemaError(f"{ds.root}: no global state stored; the joint critic needs one")
    kinds = {isinstance(a.action_space, Discrete) for a in ds.agents}
    if kinds == {True}:
        if len({a.action_space.n for a in ds.agents}) > 1 or len({a.observation_space.shape for a in ds.agents}) > 1:
            raise SchemaError(f"{ds.root}: discrete CAST-BCQ needs agents of equal observation and action sizes")
        if "default_action" not in ds.meta.env:
            raise SchemaError(f"{ds.root}: discrete data needs env.default_action (the no-op) in its metadata")
        return task, True
    if kinds != {False}:
        raise SchemaError(f"{ds.root}: agents mix discrete and continuous actions")
    return task, False


def build(ds: madata.Dataset, config: CastBcqConfig, device, discrete: bool = False) -> CastBcq | CastBcqDiscrete:
    """The algorithm for ``ds``: continuous CastBcq, or CastBcqDiscrete with the shared options of ``config``."""
    if discrete:
        a = ds.agents[0]
        dcfg = DiscreteConfig(lr=config.lr, gamma=config.gamma, tau=config.tau, lam=config.lam,
                              subteams=config.subteams, csaa=config.csaa, subteam_sampling=config.subteam_sampling,
                              clipped_double_q=config.clipped_double_q)  # fmt: skip
        return CastBcqDiscrete(len(ds.agents), a.observation_space.shape[0], a.action_space.n, ds.state_space.shape[0],
                               int(ds.meta.env["default_action"]) - a.action_space.start, dcfg, device)  # fmt: skip
    obs_dims = [a.observation_space.shape[0] for a in ds.agents]
    act_dims = [a.action_space.shape[0] for a in ds.agents]
    max_action = []
    for a in ds.agents:
        sp: Box = a.action_space
        hi = float(max(np.max(np.abs(sp.low)), np.max(np.abs(sp.high))))
        max_action.append(hi)
    return CastBcq(obs_dims, act_dims, ds.state_space.shape[0], max_action, config, device)


def make_policy(algo, ds: madata.Dataset, device, generator: torch.Generator):
    """Decentralized policy for :func:`evaluate`: each agent acts on its own observations."""
    discrete = isinstance(algo, CastBcqDiscrete)
    ids = ds.agent_ids
    dims = [1 if discrete else a.action_space.shape[0] for a in ds.agents]
    start = [a.action_space.start if discrete else 0 for a in ds.agents]

    def policy(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = [torch.as_tensor(obs[a], dtype=torch.float32, device=device) for a in ids]
        if discrete:
            act = algo.act(torch.stack(x)).cpu().numpy()  # [N, E]
            return {a: act[i] + start[i] for i, a in enumerate(ids)}
        act = algo.act(pad_agents(x, algo.O), generator).cpu().numpy()  # [N, E, A]
        return {a: act[i, :, : dims[i]] for i, a in enumerate(ids)}

    return policy


def train(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    steps: int,
    seed: int = 0,
    config: CastBcqConfig | None = None,
    batch_size: int = 1024,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    eval_max_steps: int | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train CAST-BCQ on ``dataset`` for ``steps`` iterations; returns the evaluation log rows."""
    if steps < 1 or eval_every < 1 or batch_size < 1 or eval_episodes < 1:
        raise SchemaError("steps, eval_every, batch_size and eval_episodes must be >= 1")
    run = Path(run_dir)
    ds = madata.open(dataset)
    task, discrete = check_dataset(ds)
    dev = torch.device(device) if device else default_device()
    config = config or CastBcqConfig()
    settings = {"algorithm": "cast-bcq", "dataset": str(Path(dataset).resolve()), "task": task, "seed": seed,
                "steps": steps, "batch_size": batch_size, "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_max_steps": eval_max_steps,
                "config": config.to_json(), "madata": madata.__version__, "torch": torch.__version__}  # fmt: skip
    ckpt = run / "checkpoint.pt"
    if resume and ckpt.exists():
        stored = json.loads((run / "config.json").read_text())
        diff = [k for k in ("dataset", "task", "seed", "batch_size", "eval_every", "eval_episodes", "eval_max_steps", "config")
                if stored.get(k) != json.loads(json.dumps(settings[k]))]  # fmt: skip
        if diff:
            raise DatasetExistsError(f"{run}: the run was started with other {', '.join(diff)}; resume with the same options")
        settings["steps"] = max(steps, stored["steps"])
    elif run.exists() and any(run.iterdir()):
        raise DatasetExistsError(f"{run}: run directory is not empty; pass --resume to continue it or choose another")
    run.mkdir(parents=True, exist_ok=True)
    _write_atomic(run / "config.json", json.dumps(settings, indent=2).encode())

    torch.manual_seed(seed)
    np.random.seed(seed)
    loader = TransitionLoader(ds, device=dev, seed=seed)
    algo = build(ds, config, dev, discrete)
    update_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    eval_gen = torch.Generator(device=dev).manual_seed(seed + 2)
    start, rows = 0, []
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        algo.load_state_dict(state["model"])
        for name in _optimizers(algo):
            getattr(algo, name).load_state_dict(state[name])
        loader.generator.set_state(state["loader_rng"].cpu())  # generator states are CPU byte tensors
        update_gen.set_state(state["update_rng"].cpu())
        eval_gen.set_state(state["eval_rng"].cpu())
        start = int(state["step"])
        rows = _read_log(run / "log.csv", upto=start)
    policy = make_policy(algo, ds, dev, eval_gen)
    t0 = time.time()
    losses: dict[str, float] = {}
    with tqdm(total=steps, initial=start, desc=f"cast-bcq {task}", disable=None if progress else True, mininterval=0.5, unit="it") as bar:
        for step in range(start + 1, steps + 1):
            losses = algo.update(**agent_major(loader.sample(batch_size)), generator=update_gen)
            bar.update(1)
            if step % eval_every == 0 or step == steps:
                res = evaluate(task, policy, episodes=eval_episodes, seed=10_000 * (seed + 1), max_steps=eval_max_steps)
                rows.append({"step": step, "seconds": round(time.time() - t0, 1), **{k: round(v, 5) for k, v in losses.items()},
                             "eval_return": res.mean_return, "eval_std": res.std_return,
                             "eval_normalized": res.mean_normalized})  # fmt: skip
                bar.set_postfix_str(f"return {res.mean_return:.1f}")
                _write_log(run / "log.csv", rows)
                _plot(run / "learning_curve.png", rows, task)
                state = {"model": algo.state_dict(), "step": step, "loader_rng": loader.generator.get_state(),
                         "update_rng": update_gen.get_state(), "eval_rng": eval_gen.get_state(),
                         **{n: getattr(algo, n).state_dict() for n in _optimizers(algo)}}  # fmt: skip
                tmp = run / f".checkpoint.pt.tmp-{os.getpid()}"
                torch.save(state, tmp)
                os.replace(tmp, ckpt)
    return rows


def _optimizers(algo) -> list[str]:
    return sorted(n for n in vars(algo) if n.startswith("opt_"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_log(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        out = []
        for r in csv.DictReader(f):
            if int(r["step"]) <= upto:
                out.append({k: (None if v == "" else float(v) if k != "step" else int(v)) for k, v in r.items()})
        return out


def _plot(path: Path, rows: list[dict], task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    mean = np.array([r["eval_return"] for r in rows], dtype=float)
    std = np.array([r["eval_std"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, mean, marker="o", label="CAST-BCQ")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("training iterations")
    ax.set_ylabel("evaluation return")
    ax.set_title(task)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def config_fields() -> list[str]:
    return [f.name for f in fields(CastBcqConfig)]


def evaluate_run(run_dir: str | os.PathLike, episodes: int = 10, seed: int = 0, device: str | None = None):
    """Evaluate the last checkpoint of a run in its task; returns an :class:`EvalResult`."""
    run = Path(run_dir)
    try:
        settings = json.loads((run / "config.json").read_text())
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise SchemaError(f"{run}: not a training run with a checkpoint ({e.filename} missing)") from e
    ds = madata.open(settings["dataset"])
    dev = torch.device(device) if device else default_device()
    cfg = CastBcqConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings["config"].items()})
    algo = build(ds, cfg, dev, check_dataset(ds)[1])
    algo.load_state_dict(state["model"])
    policy = make_policy(algo, ds, dev, torch.Generator(device=dev).manual_seed(seed))
    return evaluate(settings["task"], policy, episodes=episodes, seed=seed, max_steps=settings.get("eval_max_steps"))
