"""``madata diagnose`` in memory against out of core: peak memory, time, and a run under a memory cap.

Each mode runs in a fresh process (``madata diagnose DATASET --json``) with the same settings:

* ``in-memory``: every state and action in memory (``--in-memory``);
* ``out-of-core``: one pass in parts of whole episodes (``--out-of-core``);
* ``dask-2``: the parts read by a 2-worker Dask LocalCluster (``--workers 2``);

then, with ``--cap-mb``, ``in-memory`` and ``out-of-core`` again with the process's address
space capped there (``RLIMIT_AS``, which counts virtual memory: thread stacks and allocator
arenas too, so pick the cap from the peak virtual sizes reported; Dask is left out: its workers
are separate processes). Reported: seconds, peak resident and virtual memory of the process
(and, for Dask, the resident peak of its largest worker), and whether each diagnosis equals the
in-memory one (every number but the timings).

    python benchmarks/diagnose_memory.py --dataset D.zarr --out docs/results/diagnose_memory.json
    python benchmarks/diagnose_memory.py --wide 300 128 --pool 100000 --cap-mb auto

Results: docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import command_line, machine_line
from tqdm import tqdm

import madata
from madata.schema import AgentSpec
from madata.spaces import Box

CHILD = """
import json, resource, sys
from cli.errors import run
from cli.app import app
code = run(app, sys.argv[1:])
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
virtual_kb = int(status["VmPeak"].split()[0])  # what an address-space cap (RLIMIT_AS) limits
print(json.dumps({"rc": code, "peak_mb": self_kb / 1024, "largest_child_mb": children_kb / 1024,
                  "peak_virtual_mb": virtual_kb / 1024}), file=sys.stderr)
"""


def run_mode(dataset: str, flags: list[str], settings: list[str], cap_mb: int | None) -> dict:
    """One ``madata diagnose`` in a fresh process: its answer, seconds and peak memory (or its error)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))

    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", CHILD, "diagnose", dataset, "--json", *settings, *flags],
        capture_output=True,
        text=True,
        preexec_fn=cap if cap_mb else None,
        cwd=Path(__file__).resolve().parents[1],
    )
    seconds = time.perf_counter() - t0
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("{")]
    usage = json.loads(lines[-1]) if lines else {}
    out = {"flags": flags, "cap_mb": cap_mb, "seconds": round(seconds, 1), **usage}
    if usage.get("rc") == 0:
        out["answer"] = {k: v for k, v in json.loads(p.stdout).items() if k not in ("timing_s", "reading")}
        out["reading"] = json.loads(p.stdout)["reading"]
    else:
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("madata: error")]
        out["error"] = errors[-1] if errors else (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return out


def wide_dataset(path: Path, episodes: int, state_dim: int, seed: int = 0) -> str:
    """Two agents acting on a wide state (``state_dim`` values, a slow random walk), 1,000 steps an episode:
    the kind of data where holding every state costs more than the statistics' own working memory."""
    rng = np.random.default_rng(seed)
    agents = [AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (4,)), Box.make(-1, 1, (2,))) for i in range(2)]
    W = rng.standard_normal((2, state_dim, 2)) / np.sqrt(state_dim)
    T = 1000
    with madata.create(path, agents, state_space=Box.make(-np.inf, np.inf, (state_dim,))) as w:
        for e in tqdm(range(episodes), desc="wide dataset", unit="episode"):
            s = np.cumsum(rng.standard_normal((T + 1, state_dim)) * 0.1, axis=0).astype(np.float32)
            level = rng.integers(0, 2, 2)  # each agent's behaviour for the episode: calm or noisy
            acts = {
                f"agent_{i}": np.clip(
                    np.tanh(s[:-1] @ W[i]) + (0.1 + 0.5 * level[i]) * rng.standard_normal((T, 2)), -1, 1
                )
                for i in range(2)
            }
            w.add_episode(
                obs={a.id: s[:, :4].copy() for a in agents},
                actions={a: x.astype(np.float32) for a, x in acts.items()},
                rewards=rng.standard_normal(T),
                terminated=np.zeros(T, bool),
                truncated=np.r_[np.zeros(T - 1, bool), True],
                state=s,
                behaviour={f"agent_{i}": ("calm", "noisy")[level[i]] for i in range(2)},
                seed=e,
            )
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", help="a madata dataset (directory or URL)")
    p.add_argument(
        "--wide",
        type=int,
        nargs=2,
        metavar=("EPISODES", "STATE_DIM"),
        help="instead: write a wide-state dataset (1,000 steps an episode) in --tmp and diagnose it",
    )
    p.add_argument(
        "--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where --wide writes (removed afterwards)"
    )
    p.add_argument("--pool", type=int, help="diagnose --pool (default: diagnose's)")
    p.add_argument(
        "--cap-mb",
        help="also run in memory and out of core under this address-space cap (MB), or 'auto': halfway between "
        "the two modes' peak virtual sizes",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    if (args.dataset is None) == (args.wide is None):
        p.error("give --dataset or --wide")
    tmp = Path(tempfile.mkdtemp(prefix="madata-diagnose-memory-", dir=args.tmp))
    try:
        if args.wide:
            args.dataset = wide_dataset(tmp / "wide.zarr", *args.wide, seed=args.seed)
        measure(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace) -> None:
    ds = madata.open(args.dataset)
    settings = ["--seed", str(args.seed)] + (["--pool", str(args.pool)] if args.pool else [])
    modes = {
        "in-memory": ["--in-memory"],
        "out-of-core": ["--out-of-core"],
        "dask-2": ["--workers", "2"],
    }
    results = {}
    for name, flags in modes.items():
        results[name] = run_mode(args.dataset, flags, settings, None)
        print(f"{name}: {_line(results[name])}", flush=True)
    if args.cap_mb:
        peaks = [results[m].get("peak_virtual_mb", 0) for m in ("in-memory", "out-of-core")]
        cap = int(sum(peaks) / 2) if args.cap_mb == "auto" else int(args.cap_mb)
        for name in ("in-memory", "out-of-core"):
            key = f"{name} capped at {cap} MB"
            results[key] = run_mode(args.dataset, modes[name], settings, cap)
            print(f"{key}: {_line(results[key])}", flush=True)
    reference = results["in-memory"].get("answer")
    for r in results.values():
        r["same_answer_as_in_memory"] = None if reference is None or "answer" not in r else r["answer"] == reference
    for name, r in results.items():
        print(f"{name:<32} same answer as in memory: {r['same_answer_as_in_memory']}")
    print(machine_line())
    print(command_line())
    if args.out:
        summary = {
            "dataset": f"wide: {args.wide[0]} episodes, state of {args.wide[1]}" if args.wide else str(args.dataset),
            "state_dim": int(np.prod(ds.state_space.shape)) if ds.state_space is not None else None,
            "settings": settings,
            "transitions": ds.num_transitions,
            "episodes": ds.num_episodes,
            "command": command_line(),
            "machine": machine_line(),
            "results": {k: {kk: vv for kk, vv in v.items() if kk != "answer"} for k, v in results.items()},
        }
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


def _line(r: dict) -> str:
    if "error" in r:
        return f"failed after {r['seconds']} s: {r['error']}"
    child = f", largest worker {r['largest_child_mb']:.0f} MB" if r["flags"][:1] == ["--workers"] else ""
    return f"{r['seconds']} s, peak {r['peak_mb']:.0f} MB resident ({r['peak_virtual_mb']:.0f} MB virtual){child}"


if __name__ == "__main__":
    main()
