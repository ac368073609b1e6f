"""Collector speed: ``madata collect`` end to end against the raw single-agent env step rate.

In one run it measures

* **raw**: the single-agent ``<Scenario>-v5`` env (``gymnasium.make``) stepped
  ``--transitions`` times with uniform random actions, resets included: the ceiling;
* **collect**: :func:`madata.collect` of about as many transitions with SAC-sized
  behaviour policies (``--hidden``, default 256-256; random weights saved as checkpoints
  in a temporary directory, or trained ones from ``--checkpoint-dir``), for each
  ``--envs`` value: env construction, policy inference, stepping, writing and closing the
  store all included. The dataset goes to a temporary directory, removed afterwards;
* **policy**: rows/s of one level's ``act`` (batch of ``--envs``), for reference.

It prints each collect rate, its ratio to the raw rate measured in the same run (raw is
measured before and after; the ratio uses their mean), the load average and the command.
Random-weight policies keep HalfCheetah running to its 1000-step limit, so episodes
have the real length.

    python benchmarks/collect_speed.py --task halfcheetah-2x3 --transitions 100000 --envs 8,16
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from harness import command_line, machine_line, timed

from madata.behaviour import load_policy
from madata.behaviour.checkpoint import CheckpointInfo, save_checkpoint
from madata.collect import collect
from madata.envs.registry import make_team_env


def raw_rate(env_id: str, steps: int, seed: int = 0) -> float:
    """Steps/s of the single-agent env with uniform random actions (drawn up front), resets included."""
    import gymnasium as gym

    env = gym.make(env_id)
    actions = np.random.default_rng(seed).uniform(
        env.action_space.low, env.action_space.high, (steps, env.action_space.shape[0])
    )
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i])
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def random_checkpoints(root: Path, task: str, levels: list[str], hidden: list[int]) -> None:
    """SAC-shaped checkpoints with random weights (small output layer: actions stay away from the box edges)."""
    team = make_team_env(task)
    f, env_id = team.factorization, team.env.single_agent_env.spec.id
    team.close()
    S, A = f.state_space.shape[0], f.act_dim
    for seed, level in enumerate(levels):
        rng = np.random.default_rng(seed)
        dims, w = [S, *hidden], {}
        for i in range(len(hidden)):
            w[f"w{i}"] = rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])
            w[f"b{i}"] = np.zeros(dims[i + 1])
        w["mu_w"], w["mu_b"] = rng.standard_normal((hidden[-1], A)) * 0.3 / np.sqrt(hidden[-1]), np.zeros(A)
        w["log_std_w"], w["log_std_b"] = np.zeros((hidden[-1], A)), np.full(A, -1.0)
        info = CheckpointInfo(
            task=task,
            env_id=env_id,
            level=level,
            obs_dim=S,
            act_dim=A,
            hidden=hidden,
            action_low=[-1.0] * A,
            action_high=[1.0] * A,
            train_steps=0,
            seed=seed,
        )
        save_checkpoint(root / task / level, info, w)


def policy_rate(task: str, level: str, checkpoint_dir: Path, batch: int, seconds: float = 1.0) -> float:
    team = make_team_env(task)
    f = team.factorization
    team.close()
    policy = load_policy(task, level, f, checkpoint_dir)
    rng = np.random.default_rng(0)
    states, noise = rng.standard_normal((batch, f.state_space.shape[0])), rng.standard_normal((batch, f.act_dim))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        policy.act(states, noise)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="halfcheetah-2x3")
    p.add_argument(
        "--transitions", type=int, default=100_000, help="raw env steps; collect runs ceil(this / 1000) episodes"
    )
    p.add_argument("--envs", default="16", help="comma-separated --envs values to measure")
    p.add_argument("--mix", default="medium,expert", help="behaviour levels (every per-agent combination)")
    p.add_argument("--hidden", default="256,256", help="hidden sizes of the random-weight SAC checkpoints")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="use these checkpoints instead of random weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print one JSON line with every number")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    command = command_line()
    levels = args.mix.split(",")
    env_id = make_team_env(args.task).env.single_agent_env.spec.id
    episodes = -(-args.transitions // 1000)
    tmp = Path(tempfile.mkdtemp(prefix="madata-collect-speed-"))
    result = {
        "command": command,
        "task": args.task,
        "mix": levels,
        "machine_before": machine_line(),
        "runs": [],
    }
    try:
        ck = args.checkpoint_dir
        if ck is None:
            ck = tmp / "checkpoints"
            ck.mkdir()
            random_checkpoints(
                ck, args.task, [lv for lv in levels if lv != "random"], [int(h) for h in args.hidden.split(",")]
            )
        raw_before = raw_rate(env_id, args.transitions, args.seed)
        for k in [int(x) for x in args.envs.split(",")]:
            out = tmp / f"ds-{k}"
            ds, seconds = timed(
                lambda out=out, k=k: collect(
                    args.task, out, mix=levels, episodes=episodes, seed=args.seed, envs=k, checkpoint_dir=ck
                )
            )
            run = {
                "envs": k,
                "episodes": ds.num_episodes,
                "transitions": ds.num_transitions,
                "seconds": seconds,
                "collect_rate": ds.num_transitions / seconds,
            }
            if levels[-1] != "random":
                run["policy_rows_per_s"] = policy_rate(args.task, levels[-1], ck, k)
            result["runs"].append(run)
            shutil.rmtree(out)
        raw_after = raw_rate(env_id, args.transitions, args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = (raw_before + raw_after) / 2
    result.update(raw_before=raw_before, raw_after=raw_after, machine_after=machine_line())
    print(f"command: {command}")
    print(
        f"task {args.task}, mix {args.mix}, policies hidden {args.hidden if args.checkpoint_dir is None else 'from ' + str(ck)}"
    )
    print(f"{result['machine_after']} (before the run: {result['machine_before'].rsplit('load average ', 1)[1]})")
    print(f"raw {env_id} random-action steps/s: {raw_before:,.0f} before, {raw_after:,.0f} after")
    for run in result["runs"]:
        run["ratio"] = run["collect_rate"] / raw
        extra = f", one level's act: {run['policy_rows_per_s']:,.0f} rows/s" if "policy_rows_per_s" in run else ""
        print(
            f"collect --envs {run['envs']}: {run['transitions']:,} transitions in {run['seconds']:.1f} s = "
            f"{run['collect_rate']:,.0f} transitions/s, {run['ratio']:.2f} x raw{extra}"
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
