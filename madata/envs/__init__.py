"""Environments madata collects from, grouped in task families, and the registry of task names."""

from madata.envs.family import Task, TaskFamily
from madata.envs.grid import NOOP_ACTION, GridWorld
from madata.envs.registry import FAMILIES, get_task, make_team_env, task_names
from madata.envs.team import env_specs

__all__ = [
    "FAMILIES",
    "NOOP_ACTION",
    "GridWorld",
    "Task",
    "TaskFamily",
    "env_specs",
    "get_task",
    "make_team_env",
    "task_names",
]
