"""The Section 2.3 grid: start, moves, goal, cliff, step cost, truncation, spaces."""

from __future__ import annotations

import numpy as np
import pytest

from madata.envs.grid import NOOP_ACTION, GridWorld
from madata.envs.registry import get_task
from madata.envs.team import env_specs
from madata.errors import MadataError, SchemaError, UnknownNameError
from madata.spaces import Box, Discrete

B, S, F = 0, 1, 2  # backward, stay, forward


def step(env, ax, ay):
    return env.step({"agent_0": ax, "agent_1": ay})


def test_reset_starts_lower_left():
    env = GridWorld()
    obs, infos = env.reset(seed=7)
    assert env.agents == ["agent_0", "agent_1"] == env.possible_agents
    for a in env.agents:
        assert obs[a].dtype == np.float32 and obs[a].tolist() == [0.0, 0.0]
    assert set(infos) == set(env.agents)
    assert env.state().tolist() == [0.0, 0.0] and env.state().dtype == np.float32
    assert env.seed == 7


def test_moves_along_own_axis_and_step_cost():
    env = GridWorld()
    env.reset()
    obs, rew, term, trunc, _ = step(env, F, S)
    assert obs["agent_0"].tolist() == [1.0, 0.0] and obs["agent_1"].tolist() == [1.0, 0.0]
    assert rew == {"agent_0": -1.0, "agent_1": -1.0}
    assert not any(term.values()) and not any(trunc.values())
    obs, *_ = step(env, S, F)
    assert obs["agent_0"].tolist() == [1.0, 1.0]
    obs, *_ = step(env, B, F)
    assert obs["agent_0"].tolist() == [0.0, 2.0]
    obs, *_ = step(env, NOOP_ACTION, NOOP_ACTION)
    assert obs["agent_0"].tolist() == [0.0, 2.0]
    assert env.state().tolist() == [0.0, 2.0]


def test_goal_gives_plus_ten_and_terminates():
    env = GridWorld()
    env.reset()
    returns = 0.0
    for ax, ay in [(F, F)] * 3 + [(F, S)] * 2:  # the shortest path: 5 joint steps to (5, 3)
        obs, rew, term, trunc, _ = step(env, ax, ay)
        returns += rew["agent_0"]
    assert obs["agent_0"].tolist() == [5.0, 3.0]
    assert rew == {"agent_0": 10.0, "agent_1": 10.0}
    assert all(term.values()) and not any(trunc.values())
    assert returns == 6.0
    assert env.agents == []
    with pytest.raises(MadataError, match="reset"):
        step(env, S, S)


@pytest.mark.parametrize(
    "moves, where", [([(B, S)], [-1, 0]), ([(S, B)], [0, -1]), ([(F, F)] * 4, [4, 4]), ([(F, S)] * 6, [6, 0])]
)
def test_leaving_grid_gives_minus_ten_and_terminates(moves, where):
    env = GridWorld()
    env.reset()
    for ax, ay in moves:
        obs, rew, term, trunc, _ = step(env, ax, ay)
    assert obs["agent_1"].tolist() == where  # the off-grid cell
    assert env.state().tolist() == where
    assert rew["agent_0"] == -10.0 and all(term.values()) and not any(trunc.values())
    box = env.observation_space("agent_0")
    assert all(lo <= v <= hi for lo, v, hi in zip(box.low, where, box.high, strict=True))


def test_truncates_after_thirty_steps():
    env = GridWorld()
    env.reset()
    for t in range(1, 31):
        obs, rew, term, trunc, _ = step(env, S, S)
        assert rew["agent_0"] == -1.0 and not any(term.values())
        assert all(trunc.values()) == (t == 30)
    assert env.agents == []


def test_goal_on_last_step_is_terminated_not_truncated():
    env = GridWorld()
    env.reset()
    for _ in range(25):
        step(env, S, S)
    for ax, ay in [(F, F)] * 3 + [(F, S)]:
        step(env, ax, ay)
    _, rew, term, trunc, _ = step(env, F, S)  # the 30th step reaches the goal
    assert env.t == 30 and rew["agent_0"] == 10.0 and all(term.values()) and not any(trunc.values())


def test_bad_actions():
    env = GridWorld()
    env.reset()
    with pytest.raises(SchemaError, match="one action per agent"):
        env.step({"agent_0": 1})
    with pytest.raises(SchemaError, match="action of agent_1 must be 0, 1 or 2"):
        step(env, 1, 3)
    with pytest.raises(UnknownNameError, match="agent_9"):
        env.action_space("agent_9")


def test_spaces_and_registry():
    env = get_task("grid").make_env()
    agents, state = env_specs(env)
    assert [a.id for a in agents] == list(get_task("grid").agent_ids)
    for a in agents:
        assert a.action_space == Discrete(3)
        assert a.observation_space == Box.make(-1.0, [6.0, 4.0], (2,))
    assert state == Box.make(-1.0, [6.0, 4.0], (2,))
    assert get_task("grid").env == {
        "id": "grid",
        "family": "grid",
        "size": [6, 4],
        "max_steps": 30,
        "default_action": 1,
    }


def test_unknown_task_lists_known():
    with pytest.raises(UnknownNameError, match=r"unknown task 'nope'; known tasks: .*grid"):
        get_task("nope")
