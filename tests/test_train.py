"""A CPU smoke run of ``madata train cast-bcq``: trains, evaluates, resumes with the same numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

from madata.collect import collect  # noqa: E402
from madata.errors import DatasetExistsError, SchemaError  # noqa: E402
from madata_algos.configs import CastBcqConfig  # noqa: E402
from madata_algos.train import load_checkpoint, train  # noqa: E402

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
    wa = load_checkpoint(tmp_path / "full" / "checkpoint.pt", "cpu")["model"]
    wb = load_checkpoint(tmp_path / "cut" / "checkpoint.pt", "cpu")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_input(hc_data, tmp_path):
    with pytest.raises(DatasetExistsError, match="--resume"):
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "x").write_text("mine")
        train(hc_data, tmp_path / "r", steps=5, **KW)
    with pytest.raises(DatasetExistsError, match="holds no training run"):
        train(hc_data, tmp_path / "r", steps=5, resume=True, **KW)
    assert (tmp_path / "r" / "x").read_text() == "mine"
    with pytest.raises(SchemaError, match="steps .* >= 1"):
        train(hc_data, tmp_path / "z", steps=0, **KW)
    with pytest.raises(SchemaError, match=r"subteams \(--subteams\): must be >= 1, got 0"):
        CastBcqConfig(subteams=0)
    with pytest.raises(SchemaError, match=r"lam \(--lam\): must be <= 1, got 1.5"):
        CastBcqConfig(lam=1.5)


def test_resume_before_the_first_checkpoint_starts_over(hc_data, tmp_path):
    full = train(hc_data, tmp_path / "full", steps=10, **KW)
    cut = tmp_path / "cut"
    train(hc_data, cut, steps=10, **KW)
    (cut / "checkpoint.pt").unlink()  # as if killed before its first evaluation
    (cut / "log.csv").unlink()
    resumed = train(hc_data, cut, steps=10, resume=True, **KW)
    timing = ("train_seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == [
        {k: v for k, v in r.items() if k not in timing} for r in full
    ]


def test_dataset_of_another_task_is_refused(tmp_path):
    from conftest import random_episode, write

    from madata.envs.registry import get_task

    rng = np.random.default_rng(0)
    agents = get_task("grid").make_env().madata_agents()  # the grid's agents ...
    eps = [random_episode(agents, 5, rng, state_dim=2) for _ in range(3)]
    path = write(tmp_path / "d", agents, eps, state_dim=2, env={"id": "halfcheetah-2x3"})  # ... labelled halfcheetah
    with pytest.raises(SchemaError, match="names task 'halfcheetah-2x3'.*another task"):
        train(path, tmp_path / "run", steps=5, **KW)
    assert not (tmp_path / "run").exists()


def test_cli_train_and_eval(hc_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    small = ["--vae-hidden", "16,16", "--actor-hidden", "16,16", "--critic-hidden", "16,16", "--n-act", "4"]
    res = runner.invoke(
        app,
        [
            "train",
            "cast-bcq",
            str(hc_data),
            "-o",
            str(tmp_path / "run"),
            "--steps",
            "4",
            "--eval-every",
            "4",
            "--eval-episodes",
            "1",
            "--batch-size",
            "32",
            *small,
        ],
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"step 4: return -?[0-9.]+ \(std [0-9.]+\); log in", res.output), res.output
    assert "--no-csaa" in runner.invoke(app, ["train", "cast-bcq", "--help"]).output
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--episodes", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["episodes"] == 1
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--episodes", "1"])
    assert re.search(r"return -?[0-9.]+ \(std [0-9.]+\) over 1 episodes, normalized -?[0-9.]+ \(std", res.output), (
        res.output
    )
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
    rows = train(
        data, tmp_path / "run", steps=1500, seed=0, batch_size=128, eval_every=1500, eval_episodes=1, device="cpu"
    )
    assert rows[-1]["eval_return"] == 6.0


# ---------------------------------------------------------------------------- every algorithm through one train()


def test_baseline_resume_equals_uninterrupted(hc_data, tmp_path):
    """MABCQ (an extra optimizer, more random draws per step): resumed == uninterrupted; its log
    names its own losses and config.json names the algorithm."""
    import csv
    import json

    from madata_algos.configs import MabcqConfig

    cfg = MabcqConfig(
        vae_hidden=(16,), actor_hidden=(16,), critic_hidden=(16,), transition_hidden=(16,), n_target=2, n_act=4
    )
    kw = dict(KW, algorithm="mabcq", config=cfg, eval_every=5, eval_max_steps=10)
    full = train(hc_data, tmp_path / "full", steps=10, **kw)
    train(hc_data, tmp_path / "cut", steps=5, **kw)
    resumed = train(hc_data, tmp_path / "cut", steps=10, resume=True, **kw)
    assert [(r["critic"], r["eval_return"]) for r in full] == [(r["critic"], r["eval_return"]) for r in resumed]
    with open(tmp_path / "full" / "log.csv") as f:
        assert next(csv.reader(f)) == [
            "step",
            "transition",
            "vae",
            "critic",
            "actor",
            "eval_return",
            "eval_std",
            "eval_normalized",
            "train_seconds",
            "eval_seconds",
        ]
    settings = json.loads((tmp_path / "full" / "config.json").read_text())
    assert settings["algorithm"] == "mabcq" and settings["decentralized"] and settings["config"]["n_target"] == 2
    with pytest.raises(DatasetExistsError, match="algorithm"):
        train(hc_data, tmp_path / "cut", steps=12, resume=True, **{**kw, "algorithm": "ibcq", "config": None})
    from madata_algos.train import evaluate_run

    assert evaluate_run(tmp_path / "full", episodes=1, device="cpu").episodes == 1  # rebuilds MABCQ from config.json


def test_registry_refuses_bad_input(hc_data, tmp_path):
    import dataclasses

    import madata
    from madata.errors import UnknownNameError
    from madata_algos import registry
    from madata_algos.configs import BcqConfig

    with pytest.raises(UnknownNameError, match="available: cast-bcq, bcq, ibcq, mabcq, icq-ma"):
        train(hc_data, tmp_path / "a", algorithm="qmix", steps=1, **{k: v for k, v in KW.items() if k != "config"})
    with pytest.raises(SchemaError, match="ibcq on continuous actions takes a BcqConfig, got a CastBcqConfig"):
        train(hc_data, tmp_path / "b", algorithm="ibcq", steps=1, **KW)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written
    data = registry.describe(madata.open(hc_data))
    with pytest.raises(SchemaError, match="no global state stored; cast-bcq trains on one"):
        registry.build("cast-bcq", dataclasses.replace(data, state_dim=None), SMALL)
    registry.build(
        "ibcq",
        dataclasses.replace(data, state_dim=None),
        BcqConfig(vae_hidden=(4,), actor_hidden=(4,), critic_hidden=(4,)),
    )
    continuous_only = dataclasses.replace(registry.get("ibcq"), discrete=None)
    with pytest.raises(SchemaError, match="no variant for discrete actions"):
        registry.check_data(continuous_only, dataclasses.replace(data, discrete=True))


def test_every_config_field_is_an_option_with_help_and_documented():
    import dataclasses
    from pathlib import Path

    from madata_algos import registry
    from madata_algos.configs import flag_name

    docs = (Path(__file__).resolve().parents[1] / "docs" / "algorithms.md").read_text()
    for spec in registry.ALGORITHMS.values():
        for variant in spec.variants().values():
            for f in dataclasses.fields(variant.config):
                assert f.metadata.get("help"), f"{variant.config.__name__}.{f.name} has no help"
                option = flag_name(f)
                assert f"`{option}" in docs or f"`--no-{option[2:]}" in docs, (
                    f"{spec.name} {option} missing in docs/algorithms.md"
                )


def test_cli_lists_every_algorithm_and_trains_a_baseline(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.app import app
    from madata_algos import registry

    runner = CliRunner()
    listing = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    for spec in registry.ALGORITHMS.values():
        assert spec.name in listing and spec.summary[:40] in listing
    assert "every agent's observation" in runner.invoke(app, ["train", "bcq", "--help"], terminal_width=200).output
    grid = tmp_path / "grid"
    collect("grid", grid, mix=["random"], episodes=30, seed=0)
    res = runner.invoke(
        app,
        [
            "train",
            "bcq",
            str(grid),
            "-o",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--eval-episodes",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--hidden",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--episodes", "1", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["task"] == "grid"
    res = runner.invoke(
        app, ["train", "mabcq", str(grid), "-o", str(tmp_path / "x"), "--weight-min", "3", "--weight-max", "1"]
    )
    assert res.exit_code == 2 and "weight_min" in res.output and "Traceback" not in res.output


def test_eval_repeats_the_last_logged_evaluation_without_the_dataset(hc_data, tmp_path):
    """`madata eval RUN` by default repeats the run's last evaluation exactly (same episodes, seeds, time
    limit and random draws), and works after the run is moved and the dataset deleted."""
    import shutil

    from madata_algos.train import evaluate_run

    data = tmp_path / "data"
    shutil.copytree(hc_data, data)
    rows = train(data, tmp_path / "run", steps=10, **KW)
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tmp_path / "run", moved)
    shutil.rmtree(tmp_path / "run")
    shutil.rmtree(data)
    res = evaluate_run(moved, device="cpu")
    assert res.mean_return == rows[-1]["eval_return"] and res.episodes == KW["eval_episodes"]
    assert res.seed == 10_000 * (KW["seed"] + 1) and max(res.lengths) <= KW["eval_max_steps"]
    fresh = evaluate_run(moved, episodes=1, seed=5, device="cpu")
    assert fresh.episodes == 1 and fresh.seed == 5


def test_train_from_the_streaming_loader_resumes_exactly(tmp_path):
    """--stream samples from the streaming loader (data larger than memory); its buffer and pass order
    are checkpointed, so a resumed run equals an uninterrupted one."""
    data = tmp_path / "hc-small-chunks"
    # 8 episodes in chunks of 16 rows: 8 ranges for a buffer of 4, refilled as training samples
    collect("halfcheetah-2x3", data, mix=["random"], episodes=8, max_steps=30, seed=0, envs=2, chunk_rows=16)
    kw = dict(KW, stream=True)
    full = train(data, tmp_path / "full", steps=20, **kw)
    train(data, tmp_path / "cut", steps=10, **kw)
    resumed = train(data, tmp_path / "cut", steps=20, resume=True, **kw)
    assert [(r["vae"], r["eval_return"]) for r in full] == [(r["vae"], r["eval_return"]) for r in resumed]
    settings = __import__("json").loads((tmp_path / "full" / "config.json").read_text())
    assert settings["stream"] is True
    plain = train(data, tmp_path / "plain", steps=20, **KW)
    assert [r["vae"] for r in plain] != [r["vae"] for r in full]  # a different sampler, really used


def test_train_without_an_environment_logs_losses(tmp_path):
    """A dataset made with madata.create names no environment: --eval-episodes 0 trains on it anyway."""
    from conftest import random_episode, write

    from madata.schema import AgentSpec
    from madata.spaces import Box

    rng = np.random.default_rng(0)
    agents = [AgentSpec(f"a{i}", Box.make(-1, 1, (3,)), Box.make(-1, 1, (2,))) for i in range(2)]
    path = write(tmp_path / "own", agents, [random_episode(agents, 20, rng) for _ in range(5)])
    with pytest.raises(SchemaError, match="--eval-episodes 0"):
        train(path, tmp_path / "r0", algorithm="ibcq", steps=4, batch_size=16, eval_every=2, device="cpu")
    rows = train(
        path,
        tmp_path / "r1",
        algorithm="ibcq",
        steps=4,
        batch_size=16,
        eval_every=2,
        eval_episodes=0,
        device="cpu",
        config=__import__("madata_algos.configs", fromlist=["BcqConfig"]).BcqConfig(
            vae_hidden=(8,), actor_hidden=(8,), critic_hidden=(8,)
        ),
    )
    assert [r["step"] for r in rows] == [2, 4] and "eval_return" not in rows[-1] and "critic" in rows[-1]
    assert (tmp_path / "r1" / "learning_curve.png").exists()


def test_validation_losses_on_held_out_episodes(tmp_path):
    """--validation holds out a seeded fraction of episodes; the log gains every loss on them, computed without
    a step (so training itself is what it would be on the remaining episodes), and a resumed run repeats them."""
    from conftest import random_episode, write

    from madata.schema import AgentSpec
    from madata.spaces import Box
    from madata_algos.configs import BcqConfig

    rng = np.random.default_rng(0)
    agents = [AgentSpec(f"a{i}", Box.make(-1, 1, (3,)), Box.make(-1, 1, (2,))) for i in range(2)]
    path = write(tmp_path / "own", agents, [random_episode(agents, 20, rng) for _ in range(8)])
    cfg = BcqConfig(vae_hidden=(8,), actor_hidden=(8,), critic_hidden=(8,))
    kw = dict(algorithm="ibcq", batch_size=16, eval_every=2, eval_episodes=0, device="cpu", config=cfg, validation=0.25)
    rows = train(path, tmp_path / "v", steps=4, **kw)
    assert {"val_vae", "val_critic", "val_actor"} <= set(rows[-1]) and rows[-1]["val_critic"] != rows[-1]["critic"]
    settings = __import__("json").loads((tmp_path / "v" / "config.json").read_text())
    assert settings["validation_episodes"] == 2 and settings["selection"] != "all"
    train(path, tmp_path / "cut", steps=2, **kw)
    resumed = train(path, tmp_path / "cut", steps=4, resume=True, **kw)
    timing = ("train_seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows
    ]
    with pytest.raises(SchemaError, match="validation"):
        train(path, tmp_path / "bad", steps=2, **{**kw, "validation": 1.0})


def test_progress_lines_off_a_terminal(hc_data, tmp_path):
    """Under nohup or a scheduler (stderr not a TTY) train reports the expected time after its warm-up and
    one line per evaluation."""
    lines = []
    train(hc_data, tmp_path / "run", steps=80, **dict(KW, eval_every=40), report=lines.append)
    assert len(lines) == 3, lines
    assert lines[0].startswith("cast-bcq halfcheetah-2x3 step 40/80: return") and "it/s" in lines[0]
    assert re.search(r": return -?[0-9.]+ \(std [0-9.]+\)", lines[0]), lines[0]  # the spread is named
    assert "about" in lines[1] and "per 1,000 iterations after 50" in lines[1]
    assert lines[2].startswith("cast-bcq halfcheetah-2x3 step 80/80: return")


def test_training_from_a_url_equals_training_from_the_local_copy(hc_data, tmp_path):
    """A dataset at an fsspec URL (memory:// here, in-process) trains to the same numbers as the same
    episodes on disk, in memory and streamed; config.json records the URL; the CLI takes it."""
    import json
    import uuid

    from typer.testing import CliRunner

    from cli.app import app

    url = f"memory://{uuid.uuid4().hex}/hc.zarr"
    collect("halfcheetah-2x3", url, mix=["random"], episodes=4, max_steps=60, seed=0, envs=2)
    kw = {**KW, "eval_episodes": 0}
    for stream in (False, True):
        local = train(hc_data, tmp_path / f"local-{stream}", steps=10, stream=stream, **kw)
        remote = train(url, tmp_path / f"remote-{stream}", steps=10, stream=stream, **kw)
        losses = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in local]  # not the clocks
        assert losses == [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in remote]
        assert "vae" in losses[0]
    config = json.loads((tmp_path / "remote-True" / "config.json").read_text())
    assert config["dataset"] == url
    res = CliRunner().invoke(
        app,
        [
            "train",
            "ibcq",
            url,
            "-o",
            str(tmp_path / "cli"),
            "--steps",
            "4",
            "--eval-episodes",
            "0",
            "--batch-size",
            "32",
        ],
    )
    assert res.exit_code == 0, res.output
