"""MaMuJoCo's split of a single-agent robot, as arrays a converter can apply to a million rows.

:func:`mamujoco_split` builds the MaMuJoCo env of ``(robot, agent_conf, agent_obsk)`` once
and reads off everything a converter needs:

* the per-agent action index arrays and local-observation index arrays
  (:class:`~madata.envs.team.Factorization`, from MaMuJoCo's own mapping);
* which components of the single-agent observation are clipped to [-10, 10]
  (Hopper-v5 and Walker2d-v5 clip their velocities), and which components of each
  agent's local observation MaMuJoCo clips. These are *measured*, not assumed: the
  robot is put in a state whose every position and velocity lies far outside
  [-10, 10], and MaMuJoCo's own ``_get_obs_agent`` is compared with the raw simulator
  values. The result for gymnasium-robotics 1.4.2: HalfCheetah clips nothing; Hopper
  clips every velocity both in the single-agent observation and in MaMuJoCo's local
  observations; Walker2d clips every velocity in the single-agent observation but
  MaMuJoCo's local observations use the raw ones.

So a local observation is computed exactly from the raw simulator vector
``[qpos[skipped:], qvel]`` (:meth:`MaMuJoCoSplit.local_from_source`), and from the
(clipped) single-agent observation (:meth:`MaMuJoCoSplit.local_from_state`) exactly
except where a component that MaMuJoCo reads raw sits at the clip bound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from madata.envs.family import Task
from madata.envs.mamujoco import (
    D4RL_REF,
    SCENARIOS,
    VELOCITY_CLIP,
    MaMuJoCoFactorization,
    factorization,
    probe_clipping,
)
from madata.envs.registry import get_task
from madata.errors import SchemaError, UnknownNameError

CLIP = VELOCITY_CLIP
# D4RL's robots and the agent_confs MaMuJoCo offers for them
AGENT_CONFS: dict[str, tuple[str, ...]] = {robot: SCENARIOS[robot][1] for robot in D4RL_REF}


def parse_robot(robot: str) -> str:
    if robot not in AGENT_CONFS:
        raise UnknownNameError(f"unknown robot {robot!r}; D4RL has {', '.join(AGENT_CONFS)}")
    return robot


def parse_agent_conf(robot: str, agent_conf: str) -> str:
    valid = AGENT_CONFS[parse_robot(robot)]
    if agent_conf not in valid:
        every = "; ".join(f"{r}: {'/'.join(c)}" for r, c in AGENT_CONFS.items())
        raise UnknownNameError(
            f"unknown agent_conf {agent_conf!r} for {robot}; MaMuJoCo offers {', '.join(valid)} for it (all: {every})"
        )
    return agent_conf


def parse_agent_obsk(agent_obsk) -> int:
    if isinstance(agent_obsk, bool) or not isinstance(agent_obsk, (int, np.integer)) or agent_obsk < 0:
        raise SchemaError(
            f"agent_obsk: expected an integer >= 0 (observation depth in the joint graph), got {agent_obsk!r}"
        )
    return int(agent_obsk)


def task_of(robot: str, agent_conf: str, agent_obsk: int = 1) -> Task:
    """The MaMuJoCo task of ``(robot, agent_conf, agent_obsk)``: ``halfcheetah-2x3``, ``halfcheetah-6x1-k0``, ..."""
    robot = parse_robot(robot)
    agent_conf = parse_agent_conf(robot, agent_conf)
    agent_obsk = parse_agent_obsk(agent_obsk)
    return get_task(f"{robot}-{agent_conf}" + ("" if agent_obsk == 1 else f"-k{agent_obsk}"))


@dataclass(frozen=True)
class MaMuJoCoSplit:
    """One MaMuJoCo task's split, as index arrays and clip masks.

    ``factorization``: agents, ``act_index[agent]`` [d_i] and ``obs_index[agent]`` [o_i]
    (into the state layout ``[qpos[skipped_qpos:], qvel]``, S components).
    ``state_clipped`` bool [S]: components the single-agent observation clips to +-CLIP.
    ``local_clipped[agent]`` bool [o_i]: components MaMuJoCo clips in that agent's observation.
    """

    robot: str
    task: Task
    factorization: MaMuJoCoFactorization
    skipped_qpos: int
    nq: int
    nv: int
    state_clipped: np.ndarray
    local_clipped: dict[str, np.ndarray]

    @property
    def agent_ids(self) -> list[str]:
        return self.factorization.agent_ids

    @property
    def state_dim(self) -> int:
        return self.factorization.state_space.shape[0]

    @property
    def act_dim(self) -> int:
        return self.factorization.act_dim

    @property
    def single_agent_env(self) -> str:
        return self.task.env["single_agent_env"]

    @property
    def loses_raw_velocities(self) -> bool:
        """True when some agent observes raw a component the single-agent observation clips (Walker2d)."""
        return any(
            (self.state_clipped[self.factorization.obs_index[a]] & ~m).any() for a, m in self.local_clipped.items()
        )

    def describe(self) -> str:
        return f"{self.robot} {self.task.env['agent_conf']} ({self.single_agent_env}, agent_obsk={self.task.env['agent_obsk']})"

    def source(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Raw simulator vectors [N, S] from qpos [N, nq] and qvel [N, nv] (float64)."""
        return np.concatenate(
            [np.asarray(qpos, np.float64)[:, self.skipped_qpos :], np.asarray(qvel, np.float64)], axis=1
        )

    def state_from_source(self, source: np.ndarray) -> np.ndarray:
        """What the single-agent env observes for raw vectors [N, S]: clipped where it clips."""
        out = np.array(source, dtype=np.float64)
        out[:, self.state_clipped] = np.clip(out[:, self.state_clipped], -CLIP, CLIP)
        return out

    def local_from_source(self, source: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
        """Each agent's local observations [N, o_i] from raw vectors [N, S]: exactly MaMuJoCo's."""
        return self.factorization.local_obs(source, dtype)

    def local_from_state(self, state: np.ndarray, dtype: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Local observations [N, o_i] from single-agent observations [N, S], and a bool [N] of
        the rows that may differ from MaMuJoCo's: a component MaMuJoCo reads raw but the state
        clips sits at +-CLIP (its raw value is unknown). Every other row is exact."""
        out = {}
        unsure = np.zeros(len(state), dtype=bool)
        for a in self.agent_ids:
            idx = self.factorization.obs_index[a]
            x = state[:, idx]
            m = self.local_clipped[a]
            if m.any():
                x = x.copy()
                x[:, m] = np.clip(x[:, m], -CLIP, CLIP)
            lost = self.state_clipped[idx] & ~m  # clipped in the state, raw for MaMuJoCo
            if lost.any():
                unsure |= (np.abs(x[:, lost]) >= CLIP).any(axis=1)
            out[a] = np.ascontiguousarray(x, dtype=dtype)
        return out, unsure


@functools.cache
def mamujoco_split(robot: str, agent_conf: str, agent_obsk: int = 1) -> MaMuJoCoSplit:
    """Build the MaMuJoCo env once and measure its split (see the module docstring)."""
    task = task_of(robot, agent_conf, agent_obsk)
    env = task.make_env()
    try:
        f = factorization(env, "index")
        c = probe_clipping(env, f.obs_index)
    finally:
        env.close()
    return MaMuJoCoSplit(robot, task, f, c.skip, c.nq, c.nv, c.state_clipped, c.local_clipped)
