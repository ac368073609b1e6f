"""Distributed collection: transitions/s for 1 and 2 Dask workers, to a local disk and to S3, in one run.

For each storage (a local directory; an S3 bucket served by moto on 127.0.0.1, in this
process) and each worker count, a LocalCluster on 127.0.0.1 is started (not timed), then
``madata.collect(..., scheduler=...)`` of ``--transitions`` transitions is timed end to
end: the driver's plan and commits, every task's env construction, stepping, policies
and shard writes. A single-process collection to the local disk is timed beside them.
Each run's dataset is checked to hold the same episode table as the single-process one.

    python benchmarks/scale.py --transitions 100000

On a 2-core machine the moto server and the driver share the two cores with the workers,
which the ratio reflects: each distributed run prints the CPU seconds this process (driver,
and for s3 the moto server) used. The printed load average says what else ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from harness import command_line, machine_line, timed

from madata.collect import collect


class _ServerProcess:
    """A moto server in a process of its own (its CPU is then not this process's GIL)."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the moto server did not start")

    def get_host_and_port(self):
        return "127.0.0.1", self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def s3_server(own_process: bool = False):
    """A moto S3 server on 127.0.0.1 with a bucket, in this process's threads or ``own_process``;
    returns (server, storage options)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if own_process:
        server = _ServerProcess()
    else:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
    ).create_bucket(Bucket="scale")
    return server, {"key": "t", "secret": "t", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def commit_cost(loc_of, counts: list[int], repeats: int = 20) -> dict[int, float]:
    """Median seconds of one root commit (create-if-absent of the next record) listing ``n`` shards."""
    from madata.sharded import RootRecord, ShardRef, commit_root

    out = {}
    for n in counts:
        loc = loc_of(n)
        shards = [ShardRef(f"shards/{i * 250:09d}-0000abcd", i * 250, 250) for i in range(n)]
        times = []
        for r in range(repeats):
            rec = RootRecord(r, "0" * 64, shards)
            t0 = time.perf_counter()
            commit_root(loc, rec)
            times.append(time.perf_counter() - t0)
        out[n] = sorted(times)[len(times) // 2]
    return out


def open_cost(counts: list[int]) -> dict[int, float]:
    """Median seconds (of 3) to open a dataset of ``n`` one-episode shards on S3, moto in its own process."""
    import numpy as np

    import madata
    from madata.schema import AgentSpec
    from madata.sharded import shard_writer
    from madata.spaces import Box

    server, options = s3_server(own_process=True)
    try:
        agents = [AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (12,)), Box.make(-1, 1, (3,))) for i in range(2)]
        rng, T = np.random.default_rng(0), 10
        ep = dict(
            obs={a.id: rng.standard_normal((T + 1, 12), dtype=np.float32) for a in agents},
            actions={a.id: rng.uniform(-1, 1, (T, 3)).astype(np.float32) for a in agents},
            rewards=rng.standard_normal(T),
            terminated=np.zeros(T, bool),
            truncated=np.arange(T) == T - 1,
        )
        url, made, out = "s3://scale/opening.zarr", 0, {}
        for n in counts:
            while made < n:
                first = made == 0
                w = (
                    madata.create(url, agents, storage_options=options)
                    if first
                    else shard_writer(url, resume=True, storage_options=options)
                )
                with w:
                    w.add_episode(**ep)
                made += 1
            out[n] = sorted(timed(lambda: madata.open(url, storage_options=options))[1] for _ in range(3))[1]
        return out
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="halfcheetah-2x3")
    p.add_argument("--transitions", type=int, default=100_000, help="collect ceil(this / 1000) episodes")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--envs", type=int, default=16, help="env copies per worker (and for the single process)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from dask.distributed import LocalCluster

    command = command_line()
    episodes = -(-args.transitions // 1000)
    common = dict(task=args.task, mix=["medium", "expert"], episodes=episodes, seed=0, envs=args.envs)
    tmp = Path(tempfile.mkdtemp(prefix="madata-scale-"))
    server, options = s3_server()
    rows: list[dict] = []
    result = {"command": command, "machine_before": machine_line(), "runs": rows}
    try:
        single, seconds = timed(lambda: collect(out=tmp / "single", **common))
        reference = single.episodes
        rows.append({"storage": "local", "workers": 0, "seconds": seconds, "transitions": single.num_transitions})
        for storage in ("local", "s3"):
            for n in [int(w) for w in args.workers.split(",")]:
                out = str(tmp / f"{storage}-{n}") if storage == "local" else f"s3://scale/{uuid.uuid4().hex}.zarr"
                opts = options if storage == "s3" else None
                with LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
                ) as cluster:
                    cpu0 = time.process_time()
                    ds, seconds = timed(
                        lambda out=out, opts=opts, cluster=cluster: collect(
                            out=out, storage_options=opts, scheduler=cluster.scheduler_address, **common
                        )
                    )
                assert ds.episodes.equals(reference), f"{storage} x{n}: not the single-process dataset"
                rows.append(
                    {
                        "storage": storage,
                        "workers": n,
                        "seconds": seconds,
                        "transitions": ds.num_transitions,
                        "shards": len(ds.store.root_record.shards),
                        # CPU seconds of this process: the driver (plans, commits, the final open) and, for
                        # s3, the moto server's threads, which take cores from the workers on a small machine
                        "driver_cpu_seconds": time.process_time() - cpu0,
                    }
                )
                if storage == "local":
                    shutil.rmtree(out)
        from madata.location import location

        counts = [1, 1000, 10000]
        result["commit_seconds"] = {
            "local": commit_cost(lambda n: location(tmp / f"commits-{n}"), counts),
            "s3": commit_cost(lambda n: location(f"s3://scale/commits-{n}", options), counts),
        }
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine_after"] = machine_line()
    print(f"command: {command}")
    print(f"{result['machine_after']} (before the run: {result['machine_before'].rsplit('load average ', 1)[1]})")
    print(f"task {args.task}, mix medium,expert, {episodes} episodes, --envs {args.envs} per worker")
    base = {r["storage"]: r for r in rows if r["workers"] == 1}
    for r in rows:
        r["rate"] = r["transitions"] / r["seconds"]
        who = "one process, no Dask" if r["workers"] == 0 else f"{r['workers']} Dask worker(s), {r['shards']} shards"
        speedup = f", {r['rate'] / base[r['storage']]['rate']:.2f} x 1 worker" if r["workers"] > 1 else ""
        if "driver_cpu_seconds" in r:
            who += f", driver{' + S3 server' if r['storage'] == 's3' else ''} used {r['driver_cpu_seconds']:.1f} CPU s"
        print(
            f"{r['storage']:>5}, {who}: {r['transitions']:,} transitions in {r['seconds']:.1f} s = {r['rate']:,.0f}/s{speedup}"
        )
    result["open_seconds"] = open_cost([10, 100])
    each = ", ".join(f"{n} shards {sec:.2f} s" for n, sec in result["open_seconds"].items())
    print(f"opening a dataset on S3 (moto in its own process), median of 3: {each}")
    for storage, costs in result["commit_seconds"].items():
        each = ", ".join(f"{n:,} shards {sec * 1000:.1f} ms" for n, sec in costs.items())
        print(f"one root commit (median of 20), {storage}: {each}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
