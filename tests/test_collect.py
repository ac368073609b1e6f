"""The collector: determinism, resume, validation before writing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pyarrow as pa
import pytest

import madata
from madata.behaviour.mix import combo_label
from madata.collect import collect
from madata.envs import GridWorld
from madata.errors import DatasetExistsError, SchemaError, UnknownNameError
from madata.writer import DatasetWriter
from tests.conftest import killed_at_episode, random_checkpoint

FIELDS = [
    "obs",
    "next_obs",
    "action",
    "state",
    "next_state",
    "reward",
    "terminated",
    "truncated",
    "episode_id",
    "timestep",
]


def arrays(ds):
    return ds.transitions(fields=FIELDS)


def table(ds) -> pa.Table:
    return ds.episodes


def assert_same(a, b):
    ta, tb = table(a), table(b)
    assert ta.equals(tb)
    xa, xb = arrays(a), arrays(b)
    assert set(xa) == set(xb)
    for k in xa:
        assert xa[k].dtype == xb[k].dtype
        np.testing.assert_array_equal(xa[k], xb[k], err_msg=k)


def test_collect_grid(tmp_path):
    ds = collect("grid", tmp_path / "ds", mix=["random"], episodes=20, seed=3, chunk_rows=64)
    assert ds.num_episodes == 20 and ds.agent_ids == ["agent_0", "agent_1"]
    assert ds.meta.env["id"] == "grid" and ds.record.complete
    prov = ds.meta.provenance
    assert (
        prov["producer"] == "madata.collect"
        and prov["mix"] == ["random"]
        and prov["episodes"] == 20
        and prov["seed"] == 3
    )
    t = ds.episodes.to_pylist()
    assert {r["behaviour.agent_0"] for r in t} == {"random"}
    assert len({r["seed"] for r in t}) == 20
    for i in range(ds.num_episodes):  # replaying the stored actions reproduces the episode
        ep = ds.episode(i)
        env = GridWorld()
        env.reset(seed=ep.info["seed"])
        np.testing.assert_array_equal(ep.state, ep.obs["agent_0"])
        assert ep.obs["agent_0"][0].tolist() == [0.0, 0.0]
        for k in range(ep.length):
            obs, rew, term, trunc, _ = env.step({a: int(ep.actions[a][k]) for a in ds.agent_ids})
            assert rew["agent_0"] == ep.rewards[k]
            np.testing.assert_array_equal(obs["agent_1"], ep.obs["agent_1"][k + 1])
        assert term["agent_0"] == ep.terminated[-1] and trunc["agent_0"] == ep.truncated[-1]
        assert ep.info["return"] <= 6.0  # the shortest path's return
        assert ep.length <= 30


def test_same_seed_same_bytes(tmp_path):
    a = collect("grid", tmp_path / "a", mix=["random"], episodes=15, seed=11, chunk_rows=32, commit_every=4)
    b = collect("grid", tmp_path / "b", mix=["random"], episodes=15, seed=11, chunk_rows=32, commit_every=7)
    assert_same(a, b)
    c = collect("grid", tmp_path / "c", mix=["random"], episodes=15, seed=12, chunk_rows=32)
    assert not np.array_equal(arrays(a)["action/agent_0"], arrays(c)["action/agent_0"])


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = collect("grid", tmp_path / "full", mix=["random"], episodes=23, seed=5, chunk_rows=16, commit_every=3)

    class Stop(Exception):
        pass

    real = DatasetWriter.add_episode
    calls = {"n": 0}

    def flaky(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 11:  # interrupted before episode 10: 9 committed (every 3), 10 added whole
            raise Stop
        return real(self, *args, **kw)

    monkeypatch.setattr(DatasetWriter, "add_episode", flaky)
    with pytest.raises(Stop):
        collect(
            "grid",
            tmp_path / "part",
            mix=["random"],
            episodes=23,
            seed=5,
            chunk_rows=16,
            commit_every=3,
            commit_seconds=0,
        )
    monkeypatch.setattr(DatasetWriter, "add_episode", real)
    partial = madata.open(tmp_path / "part")
    assert 0 < partial.num_episodes < 23 and not partial.record.complete
    resumed = collect(
        "grid", tmp_path / "part", mix=["random"], episodes=23, seed=5, chunk_rows=16, commit_every=3, resume=True
    )
    assert resumed.num_episodes == 23 and resumed.record.complete
    assert_same(full, resumed)
    record = (tmp_path / "part" / "commit.json").read_bytes()
    again = collect("grid", tmp_path / "part", mix=["random"], episodes=23, seed=5, resume=True)  # nothing left to do
    assert_same(full, again)
    assert (tmp_path / "part" / "commit.json").read_bytes() == record  # finished: not even the record is rewritten


def test_resume_without_existing_starts_fresh(tmp_path):
    ds = collect("grid", tmp_path / "new", combo={"agent_1": "random", "agent_0": "random"}, episodes=3, resume=True)
    assert ds.num_episodes == 3
    assert ds.meta.provenance["combo"] == {"agent_0": "random", "agent_1": "random"}
    assert ds.episode(0).info["provenance"] == '{"combo":{"agent_0":"random","agent_1":"random"}}'


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"episodes": 9},
        {"mix_by": "team"},
        {"mix": None, "combo": {"agent_0": "random", "agent_1": "random"}},
    ],
)
def test_resume_into_different_dataset_refused(tmp_path, change):
    args = dict(mix=["random"], episodes=5, seed=0)
    collect("grid", tmp_path / "ds", **args)
    before = sorted(p.name for p in (tmp_path / "ds").rglob("*"))
    with pytest.raises(DatasetExistsError, match="holds a different dataset.*nothing was overwritten"):
        collect("grid", tmp_path / "ds", **{**args, **change}, resume=True)
    assert sorted(p.name for p in (tmp_path / "ds").rglob("*")) == before
    assert madata.open(tmp_path / "ds").num_episodes == 5


def test_existing_path_without_resume_refused(tmp_path):
    collect("grid", tmp_path / "ds", mix=["random"], episodes=2)
    with pytest.raises(DatasetExistsError, match="not empty.*--resume"):
        collect("grid", tmp_path / "ds", mix=["random"], episodes=2)
    assert madata.open(tmp_path / "ds").num_episodes == 2


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"episodes": 0}, SchemaError, r"episodes: expected an integer >= 1, got 0"),
        ({"episodes": 2.5}, SchemaError, r"episodes"),
        ({"seed": -1}, SchemaError, r"seed: expected an integer >= 0"),
        ({"mix": ["random", "expert"]}, UnknownNameError, r"'expert' for task 'grid'; available levels: random"),
        ({"mix": None}, SchemaError, r"exactly one of mix"),
        ({"combo": {"agent_0": "random", "agent_1": "random"}}, SchemaError, r"exactly one of mix"),
        ({"mix": None, "combo": {"agent_0": "random"}}, SchemaError, r"no level for agent.*agent_1"),
        ({"mix": "random"}, SchemaError, r"parse_mix"),
        ({"mix_by": "both"}, SchemaError, r"mix_by: expected one of agent, team, got 'both'"),
        (
            {"mix": None, "combo": {"agent_0": "random", "agent_1": "random"}, "mix_by": "team"},
            SchemaError,
            r"mix_by \('team'\) applies to a mix only",
        ),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, kw, err, match):
    args = {"mix": ["random"], "episodes": 3, **kw}
    with pytest.raises(err, match=match):
        collect("grid", tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists()


def test_unknown_task_lists_known(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown task 'hopper'; known tasks: grid"):
        collect("hopper", tmp_path / "ds", mix=["random"], episodes=1)
    assert not (tmp_path / "ds").exists()


def test_grid_epsilon_and_envs(tmp_path):
    """The grid runs through the same vectorized loop: random per agent, epsilon-random allowed, envs-independent."""
    a = collect("grid", tmp_path / "a", mix=["random"], episodes=12, seed=2, epsilon=0.5, envs=1)
    b = collect("grid", tmp_path / "b", mix=["random"], episodes=12, seed=2, epsilon=0.5, envs=5)
    assert_same(a, b)
    assert a.meta.provenance["epsilon"] == 0.5 and a.transitions()["action/agent_0"].dtype == np.int64


def test_combo_labels_follow_assign(tmp_path):
    ds = collect("grid", tmp_path / "ds", mix=["random"], episodes=4, seed=0)
    labels = [combo_label({a: r[f"behaviour.{a}"] for a in ds.agent_ids}) for r in ds.episodes.to_pylist()]
    assert labels == ["agent_0=random,agent_1=random"] * 4


def test_resume_after_hard_kill(tmp_path):
    """A process killed mid-collection (no cleanup) resumes to the uninterrupted result."""
    out = tmp_path / "killed"
    # episodes 10 and 11 are added but never committed
    killed_at_episode(
        12,
        f"""
        import madata.collect as mc
        mc.collect("grid", {str(out)!r}, mix=["random"], episodes=16, seed=2, chunk_rows=16, commit_every=5,
                   commit_seconds=0)
        """,
    )
    assert madata.open(out).num_episodes == 10
    resumed = collect("grid", out, mix=["random"], episodes=16, seed=2, chunk_rows=16, commit_every=5, resume=True)
    full = collect("grid", tmp_path / "full", mix=["random"], episodes=16, seed=2, chunk_rows=16)
    assert_same(full, resumed)


# ---------------------------------------------------------------- MaMuJoCo: joint behaviour policies

mujoco = pytest.mark.skipif(importlib.util.find_spec("gymnasium_robotics") is None, reason="needs madata[mujoco]")


def checkpoints(root, task, levels=("medium", "expert")):

    for seed, level in enumerate(levels):
        random_checkpoint(root, task, level, seed=seed + 1)
    return root


@mujoco
def test_mix_medium_expert_equal_shares_labels_and_actions(tmp_path):
    """Each agent's stored action is its own level's joint action at the agent's (reversed) indices."""
    from madata.behaviour import load_policy
    from madata.collect import episode_noise
    from madata.envs.registry import make_team_env

    ck = checkpoints(tmp_path / "ck", "walker2d-2x3")
    ds = collect(
        "walker2d-2x3", tmp_path / "ds", mix=["medium", "expert"], episodes=8, seed=4, envs=3, checkpoint_dir=ck
    )
    labels = [combo_label({a: r[f"behaviour.{a}"] for a in ds.agent_ids}) for r in ds.episodes.to_pylist()]
    combos = [
        "agent_0=medium,agent_1=medium",
        "agent_0=medium,agent_1=expert",
        "agent_0=expert,agent_1=medium",
        "agent_0=expert,agent_1=expert",
    ]
    assert labels == combos * 2
    assert ds.meta.provenance["policies"]["expert"]["kind"] == "sac"
    assert ds.spec.state_space.dtype == "float32" and ds.spaces["agent_0"]["observation"].dtype == "float32"
    f = make_team_env("walker2d-2x3").factorization
    policies = {lv: load_policy("walker2d-2x3", lv, f, ck) for lv in ("medium", "expert")}
    for ep in ds.iter_episodes():
        combo = ep.behaviour
        _, noise = episode_noise(4, ep.id, f, {a: "normal" for a in combo}, 1000)
        T = ep.length
        for a, level in combo.items():
            joint = policies[level].act(ep.state[:T], noise["policy"][:T])
            np.testing.assert_array_equal(ep.actions[a], joint[:, f.act_index[a]])
            other = policies["medium" if level == "expert" else "expert"].act(ep.state[:T], noise["policy"][:T])
            assert not np.array_equal(ep.actions[a], other[:, f.act_index[a]])
    assert set(ds.episodes.column("end").to_pylist()) == {"terminated"}  # random-weight walkers fall


@mujoco
def test_same_seed_same_dataset_whatever_envs_and_resume(tmp_path, monkeypatch):
    ck = checkpoints(tmp_path / "ck", "hopper-3x1")
    args = dict(mix=["random", "expert"], episodes=12, seed=7, noise=0.1, epsilon=0.2, checkpoint_dir=ck, chunk_rows=64)
    one = collect("hopper-3x1", tmp_path / "one", envs=1, **args)
    four = collect("hopper-3x1", tmp_path / "four", envs=4, **args)
    assert_same(one, four)
    assert len(set(one.episodes.column("length").to_pylist())) > 3  # episodes finish out of order with 4 envs

    real, calls = DatasetWriter.add_episode, {"n": 0}

    def stop_at_6(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(DatasetWriter, "add_episode", stop_at_6)
    with pytest.raises(KeyboardInterrupt):
        collect("hopper-3x1", tmp_path / "part", envs=3, commit_every=2, commit_seconds=0, **args)
    monkeypatch.setattr(DatasetWriter, "add_episode", real)
    assert madata.open(tmp_path / "part").num_episodes == 6
    assert_same(one, collect("hopper-3x1", tmp_path / "part", envs=2, resume=True, **args))


@mujoco
@pytest.mark.parametrize("task", ["hopper-3x1", "walker2d-2x3"])
def test_episodes_replay_in_the_parallel_env(tmp_path, task):
    """Stored actions, replayed through MaMuJoCo's own parallel env, give the stored observations and rewards."""
    from madata.envs.registry import get_task

    ck = checkpoints(tmp_path / "ck", task, levels=("medium",))
    agents = get_task(task).agent_ids
    combo = {a: ("medium", "random")[k % 2] for k, a in enumerate(agents)}
    ds = collect(task, tmp_path / "ds", combo=combo, episodes=3, seed=1, envs=2, noise=0.2, checkpoint_dir=ck)
    env = get_task(task).make_env()
    for ep in ds.iter_episodes():
        obs, _ = env.reset(seed=ep.info["seed"])
        for t in range(ep.length):
            for a in ds.agent_ids:
                np.testing.assert_array_equal(ep.obs[a][t], obs[a].astype(np.float32))
            np.testing.assert_array_equal(ep.state[t], env.state().astype(np.float32))
            obs, rew, term, trunc, _ = env.step({a: ep.actions[a][t] for a in ds.agent_ids})
            assert rew["agent_0"] == ep.rewards[t]
        assert term["agent_0"] and ep.terminated[-1] and not ep.truncated.any()  # a fall ends it
        np.testing.assert_array_equal(ep.state[-1], env.state().astype(np.float32))
        assert ep.behaviour == combo
    env.close()


@mujoco
def test_time_limit_ends_are_truncated(tmp_path):
    full = collect("halfcheetah-2x3", tmp_path / "full", mix=["random"], episodes=1, envs=1)
    assert full.episode(0).length == 1000 and full.episodes.column("end").to_pylist() == ["truncated"]
    short = collect("halfcheetah-2x3", tmp_path / "short", mix=["random"], episodes=3, max_steps=25)
    assert short.episodes.column("length").to_pylist() == [25] * 3
    assert short.episodes.column("end").to_pylist() == ["truncated"] * 3
    assert short.meta.env["max_steps"] == 25 and short.meta.provenance["max_steps"] == 25


@mujoco
def test_noise_and_epsilon(tmp_path):
    ck = checkpoints(tmp_path / "ck", "halfcheetah-2x3", levels=("expert",))
    args = dict(combo={"agent_0": "expert", "agent_1": "expert"}, episodes=2, max_steps=50, checkpoint_dir=ck)
    plain = arrays(collect("halfcheetah-2x3", tmp_path / "plain", **args))
    noisy_ds = collect("halfcheetah-2x3", tmp_path / "noisy", noise=0.5, **args)
    noisy = arrays(noisy_ds)
    eps = arrays(collect("halfcheetah-2x3", tmp_path / "eps", epsilon=1.0, **args))
    assert noisy_ds.meta.provenance["noise"] == 0.5 and "action noise 0.5" in noisy_ds.meta.description
    for a in ("action/agent_0", "action/agent_1"):
        assert np.abs(noisy[a]).max() <= 1.0 and np.abs(noisy[a]).max() == 1.0  # clipped to the box
        assert not np.array_equal(plain[a], noisy[a]) and not np.array_equal(plain[a], eps[a])
    np.testing.assert_array_equal(plain["state"][0], noisy["state"][0])  # same reset


@mujoco
def test_level_errors_write_nothing(tmp_path, monkeypatch):
    ck = checkpoints(tmp_path / "ck", "walker2d-2x3", levels=("medium",))
    out = tmp_path / "ds"
    with pytest.raises(
        UnknownNameError,
        match=r"'expert' for task 'walker2d-2x3'; available levels: random, medium\. "
        r"No checkpoint .*expert\.json: train one with `madata behavior train walker2d-2x3",
    ):
        collect("walker2d-2x3", out, mix=["medium", "expert"], episodes=4, checkpoint_dir=ck)

    random_checkpoint(ck, "walker2d-2x3", "expert", of_task="halfcheetah-2x3")  # same shapes, wrong robot
    with pytest.raises(SchemaError, match=r"trained for task 'halfcheetah-2x3', not 'walker2d-2x3'"):
        collect("walker2d-2x3", out, mix=["medium", "expert"], episodes=4, checkpoint_dir=ck)
    with pytest.raises(SchemaError, match="not a directory"):
        collect("walker2d-2x3", out, mix=["medium"], episodes=4, checkpoint_dir=tmp_path / "nowhere")
    for bad, match in [
        ({"envs": 0}, "envs: expected an integer >= 1"),
        ({"epsilon": 1.5}, r"epsilon: expected a number in \[0.0, 1.0\]"),
        ({"noise": -0.1}, "noise"),
        ({"episodes": 0}, "episodes: expected an integer >= 1, got 0"),
    ]:
        with pytest.raises(SchemaError, match=match):
            collect("walker2d-2x3", out, **{"mix": ["medium"], "episodes": 2, "checkpoint_dir": ck, **bad})
    with pytest.raises(SchemaError, match="Gaussian action noise needs continuous actions"):
        collect("grid", out, mix=["random"], episodes=2, noise=0.1)
    assert not out.exists()
    monkeypatch.setenv("MADATA_CHECKPOINT_DIR", str(ck))  # the environment variable points at checkpoints too
    ds = collect("walker2d-2x3", out, mix=["medium"], episodes=2, envs=2)
    assert ds.num_episodes == 2
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(DatasetExistsError, match=r"\(noise: stored 0.0, requested 0.2\); nothing was overwritten"):
        collect("walker2d-2x3", out, mix=["medium"], episodes=2, noise=0.2, resume=True)
    with pytest.raises(DatasetExistsError, match="not empty"):
        collect("walker2d-2x3", out, mix=["medium"], episodes=2)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@mujoco
def test_cli_collect_mix_and_combo(tmp_path):
    from typer.testing import CliRunner

    from cli.app import app

    ck = checkpoints(tmp_path / "ck", "halfcheetah-2x3")
    runner = CliRunner()
    base = ["collect", "halfcheetah-2x3", "--checkpoint-dir", str(ck), "--max-steps", "20", "--envs", "3"]
    res = runner.invoke(app, [*base, "--mix", "medium,expert", "--episodes", "4", "-o", str(tmp_path / "mix")])
    assert res.exit_code == 0, res.output
    ds = madata.open(tmp_path / "mix")
    assert {r["behaviour.agent_0"] + "/" + r["behaviour.agent_1"] for r in ds.episodes.to_pylist()} == {
        "medium/medium",
        "medium/expert",
        "expert/medium",
        "expert/expert",
    }
    res = runner.invoke(
        app,
        [
            *base,
            "--combo",
            "agent_0=medium,agent_1=expert",
            "--episodes",
            "2",
            "--epsilon",
            "0.1",
            "-o",
            str(tmp_path / "combo"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert madata.open(tmp_path / "combo").meta.provenance["epsilon"] == 0.1
    res = runner.invoke(
        app, [*base, "--mix", "medium,expert", "--mix-by", "team", "--episodes", "4", "-o", str(tmp_path / "team")]
    )
    assert res.exit_code == 0, res.output
    ds = madata.open(tmp_path / "team")
    pairs = [r["behaviour.agent_0"] + "/" + r["behaviour.agent_1"] for r in ds.episodes.to_pylist()]
    assert pairs == ["medium/medium", "expert/expert"] * 2
    assert ds.meta.provenance["mix_by"] == "team" and '"mix_by":"team"' in ds.episode(3).info["provenance"]
    assert "drawn per team" in ds.meta.description
    res = runner.invoke(app, [*base, "--mix", "expert,best", "--episodes", "2", "-o", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "madata behavior train" in res.output and not (tmp_path / "bad").exists()
