"""Teams as one environment: a joint action in, the global state and every agent's
observation source out. The collector and the evaluators step :class:`TeamEnv` objects,
which each task family builds (:meth:`madata.envs.family.Task.team_env`).

:class:`Factorization` says how a joint action and an observation source split into the
agents' parts, as index arrays: MaMuJoCo's (``madata.envs.mamujoco``) comes from
MaMuJoCo's own mapping; a PettingZoo-style parallel env's (the grid) lays the agents'
parts end to end (:class:`ParallelTeamEnv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from madata.envs.family import Task
from madata.errors import SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete, Space, from_gymnasium


@dataclass(frozen=True)
class Factorization:
    """How a team's joint action and observation source split into the agents' parts.

    ``act_index[agent]`` int64 [d_i]: agent component ``j`` is joint component ``act_index[agent][j]``.
    ``obs_index[agent]`` int64 [o_i]: the agent's local observation is ``source[obs_index[agent]]``.
    ``agents`` carry the dataset spaces (float32 observation boxes); ``state_space`` the global state's.
    A Discrete agent owns one joint component holding its integer action.
    """

    agents: tuple[AgentSpec, ...]
    state_space: Box
    act_index: dict[str, np.ndarray]
    obs_index: dict[str, np.ndarray]
    act_dim: int  # A: length of the joint action
    source_dim: int  # D: length of the observation source vector

    def __post_init__(self) -> None:
        joint = np.sort(np.concatenate([self.act_index[a.id] for a in self.agents]))
        if not np.array_equal(joint, np.arange(self.act_dim)):
            raise SchemaError(
                f"action factorization {self.act_index_lists()} must use every joint component 0..{self.act_dim - 1} once"
            )
        for a in self.agents:
            n = int(np.prod(a.action_space.shape, dtype=np.int64))
            if len(self.act_index[a.id]) != n:
                raise SchemaError(f"{a.id}: {len(self.act_index[a.id])} action indices for an action of size {n}")
            if len(self.obs_index[a.id]) != a.observation_space.shape[0]:
                raise SchemaError(f"{a.id}: observation indices do not match its observation space")

    @property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    @property
    def action_spaces(self) -> dict[str, Space]:
        return {a.id: a.action_space for a in self.agents}

    def act_index_lists(self) -> dict[str, list[int]]:
        return {a: v.tolist() for a, v in self.act_index.items()}

    def joint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each joint action component's bounds, float64 [A] each: a Box agent's own bounds, a Discrete
        agent's first and last action."""
        low, high = np.zeros(self.act_dim), np.zeros(self.act_dim)
        for a in self.agents:
            sp, idx = a.action_space, self.act_index[a.id]
            if isinstance(sp, Box):
                low[idx], high[idx] = np.ravel(sp.low), np.ravel(sp.high)
            else:
                low[idx], high[idx] = sp.start, sp.start + sp.n - 1
        return low, high

    def split_actions(self, joint: np.ndarray) -> dict[str, np.ndarray]:
        """Joint actions [..., A] -> each agent's actions [..., *act_shape] in its space's dtype."""
        out = {}
        for a in self.agents:
            part = joint[..., self.act_index[a.id]]
            out[a.id] = part.reshape((*joint.shape[:-1], *a.action_space.shape)).astype(a.action_space.dtype)
        return out

    def join_actions(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        """Each agent's actions [..., *act_shape] -> joint actions [..., A] (float32)."""
        first = self.agents[0]
        lead = np.shape(actions[first.id])[: np.ndim(actions[first.id]) - len(first.action_space.shape)]
        joint = np.zeros((*lead, self.act_dim), dtype=np.float32)
        for a in self.agents:
            joint[..., self.act_index[a.id]] = np.asarray(actions[a.id]).reshape(*lead, -1)
        return joint

    def local_obs(self, source: np.ndarray, dtype: str | None = None) -> dict[str, np.ndarray]:
        """Observation sources [..., D] -> each agent's local observations [..., o_i] (``dtype``, default the spaces')."""
        return {a.id: source[..., self.obs_index[a.id]].astype(dtype or a.observation_space.dtype) for a in self.agents}


class TeamEnv(Protocol):
    """One environment stepped with joint actions.

    ``reset(seed) -> (state [S], source [D])``; ``step(joint [A]) -> (state, source,
    reward, terminated, truncated)``; each agent's local observation is
    ``factorization.local_obs(source)``. ``truncated`` marks the time limit of
    ``max_steps`` steps (or the env's own), ``terminated`` a true end.
    """

    factorization: Factorization
    max_steps: int

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]: ...

    def step(self, joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]: ...

    def close(self) -> None: ...


class ParallelTeamEnv:
    """A PettingZoo-style parallel env (madata's grid) as a :class:`TeamEnv`.

    The joint action is the agents' actions laid end to end (a Discrete agent's
    integer is one component), the source their observations laid end to end, the
    state ``env.state()``.
    """

    def __init__(self, env: Any, task: Task, max_steps: int | None = None):
        agents, state_space = env_specs(env)
        if state_space is None:
            raise SchemaError(f"task {task.name}: the collector records a global state, but the env has no state()")
        limit = task.max_steps
        if limit is None and max_steps is None:
            raise SchemaError(f"task {task.name}: no time limit known; pass max_steps")
        self.env, self.task = env, task
        self.max_steps = int(min(x for x in (limit, max_steps) if x is not None))
        sizes = [1 if isinstance(a.action_space, Discrete) else math.prod(a.action_space.shape) for a in agents]
        obs_sizes = [math.prod(a.observation_space.shape) for a in agents]
        act_start, obs_start = np.cumsum([0, *sizes]), np.cumsum([0, *obs_sizes])
        self.factorization = Factorization(
            agents=tuple(AgentSpec(a.id, _float32(a.observation_space), a.action_space) for a in agents),
            state_space=_float32(state_space),
            act_index={a.id: np.arange(act_start[k], act_start[k + 1]) for k, a in enumerate(agents)},
            obs_index={a.id: np.arange(obs_start[k], obs_start[k + 1]) for k, a in enumerate(agents)},
            act_dim=int(act_start[-1]),
            source_dim=int(obs_start[-1]),
        )
        self._t = 0

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        obs, _ = self.env.reset(seed=int(seed))
        self._t = 0
        return np.array(self.env.state(), dtype=np.float64), self._source(obs)

    def step(self, joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
        actions = self.factorization.split_actions(joint)
        actions = {a: (int(v) if v.ndim == 0 else v) for a, v in actions.items()}
        obs, rew, terms, truncs, _ = self.env.step(actions)
        team = {float(r) for r in rew.values()}
        if len(team) != 1:  # cooperative tasks give every agent the team reward
            raise SchemaError(
                f"task {self.task.name}: agents got different rewards {rew}; madata.collect records one team reward"
            )
        self._t += 1
        terminated = any(bool(v) for v in terms.values())
        truncated = not terminated and (any(bool(v) for v in truncs.values()) or self._t >= self.max_steps)
        return np.array(self.env.state(), dtype=np.float64), self._source(obs), team.pop(), terminated, truncated

    def _source(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(obs[a.id], dtype=np.float64).ravel() for a in self.factorization.agents])

    def close(self) -> None:
        self.env.close()


def env_specs(env: Any) -> tuple[list[AgentSpec], Box | None]:
    """The agents (with madata spaces) and the global state space of a built env.

    Envs of madata's own (the grid) describe themselves (``madata_agents``,
    ``madata_state_space``); other PettingZoo envs have their gymnasium spaces converted.
    """
    if hasattr(env, "madata_agents"):
        state = env.madata_state_space() if hasattr(env, "madata_state_space") else None
        return list(env.madata_agents()), state
    agents = [
        AgentSpec(a, from_gymnasium(env.observation_space(a)), from_gymnasium(env.action_space(a)))
        for a in env.possible_agents
    ]
    state = from_gymnasium(env.state_space) if getattr(env, "state_space", None) is not None else None
    if state is not None and not isinstance(state, Box):
        raise SchemaError(f"{type(env).__name__}: the global state space must be a Box, got {type(state).__name__}")
    return agents, state


def _float32(space: Box) -> Box:
    return Box(space.shape, space.low, space.high, "float32")
