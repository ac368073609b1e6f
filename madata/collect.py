"""Collect a dataset by running behaviour policies in a registered task.

    ds = collect("halfcheetah-2x3", "hc", mix=["medium", "expert"], episodes=40, seed=0)

Each episode gives every agent a behaviour level (:mod:`madata.behaviour.mix`); a
level's policy is a joint policy of the whole team, and agent ``i`` takes its part of
the joint action (:class:`~madata.envs.team.Factorization`). ``envs`` copies of the
environment run side by side; every step makes one ``act`` call per level over all
copies whose team uses that level, then steps each copy with the assembled joint
action. Optional exploration: Gaussian action noise ``noise`` (per component, clipped
to the action box) and ``epsilon``-random actions (per agent and step, the agent's whole
action replaced by a uniform one).

Episode ``e`` is a pure function of ``(seed, e)``, whatever ``envs`` is and whether the
run was resumed:

* its reset seed is ``SeedSequence([seed, e]).generate_state(1)[0]``;
* agent ``k``'s policy noise, ``[max_steps, d_k]`` in its level's noise distribution, is
  drawn at episode start from ``default_rng(SeedSequence([seed, e, 1, k]))``, and its
  exploration noise from streams of its own (:func:`episode_noise`): changing one
  agent's level leaves the others' alone;
* policies compute each row of a batch independently of the other rows
  (:class:`~madata.behaviour.SacPolicy`);
* finished episodes are written in episode-id order (ones that finish early wait).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

import madata
from madata.behaviour import BehaviourPolicy, check_levels, load_policy
from madata.behaviour.mix import Combo, assign, check_combo, combinations, combo_of
from madata.behaviour.random import TeamRandomPolicy
from madata.commit import read_commit
from madata.dataset import Dataset
from madata.distributed import check_cluster
from madata.envs.family import Task
from madata.envs.registry import get_task
from madata.envs.team import Factorization, TeamEnv
from madata.errors import DatasetExistsError, SchemaError
from madata.location import Location, location
from madata.sharded import read_root_record, shard_writer
from madata.spaces import Discrete
from madata.store import read_root
from madata.writer import DatasetWriter, new_metadata

PRODUCER = "madata.collect"
DEFAULT_ENVS = 16
# what a resumed run must share with the stored one
_MATCH_KEYS = (
    "producer",
    "task",
    "mix",
    "mix_by",
    "combo",
    "episodes",
    "seed",
    "noise",
    "epsilon",
    "max_steps",
    "policies",
)
_BEFORE_OPTIONS = {"noise": 0.0, "epsilon": 0.0, "max_steps": None}  # stored by collectors that lacked these options


def collect(
    task: str | Task,
    out: str | os.PathLike,
    *,
    mix: list[str] | None = None,
    combo: dict[str, str] | None = None,
    mix_by: str | None = None,
    episodes: int,
    seed: int = 0,
    envs: int = DEFAULT_ENVS,
    noise: float = 0.0,
    epsilon: float = 0.0,
    max_steps: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    commit_every: int = 10,
    commit_seconds: float = 1.0,
    chunk_rows: int | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    storage_options: dict[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    shard_episodes: int | None = None,
) -> Dataset:
    """Run ``episodes`` episodes of ``task`` and write them to ``out``; returns the opened dataset.

    Give exactly one of ``mix`` (levels; every per-agent combination gets an equal share)
    and ``combo`` (one level per agent for every episode). ``mix_by="team"`` (with ``mix``
    only) draws one level per episode for the whole team instead (default ``"agent"``);
    each episode's provenance records it. ``envs``: environment copies
    stepped side by side (the data does not depend on it). ``noise``: standard deviation
    of Gaussian action noise; ``epsilon``: probability that an agent acts uniformly at
    random in a step; ``max_steps``: a time limit below the task's own (ends there are
    truncated). ``checkpoint_dir`` holds ``<task>/<level>.json`` checkpoints (default:
    ``$MADATA_CHECKPOINT_DIR``, else the shipped ones). ``resume=True`` continues an
    interrupted collection with the same arguments (or starts one if ``out`` holds none).
    Commits (crash-safe points) come every ``commit_every`` episodes and at most once per
    ``commit_seconds``. ``out`` may be an fsspec URL (``s3://bucket/x.zarr``, with
    ``storage_options``); a dataset there is sharded (:mod:`madata.sharded`). ``workers`` (a
    Dask LocalCluster on 127.0.0.1) or ``scheduler`` (``tcp://host:port``) collect it on Dask
    workers, ``shard_episodes`` episodes per shard (:mod:`madata.distributed`); the data is the
    same as from one process. Everything is validated before anything is written.
    """
    # ---- validate everything first
    info = get_task(task)  # resolved once, here; the Task object travels from here
    task = info.name
    episodes = parse_int(episodes, "episodes", 1)
    seed = parse_int(seed, "seed", 0)
    envs = parse_int(envs, "envs", 1)
    commit_every = parse_int(commit_every, "commit_every", 0)
    commit_seconds = parse_float(commit_seconds, "commit_seconds", 0.0, math.inf)
    if max_steps is not None:
        max_steps = parse_int(max_steps, "max_steps", 1)
        limit = info.env.get("max_steps")
        if limit is not None and max_steps > limit:
            raise SchemaError(
                f"max_steps (--max-steps) {max_steps} is above {task}'s own time limit of {limit} steps; "
                f"give at most {limit} (it can only shorten episodes)"
            )
    noise = parse_float(noise, "noise", 0.0, math.inf)
    epsilon = parse_float(epsilon, "epsilon", 0.0, 1.0)
    if (mix is None) == (combo is None):
        raise SchemaError("give exactly one of mix (levels, e.g. ['random']) and combo ({agent: level})")
    if mix is not None:
        if isinstance(mix, str):
            raise SchemaError(f"mix: expected a list of levels, got the string {mix!r}; use parse_mix() to split it")
        mix = list(mix)
        mix_by = "agent" if mix_by is None else mix_by
        combos = combinations(mix, info.agent_ids, mix_by)
        check_levels(info, mix, checkpoint_dir)
    else:
        if mix_by is not None:
            raise SchemaError(f"mix_by ({mix_by!r}) applies to a mix only; a combo fixes every agent's level already")
        combo = check_combo(combo, info.agent_ids)
        check_levels(info, combo.values(), checkpoint_dir)
        combos = [combo]
    loc = location(out, storage_options)
    distributed = workers is not None or scheduler is not None
    workers = check_cluster(workers, scheduler)
    if shard_episodes is not None:
        if not distributed:
            raise SchemaError(
                "shard_episodes (--shard-episodes) applies to a distributed collection (--workers/--scheduler)"
            )
        shard_episodes = parse_int(shard_episodes, "shard_episodes", 1)
    sharded = distributed or not loc.local
    resuming = resume and loc.exists("zarr.json")

    levels = list(dict.fromkeys(lv for c in combos for lv in c.values()))
    if info.family.batched:
        if noise or epsilon:
            raise SchemaError(f"noise and epsilon do not apply to {task}: its levels are {', '.join(levels)}")
        agents, state_space = info.family.spec(info)
        masks, env_record = True, {**info.env, "max_steps": max_steps or info.max_steps}
        described = {lv: info.family.describe_level(lv) for lv in levels}
    else:
        first_env = info.team_env(max_steps)
        try:
            f = first_env.factorization
            if noise and any(isinstance(a.action_space, Discrete) for a in f.agents):
                raise SchemaError(
                    f"noise: Gaussian action noise needs continuous actions; {task} has discrete ones (use epsilon)"
                )
            described = {lv: load_policy(info, lv, f, checkpoint_dir).describe() for lv in levels}
            agents, state_space, masks = f.agents, f.state_space, False
            env_record = {**info.env, "max_steps": first_env.max_steps}
        finally:
            first_env.close()
    plan = Plan(info, combos, episodes, seed, envs, noise, epsilon, max_steps, mix_by, checkpoint_dir)
    provenance = {
        "producer": PRODUCER,
        "task": task,
        "mix": mix,
        "mix_by": mix_by,
        "combo": combo,
        "episodes": episodes,
        "seed": seed,
        "noise": noise,
        "epsilon": epsilon,
        "max_steps": max_steps,
        "policies": described,
        "madata_version": madata.__version__,
    }
    if resuming:
        meta = read_root(loc)[0]
        _check_same_collection(loc, meta.provenance, provenance)
    else:
        meta = new_metadata(
            agents,
            state_space=state_space,
            action_masks=masks,
            env=env_record,
            description=_describe(info, mix, mix_by, combo, episodes, seed, noise, epsilon),
            reference_scores=info.reference_scores,
            provenance=provenance,
            **({} if chunk_rows is None else {"chunk_rows": chunk_rows}),
        )
    if distributed:
        from madata.distributed import collect_distributed

        collect_distributed(
            plan, loc, meta, resume=resuming, workers=workers, scheduler=scheduler,
            shard_episodes=shard_episodes, progress=progress, report=report,
        )  # fmt: skip
        return madata.open(loc)
    # ---- write, in this process
    if resuming:  # the records alone (not a check of every chunk): is it finished already?
        done = read_root_record(loc) if sharded else read_commit(loc)
        if done.complete and done.num_episodes == episodes:
            return madata.open(loc)  # a writer would commit the same record again (sharded: an empty shard)
    if sharded:
        writer = shard_writer(
            loc, None if resuming else meta, resume=resuming, commit_every=commit_every, commit_seconds=commit_seconds
        )
    elif resuming:
        writer = DatasetWriter.resume(loc, commit_every=commit_every, commit_seconds=commit_seconds)
    else:
        writer = DatasetWriter.create(loc, meta, commit_every=commit_every, commit_seconds=commit_seconds)
    with writer, episode_bar(episodes, writer.num_episodes, f"collect {task}", progress) as bar:
        start, t0 = writer.num_episodes, time.perf_counter()
        transitions, every = 0, max(1, (episodes - start) // 10)
        for ep in plan.run(start, episodes):
            writer.add_episode(**ep)
            transitions += len(ep["rewards"])
            bar.update(1)
            elapsed = time.perf_counter() - t0  # the bar's own clock stands still when it is disabled
            if elapsed > 0:
                bar.set_postfix_str(f"{transitions / elapsed:,.0f} transitions/s", refresh=False)
            done = writer.num_episodes
            if report and ((done - start) % every == 0 or done == episodes):  # a tenth at a time, off a terminal
                report(
                    f"collect {task}: {done:,}/{episodes:,} episodes, {transitions:,} transitions in "
                    f"{elapsed:.0f} s ({transitions / max(elapsed, 1e-9):,.0f}/s)"
                )
    return madata.open(loc)


@dataclass(frozen=True)
class Plan:
    """What a collection runs; episode ``e`` is a pure function of the plan and ``e``. It pickles, so
    Dask workers run parts of it (:mod:`madata.distributed`)."""

    task: Task
    combos: list[Combo]
    episodes: int
    seed: int
    envs: int
    noise: float
    epsilon: float
    max_steps: int | None
    mix_by: str | None
    checkpoint_dir: str | os.PathLike | None

    def combo(self, e: int) -> Combo:
        """Episode ``e``'s combination of levels (agent -> level)."""
        return combo_of(e, self.combos)

    def run(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Episodes ``start .. stop-1`` as keyword arguments of ``DatasetWriter.add_episode``, in id order,
        on up to ``envs`` environment copies made here and closed when the iteration ends."""
        if self.task.family.batched:  # the family steps its own batches (SMAX, in JAX)
            yield from self.task.family.run_episodes(self, start, stop)
            return
        team_envs = [self.task.team_env(self.max_steps) for _ in range(max(1, min(self.envs, stop - start)))]
        try:
            f = team_envs[0].factorization
            levels = list(dict.fromkeys(lv for c in self.combos for lv in c.values()))
            policies = {lv: load_policy(self.task, lv, f, self.checkpoint_dir) for lv in levels}
            plan = assign(self.episodes, self.combos)
            runner = VectorRunner(team_envs, plan, policies, self.seed, self.noise, self.epsilon, self.mix_by)
            yield from runner.run(start, stop)
        finally:
            for env in team_envs:
                env.close()


def episode_bar(total: int, done: int, desc: str, progress: bool) -> tqdm:
    """The progress bar of a collection: episodes, starting from those a resume found done (on stderr)."""
    return tqdm(
        total=total,
        initial=done,
        unit="ep",
        desc=desc,
        disable=None if progress else True,
        mininterval=0.5,
        file=sys.stderr,
    )


class VectorRunner:
    """Runs episodes on several :class:`TeamEnv` copies at once and yields them in id order.

    ``plan[e]`` is episode ``e``'s combination (agent -> level); ``policies`` maps each
    level to its joint policy. Per step: one ``act`` call per level over the copies
    that use it, exploration noise, then every copy steps once.
    """

    def __init__(
        self,
        team_envs: Sequence[TeamEnv],
        plan: Sequence[Combo],
        policies: dict[str, BehaviourPolicy],
        seed: int,
        noise: float = 0.0,
        epsilon: float = 0.0,
        mix_by: str | None = None,
    ):
        self.envs, self.plan, self.seed, self.mix_by = list(team_envs), plan, seed, mix_by
        self.policies = list(policies.values())
        self.level_id = {lv: i for i, lv in enumerate(policies)}
        self.f = f = self.envs[0].factorization
        self.sigma, self.epsilon = noise, epsilon
        self.random = TeamRandomPolicy(f.action_spaces, f.act_index, f.act_dim)
        low, high = f.joint_bounds()
        self.low, self.high = low.astype(np.float32), high.astype(np.float32)
        K, L, A, S, D = len(self.envs), self.envs[0].max_steps, f.act_dim, f.state_space.shape[0], f.source_dim
        self.L = L
        # per copy: the running episode, its step, its noise (pre-drawn) and its rows so far
        self.episode = np.full(K, -1, dtype=np.int64)
        self.reset_seed = np.zeros(K, dtype=np.int64)
        self.t = np.zeros(K, dtype=np.int64)
        self.comp_level = np.zeros((K, A), dtype=np.int64)  # level id acting on each joint component
        self.policy_noise = np.zeros((K, L, A))
        self.gauss = np.zeros((K, L, A)) if noise else None
        self.explore = np.zeros((K, L, A), dtype=bool) if epsilon else None
        self.uniform = np.zeros((K, L, A)) if epsilon else None
        self.state = np.zeros((K, L + 1, S))  # T+1 rows
        self.source = np.zeros((K, L + 1, D))  # T+1 rows
        self.action = np.zeros((K, L, A), dtype=np.float32)  # T rows
        self.reward = np.zeros((K, L))  # T rows

    def run(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Episodes ``start .. stop-1`` as keyword arguments of ``DatasetWriter.add_episode``, in id order."""
        self._next, self._stop, self._done = start, stop, {}
        active = [s for s in range(len(self.envs)) if self._start(s)]
        out = start
        while out < stop:
            while out in self._done:
                yield self._done.pop(out)
                out += 1
            if out < stop:
                active = self._step(active)

    def _start(self, s: int) -> bool:
        """Start the next episode on copy ``s``; False when none is left."""
        if self._next >= self._stop:
            return False
        e = self._next
        self._next += 1
        combo = self.plan[e]
        reset_seed, streams = episode_noise(
            self.seed,
            e,
            self.f,
            {a: self.policies[self.level_id[lv]].noise_dist for a, lv in combo.items()},
            self.L,
            self.sigma > 0,
            self.epsilon,
        )
        self.policy_noise[s] = streams["policy"]
        if self.gauss is not None:
            self.gauss[s] = streams["gauss"]
        if self.explore is not None:
            self.explore[s], self.uniform[s] = streams["explore"], streams["uniform"]
        for a, lv in combo.items():
            self.comp_level[s, self.f.act_index[a]] = self.level_id[lv]
        self.episode[s], self.reset_seed[s], self.t[s] = e, reset_seed, 0
        self.state[s, 0], self.source[s, 0] = self.envs[s].reset(reset_seed)
        return True

    def _step(self, active: list[int]) -> list[int]:
        rows = np.asarray(active)
        t = self.t[rows]
        joint = np.empty((len(rows), self.f.act_dim), dtype=np.float32)  # (n, A)
        for lv, policy in enumerate(self.policies):
            mine = self.comp_level[rows] == lv  # (n, A): components this level acts on
            use = mine.any(axis=1)
            if not use.any():
                continue
            r, tr = rows[use], t[use]
            out = policy.act(self.state[r, tr], self.policy_noise[r, tr])
            joint[use] = np.where(mine[use], out, joint[use])
        if self.gauss is not None:
            joint = np.clip(joint + self.sigma * self.gauss[rows, t], self.low, self.high).astype(np.float32)
        if self.explore is not None:
            joint = np.where(self.explore[rows, t], self.random.act(None, self.uniform[rows, t]), joint)
        still = []
        for i, s in enumerate(active):
            state, source, reward, terminated, truncated = self.envs[s].step(joint[i])
            k = int(self.t[s])
            self.action[s, k], self.reward[s, k] = joint[i], reward
            self.state[s, k + 1], self.source[s, k + 1] = state, source
            self.t[s] = k + 1
            if terminated or truncated:
                self._finish(s, terminated)
                if not self._start(s):
                    continue
            still.append(s)
        return still

    def _finish(self, s: int, terminated: bool) -> None:
        T, e, f = int(self.t[s]), int(self.episode[s]), self.f
        end = np.zeros(T, dtype=bool)
        end[-1] = True
        combo = self.plan[e]
        self._done[e] = {
            "obs": f.local_obs(self.source[s, : T + 1]),
            "actions": f.split_actions(self.action[s, :T]),
            "rewards": self.reward[s, :T].copy(),
            "terminated": end if terminated else np.zeros(T, dtype=bool),
            "truncated": np.zeros(T, dtype=bool) if terminated else end,
            "state": self.state[s, : T + 1].astype(np.float32),
            "behaviour": dict(combo),
            "seed": int(self.reset_seed[s]),
            "provenance": {"combo": dict(combo)} | ({"mix_by": self.mix_by} if self.mix_by else {}),
        }


def episode_noise(
    seed: int, e: int, f: Factorization, dists: dict[str, str], length: int, gauss: bool = False, epsilon: float = 0.0
) -> tuple[int, dict[str, np.ndarray]]:
    """Episode ``e``'s reset seed and its noise, all from ``(seed, e)``: arrays [length, A].

    Agent ``k``'s part of each array comes from its own stream, so the first ``n`` rows do
    not depend on ``length`` and one agent's level or options leave the others' alone:
    ``"policy"`` from ``SeedSequence([seed, e, 1, k])`` in ``dists[agent]`` ("normal" or
    "uniform"); ``"gauss"`` (standard normal, when ``gauss``) from ``[seed, e, 2, k]``;
    ``"explore"`` (bool, set in a step with probability ``epsilon`` for all of the agent's
    components) from ``[seed, e, 3, k]`` and ``"uniform"`` (its random action) from ``[seed, e, 4, k]``.
    """

    def stream(kind: int, k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, e, kind, k]))

    reset_seed = int(np.random.SeedSequence([seed, e]).generate_state(1)[0])
    A = f.act_dim
    out = {"policy": np.zeros((length, A))}
    if gauss:
        out["gauss"] = np.zeros((length, A))
    if epsilon:
        out["explore"], out["uniform"] = np.zeros((length, A), dtype=bool), np.zeros((length, A))
    for k, a in enumerate(f.agent_ids):
        idx = f.act_index[a]
        shape = (length, len(idx))
        if dists[a] == "normal":
            out["policy"][:, idx] = stream(1, k).standard_normal(shape)
        elif dists[a] == "uniform":
            out["policy"][:, idx] = stream(1, k).random(shape)
        else:
            raise SchemaError(f"noise distribution must be 'normal' or 'uniform', got {dists[a]!r}")
        if gauss:
            out["gauss"][:, idx] = stream(2, k).standard_normal(shape)
        if epsilon:
            out["explore"][:, idx] = (stream(3, k).random(length) < epsilon)[:, None]
            out["uniform"][:, idx] = stream(4, k).random(shape)
    return reset_seed, out


def _check_same_collection(root: Location, stored: dict[str, Any], requested: dict[str, Any]) -> None:
    """Refuse to resume into a dataset made by another collection (before touching it): ``stored`` is
    its provenance."""
    stored = {**_BEFORE_OPTIONS, "mix_by": "agent" if stored.get("mix") else None, **stored}
    refuse_other_collection(root, stored, requested, _MATCH_KEYS, unrecorded_ok=("policies",))


def refuse_other_collection(
    root: Location | str | os.PathLike,
    stored: dict[str, Any],
    requested: dict[str, Any],
    keys: Sequence[str],
    unrecorded_ok: Sequence[str] = (),
) -> None:
    """Raise DatasetExistsError naming every field of ``keys`` where the ``stored`` provenance differs from
    the ``requested`` one (innermost first: ``policies.medium.checkpoint``); fields in ``unrecorded_ok``
    may be missing from what older collectors stored."""
    diffs = []
    for k in keys:
        if k not in stored:
            if k not in unrecorded_ok:
                diffs.append(f"{k}: not recorded, requested {requested[k]!r}")
        elif stored[k] != requested[k]:
            diffs += _differences(k, stored[k], requested[k])
    if diffs:
        raise DatasetExistsError(
            f"{root}: path holds a different dataset ({'; '.join(diffs)}); nothing was overwritten. "
            "Resume with the original arguments or choose another output path"
        )


def _differences(where: str, stored: Any, requested: Any) -> list[str]:
    """The innermost fields that differ between two JSON values, each named by its path (policies.medium.checkpoint)."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for k in sorted(set(stored) | set(requested), key=str):
            if stored.get(k) != requested.get(k):
                out += _differences(f"{where}.{k}", stored.get(k), requested.get(k))
        return out
    return [f"{where}: stored {stored!r}, requested {requested!r}"[:200]]


def parse_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (bools refused), or a SchemaError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SchemaError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SchemaError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def parse_float(value: Any, name: str, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi] (bools and NaN refused), or a SchemaError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SchemaError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
    if not lo <= float(value) <= hi or math.isnan(value):
        raise SchemaError(f"{name}: expected a number in [{lo}, {hi}], got {value}")
    return float(value)


def _describe(
    info: Task,
    mix: list[str] | None,
    mix_by: str | None,
    combo: Combo | None,
    episodes: int,
    seed: int,
    noise: float,
    epsilon: float,
) -> str:
    if not mix:
        how = f"behaviour combo {combo}"
    elif mix_by == "team":
        how = f"behaviour mix {','.join(mix)} drawn per team (one level for every agent of an episode, equal shares)"
    else:
        how = f"behaviour mix {','.join(mix)} (every per-agent combination, equal shares)"
    explore = f", action noise {noise}" if noise else ""
    explore += f", epsilon-random {epsilon}" if epsilon else ""
    return f"{info.name}: {episodes} episodes, {how}{explore}, collected by {PRODUCER} with seed {seed}"
