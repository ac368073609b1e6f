"""Sharded datasets (madata.sharded) on a local directory and on fsspec's memory://: they read exactly
like a single store of the same episodes, and the root commit protocol refuses a second writer."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from conftest import hetero_agents, random_episode, write
from hypothesis import given, settings
from hypothesis import strategies as st

import madata
from madata.distributed import missing_ranges
from madata.errors import CorruptionError, DatasetExistsError, SchemaError
from madata.location import location
from madata.sharded import (
    ConcurrentWriterError,
    RootRecord,
    ShardRef,
    commit_root,
    read_root_record,
    record_key,
    shard_writer,
)

LENGTHS = [1, 5, 30, 16, 2, 17, 1, 9, 30, 4, 12, 7, 3, 21]


def episodes():
    rng = np.random.default_rng(0)
    agents = hetero_agents()
    return agents, [
        random_episode(agents, T, rng, ("terminated", "truncated")[i % 2], state_dim=11) for i, T in enumerate(LENGTHS)
    ]


def labels(i, agents):
    return {a.id: ("medium", "expert")[(i >> k) & 1] for k, a in enumerate(agents)}


def write_sharded(url, agents, eps, splits):
    """Write ``eps`` as one shard per range of ``splits`` (the first creates, the others resume)."""
    bounds = [0, *splits, len(eps)]
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if k == 0:
            state = madata.Box.make(-np.inf, np.inf, (11,))
            w = madata.create(url, agents, state_space=state, chunk_rows=16, sharded=True, commit_every=2)
        else:
            w = shard_writer(url, resume=True, commit_every=2)
        with w:
            assert w.num_episodes == a
            for i in range(a, b):
                assert w.add_episode(**eps[i], behaviour=labels(i, agents), seed=i) == i


def assert_same(a, b):
    """Two datasets (or selections) hold the same episodes: the episode table, the transitions and, for
    whole datasets, every stored array, byte for byte."""
    assert a.episodes.equals(b.episodes)
    assert a.num_transitions == b.num_transitions
    for spec in a.spec.arrays() if a.is_full and b.is_full else []:  # whole stores: every stored row
        x, y = a.store.read_rows(spec.name), b.store.read_rows(spec.name)
        assert x.dtype == y.dtype and np.array_equal(x, y), spec.name
    ta = a.transitions(fields=["obs", "next_obs", "action", "reward", "terminated", "episode_id", "timestep"])
    tb = b.transitions(fields=["obs", "next_obs", "action", "reward", "terminated", "episode_id", "timestep"])
    for key in ta:
        va, vb = ta[key], tb[key]
        if isinstance(va, dict):
            for agent in va:
                assert np.array_equal(va[agent], vb[agent]), (key, agent)
        else:
            assert np.array_equal(va, vb), key


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_sharded_dataset_reads_like_one_store(tmp_path, kind):
    agents, eps = episodes()
    single = madata.open(write(tmp_path / "single", agents, eps, state_dim=11))
    url = str(tmp_path / "sharded") if kind == "local" else f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps, [4, 5, 11])  # shards of 4, 1, 6 and 3 episodes; chunk edges fall inside them
    ds = madata.open(url)
    assert ds.num_episodes == len(eps)
    assert [r.episodes for r in ds.store.root_record.shards] == [4, 1, 6, 3]
    assert_same(ds, single)
    sub_a, sub_b = ds.select(episodes=[2, 3, 4, 5, 12]), single.select(episodes=[2, 3, 4, 5, 12])
    for e_a, e_b in zip(sub_a.iter_episodes(), sub_b.iter_episodes(), strict=True):
        assert e_a.id == e_b.id and np.array_equal(e_a.obs["agent_1"], e_b.obs["agent_1"])
    report = madata.verify(url)
    assert report.ok and report.num_episodes == len(eps) and report.notes == []


def test_readers_take_the_newest_record_and_only_its_prefix_of_each_shard(tmp_path):
    agents, eps = episodes()
    url = tmp_path / "sharded"
    write_sharded(url, agents, eps, [6])
    loc = location(url)
    rec = read_root_record(loc)
    # an older view: the second shard with 3 of its 8 episodes (what a reader saw mid-write)
    older = RootRecord(rec.sequence + 1, rec.metadata_sha256, [rec.shards[0], ShardRef(rec.shards[1].path, 6, 3)])
    commit_root(loc, older)
    ds = madata.open(url)
    assert ds.num_episodes == 9
    assert_same(ds, madata.open(write(tmp_path / "single", agents, eps[:9], state_dim=11)))
    # a shard listed beyond a gap does not count until the gap is filled
    gap = RootRecord(older.sequence + 1, rec.metadata_sha256, [ShardRef(rec.shards[1].path, 6, 8)])
    commit_root(loc, gap)
    assert madata.open(url).num_episodes == 0
    assert any("wait for an earlier gap" in n for n in madata.verify(url).notes)
    with pytest.raises(DatasetExistsError, match=r"episodes 0..5 are missing before committed ones"):
        shard_writer(url, resume=True)  # one process appends at the end: it must not write over a later shard


def test_a_second_writer_is_refused_and_what_was_committed_stays(tmp_path):
    agents, eps = episodes()
    url = tmp_path / "sharded"
    write_sharded(url, agents, eps[:4], [])
    before = madata.open(url)
    first = shard_writer(url, resume=True, commit_every=1, commit_seconds=0)
    # both read record n, each writes its own shard
    second = shard_writer(url, resume=True, commit_every=1, commit_seconds=0)
    first.add_episode(**eps[4], behaviour=labels(4, agents), seed=4)  # first creates record n + 1
    with pytest.raises(ConcurrentWriterError, match="another writer committed record"):
        second.add_episode(**eps[4], behaviour=labels(4, agents), seed=4)
    first.close()
    with pytest.raises(ConcurrentWriterError):
        second.close()
    after = madata.open(url)
    assert after.num_episodes == 5
    assert after.select(episodes=list(range(4))).episodes.equals(before.episodes)
    report = madata.verify(url)
    assert report.ok and any("no commit lists" in n for n in report.notes)  # the loser's shard, never read


def test_creating_over_an_existing_dataset_is_refused(tmp_path):
    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps[:3], [])
    with pytest.raises(DatasetExistsError, match="use --resume"):
        madata.create(url, agents, sharded=True)
    assert madata.open(url).num_episodes == 3
    with pytest.raises(SchemaError, match="always sharded"):
        madata.create(url, agents, sharded=False)
    with pytest.raises(SchemaError, match="storage options apply to fsspec URLs"):
        madata.open(tmp_path / "x", storage_options={"anon": True})


def test_damaged_root_records_are_named_never_skipped(tmp_path):
    agents, eps = episodes()
    url = tmp_path / "sharded"
    write_sharded(url, agents, eps[:3], [])
    loc = location(url)
    seq = read_root_record(loc).sequence
    (url / record_key(seq + 1)).write_text("{not json")
    with pytest.raises(CorruptionError, match=f"{seq + 1:010d}.json: commit record is not valid"):
        madata.open(url)
    (url / record_key(seq + 1)).write_text(json.dumps({"layout": "sharded", "schema_version": 1, "sequence": 7}))
    with pytest.raises(CorruptionError, match="malformed commit record"):
        madata.open(url)
    (url / record_key(seq + 1)).unlink()  # a record naming a shard outside shards/ is refused
    rec = read_root_record(loc)
    bad = {**rec.to_json(), "sequence": seq + 1, "shards": [{"path": "../x", "first_episode": 0, "episodes": 1}]}
    (url / record_key(seq + 1)).write_text(json.dumps(bad))
    with pytest.raises(CorruptionError, match="is not under shards/"):
        madata.open(url)
    (url / record_key(seq + 1)).unlink()
    (url / "zarr.json").write_text((url / "zarr.json").read_text().replace('"description": ""', '"description": "x"'))
    with pytest.raises(CorruptionError, match="does not match the digest"):
        madata.open(url)


def test_damage_inside_a_shard_names_the_shard(tmp_path):
    agents, eps = episodes()
    url = tmp_path / "sharded"
    write_sharded(url, agents, eps, [7])
    shard = read_root_record(location(url)).shards[1].path
    chunk = url / shard / "reward" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3] + b"xyz")
    report = madata.verify(url)
    assert not report.ok and shard in str(report.problems[0]) and "reward chunk 0" in str(report.problems[0])


def test_missing_ranges_fill_the_gaps_in_pieces():
    rec = RootRecord(
        3, "0" * 64, [ShardRef("shards/a", 0, 4), ShardRef("shards/b", 10, 5), ShardRef("shards/c", 18, 2)]
    )
    assert missing_ranges(rec, 25, 3) == [(4, 7), (7, 10), (15, 18), (20, 23), (23, 25)]
    assert missing_ranges(RootRecord(0, "0" * 64), 5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert missing_ranges(RootRecord(1, "0" * 64, [ShardRef("shards/a", 0, 5)]), 5, 2) == []


def test_on_object_storage_open_downloads_no_chunk_and_every_read_checks_them():
    """Opening a remote dataset must not download it: it reads each shard's metadata, commit record and
    episode table; a damaged or missing chunk is found by the read that touches it and by verify
    (``--quick`` lists the chunks instead of reading them)."""
    import fsspec

    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps, [7])
    loc = location(url)
    shard = read_root_record(loc).shards[0].path
    fs = fsspec.filesystem("memory")
    chunk = f"{loc.path}/{shard}/reward/c/0"
    good = fs.cat_file(chunk)
    fs.pipe_file(chunk, good[:-3] + b"xyz")
    ds = madata.open(url)
    with pytest.raises(CorruptionError, match="reward chunk 0"):
        ds.transitions(fields=["reward"])
    assert not madata.verify(url).ok
    assert madata.verify(url, full=False).ok  # present: the quick check lists, it does not read
    fs.rm_file(chunk)
    ds = madata.open(url)
    with pytest.raises(CorruptionError, match=r"reward chunk 0 .* is missing"):
        ds.transitions(fields=["reward"])
    report = madata.verify(url, full=False)
    assert not report.ok and "is missing" in str(report.problems[0]) and shard in str(report.problems[0])
    fs.pipe_file(chunk, good)
    assert madata.verify(url).ok


def test_the_cli_reads_a_dataset_at_a_url(tmp_path):
    """info, verify and export take an fsspec URL (memory:// here: in-process, so the CLI runs in-process too)."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from cli.app import app

    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps, [5])
    runner = CliRunner()
    res = runner.invoke(app, ["verify", url])
    assert res.exit_code == 0 and f"OK: {url}: 14 episodes" in res.output, res.output
    res = runner.invoke(app, ["export", url, "-o", str(tmp_path / "t.parquet")])
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.num_rows == sum(LENGTHS) and table.column("episode_id").to_pylist()[-1] == len(LENGTHS) - 1
    res = runner.invoke(app, ["diagnose", url, "--json"])
    assert res.exit_code == 0 and f'"dataset": "{url}"' in res.output, res.output[-500:]
    res = runner.invoke(app, ["info", f"memory://{uuid.uuid4().hex}/none.zarr"])
    assert res.exit_code == 2 and "none.zarr: no madata dataset at this URL" in res.output, res.output


def test_storage_failures_are_one_madata_error_naming_the_url(monkeypatch):
    from madata.errors import StorageError

    loc = location(f"memory://{uuid.uuid4().hex}/x.zarr")

    def refuse(*args, **kwargs):
        raise RuntimeError("Unable to locate credentials\nmore detail")

    monkeypatch.setattr(loc.fs, "cat_file", refuse)
    with pytest.raises(
        StorageError, match=r"memory://.*/x.zarr: reading failed: RuntimeError: Unable to locate credentials$"
    ):
        loc.read("zarr.json")
    monkeypatch.setattr(loc.fs, "cat_file", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("x")))
    with pytest.raises(FileNotFoundError):  # means "absent" to the caller: not turned into a StorageError
        loc.read("zarr.json")


def test_a_remote_read_fetches_its_chunks_in_one_batch(monkeypatch):
    """transitions() on object storage asks for every chunk it needs at once (read_many), not one by one."""
    from madata.location import FsspecLocation

    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps, [4, 9])
    ds = madata.open(url)
    single, batches = [], []
    read, read_many = FsspecLocation.read, FsspecLocation.read_many
    monkeypatch.setattr(FsspecLocation, "read", lambda self, key: single.append(key) or read(self, key))
    monkeypatch.setattr(FsspecLocation, "read_many", lambda self, keys: batches.append(keys) or read_many(self, keys))
    tr = ds.transitions()
    assert [k for k in single if "/c/" in k] == []  # no chunk read alone
    assert len(batches) == 1 and len(batches[0]) == sum(
        len(store.chunk_keys(spec.name, 0, store.rows(spec.name)))
        for store in ds.store.shards
        for spec in ds.spec.arrays()
    )
    assert len(tr["reward"]) == sum(LENGTHS)


def test_combine_and_subsample_take_sharded_and_remote_sources(tmp_path):
    from madata.ops import combine, subsample

    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"
    write_sharded(url, agents, eps, [6])
    local = write(tmp_path / "single", agents, eps, state_dim=11)
    both = combine([url, local], tmp_path / "both")
    assert both.num_episodes == 2 * len(eps)
    sources = both.meta.provenance["sources"]
    assert sources[0]["path"] == url and len(sources[0]["commit_sha256"]) == 64
    first, src = both.select(episodes=list(range(len(eps)))).transitions(), madata.open(url).transitions()
    assert all(np.array_equal(first[k], src[k]) for k in src)  # (the episode table differs: its provenance)
    part = subsample(url, tmp_path / "part", count=5, seed=0)
    assert part.num_episodes == 5 and "x.zarr" in part.meta.description


def test_a_failed_chunk_write_on_object_storage_is_a_storage_error(monkeypatch):
    from madata.errors import StorageError
    from madata.location import FsspecStore

    agents, eps = episodes()
    url = f"memory://{uuid.uuid4().hex}/x.zarr"

    async def refuse(self, key, value):
        raise PermissionError("Access Denied")

    w = madata.create(url, agents, state_space=madata.Box.make(-np.inf, np.inf, (11,)), chunk_rows=16)
    monkeypatch.setattr(FsspecStore, "set", refuse)
    with pytest.raises(StorageError, match=r"x.zarr/shards/.*: writing failed: PermissionError: Access Denied"):
        with w:
            for e in eps:
                w.add_episode(**e)


def test_zarr_reads_a_sharded_dataset_from_its_root(tmp_path):
    """zarr-python walks from the root group to each shard's arrays: the same numbers madata reads."""
    import zarr

    agents, eps = episodes()
    write_sharded(tmp_path / "sharded", agents, eps, [6])
    root = zarr.open_group(str(tmp_path / "sharded"), mode="r")
    assert root.attrs["madata"]["agents"][0]["id"] == "agent_0"
    refs = read_root_record(location(tmp_path / "sharded")).shards
    ds = madata.open(tmp_path / "sharded")
    rewards = np.concatenate([root[f"{r.path}/reward"][:] for r in refs])
    assert np.array_equal(rewards, ds.store.read_rows("reward"))


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 15)), max_size=8),
    episodes_=st.integers(1, 80),
    size=st.integers(1, 20),
)
def test_missing_ranges_cover_exactly_what_no_shard_holds(spans, episodes_, size):
    """Whatever shards are listed (any gaps, any order of finishing), the ranges a resume collects are the
    episodes no shard holds, each once, in pieces of at most ``size``; and the visible prefix has no gap."""
    shards, taken = [], set()
    for first, n in sorted(spans):
        if n and not taken & set(range(first, first + n)) and first + n <= episodes_:
            shards.append(ShardRef(f"shards/{first}", first, n))
            taken |= set(range(first, first + n))
    rec = RootRecord(1, "0" * 64, shards)
    ranges = missing_ranges(rec, episodes_, size)
    got = [e for a, b in ranges for e in range(a, b)]
    assert sorted(got) == sorted(set(range(episodes_)) - taken) and len(got) == len(set(got))
    assert all(0 < b - a <= size for a, b in ranges)
    assert rec.num_episodes == next((e for e in range(episodes_ + 1) if e not in taken), episodes_)


@pytest.fixture(params=["hard links", "no hard links"])
def links(request, monkeypatch):
    """Both ways a local create-if-absent ends: a hard link, or (file systems without links, where os.link
    fails with EPERM) a rename that refuses to replace."""
    if request.param == "no hard links":
        import errno

        def no_link(src, dst):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))

        monkeypatch.setattr("madata.atomic.os.link", no_link)
    return request.param


def test_create_if_absent_locally_never_replaces_what_appeared_meanwhile(tmp_path, links):
    """The local create-if-absent ends with a hard link (or a no-replace rename): a file another writer put
    there while this one was writing stays as it was, and this one is refused (a rename would have replaced it)."""
    from madata.atomic import atomic_output

    target = tmp_path / "commits" / "0000000001.json"
    target.parent.mkdir()
    with pytest.raises(DatasetExistsError, match="appeared while it was being written"):
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"theirs")  # the other writer, between the check and the commit
    assert target.read_bytes() == b"theirs" and list(target.parent.iterdir()) == [target]


def test_create_if_absent_locally_writes_once_with_or_without_hard_links(tmp_path, links):
    from madata.location import location

    loc = location(tmp_path / "ds")
    loc.create("commits/0000000001.json", b"first")
    with pytest.raises(DatasetExistsError, match=r"0000000001\.json: exists"):
        loc.create("commits/0000000001.json", b"second")
    assert loc.read("commits/0000000001.json") == b"first"
    assert loc.keys() == ["commits/0000000001.json"]  # no temporary file left behind


def test_create_if_absent_without_any_exclusive_rename_is_a_clear_error(tmp_path, monkeypatch):
    """Where the file system has neither hard links nor a no-replace rename, the commit is refused in one
    madata error naming the file, and nothing is left behind."""
    import errno

    from madata.errors import OutputError
    from madata.location import location

    def unsupported(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("madata.atomic.os.link", unsupported)
    monkeypatch.setattr("madata.atomic._rename_noreplace", unsupported)
    loc = location(tmp_path / "ds")
    with pytest.raises(OutputError, match=r"0000000001\.json: cannot be written \(Operation not permitted\)"):
        loc.create("commits/0000000001.json", b"first")
    assert loc.keys() == []


def test_read_many_of_one_key_on_object_storage(tmp_path):
    """fsspec's cat of a one-element list is a dict like any other: one key is fetched, not dropped."""
    import uuid

    from madata.location import location

    loc = location(f"memory://{uuid.uuid4().hex}")
    loc.write("a", b"x")
    assert loc.read_many(["a"]) == {"a": b"x"}
    assert loc.read_many(["a", "missing"]) == {"a": b"x"}
