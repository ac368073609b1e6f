"""Named tasks that ``madata collect`` can run: how to build each env and what to record about it.

A task's ``env`` dict is stored verbatim as the dataset's ``env`` metadata, so it holds
everything needed to rebuild the environment: ``id`` and ``family`` always, plus the
family's own arguments (grid: ``size``, ``max_steps``; MaMuJoCo, later: ``scenario``,
``agent_conf``, ``agent_obsk``). Factories import their simulator lazily, so optional
extras stay optional.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from madata.errors import SchemaError, UnknownNameError
from madata.schema import AgentSpec
from madata.spaces import Box, from_gymnasium

Family = Literal["grid", "mamujoco"]


@dataclass(frozen=True)
class TaskInfo:
    """One task: ``make_env()`` builds a fresh PettingZoo-style parallel env."""

    name: str
    family: Family
    agent_ids: tuple[str, ...]
    make_env: Callable[[], Any]
    env: dict[str, Any] = field(default_factory=dict)  # dataset `env` metadata: id, family, family kwargs
    reference_scores: dict[str, float] | None = None  # {"min": REF_MIN, "max": REF_MAX} or None
    description: str = ""


def _make_grid():
    from madata.envs.grid import GridWorld

    return GridWorld(width=6, height=4, max_steps=30)


TASKS: dict[str, TaskInfo] = {}


def register(info: TaskInfo) -> TaskInfo:
    """Add a task; its name must be new."""
    if info.name in TASKS:
        raise SchemaError(f"task {info.name!r} is already registered")
    TASKS[info.name] = info
    return info


register(
    TaskInfo(
        name="grid",
        family="grid",
        agent_ids=("agent_0", "agent_1"),
        make_env=_make_grid,
        env={"id": "grid", "family": "grid", "size": [6, 4], "max_steps": 30, "default_action": 1},  # 1 = stay
        reference_scores=None,
        description="two-agent navigation in the 6 x 4 grid of the CAST-BCQ paper, Section 2.3",
    )
)


# D4RL's reference scores (normalized score = 100 * (return - min) / (max - min))
D4RL_REF = {
    "halfcheetah": {"min": -280.178953, "max": 12135.0},
    "hopper": {"min": -20.272305, "max": 3234.3},
    "walker2d": {"min": 1.629008, "max": 4592.3},
}
MAMUJOCO_SCENARIOS = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d"}
MAMUJOCO_MAX_STEPS = 1000


def _mamujoco_factory(scenario: str, agent_conf: str, agent_obsk: int):
    def make():
        try:
            # gymnasium-robotics prints a notice about its Adroit tasks on import: not ours to show
            with contextlib.redirect_stderr(io.StringIO()):
                from gymnasium_robotics import mamujoco_v1
        except ImportError as e:
            raise SchemaError(
                "MaMuJoCo tasks need gymnasium-robotics and mujoco: pip install 'madata[mujoco]'"
            ) from e
        return mamujoco_v1.parallel_env(scenario, agent_conf, agent_obsk=agent_obsk)

    return make


def mamujoco_task_name(robot: str, agent_conf: str, agent_obsk: int = 1) -> str:
    """``halfcheetah-2x3``; ``halfcheetah-2x3-k0`` for another observation depth."""
    return f"{robot}-{agent_conf}" + ("" if agent_obsk == 1 else f"-k{agent_obsk}")


def register_mamujoco(robot: str, agent_conf: str, agent_obsk: int = 1) -> TaskInfo:
    """Register ``<robot>-<agent_conf>`` (e.g. halfcheetah-2x3; ``-k<agent_obsk>`` appended when
    agent_obsk != 1): MaMuJoCo's factorization of the single-agent ``<Scenario>-v5`` task,
    global state = the single-agent observation."""
    scenario = MAMUJOCO_SCENARIOS[robot]
    n_agents = int(agent_conf.split("x")[0]) if "x" in agent_conf else 1
    name = mamujoco_task_name(robot, agent_conf, agent_obsk)
    return register(
        TaskInfo(
            name=name,
            family="mamujoco",
            agent_ids=tuple(f"agent_{i}" for i in range(n_agents)),
            make_env=_mamujoco_factory(scenario, agent_conf, agent_obsk),
            env={
                "id": name,
                "family": "mamujoco",
                "scenario": scenario,
                "agent_conf": agent_conf,
                "agent_obsk": agent_obsk,
                "single_agent_env": f"{scenario}-v5",
                "max_steps": MAMUJOCO_MAX_STEPS,
            },
            reference_scores=D4RL_REF[robot],
            description=f"Multi-agent MuJoCo {scenario} {agent_conf} (gymnasium-robotics mamujoco_v1, agent_obsk={agent_obsk})",
        )
    )


for _robot, _conf in (("halfcheetah", "2x3"), ("hopper", "3x1"), ("walker2d", "2x3")):
    register_mamujoco(_robot, _conf)


def is_task(name: str) -> bool:
    return name in TASKS


def get_task(name: str) -> TaskInfo:
    """The registered task ``name``; an unknown name raises an error listing the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


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
