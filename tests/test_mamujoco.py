"""MaMuJoCo factorization: per-agent action assembly, local observations, ends; joint SAC policies."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from madata.behaviour import SacPolicy, load_policy  # noqa: E402
from madata.behaviour.checkpoint import SacActor, load_checkpoint  # noqa: E402
from madata.envs.mamujoco import MaMuJoCoTeamEnv  # noqa: E402
from madata.envs.registry import get_task, make_team_env  # noqa: E402
from tests.conftest import random_checkpoint  # noqa: E402

TASKS = ["halfcheetah-2x3", "hopper-3x1", "walker2d-2x3"]
# reference-facts.md: MaMuJoCo's per-agent action order (Walker2d is reversed within each agent)
ACT_INDEX = {
    "halfcheetah-2x3": {"agent_0": [0, 1, 2], "agent_1": [3, 4, 5]},
    "hopper-3x1": {"agent_0": [0], "agent_1": [1], "agent_2": [2]},
    "walker2d-2x3": {"agent_0": [2, 1, 0], "agent_1": [5, 4, 3]},
}


@pytest.mark.parametrize("task", TASKS)
def test_action_indices_are_mamujocos(task):
    team = make_team_env(task)
    f = team.factorization
    assert f.act_index_lists() == ACT_INDEX[task]
    for k, a in enumerate(f.agent_ids):  # the same as each partition node's act_ids
        assert f.act_index[a].tolist() == [node.act_ids for node in team.env.agent_action_partitions[k]]
    assert f.state_space.dtype == "float32" and all(a.observation_space.dtype == "float32" for a in f.agents)
    assert team.max_steps == 1000
    team.close()


@pytest.mark.parametrize("task", TASKS)
def test_assembled_actions_map_back_to_the_joint_action(task, tmp_path):
    random_checkpoint(tmp_path, task, "expert")
    team = make_team_env(task)
    f, env = team.factorization, team.env
    rng = np.random.default_rng(1)
    states = rng.standard_normal((16, f.state_space.shape[0])) * 2
    for level in ("expert", "random"):
        policy = load_policy(task, level, f, checkpoint_dir=tmp_path)
        noise = rng.standard_normal((16, f.act_dim)) if policy.noise_dist == "normal" else rng.random((16, f.act_dim))
        joint = policy.act(states, noise)  # (16, A)
        per_agent = f.split_actions(joint)
        np.testing.assert_array_equal(f.join_actions(per_agent), joint)
        for b in range(len(joint)):
            back = env.map_local_actions_to_global_action({a: per_agent[a][b] for a in f.agent_ids})
            np.testing.assert_array_equal(back, joint[b].astype(np.float64))
            theirs = env.map_global_action_to_local_actions(joint[b])
            for a in f.agent_ids:
                np.testing.assert_array_equal(theirs[a], per_agent[a][b])
    team.close()


@pytest.mark.parametrize("task", TASKS)
def test_local_obs_equal_the_parallel_envs(task):
    """source[obs_index] is bit for bit the parallel env's own per-agent observation, after reset and steps."""
    ours, via_env = make_team_env(task), MaMuJoCoTeamEnv(get_task(task).make_env(), None, "env")
    theirs = get_task(task).make_env()
    f = ours.factorization
    rng = np.random.default_rng(0)
    state_index_differs = 0  # what indexing the (velocity-clipped) global state would have got wrong
    steps, episode = 0, 0
    while steps < 400:
        seed = 100 + episode
        obs, _ = theirs.reset(seed=seed)
        state, source = ours.reset(seed)
        via_env.reset(seed)
        done = False
        while not done and steps < 400:
            np.testing.assert_array_equal(state, theirs.state())
            for a in f.agent_ids:
                np.testing.assert_array_equal(source[f.obs_index[a]], obs[a], err_msg=f"{task} {a} step {steps}")
                state_index_differs += not np.array_equal(state[f.obs_index[a]], obs[a])
            joint = rng.uniform(-1, 1, f.act_dim).astype(np.float32)
            obs, rew, term, trunc, _ = theirs.step(f.split_actions(joint))
            state, source, reward, terminated, truncated = ours.step(joint)
            _, env_source, *_ = via_env.step(joint)
            assert reward == rew["agent_0"] and terminated == term["agent_0"] and truncated == trunc["agent_0"]
            for a, o in f.local_obs(source).items():
                np.testing.assert_array_equal(o, via_env.factorization.local_obs(env_source)[a])
                assert o.dtype == np.float32
            done, steps = terminated or truncated, steps + 1
        episode += 1
    if task == "walker2d-2x3":  # Walker2d-v5 clips velocities to [-10, 10] in its observation, MaMuJoCo does not
        assert state_index_differs > 0
    for e in (ours, via_env, theirs):
        e.close()


def test_time_limit_truncates_falls_terminate():
    team = make_team_env("halfcheetah-2x3", max_steps=5)
    team.reset(0)
    ends = [team.step(np.zeros(6, np.float32))[3:] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]
    team.close()
    hopper = make_team_env("hopper-3x1")
    hopper.reset(0)
    rng = np.random.default_rng(0)
    for t in range(1000):  # noqa: B007 (t is checked below) random torques make the hopper fall within a few dozen steps
        *_, terminated, truncated = hopper.step(rng.uniform(-1, 1, 3).astype(np.float32))
        if terminated or truncated:
            break
    assert terminated and not truncated and t < 200
    hopper.close()


def test_sac_policy_is_row_invariant_and_matches_the_actor(tmp_path):
    js = random_checkpoint(tmp_path, "halfcheetah-2x3", "expert", hidden=(256, 256))
    actor = load_checkpoint(js)
    policy = SacPolicy(actor, "expert")
    rng = np.random.default_rng(0)
    states, noise = rng.standard_normal((40, 17)) * 3, rng.standard_normal((40, 6))
    batch = policy.act(states, noise)
    rows = np.concatenate([policy.act(states[i : i + 1], noise[i : i + 1]) for i in range(40)])
    np.testing.assert_array_equal(batch, rows)  # a row does not depend on the rest of its batch
    picked = [3, 17, 5, 39]
    np.testing.assert_array_equal(policy.act(states[picked], noise[picked]), batch[picked])
    np.testing.assert_allclose(batch, actor.act(states, noise), atol=1e-5)
    np.testing.assert_array_equal(policy.act(states[:1], noise[:1]), actor.act(states[:1], noise[:1]))
    np.testing.assert_allclose(policy.act(states), actor.act(states), atol=1e-5)  # mean action
    assert (
        isinstance(actor, SacActor)
        and policy.describe()["weights_sha256"] == SacPolicy(actor, "x").describe()["weights_sha256"]
    )


@pytest.mark.parametrize("task", TASKS)
def test_local_obs_equal_mamujocos_beyond_the_velocity_clip(task):
    """Hopper's MaMuJoCo observations clip velocities at +-10, Walker2d's do not: both are matched."""
    team = make_team_env(task)
    env, f = team.env, team.factorization
    env.reset(seed=1)
    u = env.single_agent_env.unwrapped
    u.set_state(u.data.qpos.copy(), np.linspace(-25, 25, u.model.nv))
    src = np.concatenate([u.data.qpos[team._skip :], u.data.qvel])
    mine = f.local_obs(src)
    for k, a in enumerate(env.possible_agents):
        np.testing.assert_array_equal(mine[a], np.asarray(env._get_obs_agent(k), dtype=np.float32), err_msg=a)
    team.close()
