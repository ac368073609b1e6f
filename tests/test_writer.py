"""Bad input to the writer: clear madata errors, nothing written, nothing overwritten."""

from __future__ import annotations

import numpy as np
import pytest

import madata
from madata.errors import DatasetExistsError, SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete
from tests.conftest import hetero_agents, random_episode


@pytest.fixture
def writer(tmp_path):
    w = madata.create(tmp_path / "ds", hetero_agents(), chunk_rows=8)
    yield w
    w.close()


def good(T=4, **kw):
    return random_episode(hetero_agents(), T, np.random.default_rng(0), **kw)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda e: e["obs"].__setitem__("agent_1", e["obs"]["agent_1"][:-1]),
            r"lengths disagree \(rewards 4, .*obs\['agent_1'\] 4, .* rows\); rewards, flags and actions need T rows",
        ),
        (  # a wrong reward length is not blamed on the observations
            lambda e: e.__setitem__("rewards", np.zeros(3)),
            r"lengths disagree \(rewards 3, terminated 4,",
        ),
        (lambda e: e["obs"].pop("agent_2"), r"obs needs one entry per agent"),
        (
            lambda e: e["actions"].__setitem__("agent_0", np.zeros((4, 2))),
            r"actions\['agent_0'\] has shape \(4, 2\), expected \(4, 1\)",
        ),
        (lambda e: e["actions"].__setitem__("agent_2", np.array([0, 1, 3, 0])), r"outside Discrete range 0..2"),
        (lambda e: e.__setitem__("rewards", np.array([0.0, np.nan, 0, 0])), r"NaN"),
        (lambda e: e.__setitem__("truncated", np.array([False, True, False, True])), r"before the last step"),
        (
            lambda e: e.__setitem__("terminated", np.array([False, False, False, False])),
            r"either terminated or truncated",
        ),
        (lambda e: e.__setitem__("state", np.zeros((5, 3))), r"created without state_space"),
        (lambda e: e.__setitem__("rewards", np.zeros((0,))), r"T >= 1"),
    ],
)
def test_bad_episode(writer, mutate, match):
    ep = good()
    mutate(ep)
    with pytest.raises(SchemaError, match=match):
        writer.add_episode(**ep)
    assert writer.num_episodes == 0
    writer.add_episode(**good())  # the writer is still usable
    assert writer.num_episodes == 1


def test_unknown_behaviour_agent(writer):
    with pytest.raises(SchemaError, match="unknown agent 'agent_9'"):
        writer.add_episode(**good(), behaviour={"agent_9": "x"})


def test_existing_path_is_never_overwritten(tmp_path):
    p = tmp_path / "ds"
    p.mkdir()
    (p / "mine.txt").write_text("precious")
    with pytest.raises(DatasetExistsError, match="not empty"):
        madata.create(p, hetero_agents())
    assert (p / "mine.txt").read_text() == "precious"


def test_second_writer_is_refused(writer):
    with pytest.raises(DatasetExistsError, match="another process"):
        madata.DatasetWriter.resume(writer.root)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(agents=[]), "at least one agent"),
        (dict(agents=[AgentSpec("a", Box.make(0, 1, (2,)), Discrete(2))] * 2), "unique"),
        (dict(agents=[AgentSpec("a/b", Box.make(0, 1, (2,)), Discrete(2))]), "agent id"),
        (dict(agents=hetero_agents(), action_masks=True), "Discrete action spaces"),
        (dict(agents=hetero_agents(), chunk_rows=0), "chunk_rows"),
        (dict(agents=hetero_agents(), env={"x": object()}), "plain JSON"),
    ],
)
def test_bad_spec_writes_nothing(tmp_path, kwargs, match):
    with pytest.raises(SchemaError, match=match):
        madata.create(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_exception_inside_with_keeps_whole_episodes(tmp_path):
    agents = hetero_agents()
    with pytest.raises(RuntimeError):
        with madata.create(tmp_path / "ds", agents, chunk_rows=8, commit_every=0) as w:
            w.add_episode(**good(3))
            w.add_episode(**good(9))
            raise RuntimeError("collector crashed")
    ds = madata.open(tmp_path / "ds")
    assert ds.num_episodes == 2 and not ds.record.complete
    assert madata.verify(tmp_path / "ds").ok


def test_float64_dataset_keeps_float64(tmp_path):
    agents = [AgentSpec("a", Box.make(-2, 2, (3,), "float64"), Box.make(-1, 1, (2,), "float64"))]
    ep = random_episode(agents, 5, np.random.default_rng(0))
    ep["obs"]["a"] = ep["obs"]["a"] + 1e-12  # below float32 resolution
    with madata.create(tmp_path / "ds", agents) as w:
        w.add_episode(**ep)
    got = madata.open(tmp_path / "ds").episode(0)
    assert got.obs["a"].dtype == np.float64
    np.testing.assert_array_equal(got.obs["a"], ep["obs"]["a"])
