"""Collecting from PettingZoo ParallelEnvs: spaces, state, masks, mixes, determinism, resume, refusals."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

import madata
from madata.errors import DatasetExistsError, SchemaError, UnknownNameError
from madata.integrity import verify

pettingzoo = pytest.importorskip("pettingzoo", reason="needs madata[pettingzoo]")
mpe2 = pytest.importorskip("mpe2", reason="the tests use mpe2's environments")
from gymnasium import spaces  # noqa: E402
from mpe2 import simple_spread_v3, simple_tag_v3  # noqa: E402

from madata.pettingzoo import collect_pettingzoo, env_from_spec  # noqa: E402
from tests.conftest import killed_at_episode  # noqa: E402

SPREAD = functools.partial(simple_spread_v3.parallel_env, continuous_actions=True, max_cycles=12)
AGENTS = ["agent_0", "agent_1", "agent_2"]


def push_right(obs, rng):
    """A deterministic continuous policy for simple_spread (5 action components in [0, 1])."""
    return np.array([0.0, 1.0, 0.0, 0.2, 0.0], dtype=np.float32)


def mix(**extra):
    return {
        "agent_0": {"random": "random", "right": push_right, **extra},
        "agent_1": {"random": "random"},
        "agent_2": {"random": "random"},
    }


def test_two_levels_per_agent_give_equal_shares_per_combination(tmp_path):
    both = {a: {"random": "random", "right": push_right} for a in AGENTS}
    ds = collect_pettingzoo(SPREAD, tmp_path / "both", policies=both, episodes=16, seed=0)
    combos = Counter(zip(*(ds.episodes.column(f"behaviour.{a}").to_pylist() for a in AGENTS), strict=True))
    assert len(combos) == 8 and set(combos.values()) == {2} and verify(ds.root).ok


def test_spread_with_two_levels_for_one_agent(tmp_path):
    ds = collect_pettingzoo(SPREAD, tmp_path / "ds", policies=mix(), episodes=6, seed=0)
    assert verify(ds.root).ok and ds.num_episodes == 6 and ds.num_transitions == 72
    assert Counter(ds.episodes.column("behaviour.agent_0").to_pylist()) == {"random": 3, "right": 3}
    assert ds.state_space.shape == (54,) and ds.agents[0].observation_space.shape == (18,)
    assert ds.agents[0].action_space.shape == (5,) and ds.spec.agent_rewards and not ds.spec.action_masks
    right = ds.select(behaviour={"agent_0": "right"})
    assert np.all(right.transitions()["action/agent_0"] == push_right(None, None))
    tr = ds.transitions(fields=["reward", "agent_reward"])
    stacked = np.stack([tr[f"agent_reward/{a}"] for a in AGENTS])
    np.testing.assert_allclose(tr["reward"], stacked.mean(0))  # the team reward is the agents' mean
    acts = ds.transitions(fields=["action"])["action/agent_1"]
    assert acts.min() >= 0 and acts.max() <= 1 and acts.std() > 0.2  # uniform on the box
    assert ds.meta.env == {"id": "simple_spread_v3", "family": "pettingzoo", "kwargs": {}, "max_steps": None}
    assert ds.episodes.column("end").to_pylist() == ["truncated"] * 6  # max_cycles ends as a truncation


def test_same_seed_same_data_and_resume_continues_bit_for_bit(tmp_path):
    a = collect_pettingzoo(SPREAD, tmp_path / "a", policies=mix(), episodes=5, seed=3)
    b = collect_pettingzoo(SPREAD, tmp_path / "b", policies=mix(), episodes=5, seed=3)
    c = collect_pettingzoo(SPREAD, tmp_path / "c", policies=mix(), episodes=5, seed=4)
    ta, tb, tc = a.transitions(), b.transitions(), c.transitions()
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert not np.array_equal(ta["action/agent_1"], tc["action/agent_1"])
    with pytest.raises(DatasetExistsError, match="different dataset.*seed: stored 3, requested 9"):
        collect_pettingzoo(SPREAD, tmp_path / "a", policies=mix(), episodes=5, seed=9, resume=True)


def test_a_killed_collection_resumes_to_the_uninterrupted_one(tmp_path):
    """A process killed mid-collection (os._exit: no cleanup) resumes to the uninterrupted result."""
    out = tmp_path / "killed"
    # episode 5 is added but never committed
    killed_at_episode(
        7,
        f"""
        import functools
        from mpe2 import simple_spread_v3
        from madata.pettingzoo import collect_pettingzoo
        env = functools.partial(simple_spread_v3.parallel_env, continuous_actions=True, max_cycles=12)
        policies = {{a: {{"random": "random"}} for a in ("agent_0", "agent_1", "agent_2")}}
        collect_pettingzoo(env, {str(out)!r}, policies=policies, episodes=9, seed=1, commit_every=5, commit_seconds=0)
        """,
    )
    assert madata.open(out).num_episodes == 5
    policies = {a: {"random": "random"} for a in AGENTS}
    resumed = collect_pettingzoo(SPREAD, out, policies=policies, episodes=9, seed=1, resume=True)
    whole = collect_pettingzoo(SPREAD, tmp_path / "whole", policies=policies, episodes=9, seed=1)
    tw, tr = whole.transitions(), resumed.transitions()
    assert resumed.num_episodes == 9 and all(np.array_equal(tw[k], tr[k]) for k in tw)
    assert verify(out).ok


class Counter3:
    """A policy with memory: pushes right for its first 3 steps of each episode, then stays still."""

    def bind(self, env, agent):
        self.agent, self.n_agents = agent, len(env.possible_agents)

    def reset(self, rng):
        self.t = 0

    def __call__(self, obs, rng):
        self.t += 1
        return push_right(obs, rng) if self.t <= 3 else np.zeros(5, np.float32)


def test_policies_with_memory_are_bound_once_and_reset_every_episode(tmp_path):
    policy = Counter3()
    ds = collect_pettingzoo(SPREAD, tmp_path / "m", policies={**mix(), "agent_0": {"counter": policy}}, episodes=3)
    assert policy.agent == "agent_0" and policy.n_agents == 3
    for i in range(3):  # every episode starts afresh: 3 pushes, then zeros
        acts = ds.episode(i).actions["agent_0"]
        assert np.all(acts[:3] == push_right(None, None)) and np.all(acts[3:] == 0)
    from madata.pettingzoo import policy_from_spec

    a, b = policy_from_spec("test_pettingzoo:Counter3"), policy_from_spec("test_pettingzoo:Counter3")
    assert isinstance(a, Counter3) and a is not b  # a class: one instance per agent
    assert ds.meta.provenance["policies"]["agent_0"] == {"counter": "test_pettingzoo:Counter3"}


def test_discrete_actions_and_heterogeneous_agents(tmp_path):
    spread = functools.partial(simple_spread_v3.parallel_env, max_cycles=10)
    ds = collect_pettingzoo(spread, tmp_path / "d", policies={a: {"random": "random"} for a in AGENTS}, episodes=3)
    acts = ds.transitions(fields=["action"])["action/agent_0"]
    assert ds.agents[0].action_space.n == 5 and acts.dtype == np.int64 and set(acts) <= set(range(5))
    tag = functools.partial(simple_tag_v3.parallel_env, max_cycles=10, continuous_actions=True)
    env = tag()
    names = list(env.possible_agents)
    env.close()
    ds = collect_pettingzoo(tag, tmp_path / "t", policies={a: {"random": "random"} for a in names}, episodes=2)
    shapes = {a.id: a.observation_space.shape for a in ds.agents}
    assert shapes["adversary_0"] == (16,) and shapes["agent_0"] == (14,)  # predators and prey see differently
    assert verify(ds.root).ok


class MaskedTeam(pettingzoo.ParallelEnv):
    """Two agents, 3 discrete actions, dict observations with action masks; ``leave_at``: agent_1 ends early."""

    metadata = {"name": "masked_team"}

    def __init__(self, leave_at=None, length=4):
        self.possible_agents = ["agent_0", "agent_1"]
        self.leave_at, self.length = leave_at, length
        self._obs = spaces.Dict({"observation": spaces.Box(-1, 1, (2,)), "action_mask": spaces.MultiBinary(3)})

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return spaces.Discrete(3)

    def _observe(self):
        mask = np.array([1, self.t % 2, 1], dtype=np.int8)  # action 1 only on even steps
        return {a: {"observation": np.full(2, self.t / 10, np.float32), "action_mask": mask} for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        done = self.t >= self.length
        term = {a: done or (a == "agent_1" and self.t == self.leave_at) for a in self.agents}
        obs = self._observe()
        rewards = {a: float(actions[a]) for a in self.agents}
        trunc = dict.fromkeys(self.agents, False)
        self.agents = [a for a in self.agents if not term[a]]
        return obs, rewards, term, trunc, {a: {} for a in obs}


def test_action_masks_are_stored_and_respected(tmp_path):
    ds = collect_pettingzoo(
        MaskedTeam,
        tmp_path / "m",
        policies={a: {"random": "random"} for a in ("agent_0", "agent_1")},
        episodes=20,
        seed=0,
    )
    assert ds.spec.action_masks and ds.state_space is None and verify(ds.root).ok
    ep = ds.episode(0)
    assert ep.action_masks["agent_0"].shape == (5, 3) and ep.terminated[-1]
    acts = ds.transitions(fields=["action", "timestep"])
    odd = acts["timestep"] % 2 == 0  # the mask of step t allows action 1 only when t is odd
    assert not np.any(acts["action/agent_0"][odd] == 1) and np.any(acts["action/agent_0"][~odd] == 1)


def test_refusals_name_what_is_wrong(tmp_path):
    with pytest.raises(SchemaError, match=r"agents \['agent_1'\] ended while \['agent_0'\] go on"):
        collect_pettingzoo(
            lambda: MaskedTeam(leave_at=2),
            tmp_path / "x",
            policies={a: {"random": "random"} for a in ("agent_0", "agent_1")},
            episodes=2,
        )
    with pytest.raises(SchemaError, match=r"missing \['agent_2'\], unknown \['agent_9'\]"):
        collect_pettingzoo(
            SPREAD,
            tmp_path / "y",
            policies={"agent_0": {"r": "random"}, "agent_1": {"r": "random"}, "agent_9": {"r": "random"}},
            episodes=2,
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused in the first episode: nothing left
    with pytest.raises(UnknownNameError, match="cannot import 'no_such_pkg.env'"):
        env_from_spec("pettingzoo:no_such_pkg.env")


def test_cli_collects_a_pettingzoo_env_and_refuses_options_that_do_not_apply(tmp_path):
    from cli.app import app

    runner = CliRunner()
    base = ["collect", "pettingzoo:mpe2.simple_spread_v3", "--env-arg", "max_cycles=5", "--episodes", "4"]
    pol = [x for a in AGENTS for x in ("--policy", f"{a}=random")]
    right = ["--policy", "agent_0=test_pettingzoo:push_right"]
    res = runner.invoke(app, [*base, *pol, *right, "-o", str(tmp_path / "a")])  # a continuous action, discrete env
    assert res.exit_code == 2 and "agent_0's policy 'test_pettingzoo:push_right' returned" in res.output, res.output
    assert "not in its action space Discrete(5)" in res.output
    assert madata.open(tmp_path / "a").num_episodes == 1  # episode 0 (all random) was whole: kept, resumable
    res = runner.invoke(app, [*base, "--env-arg", "continuous_actions=true", *pol, *right, "-o", str(tmp_path / "a2")])
    assert res.exit_code == 0, res.output
    labels = Counter(madata.open(tmp_path / "a2").episodes.column("behaviour.agent_0").to_pylist())
    assert labels == {"random": 2, "test_pettingzoo:push_right": 2}
    res = runner.invoke(app, [*base, *pol, "-o", str(tmp_path / "ok")])
    assert res.exit_code == 0 and "wrote 4 episodes, 20 transitions" in res.output, res.output
    ds = madata.open(tmp_path / "ok")
    assert ds.meta.env["kwargs"] == {"max_cycles": 5} and ds.agents[0].action_space.n == 5
    for args, match in [
        ([*base, *pol, "--mix", "random", "-o", str(tmp_path / "b")], "--mix: built-in tasks only"),
        ([*base, "-o", str(tmp_path / "b")], "needs --policy"),
        ([*base, "--policy", "agent_0", "-o", str(tmp_path / "b")], "expected AGENT=random"),
        ([*base, "--env-arg", "bogus=1", *pol, "-o", str(tmp_path / "b")], "unexpected keyword argument 'bogus'"),
        (
            ["collect", "grid", "--mix", "random", "--policy", "agent_0=random", "-o", str(tmp_path / "b")],
            "apply to pettingzoo:MODULE tasks only",
        ),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output, (args, res.output)
    assert not (tmp_path / "b").exists()
