"""Behaviour types recovered without labels, and the team-versus-agent test, on data whose truth is known."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from madata.diagnostics.types import (
    _Mixture,
    adjusted_rand_index,
    agent_types,
    behaviour_types,
    multi_information,
    other_episode_neighbours,
    sample_steps,
)

mujoco = pytest.mark.skipif(importlib.util.find_spec("gymnasium_robotics") is None, reason="needs madata[mujoco]")


def test_adjusted_rand_index_by_hand():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0  # the same partition, other names
    assert adjusted_rand_index(["a", "a", "b", "b"], [0, 0, 1, 2]) == pytest.approx(4 / 7)  # worked out in the docs
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 2, 4000), rng.integers(0, 2, 4000))) < 0.01  # chance: about 0
    assert adjusted_rand_index(["x"] * 5, [0] * 5) == 1.0  # one group each: identical


def test_multi_information_is_zero_for_independent_and_h_for_identical_types():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 20000)
    assert multi_information(np.stack([a, rng.integers(0, 2, 20000)], 1)) < 1e-3
    t = np.repeat([0, 1], 500)
    assert multi_information(np.stack([t, t, t], 1)) == pytest.approx(2 * math.log(2))  # sum H(T_i) - H(T) = 3h - h


def test_sample_steps_takes_the_first_steps_then_random_ones():
    episode = np.repeat([0, 1, 2], [10, 3, 50])
    rows = sample_steps(episode, steps=6, early=4, rng=np.random.default_rng(0))
    assert rows[:6].tolist()[:4] == [0, 1, 2, 3] and len(rows[:6]) == 6 and np.all(np.diff(rows) > 0)
    assert rows[6:9].tolist() == [10, 11, 12]  # a 3-step episode gives all it has
    assert rows[9:13].tolist() == [13, 14, 15, 16] and len(rows) == 15 and set(rows[13:]) <= set(range(17, 63))


def test_neighbours_come_from_other_episodes_only():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((300, 3))
    episode = np.repeat(np.arange(30), 10)
    z[:10] = 0.0  # one episode sits on a single point: its own rows are its nearest
    nbr, valid = other_episode_neighbours(z, episode, k=8)
    assert nbr.shape == (300, 8) and valid.all()
    assert not (episode[nbr] == episode[:, None]).any()
    d = np.linalg.norm(z[nbr] - z[:, None], axis=2)
    assert np.all(np.diff(d, axis=1) >= -1e-12)  # nearest first


# ---------------------------------------------------------------- synthetic: two policies per agent


def synthetic(coordinated: bool, episodes: int = 120, T: int = 60, seed: int = 0):
    """Two agents on a 2-d state; agent i's type (0 or 1) picks its policy tanh(W s) for a whole episode.
    Team-level: both agents share the episode's type; per-agent: each draws its own."""
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(7).standard_normal((2, 2, 2)) * 2  # [type, action, state]
    types = rng.integers(0, 2, (episodes, 2))
    if coordinated:
        types[:, 1] = types[:, 0]
    s = rng.uniform(-1, 1, (episodes * T, 2))
    episode = np.repeat(np.arange(episodes), T)
    feats = {}
    for i in range(2):
        Wi = W[types[episode, i]]  # [N, 2, 2]
        feats[f"agent_{i}"] = np.tanh(np.einsum("nas,ns->na", Wi, s)) + 0.1 * rng.standard_normal((len(s), 2))
    labels = {f"agent_{i}": [("medium", "expert")[t] for t in types[:, i]] for i in range(2)}
    return s, feats, episode, labels


@pytest.mark.parametrize("coordinated", [False, True])
def test_types_are_recovered_and_the_test_tells_team_from_agent_mixing(coordinated):
    out = behaviour_types(*synthetic(coordinated)[:3], labels=synthetic(coordinated)[3], permutations=199, seed=0)
    for a in ("agent_0", "agent_1"):
        assert out["agents"][a]["types"] == 2 and out["agents"][a]["ari_vs_labels"] > 0.95, out["agents"][a]
    if coordinated:
        assert out["test"]["p"] <= 0.01 and out["verdict"].startswith("team-level")
        assert out["test"]["statistic"] == pytest.approx(math.log(2), abs=0.05)
        assert min(out["team"]["ari_vs_labels"].values()) > 0.95
    else:
        assert out["test"]["p"] > 0.05 and out["verdict"].startswith("per-agent") and out["team"] is None


def test_one_policy_gives_one_type_and_no_test():
    s, feats, episode, _ = synthetic(True)
    one = {a: np.tanh(s @ np.ones((2, 2))) + 0.1 * np.random.default_rng(3).standard_normal(s.shape) for a in feats}
    out = behaviour_types(s, one, episode, seed=0)
    assert [v["types"] for v in out["agents"].values()] == [1, 1] and out["test"] is None
    assert out["verdict"].startswith("one behaviour type per agent")
    assert out["agents"]["agent_0"]["tried"][0]["types"] == 2  # a second type was tried and refused


def test_a_split_is_searched_from_given_types():
    """agent_types tries the other agents' types as starts: with no random starts it finds agent_1's split
    only from them (and keeps it only because held-out steps gain from it)."""
    s, feats, episode, labels = synthetic(True, episodes=200)
    truth = np.array([lab == "expert" for lab in labels["agent_0"]], dtype=np.int64)
    rng = np.random.default_rng(0)
    rows = sample_steps(episode, 48, 32, rng)
    qep = episode[rows]
    nbr, valid = other_episode_neighbours(s[rows], qep, 32)
    y = feats["agent_1"][rows]
    mix = _Mixture((y - y.mean(0)) / y.std(0), qep, nbr, valid, 200)
    halves = (np.arange(len(rows)) - np.searchsorted(qep, qep)) % 2
    assert agent_types(mix, halves, 4, 0, rng)["K"] == 1  # nothing to start from
    found = agent_types(mix, halves, 4, 0, rng, seeded=[truth])
    assert found["K"] == 2 and adjusted_rand_index(found["types"], truth) == 1.0
    shuffled = agent_types(mix, halves, 4, 0, rng, seeded=[np.random.default_rng(1).permutation(truth)])
    assert adjusted_rand_index(shuffled["types"], truth) > 0.95  # EM moves from a wrong start to the split


def test_an_agent_that_random_starts_miss_is_searched_from_the_others_types():
    """A weak split of agent_1 that follows the team's type: with one random start (seed 2) its own search
    finds one type, and the search started from agent_0's types finds two."""
    s, feats, episode, labels = synthetic(True, episodes=200)
    t = np.array([lab == "expert" for lab in labels["agent_0"]])[episode]
    noise = 0.5 * np.random.default_rng(4).standard_normal(s.shape)
    feats["agent_1"] = np.tanh(s @ np.ones((2, 2))) + 0.22 * t[:, None] + noise
    out = behaviour_types(s, feats, episode, labels=labels, seed=2, restarts=1, permutations=99)
    one = out["agents"]["agent_1"]
    assert one["seeded_from_other_agents"] and one["types"] == 2 and one["ari_vs_labels"] > 0.6
    assert out["test"]["p"] <= 0.01


def test_too_few_episodes_are_refused_with_a_reason():
    s, feats, episode, _ = synthetic(False, episodes=6)
    assert "at least 10" in behaviour_types(s, feats, episode)["skipped"]


def test_same_seed_same_types():
    args = synthetic(False)[:3]
    a, b = behaviour_types(*args, seed=3), behaviour_types(*args, seed=3)
    assert a == b and a["settings"]["seed"] == 3


# ---------------------------------------------------------------- collected MaMuJoCo data


@mujoco
@pytest.mark.slow
@pytest.mark.parametrize("task", ["halfcheetah-2x3", "hopper-3x1", "walker2d-2x3"])
def test_types_on_collected_mamujoco_data(task, tmp_path):
    """Known truth at test size (160 episodes of 300 steps, hopper 240; docs/results/types_known_truth.md has
    full size): both mixes' types match the hidden labels, the team-level mix is flagged, the per-agent one and
    single-level data are not."""
    import madata
    from madata.collect import collect
    from madata.diagnostics.core import load_inputs
    from madata.schema import behaviour_column

    def types(**kw):
        episodes = 240 if task == "hopper-3x1" else 160  # at 160, hopper's agent_0 shows no types in the team mix
        ds = collect(
            task, tmp_path / str(len(list(tmp_path.iterdir()))), episodes=episodes, max_steps=300, seed=0, **kw
        )
        inputs = load_inputs(madata.open(ds.root))
        labels = {a: ds.episodes.column(behaviour_column(a)).to_pylist() for a in ds.agent_ids}
        return behaviour_types(inputs["cond"], inputs["features"], inputs["episode"], labels=labels, seed=0)

    per_agent = types(mix=["medium", "expert"])
    assert min(v["ari_vs_labels"] for v in per_agent["agents"].values()) >= 0.9, per_agent["agents"]
    assert per_agent["test"] is not None and per_agent["test"]["p"] > 0.05
    team = types(mix=["medium", "expert"], mix_by="team")
    assert team["test"]["p"] <= 0.01 and min(team["team"]["ari_vs_labels"].values()) >= 0.9
    assert min(v["ari_vs_labels"] for v in team["agents"].values()) >= 0.9, team["agents"]
    expert = types(mix=["expert"])
    assert expert["test"] is None and all(v["types"] == 1 for v in expert["agents"].values())


def test_diagnose_reports_types_and_the_team_test_in_every_form(tmp_path):
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")
    import json

    import madata
    from madata.diagnostics import diagnose, render_html
    from madata.schema import AgentSpec
    from madata.spaces import Box

    s, feats, episode, labels = synthetic(True, episodes=60, T=40)
    agents = [AgentSpec(a, Box.make(-1, 1, (2,)), Box.make(-3, 3, (2,))) for a in feats]
    with madata.create(tmp_path / "ds", agents, state_space=Box.make(-1, 1, (2,))) as w:
        for e in range(60):
            rows = np.flatnonzero(episode == e)
            st = np.concatenate([s[rows], s[rows[-1:]]]).astype(np.float32)
            end = np.zeros(len(rows), bool)
            end[-1] = True
            w.add_episode(
                obs={a: st for a in feats},
                actions={a: feats[a][rows].astype(np.float32) for a in feats},
                rewards=np.zeros(len(rows)),
                terminated=end,
                truncated=np.zeros(len(rows), bool),
                state=st,
                behaviour={a: labels[a][e] for a in feats},
            )
    d = diagnose(tmp_path / "ds", groups=64, permutations=5)
    t = d["types"]
    assert t["verdict"].startswith("team-level") and len(t["test"]["null"]) == 999
    assert json.loads(json.dumps(d))["types"]["team"]["ari_vs_labels"]["agent_1"] > 0.95
    page = render_html(d)
    assert '<img alt="types"' in page and "Team test over agent_0, agent_1" in page
