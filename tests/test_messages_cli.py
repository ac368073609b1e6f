"""What a researcher reads: messages that say what is wrong, progress off a terminal, and no noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import madata
from cli.app import app
from cli.errors import run

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = run(app, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def grid_ds(tmp_path_factory):
    from madata.collect import collect

    path = tmp_path_factory.mktemp("grid") / "grid.zarr"
    collect("grid", path, mix=["random"], episodes=12, seed=0)
    return path


def test_info_on_a_file(capsys, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    code, _, err = cli(capsys, "info", f)
    assert code == 2 and "is a file, not a dataset directory" in err


def test_split_d4rl_source_that_is_a_directory(capsys, tmp_path):
    code, _, err = cli(capsys, "split-d4rl", "hopper", "3x1", "--source", tmp_path, "-o", tmp_path / "x.zarr")
    assert code == 2 and "is a directory; --source takes the D4RL HDF5 file itself" in err


def test_export_onto_a_directory(capsys, grid_ds, tmp_path):
    code, _, err = cli(capsys, "export", grid_ds, "-o", tmp_path)
    assert code == 2 and "is a directory; give a file path" in err


def test_empty_combo_name(capsys, tmp_path):
    code, _, err = cli(capsys, "collect", "grid", "--combo", "agent_0=,agent_1=random", "-o", tmp_path / "x")
    assert code == 2 and "an empty name; expected 'agent_0=medium,agent_1=expert'" in err and "--mix" not in err


def test_episode_index_must_be_an_integer(grid_ds):
    with pytest.raises(madata.SchemaError, match="episode index must be an integer, got 1.5"):
        madata.open(grid_ds).episode(1.5)


def test_unknown_behaviour_label_lists_the_labels(grid_ds):
    with pytest.raises(
        madata.errors.UnknownNameError, match=r"no episodes labelled \['bogus'\]; its labels are \['random'\]"
    ):
        madata.open(grid_ds).select(behaviour={"agent_0": "bogus"})


def test_info_shows_every_space_dtype(capsys, tmp_path):
    """Stored dtypes are shown, so a float64 source stored as float32 is visible."""
    from conftest import random_episode, write

    from madata.schema import AgentSpec
    from madata.spaces import Box

    agents = [AgentSpec("a", Box.make(-2, 2, (2,), "float64"), Box.make(-1, 1, (1,)))]
    path = write(tmp_path / "ds", agents, [random_episode(agents, 3, np.random.default_rng(0))])
    code, out, _ = cli(capsys, "info", path)
    assert code == 0 and "Box(2,) float64" in out and "Box(1,) float32" in out


def test_resume_mismatch_names_the_differing_field(capsys, tmp_path):
    out = tmp_path / "g"
    assert cli(capsys, "collect", "grid", "--mix", "random", "--episodes", "4", "--seed", "0", "-o", out)[0] == 0
    code, _, err = cli(
        capsys, "collect", "grid", "--mix", "random", "--episodes", "4", "--seed", "1", "-o", out, "--resume"
    )
    assert code == 2 and "seed: stored 0, requested 1" in err and len(err) < 400


def test_train_progress_lines_off_a_terminal(capsys, grid_ds, tmp_path):
    code, out, err = cli(
        capsys,
        "train",
        "ibcq",
        grid_ds,
        "-o",
        tmp_path / "run",
        "--steps",
        "60",
        "--eval-every",
        "30",
        "--eval-episodes",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    )
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("ibcq grid")]
    assert len([ln for ln in lines if "step" in ln]) == 2 and any("per 1,000 iterations" in ln for ln in lines), err


def test_collect_progress_lines_off_a_terminal(capsys, tmp_path):
    code, _, err = cli(capsys, "collect", "grid", "--mix", "random", "--episodes", "20", "-o", tmp_path / "g")
    lines = [ln for ln in err.splitlines() if ln.startswith("collect grid:")]
    assert code == 0 and len(lines) == 10 and lines[-1].startswith("collect grid: 20/20 episodes")


def test_default_collect_is_quiet_and_leaves_nothing_in_the_working_directory(tmp_path):
    """MuJoCo's warning about gymnasium's half_cheetah.xml is not the user's business, nor is MUJOCO_LOG.TXT."""
    pytest.importorskip("gymnasium_robotics")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.app",
            "collect",
            "halfcheetah-2x3",
            "--mix",
            "medium",
            "--episodes",
            "16",
            "--max-steps",
            "5",
            "-o",
            str(tmp_path / "hc.zarr"),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    assert "settotalmass" not in res.stderr and "WARNING" not in res.stderr
    assert list(cwd.iterdir()) == []
