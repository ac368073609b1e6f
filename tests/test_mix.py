"""Behaviour mixes and combinations, level registry, the random policy."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from madata.behaviour import available_levels, load_policy
from madata.behaviour.mix import assign, combinations, combo_label, parse_combo, parse_mix
from madata.behaviour.random import RandomPolicy
from madata.errors import SchemaError, UnknownNameError
from madata.spaces import Box, Discrete

TWO = ["agent_0", "agent_1"]
HOPPER = ["agent_0", "agent_1", "agent_2"]


def test_parse_mix():
    assert parse_mix("medium,expert") == ["medium", "expert"]
    assert parse_mix(" random ") == ["random"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("medium,,expert", "an empty name"),
        ("medium,expert,medium", "'medium' appears twice"),
        ("med ium", "bad name 'med ium'"),
        ("", "an empty name"),
    ],
)
def test_parse_mix_errors(text, match):
    with pytest.raises(SchemaError, match=match):
        parse_mix(text)


def test_parse_combo():
    assert parse_combo("agent_1=expert, agent_0=medium", TWO) == {"agent_0": "medium", "agent_1": "expert"}
    assert list(parse_combo("agent_1=expert,agent_0=medium", TWO)) == TWO  # agent order


@pytest.mark.parametrize(
    "text, err, match",
    [
        ("agent_0=medium,agent_1", SchemaError, "entry 'agent_1' is not AGENT=LEVEL"),
        ("agent_0=medium=x,agent_1=expert", SchemaError, "'agent_0=medium=x' is not AGENT=LEVEL"),
        ("agent_0=medium,agent_0=expert", SchemaError, "'agent_0' appears twice"),
        ("agent_0=medium", SchemaError, "no level for agent.*agent_1"),
        ("agent_0=medium,agent_7=expert", UnknownNameError, "unknown agent 'agent_7'; agents: agent_0, agent_1"),
        ("agent_0=,agent_1=expert", SchemaError, "an empty name"),
    ],
)
def test_parse_combo_errors(text, err, match):
    with pytest.raises(err, match=match):
        parse_combo(text, TWO)


def test_combinations_two_agents():
    combos = combinations(["medium", "expert"], TWO)
    assert combos == [
        {"agent_0": "medium", "agent_1": "medium"},
        {"agent_0": "medium", "agent_1": "expert"},
        {"agent_0": "expert", "agent_1": "medium"},
        {"agent_0": "expert", "agent_1": "expert"},
    ]
    plan = assign(100, combos)
    counts = Counter(combo_label(c) for c in plan)
    assert len(counts) == 4 and set(counts.values()) == {25}
    assert plan[5] == combos[1]


def test_combinations_hopper_and_uneven_shares():
    combos = combinations(["medium", "expert"], HOPPER)
    assert len(combos) == 8 and len({combo_label(c) for c in combos}) == 8
    counts = Counter(combo_label(c) for c in assign(21, combos))
    assert sorted(counts.values()) == [2] * 3 + [3] * 5  # differ by at most one; the first 5 get one more
    assert counts[combo_label(combos[0])] == 3 and counts[combo_label(combos[7])] == 2
    assert combinations(["random"], HOPPER) == [dict.fromkeys(HOPPER, "random")]


def test_team_level_mix_gives_every_agent_the_same_level():
    combos = combinations(["medium", "expert"], HOPPER, mix_by="team")
    assert combos == [dict.fromkeys(HOPPER, "medium"), dict.fromkeys(HOPPER, "expert")]
    assert combinations(["medium", "expert"], TWO, "agent") == combinations(["medium", "expert"], TWO)
    with pytest.raises(SchemaError, match=r"mix_by: expected one of agent, team, got 'episode'"):
        combinations(["medium"], TWO, "episode")


def test_combination_errors():
    with pytest.raises(SchemaError, match="at least one behaviour level"):
        combinations([], TWO)
    with pytest.raises(SchemaError, match="appears twice"):
        combinations(["a", "a"], TWO)
    with pytest.raises(SchemaError, match="episodes"):
        assign(-1, combinations(["a"], TWO))
    with pytest.raises(SchemaError, match="at least one"):
        assign(3, [])
    assert assign(0, combinations(["a"], TWO)) == []


def test_combo_label_round_trips():
    c = {"agent_0": "medium", "agent_1": "expert"}
    assert parse_combo(combo_label(c), TWO) == c


def test_level_registry():
    from madata.envs.registry import make_team_env

    assert available_levels("grid") == ["random"]
    f = make_team_env("grid").factorization
    p = load_policy("grid", "random", f)  # a joint policy: each agent takes its part of the output
    assert p.level == "random" and p.noise_dist == "uniform"
    joint = p.act(np.zeros((500, 2)), np.random.default_rng(0).random((500, 2)))
    assert joint.shape == (500, 2) and set(joint.ravel().tolist()) == {0.0, 1.0, 2.0}
    assert f.split_actions(joint)["agent_1"].dtype == np.int64
    with pytest.raises(
        UnknownNameError, match=r"unknown behaviour level 'expert' for task 'grid'; available levels: random"
    ):
        load_policy("grid", "expert", f)
    with pytest.raises(UnknownNameError, match="known tasks"):
        load_policy("nope", "random", f)


def test_random_policy():
    rng = np.random.default_rng(0)
    d = RandomPolicy(Discrete(3, start=1)).act(np.zeros((1000, 2)), rng)
    assert d.shape == (1000,) and d.dtype == np.int64 and set(d.tolist()) == {1, 2, 3}
    box = Box.make([-1.0, 0.0], [1.0, 0.5], (2,))
    b = RandomPolicy(box).act(np.zeros((500, 7)), rng)
    assert b.shape == (500, 2) and b.dtype == np.float32
    assert (b[:, 0] >= -1).all() and (b[:, 0] <= 1).all() and (b[:, 1] >= 0).all() and (b[:, 1] <= 0.5).all()
    a1 = RandomPolicy(box).act(np.zeros((4, 7)), np.random.default_rng(3))
    a2 = RandomPolicy(box).act(np.zeros((4, 7)), np.random.default_rng(3))
    np.testing.assert_array_equal(a1, a2)
    with pytest.raises(SchemaError, match="bounded"):
        RandomPolicy(Box.make(-np.inf, np.inf, (2,)))
