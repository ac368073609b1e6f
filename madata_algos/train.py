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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import madata
from madata.errors import DatasetExistsError, SchemaError
from madata_algos import registry
from madata_algos.evaluate import evaluate
from madata_algos.loader import Batch, TransitionLoader, default_device
from madata_algos.networks import keep_large_tensors_on_heap, pad_agents
from madata_algos.registry import DataInfo

EVAL_FIELDS = ["eval_return", "eval_std", "eval_normalized"]


def agent_major(batch: Batch, action_starts: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Loader batch -> the algorithms' layout: per-agent fields [N, B, max dim] (zero-padded);
    discrete actions [N, B], shifted by ``action_starts`` to 0-based indices."""

    def per_agent(x):
        return x.transpose(0, 1) if batch.stacked else pad_agents(x)

    action = per_agent(batch.action)  # discrete data always come stacked (equal agents: registry.describe)
    if action_starts and any(action_starts):
        action = action - torch.tensor(action_starts, device=action.device)[:, None]
    return {
        "obs": per_agent(batch.obs),
        "action": action,
        "next_obs": per_agent(batch.next_obs),
        "reward": batch.reward,
        "terminated": batch.terminated,
        "state": batch.state,
        "next_state": batch.next_state,
    }


def make_policy(algo, data: DataInfo, device, generator: torch.Generator | None):
    """The trained policy for :func:`evaluate`: every agent's observations in one batched ``act`` call.

    A decentralized algorithm's ``act`` treats agent i's row with o_i alone; a centralized
    one (bcq) reads all of them, which is why its execution needs the joint observation.
    """
    width = max(data.obs_dims)

    def policy(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = pad_agents([torch.as_tensor(obs[a], dtype=torch.float32, device=device) for a in data.agent_ids], width)
        act = algo.act(x, generator).cpu().numpy()  # greedy algorithms ignore the generator
        if data.discrete:  # [N, E] 0-based -> the spaces' own values
            return {a: act[i] + data.action_starts[i] for i, a in enumerate(data.agent_ids)}
        return {a: act[i, :, : data.act_dims[i]] for i, a in enumerate(data.agent_ids)}

    return policy


def train(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    algorithm: str = "cast-bcq",
    steps: int,
    seed: int = 0,
    config: Any = None,
    batch_size: int = 1024,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    eval_max_steps: int | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Train ``algorithm`` (a :mod:`~madata_algos.registry` name) on ``dataset`` for ``steps`` iterations.

    ``config``: an instance of that algorithm's config class (None: its defaults), e.g.
    ``CastBcqConfig(csaa=False)`` for an ablation. Returns the evaluation log rows.
    """
    if steps < 1 or eval_every < 1 or batch_size < 1 or eval_episodes < 1:
        raise SchemaError(f"steps, eval_every, batch_size and eval_episodes must be >= 1, got {steps}, {eval_every}, "
                          f"{batch_size} and {eval_episodes}")  # fmt: skip
    spec = registry.get(algorithm)
    config = registry.check_config(spec, config)
    run = Path(run_dir)
    ds = madata.open(dataset)
    data = registry.describe(ds)
    dev = torch.device(device) if device else default_device()
    settings = {"algorithm": algorithm, "dataset": str(Path(dataset).resolve()), "task": data.task, "seed": seed,
                "steps": steps, "batch_size": batch_size, "eval_every": eval_every, "eval_episodes": eval_episodes,
                "eval_max_steps": eval_max_steps, "decentralized": spec.decentralized, "config": config.to_json(),
                "madata": madata.__version__, "torch": torch.__version__}  # fmt: skip
    ckpt = run / "checkpoint.pt"
    if resume and (run / "config.json").exists():
        stored = json.loads((run / "config.json").read_text())
        stored.setdefault("algorithm", "cast-bcq")  # runs from before the registry
        same = ("algorithm", "dataset", "task", "seed", "batch_size", "eval_every", "eval_episodes", "eval_max_steps", "config")
        diff = [k for k in same if stored.get(k) != json.loads(json.dumps(settings[k]))]
        if diff:
            raise DatasetExistsError(f"{run}: the run was started with other {', '.join(diff)}; resume with the same options")
        if ckpt.exists():
            settings["steps"] = max(steps, stored["steps"])
        # else: killed before its first checkpoint, so it starts again from step 0
    elif run.exists() and any(run.iterdir()):
        hint = "it holds no training run (no config.json)" if resume else "pass --resume to continue it"
        raise DatasetExistsError(f"{run}: run directory is not empty; {hint}, or choose another")

    registry.check_data(spec, data)  # before loading anything
    keep_large_tensors_on_heap()
    torch.manual_seed(seed)
    np.random.seed(seed)
    loader = TransitionLoader(ds, device=dev, seed=seed)
    algo = registry.build(algorithm, data, config, dev)  # its own checks fail here, before anything is written
    run.mkdir(parents=True, exist_ok=True)
    _write_atomic(run / "config.json", json.dumps(settings, indent=2).encode())
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
    policy = make_policy(algo, data, dev, eval_gen)
    t0 = time.time()
    losses: dict[str, float] = {}
    desc = f"{algorithm} {data.task}"
    with tqdm(total=steps, initial=start, desc=desc, disable=None if progress else True, mininterval=0.5, unit="it") as bar:
        for step in range(start + 1, steps + 1):
            losses = algo.update(**agent_major(loader.sample(batch_size), data.action_starts), generator=update_gen)
            bar.update(1)
            if step % eval_every == 0 or step == steps:
                res = evaluate(data.task, policy, episodes=eval_episodes, seed=10_000 * (seed + 1), max_steps=eval_max_steps)
                rows.append({"step": step, "seconds": round(time.time() - t0, 1), **{k: round(v, 5) for k, v in losses.items()},
                             "eval_return": res.mean_return, "eval_std": res.std_return,
                             "eval_normalized": res.mean_normalized})  # fmt: skip
                bar.set_postfix_str(f"return {res.mean_return:.1f}")
                _write_log(run / "log.csv", rows)
                _plot(run / "learning_curve.png", rows, data.task, spec.label)
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
    """log.csv: step, seconds, the algorithm's losses (in its update's order), then the evaluation."""
    losses = [k for k in rows[0] if k not in ("step", "seconds", *EVAL_FIELDS)]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "seconds", *losses, *EVAL_FIELDS], restval="")
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


def _plot(path: Path, rows: list[dict], task: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    mean = np.array([r["eval_return"] for r in rows], dtype=float)
    std = np.array([r["eval_std"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, mean, marker="o", label=label)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("training iterations")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{label} on {task}")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def evaluate_run(run_dir: str | os.PathLike, episodes: int = 10, seed: int = 0, device: str | None = None):
    """Evaluate the last checkpoint of a run in its task with its algorithm; returns an :class:`EvalResult`."""
    run = Path(run_dir)
    try:
        settings = json.loads((run / "config.json").read_text())
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise SchemaError(f"{run}: not a training run with a checkpoint ({e.filename} missing)") from e
    spec = registry.get(settings.get("algorithm", "cast-bcq"))
    data = registry.describe(madata.open(settings["dataset"]))
    dev = torch.device(device) if device else default_device()
    algo = registry.build(spec.name, data, registry.config_from_json(spec.config, settings["config"]), dev)
    algo.load_state_dict(state["model"])
    policy = make_policy(algo, data, dev, torch.Generator(device=dev).manual_seed(seed))
    return evaluate(settings["task"], policy, episodes=episodes, seed=seed, max_steps=settings.get("eval_max_steps"))
