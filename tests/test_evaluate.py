"""Evaluation in the real environment with decentralized policies."""

from __future__ import annotations

import numpy as np
import pytest

from madata_algos.evaluate import evaluate


def test_grid_optimal_policy_scores_six():
    def policy(obs):
        y = obs["agent_1"][:, 1]
        return {"agent_0": np.full(len(y), 2), "agent_1": np.where(y < 3, 2, 1)}

    res = evaluate("grid", policy, episodes=4, seed=3)
    assert res.returns == [6.0] * 4 and res.lengths == [5] * 4 and res.mean_normalized is None


def _grid_optimal(obs):
    y = obs["agent_1"][:, 1]
    return {"agent_0": np.full(len(y), 2), "agent_1": np.where(y < 3, 2, 1)}


def test_with_state_hands_the_policy_each_running_episodes_global_state():
    """with_state=True: policy(obs, state) sees the global state of every running episode, step by step (the
    states an environment replaying the same actions goes through)."""
    from madata.envs.registry import get_task

    seen = []

    def policy(obs, state):
        seen.append(state.copy())
        return _grid_optimal(obs)

    res = evaluate("grid", policy, episodes=2, seed=3, with_state=True)
    assert res.returns == [6.0, 6.0] and len(seen) == 5
    env = get_task("grid").team_env(None)
    f = env.factorization
    for k in range(2):
        state, source = env.reset(3 + k)
        for t in range(5):
            np.testing.assert_array_equal(seen[t][k], state)
            joint = f.join_actions(_grid_optimal(f.local_obs(source[None])))
            state, source, *_ = env.step(joint[0])
    env.close()


def test_mamujoco_zero_actions_normalized():
    pytest.importorskip("gymnasium_robotics")
    seen = []

    def policy(obs):
        seen.append({a: o.shape for a, o in obs.items()})
        return {a: np.zeros((len(o), 3), np.float32) for a, o in obs.items()}

    res = evaluate("halfcheetah-2x3", policy, episodes=3, seed=0, max_steps=20)
    assert res.lengths == [20, 20, 20] and np.isfinite(res.mean_return)
    assert seen[0] == {"agent_0": (3, 12), "agent_1": (3, 12)}  # each agent: its own local observation
    ref = (-280.178953, 12135.0)
    assert res.mean_normalized == pytest.approx(100 * (res.mean_return - ref[0]) / (ref[1] - ref[0]))
