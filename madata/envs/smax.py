"""SMAX: JaxMARL's StarCraft-like unit micromanagement, the paper's second domain (Table 1) on a CPU.

StarCraft II itself needs a proprietary binary; SMAX (``jaxmarl``, the optional extra
``madata[smax]``) re-implements SMAC's unit fights in JAX. Tasks: ``smax-2s3z`` and
``smax-10m_vs_11m`` (SMAX's own maps) and ``smax-3s_vs_3z`` (3 stalkers against 3 zealots,
registered here as a custom scenario). SMAC's MMM cannot be built: SMAX has no medivac and
no healing.

What a dataset holds: each ally's observation, the world state as the global state (as SMAX
gives it: not normalised), each ally's available actions as its action mask, actions 0-3
(move), 4 (stop: the no-op, the only action of a dead unit, and the default action of
CAST-BCQ) and 5 + k (attack enemy k), the team reward (per step the enemy health lost,
normalised, over the enemy team size, plus 1 for a win: a return is at most about 2), and
per episode whether it was won (``provenance["won"]``). An episode ends terminated when
one side is dead, truncated at the 100-step limit; the final observation is kept (SMAX's
auto-reset would drop it, so episodes are stepped with ``step_env`` and never reset).

Behaviour levels: ``random`` (uniform over the available actions) and ``heuristic``
(SMAX's built-in ``create_heuristic_policy``; an unavailable action it picks, as it does
for dead units, becomes the no-op). A mix is drawn per agent (uncoordinated) or per team.

Collection runs whole episodes in JAX, ``jit(vmap(scan))`` over a batch of environments
(:class:`SmaxCollector`); episode ``e`` depends only on ``(seed, e)``. Evaluation
(:func:`evaluate_policy`) steps a batch one jitted step at a time with a Python policy in
between, with the collector's keys, and reports wins.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from madata.envs.family import Task, TaskFamily
from madata.errors import SchemaError, UnknownNameError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete

if TYPE_CHECKING:
    from madata.envs.team import TeamEnv

NOOP = 4  # "stop": always available, the only action of a dead unit
MAX_STEPS = 100  # SMAX's episode limit
# map -> (allies, enemies, custom unit types or None for SMAX's own scenario)
MAPS: dict[str, tuple[int, int, list[int] | None]] = {
    "2s3z": (5, 5, None),
    "10m_vs_11m": (10, 11, None),
    "3s_vs_3z": (3, 3, [2, 2, 2, 3, 3, 3]),  # SMAX unit types: 2 stalker, 3 zealot
}
NOT_BUILDABLE = {"MMM": "SMAX has no medivac and no healing"}
HEURISTIC = "jaxmarl create_heuristic_policy(team=0, shoot=True, attack_mode='closest'); unavailable -> no-op"


def _jaxmarl():
    # jaxmarl prints notes about its optional environments while importing, and its mabrax module points
    # sys.stdout and sys.stderr at sys.__stdout__ and sys.__stderr__: all four stay pointed at a sink
    # until it is imported, then everything is put back as it was
    saved, sink = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__), io.StringIO()
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = sink
    try:
        import jaxmarl.environments.smax as smax
    except ImportError:
        raise SchemaError("SMAX tasks need JaxMARL: pip install 'madata[smax]' (jaxmarl, JAX on CPU)") from None
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved
    return smax


@functools.cache
def _env(map_name: str):
    """The SMAX environment of ``map_name`` with its heuristic enemy (one per process: building it is slow)."""
    smax = _jaxmarl()
    allies, enemies, units = MAPS[map_name]
    if units is None:
        scenario = smax.map_name_to_scenario(map_name)
    else:
        import jax.numpy as jnp

        scenario = smax.Scenario(jnp.array(units, dtype=jnp.uint8), allies, enemies, False, False)
    return smax.HeuristicEnemySMAX(scenario=scenario)


class SmaxFamily(TaskFamily):
    """SMAX maps as tasks ``smax-<map>``; environments stepped in batches in JAX, not through a TeamEnv."""

    name = "smax"
    builtin_levels = ("heuristic",)
    batched = True
    results_note = "SMAX (JaxMARL), a StarCraft-like simulator: analogues of SMAC results, not SMAC numbers"
    raw_state = True

    def names(self) -> list[str]:
        return [f"smax-{m}" for m in MAPS]

    def resolve(self, name: str) -> Task | None:
        if not name.startswith("smax-"):
            return None
        m = name.removeprefix("smax-")
        if m not in MAPS:
            why = f" ({m} cannot be built: {NOT_BUILDABLE[m]})" if m in NOT_BUILDABLE else ""
            raise UnknownNameError(f"unknown SMAX map {m!r}{why}; SMAX tasks: {', '.join(self.names())}")
        allies, enemies, _ = MAPS[m]
        return Task(
            name=name,
            family=self,
            agent_ids=tuple(f"ally_{i}" for i in range(allies)),
            env={"id": name, "family": self.name, "map": m, "max_steps": MAX_STEPS, "default_action": NOOP},
            description=f"SMAX {m}: {allies} allied units against {enemies} heuristic enemies (JaxMARL; "
            "a StarCraft-like simulator, not StarCraft II)",
        )

    def make_env(self, task: Task) -> Any:
        return _env(task.env["map"])

    def team_env(self, task: Task, max_steps: int | None) -> TeamEnv:
        raise SchemaError(
            f"{task.name}: SMAX environments are stepped in batches in JAX (madata collect); they have no "
            "one-step-at-a-time team environment"
        )

    def spec(self, task: Task) -> tuple[list[AgentSpec], Box]:
        """The allies' spaces and the world state's, from the environment."""
        env = self.make_env(task)
        n_actions = int(env.action_space(task.agent_ids[0]).n)
        obs_dim = int(env.observation_space(task.agent_ids[0]).shape[0])
        agents = [AgentSpec(a, Box.make(-np.inf, np.inf, (obs_dim,)), Discrete(n_actions)) for a in task.agent_ids]
        return agents, Box.make(-np.inf, np.inf, (_state_dim(task.env["map"]),))

    def describe_level(self, level: str) -> str:
        """What a behaviour level is, for the dataset's provenance."""
        known = {"random": "uniform over the available actions", "heuristic": HEURISTIC}
        return known[level] if level in known else super().describe_level(level)

    def evaluate_policy(self, task: Task, policy, episodes: int, seed: int, max_steps: int | None = None) -> dict:
        """:func:`evaluate_policy` (the family's evaluator, for madata_algos.evaluate)."""
        return evaluate_policy(task, policy, episodes, seed, max_steps)

    def run_episodes(self, plan, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Episodes ``start .. stop-1`` of ``plan`` (a :class:`~madata.collect.Plan`) as ``add_episode``
        keyword arguments, in id order, ``plan.envs`` environments at a time."""
        collector = _collector(plan.task.name, max(1, plan.envs), plan.max_steps)
        for first in range(start, stop, collector.batch):
            ids = np.arange(first, min(first + collector.batch, stop))
            yield from collector.collect(ids, [plan.combo(e) for e in ids], plan.seed, plan.mix_by)


@functools.cache
def _collector(task: str, batch: int, max_steps: int | None) -> SmaxCollector:
    """One compiled collector per task, batch and limit in a process (a compile takes seconds)."""
    return SmaxCollector(SMAX.resolve(task), batch, max_steps)


@functools.cache
def _state_dim(map_name: str) -> int:
    import jax

    obs, _ = _env(map_name).reset(jax.random.PRNGKey(0))
    return int(obs["world_state"].shape[-1])


def observe_team(env, agents: list[str], obs: dict, state) -> tuple:
    """(observations [n, O], world state [S], available actions [n, K] bool) of one environment."""
    import jax.numpy as jnp

    masks = env.get_avail_actions(state)
    return (
        jnp.stack([obs[a] for a in agents]),
        obs["world_state"],
        jnp.stack([masks[a] for a in agents]).astype(bool),
    )


def episode_keys(seed: int, ids) -> Any:
    """The JAX key of each episode of ``ids`` [E]: ``fold_in(PRNGKey(seed), id)``, collection and evaluation alike."""
    import jax
    import jax.numpy as jnp

    return jax.vmap(lambda e: jax.random.fold_in(jax.random.PRNGKey(seed), e))(jnp.asarray(ids))


def step_keys(key) -> tuple:
    """(the episode's next key, (heuristic, random, environment) keys of this step): the one schedule the
    collector and the evaluator share, so a replayed episode steps with the keys it was collected with."""
    import jax

    key, *keys = jax.random.split(key, 4)
    return key, tuple(keys)


def available_or_noop(masks, act):
    """``act`` [n] with every action its agent cannot take (``masks`` [n, K] bool) replaced by the no-op."""
    import jax.numpy as jnp

    return jnp.where(jnp.take_along_axis(masks, act[:, None], 1)[:, 0], act, NOOP)


def env_step(env, agents: list[str], key, state, act) -> tuple:
    """One step of the allies' actions ``act`` [n]: (obs, state, team reward, battle over, won)."""
    obs, state, reward, _, _ = env.step_env(key, state, {a: act[i] for i, a in enumerate(agents)})
    alive = state.state.unit_alive
    allies_dead, enemies_dead = ~alive[: len(agents)].any(), ~alive[len(agents) :].any()
    return obs, state, reward[agents[0]], allies_dead | enemies_dead, enemies_dead & ~allies_dead


class SmaxCollector:
    """Whole SMAX episodes of ``batch`` environments at once: ``jit(vmap(scan))`` over ``max_steps`` steps.

    Per lane: its episode's key (``fold_in(PRNGKey(seed), e)``) and which allies act heuristically.
    Every lane steps the full limit (a finished battle keeps stepping, unread); each episode is cut
    at its first end. A last batch that is short is padded, so every call compiles once.
    """

    def __init__(self, task: Task, batch: int, max_steps: int | None = None):
        import jax

        self.task, self.batch = task, batch
        self.env = env = _env(task.env["map"])
        self.agents = list(task.agent_ids)
        self.steps = min(max_steps or MAX_STEPS, MAX_STEPS)
        self._run = jax.jit(jax.vmap(self._episode))
        self._heuristic = _jaxmarl().heuristic_enemy.create_heuristic_policy(env, 0, shoot=True, attack_mode="closest")

    def _episode(self, key, heuristic):
        """One episode's arrays [steps (+1), ...]: observations, world states and masks before each step
        and after the last, actions, rewards, and after each step whether the battle was over and won."""
        import jax
        import jax.numpy as jnp
        from jaxmarl.environments.smax.heuristic_enemy import get_heuristic_policy_initial_state

        env, n = self.env, len(self.agents)
        key, reset_key = jax.random.split(key)
        obs, state = env.reset(reset_key)
        init = get_heuristic_policy_initial_state()
        # its counter is a Python int: as a weakly typed array it would recompile every step
        policy_state = jax.tree.map(
            lambda x: jnp.stack([jnp.asarray(x, jnp.int32 if isinstance(x, int) else None)] * n), init
        )

        def observe(obs, state):
            return observe_team(env, self.agents, obs, state)

        def step(carry, _):
            key, obs, state, policy_state = carry
            o, s, m = observe(obs, state)
            key, (k_heur, k_rand, k_step) = step_keys(key)
            h, policy_state = jax.vmap(self._heuristic)(jax.random.split(k_heur, n), policy_state, o)
            r = jax.random.categorical(k_rand, jnp.where(m, 0.0, -jnp.inf), axis=-1)
            act = jnp.where(heuristic, available_or_noop(m, h), r).astype(jnp.int32)
            obs, state, reward, over, won = env_step(env, self.agents, k_step, state, act)
            return (key, obs, state, policy_state), (o, s, m, act, reward, over, won)

        (_, obs, state, _), (o, s, m, act, rew, over, won) = jax.lax.scan(
            step, (key, obs, state, policy_state), None, length=self.steps
        )
        o_last, s_last, m_last = observe(obs, state)
        return (
            jnp.concatenate([o, o_last[None]]),
            jnp.concatenate([s, s_last[None]]),
            jnp.concatenate([m, m_last[None]]),
            act,
            rew,
            over,
            won,
        )

    def collect(self, ids: np.ndarray, combos: list[dict[str, str]], seed: int, mix_by: str | None):
        """Episodes ``ids`` (at most ``batch``) with their per-agent levels, as ``add_episode`` kwargs."""

        pad = self.batch - len(ids)
        lanes = np.r_[ids, np.full(pad, ids[-1])]
        heuristic = np.array(
            [[c[a] == "heuristic" for a in self.agents] for c in combos] + [[False] * len(self.agents)] * pad
        )
        keys = episode_keys(seed, lanes)
        o, s, m, act, rew, over, won = (np.asarray(x) for x in self._run(keys, heuristic))
        for i, combo in enumerate(combos):
            ended = np.flatnonzero(over[i])
            T = int(ended[0]) + 1 if len(ended) else self.steps
            end = np.zeros(T, bool)
            end[-1] = True
            terminated = bool(len(ended))
            yield {
                "obs": {a: o[i, : T + 1, j].astype(np.float32) for j, a in enumerate(self.agents)},
                "actions": {a: act[i, :T, j].astype(np.int64) for j, a in enumerate(self.agents)},
                "rewards": rew[i, :T].astype(np.float64),
                "terminated": end if terminated else np.zeros(T, bool),
                "truncated": np.zeros(T, bool) if terminated else end,
                "state": s[i, : T + 1].astype(np.float32),
                "action_masks": {a: m[i, : T + 1, j] for j, a in enumerate(self.agents)},
                "behaviour": dict(combo),
                "seed": seed,  # with the episode id: its key is fold_in(PRNGKey(seed), id)
                "provenance": {"combo": dict(combo), "won": bool(terminated and won[i, T - 1])}
                | ({"mix_by": mix_by} if mix_by else {}),
            }


@functools.cache
def _evaluation_steps(map_name: str, agents: tuple[str, ...]):
    """The evaluator's jitted, vectorized functions for one map, compiled once per process (and batch size):
    ``start(keys)``, ``look(obs, state) -> (observations, masks)`` and ``step(key, state, act)``."""
    import jax

    env, agents = _env(map_name), list(agents)

    def start(key):
        key, reset_key = jax.random.split(key)
        obs, state = env.reset(reset_key)
        return key, obs, state

    def step(key, state, act):
        key, (_, _, k_step) = step_keys(key)  # the collector's schedule: its policies' keys go unused
        return (key, *env_step(env, agents, k_step, state, act))

    def look(obs, state):
        o, _, m = observe_team(env, agents, obs, state)
        return o, m

    return jax.jit(jax.vmap(start)), jax.jit(jax.vmap(look)), jax.jit(jax.vmap(step))


def evaluate_policy(
    task: Task, policy, episodes: int, seed: int, max_steps: int | None = None
) -> dict[str, np.ndarray]:
    """Run ``policy`` in ``episodes`` SMAX environments at once, one jitted, vectorized step at a time.

    ``policy(obs, masks)``: ``obs`` {agent: [E, O]} float32 and ``masks`` {agent: [E, K]} bool (the
    available actions) -> {agent: [E]} int actions. Episode ``k`` uses the collector's keys for
    episode ``k`` of ``seed``, so replaying a collected episode's actions reproduces it. An
    unavailable action is replaced by the no-op and counted. Returns ``returns`` [E], ``lengths`` [E],
    ``won`` [E] bool and ``unavailable`` (actions replaced).
    """
    import jax.numpy as jnp

    agents = list(task.agent_ids)
    steps = min(max_steps or MAX_STEPS, MAX_STEPS)
    start, look, step = _evaluation_steps(task.env["map"], tuple(agents))
    key, obs, state = start(episode_keys(seed, np.arange(episodes)))
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    won, running, unavailable = np.zeros(episodes, bool), np.ones(episodes, bool), 0
    for _ in range(steps):
        o, m = (np.array(x) for x in look(obs, state))  # writable copies: the policy may hand them to torch
        chosen = policy({a: o[:, j] for j, a in enumerate(agents)}, {a: m[:, j] for j, a in enumerate(agents)})
        act = np.stack([np.asarray(chosen[a], dtype=np.int64).reshape(episodes) for a in agents], 1)
        if ((act < 0) | (act >= m.shape[-1])).any():
            raise SchemaError(f"{task.name}: the policy chose actions outside 0..{m.shape[-1] - 1}")
        ok = np.take_along_axis(m, act[..., None], 2)[..., 0]
        unavailable += int((~ok)[running].sum())
        key, obs, state, reward, over, win = step(key, state, jnp.asarray(np.where(ok, act, NOOP), jnp.int32))
        reward, over, win = np.asarray(reward), np.asarray(over), np.asarray(win)
        returns[running] += reward[running]
        lengths[running] += 1
        won[running] = win[running]
        running &= ~over
        if not running.any():
            break
    return {"returns": returns, "lengths": lengths, "won": won, "unavailable": unavailable}


SMAX = SmaxFamily()
