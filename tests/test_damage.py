"""Randomized damage: hundreds of single mutations of small stores, each either detected by a madata
error or read back exactly as the clean data. Never a raw Python exception, never silently wrong data.

Stores of several shapes (heterogeneous agents with a discrete one, a global state, per-agent rewards,
length-1 episodes, several episode-table parts; discrete agents with action masks) are damaged one
mutation at a time, the way a disk or a careless script would: byte flips, truncation, deletion,
appended junk, swapped chunk files, JSON edits, a file replaced by a directory. Each case then opens
the store, reads every transition, every episode and the metadata, and runs ``verify``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_episode

import madata
from madata.errors import MadataError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete

KINDS = ("flip", "truncate", "delete", "append", "swap", "json", "dir")
CASES_PER_STORE = 250


def _hetero(path: Path) -> Path:
    """Three heterogeneous agents (one discrete), a state, per-agent rewards, several table parts, length-1 episodes."""
    rng = np.random.default_rng(1)
    agents = [
        AgentSpec("agent_0", Box.make(-np.inf, np.inf, (3,)), Box.make(-1, 1, (1,))),
        AgentSpec("agent_1", Box.make(-5, 5, (4,)), Box.make(-1, 1, (2,))),
        AgentSpec("agent_2", Box.make(-np.inf, np.inf, (3,)), Discrete(3, start=1)),
    ]
    w = madata.create(
        path,
        agents,
        state_space=Box.make(-np.inf, np.inf, (5,)),
        agent_rewards=True,
        chunk_rows=8,
        commit_every=0,
        env={"id": "none"},
        reference_scores={"min": 0, "max": 10},
    )
    for i, T in enumerate([1, 6, 13, 1, 9, 4]):
        w.add_episode(
            **random_episode(agents, T, rng, ("terminated", "truncated")[i % 2], state_dim=5, agent_rewards=True),
            behaviour={"agent_0": "medium", "agent_1": "expert"},
            seed=i,
            provenance={"i": i},
        )
        if i % 2:
            w.commit()  # one episode-table part per commit; the store is left open: parts stay apart
    w.commit()
    return path


def _masked(path: Path) -> Path:
    """Two discrete agents with action masks and a state; closed (one compacted table part)."""
    rng = np.random.default_rng(2)
    agents = [AgentSpec(f"a{i}", Box.make(-1, 1, (2,)), Discrete(4)) for i in range(2)]
    with madata.create(path, agents, state_space=Box.make(-1, 1, (3,)), action_masks=True, chunk_rows=16) as w:
        for i, T in enumerate([3, 20, 1, 7]):
            ep = random_episode(agents, T, rng, "terminated" if i % 2 else "truncated", action_masks=True)
            ep["state"] = np.clip(rng.standard_normal((T + 1, 3)), -1, 1).astype("float32")
            w.add_episode(**ep, behaviour={"a0": "random"}, seed=100 + i)
    return path


def _snapshot(path: Path) -> dict:
    """Everything a user reads from a store: transitions, episodes, the episode table, metadata, spaces."""
    ds = madata.open(path)
    out = {
        "metadata": ds.metadata,
        "spaces": repr(ds.spaces),
        "state": repr(ds.state_space),
        "table": ds.episodes.to_pylist(),
        "transitions": ds.transitions(),
    }
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        out[f"ep{i}"] = (
            ep.obs,
            ep.actions,
            ep.rewards,
            ep.terminated,
            ep.truncated,
            ep.state,
            ep.agent_rewards,
            ep.action_masks,
            ep.info,
        )
    return out


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".madata.lock")


JSON_VALUES = [None, [], {}, "foo", -1, 0, 1, 2.5, 1e300, True, [1, 2], {"x": 1}]


def _edit_json(obj, rng: random.Random):
    """One edit at a random place in a JSON tree: replace a value, delete a key, or nudge a number."""
    paths = []

    def walk(node, trail):
        paths.append(trail)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*trail, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*trail, i))

    walk(obj, ())
    trail = rng.choice(paths[1:]) if len(paths) > 1 else ()
    parent = obj
    for k in trail[:-1]:
        parent = parent[k]
    key = trail[-1] if trail else None
    if key is None:
        return rng.choice(JSON_VALUES)
    current = parent[key]
    action = rng.random()
    if isinstance(current, (int, float)) and not isinstance(current, bool) and action < 0.4:
        parent[key] = current + rng.choice([1, -1, 0.5])
    elif isinstance(parent, dict) and action < 0.6:
        del parent[key]
    else:
        parent[key] = rng.choice(JSON_VALUES)
    return obj


def _mutate(root: Path, kind: str, rng: random.Random) -> str:
    files = _files(root)
    target = rng.choice(files)
    rel = target.relative_to(root)
    if kind == "flip":
        b = bytearray(target.read_bytes())
        if not b:
            return f"flip: {rel} is empty"
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(b))
        return f"flip byte {i} of {rel}"
    if kind == "truncate":
        b = target.read_bytes()
        n = rng.randrange(len(b)) if b else 0
        target.write_bytes(b[:n])
        return f"truncate {rel} to {n} bytes"
    if kind == "delete":
        target.unlink()
        return f"delete {rel}"
    if kind == "append":
        target.write_bytes(target.read_bytes() + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
        return f"append junk to {rel}"
    if kind == "swap":
        chunks = [p for p in files if "/c/" in str(p.relative_to(root)).replace("\\", "/")]
        a, b = rng.sample(chunks, 2)
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        return f"swap {a.relative_to(root)} and {b.relative_to(root)}"
    if kind == "json":
        jsons = [p for p in files if p.suffix == ".json"]
        target = rng.choice(jsons)
        obj = json.loads(target.read_text())
        target.write_text(json.dumps(_edit_json(obj, rng)))
        return f"edit JSON of {target.relative_to(root)}"
    if kind == "dir":
        target.unlink()
        target.mkdir()
        return f"replace {rel} by a directory"
    raise ValueError(kind)


@pytest.fixture(scope="module")
def clean_stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    stores = {"hetero": _hetero(base / "hetero"), "masked": _masked(base / "masked")}
    return {name: (path, _snapshot(path)) for name, path in stores.items()}


@pytest.mark.parametrize("store", ["hetero", "masked"])
def test_every_single_mutation_is_detected_or_harmless(clean_stores, store, tmp_path):
    path, clean = clean_stores[store]
    rng = random.Random(f"damage-{store}")
    outcomes = {k: {"detected": 0, "harmless": 0} for k in KINDS}
    for case in range(CASES_PER_STORE):
        kind = KINDS[case % len(KINDS)]
        work = tmp_path / f"case{case}"
        shutil.copytree(path, work)
        what = _mutate(work, kind, rng)
        try:
            got = _snapshot(work)
        except MadataError:
            outcomes[kind]["detected"] += 1
        except Exception as e:  # the failure this test exists to catch
            pytest.fail(f"{store} case {case} ({what}): raw {type(e).__name__} escaped: {e}")
        else:
            assert _equal(got, clean), f"{store} case {case} ({what}): read back different data without an error"
            outcomes[kind]["harmless"] += 1
        try:
            report = madata.verify(work)
        except Exception as e:
            pytest.fail(f"{store} case {case} ({what}): verify raised {type(e).__name__}: {e}")
        assert isinstance(report.ok, bool)
        shutil.rmtree(work)
    # every kind was exercised, and damage to data (not only to what readers ignore) was caught
    assert all(sum(v.values()) >= CASES_PER_STORE // len(KINDS) for v in outcomes.values()), outcomes
    assert sum(v["detected"] for v in outcomes.values()) > CASES_PER_STORE // 2, outcomes
