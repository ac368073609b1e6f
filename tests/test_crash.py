"""A collector killed with SIGKILL at random moments never loses or duplicates a committed episode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import madata
from madata.collect import collect

EPISODES = 400
ARGS = [
    "grid",
    "--mix",
    "random",
    "--episodes",
    str(EPISODES),
    "--seed",
    "7",
    "--commit-every",
    "1",
    "--commit-seconds",
    "0",
    "--chunk-rows",
    "64",
]
ROOT = Path(__file__).resolve().parents[1]


def _start(out: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cli.app", "collect", *ARGS, "-o", str(out)] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _assert_prefix_of(out: Path, ref: madata.Dataset) -> int:
    ds = madata.open(out)
    report = madata.verify(out)
    assert report.ok, report.problems
    n = ds.num_episodes
    assert n <= EPISODES
    if n:
        got, want = ds.transitions(), ref.select(episodes=np.arange(n)).transitions()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        cols = ["episode_id", "length", "return", "end", "seed", "behaviour.agent_0", "behaviour.agent_1"]
        assert ds.episodes.select(cols).equals(ref.episodes.slice(0, n).select(cols))
    return n


def _committed(out: Path) -> int:
    """The commit sequence number a store has reached (-1 before it exists)."""
    try:
        return json.loads((out / "commit.json").read_text())["sequence"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_sigkill_and_resume(tmp_path):
    ref_path = tmp_path / "ref"
    ref = collect("grid", ref_path, mix=["random"], episodes=EPISODES, seed=7, chunk_rows=64)
    rng = np.random.default_rng(0)
    out = tmp_path / "killed"
    counts = []
    for trial in range(20):
        # the first trials are killed early (during start-up and store creation), later ones anywhere after
        # the run has begun to commit (measured from there, so a slow start on a busy machine does not matter)
        proc = _start(out, resume=trial > 0 and out.exists())
        if trial < 4:
            time.sleep(rng.uniform(0.05, 0.8))
        else:
            before = _committed(out)
            deadline = time.time() + 60
            while _committed(out) == before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            counts.append(_assert_prefix_of(out, ref))
    assert counts and max(counts) > 0, "no run got far enough to commit: the kills came too early"
    proc = _start(out, resume=out.exists())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert _assert_prefix_of(out, ref) == EPISODES
    assert madata.open(out).record.complete
