"""Damaged stores: ``open`` and ``verify`` fail with a madata error naming the array and episodes."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pyarrow as pa
import pytest
import zarr
from typer.testing import CliRunner

import madata
from cli.app import app
from madata.errors import CorruptionError, DatasetNotFoundError, MadataError, SchemaError

runner = CliRunner()


def _fails_everywhere(path, *needles):
    with pytest.raises(MadataError) as e:
        madata.open(path)
    for n in needles:
        assert n in str(e.value), str(e.value)
    report = madata.verify(path)
    assert not report.ok
    text = " ".join(str(p) for p in report.problems)
    for n in needles:
        assert n in text, text
    for cmd in (["verify", str(path)], ["info", str(path)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
    return str(e.value)


def _flip(path, offset=None):
    b = bytearray(path.read_bytes())
    i = len(b) // 2 if offset is None else offset
    b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def test_intact(small_dataset):
    path, _, _ = small_dataset
    assert madata.verify(path).ok
    res = runner.invoke(app, ["verify", str(path)])
    assert res.exit_code == 0 and "OK" in res.output


def test_flipped_byte_in_full_chunk(small_dataset):
    path, _, _ = small_dataset
    _flip(path / "obs/agent_1/c/2/0")  # obs rows 32..47 = episodes 3..5 (obs_offset 0,2,8,39,56,59)
    msg = _fails_everywhere(path, "obs/agent_1 chunk 2", "episodes 2..3")
    assert "rows 32..47" in msg


def test_flipped_byte_in_partial_last_chunk(small_dataset):
    path, _, _ = small_dataset
    ds = madata.open(path)
    last = (ds.record.step_rows - 1) // 16
    _flip(path / f"action/agent_0/c/{last}/0")
    _fails_everywhere(path, f"action/agent_0 chunk {last}", "episodes")


def test_flip_is_caught_on_read_too(small_dataset):
    path, _, eps = small_dataset
    ds = madata.open(path)  # opened before the damage
    _flip(path / "reward/c/1")
    with pytest.raises(CorruptionError, match=r"reward chunk 1 \(rows 16..31, episodes 2..2\)"):
        ds.transitions(fields=["reward"])


def test_deleted_chunk(small_dataset):
    path, _, _ = small_dataset
    (path / "state/c/0/0").unlink()
    _fails_everywhere(path, "state chunk 0", "is missing")


def test_truncated_root_metadata(small_dataset):
    path, _, _ = small_dataset
    p = path / "zarr.json"
    p.write_bytes(p.read_bytes()[:50])
    _fails_everywhere(path, "zarr.json", "truncated")


def test_truncated_array_metadata(small_dataset):
    path, _, _ = small_dataset
    p = path / "obs/agent_2/zarr.json"
    p.write_bytes(p.read_bytes()[:40])
    _fails_everywhere(path, "obs/agent_2")


def test_truncated_commit_record(small_dataset):
    path, _, _ = small_dataset
    p = path / "commit.json"
    p.write_bytes(p.read_bytes()[:30])
    _fails_everywhere(path, "commit.json")


def test_unknown_schema_version(small_dataset):
    path, _, _ = small_dataset
    p = path / "zarr.json"
    obj = json.loads(p.read_text())
    obj["attributes"]["madata"]["schema_version"] = 99
    p.write_text(json.dumps(obj))
    with pytest.raises(SchemaError, match="schema_version 99"):
        madata.open(path)
    _fails_everywhere(path, "schema_version 99")


def test_per_agent_arrays_of_different_lengths(small_dataset):
    path, _, _ = small_dataset
    ds = madata.open(path)
    arr = zarr.open_array(str(path / "obs/agent_1"), mode="r+")
    arr.resize((ds.record.obs_rows - 20, 9))
    _fails_everywhere(path, "obs/agent_1", "were committed", "episodes")


def test_commit_record_with_different_lengths(small_dataset):
    path, _, _ = small_dataset
    p = path / "commit.json"
    obj = json.loads(p.read_text())
    obj["arrays"]["action/agent_1"]["rows"] -= 5
    p.write_text(json.dumps(obj))
    _fails_everywhere(path, "action/agent_1", "different lengths")


def test_missing_episode_table(small_dataset):
    path, _, _ = small_dataset
    for p in (path / "episodes").glob("*.parquet"):
        p.unlink()
    _fails_everywhere(path, "episode table", "missing")


def test_semantic_damage_is_found_by_full_verify(small_dataset):
    """A store whose checksums are consistent but whose flags are wrong (rewritten by hand)."""
    path, _, _ = small_dataset
    arr = zarr.open_array(str(path / "terminated"), mode="r+")
    data = arr[:]
    data[0 : arr.shape[0] : 2] = True  # terminal flags in the middle of episodes
    arr[:] = data
    rec = json.loads((path / "commit.json").read_text())
    C = 16
    crc = [zlib.crc32(np.ascontiguousarray(data[k : k + C]).view(np.uint8)) for k in range(0, len(data), C)]
    stored = [zlib.crc32((path / f"terminated/c/{k}").read_bytes()) for k in range(len(crc))]
    rec["arrays"]["terminated"]["content_crc"] = crc
    rec["arrays"]["terminated"]["stored_crc"] = stored[:-1] + [None] if len(data) % C else stored
    (path / "commit.json").write_text(json.dumps(rec))
    report = madata.verify(path)
    assert any("before the last step" in str(p) for p in report.problems), report.problems


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        madata.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no zarr.json"):
        madata.open(tmp_path / "empty")
    res = runner.invoke(app, ["verify", str(tmp_path / "empty")])
    assert res.exit_code == 2


# ---------------------------------------------------------------- the damage seen by hand, one test each


def _edit_metadata(path, edit):
    p = path / "zarr.json"
    obj = json.loads(p.read_text())
    edit(obj["attributes"]["madata"])
    p.write_text(json.dumps(obj))


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("commit_not_utf8", "not valid UTF-8 JSON"),
        ("commit_is_dir", "is a directory"),
        ("root_is_dir", "is a directory"),
        ("chunk_is_dir", "is a directory"),
        ("node_type_foo", "Zarr v3 group"),
        ("zarr_format_4", "Zarr v3 group"),
        ("agent_entry_empty", "agents[1]"),
        ("state_space_null", "does not match the digest"),
        ("state_space_deleted", "lacks the field 'state_space'"),
        ("agent_rewards_false", "does not match the digest"),
        ("bounds_high_below_low", "low > high"),
        ("table_row_edited", "does not match its digest"),
    ],
)
def test_each_damage_seen_by_hand_is_a_madata_error(small_dataset, damage, needle):
    """The cases found by damaging stores at random: each is one madata error from open, verify and info."""
    import pyarrow.parquet as pq

    path, _, _ = small_dataset
    if damage == "commit_not_utf8":
        b = bytearray((path / "commit.json").read_bytes())
        b[5] = 0xFF
        (path / "commit.json").write_bytes(bytes(b))
    elif damage in ("commit_is_dir", "root_is_dir", "chunk_is_dir"):
        target = {"commit_is_dir": "commit.json", "root_is_dir": "zarr.json", "chunk_is_dir": "obs/agent_0/c/0/0"}[
            damage
        ]
        (path / target).unlink()
        (path / target).mkdir()
    elif damage in ("node_type_foo", "zarr_format_4"):
        obj = json.loads((path / "zarr.json").read_text())
        obj.update({"node_type": "foo"} if damage == "node_type_foo" else {"zarr_format": 4})
        (path / "zarr.json").write_text(json.dumps(obj))
    elif damage == "agent_entry_empty":
        _edit_metadata(path, lambda m: m["agents"].__setitem__(1, []))
    elif damage == "state_space_null":
        _edit_metadata(path, lambda m: m.__setitem__("state_space", None))
    elif damage == "state_space_deleted":
        _edit_metadata(path, lambda m: m.pop("state_space"))
    elif damage == "agent_rewards_false":
        _edit_metadata(path, lambda m: m.__setitem__("agent_rewards", not m["agent_rewards"]))
    elif damage == "bounds_high_below_low":
        _edit_metadata(path, lambda m: m["agents"][2]["observation_space"].__setitem__("high", [-20.0] * 8))
    elif damage == "table_row_edited":
        part = next((path / "episodes").glob("*.parquet"))
        t = pq.read_table(part)
        seeds = t.column("seed").to_pylist()
        seeds[5] = 999
        pq.write_table(t.set_column(t.schema.get_field_index("seed"), "seed", pa.array(seeds, pa.int64())), part)
    _fails_everywhere(path, needle)


def test_deleting_the_partial_chunk_of_an_all_false_array_is_found(tmp_path):
    """An all-False array's only (partial) chunk deleted: zarr would read fill values; madata reads the file."""
    from conftest import hetero_agents, random_episode, write

    rng = np.random.default_rng(0)
    eps = [random_episode(hetero_agents(), 5, rng, "truncated") for _ in range(3)]  # never terminated: all False
    path = write(tmp_path / "ds", hetero_agents(), eps, chunk_rows=64)
    (path / "terminated" / "c" / "0").unlink()
    _fails_everywhere(path, "terminated chunk 0", "missing")


def test_verify_streams_in_bounded_memory(tmp_path):
    """verify holds about two chunks at a time (the encoded bytes and the decoded rows of one chunk), not
    whole arrays: its peak allocation stays under three chunks of the widest array for 4x the data."""
    import tracemalloc

    from conftest import hetero_agents, random_episode, write

    chunk_bytes = 2048 * 64 * 4  # the widest array's chunk: the state, 64 float32 per row
    peaks = []
    for n in (10, 40):  # 10,000 and 40,000 steps: 5 and 20 chunks per array
        rng = np.random.default_rng(0)
        eps = [random_episode(hetero_agents(), 1000, rng, state_dim=64) for _ in range(n)]
        path = write(tmp_path / f"ds{n}", hetero_agents(), eps, state_dim=64, chunk_rows=2048)
        madata.verify(path)  # imports and caches outside the measurement
        tracemalloc.start()
        assert madata.verify(path).ok
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 3 * chunk_bytes, peaks
    assert peaks[1] - peaks[0] < 0.25 * chunk_bytes, peaks  # nothing grows with the number of steps


def _as_legacy(path):
    """Rewrite the commit record as madata 0.1.0 wrote it: parts as bare paths, no metadata digest."""
    rec = json.loads((path / "commit.json").read_text())
    del rec["metadata_sha256"]
    rec["episode_parts"] = [p["path"] for p in rec["episode_parts"]]
    (path / "commit.json").write_text(json.dumps(rec))
    return rec


def test_a_legacy_store_opens_with_a_note_and_upgrade_adds_its_digests(small_dataset):
    path, _, eps = small_dataset
    current = json.loads((path / "commit.json").read_text())
    legacy = _as_legacy(path)
    chunks = {p: p.read_bytes() for p in path.rglob("c/*/*")}
    assert madata.open(path).num_episodes == len(eps)
    report = madata.verify(path)
    assert report.ok and any("written by madata 0.1.0" in n and "madata upgrade" in n for n in report.notes)

    res = runner.invoke(app, ["upgrade", str(path)])
    assert res.exit_code == 0 and "upgraded" in res.output, res.output
    rec = json.loads((path / "commit.json").read_text())
    assert rec["metadata_sha256"] == current["metadata_sha256"]
    assert rec["episode_parts"] == current["episode_parts"]  # the same digests the writer computed
    assert rec["sequence"] == legacy["sequence"] + 1
    assert {p: p.read_bytes() for p in path.rglob("c/*/*")} == chunks  # the data are untouched
    assert not any("0.1.0" in n for n in madata.verify(path).notes)
    res = runner.invoke(app, ["upgrade", str(path)])
    assert res.exit_code == 0 and "nothing to upgrade" in res.output


def test_upgrade_refuses_a_damaged_or_unfinished_legacy_store(small_dataset):
    from madata.integrity import upgrade

    path, _, _ = small_dataset
    _as_legacy(path)
    before = (path / "commit.json").read_bytes()
    _flip(path / "obs/agent_1/c/2/0")
    with pytest.raises(CorruptionError, match=r"not upgraded, verify found 1 problem\(s\), the first: .*obs/agent_1"):
        upgrade(path)
    res = runner.invoke(app, ["upgrade", str(path)])
    assert res.exit_code == 2 and "not upgraded" in res.output and "Traceback" not in res.output
    _flip(path / "obs/agent_1/c/2/0")  # repaired
    rec = json.loads(before)
    rec["complete"] = False
    (path / "commit.json").write_text(json.dumps(rec))
    with pytest.raises(CorruptionError, match="its writer did not close it"):
        upgrade(path)
    assert json.loads((path / "commit.json").read_text()) == rec  # refused: nothing written
