"""Write -> read gives back identical arrays, for random heterogeneous specs (property tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import madata
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete
from tests.conftest import random_episode


@st.composite
def dataset_specs(draw):
    n = draw(st.integers(1, 4))
    discrete = draw(st.booleans())
    agents = []
    for i in range(n):
        obs_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        dtype = draw(st.sampled_from(["float32", "float64"]))
        act = (
            Discrete(draw(st.integers(2, 5)), draw(st.integers(0, 1)))
            if discrete
            else Box.make(-1, 1, (draw(st.integers(1, 4)),), dtype)
        )
        agents.append(AgentSpec(f"a{i}", Box.make(-np.inf, np.inf, obs_shape, dtype), act))
    lengths = draw(st.lists(st.integers(1, 25), min_size=1, max_size=8))
    ends = draw(st.lists(st.sampled_from(["terminated", "truncated"]), min_size=len(lengths), max_size=len(lengths)))
    return dict(
        agents=agents,
        lengths=lengths,
        ends=ends,
        state_dim=draw(st.sampled_from([None, 1, 6])),
        agent_rewards=draw(st.booleans()),
        action_masks=discrete and draw(st.booleans()),
        chunk_rows=draw(st.integers(1, 17)),
        commit_every=draw(st.integers(0, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dataset_specs())
def test_roundtrip(case):
    rng = np.random.default_rng(case["seed"])
    agents = case["agents"]
    eps = [
        random_episode(agents, T, rng, end, case["state_dim"], case["agent_rewards"], case["action_masks"])
        for T, end in zip(case["lengths"], case["ends"], strict=True)
    ]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ds"
        state_space = Box.make(-np.inf, np.inf, (case["state_dim"],)) if case["state_dim"] else None
        with madata.create(
            path,
            agents,
            state_space=state_space,
            agent_rewards=case["agent_rewards"],
            action_masks=case["action_masks"],
            chunk_rows=case["chunk_rows"],
            commit_every=case["commit_every"],
        ) as w:
            for ep in eps:
                w.add_episode(**ep)
        ds = madata.open(path)
        assert madata.verify(path).ok
        assert ds.num_episodes == len(eps)
        assert ds.num_transitions == sum(case["lengths"])
        for i, ep in enumerate(eps):
            got = ds.episode(i)
            for a in agents:
                np.testing.assert_array_equal(got.obs[a.id], ep["obs"][a.id])
                np.testing.assert_array_equal(got.actions[a.id], ep["actions"][a.id])
                assert got.obs[a.id].dtype == np.dtype(a.observation_space.dtype)
            np.testing.assert_array_equal(got.rewards, ep["rewards"])
            np.testing.assert_array_equal(got.terminated, ep["terminated"])
            np.testing.assert_array_equal(got.truncated, ep["truncated"])
            if case["state_dim"]:
                np.testing.assert_array_equal(got.state, ep["state"])
            if case["agent_rewards"]:
                for a in agents:
                    np.testing.assert_array_equal(got.agent_rewards[a.id], ep["agent_rewards"][a.id])
            if case["action_masks"]:
                for a in agents:
                    np.testing.assert_array_equal(got.action_masks[a.id], ep["action_masks"][a.id])
            assert got.info["end"] == ("terminated" if ep["terminated"][-1] else "truncated")
            assert got.info["return"] == np.sum(ep["rewards"])

        # derived next observations equal the true ones at every step, boundaries included
        tr = ds.transitions()
        expect = {k: [] for k in tr}
        for ep in eps:
            T = len(ep["rewards"])
            for a in agents:
                expect[f"obs/{a.id}"].append(ep["obs"][a.id][:T])
                expect[f"next_obs/{a.id}"].append(ep["obs"][a.id][1:])
                expect[f"action/{a.id}"].append(ep["actions"][a.id])
                if case["agent_rewards"]:
                    expect[f"agent_reward/{a.id}"].append(ep["agent_rewards"][a.id])
                if case["action_masks"]:
                    expect[f"action_mask/{a.id}"].append(ep["action_masks"][a.id][:T])
                    expect[f"next_action_mask/{a.id}"].append(ep["action_masks"][a.id][1:])
            if case["state_dim"]:
                expect["state"].append(ep["state"][:T])
                expect["next_state"].append(ep["state"][1:])
            for k in ("reward", "terminated", "truncated"):
                expect[k].append(ep[{"reward": "rewards"}.get(k, k)])
        for k, parts in expect.items():
            np.testing.assert_array_equal(tr[k], np.concatenate(parts), err_msg=k)


def test_transitions_selection_and_extra_fields(small_dataset):
    path, agents, eps = small_dataset
    ds = madata.open(path)
    sel = ds.select(behaviour={"agent_0": "expert"})
    ids = sel.episode_ids
    assert list(ids) == [i for i in range(len(eps)) if i & 1]
    tr = sel.transitions(fields=["obs", "next_obs", "episode_id", "timestep"], agents=["agent_1"])
    assert set(tr) == {"obs/agent_1", "next_obs/agent_1", "episode_id", "timestep"}
    exp_next = np.concatenate([eps[i]["obs"]["agent_1"][1:] for i in ids])
    np.testing.assert_array_equal(tr["next_obs/agent_1"], exp_next)
    np.testing.assert_array_equal(tr["timestep"], np.concatenate([np.arange(len(eps[i]["rewards"])) for i in ids]))
    rets = np.array([eps[i]["rewards"].sum() for i in range(len(eps))])
    hi = ds.select(min_return=float(np.median(rets)))
    assert set(hi.episode_ids) == set(np.flatnonzero(rets >= np.median(rets)))
    assert ds.episodes.to_pandas().shape[0] == len(eps)
    assert sel.episode(0).id == ids[0]


def test_resume_appends_without_loss(tmp_path, small_dataset):
    path, agents, eps = small_dataset
    rng = np.random.default_rng(1)
    extra = [random_episode(agents, T, rng, state_dim=11) for T in (3, 40)]
    w = madata.DatasetWriter.resume(path)
    for ep in extra:
        w.add_episode(**ep)
    w.close()
    ds = madata.open(path)
    assert ds.num_episodes == len(eps) + 2
    np.testing.assert_array_equal(ds.episode(-1).obs["agent_1"], extra[1]["obs"]["agent_1"])
    np.testing.assert_array_equal(ds.episode(3).state, eps[3]["state"])
    assert madata.verify(path).ok
