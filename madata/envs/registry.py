"""Task names -> :class:`~madata.envs.family.Task` objects, asked of every task family in turn.

The families: the paper's grid world (:mod:`madata.envs.grid`), multi-agent MuJoCo
(:mod:`madata.envs.mamujoco`, every robot and factorization gymnasium-robotics offers) and
SMAX (:mod:`madata.envs.smax`, StarCraft-like unit fights in JAX). A
name is resolved once, where it enters (a command's argument, a dataset's ``env.id``),
and the Task object travels from there. Families import their simulators lazily, so
optional extras stay optional.
"""

from __future__ import annotations

import functools

from madata.envs.family import Task, TaskFamily
from madata.envs.grid import GRID
from madata.envs.mamujoco import MAMUJOCO
from madata.envs.smax import SMAX
from madata.errors import UnknownNameError

FAMILIES: list[TaskFamily] = [GRID, MAMUJOCO, SMAX]


def task_names() -> list[str]:
    """The names the families list (MaMuJoCo resolves more: other observation depths, many-segment robots)."""
    return [n for f in FAMILIES for n in f.names()]


@functools.cache
def _resolve(name: str) -> Task | None:
    for family in FAMILIES:
        task = family.resolve(name)
        if task is not None:
            return task
    return None


def get_task(task: str | Task) -> Task:
    """The Task called ``task`` (a Task passes through); an unknown name raises an error listing the known ones."""
    if isinstance(task, Task):
        return task
    found = _resolve(task) if isinstance(task, str) else None
    if found is None:
        raise UnknownNameError(
            f"unknown task {task!r}; known tasks: {', '.join(task_names())} "
            "(and MaMuJoCo's <robot>-<agent_conf>-k<depth>)"
        )
    return found


def is_task(name: str) -> bool:
    try:
        return _resolve(name) is not None if isinstance(name, str) else False
    except UnknownNameError:
        return False


def make_team_env(task: str | Task, max_steps: int | None = None):
    """A fresh :class:`~madata.envs.team.TeamEnv` of ``task`` (a name is resolved first)."""
    return get_task(task).team_env(max_steps)
