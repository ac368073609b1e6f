"""``diagnose`` part by part (out of core, on Dask workers too) gives the in-memory numbers, in less memory."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc

import numpy as np
import pytest

import madata
from madata.diagnostics import diagnose, streaming
from madata.diagnostics.streaming import Gathered
from madata.schema import AgentSpec
from madata.spaces import Box
from tests.conftest import hetero_agents, random_episode, write
from tests.test_bad_input_cli import cli, one_line_error

SMALL = dict(groups=64, group_size=8, pool=3000, permutations=4, seed=2)


def _answer(d: dict) -> dict:
    """A diagnosis without what says how it was read: the numbers must not depend on that."""
    return {k: v for k, v in d.items() if k not in ("timing_s", "reading")}


def _unbounded(path, episodes: int = 60, state_dim: int = 5, seed: int = 0, steps=(15, 61)) -> madata.Dataset:
    """Two agents whose actions live in an unbounded box (coverage cuts them on the data's own range), with
    a global state and behaviour labels; episodes of ``steps`` (a range) steps."""
    rng = np.random.default_rng(seed)
    agents = [
        AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (3,)), Box.make(-np.inf, np.inf, (2,))) for i in range(2)
    ]
    eps = []
    for _ in range(episodes):
        ep = random_episode(agents, int(rng.integers(*steps)), rng, state_dim=state_dim)
        scale = rng.choice([0.5, 3.0])  # wide and narrow behaviours: the range is not the first part's
        ep["actions"] = {a: (rng.standard_normal(x.shape) * scale).astype(np.float32) for a, x in ep["actions"].items()}
        eps.append(ep)
    return madata.open(write(path, agents, eps, chunk_rows=64, state_dim=state_dim))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ooc")
    rng = np.random.default_rng(1)
    hetero = write(root / "hetero", hetero_agents(), [random_episode(hetero_agents(), 30, rng) for _ in range(40)])
    return {"unbounded-state": _unbounded(root / "unbounded"), "discrete-no-state": madata.open(hetero)}


@pytest.mark.parametrize("name", ["unbounded-state", "discrete-no-state"])
def test_out_of_core_gives_the_in_memory_numbers(datasets, name, monkeypatch):
    ds = datasets[name]
    monkeypatch.setattr(streaming, "PART_TRANSITIONS", 200)  # about ten parts
    memory = diagnose(ds, out_of_core=False, **SMALL)
    parts = diagnose(ds, out_of_core=True, **SMALL)
    assert memory["reading"] == {"out_of_core": False, "parts": None, "dask": False}
    assert parts["reading"]["out_of_core"] and parts["reading"]["parts"] >= 6
    assert _answer(parts) == _answer(memory)
    # every statistic had data to work on: an equality of two skips would pin nothing
    assert "pairs" in parts["dependence"] and parts["types"].get("agents")
    assert parts["state_action_coverage"]["all_states"] is not None
    assert (parts["coverage"]["saco"] is None) == (name == "discrete-no-state")


def test_a_selection_out_of_core(datasets, monkeypatch):
    monkeypatch.setattr(streaming, "PART_TRANSITIONS", 150)
    sel = datasets["unbounded-state"].select(episodes=np.arange(3, 60, 2))
    assert _answer(diagnose(sel, out_of_core=True, **SMALL)) == _answer(diagnose(sel, out_of_core=False, **SMALL))


def test_reading_out_of_core_holds_a_fraction_of_the_states(tmp_path, monkeypatch):
    """A wide state (256 values), episodes of 300 steps and small pools: reading in memory holds every state
    (and SACo's float64 rows), out of core one part, the sampled rows (64 per episode, the pools) and a few
    int64 per transition. The statistics' own working memory is bounded by the pools, whichever way."""
    from madata.diagnostics import coverage
    from madata.diagnostics.core import load_inputs
    from madata.diagnostics.coverage import saco

    ds = _unbounded(tmp_path / "wide", episodes=100, state_dim=256, steps=(300, 301))
    monkeypatch.setattr(streaming, "PART_TRANSITIONS", 500)
    monkeypatch.setattr(coverage, "SA_POOL", 500)
    state_bytes = ds.num_transitions * 256 * 4
    tracemalloc.start()
    inputs = load_inputs(ds)
    saco(inputs["cond"], inputs["actions"])
    in_memory = tracemalloc.get_traced_memory()[1]
    del inputs
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    streamed = streaming.stream_inputs(ds, bins=4, pool=500, seed=0)
    out_of_core = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    assert len(streamed["cond"].rows) < 0.3 * ds.num_transitions  # 64 of 300 steps per episode, and the pools
    assert in_memory > 3 * state_bytes, (in_memory, state_bytes)
    assert out_of_core < 0.45 * state_bytes, (out_of_core, state_bytes)  # the sampled rows: 0.27


def test_gathered_rows_refuse_rows_never_read():
    g = Gathered(10, np.array([1, 4, 7]), np.array([[10.0], [40.0], [70.0]]))
    assert len(g) == 10 and g[np.array([4, 7])].tolist() == [[40.0], [70.0]]
    for bad in ([2], [8], [1, 5]):
        with pytest.raises(IndexError, match="not gathered"):
            g[np.array(bad)]
    with pytest.raises(IndexError):
        Gathered(10, np.zeros(0, np.int64), np.zeros((0, 1)))[np.array([0])]


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs madata[distributed]")
def test_on_dask_workers_with_a_memory_limit(datasets, monkeypatch):
    """Parts read on two worker processes, each capped at 400 MB: the in-memory numbers."""
    from madata.distributed import dask_client

    monkeypatch.setattr(streaming, "PART_TRANSITIONS", 300)  # the driver plans the parts; workers read them
    ds = datasets["unbounded-state"]
    with dask_client(2, None, memory_limit="400MB") as client:
        d = diagnose(ds, client=client, **SMALL)
    assert d["reading"] == {"out_of_core": True, "parts": d["reading"]["parts"], "dask": True}
    assert d["reading"]["parts"] >= 6
    assert _answer(d) == _answer(diagnose(ds, out_of_core=False, **SMALL))


def test_cli_flags(datasets, capsys):
    root = str(datasets["discrete-no-state"].root)
    for args, needle in (
        (["--in-memory", "--workers", "2"], "--workers and --scheduler do not apply"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "at most one of workers"),
        (["--workers", "0"], "expected an integer >= 1"),
    ):
        code, _, err = cli(capsys, "diagnose", root, *args)
        one_line_error(code, err, needle)
    code, out, _ = cli(capsys, "diagnose", root, "--out-of-core", "--json", "--pool", "3000", "--group-size", "8")
    assert code == 0 and json.loads(out)["reading"]["out_of_core"] is True


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs madata[distributed]")
def test_export_on_dask_workers_writes_the_same_table(datasets, tmp_path, capsys):
    """Workers build the groups' tables, the driver writes them in order: the file one process writes."""
    import pyarrow.parquet as pq

    from madata.distributed import dask_client
    from madata.export import export_parquet

    ds = datasets["unbounded-state"].select(episodes=np.arange(1, 60, 2))
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    rows = export_parquet(ds, here, rows_per_group=150)
    with dask_client(2, None) as client:
        assert export_parquet(ds, there, rows_per_group=150, client=client) == rows == ds.num_transitions
    a, b = pq.read_table(here), pq.read_table(there)
    assert a.equals(b) and a.schema.metadata == b.schema.metadata
    assert pq.ParquetFile(there).metadata.num_row_groups >= 8  # many groups, so their order was at stake
    code, _, err = cli(capsys, "export", str(datasets["discrete-no-state"].root), "--table", "episodes", "--workers", "2",
                       "-o", str(tmp_path / "e.parquet"))  # fmt: skip
    one_line_error(code, err, "apply to the transition table in Parquet")
    code, out, _ = cli(capsys, "export", str(datasets["discrete-no-state"].root), "--workers", "2",
                       "-o", str(tmp_path / "w.parquet"))  # fmt: skip
    assert code == 0 and "wrote 1200 transitions" in out


def test_out_of_core_is_chosen_when_memory_would_not_suffice(datasets, monkeypatch):
    """Without a flag: out of core when in memory would need more than half the free memory."""
    from madata.diagnostics import core

    ds = datasets["discrete-no-state"]
    need = core.in_memory_bytes(ds)
    assert need > ds.num_transitions * 4 * (8 + 9 + 8)  # at least the joint observations (float32)
    for free, expected in ((2 * need + 2, False), (2 * need - 2, True), (None, False)):
        monkeypatch.setattr(core, "available_memory", lambda free=free: free)
        assert diagnose(ds, **SMALL)["reading"]["out_of_core"] is expected
