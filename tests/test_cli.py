"""The ``madata`` command: inspection output, JSON, export, one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def test_info_text_and_json(small_dataset):
    path, agents, eps = small_dataset
    res = runner.invoke(app, ["info", str(path)])
    assert res.exit_code == 0, res.output
    assert "12 episodes" in res.output and "agent_1" in res.output and "Box(9,)" in res.output
    res = runner.invoke(app, ["info", str(path), "--json"])
    s = json.loads(res.output)
    assert s["num_episodes"] == 12 and s["num_transitions"] == sum(len(e["rewards"]) for e in eps)
    assert [a["observation"]["shape"] for a in s["agents"]] == [[8], [9], [8]]
    assert s["ends"] == {"terminated": 6, "truncated": 6}
    returns = np.array([e["rewards"].sum() for e in eps])
    assert abs(s["returns"]["mean"] - returns.mean()) < 1e-9
    # behaviour labels: agent k is expert in episodes whose bit k is set
    assert s["behaviour_labels"]["agent_0"] == {"expert": 6, "medium": 6}
    assert sum(v["episodes"] for v in s["behaviour_combinations"].values()) == 12


def test_verify_json(small_dataset):
    path, _, _ = small_dataset
    res = runner.invoke(app, ["verify", str(path), "--json"])
    assert res.exit_code == 0
    rep = json.loads(res.output)
    assert rep["ok"] and rep["num_episodes"] == 12 and rep["problems"] == []


def test_export_parquet(small_dataset, tmp_path):
    path, agents, eps = small_dataset
    out = tmp_path / "flat.parquet"
    res = runner.invoke(app, ["export", str(path), "--format", "parquet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    df = pq.read_table(out).to_pandas()
    assert len(df) == sum(len(e["rewards"]) for e in eps)
    first = df[df.episode_id == 2]
    np.testing.assert_array_equal(np.stack(first.next_obs_agent_1.to_numpy()), eps[2]["obs"]["agent_1"][1:])
    np.testing.assert_array_equal(first.timestep.to_numpy(), np.arange(len(eps[2]["rewards"])))
    assert set(df.behaviour_agent_0) == {"medium", "expert"}
    returns = np.array([e["rewards"].sum() for e in eps])
    np.testing.assert_allclose(df.episode_return.to_numpy(), returns[df.episode_id.to_numpy()])
    assert (first.episode_length == len(eps[2]["rewards"])).all() and (first.episode_seed == 2).all()
    assert set(df.episode_end) == {"terminated", "truncated"}
    assert json.loads(pq.read_schema(out).metadata[b"madata.shapes"])["obs_agent_1"] == [9]
    table = tmp_path / "episodes.parquet"
    res = runner.invoke(app, ["export", str(path), "--table", "episodes", "-o", str(table)])
    assert res.exit_code == 0 and "12 episodes" in res.output, res.output
    episodes = pq.read_table(table).to_pandas()
    assert list(episodes.episode_id) == list(range(12)) and "behaviour_agent_2" in episodes.columns
    np.testing.assert_allclose(episodes["return"].to_numpy(), returns)
    # never overwrite without asking
    res = runner.invoke(app, ["export", str(path), "-o", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert runner.invoke(app, ["export", str(path), "-o", str(out), "--overwrite"]).exit_code == 0


def test_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("madata: error:")
    res = runner.invoke(app, ["collect", "nosuchtask", "--mix", "random", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "known tasks" in res.output and "grid" in res.output
    assert not (tmp_path / "x").exists()


def test_behavior_list_shows_random_the_built_in_levels_and_every_shipped_checkpoint():
    import re

    res = runner.invoke(app, ["behavior", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["(every", "task)", "random"]
    assert lines[1].split()[:2] == ["(smax-*)", "heuristic"] and "create_heuristic_policy" in lines[1]
    for task in ("halfcheetah-2x3", "hopper-3x1", "walker2d-2x3"):
        for level in ("medium", "expert"):
            line = next(ln for ln in lines if ln.split()[:2] == [task, level])
            assert re.search(r"return [0-9.]+ \(std [0-9.]+, 10 episodes\)", line), line
