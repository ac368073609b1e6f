"""Every bad input the command line meets: one line on stderr starting ``madata: error:``, exit code 2,
no traceback, and nothing left behind where the check can come before the first byte is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.app import app
from cli.errors import run

ROOT = Path(__file__).resolve().parents[1]
READ_ONLY = Path("/sys/kernel")  # a directory no process may create files in (EPERM/EACCES), even as root


def cli(capsys, *args) -> tuple[int, str, str]:
    code = run(app, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("madata: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def grid_ds(tmp_path_factory):
    from madata.collect import collect

    path = tmp_path_factory.mktemp("grid") / "grid.zarr"
    collect("grid", path, mix=["random"], episodes=20, seed=0)
    return path


@pytest.fixture(scope="module")
def hc_ds(tmp_path_factory):
    pytest.importorskip("gymnasium_robotics")
    from madata.collect import collect

    path = tmp_path_factory.mktemp("hc") / "hc.zarr"
    collect("halfcheetah-2x3", path, mix=["medium"], episodes=2, max_steps=40, seed=0, envs=2)
    return path


@pytest.fixture(scope="module")
def grid_run(grid_ds, tmp_path_factory):
    from madata_algos.train import train

    run_dir = tmp_path_factory.mktemp("run") / "run"
    train(grid_ds, run_dir, algorithm="ibcq", steps=4, batch_size=8, eval_every=4, eval_episodes=1, device="cpu")
    return run_dir


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---------------------------------------------------------------------------- outputs that cannot be written


def test_outputs_on_a_file_system_that_refuses_writes(capsys, grid_ds, hc_ds, tmp_path):
    cases = [
        ["collect", "grid", "--mix", "random", "--episodes", "2", "-o", READ_ONLY / "x.zarr"],
        ["export", grid_ds, "--format", "parquet", "-o", READ_ONLY / "x.parquet"],
        ["export-d4rl", hc_ds, "-o", READ_ONLY / "x.hdf5"],
        ["diagnose", grid_ds, "--report", READ_ONLY / "r.html"],
        [
            "train",
            "ibcq",
            grid_ds,
            "-o",
            READ_ONLY / "run",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--eval-episodes",
            "0",
        ],
    ]
    d4rl = tmp_path / "hc.hdf5"
    assert cli(capsys, "export-d4rl", hc_ds, "-o", d4rl)[0] == 0
    cases.append(["split-d4rl", "halfcheetah", "2x3", "--source", d4rl, "-o", READ_ONLY / "split.zarr"])
    for args in cases:
        code, _, err = cli(capsys, *args)
        one_line_error(code, err, str(READ_ONLY))


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, writes fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
from cli.app import main
sys.argv = ["madata", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("kind", ["collect", "export", "train"])
def test_outputs_on_a_full_disk(kind, grid_ds, tmp_path):
    args = {
        "collect": ["collect", "grid", "--mix", "random", "--episodes", "300", "-o", tmp_path / "x.zarr"],
        "export": ["export", grid_ds, "--format", "parquet", "-o", tmp_path / "x.parquet"],
        "train": [
            "train",
            "ibcq",
            grid_ds,
            "-o",
            tmp_path / "run",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--eval-every",
            "2",
            "--eval-episodes",
            "1",
            "--device",
            "cpu",
        ],
    }[kind]
    res = subprocess.run(
        [sys.executable, "-c", FULL_DISK, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    one_line_error(res.returncode, res.stderr, "cannot be")
    if kind == "export":
        assert not (tmp_path / "x.parquet").exists() and not list(tmp_path.glob(".*tmp*"))


# ---------------------------------------------------------------------------- training options


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--lr", "-1"], "--lr"),
        (["--gamma", "2"], "--gamma"),
        (["--n-act", "0"], "--n-act"),
        (["--device", "cuda"], "--device cuda"),
        (["--device", "tpu"], "--device tpu"),
        (["--eval-max-steps", "0"], "--eval-max-steps"),
        (["--batch-size", "100000"], "batch size 100000"),
        (["--vae-hidden", "3"], "--vae-hidden does not apply to ibcq on discrete actions"),
    ],
)
def test_train_refuses_bad_options_before_writing(capsys, grid_ds, tmp_path, extra, needle):
    if extra[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code, _, err = cli(
        capsys, "train", "ibcq", grid_ds, "-o", tmp_path / "run", "--steps", "2", "--batch-size", "8", *extra
    )
    one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_cast_bcq_refuses_a_continuous_option_on_discrete_data(capsys, grid_ds, tmp_path):
    code, _, err = cli(capsys, "train", "cast-bcq", grid_ds, "-o", tmp_path / "run", "--vae-hidden", "3")
    one_line_error(code, err, "--vae-hidden does not apply to cast-bcq on discrete actions", "--hidden")
    assert not (tmp_path / "run").exists()


def test_eval_refuses_bad_runs_and_options(capsys, grid_run, tmp_path):
    one_line_error(*cli(capsys, "eval", grid_run, "--episodes", "0")[::2], "--episodes")
    cut = _copy_run(grid_run, tmp_path / "cut")
    (cut / "checkpoint.pt").write_bytes((cut / "checkpoint.pt").read_bytes()[:500])
    one_line_error(*cli(capsys, "eval", cut)[::2], "checkpoint.pt")
    flipped = _copy_run(grid_run, tmp_path / "flipped")
    b = bytearray((flipped / "checkpoint.pt").read_bytes())
    b[len(b) // 2] ^= 0x40
    (flipped / "checkpoint.pt").write_bytes(bytes(b))
    one_line_error(*cli(capsys, "eval", flipped)[::2], "checkpoint.pt")
    broken = _copy_run(grid_run, tmp_path / "broken")
    (broken / "config.json").write_text((broken / "config.json").read_text()[:40])
    one_line_error(*cli(capsys, "eval", broken)[::2], "config.json")


def test_resume_refuses_a_damaged_checkpoint(capsys, grid_ds, grid_run, tmp_path):
    flipped = _copy_run(grid_run, tmp_path / "flipped")
    b = bytearray((flipped / "checkpoint.pt").read_bytes())
    b[len(b) // 3] ^= 0x01
    (flipped / "checkpoint.pt").write_bytes(bytes(b))
    code, _, err = cli(
        capsys,
        "train",
        "ibcq",
        grid_ds,
        "-o",
        flipped,
        "--steps",
        "8",
        "--batch-size",
        "8",
        "--eval-every",
        "4",
        "--eval-episodes",
        "1",
        "--device",
        "cpu",
        "--resume",
    )
    one_line_error(code, err, "checkpoint.pt")


# ---------------------------------------------------------------------------- output paths


def test_output_paths_that_are_files_or_directories(capsys, grid_ds, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    for args in (
        ["collect", "grid", "--mix", "random", "--episodes", "2", "-o", a_file],
        ["train", "ibcq", grid_ds, "-o", a_file, "--steps", "2", "--batch-size", "8"],
        ["export", grid_ds, "-o", a_file],
    ):
        one_line_error(*cli(capsys, *args)[::2], str(a_file))
    assert a_file.read_text() == "mine"
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    one_line_error(*cli(capsys, "export", grid_ds, "-o", a_dir, "--overwrite")[::2], "is a directory")
    one_line_error(*cli(capsys, "diagnose", grid_ds, "--report", a_dir)[::2], "is a directory")
    one_line_error(
        *cli(capsys, "diagnose", grid_ds, "--report", tmp_path / "missing" / "r.html")[::2], "does not exist"
    )
    one_line_error(*cli(capsys, "diagnose", grid_ds, "--report", a_file)[::2], "--overwrite")
    assert a_file.read_text() == "mine" and list(a_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]  # no temporary file left anywhere


def test_collect_refuses_a_time_limit_above_the_tasks(capsys, tmp_path):
    pytest.importorskip("gymnasium_robotics")
    code, _, err = cli(
        capsys,
        "collect",
        "halfcheetah-2x3",
        "--mix",
        "medium",
        "--episodes",
        "1",
        "--max-steps",
        "5000",
        "-o",
        tmp_path / "x.zarr",
    )
    one_line_error(code, err, "1000")
    assert not (tmp_path / "x.zarr").exists()


# ---------------------------------------------------------------------------- usage errors and JSON


@pytest.mark.parametrize(
    "args,needle",
    [
        (["collect", "grid", "--mix", "random", "--bogus"], "--bogus"),
        (["collect", "grid", "--mix", "random", "--episodes", "abc", "-o", "x"], "--episodes"),
        (
            ["collect", "grid", "--mix", "random", "--combo", "agent_0=random,agent_1=random", "-o", "x"],
            "--mix and --combo",
        ),
        (["collect", "grid", "-o", "x"], "--mix and --combo"),
        (["info"], "Missing argument"),
        (["nonsense"], "nonsense"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, needle):
    one_line_error(*cli(capsys, *args)[::2], needle)


def test_info_json_is_strict_json(capsys, tmp_path):
    from conftest import random_episode, write

    from madata.schema import AgentSpec
    from madata.spaces import Box

    agents = [AgentSpec("a", Box.make(-np.inf, np.inf, (2,)), Box.make(-1, 1, (1,)))]
    path = write(tmp_path / "ds", agents, [random_episode(agents, 3, np.random.default_rng(0))])
    code, out, _ = cli(capsys, "info", path, "--json")
    assert code == 0
    parsed = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert parsed["agents"][0]["observation"]["bounds"] == ["-inf", "inf"]
