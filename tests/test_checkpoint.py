"""Behaviour checkpoints: numpy-only loading, safe formats, SB3 export equals SB3's own actions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from madata.behaviour.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from madata.errors import CorruptionError, SchemaError
from tests.conftest import random_checkpoint


def test_roundtrip_and_inference(tmp_path):
    js = random_checkpoint(tmp_path, "halfcheetah-2x3", "medium")
    w = dict(np.load(js.with_suffix(".npz")))
    actor = load_checkpoint(js)
    obs = np.random.default_rng(1).standard_normal((5, 17)).astype(np.float32)
    h = np.maximum(np.maximum(obs @ w["w0"] + w["b0"], 0) @ w["w1"] + w["b1"], 0)
    np.testing.assert_allclose(actor.act(obs), np.tanh(h @ w["mu_w"] + w["mu_b"]), rtol=1e-5, atol=1e-5)
    for i in range(5):  # row-invariant: a row's action does not depend on the batch around it
        np.testing.assert_array_equal(actor.act(obs[i : i + 1]), actor.act(obs)[i : i + 1])
    noisy = actor.act(obs, np.ones((5, 6)))
    assert noisy.shape == (5, 6) and np.all(np.abs(noisy) <= 1) and not np.allclose(noisy, actor.act(obs))
    assert actor.info.level == "medium" and actor.info.obs_dim == 17


def test_no_pickle_and_bad_files(tmp_path):
    js = random_checkpoint(tmp_path, "halfcheetah-2x3", "medium")
    with pytest.raises(SchemaError, match="no behaviour checkpoint"):
        load_checkpoint(tmp_path / "nothing.json")
    obj = json.loads(js.read_text())
    js.write_text(json.dumps({**obj, "version": 99}))
    with pytest.raises(SchemaError, match="version 1"):
        load_checkpoint(js)
    js.write_text(json.dumps(obj))
    np.savez(js.with_suffix(".npz"), obj=np.array([{"a": 1}], dtype=object))  # a pickled object array
    with pytest.raises(CorruptionError):
        load_checkpoint(js)
    js.with_suffix(".npz").unlink()
    with pytest.raises(CorruptionError, match="missing"):
        load_checkpoint(js)


def test_sb3_export_matches_sb3(tmp_path):
    """The numpy actor gives stable-baselines3's own deterministic actions."""
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    from stable_baselines3 import SAC

    from madata.behaviour.train import sb3_actor_weights

    env = gym.make("Hopper-v5")
    model = SAC("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    weights, hidden = sb3_actor_weights(model)
    info = CheckpointInfo(
        task="hopper-3x1",
        env_id="Hopper-v5",
        level="x",
        obs_dim=11,
        act_dim=3,
        hidden=hidden,
        action_low=env.action_space.low.tolist(),
        action_high=env.action_space.high.tolist(),
        train_steps=0,
        seed=0,
    )
    actor = load_checkpoint(save_checkpoint(tmp_path / "x", info, weights))
    obs = np.stack([env.observation_space.sample() for _ in range(8)]).astype(np.float32)
    want, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actor.act(obs), want, rtol=1e-4, atol=1e-5)


def test_train_tiny_run_exports_levels(tmp_path):
    pytest.importorskip("stable_baselines3")
    from madata.behaviour.train import export_snapshot, train_sac
    from madata.errors import DatasetExistsError

    out = train_sac(
        "hopper-3x1",
        tmp_path / "run",
        steps=400,
        snapshots={"medium": 200, "expert": 400},
        save_every=200,
        eval_episodes=1,
        learning_starts=100,
        export_dir=tmp_path / "ck",
    )
    assert set(out) == {"medium", "expert"}
    med = load_checkpoint(out["medium"])
    assert med.info.level == "medium" and med.info.train_steps == 200 and med.info.task == "hopper-3x1"
    assert med.info.average_return is not None and med.info.eval_episodes == 1
    rows = (tmp_path / "run" / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("step,average_return") and len(rows) == 3
    again = export_snapshot(tmp_path / "run", 400, "strong", tmp_path / "ck")
    assert load_checkpoint(again).info.level == "strong"
    with pytest.raises(DatasetExistsError):
        train_sac("hopper-3x1", tmp_path / "run", steps=400, snapshots={}, save_every=200)
    with pytest.raises(SchemaError, match="multiple of save_every"):
        train_sac("hopper-3x1", tmp_path / "run2", steps=400, snapshots={"medium": 250}, save_every=200)
    with pytest.raises(SchemaError, match="MaMuJoCo"):
        train_sac("grid", tmp_path / "run3", steps=400, snapshots={}, save_every=200)
