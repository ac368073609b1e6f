"""MaMuJoCo for madata: its factorization as index arrays, and a fast team env for the collector.

A MaMuJoCo task splits one single-agent ``<Scenario>-v5`` robot among agents. Both
directions of that split are index arrays, taken from MaMuJoCo's own mapping:

* **actions**: agent ``i``'s action is the joint (single-agent) action at
  ``act_index[i]``, derived by ``env.map_global_action_to_local_actions(arange(A))``.
  The order is MaMuJoCo's, not contiguous: Walker2d 2x3 is ``[2, 1, 0]`` / ``[5, 4, 3]``.
* **observations**: agent ``i``'s local observation is ``source[obs_index[i]]`` with
  ``obs_index`` = ``env.observation_factorization`` (what
  ``map_global_state_to_local_observations`` uses) and ``source`` the *unclipped*
  ``[qpos[skipped:], qvel]`` read from the simulator.

Why not index the global state itself: Hopper-v5 and Walker2d-v5 clip the velocities
of their single-agent observation (``env.state()``) to [-10, 10]; MaMuJoCo builds each
agent's observation from the raw ``data.qvel``, clipping it for Hopper but not for
Walker2d. Which components each side clips is measured on the live env
(:func:`probe_clipping`) and applied to ``source[obs_index]``, so the local observations
equal the parallel env's own (tests/test_mamujoco.py checks it, at speeds beyond the
clip too); for HalfCheetah (no clipping) source and state are equal.

:class:`MaMuJoCoTeamEnv` steps the underlying single-agent env with a joint action and
returns ``(state, source, reward, terminated, truncated)``: no per-agent dicts per step.
Falls (Hopper/Walker2d unhealthy) are ``terminated``; the time limit is ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from madata.envs.team import VELOCITY_CLIP, Factorization
from madata.errors import SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, from_gymnasium

ObsPath = Literal["index", "env"]


def factorization(env: Any, obs_path: ObsPath = "index") -> Factorization:
    """The :class:`Factorization` of a built MaMuJoCo parallel env, from MaMuJoCo's own mapping.

    ``obs_path="index"``: the source is ``[qpos[skipped:], qvel]`` (unclipped) and
    ``obs_index`` MaMuJoCo's ``observation_factorization``; ``"env"``: the source is the
    concatenation of the env's own per-agent observations (slower, for factorizations
    whose observations hold more than joint positions and velocities).
    """
    single = env.single_agent_env
    act_dim = int(single.action_space.shape[0])
    local = env.map_global_action_to_local_actions(np.arange(act_dim))
    act_index = {a: np.asarray(local[a], dtype=np.int64) for a in env.possible_agents}
    agents = tuple(
        AgentSpec(
            a, Box.make(-np.inf, np.inf, env.observation_space(a).shape, "float32"), from_gymnasium(env.action_space(a))
        )
        for a in env.possible_agents
    )
    state_dim = int(single.observation_space.shape[0])
    if obs_path == "index":
        struct = single.unwrapped.observation_structure
        extra = {k: v for k, v in struct.items() if k not in ("skipped_qpos", "qpos", "qvel") and v}
        if extra or env.observation_factorization is None:
            raise SchemaError(
                f"{env.single_agent_env.spec.id}: observations hold {sorted(extra)} besides qpos/qvel; "
                "use obs_path='env' for this factorization"
            )
        obs_index = {a: np.asarray(env.observation_factorization[a], dtype=np.int64) for a in env.possible_agents}
        source_dim = state_dim
        obs_clip = probe_clipping(env, obs_index).local_clipped
    elif obs_path == "env":
        sizes = [agent.observation_space.shape[0] for agent in agents]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        obs_index = {a.id: np.arange(starts[k], starts[k + 1]) for k, a in enumerate(agents)}
        source_dim = int(starts[-1])
        obs_clip = None
    else:
        raise SchemaError(f"obs_path must be 'index' or 'env', got {obs_path!r}")
    state_space = Box.make(-np.inf, np.inf, (state_dim,), "float32")
    return Factorization(agents, state_space, act_index, obs_index, act_dim, source_dim, obs_clip)


@dataclass(frozen=True)
class Clipping:
    """Which components each side clips to +-VELOCITY_CLIP, measured on the live env.

    ``state_clipped`` bool [S]: in the single-agent observation (the global state);
    ``local_clipped[agent]`` bool [o_i]: in MaMuJoCo's local observation of that agent.
    ``skip``, ``nq``, ``nv``: the observation leaves out ``qpos[:skip]``; model sizes.
    """

    skip: int
    nq: int
    nv: int
    state_clipped: np.ndarray
    local_clipped: dict[str, np.ndarray]


def probe_clipping(env: Any, obs_index: dict[str, np.ndarray]) -> Clipping:
    """Put the robot in a state whose every position and velocity is far outside +-VELOCITY_CLIP
    and compare the env's observations with the raw ``[qpos[skip:], qvel]``.

    Measured, not assumed: Hopper-v5 and Walker2d-v5 clip velocities in the single-agent
    observation; MaMuJoCo clips Hopper's local observations too but not Walker2d's.
    Leaves the env in that state: reset it afterwards.
    """
    u = env.single_agent_env.unwrapped
    env.reset(seed=0)
    skip = int(u.observation_structure["skipped_qpos"])
    nq, nv = int(u.model.nq), int(u.model.nv)
    qpos = np.asarray(u.init_qpos, dtype=np.float64).copy()
    qpos[skip:] = (3 * VELOCITY_CLIP + np.arange(nq - skip)) * (-1.0) ** np.arange(nq - skip)
    qvel = (2 * VELOCITY_CLIP + np.arange(nv)) * (-1.0) ** (np.arange(nv) + 1)  # all distinct
    u.set_state(qpos, qvel)
    raw = np.concatenate([u.data.qpos[skip:], u.data.qvel])
    state = np.asarray(u._get_obs(), dtype=np.float64)
    if state.shape != raw.shape or not np.array_equal(np.where(state != raw, np.clip(raw, -VELOCITY_CLIP, VELOCITY_CLIP), raw), state):
        raise SchemaError(
            f"{u.spec.id}: its observation is not [qpos[{skip}:], qvel] (clipped to +-{VELOCITY_CLIP:g} or not); "
            "madata cannot split it by indexing"
        )
    local = {}
    for k, a in enumerate(env.possible_agents):
        theirs = np.asarray(env._get_obs_agent(k), dtype=np.float64)
        vals = raw[obs_index[a]]
        clipped = theirs != vals
        if not np.array_equal(np.where(clipped, np.clip(vals, -VELOCITY_CLIP, VELOCITY_CLIP), vals), theirs):
            raise SchemaError(f"{u.spec.id}: MaMuJoCo's observation of {a} is not an indexed (clipped) raw state")
        local[a] = clipped
    return Clipping(skip, nq, nv, state != raw, local)


class MaMuJoCoTeamEnv:
    """One MaMuJoCo env stepped through its single-agent env with joint actions.

    ``reset(seed) -> (state [S] float64, source [D] float64)``;
    ``step(joint [A]) -> (state, source, reward, terminated, truncated)``. The joint
    action is cast to float64, as ``map_local_actions_to_global_action`` does, so
    replaying the stored float32 actions through the parallel env gives the same
    rewards. ``truncated`` is set after ``max_steps`` steps unless the step terminated.
    """

    def __init__(self, env: Any, max_steps: int | None = None, obs_path: ObsPath = "index"):
        self.env = env
        self.factorization = factorization(env, obs_path)
        self._single = env.single_agent_env.unwrapped
        limit = env.single_agent_env.spec.max_episode_steps
        self.max_steps = int(min(x for x in (limit, max_steps) if x is not None))
        self._skip = int(self._single.observation_structure["skipped_qpos"])
        self._obs_path = obs_path
        self._t = 0

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        state, _ = self._single.reset(seed=int(seed))
        self._t = 0
        return state, self._source()

    def step(self, joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
        state, reward, terminated, _, _ = self._single.step(np.asarray(joint, dtype=np.float64))
        self._t += 1
        terminated = bool(terminated)
        return state, self._source(), float(reward), terminated, not terminated and self._t >= self.max_steps

    def _source(self) -> np.ndarray:
        if self._obs_path == "index":
            data = self._single.data
            return np.concatenate((data.qpos[self._skip :], data.qvel))
        return np.concatenate([self.env._get_obs_agent(k) for k in range(len(self.env.possible_agents))])

    def close(self) -> None:
        self.env.close()
