"""The two-agent navigation grid of the CAST-BCQ paper, Section 2.3 (Figure 1a).

A robot starts in the lower-left cell (0, 0) of a 6 x 4 grid and must reach the goal in
the upper-right cell (5, 3) without leaving the grid ("falling off the cliff").
``agent_0`` moves it along x and ``agent_1`` along y; each picks one of
``0 = backward (-1)``, ``1 = stay``, ``2 = forward (+1)`` every step. Both agents see the
position ``(x, y)`` and share the team reward:

* +10 on reaching the goal (terminated),
* -10 on leaving the grid (terminated; the final observation is the off-grid cell),
* -1 for every other step; the 30th step, if not terminal, is truncated.

The API mimics a PettingZoo *parallel* environment without importing PettingZoo. The
dynamics are deterministic given the actions; the reset seed is only recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from madata.envs.family import Task, TaskFamily
from madata.errors import MadataError, SchemaError, UnknownNameError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete

if TYPE_CHECKING:
    from madata.envs.team import TeamEnv

BACKWARD, STAY, FORWARD = 0, 1, 2
NOOP_ACTION = STAY  # the default action a_i^d of CAST-BCQ's counterfactual baseline (Eq. 5)

GOAL_REWARD = 10.0
CLIFF_REWARD = -10.0
STEP_REWARD = -1.0


class GridWorld:
    """PettingZoo-style parallel env: ``reset``, ``step``, ``state``, per-agent spaces.

    ``width`` x ``height`` cells (x in 0..width-1, y in 0..height-1); the paper's grid is
    6 x 4 with at most 30 steps.
    """

    metadata = {"name": "grid_v0", "is_parallelizable": True}
    possible_agents = ["agent_0", "agent_1"]  # agent_0 moves along x, agent_1 along y

    def __init__(self, width: int = 6, height: int = 4, max_steps: int = 30):
        for name, v, lo in (("width", width, 2), ("height", height, 2), ("max_steps", max_steps, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise SchemaError(f"GridWorld {name}: expected an integer >= {lo}, got {v!r}")
        self.width, self.height, self.max_steps = width, height, max_steps
        self.start = np.array([0, 0], dtype=np.int64)
        self.goal = np.array([width - 1, height - 1], dtype=np.int64)
        self.agents: list[str] = []
        self.pos = self.start.copy()  # (x, y), int
        self.t = 0
        self.seed: int | None = None  # the last reset seed, recorded only
        self._obs_box = Box.make(-1.0, [width, height], (2,))  # off-grid cells included

    # ------------------------------------------------------------ spaces

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    def observation_space(self, agent: str) -> Box:
        self._check_agent(agent)
        return self._obs_box

    def action_space(self, agent: str) -> Discrete:
        self._check_agent(agent)
        return Discrete(3)

    def madata_agents(self) -> list[AgentSpec]:
        """The agents with their spaces, for :func:`madata.create`."""
        return [AgentSpec(a, self.observation_space(a), self.action_space(a)) for a in self.possible_agents]

    def madata_state_space(self) -> Box:
        """The global state: the position, like each agent's observation."""
        return self._obs_box

    # ------------------------------------------------------------ dynamics

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        self.seed = None if seed is None else int(seed)
        self.agents = list(self.possible_agents)
        self.pos = self.start.copy()
        self.t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        """Move by one joint action; returns ``(obs, rewards, terminations, truncations, infos)``."""
        if not self.agents:
            raise MadataError("GridWorld.step called on a finished episode; call reset() first")
        if set(actions) != set(self.agents):
            raise SchemaError(f"GridWorld.step: expected one action per agent {self.agents}, got {sorted(actions)}")
        move = np.zeros(2, dtype=np.int64)
        for axis, agent in enumerate(self.possible_agents):
            a = actions[agent]
            if np.ndim(a) != 0 or a not in (BACKWARD, STAY, FORWARD):
                raise SchemaError(f"GridWorld.step: action of {agent} must be 0, 1 or 2, got {a!r}")
            move[axis] = int(a) - 1
        self.pos = self.pos + move
        self.t += 1
        off_grid = not (0 <= self.pos[0] < self.width and 0 <= self.pos[1] < self.height)
        at_goal = bool(np.array_equal(self.pos, self.goal))
        if off_grid:
            reward = CLIFF_REWARD
        elif at_goal:
            reward = GOAL_REWARD
        else:
            reward = STEP_REWARD
        terminated = off_grid or at_goal
        truncated = not terminated and self.t >= self.max_steps
        obs = self._obs()
        agents = self.agents
        if terminated or truncated:
            self.agents = []
        return (
            obs,
            {a: reward for a in agents},
            {a: terminated for a in agents},
            {a: truncated for a in agents},
            {a: {} for a in agents},
        )

    def state(self) -> np.ndarray:
        """The position ``(x, y)`` as float32 [2]."""
        return self.pos.astype(np.float32)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ helpers

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: self.pos.astype(np.float32) for a in self.possible_agents}

    def _check_agent(self, agent: str) -> None:
        if agent not in self.possible_agents:
            raise UnknownNameError(f"unknown agent {agent!r}; GridWorld agents are {self.possible_agents}")


class GridFamily(TaskFamily):
    """The paper's grid world, one task: ``grid`` (6 x 4, 30 steps, the no-op `stay`)."""

    name = "grid"
    WIDTH, HEIGHT, MAX_STEPS = 6, 4, 30

    def names(self) -> list[str]:
        return ["grid"]

    def resolve(self, name: str) -> Task | None:
        if name != "grid":
            return None
        return Task(
            name="grid",
            family=self,
            agent_ids=tuple(GridWorld.possible_agents),
            env={
                "id": "grid",
                "family": self.name,
                "size": [self.WIDTH, self.HEIGHT],
                "max_steps": self.MAX_STEPS,
                "default_action": NOOP_ACTION,
            },
            description="two-agent navigation in the 6 x 4 grid of the CAST-BCQ paper, Section 2.3",
        )

    def make_env(self, task: Task) -> GridWorld:
        return GridWorld(width=self.WIDTH, height=self.HEIGHT, max_steps=self.MAX_STEPS)

    def team_env(self, task: Task, max_steps: int | None) -> TeamEnv:
        from madata.envs.team import ParallelTeamEnv

        return ParallelTeamEnv(self.make_env(task), task, max_steps)


GRID = GridFamily()
