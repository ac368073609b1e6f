"""``madata split-d4rl`` speed on a D4RL-sized file: 1M HalfCheetah transitions, 1,000 episodes.

The file is D4RL v2's layout (float32 ``observations``, ``next_observations``, ``actions``,
``rewards``, bool ``terminals``/``timeouts``, float64 ``infos/qpos``/``infos/qvel``, a
``metadata/algorithm``) and its content is real simulator data: ``--sim-episodes``
episodes of HalfCheetah-v5 with random actions are simulated, and the rest of the
episodes are copies of them with a relative perturbation of 1e-3 on the simulator state
(observations are recomputed from the perturbed state, so they stay consistent with
``infos/qpos``/``qvel``; zstd sees real-looking low mantissa bits).

It times :func:`madata.convert.split_d4rl` in this process (import and env start-up
excluded; the source file's sha256, reading, splitting, writing and closing the store
included) and the ``madata split-d4rl`` command end to end in a subprocess. Everything
goes to a temporary directory (``--tmp``) that is removed afterwards. Prints the times,
rows/s, the load average (a busy machine only ever adds time) and the command.

    python benchmarks/d4rl_convert.py --transitions 1000000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import command_line, machine_line, time_once, timed


def simulate(episodes: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """``episodes`` random-action HalfCheetah-v5 episodes: qpos/qvel [E, steps+1, .], actions, rewards [E, steps, .]."""
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5", max_episode_steps=steps)
    rng = np.random.default_rng(seed)
    qpos = np.zeros((episodes, steps + 1, 9))
    qvel = np.zeros((episodes, steps + 1, 9))
    act = rng.uniform(-1, 1, (episodes, steps, 6)).astype(np.float32)
    rew = np.zeros((episodes, steps))
    for e in range(episodes):
        env.reset(seed=seed + e)
        u = env.unwrapped
        for t in range(steps + 1):
            qpos[e, t], qvel[e, t] = u.data.qpos, u.data.qvel
            if t < steps:
                rew[e, t] = env.step(act[e, t])[1]
    env.close()
    return {"qpos": qpos, "qvel": qvel, "act": act, "rew": rew}


def write_file(path: Path, transitions: int, steps: int, sim_episodes: int, seed: int) -> None:
    import h5py

    sim = simulate(sim_episodes, steps, seed)
    n_ep = -(-transitions // steps)
    rng = np.random.default_rng(seed + 1)
    pick = np.arange(n_ep) % sim_episodes
    scale = 1 + 1e-3 * rng.standard_normal((n_ep, 1, 1))  # one perturbation per copy: states stay smooth in time
    qpos = sim["qpos"][pick] * scale  # (E, T+1, 9)
    qvel = sim["qvel"][pick] * scale
    obs = np.concatenate([qpos[:, :, 1:], qvel], axis=2).astype(np.float32)  # HalfCheetah: [qpos[1:], qvel]
    act = np.clip(sim["act"][pick] * scale.astype(np.float32), -1, 1)
    rew = (sim["rew"][pick] * scale[:, :, 0]).astype(np.float32)
    flags = np.zeros((n_ep, steps), dtype=bool)
    flags[:, -1] = True

    def rows(a, last=False):  # (E, T(+1), ...) -> (E*T, ...), first `transitions` rows
        a = a[:, 1:] if last else a[:, :steps]
        return a.reshape(n_ep * steps, *a.shape[2:])[:transitions]

    with h5py.File(path, "w") as f:
        f["observations"] = rows(obs)
        f["next_observations"] = rows(obs, last=True)
        f["actions"] = rows(act)
        f["rewards"] = rows(rew)
        f["terminals"] = np.zeros(transitions, dtype=bool)
        f["timeouts"] = rows(flags)
        f["infos/qpos"] = rows(qpos)
        f["infos/qvel"] = rows(qvel)
        f["metadata/algorithm"] = "random (madata benchmark)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=1000, help="episode length (D4RL: 1000)")
    p.add_argument(
        "--sim-episodes", type=int, default=10, help="episodes actually simulated, the rest are perturbed copies"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tmp", type=Path, default=None, help="directory for the file and the dataset (default: system temp)"
    )
    p.add_argument("--no-cli", action="store_true", help="skip timing the madata command in a subprocess")
    args = p.parse_args()

    import madata
    from madata.convert import mamujoco_split, split_d4rl

    work = Path(tempfile.mkdtemp(prefix="madata-d4rl-bench-", dir=args.tmp))
    try:
        src = work / "halfcheetah_medium-v2.hdf5"
        t0 = time.perf_counter()
        write_file(src, args.transitions, args.steps, args.sim_episodes, args.seed)
        print(
            f"source: {src.name}: {args.transitions:,} transitions, {src.stat().st_size / 2**20:.0f} MiB "
            f"(made in {time.perf_counter() - t0:.1f} s)"
        )
        mamujoco_split("halfcheetah", "2x3")  # env start-up, once per process
        ds, lib = timed(lambda: split_d4rl("halfcheetah", "2x3", work / "lib", source=src))
        assert ds.num_transitions == args.transitions, ds
        rep = ds.meta.provenance["report"]
        size = sum(f.stat().st_size for f in (work / "lib").rglob("*") if f.is_file())
        print(
            f"split_d4rl (library): {lib:.1f} s, {args.transitions / lib:,.0f} rows/s; {ds.num_episodes} episodes, "
            f"local observations from {rep['local_obs_from']}, dataset {size / 2**20:.0f} MiB"
        )
        cmd = [
            sys.executable,
            "-m",
            "cli.app",
            "split-d4rl",
            "halfcheetah",
            "2x3",
            "--source",
            str(src),
            "-o",
            str(work / "cli"),
        ]
        if not args.no_cli:
            wall = time_once(
                lambda: subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
            )
            print(f"madata split-d4rl (command, end to end): {wall:.1f} s, {args.transitions / wall:,.0f} rows/s")
        print(machine_line(madata=madata.__version__))
        print(f"command: {command_line()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
