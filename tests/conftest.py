"""Shared builders for synthetic datasets with known content."""

from __future__ import annotations

import numpy as np
import pytest

import madata
from madata.behaviour.checkpoint import CheckpointInfo, save_checkpoint
from madata.envs.registry import get_task
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete


def hetero_agents() -> list[AgentSpec]:
    """Hopper-3x1-like heterogeneous agents (local observations of 8, 9 and 8 values) plus a discrete one."""
    return [
        AgentSpec("agent_0", Box.make(-np.inf, np.inf, (8,)), Box.make(-1, 1, (1,))),
        AgentSpec("agent_1", Box.make(-np.inf, np.inf, (9,)), Box.make(-1, 1, (1,))),
        AgentSpec("agent_2", Box.make(-10, 10, (8,)), Discrete(3)),
    ]


def random_episode(
    agents,
    T: int,
    rng: np.random.Generator,
    end: str = "terminated",
    state_dim: int | None = None,
    agent_rewards: bool = False,
    action_masks: bool = False,
) -> dict:
    """Arguments for ``DatasetWriter.add_episode`` with random content of the right shapes."""

    def inside(space, x):  # a dataset's values lie in its spaces
        return np.clip(x, np.reshape(space.low, space.shape), np.reshape(space.high, space.shape)).astype(space.dtype)

    obs = {a.id: inside(a.observation_space, rng.standard_normal((T + 1, *a.observation_space.shape))) for a in agents}
    actions = {}
    masks = {}
    for a in agents:
        sp = a.action_space
        if isinstance(sp, Discrete):
            actions[a.id] = rng.integers(sp.start, sp.start + sp.n, T)
            m = rng.random((T + 1, sp.n)) < 0.7
            m[np.arange(T), actions[a.id] - sp.start] = True  # the taken action is always allowed
            masks[a.id] = m
        else:
            actions[a.id] = rng.uniform(-1, 1, (T, *sp.shape)).astype(sp.dtype)
    term = np.zeros(T, bool)
    trunc = np.zeros(T, bool)
    (term if end == "terminated" else trunc)[-1] = True
    ep = dict(obs=obs, actions=actions, rewards=rng.standard_normal(T), terminated=term, truncated=trunc)
    if state_dim:
        ep["state"] = rng.standard_normal((T + 1, state_dim)).astype("float32")
    if agent_rewards:
        ep["agent_rewards"] = {a.id: rng.standard_normal(T) for a in agents}
    if action_masks:
        ep["action_masks"] = masks
    return ep


def write(path, agents, episodes, chunk_rows=16, commit_every=3, state_dim=None, **kw):
    with madata.create(
        path,
        agents,
        state_space=Box.make(-np.inf, np.inf, (state_dim,)) if state_dim else None,
        chunk_rows=chunk_rows,
        commit_every=commit_every,
        **kw,
    ) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(
                **ep, behaviour={a.id: ("medium", "expert")[(i >> k) & 1] for k, a in enumerate(agents)}, seed=i
            )
    return path


def random_checkpoint(root, task: str, level: str, hidden=(32, 32), seed: int = 0, of_task: str | None = None):
    """Save a SAC checkpoint with random weights for ``task`` at ``root/task/level`` (``of_task``: what it claims)."""
    from madata.envs.registry import make_team_env

    team = make_team_env(task)
    f = team.factorization
    team.close()
    S, A = f.state_space.shape[0], f.act_dim
    rng = np.random.default_rng(seed)
    dims = [S, *hidden]
    w = {}
    for i in range(len(hidden)):
        w[f"w{i}"] = rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])
        w[f"b{i}"] = rng.standard_normal(dims[i + 1]) * 0.1
    w["mu_w"], w["mu_b"] = rng.standard_normal((hidden[-1], A)) / np.sqrt(hidden[-1]), np.zeros(A)
    w["log_std_w"], w["log_std_b"] = rng.standard_normal((hidden[-1], A)) * 0.01, np.full(A, -1.0)
    info = CheckpointInfo(
        task=of_task or task,
        env_id=get_task(task).env["single_agent_env"],
        level=level,
        obs_dim=S,
        act_dim=A,
        hidden=list(hidden),
        action_low=[-1.0] * A,
        action_high=[1.0] * A,
        train_steps=1000,
        seed=seed,
    )
    return save_checkpoint(root / task / level, info, w)


def killed_at_episode(n: int, body: str) -> None:
    """Run ``body`` (Python source) in a new process whose ``n``-th ``DatasetWriter.add_episode`` call exits
    at once with code 9 (``os._exit``: no cleanup, no commit), and check that it died there."""
    import subprocess
    import sys
    import textwrap

    prelude = textwrap.dedent(f"""
        import os
        from madata.writer import DatasetWriter
        real, calls = DatasetWriter.add_episode, [0]
        def dying(self, *a, **k):
            calls[0] += 1
            if calls[0] == {n}:
                os._exit(9)
            return real(self, *a, **k)
        DatasetWriter.add_episode = dying
    """)
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr


@pytest.fixture
def small_dataset(tmp_path):
    """A committed heterogeneous dataset: 12 episodes, lengths 1..30, chunk_rows 16, with state."""
    rng = np.random.default_rng(0)
    agents = hetero_agents()
    lengths = [1, 5, 30, 16, 2, 17, 1, 9, 30, 4, 12, 7]
    eps = [
        random_episode(agents, T, rng, ("terminated", "truncated")[i % 2], state_dim=11) for i, T in enumerate(lengths)
    ]
    path = write(tmp_path / "ds", agents, eps, state_dim=11)
    return path, agents, eps
