"""The collector: determinism, resume, validation before writing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import madata
from madata.behaviour.mix import combo_label
from madata.collect import collect
from madata.envs import GridWorld
from madata.errors import DatasetExistsError, SchemaError, UnknownNameError

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


def test_resume_equals_uninterrupted(tmp_path):
    full = collect("grid", tmp_path / "full", mix=["random"], episodes=23, seed=5, chunk_rows=16, commit_every=3)

    class Stop(Exception):
        pass

    import madata.collect as mc

    real = mc.run_episode
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 11:  # interrupted during episode 10: 9 committed (every 3), 10 added whole
            raise Stop
        return real(*args, **kw)

    mc.run_episode = flaky
    try:
        with pytest.raises(Stop):
            collect("grid", tmp_path / "part", mix=["random"], episodes=23, seed=5, chunk_rows=16, commit_every=3)
    finally:
        mc.run_episode = real
    partial = madata.open(tmp_path / "part")
    assert 0 < partial.num_episodes < 23 and not partial.record.complete
    resumed = collect(
        "grid", tmp_path / "part", mix=["random"], episodes=23, seed=5, chunk_rows=16, commit_every=3, resume=True
    )
    assert resumed.num_episodes == 23 and resumed.record.complete
    assert_same(full, resumed)
    again = collect("grid", tmp_path / "part", mix=["random"], episodes=23, seed=5, resume=True)  # nothing left to do
    assert_same(full, again)


def test_resume_without_existing_starts_fresh(tmp_path):
    ds = collect("grid", tmp_path / "new", combo={"agent_1": "random", "agent_0": "random"}, episodes=3, resume=True)
    assert ds.num_episodes == 3
    assert ds.meta.provenance["combo"] == {"agent_0": "random", "agent_1": "random"}
    assert ds.episode(0).info["provenance"] == '{"combo":{"agent_0":"random","agent_1":"random"}}'


@pytest.mark.parametrize(
    "change", [{"seed": 1}, {"episodes": 9}, {"mix": None, "combo": {"agent_0": "random", "agent_1": "random"}}]
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


def test_combo_labels_follow_assign(tmp_path):
    ds = collect("grid", tmp_path / "ds", mix=["random"], episodes=4, seed=0)
    labels = [combo_label({a: r[f"behaviour.{a}"] for a in ds.agent_ids}) for r in ds.episodes.to_pylist()]
    assert labels == ["agent_0=random,agent_1=random"] * 4


def test_resume_after_hard_kill(tmp_path):
    """A process killed mid-collection (no cleanup) resumes to the uninterrupted result."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "killed"
    code = textwrap.dedent(f"""
        import os, madata.collect as mc
        real, n = mc.run_episode, [0]
        def dying(*a, **k):
            n[0] += 1
            if n[0] == 12:
                os._exit(9)  # episodes 10 and 11 were added but never committed
            return real(*a, **k)
        mc.run_episode = dying
        mc.collect("grid", {str(out)!r}, mix=["random"], episodes=16, seed=2, chunk_rows=16, commit_every=5)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert madata.open(out).num_episodes == 10
    resumed = collect("grid", out, mix=["random"], episodes=16, seed=2, chunk_rows=16, commit_every=5, resume=True)
    full = collect("grid", tmp_path / "full", mix=["random"], episodes=16, seed=2, chunk_rows=16)
    assert_same(full, resumed)
