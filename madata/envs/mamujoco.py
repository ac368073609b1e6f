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

import contextlib
import io
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from madata.envs.family import Task, TaskFamily
from madata.envs.team import Factorization
from madata.errors import SchemaError, UnknownNameError
from madata.schema import AgentSpec
from madata.spaces import Box, from_gymnasium

ObsPath = Literal["index", "env"]
VELOCITY_CLIP = 10.0  # the bound Hopper-v5/Walker2d-v5 (and MaMuJoCo's Hopper) clip velocities to
MAX_STEPS = 1000  # the -v5 robots' time limit
# robot (task-name prefix) -> MaMuJoCo scenario, and the agent_confs MaMuJoCo offers for it: the
# `partitioning` branches of get_parts_and_edges() in gymnasium_robotics/envs/multiagent_mujoco/obsk.py (1.4.2);
# "NxK" stands for any N agents of K segments each
SCENARIOS = {
    "halfcheetah": ("HalfCheetah", ("2x3", "6x1")),
    "hopper": ("Hopper", ("3x1",)),
    "walker2d": ("Walker2d", ("2x3",)),
    "ant": ("Ant", ("2x4", "2x4d", "4x2")),
    "humanoid": ("Humanoid", ("9|8",)),
    "humanoidstandup": ("HumanoidStandup", ("9|8",)),
    "reacher": ("Reacher", ("2x1",)),
    "pusher": ("Pusher", ("3p",)),
    "swimmer": ("Swimmer", ("2x1",)),
    "coupledhalfcheetah": ("CoupledHalfCheetah", ("1p1",)),
    "manysegmentswimmer": ("ManySegmentSwimmer", ("NxK",)),
    "manysegmentant": ("ManySegmentAnt", ("NxK",)),
}
# D4RL's reference scores (normalized score = 100 * (return - min) / (max - min))
D4RL_REF = {
    "halfcheetah": {"min": -280.178953, "max": 12135.0},
    "hopper": {"min": -20.272305, "max": 3234.3},
    "walker2d": {"min": 1.629008, "max": 4592.3},
}


@dataclass(frozen=True)
class MaMuJoCoFactorization(Factorization):
    """MaMuJoCo's factorization: local observations index the raw ``[qpos[skipped:], qvel]`` source and
    clip, where MaMuJoCo clips, to +-VELOCITY_CLIP (``obs_clip[agent]`` bool [o_i], measured by :func:`probe_clipping`)."""

    obs_clip: dict[str, np.ndarray] | None = None

    def local_obs(self, source: np.ndarray, dtype: str | None = None) -> dict[str, np.ndarray]:
        out = {}
        for a in self.agents:
            x = source[..., self.obs_index[a.id]]
            if self.obs_clip is not None and self.obs_clip[a.id].any():
                m = self.obs_clip[a.id]
                x = x.copy()
                x[..., m] = np.clip(x[..., m], -VELOCITY_CLIP, VELOCITY_CLIP)
            out[a.id] = x.astype(dtype or a.observation_space.dtype)
        return out


def factorization(env: Any, obs_path: ObsPath = "index") -> MaMuJoCoFactorization:
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
    return MaMuJoCoFactorization(agents, state_space, act_index, obs_index, act_dim, source_dim, obs_clip)


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
    if state.shape != raw.shape or not np.array_equal(
        np.where(state != raw, np.clip(raw, -VELOCITY_CLIP, VELOCITY_CLIP), raw), state
    ):
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
        self.obs_path = obs_path
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


# MuJoCo warnings that concern the robots' shipped XML, not the user: gymnasium's half_cheetah.xml uses
# a deprecated compiler attribute, and MuJoCo prints the warning for every copy of the env it builds
# (16 lines for one default collect) and appends it to MUJOCO_LOG.TXT in the current directory
_NOT_THE_USERS = ("compiler attribute 'settotalmass' is deprecated",)


def _quiet_mujoco() -> None:
    """Route MuJoCo's warnings through Python's ``warnings`` (shown once each), dropping the ones about the
    shipped robot files; installed once, and only when no one else has set a handler."""
    import warnings

    import mujoco

    if mujoco.get_mju_user_warning() is not None:
        return

    def handler(msg: str) -> None:
        if not any(s in msg for s in _NOT_THE_USERS):
            warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)


def _observes_joints_only(env: Any) -> bool:
    """Whether the robot's observation is ``[qpos[skipped:], qvel]`` only (then local observations are indexed)."""
    struct = env.single_agent_env.unwrapped.observation_structure
    return env.observation_factorization is not None and not any(
        v for k, v in struct.items() if k not in ("skipped_qpos", "qpos", "qvel")
    )


class MaMuJoCoFamily(TaskFamily):
    """Multi-agent MuJoCo (gymnasium-robotics ``mamujoco_v1``): every robot and factorization it offers.

    Task names: ``<robot>-<agent_conf>`` with MaMuJoCo's observation depth 1, ``<robot>-<agent_conf>-k<obsk>``
    for another depth, e.g. ``halfcheetah-2x3``, ``halfcheetah-6x1-k0``, ``ant-4x2``, ``manysegmentant-2x3``
    (``SCENARIOS`` lists the robots and their agent_confs). The global state is the single-agent observation.
    Behaviour levels beyond ``random`` are SAC checkpoints of the whole robot.
    """

    name = "mamujoco"
    sac_checkpoints = True
    _PATTERN = re.compile(r"^(?P<robot>[a-z0-9]+)-(?P<conf>[0-9a-z|]+?)(?:-k(?P<obsk>[0-9]+))?$")

    def names(self) -> list[str]:
        return [f"{r}-{c}" for r, (_, confs) in SCENARIOS.items() for c in confs if c != "NxK"]

    def resolve(self, name: str) -> Task | None:
        m = self._PATTERN.match(name) if isinstance(name, str) else None
        if m is None or m["robot"] not in SCENARIOS:
            return None
        robot, conf = m["robot"], m["conf"]
        scenario, confs = SCENARIOS[robot]
        if conf not in confs and not ("NxK" in confs and re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", conf)):
            raise UnknownNameError(
                f"task {name!r}: MaMuJoCo splits {scenario} as {', '.join(confs)}, not {conf!r}; "
                f"tasks are <robot>-<agent_conf>[-k<obsk>], robots: {', '.join(SCENARIOS)}"
            )
        obsk = 1 if m["obsk"] is None else int(m["obsk"])
        if m["obsk"] is not None and obsk == 1:
            raise UnknownNameError(f"task {name!r}: observation depth 1 is the default; call it {robot}-{conf}")
        n_agents = _agents_of(conf)
        return Task(
            name=name,
            family=self,
            agent_ids=tuple(f"agent_{i}" for i in range(n_agents)),
            env={
                "id": name,
                "family": self.name,
                "scenario": scenario,
                "agent_conf": conf,
                "agent_obsk": obsk,
                "single_agent_env": f"{scenario}-v5" if robot in _GYM_ROBOTS else scenario,
                "max_steps": MAX_STEPS,
            },
            reference_scores=D4RL_REF.get(robot),
            description=f"Multi-agent MuJoCo {scenario} {conf} (gymnasium-robotics mamujoco_v1, agent_obsk={obsk})",
        )

    def make_env(self, task: Task) -> Any:
        try:
            # gymnasium-robotics prints a notice about its Adroit tasks on import: not ours to show
            with contextlib.redirect_stderr(io.StringIO()):
                from gymnasium_robotics import mamujoco_v1
        except ImportError as e:
            raise SchemaError("MaMuJoCo tasks need gymnasium-robotics and mujoco: pip install 'madata[mujoco]'") from e
        _quiet_mujoco()
        e = task.env
        return mamujoco_v1.parallel_env(e["scenario"], e["agent_conf"], agent_obsk=e["agent_obsk"])

    def team_env(self, task: Task, max_steps: int | None) -> MaMuJoCoTeamEnv:
        env = self.make_env(task)
        try:
            return MaMuJoCoTeamEnv(env, max_steps, "index" if _observes_joints_only(env) else "env")
        except BaseException:
            env.close()
            raise


_GYM_ROBOTS = {
    "halfcheetah",
    "hopper",
    "walker2d",
    "ant",
    "humanoid",
    "humanoidstandup",
    "reacher",
    "pusher",
    "swimmer",
}


def _agents_of(conf: str) -> int:
    """Agents of an agent_conf: "2x3" -> 2, "9|8" -> 2, "3p" -> 3, "1p1" -> 2."""
    if "x" in conf:
        return int(conf.split("x")[0])
    if "|" in conf:
        return len(conf.split("|"))
    if conf == "1p1":
        return 2
    return int(conf.rstrip("p"))


MAMUJOCO = MaMuJoCoFamily()
