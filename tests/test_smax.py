"""SMAX tasks (JaxMARL): the batched JAX collector against the environment stepped one step at a time."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

import madata
from cli.format import format_summary
from madata.collect import collect
from madata.envs import smax
from madata.envs.registry import get_task
from madata.errors import SchemaError, UnknownNameError
from madata.schema import behaviour_column
from madata.summary import summarize
from tests.test_bad_input_cli import cli, one_line_error

needs_jaxmarl = pytest.mark.skipif(
    importlib.util.find_spec("jaxmarl") is None, reason="needs madata[smax] (jaxmarl): pip install 'madata[smax]'"
)


def test_tasks_resolve_without_jaxmarl_and_mmm_says_why():
    task = get_task("smax-3s_vs_3z")
    assert task.agent_ids == ("ally_0", "ally_1", "ally_2") and task.default_action == smax.NOOP == 4
    assert task.max_steps == 100 and task.family.builtin_levels == ("heuristic",)
    with pytest.raises(UnknownNameError, match="no medivac"):
        get_task("smax-MMM")


def test_without_jaxmarl_a_collection_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxmarl.environments.smax", None)  # as if not installed
    smax._env.cache_clear()
    with pytest.raises(SchemaError, match=r"madata\[smax\]"):
        collect("smax-2s3z", tmp_path / "x", mix=["random"], episodes=2)
    smax._env.cache_clear()


def replay(task: str, seed: int, e: int, actions: dict[str, np.ndarray]):
    """Episode ``e`` stepped one step at a time with its stored actions and the collector's keys: the
    observations, world states, available actions and rewards the environment gives, and whether each
    step ended the battle."""
    import jax

    env = smax._env(get_task(task).env["map"])
    agents = list(get_task(task).agent_ids)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), e)
    key, reset_key = jax.random.split(key)
    obs, state = env.reset(reset_key)
    rows = {"obs": [], "state": [], "masks": [], "reward": [], "over": []}

    def observe():
        masks = env.get_avail_actions(state)
        rows["obs"].append(np.stack([np.asarray(obs[a]) for a in agents]))
        rows["state"].append(np.asarray(obs["world_state"]))
        rows["masks"].append(np.stack([np.asarray(masks[a]) for a in agents]).astype(bool))

    for t in range(len(actions[agents[0]])):
        observe()
        key, _, _, k_step = jax.random.split(key, 4)
        obs, state, reward, _, _ = env.step_env(k_step, state, {a: actions[a][t] for a in agents})
        alive = np.asarray(state.state.unit_alive)
        rows["reward"].append(float(reward[agents[0]]))
        rows["over"].append(not alive[: len(agents)].any() or not alive[len(agents) :].any())
    observe()
    return {k: np.asarray(v) for k, v in rows.items()}


@needs_jaxmarl
@pytest.mark.parametrize("max_steps", [None, 12])
def test_collected_episodes_are_what_the_environment_gives(tmp_path, max_steps):
    """Observations, world states and masks at every step and after the last, rewards, and the end kept
    apart: terminated when a side is dead, truncated at the limit (then the final observation is the
    one after the last step)."""
    ds = collect(
        "smax-2s3z", tmp_path / "d", mix=["random", "heuristic"], episodes=10, envs=4, seed=3, max_steps=max_steps
    )
    assert madata.verify(ds.root).ok and ds.spec.action_masks and ds.state_space.shape == (120,)
    ends = {"terminated": 0, "truncated": 0}
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        ref = replay("smax-2s3z", 3, i, ep.actions)
        for j, a in enumerate(ds.agent_ids):
            np.testing.assert_allclose(ep.obs[a], ref["obs"][:, j], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(ep.action_masks[a], ref["masks"][:, j])
            assert ep.action_masks[a][np.arange(ep.length), ep.actions[a]].all()  # only available actions
        np.testing.assert_allclose(ep.state, ref["state"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ep.rewards, ref["reward"], rtol=1e-5, atol=1e-6)
        assert not ref["over"][:-1].any()  # no step before the last ended the battle
        if ep.terminated[-1]:
            assert ref["over"][-1]
        else:
            assert ep.truncated[-1] and ep.length == (max_steps or 100) and not ref["over"][-1]
        ends["terminated" if ep.terminated[-1] else "truncated"] += 1
        won = json.loads(ep.info["provenance"])["won"]
        assert won == (bool(ep.terminated[-1]) and ep.rewards[-1] >= 1.0)  # the win bonus is 1
    assert ends["truncated"] > 0 if max_steps else ends["terminated"] > 0


@needs_jaxmarl
def test_episodes_depend_on_seed_and_id_alone(tmp_path):
    """Batches of 3 and of 8 environments, and a collection resumed half way: the same episodes."""
    a = collect("smax-3s_vs_3z", tmp_path / "a", mix=["random", "heuristic"], episodes=8, envs=3, seed=1)
    b = collect("smax-3s_vs_3z", tmp_path / "b", mix=["random", "heuristic"], episodes=8, envs=8, seed=1)
    for key in ("obs/ally_0", "action/ally_2", "state", "reward", "action_mask/ally_1"):
        np.testing.assert_array_equal(a.transitions([key.split("/")[0]])[key], b.transitions([key.split("/")[0]])[key])
    assert a.episodes.column("return").equals(b.episodes.column("return"))


@needs_jaxmarl
def test_heuristic_teams_win_and_random_ones_do_not(tmp_path):
    """SMAX's heuristic wins about half its 2s3z fights (51 % over 100 measured); uniform random, none."""
    ds = collect("smax-2s3z", tmp_path / "t", mix=["random", "heuristic"], mix_by="team", episodes=32, envs=16)
    won = np.array([json.loads(p)["won"] for p in ds.episodes.column("provenance").to_pylist()])
    team = np.array([lv == "heuristic" for lv in ds.episodes.column(behaviour_column("ally_0")).to_pylist()])
    ret = ds.episodes.column("return").to_numpy()
    assert team.sum() == 16 and won[~team].sum() == 0 and won[team].sum() >= 4
    assert ret[team].mean() > 2 * ret[~team].mean()
    # madata info: the data's win rate, overall and per combination of levels
    s = summarize(ds)
    assert s["wins"] == {"episodes": int(won.sum()), "rate": won.mean()}
    heuristic_team = ",".join(f"{a}=heuristic" for a in ds.agent_ids)
    assert s["behaviour_combinations"][heuristic_team]["win_rate"] == won[team].mean()
    assert f"wins      {int(won.sum())} episodes won" in format_summary(s)


def test_cli_refusals(tmp_path, capsys):
    code, _, err = cli(capsys, "collect", "smax-MMM", "--mix", "random", "-o", tmp_path / "m")
    one_line_error(code, err, "no medivac")
    code, _, err = cli(capsys, "collect", "smax-2s3z", "--mix", "random,expert", "-o", tmp_path / "m")
    one_line_error(code, err, "available levels: random, heuristic")
    if importlib.util.find_spec("jaxmarl") is not None:
        code, _, err = cli(capsys, "collect", "smax-2s3z", "--mix", "random", "--epsilon", "0.1", "-o", tmp_path / "e")
        one_line_error(code, err, "do not apply to smax-2s3z")


@needs_jaxmarl
def test_algorithms_that_ignore_action_masks_refuse_masked_data(tmp_path, capsys):
    collect("smax-2s3z", tmp_path / "d", mix=["random"], episodes=2, envs=2)
    code, _, err = cli(capsys, "train", "bcq", tmp_path / "d", "-o", tmp_path / "run", "--eval-episodes", "0")
    one_line_error(code, err, "bcq does not use them yet; cast-bcq, ibcq, mabcq, icq-ma do")
    # discrete CAST-BCQ's exact max would enumerate 10^5 joint actions per sample: it says how to sample them
    code, _, err = cli(
        capsys,
        "train",
        "cast-bcq",
        tmp_path / "d",
        "-o",
        tmp_path / "run",
        "--eval-episodes",
        "0",
        "--batch-size",
        "16",
    )
    one_line_error(
        code, err, "10^5 = 100000 joint actions per sample (at most 4096); sample them instead with --joint-candidates"
    )


@needs_jaxmarl
def test_evaluating_the_stored_actions_replays_the_collected_episodes(tmp_path):
    """The evaluator steps the environments with the collector's keys: a policy that plays back collected
    episodes' actions gets their returns, lengths and wins exactly; unavailable actions are counted."""
    ds = collect(
        "smax-3s_vs_3z", tmp_path / "d", mix=["random", "heuristic"], mix_by="team", episodes=6, envs=6, seed=4
    )
    eps = [ds.episode(i) for i in range(ds.num_episodes)]
    t = [0]

    def playback(obs, masks):
        out = {a: np.array([e.actions[a][t[0]] if t[0] < e.length else smax.NOOP for e in eps]) for a in ds.agent_ids}
        t[0] += 1
        return out

    res = smax.evaluate_policy(get_task("smax-3s_vs_3z"), playback, episodes=6, seed=4)
    np.testing.assert_allclose(res["returns"], ds.episodes.column("return").to_numpy(), rtol=1e-5)
    assert res["lengths"].tolist() == [e.length for e in eps] and res["unavailable"] == 0
    assert res["won"].tolist() == [json.loads(e.info["provenance"])["won"] for e in eps]

    def attack_first_enemy(obs, masks):
        return {a: np.full(len(m), 5) for a, m in masks.items()}

    res = smax.evaluate_policy(get_task("smax-3s_vs_3z"), attack_first_enemy, episodes=4, seed=0, max_steps=10)
    assert res["unavailable"] > 0 and (res["lengths"] <= 10).all()
    with pytest.raises(SchemaError, match="outside 0..7"):
        smax.evaluate_policy(get_task("smax-3s_vs_3z"), lambda o, m: {a: np.full(4, 8) for a in m}, 4, 0)


@needs_jaxmarl
def test_madata_algos_evaluate_reports_the_win_rate_in_smax():
    from madata_algos.evaluate import evaluate

    rng = np.random.default_rng(0)

    def random_available(obs, masks):
        return {a: np.array([rng.choice(np.flatnonzero(row)) for row in m]) for a, m in masks.items()}

    res = evaluate("smax-2s3z", random_available, episodes=8, seed=0)
    assert res.win_rate == 0.0 and res.task == "smax-2s3z" and len(res.returns) == 8
    assert 0.05 < res.mean_return < 1.0 and res.mean_normalized is None  # enemy health taken, no win bonus
    with pytest.raises(SchemaError, match="smax-2s3z: with_state applies to families that step one environment"):
        evaluate("smax-2s3z", random_available, episodes=2, with_state=True)  # SMAX steps its own batches


# ---------------------------------------------------------------- learning from masked data


def test_bcq_allows_only_available_actions_and_falls_back_to_them():
    from madata_algos.ibcq import available_allowed

    allowed = torch.tensor([[True, True, False], [False, True, False]])
    available = torch.tensor([[False, True, True], [True, False, True]])
    assert available_allowed(allowed, available).tolist() == [[False, True, False], [True, False, True]]
    assert available_allowed(allowed, None) is allowed


@pytest.mark.parametrize("cls", ["ibcq", "mabcq"])
def test_masked_targets_and_actions_use_only_available_actions(cls):
    """With only action j available at o', the target bootstraps from Q'_i(o', j) for every agent, and an
    agent offered only action j takes it, whatever its critic and classifier prefer."""
    from madata_algos.ibcq import IndependentBcqDiscrete
    from madata_algos.mabcq import MabcqDiscrete

    torch.manual_seed(0)
    algo = {"ibcq": IndependentBcqDiscrete, "mabcq": MabcqDiscrete}[cls](3, 4, 5)
    next_obs, reward, terminated = torch.randn(3, 16, 4), torch.randn(16), torch.zeros(16)
    for j in range(5):
        mask = torch.zeros(3, 16, 5, dtype=torch.bool)
        mask[..., j] = True
        y = algo.target(reward, next_obs, terminated, mask)
        expected = reward[None] + algo.cfg.gamma * algo.critic_target(next_obs)[..., j]
        torch.testing.assert_close(y, expected.detach())
        assert (algo.act(next_obs, mask=mask) == j).all()
    unmasked = algo.target(reward, next_obs, terminated)
    assert not torch.equal(unmasked, algo.target(reward, next_obs, terminated, mask))
    # update and losses hand the mask on: the same batch with and without it trains differently
    batch = dict(obs=torch.randn(3, 16, 4), action=torch.randint(0, 5, (3, 16)), reward=reward,
                 next_obs=next_obs, terminated=terminated)  # fmt: skip
    assert algo.losses(**batch)["critic"] != algo.losses(**batch, next_action_mask=mask)["critic"]
    with_mask, without = copy.deepcopy(algo), copy.deepcopy(algo)
    torch.manual_seed(1)
    with_mask.update(**batch, next_action_mask=mask)
    torch.manual_seed(1)
    without.update(**batch)
    changed = [
        not torch.equal(a, b) for a, b in zip(with_mask.critic.parameters(), without.critic.parameters(), strict=True)
    ]
    assert any(changed)


def test_icq_ma_policy_is_over_the_available_actions():
    """With only action j available: pi_i(j | o_i) = 1, the baseline is Q_i(o_i, j), the agent takes j; and
    the actor's update uses the mask (the same batch without it trains differently)."""
    from madata_algos.icq import IcqMaDiscrete

    torch.manual_seed(0)
    algo = IcqMaDiscrete([4] * 3, 6, 5)
    obs = torch.randn(3, 16, 4)
    for j in range(5):
        mask = torch.zeros(3, 16, 5, dtype=torch.bool)
        mask[..., j] = True
        action = torch.full((3, 16), j)
        torch.testing.assert_close(algo.log_prob(obs, action, mask), torch.zeros(3, 16))
        torch.testing.assert_close(algo.policy_baseline(obs, None, mask), algo.critic(obs)[..., j])
        assert (algo.act(obs, mask=mask) == j).all()
    batch = dict(obs=obs, action=torch.randint(0, 5, (3, 16)), reward=torch.randn(16), next_obs=obs,
                 terminated=torch.zeros(16), state=torch.randn(16, 6), next_state=torch.randn(16, 6))  # fmt: skip
    mask = torch.rand(3, 16, 5) > 0.3
    mask[torch.arange(3)[:, None], torch.arange(16)[None], batch["action"]] = True  # the data's actions available
    assert algo.losses(**batch)["actor"] != algo.losses(**batch, action_mask=mask)["actor"]
    with_mask, without = copy.deepcopy(algo), copy.deepcopy(algo)
    with_mask.update(**batch, action_mask=mask)
    without.update(**batch)
    assert any(
        not torch.equal(a, b) for a, b in zip(with_mask.actor.parameters(), without.actor.parameters(), strict=True)
    )


@pytest.fixture(scope="module")
def team_data(tmp_path_factory):
    """2s3z, 64 episodes: random and heuristic teams, half each."""
    out = tmp_path_factory.mktemp("smax") / "d"
    return collect("smax-2s3z", out, mix=["random", "heuristic"], mix_by="team", episodes=64, envs=32)


@needs_jaxmarl
@pytest.mark.parametrize("algorithm", ["cast-bcq", "ibcq", "mabcq", "icq-ma"])
def test_training_on_smax_data_beats_random_play(team_data, tmp_path, algorithm, capsys):
    """A short run on per-team data of random and heuristic teams returns more than random play, and every
    output reports the win rate as SMAX's, not SMAC's."""
    from madata_algos.configs import CastBcqDiscreteConfig
    from madata_algos.train import train

    data = team_data
    config = CastBcqDiscreteConfig(joint_candidates=16) if algorithm == "cast-bcq" else None
    rows = train(data, tmp_path / "run", algorithm=algorithm, steps=400, batch_size=128, eval_every=400,
                 eval_episodes=16, seed=0, config=config)  # fmt: skip
    random_play = data.episodes.filter(
        np.asarray(data.episodes.column(behaviour_column("ally_0")).to_pylist()) == "random"
    ).column("return")
    assert rows[-1]["eval_return"] > 1.5 * np.mean(random_play.to_numpy()), rows[-1]
    assert 0 <= rows[-1]["eval_win_rate"] <= 1
    code, out, _ = cli(capsys, "eval", tmp_path / "run", "--episodes", "4")
    assert code == 0 and "won" in out and "not SMAC numbers" in out


def test_the_trainer_hands_the_next_masks_to_the_algorithm_agent_major():
    """Loader batches [B, n, K] -> the algorithms' layout [n, B, K]; no key at all without masks."""
    from madata_algos.loader import Batch
    from madata_algos.train import agent_major

    B, n, K = 6, 3, 5
    mask = torch.rand(B, n, K) > 0.5
    common = dict(obs=torch.randn(B, n, 4), action=torch.randint(0, K, (B, n)), next_obs=torch.randn(B, n, 4),
                  reward=torch.randn(B), terminated=torch.zeros(B), state=None, next_state=None, stacked=True)  # fmt: skip
    out = agent_major(Batch(**common, action_mask=mask, next_action_mask=~mask))
    assert torch.equal(out["action_mask"], mask.transpose(0, 1))
    assert torch.equal(out["next_action_mask"], (~mask).transpose(0, 1))
    assert not {"action_mask", "next_action_mask"} & set(agent_major(Batch(**common)))


def test_the_trained_policy_acts_among_the_available_actions():
    from madata_algos.ibcq import IndependentBcqDiscrete
    from madata_algos.registry import DataInfo
    from madata_algos.train import make_policy

    ids = ("ally_0", "ally_1", "ally_2")
    data = DataInfo(root="x", task="smax-3s_vs_3z", agent_ids=ids, obs_dims=(4,) * 3, discrete=True, act_dims=(1,) * 3,
                    max_action=(), n_actions=5, action_starts=(0,) * 3, default_action=4, state_dim=None,
                    action_masks=True)  # fmt: skip
    policy = make_policy(IndependentBcqDiscrete(3, 4, 5), data, "cpu", None)
    obs = {a: np.random.default_rng(i).standard_normal((7, 4)).astype(np.float32) for i, a in enumerate(ids)}
    for j in range(5):
        masks = {a: np.eye(5, dtype=bool)[np.full(7, j)] for a in ids}
        assert all((v == j).all() for v in policy(obs, masks).values())


@needs_jaxmarl
@pytest.mark.parametrize("part", [1 << 18, 37])
def test_training_standardizes_the_raw_world_state(team_data, part, monkeypatch):
    """SMAX's world state (positions up to the map size, cooldowns drifting below zero) reaches the critics
    with mean 0 and std 1 per feature over the training data; a constant feature is only centred. The
    statistics are the same whether the state is read in one part or in many (37 transitions at a time)."""
    from madata_algos import train
    from madata_algos.registry import describe
    from madata_algos.train import state_standardizer

    monkeypatch.setattr(train, "STATE_PART", part)
    parts = len(team_data.episode_groups(part))
    assert parts > 10 if part == 37 else parts == 1
    info = describe(team_data)
    assert info.standardize_state
    s = torch.as_tensor(team_data.transitions(["state"])["state"])
    assert s.abs().max() > 20  # raw: positions in map units
    out = state_standardizer(team_data, info, "cpu")({"state": s, "next_state": s + 1, "reward": None})
    varying = s.std(0) > 1e-6
    torch.testing.assert_close(out["state"].mean(0), torch.zeros(s.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out["state"].std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        out["next_state"] - out["state"],
        (1 / s.std(0, unbiased=False).where(varying, 1))[None].expand_as(s),
        atol=1e-4,
        rtol=1e-4,
    )
    assert out["reward"] is None
    same = {"state": s}
    assert state_standardizer(team_data, dataclasses.replace(info, standardize_state=False), "cpu")(same) is same


@needs_jaxmarl
def test_training_and_validation_batches_carry_the_standardized_state(team_data, tmp_path, monkeypatch):
    """Every update and every validation loss sees the state standardized, not as stored."""
    from madata_algos import registry
    from madata_algos.train import train

    seen = {"update": [], "losses": []}
    build = registry.build

    def spying_build(*a, **kw):
        algo = build(*a, **kw)
        for name in seen:
            fn = getattr(algo, name)
            setattr(algo, name, lambda *x, _fn=fn, _name=name, **k: seen[_name].append(k["state"]) or _fn(*x, **k))
        return algo

    monkeypatch.setattr(registry, "build", spying_build)
    train(team_data, tmp_path / "run", algorithm="icq-ma", steps=4, batch_size=512, eval_every=2, eval_episodes=0,
          validation=0.25, seed=0)  # fmt: skip
    assert len(seen["update"]) == 4 and seen["losses"]
    for states in seen.values():
        s = torch.cat(states)
        assert s.abs().max() < 15 and abs(float(s.mean())) < 0.5  # stored: positions up to 32
