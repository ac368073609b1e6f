"""Train SAC behaviour policies on the whole robot and export snapshots as checkpoints.

The paper's behaviour policies (Section 4.1): SAC, "medium" taken in the middle of
training and "expert" at the end. We train stable-baselines3's SAC (an optional
extra, ``pip install 'madata[train]'``) on the single-agent ``<Scenario>-v5`` task that
MaMuJoCo factorizes, save a snapshot every ``save_every`` steps (weights exported to a
numpy checkpoint and its average return measured over ``eval_episodes`` stochastic
episodes), and export the snapshots named by ``--snapshot LEVEL=STEP``.

Run directory layout::

    RUN/progress.csv            step, average return, std, wall-clock seconds
    RUN/snapshots/step_<N>.npz/.json
    RUN/config.json             the arguments
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from madata.behaviour.checkpoint import CheckpointInfo, SacActor, load_checkpoint, save_checkpoint
from madata.envs.registry import get_task
from madata.errors import DatasetExistsError, SchemaError


def evaluate_actor(actor: SacActor, env_id: str, episodes: int, seed: int, stochastic: bool = True) -> np.ndarray:
    """Returns of ``episodes`` episodes of ``actor`` in ``env_id`` (seeded), shape [episodes]."""
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                noise = rng.standard_normal((1, actor.info.act_dim)) if stochastic else None
                obs, r, term, trunc, _ = env.step(actor.act(obs[None], noise)[0])
                returns[i] += r
                done = term or trunc
    finally:
        env.close()
    return returns


def sb3_actor_weights(model) -> tuple[dict[str, np.ndarray], list[int]]:
    """Numpy weights ([in, out] matrices) of a stable-baselines3 SAC actor."""
    import torch

    linears = [m for m in model.actor.latent_pi if isinstance(m, torch.nn.Linear)]
    w = {}
    for i, lin in enumerate(linears):
        w[f"w{i}"] = lin.weight.detach().cpu().numpy().T.copy()
        w[f"b{i}"] = lin.bias.detach().cpu().numpy().copy()
    for name in ("mu", "log_std"):
        lin = getattr(model.actor, name)
        w[f"{name}_w"] = lin.weight.detach().cpu().numpy().T.copy()
        w[f"{name}_b"] = lin.bias.detach().cpu().numpy().copy()
    return w, [lin.out_features for lin in linears]


def train_sac(
    task: str,
    run_dir: str | os.PathLike,
    *,
    steps: int,
    snapshots: dict[str, int],
    save_every: int = 25_000,
    seed: int = 0,
    eval_episodes: int = 10,
    learning_starts: int = 10_000,
    export_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Train SAC for ``steps`` environment steps; export ``snapshots`` ({level: step}) to ``export_dir``.

    Returns the exported checkpoint paths by level.
    """
    try:
        import torch
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as e:
        raise SchemaError("training behaviour policies needs stable-baselines3: pip install 'madata[train]'") from e
    import gymnasium as gym

    info = get_task(task)
    if not info.family.sac_checkpoints or "single_agent_env" not in info.env:
        raise SchemaError(
            f"task {task!r}: SAC behaviour training is for tasks whose behaviour levels are SAC checkpoints "
            f"of a single-agent robot (MaMuJoCo's); {info.family.name} tasks are not"
        )
    if steps < 1 or save_every < 1:
        raise SchemaError(f"steps and save_every must be >= 1, got {steps} and {save_every}")
    for level, step in snapshots.items():
        if step % save_every or not 0 < step <= steps:
            raise SchemaError(f"snapshot {level}={step}: must be a multiple of save_every={save_every} in 1..{steps}")
    run = Path(run_dir)
    if run.exists() and any(run.iterdir()):
        raise DatasetExistsError(f"{run}: run directory is not empty; choose another path (nothing was overwritten)")
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    env_id = info.env["single_agent_env"]
    command = " ".join(shlex.quote(a) for a in sys.argv)
    config = dict(
        task=task,
        env_id=env_id,
        steps=steps,
        snapshots=snapshots,
        save_every=save_every,
        seed=seed,
        eval_episodes=eval_episodes,
        learning_starts=learning_starts,
        command=command,
    )
    (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.set_num_threads(1)

    env = gym.make(env_id)
    # stable-baselines3's MuJoCo defaults (rl-zoo): 256-256, lr 3e-4, batch 256, 10k random steps first
    model = SAC("MlpPolicy", env, seed=seed, learning_starts=learning_starts, verbose=0, device="cpu")
    versions = {
        "stable-baselines3": _version("stable-baselines3"),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "mujoco": _version("mujoco"),
    }
    t0 = time.time()
    log = open(run / "progress.csv", "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "average_return", "return_std", "seconds"])

    class Snapshot(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % save_every == 0:
                weights, hidden = sb3_actor_weights(self.model)
                space = env.action_space
                ck = CheckpointInfo(
                    task=task,
                    env_id=env_id,
                    level=f"step_{n}",
                    obs_dim=int(env.observation_space.shape[0]),
                    act_dim=int(space.shape[0]),
                    hidden=hidden,
                    action_low=space.low.tolist(),
                    action_high=space.high.tolist(),
                    train_steps=n,
                    seed=seed,
                    trained_with=versions,
                    command=command,
                )
                actor = SacActor(ck, weights)
                rets = evaluate_actor(actor, env_id, eval_episodes, seed=10_000 + seed)
                ck.average_return, ck.return_std, ck.eval_episodes = (
                    float(rets.mean()),
                    float(rets.std()),
                    eval_episodes,
                )
                save_checkpoint(run / "snapshots" / f"step_{n:08d}", ck, weights)
                writer.writerow([n, f"{rets.mean():.2f}", f"{rets.std():.2f}", f"{time.time() - t0:.0f}"])
                log.flush()
                if progress:
                    print(
                        f"{task} step {n}: return {rets.mean():.1f} +- {rets.std():.1f} ({time.time() - t0:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
            return True

    try:
        model.learn(total_timesteps=steps, callback=Snapshot())
    finally:
        log.close()
        env.close()
    out = {}
    for level, step in snapshots.items():
        out[level] = export_snapshot(run, step, level, export_dir or run / "export")
    return out


def export_snapshot(run_dir: str | os.PathLike, step: int, level: str, to: str | os.PathLike) -> Path:
    """Copy snapshot ``step`` of a training run to ``to/<task>/<level>.npz/.json``."""
    src = Path(run_dir) / "snapshots" / f"step_{step:08d}"
    actor = load_checkpoint(src)
    actor.info.level = level
    dst = Path(to) / actor.info.task / level
    weights = dict(np.load(src.with_suffix(".npz"), allow_pickle=False))
    js = save_checkpoint(dst, actor.info, weights)
    shutil.copystat(src.with_suffix(".npz"), dst.with_suffix(".npz"))
    return js


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"
