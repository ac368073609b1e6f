"""How fast SMAX data is collected: the collector (JAX episodes + writing) beside the bare environment.

In one run, for one map and batch size:

* ``raw``: ``jit(vmap(scan))`` of the environment alone, uniform random available actions,
  nothing kept (what the simulator gives on this machine);
* ``episodes``: the collector's compiled episode function (both policies, masks, kept arrays);
* ``collect``: ``madata.collect`` end to end into a fresh dataset (episodes, cutting, writing,
  commits), after a warm-up that pays the compile.

Steps are environment steps of the whole team (one per transition). Compile times are reported apart.

    python benchmarks/smax_collect.py --map 2s3z --envs 64 --episodes 1024

Results: docs/smax.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import command_line, machine_line

from madata.collect import collect
from madata.envs import smax
from madata.envs.registry import get_task


def raw_rate(map_name: str, envs: int, repeat: int) -> tuple[float, float]:
    """(compile seconds, steps/s) of the bare environment, random available actions, 100 steps per lane."""
    import jax
    import jax.numpy as jnp

    env = smax._env(map_name)
    agents = env.agents

    def episode(key):
        obs, state = env.reset(key)

        def step(carry, _):
            key, state = carry
            key, k_act, k_step = jax.random.split(key, 3)
            masks = env.get_avail_actions(state)
            m = jnp.stack([masks[a] for a in agents]).astype(bool)
            act = jax.random.categorical(k_act, jnp.where(m, 0.0, -jnp.inf), axis=-1)
            _, state, reward, _, _ = env.step_env(k_step, state, {a: act[i] for i, a in enumerate(agents)})
            return (key, state), reward[agents[0]]

        return jax.lax.scan(step, (key, state), None, length=smax.MAX_STEPS)[1]

    run = jax.jit(jax.vmap(episode))
    keys = jax.random.split(jax.random.PRNGKey(0), envs)
    t0 = time.perf_counter()
    run(keys).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in range(repeat):
        run(jax.random.split(jax.random.PRNGKey(r + 1), envs)).block_until_ready()
    return compile_s, repeat * envs * smax.MAX_STEPS / (time.perf_counter() - t0)


def episode_rate(task: str, envs: int, repeat: int) -> tuple[float, float]:
    """(compile seconds, steps/s) of the collector's episode function, half the allies heuristic."""
    import jax

    c = smax.SmaxCollector(get_task(task), envs)
    heuristic = np.tile(np.arange(len(c.agents)) % 2 == 0, (envs, 1))
    t0 = time.perf_counter()
    jax.block_until_ready(c._run(jax.random.split(jax.random.PRNGKey(0), envs), heuristic))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in range(repeat):
        jax.block_until_ready(c._run(jax.random.split(jax.random.PRNGKey(r + 1), envs), heuristic))
    return compile_s, repeat * envs * c.steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--map", default="2s3z", choices=list(smax.MAPS))
    p.add_argument("--envs", type=int, default=64, help="environments per batch")
    p.add_argument("--episodes", type=int, default=1024, help="episodes collected end to end")
    p.add_argument("--repeat", type=int, default=4, help="timed batches of the raw and episode functions")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    task = f"smax-{args.map}"
    raw = raw_rate(args.map, args.envs, args.repeat)
    print(f"raw env:   compile {raw[0]:.1f} s, {raw[1]:,.0f} steps/s (100 steps per lane, every lane stepped)")
    ep = episode_rate(task, args.envs, args.repeat)
    print(f"episodes:  compile {ep[0]:.1f} s, {ep[1]:,.0f} steps/s (every lane stepped to the limit)")
    tmp = Path(tempfile.mkdtemp(prefix="madata-smax-"))
    try:
        mix = ["random", "heuristic"]
        collect(task, tmp / "warm", mix=mix, episodes=args.envs, envs=args.envs)  # pays the compile
        t0 = time.perf_counter()
        ds = collect(task, tmp / "d", mix=mix, episodes=args.episodes, envs=args.envs, seed=1)
        seconds = time.perf_counter() - t0
        kept = ds.num_transitions / seconds
        print(
            f"collect:   {ds.num_episodes} episodes, {ds.num_transitions:,} transitions in {seconds:.1f} s = "
            f"{kept:,.0f} transitions/s kept (episodes end early: mean length {ds.num_transitions / ds.num_episodes:.1f})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(machine_line())
    print(command_line())
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "task": task,
                    "envs": args.envs,
                    "raw": {"compile_s": raw[0], "steps_per_s": raw[1]},
                    "episodes": {"compile_s": ep[0], "steps_per_s": ep[1]},
                    "collect": {"episodes": ds.num_episodes, "transitions": ds.num_transitions, "seconds": seconds},
                    "machine": machine_line(),
                    "command": command_line(),
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
