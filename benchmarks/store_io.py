"""Store I/O benchmark: how ``chunk_rows`` shapes write, read, verify and size on disk.

Builds HalfCheetah 2x3 transitions (two agents, each with its own MaMuJoCo local
observation; global state; float32 observations/state/actions, float64 team reward) with
the collector (``madata.collect``, uniformly random actions), then, for each chunk size,
writes them through ``madata.create`` / ``add_episode`` / ``close`` and measures

* write throughput (raw MB/s and rows/s) under several commit policies (``--commit``:
  madata.create's default, every N episodes however fast, only at close), the number
  of commits, and the writer's peak memory allocation (tracemalloc, one extra write),
* size on disk against the raw bytes (``disk/raw``: lower is better),
* ``madata.verify``'s peak allocation (tracemalloc), against the largest chunk of any
  array: it streams, so the peak is a few chunks whatever the store's size,
* ``madata.open`` (quick verify), ``Dataset.transitions()`` of every default field,
  ``Dataset.read_rows`` of every array, and ``madata.verify`` (full),
* 1,000 random ``Dataset.episode(i)`` calls on one opened dataset (its chunk cache on,
  as the API does it), and cold single-episode reads (``read_rows(..., cache=False)`` of
  every array, what one random episode costs when its chunks are not cached).

Real MaMuJoCo data matters: simulator state barely compresses, random normals would
compress differently. ``--sim-steps`` below ``--transitions`` collects fewer steps and
tiles them with a relative perturbation of 1e-3 (it randomizes the low mantissa bits,
as real data has them); by default every transition is collected.

Stores go into a temporary directory (``--tmp``) that is removed afterwards. Reads
are from the page cache (the store was just written): they measure decoding and
checking, not the disk. Each timing is the best of ``--repeat`` runs: on a shared machine
noise only ever adds time (every run is kept in ``--out``'s results.json).

    python benchmarks/store_io.py --transitions 1000000 --chunk-rows 16384,65536,262144

Results and their reading: docs/store.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

import madata
from madata.commit import read_commit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_line, markdown_table  # noqa: E402

MB = 1e6
MiB = 1 << 20


# ---------------------------------------------------------------- data


@dataclass
class Data:
    """Episodes as views into contiguous arrays (time-major)."""

    agent_specs: list[madata.AgentSpec]
    state_space: madata.Box
    env: dict  # the collector's env metadata: a registered task
    episodes: list[dict] = field(default_factory=list)  # add_episode keyword arguments
    sim_steps: int = 0
    sim_seconds: float = 0.0

    @property
    def transitions(self) -> int:
        return sum(len(e["rewards"]) for e in self.episodes)

    def raw_bytes(self) -> int:
        total = 0
        for e in self.episodes:
            total += sum(v.nbytes for v in e["obs"].values()) + sum(v.nbytes for v in e["actions"].values())
            total += e["rewards"].nbytes + e["terminated"].nbytes + e["truncated"].nbytes + e["state"].nbytes
        return total


def perturbed(ep: dict, rng: np.random.Generator, rel: float = 1e-3) -> dict:
    """A copy of ``ep`` with every float multiplied by (1 + rel * N(0, 1)) and fresh random actions."""

    def jitter(x):
        return (x * (1.0 + rel * rng.standard_normal(x.shape))).astype(x.dtype)

    return {
        "obs": {a: jitter(v) for a, v in ep["obs"].items()},
        "actions": {a: rng.uniform(-1.0, 1.0, size=v.shape).astype(v.dtype) for a, v in ep["actions"].items()},
        "rewards": jitter(ep["rewards"]),
        "terminated": ep["terminated"].copy(),
        "truncated": ep["truncated"].copy(),
        "state": jitter(ep["state"]),
    }


def build_data(n: int, episode_len: int, sim_steps: int, seed: int, tmp: Path) -> Data:
    """min(n, sim_steps) transitions of halfcheetah-2x3 from the collector (uniformly random
    actions, episodes of ``episode_len`` steps), read back, then tiled perturbed up to ``n``."""
    from madata.collect import collect

    simulated = min(n, sim_steps)
    t0 = time.perf_counter()
    ds = collect(
        "halfcheetah-2x3",
        tmp / "collected",
        mix=["random"],
        episodes=-(-simulated // episode_len),
        seed=seed,
        max_steps=episode_len,
    )
    data = Data(ds.agents, ds.state_space, env=ds.metadata["env"])
    pool = []
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        pool.append(
            {
                "obs": ep.obs,
                "actions": ep.actions,
                "rewards": ep.rewards,
                "terminated": ep.terminated,
                "truncated": ep.truncated,
                "state": ep.state,
            }
        )
    data.sim_steps, data.sim_seconds = ds.num_transitions, time.perf_counter() - t0
    shutil.rmtree(tmp / "collected")
    rng = np.random.default_rng(seed)
    total = 0
    for ep in pool:  # the collected episodes, the last one cut to n
        keep = min(len(ep["rewards"]), n - total)
        if keep > 0:
            data.episodes.append(ep if keep == len(ep["rewards"]) else _cut(ep, keep))
            total += keep
    k = 0
    while total < n:  # tile the collected episodes, perturbed
        ep = perturbed(pool[k % len(pool)], rng)
        keep = min(len(ep["rewards"]), n - total)
        if keep < len(ep["rewards"]):
            ep = _cut(ep, keep)
        data.episodes.append(ep)
        total += keep
        k += 1
    return data


def _cut(ep: dict, T: int) -> dict:
    end = np.zeros(T, bool)
    end[-1] = True
    return {
        "obs": {a: v[: T + 1] for a, v in ep["obs"].items()},
        "actions": {a: v[:T] for a, v in ep["actions"].items()},
        "rewards": ep["rewards"][:T],
        "terminated": np.zeros(T, bool),
        "truncated": end,
        "state": ep["state"][: T + 1],
    }


# ---------------------------------------------------------------- measuring


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def parse_policy(text: str) -> dict:
    """A commit policy: ``default`` (madata.create's own), ``close`` (only at close), or N (every N episodes)."""
    text = text.strip()
    if text == "default":
        return {}
    if text == "close":
        return {"commit_every": 0}
    try:
        n = int(text)
    except ValueError:
        raise SystemExit(f"--commit: expected 'default', 'close' or a number of episodes, got {text!r}") from None
    if n < 1:
        raise SystemExit(f"--commit: a number of episodes must be >= 1, got {n} (use 'close' for no commits)")
    return {"commit_every": n, "commit_seconds": 0.0}  # exactly every n episodes, however fast


def policy_label(text: str) -> str:
    if text == "default":
        return "madata.create default"
    return "commit at close" if text == "close" else f"commit every {text} ep"


def write_store(data: Data, path: Path, chunk_rows: int, policy: str, trace: bool = False) -> tuple[float, int]:
    """Write every episode through madata.create / add_episode / close.

    Returns the seconds taken or, with ``trace``, the peak of memory allocated meanwhile
    (Python objects and numpy buffers, traced by tracemalloc, which slows the write), and
    the number of commits (the commit record's sequence number).
    """
    shutil.rmtree(path, ignore_errors=True)
    if trace:
        tracemalloc.start()
    t = time.perf_counter()
    w = madata.create(
        path,
        data.agent_specs,
        state_space=data.state_space,
        env=data.env,
        description="benchmarks/store_io.py",
        chunk_rows=chunk_rows,
        **parse_policy(policy),
    )
    for ep in data.episodes:
        w.add_episode(**ep)
    w.close()
    seconds = time.perf_counter() - t
    commits = read_commit(path).sequence
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, commits
    return seconds, commits


def measure(
    data: Data, chunk_rows: int, tmp: Path, policies: list[str], n_episode: int, n_cold: int, seed: int, trace: bool
) -> dict:
    path = tmp / f"store-{chunk_rows}"
    r: dict = {"chunk_rows": chunk_rows}

    # write: the first policy goes last, leaving the store the reads below use
    if trace:
        r["write_peak_bytes"], _ = write_store(data, path, chunk_rows, policies[0], trace=True)
    for pol in policies[1:] + policies[:1]:
        r[f"write[{pol}]_s"], r[f"commits[{pol}]"] = write_store(data, path, chunk_rows, pol)
    r["disk_bytes"] = disk_bytes(path)

    # open (quick verify)
    t = time.perf_counter()
    ds = madata.open(path)
    r["open_s"] = time.perf_counter() - t
    if ds.num_transitions != data.transitions:
        raise SystemExit(f"{path}: holds {ds.num_transitions} transitions, {data.transitions} were written")

    # every default field as flat transitions; the first call in a process that has not held
    # that much memory yet also pays the kernel for fresh pages, so the second is timed too
    for key in ("transitions_s", "transitions2_s"):
        t = time.perf_counter()
        tr = ds.transitions()
        r[key] = time.perf_counter() - t
        r["transitions_bytes"] = sum(v.nbytes for v in tr.values())
        del tr

    # read_rows of every stored array
    t = time.perf_counter()
    nbytes = 0
    for s in ds.spec.arrays():
        nbytes += ds.read_rows(s.name).nbytes
    r["read_rows_s"] = time.perf_counter() - t
    r["read_rows_bytes"] = nbytes

    # madata.verify, full: its time, then (traced, which slows it) its peak allocation
    t = time.perf_counter()
    report = madata.verify(path)
    r["verify_s"] = time.perf_counter() - t
    if not report.ok:
        raise SystemExit(f"verify failed on a freshly written store: {[str(p) for p in report.problems]}")
    if trace:
        tracemalloc.start()
        madata.verify(path)
        r["verify_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        r["largest_chunk_bytes"] = max(
            min(chunk_rows, ds.store.rows(a.name)) * int(np.prod(a.feature_shape)) * np.dtype(a.dtype).itemsize
            for a in ds.spec.arrays()
        )

    # 1k random Dataset.episode(i) on one opened dataset (chunk cache as the API uses it)
    rng = np.random.default_rng(seed)
    ds = madata.open(path, verify="none")
    idx = rng.integers(0, ds.num_episodes, n_episode)
    t = time.perf_counter()
    for i in idx:
        ds.episode(int(i))
    r["episode_s"] = time.perf_counter() - t

    # cold random episode: read its rows of every array without the cache
    table = ds.episodes
    step_off, obs_off, length = (table.column(c).to_numpy() for c in ("step_offset", "obs_offset", "length"))
    names = [(s.name, s.rows) for s in ds.spec.arrays()]
    idx = rng.integers(0, ds.num_episodes, n_cold)
    t = time.perf_counter()
    for e in idx:
        for name, rows in names:
            lo = obs_off[e] if rows == "obs" else step_off[e]
            hi = lo + length[e] + (1 if rows == "obs" else 0)
            ds.read_rows(name, int(lo), int(hi), cache=False)
    r["cold_episode_s"] = (time.perf_counter() - t) / max(n_cold, 1)

    shutil.rmtree(path)
    return r


def writer_buffer_bytes(data: Data, chunk_rows: int) -> int:
    """What the writer holds in memory: one chunk of rows per array (its tail)."""
    ep = data.episodes[0]
    per_row = sum(v[0].nbytes for v in ep["obs"].values()) + sum(v[0].nbytes for v in ep["actions"].values())
    per_row += ep["rewards"][:1].nbytes + 2 * ep["terminated"][:1].nbytes + ep["state"][0].nbytes
    return per_row * chunk_rows


def best_result(runs: list[dict]) -> dict:
    """Each timing's minimum over the runs; a write's commit count comes from its fastest run."""
    out = dict(runs[0])
    for k in runs[0]:
        if k.endswith("_s"):
            best = min(runs, key=lambda r: r[k])
            out[k] = best[k]
            if k.startswith("write["):
                commits = "commits" + k[len("write") : -len("_s")]
                out[commits] = best[commits]
    return out


# ---------------------------------------------------------------- reporting


def versions() -> str:
    out = []
    for name in ("madata", "zarr", "numcodecs", "numpy", "pyarrow", "mujoco", "gymnasium-robotics"):
        try:
            out.append(f"{name} {importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def tables(results: list[dict], data: Data, policies: list[str], n_episode: int) -> str:
    """Two markdown tables: writing and size, then reading and checking."""
    n, raw = data.transitions, data.raw_bytes()
    head = ["chunk_rows", "writer buffer MiB"]
    for pol in policies:
        head.append(f"write MB/s (Mrows/s; commits), {policy_label(pol)}")
    head += ["write peak alloc MiB", "disk MB", "disk/raw"]
    head = ["chunk_rows", *head[1:]]
    rows = []
    for r in results:
        row = [f"{r['chunk_rows']:,}", f"{writer_buffer_bytes(data, r['chunk_rows']) / MiB:.1f}"]
        for pol in policies:
            sec = r[f"write[{pol}]_s"]
            row.append(f"{raw / MB / sec:.0f} ({n / 1e6 / sec:.2f}; {r[f'commits[{pol}]']})")
        row += [f"{r['write_peak_bytes'] / MiB:.0f}", f"{r['disk_bytes'] / MB:.1f}", f"{r['disk_bytes'] / raw:.3f}"]
        rows.append(row)
    out = markdown_table(head, rows)
    head = [
        "chunk_rows",
        "open (quick) s",
        "transitions() s, 1st / 2nd call",
        "transitions() Mrows/s, 2nd call",
        "read_rows all MB/s",
        "verify (full) s",
        "verify peak alloc MiB (largest chunks)",
        f"{n_episode:,} episode() s",
        "cold episode ms",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['chunk_rows']:,}",
                f"{r['open_s']:.3f}",
                f"{r['transitions_s']:.2f} / {r['transitions2_s']:.2f}",
                f"{n / 1e6 / r['transitions2_s']:.2f}",
                f"{r['read_rows_bytes'] / MB / r['read_rows_s']:.0f}",
                f"{r['verify_s']:.2f}",
                f"{r['verify_peak_bytes'] / MiB:.1f} ({r['verify_peak_bytes'] / r['largest_chunk_bytes']:.1f})",
                f"{r['episode_s']:.2f}",
                f"{r['cold_episode_s'] * 1e3:.1f}",
            ]
        )
    return "\n".join([out, "", markdown_table(head, rows)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", type=int, default=1_000_000, help="transitions (step rows) to write")
    p.add_argument("--chunk-rows", default="16384,65536,262144", help="comma-separated chunk sizes to compare")
    p.add_argument("--episode-len", type=int, default=1000, help="steps per episode (HalfCheetah truncates at 1000)")
    p.add_argument(
        "--sim-steps", type=int, default=None, help="steps to simulate (default: all); the rest is tiled and perturbed"
    )
    p.add_argument(
        "--commit",
        default="default,10,close",
        help="comma-separated commit policies to time writes with: 'default' (madata.create's), N (every N "
        "episodes, however fast) or 'close' (only at close); the first leaves the store the reads use",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per chunk size; the best is reported")
    p.add_argument("--episodes", type=int, default=1000, help="random Dataset.episode(i) calls to time")
    p.add_argument("--cold", type=int, default=50, help="cold random episode reads to average")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tmp", type=Path, default=None, help="where the temporary stores go (default: the system temp dir)"
    )
    p.add_argument("--out", type=Path, default=None, help="also write results.md and results.json into this directory")
    args = p.parse_args(argv)
    chunk_sizes = [int(c) for c in args.chunk_rows.split(",") if c.strip()]
    policies = list(dict.fromkeys(c.strip() for c in args.commit.split(",") if c.strip()))
    if not chunk_sizes or not policies:
        p.error("--chunk-rows and --commit need at least one value each")
    for pol in policies:
        parse_policy(pol)
    sim_steps = args.transitions if args.sim_steps is None else args.sim_steps

    command = "python benchmarks/store_io.py " + shlex.join(
        [
            "--transitions",
            str(args.transitions),
            "--chunk-rows",
            ",".join(map(str, chunk_sizes)),
            "--episode-len",
            str(args.episode_len),
            "--sim-steps",
            str(sim_steps),
            "--commit",
            ",".join(policies),
            "--repeat",
            str(args.repeat),
            "--episodes",
            str(args.episodes),
            "--cold",
            str(args.cold),
            "--seed",
            str(args.seed),
        ]
    )
    mach = machine_line() + "; " + versions()
    print(f"# {command}", file=sys.stderr)
    results: list[dict] = []
    all_runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="madata-store-io-", dir=args.tmp) as tmp:
        data = build_data(args.transitions, args.episode_len, sim_steps, args.seed, Path(tmp))
        raw = data.raw_bytes()
        print(
            f"# data: {data.transitions:,} transitions in {len(data.episodes)} episodes, {raw / MB:.1f} MB raw; "
            f"collected {data.sim_steps:,} steps in {data.sim_seconds:.1f} s "
            f"({data.sim_steps / max(data.sim_seconds, 1e-9):,.0f} steps/s)",
            file=sys.stderr,
        )
        t_all = time.perf_counter()
        # warm-up: lazy imports and one-time allocations stay out of the first measurement
        small = Data(data.agent_specs, data.state_space, data.env, data.episodes[:2])
        write_store(small, Path(tmp) / "warm-up", 1024, policies[0])
        shutil.rmtree(Path(tmp) / "warm-up")
        for C in chunk_sizes:
            runs = []
            for k in range(args.repeat):
                t = time.perf_counter()
                runs.append(measure(data, C, Path(tmp), policies, args.episodes, args.cold, args.seed + k, k == 0))
                print(f"# chunk_rows={C} run {k + 1}/{args.repeat}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
            results.append(best_result(runs))
            all_runs += runs
    t_all = time.perf_counter() - t_all

    a0 = data.agent_specs[0]
    lines = [
        f"Command: `{command}`",
        "",
        mach.replace("machine: ", "Machine: ", 1),
        "",
        f"Data: {data.transitions:,} HalfCheetah 2x3 transitions ({len(data.episodes)} episodes of up to "
        f"{args.episode_len} steps; {data.sim_steps:,} steps collected (`madata.collect`, uniformly random actions) in "
        f"{data.sim_seconds:.0f} s"
        + (", the rest tiled with 1e-3 relative noise" if data.sim_steps < data.transitions else "")
        + f"). Per agent: obs float32 {list(a0.observation_space.shape)}, action float32 "
        f"{list(a0.action_space.shape)}; state float32 {list(data.state_space.shape)}; reward float64; "
        f"{raw / MB:.1f} MB raw. zstd level 3. Best of {args.repeat} runs ({t_all:.0f} s of measuring); "
        f"reads hit the page cache; the read columns use the store written with "
        f"{policy_label(policies[0])}.",
        "",
        tables(results, data, policies, args.episodes),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(text + "\n")
        (args.out / "results.json").write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": mach,
                    "raw_bytes": raw,
                    "transitions": data.transitions,
                    "sim_steps": data.sim_steps,
                    "sim_seconds": data.sim_seconds,
                    "results": results,
                    "runs": all_runs,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
