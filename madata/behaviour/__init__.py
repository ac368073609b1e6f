"""Behaviour policies: what ``madata collect`` runs for the team.

A behaviour policy is a *joint* (whole-team) policy. It maps a batch of global states
and noise to joint actions, and agent ``i`` takes its own part of the output, the
components at its factorization indices (:class:`madata.envs.team.Factorization`)::

    policy = load_policy("halfcheetah-2x3", "expert", team.factorization)
    joint = policy.act(state, noise)   # state [B, S], noise [B, A] -> joint actions [B, A]

This is how the paper's behaviour policies act: SAC policies of the whole robot, acting
for agent ``i`` "through agent i's part of the factorization". Output component ``j``
depends on the state and on ``noise[:, j]`` only, so mixing levels per agent needs no
extra randomness: the noise of each agent comes from its own stream.

Levels of a task: ``random`` (every agent uniform in its own action box; noise uniform
in [0, 1)) and, for MaMuJoCo tasks, every level with a checkpoint
``<checkpoint dir>/<task>/<level>.json`` (a SAC actor acting on the global state;
noise standard normal). The checkpoint directory is the ``checkpoint_dir`` argument,
else ``$MADATA_CHECKPOINT_DIR``, else the checkpoints shipped inside the package.

Policies are deterministic given their inputs: all randomness is the noise passed in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from madata.behaviour.checkpoint import CHECKPOINT_DIR, SacActor, load_checkpoint
from madata.behaviour.random import RandomPolicy, TeamRandomPolicy
from madata.envs.family import Task
from madata.envs.registry import get_task
from madata.errors import SchemaError, UnknownNameError

if TYPE_CHECKING:
    from madata.envs.team import Factorization

CHECKPOINT_ENV = "MADATA_CHECKPOINT_DIR"
RANDOM = "random"


class BehaviourPolicy(Protocol):
    """A joint policy. ``level`` is the label recorded per agent in the episode table."""

    level: str
    noise_dist: Literal["normal", "uniform"]  # the distribution `act` expects its noise from

    def act(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``state`` [B, S], ``noise`` [B, A] -> joint actions [B, A] float32; row ``b`` depends on row ``b`` only."""
        ...

    def describe(self) -> dict[str, Any]:
        """Plain-JSON facts for the dataset provenance (kind, checkpoint, weights digest, ...)."""
        ...


class SacPolicy:
    """A SAC checkpoint acting for the whole team: ``act(state [B, S], noise [B, A] | None) -> [B, A]``
    (:meth:`SacActor.act`, row by row so that an episode never depends on its batch)."""

    noise_dist = "normal"

    def __init__(self, actor: SacActor, level: str, source: str = ""):
        self.actor, self.level, self.source = actor, level, source

    def act(self, state: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        return self.actor.act(state, noise)

    def describe(self) -> dict[str, Any]:
        i = self.actor.info
        return {
            "kind": "sac",
            "checkpoint": self.source,
            "weights_sha256": weights_digest(self.actor),
            "checkpoint_level": i.level,
            "env_id": i.env_id,
            "hidden": list(i.hidden),
            "train_steps": i.train_steps,
            "seed": i.seed,
            "average_return": i.average_return,
        }

    def __repr__(self) -> str:
        return f"SacPolicy({self.level!r}, {self.source})"


def weights_digest(actor: SacActor) -> str:
    """SHA-256 of a checkpoint's weights (not of its file: .npz files carry timestamps)."""
    h = hashlib.sha256()
    for w, b in [*actor.layers, actor.mu, actor.log_std]:
        for a in (w, b):
            a = np.ascontiguousarray(a, dtype=np.float32)
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def resolve_checkpoint_dir(override: str | os.PathLike | None = None) -> Path:
    """Where checkpoints are looked up: ``override``, else ``$MADATA_CHECKPOINT_DIR``, else the packaged ones."""
    if override is not None:
        d, where = Path(override), "checkpoint_dir"
    elif os.environ.get(CHECKPOINT_ENV):
        d, where = Path(os.environ[CHECKPOINT_ENV]), f"${CHECKPOINT_ENV}"
    else:
        return CHECKPOINT_DIR
    if not d.is_dir():
        raise SchemaError(f"{where}: {d} is not a directory; it should hold <task>/<level>.json checkpoints")
    return d


def available_levels(task: str | Task, checkpoint_dir: str | os.PathLike | None = None) -> list[str]:
    """The behaviour levels of ``task``: ``random``, the family's built-in ones, then its checkpoint levels in
    name order."""
    task = get_task(task)
    levels = [RANDOM, *task.family.builtin_levels]
    if task.family.sac_checkpoints:
        d = resolve_checkpoint_dir(checkpoint_dir) / task.name
        if d.is_dir():
            levels += sorted(p.stem for p in d.glob("*.json") if p.stem != RANDOM and not p.name.startswith("."))
    return levels


def check_levels(task: str | Task, levels: Iterable[str], checkpoint_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`UnknownNameError` naming the first level that ``task`` lacks, and how to get it."""
    task = get_task(task)
    known = available_levels(task, checkpoint_dir)
    for level in levels:
        if level in known:
            continue
        msg = f"unknown behaviour level {level!r} for task {task.name!r}; available levels: {', '.join(known)}"
        if task.family.sac_checkpoints:
            d = resolve_checkpoint_dir(checkpoint_dir)
            msg += (
                f". No checkpoint {d / task.name / level}.json: train one with `madata behavior train {task.name} -o RUN "
                f"--snapshot {level}=STEP --export-to DIR` and pass --checkpoint-dir DIR (or set ${CHECKPOINT_ENV})"
            )
        raise UnknownNameError(msg)


def load_policy(
    task: str | Task, level: str, factorization: Factorization, checkpoint_dir: str | os.PathLike | None = None
) -> BehaviourPolicy:
    """The ``level`` joint policy of ``task`` for a team split by ``factorization``.

    A checkpoint must be of ``task`` and fit its global state and joint action.
    """
    task = get_task(task)
    check_levels(task, [level], checkpoint_dir)
    f = factorization
    if level == RANDOM:
        return TeamRandomPolicy(f.action_spaces, f.act_index, f.act_dim)
    name = task.name
    path = resolve_checkpoint_dir(checkpoint_dir) / name / f"{level}.json"
    actor = load_checkpoint(path)
    i = actor.info
    if i.task != name:
        raise SchemaError(
            f"{path}: this checkpoint was trained for task {i.task!r}, not {name!r}; "
            f"put a {name} checkpoint at {name}/{level}.json (`madata behavior train {name} ...`)"
        )
    low, high = f.joint_bounds()
    if i.obs_dim != f.state_space.shape[0] or i.act_dim != f.act_dim:
        raise SchemaError(
            f"{path}: checkpoint expects states of {i.obs_dim} and actions of {i.act_dim} values; "
            f"task {name} has {f.state_space.shape[0]} and {f.act_dim}"
        )
    if not (np.allclose(i.action_low, low) and np.allclose(i.action_high, high)):
        raise SchemaError(
            f"{path}: checkpoint action box {i.action_low}..{i.action_high} differs from the task's {low}..{high}"
        )
    return SacPolicy(actor, level, f"{name}/{level}.json")


__all__ = [
    "CHECKPOINT_ENV",
    "RANDOM",
    "BehaviourPolicy",
    "RandomPolicy",
    "SacPolicy",
    "TeamRandomPolicy",
    "available_levels",
    "check_levels",
    "resolve_checkpoint_dir",
    "load_policy",
    "weights_digest",
]
