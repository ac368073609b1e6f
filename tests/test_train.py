"""A CPU smoke run of ``madata train cast-bcq``: trains, evaluates, resumes with the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

from madata.collect import collect  # noqa: E402
from madata.errors import DatasetExistsError, SchemaError  # noqa: E402
from madata_algos.configs import CastBcqConfig  # noqa: E402
from madata_algos.train import train  # noqa: E402

SMALL = CastBcqConfig(vae_hidden=(32, 32), actor_hidden=(32, 32), critic_hidden=(32, 32), n_target=4, n_act=8)
KW = dict(seed=3, config=SMALL, batch_size=64, eval_every=10, eval_episodes=2, eval_max_steps=30, device="cpu")


@pytest.fixture(scope="module")
def hc_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "hc"
    collect("halfcheetah-2x3", out, mix=["random"], episodes=4, max_steps=60, seed=0, envs=2)
    return out


def test_train_resume_equals_uninterrupted(hc_data, tmp_path):
    full = train(hc_data, tmp_path / "full", steps=20, **KW)
    assert [r["step"] for r in full] == [10, 20] and all(np.isfinite(r["eval_return"]) for r in full)
    assert (tmp_path / "full" / "learning_curve.png").stat().st_size > 1000
    assert full[-1]["eval_normalized"] is not None
    train(hc_data, tmp_path / "cut", steps=10, **KW)  # a run killed right after its step-10 checkpoint
    resumed = train(hc_data, tmp_path / "cut", steps=20, resume=True, **KW)
    for a, b in zip(full, resumed, strict=True):
        assert a["eval_return"] == pytest.approx(b["eval_return"], abs=1e-9) and a["vae"] == b["vae"]
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_input(hc_data, tmp_path):
    with pytest.raises(DatasetExistsError, match="--resume"):
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "x").write_text("mine")
        train(hc_data, tmp_path / "r", steps=5, **KW)
    with pytest.raises(SchemaError, match="at least|>= 1"):
        train(hc_data, tmp_path / "z", steps=0, **KW)


def test_cli_train_and_eval(hc_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    small = ["--vae-hidden", "16,16", "--actor-hidden", "16,16", "--critic-hidden", "16,16", "--n-act", "4"]
    res = runner.invoke(app, ["train", "cast-bcq", str(hc_data), "-o", str(tmp_path / "run"), "--steps", "4",
                              "--eval-every", "4", "--eval-episodes", "1", "--batch-size", "32", *small])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--no-csaa" in runner.invoke(app, ["train", "cast-bcq", "--help"]).output
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--episodes", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["episodes"] == 1
    res = runner.invoke(app, ["train", "cast-bcq", str(hc_data), "-o", str(tmp_path / "x"), "--vae-hidden", "a,b"])
    assert res.exit_code == 2 and "--vae-hidden" in res.output
    res = runner.invoke(app, ["train", "cast-bcq", str(hc_data), "-o", str(tmp_path / "x"), "--bogus"])
    assert res.exit_code == 2


@pytest.mark.slow
def test_grid_cast_bcq_reaches_the_goal(tmp_path):
    """The paper's Section 2.3 example: from 1000 uniform-random episodes, the decentralized
    greedy CAST-BCQ policy walks the 5-step diagonal path to the goal (return 6)."""
    data = tmp_path / "grid"
    collect("grid", data, mix=["random"], episodes=1000, seed=0)
    rows = train(data, tmp_path / "run", steps=1500, seed=0, batch_size=128, eval_every=1500, eval_episodes=1,
                 device="cpu")  # fmt: skip
    assert rows[-1]["eval_return"] == 6.0
