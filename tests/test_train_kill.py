"""``madata train cast-bcq`` killed with SIGKILL mid-run, then ``--resume``d, ends with the
same log and weights as a run that was never interrupted (halfcheetah-2x3 data from
``madata collect``, CPU)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from madata_algos.train import load_checkpoint

pytest.importorskip("gymnasium_robotics")

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--vae-hidden",
    "32,32",
    "--actor-hidden",
    "32,32",
    "--critic-hidden",
    "32,32",
    "--n-act",
    "8",
    "--n-target",
    "4",
]


def _madata(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.app", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _train(data: Path, run: Path, *extra: str) -> list[str]:
    return _madata(
        "train",
        "cast-bcq",
        str(data),
        "-o",
        str(run),
        "--steps",
        "60",
        "--eval-every",
        "10",
        "--eval-episodes",
        "1",
        "--batch-size",
        "64",
        "--seed",
        "5",
        "--device",
        "cpu",
        *SMALL,
        *extra,
    )


def _log(run: Path) -> list[dict[str, str]]:
    path = run / "log.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data = tmp_path / "hc.zarr"
    subprocess.run(
        _madata(
            "collect",
            "halfcheetah-2x3",
            "--mix",
            "medium,expert",
            "--episodes",
            "4",
            "--max-steps",
            "100",
            "--seed",
            "0",
            "-o",
            str(data),
        ),
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
    )
    subprocess.run(_train(data, tmp_path / "full"), cwd=ROOT, env=_env(), check=True, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        _train(data, cut), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while len(_log(cut)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; give it more steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_log(cut))
    assert 2 <= done < 6  # killed mid-run, with evaluations (and checkpoints) behind it

    res = subprocess.run(_train(data, cut, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    full, resumed = _log(tmp_path / "full"), _log(cut)
    assert [r["step"] for r in full] == ["10", "20", "30", "40", "50", "60"]
    assert resumed == full  # every loss and evaluation return, to the printed digit
    wa = load_checkpoint(tmp_path / "full" / "checkpoint.pt", "cpu")["model"]
    wb = load_checkpoint(cut / "checkpoint.pt", "cpu")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
