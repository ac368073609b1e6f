"""Table 1's analogue on SMAX, the data half: what the behaviour data of each map looks like.

The paper's Table 1 compares win rates of CAST-BCQ and three baselines trained on StarCraft II
data. StarCraft II cannot run here; SMAX (JaxMARL) is a different simulator, so every number
below is an SMAX analogue, not a SMAC number. Training on SMAX data is not built yet
(docs/smax.md), so this script reports the data: for each map, a per-agent (uncoordinated) and
a per-team (coordinated) mix of the `random` and `heuristic` levels, with

* the win rate (with a 95 % Wilson interval) and mean return of each mix, and
* per number of heuristic allies in an episode (0 .. n), the episodes, win rate and mean return:
  how a team's outcome depends on how many of its agents follow the better behaviour.

    python benchmarks/table1.py collect --data DATA --episodes 1000 --envs 64
    python benchmarks/table1.py report --data DATA --out docs/results/table1.md

Results: docs/results/table1.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from harness import command_line, machine_line

import madata
from madata.collect import collect
from madata.envs.smax import MAPS, NOT_BUILDABLE
from madata.schema import behaviour_column
from madata.summary import episode_wins

PAPER = {  # the paper's Table 1: win rates (%) on StarCraft II, for reference only (a different simulator)
    "3s_vs_3z": {"CAST-BCQ": 81, "I-BCQ": 58, "MABCQ": 6, "ICQ-MA": 83},
    "MMM": {"CAST-BCQ": 93, "I-BCQ": 4, "MABCQ": 0, "ICQ-MA": 89},
    "2s3z": {"CAST-BCQ": 71, "I-BCQ": 8, "MABCQ": 1, "ICQ-MA": 61},
    "10m_vs_11m": {"CAST-BCQ": 33, "I-BCQ": 0, "MABCQ": 0, "ICQ-MA": 21},
}
MIXES = {"agent": "per agent (uncoordinated)", "team": "per team (coordinated)"}


def data_path(root: Path, map_name: str, mix_by: str) -> Path:
    return root / f"smax-{map_name}-random-heuristic-by-{mix_by}.zarr"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cmd_collect(args: argparse.Namespace) -> None:
    args.data.mkdir(parents=True, exist_ok=True)
    for m in MAPS:
        for mix_by in MIXES:
            out = data_path(args.data, m, mix_by)
            ds = collect(
                f"smax-{m}", out, mix=["random", "heuristic"], mix_by=mix_by, episodes=args.episodes,
                envs=args.envs, seed=args.seed, resume=True, progress=True,
            )  # fmt: skip
            print(f"{out.name}: {ds.num_episodes} episodes, {ds.num_transitions} transitions", flush=True)


def describe(ds: madata.Dataset) -> dict:
    """Win rate and return of the whole mix, and per number of heuristic allies."""
    won = episode_wins(ds)
    ret = ds.episodes.column("return").to_numpy()
    heuristic = np.sum(
        [np.asarray(ds.episodes.column(behaviour_column(a)).to_pylist()) == "heuristic" for a in ds.agent_ids], 0
    )
    rows = []
    for k in range(len(ds.agent_ids) + 1):
        sel = heuristic == k
        if sel.any():
            lo, hi = wilson(int(won[sel].sum()), int(sel.sum()))
            rows.append({"heuristic_allies": k, "episodes": int(sel.sum()), "win_rate": float(won[sel].mean()),
                         "win_ci": [lo, hi], "mean_return": float(ret[sel].mean())})  # fmt: skip
    lo, hi = wilson(int(won.sum()), len(won))
    return {
        "episodes": ds.num_episodes,
        "transitions": ds.num_transitions,
        "win_rate": float(won.mean()),
        "win_ci": [lo, hi],
        "mean_return": float(ret.mean()),
        "by_heuristic_allies": rows,
        "agents": len(ds.agent_ids),
        "seed": ds.meta.provenance.get("seed"),
    }


def cmd_report(args: argparse.Namespace) -> None:
    results = {m: {mb: describe(madata.open(data_path(args.data, m, mb))) for mb in MIXES} for m in MAPS}
    lines = [
        "# Table 1 on SMAX: the behaviour data (training results not yet available)",
        "",
        "**SMAX is not StarCraft II.** These are win rates in JaxMARL's SMAX, a re-implementation of",
        "SMAC's unit fights with its own rules and reward; they are analogues of the paper's setting,",
        "not SMAC numbers. Training on SMAX data is not built yet ([../smax.md](../smax.md)), so this",
        "page describes the data the methods will be trained on; the paper's Table 1 is listed for",
        "reference only.",
        "",
        f"Produced by `{command_line()}` after `python benchmarks/table1.py collect --data DATA "
        "--episodes 1000 --envs 64` (seed 0; each map's data: `madata collect smax-MAP --mix random,heuristic "
        "--mix-by agent|team --episodes 1000 --seed 0`).",
        "",
        f"{machine_line()}",
        "",
        "## Win rate and return of each mix",
        "",
        "| map | mix | episodes | win rate (95 % CI) | mean return |",
        "|---|---|---:|---:|---:|",
    ]
    for m, per in results.items():
        for mb, r in per.items():
            lo, hi = r["win_ci"]
            lines.append(
                f"| {m} | {MIXES[mb]} | {r['episodes']} | {r['win_rate']:.1%} ({lo:.1%}-{hi:.1%}) | "
                f"{r['mean_return']:.2f} |"
            )
    for m, reason in NOT_BUILDABLE.items():
        lines.append(f"| {m} | not runnable: {reason} | | | |")
    lines += [
        "",
        "## By the number of heuristic allies in an episode (per-agent mix)",
        "",
        "Each ally follows the heuristic or acts uniformly at random, drawn per agent; the row for k",
        "holds the episodes in which exactly k allies were heuristic.",
        "",
    ]
    for m, per in results.items():
        lines += [
            f"### {m}",
            "",
            "| heuristic allies | episodes | win rate (95 % CI) | mean return |",
            "|---:|---:|---:|---:|",
        ]
        for row in per["agent"]["by_heuristic_allies"]:
            lo, hi = row["win_ci"]
            lines.append(
                f"| {row['heuristic_allies']} of {per['agent']['agents']} | "
                f"{row['episodes']} | {row['win_rate']:.1%} ({lo:.1%}-{hi:.1%}) | {row['mean_return']:.2f} |"
            )
        lines.append("")
    lines += [
        "## The paper's Table 1 (StarCraft II, for reference only)",
        "",
        "| map | CAST-BCQ | I-BCQ | MABCQ | ICQ-MA |",
        "|---|---:|---:|---:|---:|",
        *[f"| {m} | " + " | ".join(f"{v} %" for v in row.values()) + " |" for m, row in PAPER.items()],
        "",
    ]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="collect each map's per-agent and per-team mixes (resumes)")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--episodes", type=int, default=1000)
    c.add_argument("--envs", type=int, default=64)
    c.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="write the data table")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, default=Path("docs/results/table1.md"))
    args = p.parse_args()
    {"collect": cmd_collect, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
