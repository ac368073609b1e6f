"""combine and subsample: new verified stores, provenance kept, bad requests write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import hetero_agents, random_episode, write
from typer.testing import CliRunner

import madata
from cli.app import app
from madata.errors import DatasetExistsError, SchemaError, UnknownNameError
from madata.integrity import verify
from madata.ops import combine, subsample

LENGTHS = [3, 7, 1, 12, 5, 9, 2, 8, 4, 6, 11, 10]  # 12 episodes: labels by bit k of the index (conftest.write)


def dataset(path, seed: int, lengths=LENGTHS, state_dim: int = 5):
    rng = np.random.default_rng(seed)
    agents = hetero_agents()
    eps = [
        random_episode(agents, T, rng, ("terminated", "truncated")[i % 3 == 0], state_dim, agent_rewards=True)
        for i, T in enumerate(lengths)
    ]
    return write(path, agents, eps, chunk_rows=8, state_dim=state_dim, agent_rewards=True)


def same_data(a: madata.Dataset, b: madata.Dataset) -> None:
    """Every stored field of every transition, and each episode's return, end, seed and labels."""
    ta, tb = a.transitions(), b.transitions()
    assert sorted(ta) == sorted(tb)
    for k in ta:
        if k != "episode_id":
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    keep = ["length", "return", "end", "seed", *[f"behaviour.{x}" for x in a.agent_ids]]
    assert a.episodes.select(keep).to_pylist() == b.episodes.select(keep).to_pylist()


def test_combine_then_subsample_gives_each_source_back(tmp_path):
    a, b = dataset(tmp_path / "a", 0), dataset(tmp_path / "b", 1, lengths=LENGTHS[:5])
    c = combine([a, b], tmp_path / "c")
    assert c.num_episodes == 17 and verify(c.root).ok
    assert [s["episodes"] for s in c.meta.provenance["sources"]] == [12, 5]
    prov = json.loads(c.episode(13).info["provenance"])
    assert prov["source"] == 1 and prov["source_episode"] == 1 and prov["source_provenance"] is None
    same_data(subsample(c, tmp_path / "a2", from_source=0), madata.open(a))
    same_data(subsample(c, tmp_path / "b2", from_source=1), madata.open(b))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary store left behind


def test_subsample_by_count_is_seeded_and_keeps_source_order(tmp_path):
    src = madata.open(dataset(tmp_path / "a", 0))
    one = subsample(src.root, tmp_path / "one", count=5, seed=3)
    again = subsample(src.root, tmp_path / "again", count=5, seed=3)
    other = subsample(src.root, tmp_path / "other", count=5, seed=4)
    ids = one.meta.provenance["episodes"]
    assert ids == sorted(ids) and len(set(ids)) == 5 and ids == again.meta.provenance["episodes"]
    assert ids != other.meta.provenance["episodes"]
    same_data(one, src.select(episodes=ids))
    assert one.meta.provenance["selection"]["seed"] == 3


def test_subsample_by_return_quantile_and_by_labels(tmp_path):
    src = madata.open(dataset(tmp_path / "a", 0))
    ret = src.episodes.column("return").to_numpy()
    top = subsample(src.root, tmp_path / "top", return_quantiles=(0.5, 1.0))
    assert top.meta.provenance["episodes"] == list(np.flatnonzero(ret >= np.median(ret)))
    matched = subsample(src.root, tmp_path / "matched", teams="matched")
    assert matched.meta.provenance["episodes"] == [0, 7, 8]  # labels are the low bits of the index: 000 or 111
    mismatched = subsample(src.root, tmp_path / "mismatched", teams="mismatched")
    assert mismatched.meta.provenance["episodes"] == [i for i in range(12) if i % 8 not in (0, 7)]
    expert0 = subsample(src.root, tmp_path / "e0", behaviour={"agent_0": "expert"}, count=3, seed=0)
    assert len(expert0.meta.provenance["episodes"]) == 3
    assert all(i % 2 == 1 for i in expert0.meta.provenance["episodes"])


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"teams": "matched", "behaviour": {"agent_0": "medium", "agent_1": "expert"}}, SchemaError, "no episode"),
        ({"count": 13}, SchemaError, "count 13 is more than the 12 episodes"),
        ({"count": 0}, SchemaError, "count .* >= 1"),
        ({"return_quantiles": (0.5, 0.2)}, SchemaError, "0 <= LO < HI <= 1"),
        ({"teams": "some"}, SchemaError, "teams must be one of matched, mismatched"),
        ({"behaviour": {"agent_0": "novice"}}, UnknownNameError, "no episodes labelled"),
        ({"from_source": 0}, SchemaError, "not written by combine"),
    ],
)
def test_subsample_refusals_write_nothing(tmp_path, kw, err, match):
    src = dataset(tmp_path / "a", 0)
    with pytest.raises(err, match=match):
        subsample(src, tmp_path / "out", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_combine_refuses_different_tasks_and_existing_outputs(tmp_path):
    a, b = dataset(tmp_path / "a", 0), dataset(tmp_path / "b", 1, state_dim=6)
    with pytest.raises(SchemaError, match=r"b does not match .*a: state_space is Box\(shape=\(6,\)"):
        combine([a, b], tmp_path / "c")
    with pytest.raises(DatasetExistsError, match="exists"):
        combine([a, a], b)
    with pytest.raises(SchemaError, match="at least two"):
        combine([a], tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_cli_combine_and_subsample(tmp_path):
    a, b = dataset(tmp_path / "a", 0), dataset(tmp_path / "b", 1)
    runner = CliRunner()
    res = runner.invoke(app, ["combine", str(a), str(b), "-o", str(tmp_path / "c")])
    assert res.exit_code == 0 and "wrote 24 episodes" in res.output, res.output
    res = runner.invoke(
        app,
        ["subsample", str(tmp_path / "c"), "-o", str(tmp_path / "s"), "--episodes", "4", "--teams", "mismatched"],
    )
    assert res.exit_code == 0 and "wrote 4 episodes" in res.output, res.output
    s = madata.open(tmp_path / "s")
    assert all(len(set(r.values())) > 1 for r in (s.episode(i).behaviour for i in range(4)))
    args = [
        "subsample",
        str(a),
        "-o",
        str(tmp_path / "x"),
        "--behaviour",
        "agent_0=expert",
        "--return-quantiles",
        "0.25,1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    ret = madata.open(a).episodes.column("return").to_numpy()
    want = [i for i in range(12) if i % 2 == 1 and ret[i] >= np.quantile(ret, 0.25)]
    assert madata.open(tmp_path / "x").meta.provenance["episodes"] == want and want
    d = dataset(tmp_path / "d", 2, state_dim=4)
    for args, match in [
        (["combine", str(a), str(d), "-o", str(tmp_path / "y")], "does not match"),
        (["combine", str(a), str(b), "-o", str(tmp_path / "c")], "exists"),
        (["subsample", str(a), "-o", str(tmp_path / "y"), "--return-quantiles", "0.5"], "two numbers"),
        (["subsample", str(a), "-o", str(tmp_path / "y"), "--behaviour", "agent_9=medium"], "unknown agent"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "y").exists()
