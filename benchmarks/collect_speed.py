"""Collector speed: ``madata collect`` end to end against the raw single-agent env step rate.

In one run it measures

* **raw**: the single-agent ``<Scenario>-v5`` env (``gymnasium.make``) stepped
  ``--transitions`` times with uniform random actions, resets included: the ceiling;
* **collect**: :func:`madata.collect` of about as many transitions with the shipped SAC
  behaviour checkpoints (or those of ``--checkpoint-dir``; or, with ``--random-weights
  256,256``, random-weight policies of those hidden sizes saved to a temporary directory,
  for tasks without shipped ones), for each
  ``--envs`` value: env construction, policy inference, stepping, writing and closing the
  store all included. The dataset goes to a temporary directory, removed afterwards;
* **policy**: rows/s of one level's ``act`` (batch of ``--envs``), for reference;
* **where the time goes** in each collect: the seconds inside the env copies' ``step``, the
  policies' ``act``, the writer (``add_episode``, commits, close) and the rest (the
  stepping loop, observations, noise, start-up), measured by timing those methods in the
  run itself (about 1 us added per call), and the **steady rate**: the extra transitions
  of a collection twice as long per extra second (both timed warm, after the first), i.e.
  without what a collection pays once whatever its size: imports (pyarrow imports pandas
  at its first array), env construction, policy loading, creating and closing the store.

It prints each collect rate, its ratio to the raw rate measured in the same run (raw is
measured before and after; the ratio uses their mean), the load average and the command.
Random-weight policies keep HalfCheetah running to its 1000-step limit too, but they drive
it into states whose physics steps cost about a fifth more than the shipped policies'.

    python benchmarks/collect_speed.py --task halfcheetah-2x3 --transitions 50000 --envs 16,32
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

from madata.behaviour import SacPolicy, load_policy
from madata.behaviour.checkpoint import CheckpointInfo, save_checkpoint
from madata.collect import collect
from madata.envs.mamujoco import MaMuJoCoTeamEnv
from madata.envs.registry import make_team_env
from madata.writer import DatasetWriter


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


def replay_rate(task: str, ds) -> float:
    """Steps/s of one team env copy replaying the dataset's joint actions from its episodes' reset seeds:
    the env's own cost on the collected actions (policies may drive it into costlier states than uniform
    random actions do)."""
    team = make_team_env(task)
    f = team.factorization
    episodes = []
    for ep in ds.iter_episodes():
        joint = np.zeros((ep.length, f.act_dim), dtype=np.float32)
        for a in f.agent_ids:
            joint[:, f.act_index[a]] = ep.actions[a].reshape(ep.length, -1)
        episodes.append((int(ep.info["seed"]), joint))
    steps, t0 = 0, time.perf_counter()
    for seed, joint in episodes:
        team.reset(seed)
        for row in joint:
            team.step(row)
        steps += len(joint)
    rate = steps / (time.perf_counter() - t0)
    team.close()
    return rate


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


class Accounting:
    """Seconds spent inside a few methods during a block: they are wrapped with timers while it runs."""

    def __init__(self, targets: dict[str, tuple[type, list[str]]]):
        self.targets, self.seconds, self.first_call = targets, dict.fromkeys(targets, 0.0), None
        self._depth = dict.fromkeys(targets, 0)  # a timed method calling another (add_episode -> commit) counts once
        self._saved: list[tuple[type, str, object]] = []

    def _wrap(self, name: str, fn):
        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            if self.first_call is None:
                self.first_call = t0
            self._depth[name] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth[name] -= 1
                if self._depth[name] == 0:
                    self.seconds[name] += time.perf_counter() - t0

        return timed_call

    def __enter__(self) -> Accounting:
        for name, (cls, methods) in self.targets.items():
            for m in methods:
                self._saved.append((cls, m, cls.__dict__[m]))
                setattr(cls, m, self._wrap(name, cls.__dict__[m]))
        return self

    def __exit__(self, *exc) -> None:
        for cls, m, fn in self._saved:
            setattr(cls, m, fn)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="halfcheetah-2x3")
    p.add_argument(
        "--transitions", type=int, default=100_000, help="raw env steps; collect runs ceil(this / 1000) episodes"
    )
    p.add_argument("--envs", default="16", help="comma-separated --envs values to measure")
    p.add_argument("--mix", default="medium,expert", help="behaviour levels (every per-agent combination)")
    p.add_argument("--random-weights", default=None, metavar="HIDDEN", help="random-weight policies, e.g. 256,256")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoints other than the shipped ones")
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
        if args.random_weights and args.checkpoint_dir:
            p.error("give at most one of --random-weights and --checkpoint-dir")
        ck = args.checkpoint_dir
        if args.random_weights:
            ck = tmp / "checkpoints"
            ck.mkdir()
            hidden = [int(h) for h in args.random_weights.split(",")]
            random_checkpoints(ck, args.task, [lv for lv in levels if lv != "random"], hidden)
        raw_before = raw_rate(env_id, args.transitions, args.seed)
        for k in [int(x) for x in args.envs.split(",")]:
            out = tmp / f"ds-{k}"
            # the env's step is timed only where it is entered first (the first call is where stepping starts)
            env_step = {"env step": (MaMuJoCoTeamEnv, ["step"])} if args.task != "grid" else {}
            targets = {
                **env_step,
                "policy act": (SacPolicy, ["act"]),
                "writing": (DatasetWriter, ["add_episode", "commit", "close"]),
            }
            with Accounting(targets) as acc:
                t0 = time.perf_counter()
                ds, seconds = timed(
                    lambda out=out, k=k: collect(
                        args.task, out, mix=levels, episodes=episodes, seed=args.seed, envs=k, checkpoint_dir=ck
                    )
                )
            startup = (acc.first_call or t0) - t0
            replay = replay_rate(args.task, ds)
            shutil.rmtree(out)
            # steady rate: the extra transitions of a run twice as long, per extra second (both warm)
            warm = {}
            for n in (episodes, 2 * episodes):
                d, warm[n] = timed(
                    lambda n=n, k=k: collect(
                        args.task,
                        tmp / f"warm-{k}-{n}",
                        mix=levels,
                        episodes=n,
                        seed=args.seed,
                        envs=k,
                        checkpoint_dir=ck,
                    )
                )
                warm[n] = (d.num_transitions, warm[n])
            (t1, s1), (t2, s2) = warm[episodes], warm[2 * episodes]
            run = {
                "envs": k,
                "episodes": ds.num_episodes,
                "transitions": ds.num_transitions,
                "seconds": seconds,
                "collect_rate": ds.num_transitions / seconds,
                "startup_seconds": startup,
                "inside": acc.seconds,
                "steady_rate": (t2 - t1) / (s2 - s1),
                "replay_rate": replay,
            }
            if levels[-1] != "random":
                run["policy_rows_per_s"] = policy_rate(args.task, levels[-1], ck, k)
            result["runs"].append(run)
        raw_after = raw_rate(env_id, args.transitions, args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = (raw_before + raw_after) / 2
    result.update(raw_before=raw_before, raw_after=raw_after, machine_after=machine_line())
    print(f"command: {command}")
    print(
        f"task {args.task}, mix {args.mix}, policies: "
        + (f"random weights {args.random_weights}" if args.random_weights else f"checkpoints from {ck or 'madata'}")
    )
    print(f"{result['machine_after']} (before the run: {result['machine_before'].rsplit('load average ', 1)[1]})")
    print(f"raw {env_id} random-action steps/s: {raw_before:,.0f} before, {raw_after:,.0f} after")
    for run in result["runs"]:
        run["ratio"] = run["collect_rate"] / raw
        extra = f", one level's act: {run['policy_rows_per_s']:,.0f} rows/s" if "policy_rows_per_s" in run else ""
        run["steady_ratio"] = run["steady_rate"] / raw
        print(
            f"collect --envs {run['envs']}: {run['transitions']:,} transitions in {run['seconds']:.1f} s = "
            f"{run['collect_rate']:,.0f} transitions/s, {run['ratio']:.2f} x raw{extra}"
        )
        other = run["seconds"] - run["startup_seconds"] - sum(run["inside"].values())
        shares = ", ".join(f"{name} {sec:.2f} s" for name, sec in run["inside"].items())
        print(
            f"  where the time goes: start-up (imports, envs, policies, store) {run['startup_seconds']:.2f} s, {shares}, "
            f"the rest (loop, observations, noise) {other:.2f} s"
        )
        print(
            f"  steady rate (extra transitions per extra second of a run twice as long, both warm): "
            f"{run['steady_rate']:,.0f} transitions/s, {run['steady_ratio']:.2f} x raw"
        )
        print(
            f"  the env alone replaying the collected actions: {run['replay_rate']:,.0f} steps/s "
            f"({run['replay_rate'] / raw:.2f} x raw); collect's steady rate is {run['steady_rate'] / run['replay_rate']:.2f} x it"
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
