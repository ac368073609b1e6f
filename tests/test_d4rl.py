"""split-d4rl / export-d4rl: the split is MaMuJoCo's, round trips are exact, quirks are counted, bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")
h5py = pytest.importorskip("h5py")

from typer.testing import CliRunner  # noqa: E402

import madata  # noqa: E402
from cli.app import app  # noqa: E402
from madata.collect import collect  # noqa: E402
from madata.convert import AGENT_CONFS, export_d4rl, mamujoco_split, split_d4rl  # noqa: E402
from madata.envs.mamujoco import D4RL_REF, SCENARIOS  # noqa: E402
from madata.envs.registry import get_task  # noqa: E402
from madata.errors import DatasetExistsError, DatasetNotFoundError, SchemaError, UnknownNameError  # noqa: E402
from madata.writer import DatasetWriter  # noqa: E402

runner = CliRunner()
ROBOTS = {"halfcheetah": "2x3", "hopper": "3x1", "walker2d": "2x3"}
ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
DIMS = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}


# ---------------------------------------------------------------- D4RL files made by plain scripts


def gym_d4rl_file(
    path: Path,
    robot: str,
    dtype: str,
    *,
    episodes: int = 3,
    max_steps: int = 40,
    seed: int = 0,
    next_obs: bool = True,
    infos: bool = True,
) -> dict[str, np.ndarray]:
    """A D4RL-format file from gymnasium's single-agent env with random actions; returns the float64 originals."""
    import gymnasium as gym

    env = gym.make(ENV_IDS[robot], max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    rec: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "tout", "next", "qpos", "qvel")}
    for e in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + e)
        done = False
        while not done:
            u = env.unwrapped
            rec["qpos"].append(u.data.qpos.copy())
            rec["qvel"].append(u.data.qvel.copy())
            a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in (("obs", obs), ("act", a), ("rew", r), ("term", term), ("tout", trunc), ("next", nxt)):
                rec[k].append(v)
            obs, done = nxt, term or trunc
    env.close()
    out = {k: np.asarray(v) for k, v in rec.items()}
    with h5py.File(path, "w") as f:
        f["observations"] = out["obs"].astype(dtype)
        f["actions"] = out["act"].astype(dtype)
        f["rewards"] = out["rew"].astype(dtype)
        f["terminals"] = out["term"].astype(bool)
        f["timeouts"] = out["tout"].astype(bool)
        if next_obs:
            f["next_observations"] = out["next"].astype(dtype)
        if infos:
            f["infos/qpos"] = out["qpos"]
            f["infos/qvel"] = out["qvel"]
        f["metadata/algorithm"] = "random"
    return out


def synthetic_file(
    path: Path,
    robot: str = "halfcheetah",
    n: int = 20,
    *,
    terminals=(),
    timeouts=(),
    next_obs: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    override: dict | None = None,
) -> dict[str, np.ndarray]:
    """Random arrays in D4RL's layout with the given flags (observation t+1 follows t)."""
    S, A = DIMS[robot]
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n + 1, S)).astype(dtype)
    data = {
        "observations": obs[:-1],
        "actions": rng.uniform(-1, 1, (n, A)).astype(dtype),
        "rewards": rng.standard_normal(n).astype(dtype),
        "terminals": np.isin(np.arange(n), terminals),
        "timeouts": np.isin(np.arange(n), timeouts),
    }
    if next_obs:
        data["next_observations"] = obs[1:]
    data.update(override or {})
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if v is not None:
                f[k] = v
    return data


def ok(res):
    assert res.exit_code == 0, res.output
    return res


# ---------------------------------------------------------------- the factorization


def test_agent_confs_are_the_ones_mamujoco_offers():
    from gymnasium_robotics.envs.multiagent_mujoco.obsk import get_parts_and_edges

    for robot, confs in AGENT_CONFS.items():
        for conf in confs:
            parts, _, _ = get_parts_and_edges(SCENARIOS[robot][0], conf)
            assert len(parts) == int(conf.split("x")[0])
        for other in ("1x6", "3x2", "2x1", "4x2", "2x3", "6x1", "3x1"):
            if other not in confs:
                with pytest.raises(Exception, match="UNKNOWN partitioning"):
                    get_parts_and_edges(SCENARIOS[robot][0], other)


def test_clipping_is_measured_from_mamujoco():
    """Walker2d's single-agent observation clips velocities, MaMuJoCo's local observations do not;
    Hopper clips them in both; HalfCheetah in neither."""
    for robot, conf in ROBOTS.items():
        s = mamujoco_split(robot, conf)
        nvel = s.nv
        assert s.state_clipped.tolist() == [False] * (s.state_dim - nvel) + [robot != "halfcheetah"] * nvel
        for a in s.agent_ids:
            is_vel = s.factorization.obs_index[a] >= s.state_dim - nvel
            assert np.array_equal(s.local_clipped[a], is_vel & (robot == "hopper")), (robot, a)
        assert s.loses_raw_velocities == (robot == "walker2d")
    # and the result equals MaMuJoCo's own observations in a fast state
    s = mamujoco_split("hopper", "3x1")
    env = get_task("hopper-3x1").make_env()
    env.reset(seed=0)
    u = env.single_agent_env.unwrapped
    u.set_state(u.init_qpos, np.array([15.0, -12, 3, 20, -30, 11]))
    raw = s.source(u.data.qpos[None], u.data.qvel[None])
    local = s.local_from_source(raw, "float64")
    for k, a in enumerate(s.agent_ids):
        np.testing.assert_array_equal(local[a][0], env._get_obs_agent(k))
    env.close()


# ---------------------------------------------------------------- the split is the real factorization


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("robot", list(ROBOTS))
def test_split_actions_reproduce_single_agent_rewards(tmp_path, robot, dtype):
    src = tmp_path / f"{robot}.hdf5"
    orig = gym_d4rl_file(src, robot, dtype)
    ds = split_d4rl(robot, ROBOTS[robot], tmp_path / "ds", source=src, tier="random")
    report = ds.meta.provenance["report"]
    assert report["local_obs_from"] == "infos/qpos+qvel" and report["transitions"] == len(orig["rew"])
    assert ds.episodes.column("behaviour.agent_0").to_pylist() == ["random"] * ds.num_episodes
    assert ds.agents[0].observation_space.dtype == dtype and ds.state_space.dtype == dtype
    assert ds.meta.provenance["d4rl_metadata"] == {"metadata/algorithm": "random"}
    env = get_task(ds.meta.env["id"]).make_env()
    tol = 1e-5 if dtype == "float32" else 1e-9
    unsure = 0  # final observations rebuilt from a clipped next_observations with a velocity at +-10 (Walker2d)
    for ep in ds.iter_episodes():
        first, stop = json.loads(ep.info["provenance"])["d4rl_rows"]
        env.reset(seed=0)
        env.single_agent_env.unwrapped.set_state(orig["qpos"][first], orig["qvel"][first])
        for t in range(ep.length):
            local = {a: ep.actions[a][t] for a in ds.agent_ids}
            joint = env.map_local_actions_to_global_action(local)
            np.testing.assert_array_equal(joint, orig["act"][first + t])
            obs, rew, term, trunc, _ = env.step(local)
            assert abs(rew["agent_0"] - orig["rew"][first + t]) < 1e-6
            assert term["agent_0"] == bool(ep.terminated[t])
            np.testing.assert_allclose(ep.state[t + 1], env.state(), rtol=tol, atol=tol)
            if t + 1 == ep.length and robot == "walker2d" and (np.abs(ep.state[t + 1][8:]) >= 10).any():
                unsure += 1
                continue
            for a in ds.agent_ids:  # MaMuJoCo's own local observation
                np.testing.assert_allclose(ep.obs[a][t + 1], obs[a], rtol=tol, atol=tol, err_msg=f"{a} t={t}")
    env.close()
    assert report["quirks"]["clipped_local_obs_rows"] == unsure
    # Walker2d's random torques spin joints past 10 rad/s: the raw velocities were needed
    if robot == "walker2d":
        assert (np.abs(orig["qvel"]) > 10).any()


# ---------------------------------------------------------------- collect -> export-d4rl -> split-d4rl


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("robot", list(ROBOTS))
def test_round_trip(tmp_path, robot, dtype):
    task = f"{robot}-{ROBOTS[robot]}"
    a = collect(task, tmp_path / "a", mix=["random"], episodes=3, max_steps=50, seed=1)
    h5 = tmp_path / "a.hdf5"
    ok(runner.invoke(app, ["export-d4rl", str(tmp_path / "a"), "-o", str(h5), "--dtype", dtype]))
    with h5py.File(h5) as f:
        assert f["observations"].dtype == dtype and f["terminals"].dtype == bool and "infos" not in f
        assert f["actions"].shape == (a.num_transitions, DIMS[robot][1])
    res = ok(
        runner.invoke(
            app, ["split-d4rl", robot, ROBOTS[robot], "--source", str(h5), "--strict", "-o", str(tmp_path / "b")]
        )
    )
    assert "madata/obs" in res.output
    b = madata.open(tmp_path / "b")
    assert b.num_episodes == a.num_episodes and b.meta.provenance["report"]["quirks"] == dict.fromkeys(
        b.meta.provenance["report"]["quirks"], 0
    )
    ta, tb = a.transitions(), b.transitions()
    for k in ta:
        want = ta[k].astype(np.float32) if k == "reward" and dtype == "float32" else ta[k]
        np.testing.assert_array_equal(tb[k], want, err_msg=k)
        assert tb[k].dtype == (
            dtype if k.split("/")[0] in ("obs", "next_obs", "state", "next_state", "action") else ta[k].dtype
        )
    assert b.episodes.column("end").to_pylist() == a.episodes.column("end").to_pylist()


def test_walker_without_madata_group_is_exact_except_counted_rows(tmp_path):
    """Without per-agent observations, Walker2d's local observations come from the clipped state:
    rows with a velocity at +-10 are counted, every other row equals what collect stored."""
    a = collect("walker2d-2x3", tmp_path / "a", mix=["random"], episodes=3, max_steps=60, seed=2)
    h5 = tmp_path / "a.hdf5"
    export_d4rl(tmp_path / "a", h5)
    with h5py.File(h5, "a") as f:
        del f["madata"]
    b = split_d4rl("walker2d", "2x3", tmp_path / "b", source=h5)
    report = b.meta.provenance["report"]
    assert report["local_obs_from"] == "observations" and any("clips velocities" in n for n in report["notes"])
    state = a.transitions(fields=["state"])["state"]
    unsure = (np.abs(state[:, 8:]) >= 10).any(axis=1)
    assert unsure.any() and report["quirks"]["clipped_local_obs_rows"] > 0
    ta, tb = a.transitions(fields=["obs"]), b.transitions(fields=["obs"])
    for k in ta:
        np.testing.assert_array_equal(tb[k][~unsure], ta[k][~unsure])
    with pytest.raises(SchemaError, match="clipped_local_obs_rows"):
        split_d4rl("walker2d", "2x3", tmp_path / "c", source=h5, strict=True)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- D4RL's boundary quirks


def test_quirks_without_next_observations(tmp_path):
    # rows: 0..4 terminal | 5..9 timeout | 10..13 terminal+timeout | 14 timeout (1 step) | 15..19 neither
    src = tmp_path / "q.hdf5"
    d = synthetic_file(src, terminals=[4, 13], timeouts=[9, 13, 14])
    ds = split_d4rl("halfcheetah", "2x3", tmp_path / "ds", source=src)
    r = ds.meta.provenance["report"]
    q = r["quirks"]
    assert q["terminal_final_obs_copied"] == 2 and q["timeout_transitions_dropped"] == 3
    assert q["terminal_and_timeout"] == 1 and q["empty_episodes_dropped"] == 1 and q["final_partial_episode_steps"] == 5
    assert r["examples"]["timeout_transitions_dropped"] == [9, 14, 19] and r["last_row"] == "neither"
    assert ds.episodes.column("length").to_pylist() == [5, 4, 4, 4]
    assert ds.episodes.column("end").to_pylist() == ["terminated", "truncated", "terminated", "truncated"]
    f = mamujoco_split("halfcheetah", "2x3").factorization
    e0, e1, e3 = ds.episode(0), ds.episode(1), ds.episode(3)
    np.testing.assert_array_equal(
        e0.state, np.concatenate([d["observations"][:5], d["observations"][4:5]])
    )  # final copied
    np.testing.assert_array_equal(e1.state, d["observations"][5:10])  # step 9 dropped, its observation is the final one
    np.testing.assert_array_equal(e3.state, d["observations"][15:20])
    for a in ds.agent_ids:
        np.testing.assert_array_equal(e1.actions[a], d["actions"][5:9][:, f.act_index[a]])
        np.testing.assert_array_equal(e1.obs[a], d["observations"][5:10][:, f.obs_index[a]])
    np.testing.assert_array_equal(e1.rewards, d["rewards"][5:9].astype(np.float64))
    with pytest.raises(
        SchemaError, match=r"timeout_transitions_dropped: 3 \(rows \[9, 14, 19\]\); terminal_final_obs_copied: 2"
    ):
        split_d4rl("halfcheetah", "2x3", tmp_path / "strict", source=src, strict=True)
    assert not (tmp_path / "strict").exists()


def test_quirks_with_next_observations(tmp_path):
    src = tmp_path / "q.hdf5"
    d = synthetic_file(src, n=12, terminals=[3], timeouts=[7, 11], next_obs=True)
    ds = split_d4rl("halfcheetah", "2x3", tmp_path / "ds", source=src, strict=True)
    r = ds.meta.provenance["report"]
    assert not any(r["quirks"].values()) and r["last_row"] == "timeout" and r["next_observations"] == "stored"
    assert ds.episodes.column("length").to_pylist() == [4, 4, 4] and ds.num_transitions == 12
    np.testing.assert_array_equal(ds.episode(1).state[-1], d["next_observations"][7])
    # a next observation that is not the next row's observation
    nxt = d["next_observations"].copy()
    nxt[5] += 1
    synthetic_file(src, n=12, terminals=[3], timeouts=[7, 11], next_obs=True, override={"next_observations": nxt})
    ds = split_d4rl("halfcheetah", "2x3", tmp_path / "ds2", source=src)
    assert ds.meta.provenance["report"]["quirks"]["next_observation_mismatches"] == 1
    assert ds.meta.provenance["report"]["examples"]["next_observation_mismatches"] == [5]
    with pytest.raises(SchemaError, match="next_observation_mismatches: 1"):
        split_d4rl("halfcheetah", "2x3", tmp_path / "ds3", source=src, strict=True)


def test_inconsistent_infos_and_wild_actions_are_counted(tmp_path):
    src = tmp_path / "w.hdf5"
    orig = gym_d4rl_file(src, "walker2d", "float32", episodes=2, max_steps=30)
    with h5py.File(src, "a") as f:
        qpos = f["infos/qpos"][()]
        qpos[7, 2] += 0.5  # one row's simulator state disagrees with its observation
        f["infos/qpos"][...] = qpos
        act = f["actions"][()]
        act[3, 0] = 1.5  # outside the action box
        f["actions"][...] = act
    ds = split_d4rl("walker2d", "2x3", tmp_path / "ds", source=src)
    r = ds.meta.provenance["report"]
    assert r["local_obs_from"] == "observations" and r["quirks"]["infos_observation_mismatches"] == 1
    assert r["examples"]["infos_observation_mismatches"] == [7] and r["examples"]["actions_out_of_bounds"] == [3]
    assert any("infos/qpos,qvel disagree" in n for n in r["notes"])
    assert ds.num_transitions == len(orig["rew"])
    with h5py.File(src, "a") as f:
        obs = f["observations"][()]
        obs[4, 3] = np.nan
        f["observations"][...] = obs
    with pytest.raises(SchemaError, match=r"key 'observations' holds NaN or inf in rows \[4\]"):
        split_d4rl("walker2d", "2x3", tmp_path / "ds2", source=src)


# ---------------------------------------------------------------- agent_confs, scores, info


def test_six_agents_and_other_observation_depth(tmp_path):
    src = tmp_path / "hc.hdf5"
    d = synthetic_file(src, n=10, timeouts=[9], next_obs=True, dtype="float64")
    res = ok(
        runner.invoke(
            app,
            ["split-d4rl", "halfcheetah", "6x1", "--agent-obsk", "0", "--source", str(src), "-o", str(tmp_path / "ds")],
        )
    )
    assert "wrote 1 episodes, 10 transitions" in res.output
    ds = madata.open(tmp_path / "ds")
    assert ds.agent_ids == [f"agent_{i}" for i in range(6)] and ds.meta.env["id"] == "halfcheetah-6x1-k0"
    s = mamujoco_split("halfcheetah", "6x1", 0)
    tr = ds.transitions(fields=["action", "obs"])
    for a in ds.agent_ids:
        np.testing.assert_array_equal(tr[f"action/{a}"], d["actions"][:, s.factorization.act_index[a]])
        np.testing.assert_array_equal(tr[f"obs/{a}"], d["observations"][:, s.factorization.obs_index[a]])
    assert [a.observation_space.shape[0] for a in ds.agents] == [
        len(s.factorization.obs_index[a]) for a in ds.agent_ids
    ]
    assert ds.agents[0].observation_space.dtype == "float64"


def test_normalized_scores_in_info(tmp_path):
    src = tmp_path / "h.hdf5"
    d = synthetic_file(src, "hopper", n=10, terminals=[4], timeouts=[9], next_obs=True)
    ok(
        runner.invoke(
            app, ["split-d4rl", "hopper", "3x1", "--source", str(src), "--tier", "expert", "-o", str(tmp_path / "ds")]
        )
    )
    s = json.loads(ok(runner.invoke(app, ["info", str(tmp_path / "ds"), "--json"])).output)
    assert s["reference_scores"] == D4RL_REF["hopper"]
    returns = np.array([d["rewards"][:5].astype(np.float64).sum(), d["rewards"][5:].astype(np.float64).sum()])
    norm = 100 * (returns - D4RL_REF["hopper"]["min"]) / (D4RL_REF["hopper"]["max"] - D4RL_REF["hopper"]["min"])
    assert abs(s["normalized_scores"]["mean"] - norm.mean()) < 1e-9
    assert s["behaviour_labels"]["agent_2"] == {"expert": 2}
    assert s["provenance"]["producer"] == "madata.split-d4rl" and len(s["provenance"]["source"]["sha256"]) == 64
    assert s["provenance"]["d4rl_metadata"] == {}


# ---------------------------------------------------------------- bad input


def _split_cli(tmp_path, src, *args):
    return runner.invoke(app, ["split-d4rl", *args, "--source", str(src), "-o", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "override, match",
    [
        ({"actions": None}, r"missing key 'actions'"),
        ({"rewards": np.zeros(19, np.float32)}, r"key 'rewards' has shape \(19,\), expected \(N,\) with N = 20"),
        ({"terminals": np.zeros(21, bool)}, r"key 'terminals' has shape \(21,\), expected \(N,\) with N = 20"),
        (
            {"actions": np.zeros((20, 3), np.float32)},
            r"key 'actions' has shape \(20, 3\), expected \(N, 6\) .*another task",
        ),
        ({"timeouts": np.full(20, 2)}, r"key 'timeouts' must hold booleans"),
        ({"infos/qpos": np.zeros((20, 9))}, r"has 'infos/qpos' but not 'infos/qvel'"),
        (
            {"next_observations": np.zeros((20, 11), np.float32)},
            r"key 'next_observations' has shape \(20, 11\), expected \(N, 17\)",
        ),
    ],
)
def test_bad_files_name_the_key_and_write_nothing(tmp_path, override, match):
    src = tmp_path / "bad.hdf5"
    synthetic_file(src, timeouts=[9, 19], override=override)
    res = _split_cli(tmp_path, src, "halfcheetah", "2x3")
    assert res.exit_code == 2 and res.output.startswith("madata: error:"), res.output
    assert res.output.strip().count("\n") == 0
    import re

    assert re.search(match, res.output), res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.creating").exists()


def test_file_of_another_task_not_hdf5_unknown_conf(tmp_path):
    hopper = tmp_path / "hopper.hdf5"
    synthetic_file(hopper, "hopper", timeouts=[19])
    res = _split_cli(tmp_path, hopper, "walker2d", "2x3")
    assert res.exit_code == 2 and "key 'observations' has shape (20, 11), expected (N, 17)" in res.output
    assert "another task" in res.output
    text = tmp_path / "notes.hdf5"
    text.write_text("observations,actions\n1,2\n")
    res = _split_cli(tmp_path, text, "hopper", "3x1")
    assert res.exit_code == 2 and "not an HDF5 file" in res.output
    res = _split_cli(tmp_path, hopper, "hopper", "2x3")
    assert res.exit_code == 2 and "unknown agent_conf '2x3' for hopper; MaMuJoCo offers 3x1" in res.output
    assert "halfcheetah: 2x3/6x1" in res.output
    with pytest.raises(UnknownNameError, match="offers 2x3, 6x1"):
        split_d4rl("halfcheetah", "3x2", tmp_path / "out", source=hopper)
    assert not (tmp_path / "out").exists()
    # a file exported from a halfcheetah dataset given as walker2d (same shapes): the madata group tells
    collect("halfcheetah-2x3", tmp_path / "hc", mix=["random"], episodes=1, max_steps=5)
    export_d4rl(tmp_path / "hc", tmp_path / "hc.hdf5")
    with pytest.raises(SchemaError, match="from a HalfCheetah dataset, not Walker2d"):
        split_d4rl("walker2d", "2x3", tmp_path / "out", source=tmp_path / "hc.hdf5")
    assert not (tmp_path / "out").exists()


def test_halfcheetah_and_walker2d_files_told_apart(tmp_path):
    """Same shapes (17 / 6): the root height tells a Walker2d file from a HalfCheetah one."""
    hc = tmp_path / "hc.hdf5"
    obs = np.random.default_rng(0).standard_normal((20, 17)).astype(np.float32) * 0.1
    synthetic_file(hc, timeouts=[19], override={"observations": obs})
    with pytest.raises(SchemaError, match=r"looks like a halfcheetah file, not walker2d.*another task"):
        split_d4rl("walker2d", "2x3", tmp_path / "out", source=hc)
    walker = tmp_path / "walker.hdf5"
    obs[:, 0] += 1.25
    synthetic_file(walker, timeouts=[19], override={"observations": obs})
    with pytest.raises(SchemaError, match="looks like a walker2d file, not halfcheetah"):
        split_d4rl("halfcheetah", "2x3", tmp_path / "out", source=walker)
    assert split_d4rl("walker2d", "2x3", tmp_path / "out", source=walker).num_transitions == 19
    assert not (tmp_path / ".out.creating").exists()


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "s.hdf5"
    synthetic_file(src, n=30, timeouts=[9, 19, 29], next_obs=True)
    calls = {"n": 0}
    real = DatasetWriter.add_episode

    def failing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, *a, **kw)

    monkeypatch.setattr(DatasetWriter, "add_episode", failing)
    with pytest.raises(OSError, match="disk full"):
        split_d4rl("halfcheetah", "2x3", tmp_path / "new", source=src)
    assert not (tmp_path / "new").exists() and not (tmp_path / ".new.creating").exists()
    (tmp_path / "empty").mkdir()  # a directory that was there before stays (empty)
    calls["n"] = 0
    with pytest.raises(OSError):
        split_d4rl("halfcheetah", "2x3", tmp_path / "empty", source=src)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    # a non-empty output is refused before anything is read
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError):
        split_d4rl("halfcheetah", "2x3", tmp_path / "full", source=src)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_default_path_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    res = runner.invoke(app, ["split-d4rl", "halfcheetah", "2x3", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert f"looked for halfcheetah_medium-v2.hdf5 in {tmp_path / 'd4rl'} ($D4RL_DATASET_DIR)" in res.output
    (tmp_path / "d4rl").mkdir()
    synthetic_file(tmp_path / "d4rl" / "halfcheetah_medium_replay-v2.hdf5", timeouts=[19], next_obs=True)
    ok(runner.invoke(app, ["split-d4rl", "halfcheetah", "2x3", "--tier", "medium-replay", "-o", str(tmp_path / "out")]))
    assert madata.open(tmp_path / "out").meta.provenance["source"]["name"] == "halfcheetah_medium_replay-v2.hdf5"
    monkeypatch.delenv("D4RL_DATASET_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(
        DatasetNotFoundError, match=r"home/.d4rl/datasets/walker2d_expert-v2.hdf5: D4RL file not found.*not set"
    ):
        split_d4rl("walker2d", "2x3", tmp_path / "out2", tier="expert")
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        split_d4rl("walker2d", "2x3", tmp_path / "out2", source=tmp_path / "nope.hdf5")


def test_export_refusals(tmp_path, small_dataset):
    path, _, _ = small_dataset
    with pytest.raises(SchemaError, match="export-d4rl writes MaMuJoCo datasets"):
        export_d4rl(path, tmp_path / "x.hdf5")
    collect("hopper-3x1", tmp_path / "h", mix=["random"], episodes=1, max_steps=5)
    export_d4rl(tmp_path / "h", tmp_path / "h.hdf5")
    res = runner.invoke(app, ["export-d4rl", str(tmp_path / "h"), "-o", str(tmp_path / "h.hdf5")])
    assert res.exit_code == 2 and "--overwrite" in res.output
    ok(runner.invoke(app, ["export-d4rl", str(tmp_path / "h"), "-o", str(tmp_path / "h.hdf5"), "--overwrite"]))
    assert not list(tmp_path.glob(".h.hdf5.tmp-*"))
