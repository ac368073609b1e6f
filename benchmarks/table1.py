"""Table 1's analogue on SMAX: the behaviour data of each map, and the four methods trained on it.

The paper's Table 1 compares win rates of CAST-BCQ and three baselines trained on StarCraft II
data. StarCraft II cannot run here; SMAX (JaxMARL) is a different simulator, so every number
below is an SMAX analogue, not a SMAC number.

The data: for each map, a per-agent (uncoordinated) and a per-team (coordinated) mix of the
`random` and `heuristic` levels, with the win rate (95 % Wilson interval) and mean return of
each mix, and per number of heuristic allies in an episode (0 .. n) the episodes, win rate
and mean return: how a team's outcome depends on how many of its agents follow the heuristic.

The methods: CAST-BCQ (`--joint-candidates 16`), I-BCQ, MABCQ and ICQ-MA on each map's
per-agent mix, seeds 0, 1, 2 by default (``--seeds``; ``PROTOCOL``: iterations, batch, evaluations). A run's final win
rate and return are the means of its last evaluations; the table gives mean +- std over seeds
and a 95 % percentile bootstrap interval of the mean. ``train`` processes may share a work
directory (each run is claimed with a file lock; a killed run resumes from its checkpoint).

    python benchmarks/table1.py collect --data DATA --episodes 1000 --envs 64
    python benchmarks/table1.py train --data DATA --work WORK [--seeds 0,1,2] [--threads 1]
    python benchmarks/table1.py report --data DATA --work WORK --out docs/results/table1.md

Results: docs/results/table1.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from harness import band, claimed, command_line, machine_line, save_figure, write_result
from table2 import data_digest, gather, git_commit, summary

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
METHODS = {"cast-bcq": "CAST-BCQ", "ibcq": "I-BCQ", "mabcq": "MABCQ", "icq-ma": "ICQ-MA"}


@dataclass(frozen=True)
class Protocol:
    steps: int = 2000
    batch_size: int = 256
    eval_every: int = 500
    eval_episodes: int = 32
    final_evals: int = 2  # a run's final win rate and return: the means of its last evaluations
    joint_candidates: int = 16  # CAST-BCQ's sampled joint actions (K^N is 10^5 on 2s3z)

    @property
    def name(self) -> str:
        return f"s{self.steps}-b{self.batch_size}-e{self.eval_every}x{self.eval_episodes}-j{self.joint_candidates}"


PROTOCOL = Protocol()


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


def run_one(args: argparse.Namespace, map_name: str, method: str, seed: int) -> dict | None:
    """Train one (map, method, seed) on the map's per-agent mix unless another process holds it."""
    from madata_algos.configs import CastBcqDiscreteConfig
    from madata_algos.train import train

    p = PROTOCOL
    run = args.work / p.name / map_name / method / f"seed{seed}"
    with claimed(run) as mine:
        if not mine:
            return None  # another process trains it
        if (run / "result.json").exists():
            return json.loads((run / "result.json").read_text())
        data = data_path(args.data, map_name, "agent")
        config = CastBcqDiscreteConfig(joint_candidates=p.joint_candidates) if method == "cast-bcq" else None
        t0 = time.time()
        log = train(data, run, algorithm=method, steps=p.steps, seed=seed, config=config, batch_size=p.batch_size,
                    eval_every=p.eval_every, eval_episodes=p.eval_episodes, resume=(run / "config.json").exists(),
                    progress=True)  # fmt: skip
        last = log[-p.final_evals :]
        result = {
            "map": map_name, "method": method, "seed": seed, "protocol": asdict(p), "commit": git_commit(),
            "data": str(data), "data_sha256": data_digest(data),
            "final_win_rate": float(np.mean([r["eval_win_rate"] for r in last])),
            "final_return": float(np.mean([r["eval_return"] for r in last])),
            "wall_seconds_this_process": round(time.time() - t0, 1),
        }  # fmt: skip
        return write_result(run, result)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    print(f"table1: protocol {PROTOCOL.name}; commit {git_commit()}", flush=True)
    for seed in args.seeds:
        for m in args.maps:
            for method in args.methods:
                r = run_one(args, m, method, seed)
                if r is not None:
                    print(f"{m} {method} seed {seed}: won {r['final_win_rate']:.1%}, return {r['final_return']:.3f}",
                          flush=True)  # fmt: skip


def methods_results(work: Path | None, store: Path) -> dict:
    """Finished runs by map and method: those under ``work`` are copied into ``store`` (committed beside the
    table, with their logs and configs) and every run in ``store`` is read, its learning curve kept."""
    out: dict = {}
    for r in gather([work] if work else [], store, runs="."):
        r["log"] = [{k: row[k] for k in ("step", "eval_win_rate", "eval_return")} for row in r["log"]]
        out.setdefault(r["map"], {}).setdefault(r["method"], []).append(r)
    return out


def curves_plot(results: dict, path: Path) -> None:
    """Win rate and return over training of every method on every map: mean over seeds, +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = [m for m in MAPS if m in results]
    fig, axes = plt.subplots(2, len(maps), figsize=(5 * len(maps), 7), squeeze=False)
    for col, m in enumerate(maps):
        for method, label in METHODS.items():
            logs = [r["log"] for r in results[m].get(method, [])]
            if not logs:
                continue
            steps = [row["step"] for row in logs[0]]
            for row_i, (key, scale) in enumerate((("eval_win_rate", 100), ("eval_return", 1))):
                y = scale * np.array([[row[key] for row in log] for log in logs])
                band(axes[row_i][col], steps, y, f"{label} ({len(logs)})")
        axes[0][col].set_title(f"SMAX {m}, per-agent mix")
        axes[0][col].set_ylabel(f"win rate % ({PROTOCOL.eval_episodes} episodes)")
        axes[1][col].set_ylabel("evaluation return")
        axes[1][col].set_xlabel("training iterations")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def methods_lines(results: dict) -> list[str]:
    """The methods' table beside the paper's, the per-seed numbers and what they support."""
    from madata_algos.stats import probability_of_improvement

    p = PROTOCOL
    lines = [
        "## The four methods, trained on each map's per-agent (uncoordinated) mix",
        "",
        f"Protocol `{p.name}`: {p.steps:,} iterations at batch {p.batch_size}, evaluation every {p.eval_every} "
        f"iterations on {p.eval_episodes} episodes (the same episode seeds for every method), a run's final win "
        f"rate and return the means of its last {p.final_evals} evaluations; default networks and settings of each "
        f"method (`madata train`), CAST-BCQ with `--joint-candidates {p.joint_candidates}`. Mean +- std over "
        "seeds, [95 % bootstrap interval of the mean]; the paper's SMAC win rate beside it, for reference only.",
        "",
        "![learning curves](table1_curves.png)",
        "",
        "| map | method | seeds | win rate | return | paper (SMAC) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for m in MAPS:
        for method, label in METHODS.items():
            runs = results.get(m, {}).get(method, [])
            if not runs:
                lines.append(f"| {m} | {label} | 0 | not run | | {PAPER[m][label]} % |")
                continue
            w = summary([100 * r["final_win_rate"] for r in runs])
            g = summary([r["final_return"] for r in runs])
            lines.append(
                f"| {m} | {label} | {w['n']} | {w['mean']:.1f} % +- {w['std']:.1f} [{w['ci95'][0]:.1f}, "
                f"{w['ci95'][1]:.1f}] | {g['mean']:.3f} +- {g['std']:.3f} [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | "
                f"{PAPER[m][label]} % |"
            )
        cast = [r["final_return"] for r in results.get(m, {}).get("cast-bcq", [])]
        for method in ("ibcq", "mabcq", "icq-ma"):
            other = [r["final_return"] for r in results.get(m, {}).get(method, [])]
            if cast and other:
                verdicts.append(
                    f"| {m} | {METHODS[method]} | {len(cast)} vs {len(other)} | "
                    f"{probability_of_improvement([cast], [other]):.2f} |"
                )
    for m, reason in NOT_BUILDABLE.items():
        lines.append(f"| {m} | (all) | | not runnable: {reason} | | |")
    lines += [
        "",
        "P(CAST-BCQ's final return > the baseline's) over pairs of seeds (ties count 1/2; rliable's",
        "probability of improvement). 1.0 means every CAST-BCQ seed beat every baseline seed; if the two",
        "methods were equal, n seeds a side would do that by chance with probability 1 / C(2n, n): 1/20 for 3,",
        "1/252 for 5.",
        "",
        "| map | baseline | seeds | P(CAST-BCQ > baseline) |",
        "|---|---|---:|---:|",
        *verdicts,
        "",
        "Per-seed finals (win rate %, return):",
        "",
    ]
    for m in MAPS:
        for method, label in METHODS.items():
            runs = sorted(results.get(m, {}).get(method, []), key=lambda r: r["seed"])
            if runs:
                per = ", ".join(
                    f"seed {r['seed']}: {100 * r['final_win_rate']:.1f} %, {r['final_return']:.3f}" for r in runs
                )
                commits = sorted({r["commit"][:7] for r in runs})
                lines.append(f"- {m} {label}: {per} (commit {', '.join(commits)})")
    return lines + [""]


def cmd_report(args: argparse.Namespace) -> None:
    results = {m: {mb: describe(madata.open(data_path(args.data, m, mb))) for mb in MIXES} for m in MAPS}
    trained = methods_results(args.work, args.out.parent / "table1" / "runs")
    if trained:
        curves_plot(trained, args.out.parent / "table1_curves.png")
    lines = [
        "# Table 1 on SMAX: the behaviour data and the four methods trained on it",
        "",
        "**SMAX is not StarCraft II.** These are win rates in JaxMARL's SMAX, a re-implementation of",
        "SMAC's unit fights with its own rules and reward; they are analogues of the paper's setting,",
        "not SMAC numbers ([../smax.md](../smax.md)). The paper's Table 1 is listed for reference only.",
        "What the numbers support and what they do not: [table1_analysis.md](table1_analysis.md).",
        "",
        f"Produced by `{command_line()}` after `python benchmarks/table1.py collect --data DATA "
        "--episodes 1000 --envs 64` (seed 0; each map's data: `madata collect smax-MAP --mix random,heuristic "
        "--mix-by agent|team --episodes 1000 --seed 0`) and `python benchmarks/table1.py train --data DATA "
        "--work WORK --seeds S` (two processes sharing WORK; seeds 0,1,2, then 3,4).",
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
    lines += ["", *methods_lines(trained)]
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
    out = {"data": results, "methods": trained, "protocol": asdict(PROTOCOL)}
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="collect each map's per-agent and per-team mixes (resumes)")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--episodes", type=int, default=1000)
    c.add_argument("--envs", type=int, default=64)
    c.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train the four methods on each map's per-agent mix (resumes; shareable)")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2])
    t.add_argument("--maps", type=lambda v: v.split(","), default=list(MAPS))
    t.add_argument("--methods", type=lambda v: v.split(","), default=list(METHODS))
    t.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("report", help="write the data table and, with --work, the methods' table")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--work", type=Path, default=None)
    r.add_argument("--out", type=Path, default=Path("docs/results/table1.md"))
    args = p.parse_args()
    {"collect": cmd_collect, "train": cmd_train, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
