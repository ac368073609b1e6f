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
