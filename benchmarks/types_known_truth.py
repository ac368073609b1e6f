"""Behaviour types recovered without labels, on MaMuJoCo data whose truth is known.

    python benchmarks/types_known_truth.py --work /work/types-data --episodes 1000 --seeds 10 \
        --out docs/results/types_known_truth.json

For each task (halfcheetah-2x3, hopper-3x1, walker2d-2x3) four datasets are collected with
the shipped SAC checkpoints (seed 0; resumable, reused when present in ``--work``):
``per-agent`` (``--mix medium,expert``), ``team`` (``--mix medium,expert --mix-by team``),
``medium`` and ``expert``. For each seed ``s`` of ``--seeds``, half of a dataset's episodes
are drawn with seed ``s`` and :func:`madata.diagnostics.types.behaviour_types` runs on them
with seed ``s``. Reported per dataset: the types per agent, the adjusted Rand index against
the stored labels, the team test's p, how many seeds flag a team-level mixture (p <= 0.01),
and the seconds per run. Checks of the issue: ARI >= 0.9 per agent on both mixes; team
mixes flagged with p <= 0.01; per-agent and single-level data with p > 0.05 in at least 8
of 10 seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from harness import command_line, machine_line, markdown_table

import madata
from madata.collect import collect
from madata.diagnostics.core import load_inputs
from madata.diagnostics.types import behaviour_types
from madata.schema import behaviour_column

TASKS = ("halfcheetah-2x3", "hopper-3x1", "walker2d-2x3")
KINDS = {
    "per-agent": dict(mix=["medium", "expert"]),
    "team": dict(mix=["medium", "expert"], mix_by="team"),
    "medium": dict(mix=["medium"]),
    "expert": dict(mix=["expert"]),
}


def dataset(work: Path, task: str, kind: str, episodes: int) -> madata.Dataset:
    path = work / f"{task}-{kind}-{episodes}.zarr"
    if path.exists() and madata.open(path).num_episodes == episodes:
        return madata.open(path)
    return collect(task, path, episodes=episodes, seed=0, resume=True, progress=True, **KINDS[kind])


def run(ds: madata.Dataset, seed: int) -> dict:
    """Types on half the episodes, drawn with ``seed``."""
    ids = np.sort(np.random.default_rng(seed).choice(ds.num_episodes, ds.num_episodes // 2, replace=False))
    half = ds.select(episodes=ids)
    inputs = load_inputs(half)
    labels = {a: half.episodes.column(behaviour_column(a)).to_pylist() for a in half.agent_ids}
    t0 = time.perf_counter()
    out = behaviour_types(inputs["cond"], inputs["features"], inputs["episode"], labels=labels, seed=seed)
    return {
        "seed": seed,
        "episodes": len(ids),
        "seconds": time.perf_counter() - t0,
        "types": {a: v["types"] for a, v in out["agents"].items()},
        "ari": {a: v.get("ari_vs_labels") for a, v in out["agents"].items()},
        "team_ari": (out["team"] or {}).get("ari_vs_labels"),
        "p": None if out["test"] is None else out["test"]["p"],
        "verdict": out["verdict"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="where the datasets are collected (reused)")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--out", type=Path, default=None, help="write every run as JSON here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine_line(), "command": command_line(), "runs": {}}
    rows = []
    for task in args.tasks.split(","):
        for kind in args.kinds.split(","):
            ds = dataset(args.work, task, kind, args.episodes)
            runs = []
            for s in range(args.seeds):
                runs.append(run(ds, s))
                r = runs[-1]
                print(f"{task} {kind} seed {s}: types {r['types']} ari {r['ari']} p {r['p']} ({r['seconds']:.1f} s)")
                sys.stdout.flush()
            results["runs"][f"{task}/{kind}"] = runs
            agents = list(runs[0]["types"])
            min_ari = {a: min((r["ari"][a] for r in runs if r["ari"][a] is not None), default=None) for a in agents}
            flagged = sum(r["p"] is not None and r["p"] <= 0.01 for r in runs)
            not_flagged = sum(r["p"] is None or r["p"] > 0.05 for r in runs)
            rows.append(
                [
                    f"{task} {kind}",
                    " / ".join(str(sorted({r["types"][a] for r in runs})) for a in agents),
                    " / ".join("-" if v is None else f"{v:.3f}" for v in min_ari.values()),
                    f"{flagged} of {len(runs)}",
                    f"{not_flagged} of {len(runs)}",
                    f"{np.median([r['seconds'] for r in runs]):.1f}",
                ]
            )
            if args.out:  # after every dataset: a long run keeps what it measured
                args.out.write_text(json.dumps(results, indent=1))
    print(results["machine"])
    print(
        markdown_table(
            ["dataset", "types per agent (over seeds)", "lowest ARI per agent", "p <= 0.01", "p > 0.05", "seconds"],
            rows,
        )
    )
    print(f"command: {results['command']}")


if __name__ == "__main__":
    main()
