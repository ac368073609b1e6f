"""Environments madata collects from, and the registry of named tasks."""

from madata.envs.grid import NOOP_ACTION, GridWorld
from madata.envs.registry import TASKS, TaskInfo, env_specs, get_task

__all__ = ["NOOP_ACTION", "TASKS", "GridWorld", "TaskInfo", "env_specs", "get_task"]
