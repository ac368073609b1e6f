"""Tasks and task families: one object per kind of environment, not a string compared in five places.

A :class:`TaskFamily` (the grid, MaMuJoCo, ...) knows which task names it owns, how to build
their environments, how to step them as a team (:class:`~madata.envs.team.TeamEnv`) and
where its behaviour policies come from. A :class:`Task` is one resolved name: everything
collectors, converters, evaluators and trainers need, with its family attached. Names are
resolved once, where they enter (``madata.envs.registry.get_task``), and the Task object
is passed along from there.

Adding a family means writing one subclass of :class:`TaskFamily` in its own module and
listing it in ``madata/envs/registry.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from madata.errors import UnknownNameError

if TYPE_CHECKING:
    from madata.envs.team import TeamEnv
    from madata.schema import AgentSpec
    from madata.spaces import Box


@dataclass(frozen=True)
class Task:
    """One task of a family. ``env`` is stored verbatim as a dataset's ``env`` metadata: ``id``,
    ``family``, ``max_steps`` and the family's own arguments, everything needed to rebuild the env."""

    name: str
    family: TaskFamily
    agent_ids: tuple[str, ...]
    env: dict[str, Any] = field(default_factory=dict)
    reference_scores: dict[str, float] | None = None  # {"min": REF_MIN, "max": REF_MAX} (D4RL's convention)
    description: str = ""

    @property
    def max_steps(self) -> int | None:
        """The task's own time limit (steps), None when the env has none."""
        return self.env.get("max_steps")

    @property
    def default_action(self) -> int | None:
        """The no-op of discrete tasks (CAST-BCQ's default action a^d), None where there is none."""
        return self.env.get("default_action")

    def make_env(self) -> Any:
        """A fresh environment (the family's own API; PettingZoo-style for most)."""
        return self.family.make_env(self)

    def team_env(self, max_steps: int | None = None) -> TeamEnv:
        """A fresh :class:`~madata.envs.team.TeamEnv`, optionally with a shorter time limit."""
        return self.family.team_env(self, max_steps)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, family={self.family.name})"


class TaskFamily(ABC):
    """A kind of task. Subclasses set ``name`` and implement :meth:`names`, :meth:`resolve`,
    :meth:`make_env` and :meth:`team_env`."""

    name: str = ""
    # True: behaviour levels beyond `random` are SAC checkpoints of the whole team acting on the global
    # state (``<checkpoint dir>/<task>/<level>.json``, trained by `madata behavior train`)
    sac_checkpoints: bool = False
    # levels the family ships besides `random` (SMAX: its built-in heuristic)
    builtin_levels: tuple[str, ...] = ()
    # True: the family steps its environments in batches itself (SMAX, in JAX): it overrides :meth:`spec`,
    # implements ``run_episodes(plan, start, stop)`` (the episodes of a madata.collect.Plan as
    # DatasetWriter.add_episode arguments) and ``evaluate_policy``, and has no TeamEnv
    batched: bool = False
    # said beside every evaluation result of the family's tasks (SMAX: its numbers are not SMAC's)
    results_note: str = ""
    # True: the global state is stored as the environment gives it, far from unit scale (SMAX: positions in
    # map units, weapon cooldowns that drift below zero); training standardizes it with the data's statistics
    raw_state: bool = False

    @abstractmethod
    def names(self) -> list[str]:
        """The task names this family lists (it may resolve more, e.g. parametrized ones)."""

    @abstractmethod
    def resolve(self, name: str) -> Task | None:
        """The Task called ``name`` if this family owns the name, else None; a malformed name of
        this family raises a madata error saying what the family accepts."""

    @abstractmethod
    def make_env(self, task: Task) -> Any:
        """A fresh environment of ``task`` (the family's own API)."""

    @abstractmethod
    def team_env(self, task: Task, max_steps: int | None) -> TeamEnv:
        """A fresh TeamEnv of ``task`` with its time limit, or ``max_steps`` when shorter."""

    def spec(self, task: Task) -> tuple[list[AgentSpec], Box]:
        """The agents' spaces and the global state's, as the task's datasets store them (its team env's)."""
        env = self.team_env(task, None)
        try:
            return list(env.factorization.agents), env.factorization.state_space
        finally:
            env.close()

    def describe_level(self, level: str) -> str:
        """What one of :attr:`builtin_levels` is, for `madata behavior list` and a dataset's provenance."""
        raise UnknownNameError(f"{self.name} tasks have no built-in level {level!r}")

    def __repr__(self) -> str:
        return f"<task family {self.name}>"
