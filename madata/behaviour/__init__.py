"""Behaviour policies: what ``madata collect`` runs in each agent's seat.

A behaviour policy drives one agent and works on batches::

    policy = load_policy("grid", "random", "agent_0")
    actions = policy.act(obs, rng)   # obs [B, *obs_shape] -> actions [B, *act_shape]

Policies are grouped by **level** (``random`` now; ``medium``/``expert`` checkpoints per
task come later). A level may exist for only some tasks; :func:`available_levels` lists
those of a task. All randomness comes from the ``rng`` passed in, never from global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from madata.envs.registry import TaskInfo, env_specs, get_task
from madata.errors import UnknownNameError
from madata.spaces import Space


class BehaviourPolicy(Protocol):
    """One agent's behaviour policy. ``level`` is the label recorded in the episode table."""

    level: str

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``obs`` [B, *obs_shape] -> actions [B, *act_shape] (int64 [B] for Discrete)."""
        ...


@dataclass(frozen=True)
class Level:
    """A behaviour level: ``load(task, agent_id, action_space)`` builds the policy.

    ``tasks``: the task names it exists for (None: every task).
    """

    name: str
    load: Callable[[TaskInfo, str, Space], BehaviourPolicy]
    tasks: frozenset[str] | None = None


def _load_random(task: TaskInfo, agent_id: str, action_space: Space) -> BehaviourPolicy:
    from madata.behaviour.random import RandomPolicy

    return RandomPolicy(action_space)


LEVELS: dict[str, Level] = {"random": Level("random", _load_random)}


def available_levels(task: str) -> list[str]:
    """The behaviour levels that exist for ``task``, in registry order."""
    info = get_task(task)
    return [name for name, lv in LEVELS.items() if lv.tasks is None or info.name in lv.tasks]


def check_levels(task: str, levels: Iterable[str]) -> None:
    """Raise :class:`UnknownNameError` naming the first level that ``task`` lacks."""
    known = available_levels(task)
    for level in levels:
        if level not in known:
            raise UnknownNameError(
                f"unknown behaviour level {level!r} for task {task!r}; available levels: {', '.join(known)}"
            )


def load_policy(task: str, level: str, agent_id: str, action_space: Space | None = None) -> BehaviourPolicy:
    """The ``level`` behaviour policy of ``agent_id`` in ``task``.

    ``action_space`` saves building the env when the caller has it already.
    """
    info = get_task(task)
    check_levels(task, [level])
    if agent_id not in info.agent_ids:
        raise UnknownNameError(f"unknown agent {agent_id!r} for task {task!r}; agents: {', '.join(info.agent_ids)}")
    if action_space is None:
        env = info.make_env()
        try:
            agents, _ = env_specs(env)
        finally:
            env.close()
        action_space = next(a.action_space for a in agents if a.id == agent_id)
    return LEVELS[level].load(info, agent_id, action_space)


__all__ = ["LEVELS", "BehaviourPolicy", "Level", "available_levels", "check_levels", "load_policy"]
