"""Collection on Dask workers into one sharded dataset (:mod:`madata.sharded`).

The driver splits the episodes still missing into ranges of ``shard_episodes``; each
range is one Dask task, which runs it (:meth:`madata.collect.Plan.run`) into a shard of
its own under a name nobody else uses, and returns what it wrote. The driver alone
commits: as each task finishes, a new root commit record lists its shard. So

* no two writers ever touch one chunk (a shard has one writer) and no data is copied;
* a task that dies with its worker is run again by Dask into a new shard, and the
  half-written one stays unlisted, never read;
* a killed driver leaves every finished shard listed, and ``resume`` collects only the
  ranges no listed shard covers;
* episode ``e`` depends only on the plan and ``e``, so the dataset equals a single-process
  collection with the same arguments, whatever the split.

``workers=K`` starts a ``LocalCluster`` of K single-threaded worker processes bound to
127.0.0.1 (its dashboard too, on a free port); ``scheduler="tcp://host:port"`` uses a
running cluster, whose workers must reach the dataset's URL (object storage, or a shared
file system).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from madata.errors import SchemaError
from madata.location import Location
from madata.schema import Metadata
from madata.sharded import RootRecord, ShardRef, commit_root, create_root, new_shard_path, read_root_record

SHARDS_PER_WORKER = 4  # ranges per worker: load balance, and how much a killed driver's resume recollects


def missing_ranges(record: RootRecord, episodes: int, size: int) -> list[tuple[int, int]]:
    """The episode ranges ``[start, stop)`` of at most ``size`` episodes that no listed shard covers."""
    out, pos = [], 0
    for shard in [*record.shards, ShardRef("", episodes, 0)]:
        end = min(shard.first_episode, episodes)
        out += [(a, min(a + size, end)) for a in range(pos, end, size)]
        pos = max(pos, shard.stop)
    return out


def collect_shard(plan, loc: Location, meta: Metadata, start: int, stop: int):
    """A Dask task: episodes ``start .. stop-1`` of ``plan`` into a new shard of ``loc``; returns its ShardRef.

    The shard is committed once, when it is whole: a task that dies is run again from its first
    episode into a new shard, so commits on the way would buy nothing (and cost a PUT per array
    on object storage). Dask's nanny starts workers with OMP/MKL/OpenBLAS threads at 1, so numpy
    does not oversubscribe the cores."""
    from madata.writer import DatasetWriter

    path = new_shard_path(start)
    with DatasetWriter.create(loc.child(path), meta, commit_every=0, commit_seconds=math.inf) as writer:
        for ep in plan.run(start, stop):
            writer.add_episode(**ep)
    return ShardRef(path, start, stop - start)


def check_cluster(workers: Any, scheduler: str | None) -> int | None:
    """Refuse both or a bad count: ``workers`` (a local cluster's processes, >= 1) or ``scheduler``, or neither."""
    from madata.collect import parse_int  # here: collect imports this module

    if workers is not None and scheduler is not None:
        raise SchemaError("give at most one of workers (--workers, a local Dask cluster) and scheduler (--scheduler)")
    return None if workers is None else parse_int(workers, "workers (--workers)", 1)


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None, memory_limit: str | None = None) -> Iterator[Any]:
    """A Dask client: of a new LocalCluster on 127.0.0.1 (``workers`` processes, each held to ``memory_limit``,
    e.g. "2GB", by Dask's nanny; default: an equal share of the machine's), or of ``scheduler``; None when
    neither is given (the caller runs in this process)."""
    if workers is None and scheduler is None:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SchemaError(
            "Dask workers (--workers, --scheduler) need Dask: pip install 'madata[distributed]' (dask[distributed])"
        ) from None
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit or "auto",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def collect_distributed(
    plan,
    loc: Location,
    meta: Metadata,
    *,
    resume: bool,
    workers: int | None,
    scheduler: str | None,
    shard_episodes: int | None,
    progress: bool,
    report: Callable[[str], None] | None,
) -> RootRecord:
    """Collect ``plan`` on Dask workers into the sharded dataset at ``loc``: created with ``meta``, or, with
    ``resume``, continued (``meta``: the stored metadata). Returns the last root commit record."""
    from dask.distributed import as_completed

    from madata.collect import episode_bar

    record = read_root_record(loc) if resume else create_root(loc, meta)
    with dask_client(workers, scheduler) as client:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        size = shard_episodes or max(1, math.ceil(plan.episodes / (SHARDS_PER_WORKER * n_workers)))
        todo = missing_ranges(record, plan.episodes, size)
        if report:
            report(
                f"collect {plan.task.name}: {len(todo)} shards of up to {size} episodes on {n_workers} Dask workers "
                f"(dashboard {client.dashboard_link})"
            )
        run = secrets.token_hex(3)  # keys name each task's episodes on the dashboard, unique per run
        futures = [
            client.submit(collect_shard, plan, loc, meta, a, b, key=f"collect-shard-{a}-{b}-{run}") for a, b in todo
        ]
        done = plan.episodes - sum(b - a for a, b in todo)
        with episode_bar(plan.episodes, done, f"collect {plan.task.name}", progress) as bar:
            for future in as_completed(futures):
                shard = future.result()
                done += shard.episodes
                record = record.with_shard(shard, complete=done == plan.episodes)
                commit_root(loc, record)
                bar.update(shard.episodes)
                if report:
                    report(f"collect {plan.task.name}: {done:,}/{plan.episodes:,} episodes committed")
    if not record.complete:  # nothing was missing: a resume of a finished collection
        record = RootRecord(record.sequence + 1, record.metadata_sha256, record.shards, True)
        commit_root(loc, record)
    return record
