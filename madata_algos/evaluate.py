"""Evaluation of decentralized policies in the real environment.

``K`` episodes run side by side, one :class:`~madata.envs.team.TeamEnv` each; every step
makes one batched policy call for all running episodes. Agent ``i``'s policy sees its
own local observations only. Episode ``k`` resets with seed ``seed + k``. Families that step
their environments in batches themselves (SMAX) run their own evaluator: the policy is then
called with the available actions too, ``policy(obs, masks)``, and the win rate is reported.
With ``with_state=True`` (MaMuJoCo-like families) the policy is called ``policy(obs, state)``
with the running episodes' global states [E, S]: centralized choices, for diagnosis only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from madata.envs.family import Task
from madata.envs.registry import get_task
from madata.errors import SchemaError
from madata.summary import normalized_score

# obs {agent: [E, o_i]} -> actions {agent: [E, d_i]} (int64 [E] for Discrete)
Policy = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class EvalResult:
    """Returns of ``episodes`` evaluation episodes; normalized by the task's reference scores when known."""

    task: str
    episodes: int
    seed: int
    mean_return: float
    std_return: float
    returns: list[float]
    lengths: list[int]
    mean_normalized: float | None
    std_normalized: float | None
    win_rate: float | None = None  # where episodes are won or lost (SMAX)
    note: str = ""  # what the numbers are not (SMAX: not SMAC numbers)
    unavailable_actions: int | None = None  # the policy's picks the environment could not take (replaced by no-ops)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(
    task: str | Task,
    policy: Policy,
    episodes: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    with_state: bool = False,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` in ``task`` at once; returns their statistics."""
    spec = get_task(task)
    if spec.family.batched:
        if with_state:
            raise SchemaError(f"{spec.name}: with_state applies to families that step one environment per episode")
        out = spec.family.evaluate_policy(spec, policy, episodes, seed, max_steps)
        res = _result(spec, episodes, seed, out["returns"], out["lengths"], float(out["won"].mean()))
        res.unavailable_actions = out["unavailable"]
        return res
    envs = [spec.team_env(max_steps) for _ in range(episodes)]
    try:
        f = envs[0].factorization
        first = [e.reset(seed + k) for k, e in enumerate(envs)]
        states, sources = np.stack([s for s, _ in first]), np.stack([src for _, src in first])  # [E, S], [E, D]
        returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            live = np.flatnonzero(running)
            obs = f.local_obs(sources[live])
            actions = policy(obs, states[live]) if with_state else policy(obs)
            joint = f.join_actions(actions)  # [E_live, A]
            for row, k in enumerate(live):
                states[k], sources[k], r, term, trunc = envs[k].step(joint[row])
                returns[k] += r
                lengths[k] += 1
                running[k] = not (term or trunc)
    finally:
        for e in envs:
            e.close()
    return _result(spec, episodes, seed, returns, lengths, None)


def _result(
    spec: Task, episodes: int, seed: int, returns: np.ndarray, lengths: np.ndarray, win_rate: float | None
) -> EvalResult:
    norm = normalized_score(returns, spec.reference_scores)
    return EvalResult(
        task=spec.name,
        episodes=episodes,
        seed=seed,
        mean_return=float(returns.mean()),
        std_return=float(returns.std()),
        returns=returns.tolist(),
        lengths=lengths.tolist(),
        mean_normalized=None if norm is None else float(norm.mean()),
        std_normalized=None if norm is None else float(norm.std()),
        win_rate=win_rate,
        note=spec.family.results_note,
    )
