"""Collect a dataset by running per-agent behaviour policies in a registered task.

    ds = collect("grid", "grid.zarr", mix=["random"], episodes=100, seed=0)

Episode ``e`` is a pure function of ``(seed, e)``: its env reset seed comes from
``SeedSequence([seed, e])`` and agent ``k``'s policy draws from
``default_rng(SeedSequence([seed, e, 1, k]))``, so the same seed gives the same bytes, a
resumed run equals an uninterrupted one, and changing one agent's level leaves the
other agents' random streams alone. The behaviour combination of episode ``e`` comes
from :func:`madata.behaviour.mix.assign`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import madata
from madata.behaviour import BehaviourPolicy, check_levels, load_policy
from madata.behaviour.mix import Combo, assign, check_combo, combinations
from madata.dataset import Dataset
from madata.envs.registry import TaskInfo, env_specs, get_task
from madata.errors import DatasetExistsError, SchemaError
from madata.writer import DatasetWriter, read_metadata

PRODUCER = "madata.collect"
_MATCH_KEYS = ("producer", "task", "mix", "combo", "episodes", "seed")  # what a resumed run must share


def collect(
    task: str,
    out: str | os.PathLike,
    *,
    mix: list[str] | None = None,
    combo: dict[str, str] | None = None,
    episodes: int,
    seed: int = 0,
    resume: bool = False,
    commit_every: int = 10,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> Dataset:
    """Run ``episodes`` episodes of ``task`` and write them to ``out``; returns the opened dataset.

    Give exactly one of ``mix`` (levels; every per-agent combination gets an equal share)
    and ``combo`` (one level per agent for every episode). ``resume=True`` continues an
    interrupted collection with the same arguments (or starts one if ``out`` holds none).
    Everything is validated before anything is written.
    """
    # ---- validate everything first
    info = get_task(task)
    episodes = _parse_int(episodes, "episodes", 1)
    seed = _parse_int(seed, "seed", 0)
    commit_every = _parse_int(commit_every, "commit_every", 0)
    if (mix is None) == (combo is None):
        raise SchemaError("give exactly one of mix (levels, e.g. ['random']) and combo ({agent: level})")
    if mix is not None:
        if isinstance(mix, str):
            raise SchemaError(f"mix: expected a list of levels, got the string {mix!r}; use parse_mix() to split it")
        mix = list(mix)
        combos = combinations(mix, info.agent_ids)
        check_levels(task, mix)
    else:
        combo = check_combo(combo, info.agent_ids)
        check_levels(task, combo.values())
        combos = [combo]
    provenance = {
        "producer": PRODUCER,
        "task": task,
        "mix": mix,
        "combo": combo,
        "episodes": episodes,
        "seed": seed,
        "madata_version": madata.__version__,
    }
    root = Path(out)
    resuming = resume and (root / "zarr.json").exists()
    if resuming:
        _check_same_collection(root, provenance)

    env = info.make_env()
    try:
        agents, state_space = env_specs(env)
        spaces = {a.id: a.action_space for a in agents}
        policies = {(a, lv): load_policy(task, lv, a, spaces[a]) for c in combos for a, lv in c.items()}
        # ---- write
        if resuming:
            writer = DatasetWriter.resume(root, commit_every=commit_every)
        else:
            writer = madata.create(
                root,
                agents,
                state_space=state_space,
                env=info.env,
                description=_describe(info, mix, combo, episodes, seed),
                reference_scores=info.reference_scores,
                provenance=provenance,
                commit_every=commit_every,
                **({} if chunk_rows is None else {"chunk_rows": chunk_rows}),
            )
        with (
            writer,
            tqdm(
                total=episodes,
                initial=writer.num_episodes,
                unit="ep",
                desc=f"collect {task}",
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            plan = assign(episodes, combos)
            transitions = 0
            for e in range(writer.num_episodes, episodes):
                ep = run_episode(env, info, plan[e], policies, seed, e)
                writer.add_episode(**ep)
                transitions += len(ep["rewards"])
                bar.update(1)
                elapsed = bar.format_dict["elapsed"]
                if elapsed > 0:
                    bar.set_postfix_str(f"{transitions / elapsed:,.0f} transitions/s", refresh=False)
    finally:
        env.close()
    return madata.open(root)


def episode_seeds(seed: int, e: int, num_agents: int) -> tuple[int, list[np.random.Generator]]:
    """Episode ``e``'s env reset seed and one policy generator per agent, all from ``(seed, e)``."""
    reset_seed = int(np.random.SeedSequence([seed, e]).generate_state(1)[0])
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, e, 1, k])) for k in range(num_agents)]
    return reset_seed, rngs


def run_episode(
    env: Any, info: TaskInfo, combo: Combo, policies: dict[tuple[str, str], BehaviourPolicy], seed: int, e: int
) -> dict[str, Any]:
    """Play episode ``e`` to its end; returns the keyword arguments of ``DatasetWriter.add_episode``."""
    agent_ids = list(info.agent_ids)
    reset_seed, rngs = episode_seeds(seed, e, len(agent_ids))
    obs, _ = env.reset(seed=reset_seed)
    # copies: an env may reuse its output buffers
    obs_buf = {a: [np.array(obs[a])] for a in agent_ids}  # T+1 each
    state_buf = [np.array(env.state())]  # T+1
    act_buf: dict[str, list] = {a: [] for a in agent_ids}  # T each
    rewards, terminated = [], False
    while True:
        actions = {}
        for k, a in enumerate(agent_ids):
            # a batch of one; a vectorized collector will pass one row per env
            actions[a] = policies[(a, combo[a])].act(np.asarray(obs[a])[None], rngs[k])[0]
            act_buf[a].append(actions[a])
        obs, rew, terms, truncs, _ = env.step(actions)
        team = {float(rew[a]) for a in agent_ids}
        if len(team) != 1:  # cooperative tasks give every agent the team reward
            raise SchemaError(
                f"task {info.name}: agents got different rewards {rew}; madata.collect records one team reward"
            )
        rewards.append(team.pop())
        for a in agent_ids:
            obs_buf[a].append(np.array(obs[a]))
        state_buf.append(np.array(env.state()))
        terminated = any(bool(terms[a]) for a in agent_ids)
        if terminated or any(bool(truncs[a]) for a in agent_ids):
            break
    T = len(rewards)
    end_flags = np.zeros(T, dtype=bool)
    end_flags[-1] = True
    return {
        "obs": {a: np.stack(obs_buf[a]) for a in agent_ids},
        "actions": {a: np.stack(act_buf[a]) for a in agent_ids},
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminated": end_flags if terminated else np.zeros(T, dtype=bool),
        "truncated": np.zeros(T, dtype=bool) if terminated else end_flags,
        "state": np.stack(state_buf),
        "behaviour": dict(combo),
        "seed": reset_seed,
        "provenance": {"combo": dict(combo)},
    }


def _check_same_collection(root: Path, requested: dict[str, Any]) -> None:
    """Refuse to resume into a dataset made by another collection (before touching it)."""
    stored = read_metadata(root).provenance
    diffs = [
        f"{k}: stored {stored.get(k)!r}, requested {requested[k]!r}"
        for k in _MATCH_KEYS
        if stored.get(k) != requested[k]
    ]
    if diffs:
        raise DatasetExistsError(
            f"{root}: path holds a different dataset ({'; '.join(diffs)}); nothing was overwritten. "
            "Resume with the original arguments or choose another output path"
        )


def _parse_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SchemaError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SchemaError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _describe(info: TaskInfo, mix: list[str] | None, combo: Combo | None, episodes: int, seed: int) -> str:
    how = (
        f"behaviour mix {','.join(mix)} (every per-agent combination, equal shares)"
        if mix
        else f"behaviour combo {combo}"
    )
    return f"{info.name}: {episodes} episodes, {how}, collected by {PRODUCER} with seed {seed}"
