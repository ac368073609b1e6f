"""Datasets on S3 (a moto server on 127.0.0.1) collected by Dask workers (a LocalCluster on 127.0.0.1):
the same data as one process, crash-safe under a killed worker or driver, one writer at a time."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
from test_sharded import assert_same

import madata
from madata.collect import collect
from madata.errors import DatasetExistsError
from madata.location import location
from madata.sharded import read_root_record

moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
distributed = pytest.importorskip(
    "dask.distributed", reason="the Dask tests need dask[distributed] (madata[distributed])"
)
pytest.importorskip("s3fs", reason="the S3 tests need s3fs (madata[s3])")

TASK = dict(task="halfcheetah-2x3", mix=["medium", "expert"], seed=5)


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 with one bucket; yields the storage options that reach it."""
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
    )
    client.create_bucket(Bucket="madata-test")
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    options = {"key": "t", "secret": "t", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    yield {"options": options, "env": env}
    server.stop()


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded Dask worker processes, everything on 127.0.0.1."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as c:
        yield c


def url() -> str:
    return f"s3://madata-test/{uuid.uuid4().hex}.zarr"


def collect_s3(out: str, s3, episodes: int, max_steps: int, **kw):
    """``collect`` of the test task (halfcheetah-2x3, medium and expert per agent, seed 5) to ``out`` on moto."""
    return collect(out=out, episodes=episodes, max_steps=max_steps, storage_options=s3["options"], **TASK, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process collections the distributed ones must equal."""
    root = tmp_path_factory.mktemp("reference")
    return {
        (n, steps): collect(out=root / f"{n}-{steps}", episodes=n, max_steps=steps, **TASK)
        for n, steps in ((8, 40), (6, 400))
    }


def test_workers_write_to_s3_what_one_process_writes_locally(s3, cluster, reference):
    out = url()
    ds = collect_s3(out, s3, 8, 40, scheduler=cluster.scheduler_address, shard_episodes=3)
    assert [r.episodes for r in ds.store.root_record.shards] == [3, 3, 2]
    assert ds.store.root_record.complete
    assert_same(ds, reference[(8, 40)])
    assert ds.metadata["provenance"] == reference[(8, 40)].metadata["provenance"]
    report = madata.verify(out, storage_options=s3["options"])
    assert report.ok and report.notes == [], report.problems
    # a finished collection resumed: nothing to do, nothing changes
    again = collect_s3(out, s3, 8, 40, scheduler=cluster.scheduler_address, resume=True)
    assert again.store.root_record.sequence == ds.store.root_record.sequence


def test_one_process_writes_to_s3_and_resumes_there(s3, reference):
    out, options = url(), s3["options"]

    class Stop(Exception):
        pass

    def stop_after_three(line):
        if "3/8 episodes" in line:
            raise Stop

    with pytest.raises(Stop):  # the collection dies after its third episode; what it added whole is committed
        collect_s3(out, s3, 8, 40, report=stop_after_three)
    assert madata.open(out, storage_options=options).num_episodes == 3
    with pytest.raises(DatasetExistsError, match="holds a different dataset"):
        collect_s3(out, s3, 9, 40, resume=True)
    ds = collect_s3(out, s3, 8, 40, resume=True)
    assert [r.episodes for r in ds.store.root_record.shards] == [3, 5]
    again = collect_s3(out, s3, 8, 40, resume=True)  # finished: nothing written, no empty shard listed
    assert again.store.root_record == ds.store.root_record
    assert_same(ds, reference[(8, 40)])
    assert madata.verify(out, storage_options=options).ok


def test_one_process_killed_hard_on_s3_resumes_to_the_same_dataset(s3, reference, tmp_path):
    """SIGKILL at a random moment after the first root commits: what is listed opens whole, and --resume
    (a new shard after it) ends with the dataset an uninterrupted collection writes."""
    out = url()
    script = (
        "from madata.collect import collect\n"
        f"collect(out={out!r}, episodes=6, max_steps=400, storage_options={s3['options']!r}, envs=1,\n"
        "        commit_every=1, commit_seconds=0, task='halfcheetah-2x3', mix=['medium', 'expert'], seed=5)\n"
    )
    (tmp_path / "one.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "one.py")], cwd=tmp_path)
    loc = location(out, s3["options"])
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if loc.exists("zarr.json") and loc.keys("commits") and read_root_record(loc).num_episodes >= 2:
                seen = read_root_record(loc).num_episodes
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert 2 <= seen < 6, f"killed with {seen} episodes committed"
    killed = madata.open(out, storage_options=s3["options"])
    assert killed.num_episodes >= seen
    assert_same(killed, reference[(6, 400)].select(episodes=list(range(killed.num_episodes))))
    ds = collect_s3(out, s3, 6, 400, resume=True)
    assert_same(ds, reference[(6, 400)])
    assert madata.verify(out, storage_options=s3["options"]).ok


def test_a_killed_worker_loses_and_duplicates_nothing(s3, cluster, reference):
    out = url()
    client = distributed.Client(cluster)
    result = {}

    def run():
        try:
            result["ds"] = collect_s3(out, s3, 6, 400, scheduler=cluster.scheduler_address, shard_episodes=1, envs=1)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    driver = threading.Thread(target=run)
    driver.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and driver.is_alive():
        busy = [w for w, tasks in client.processing().items() if any("collect-shard" in str(t) for t in tasks)]
        if busy:
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            time.sleep(0.3)  # well inside the task: it runs 400 steps per episode
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.02)
    driver.join(timeout=180)
    client.close()
    assert killed is not None, "no task was seen running"
    assert "error" not in result, result.get("error")
    ds = result["ds"]
    assert_same(ds, reference[(6, 400)])
    assert list(ds.episodes.column("episode_id").to_numpy()) == list(range(6))
    assert madata.verify(out, storage_options=s3["options"]).ok


def test_a_killed_driver_resumes_without_recollecting_finished_shards(s3, cluster, reference, tmp_path):
    out = url()
    script = (
        "from madata.collect import collect\n"
        "if __name__ == '__main__':\n"
        f"    collect(out={out!r}, episodes=6, max_steps=400, storage_options={s3['options']!r}, workers=2,\n"
        f"            shard_episodes=1, envs=1, task='halfcheetah-2x3', mix=['medium', 'expert'], seed=5)\n"
    )
    (tmp_path / "driver.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], start_new_session=True, cwd=tmp_path)
    loc = location(out, s3["options"])
    listed = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if loc.exists("zarr.json") and loc.keys("commits"):
                listed = read_root_record(loc).shards
                if len(listed) >= 2:
                    break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its cluster and its workers: the machine is gone
        proc.wait()
    assert 2 <= len(listed) < 6, f"killed with {len(listed)} shards listed"
    ds = collect_s3(out, s3, 6, 400, scheduler=cluster.scheduler_address, shard_episodes=1, resume=True)
    kept = {r.path for r in ds.store.root_record.shards}
    assert {r.path for r in listed} <= kept  # the finished shards were not collected again
    assert len(kept) == 6
    assert_same(ds, reference[(6, 400)])
    assert madata.verify(out, storage_options=s3["options"]).ok


def test_two_collections_at_one_url_one_is_refused(s3, cluster, reference):
    out = url()
    outcomes = []

    def run():
        try:
            outcomes.append(collect_s3(out, s3, 8, 40, scheduler=cluster.scheduler_address))
        except DatasetExistsError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert "a dataset exists there" in str(errors[0])
    ds = madata.open(out, storage_options=s3["options"])
    assert_same(ds, reference[(8, 40)])


def test_the_cli_reads_and_collects_s3_urls(s3, monkeypatch, reference):
    from typer.testing import CliRunner

    from cli.app import app

    for k, v in s3["env"].items():
        monkeypatch.setenv(k, v)
    out = url()
    runner = CliRunner()
    args = ["collect", "halfcheetah-2x3", "--mix", "medium,expert", "--episodes", "8", "--max-steps", "40"]
    args += ["--seed", "5", "-o", out, "--workers", "2"]  # a new LocalCluster: its workers see the AWS_* variables
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert_same(madata.open(out), reference[(8, 40)])
    res = runner.invoke(app, ["verify", out])
    assert res.exit_code == 0 and "OK: " in res.output and "8 episodes" in res.output, res.output
    res = runner.invoke(app, ["info", out, "--json"])
    assert res.exit_code == 0 and '"episodes": 8' in res.output.replace("num_episodes", "episodes"), res.output
    res = runner.invoke(app, args)  # again: refused in one line, exit 2
    assert res.exit_code == 2 and "a dataset exists there" in res.output
    res = runner.invoke(app, [*args, "--scheduler", "tcp://127.0.0.1:1"])
    assert res.exit_code == 2 and "at most one of workers" in res.output
    res = runner.invoke(app, [*args[:-4], "-o", url(), "--shard-episodes", "2"])
    assert res.exit_code == 2 and "applies to a distributed collection" in res.output
    assert np.isfinite(madata.open(out).episodes.column("return").to_numpy()).all()
