"""The paper's Table 2 on madata's own data: CAST-BCQ, its ablations and the baselines on
uncoordinated (medium,expert) and coordinated (medium, expert) MaMuJoCo datasets.

    python benchmarks/table2.py [--tasks halfcheetah-2x3,hopper-3x1,walker2d-2x3]
        [--datasets medium-expert,medium,expert] [--methods all] [--seeds 0,1,2]
        [--steps 2000] [--batch-size 256] [--eval-every 500] [--eval-episodes 5]
        [--episodes 200] [--work .runs/table2] [--doc docs/results]

Datasets are collected with the shipped behaviour policies (`madata collect TASK --mix
LEVELS --episodes E --seed 0`; in medium-expert every agent draws its own level, so the
team is uncoordinated). Every (task, dataset, seed, method) is one training run under
``--work``; the script skips finished runs and resumes killed ones, so it can be stopped
and started again at will. After every run it rewrites ``table2.md``, ``table2.json`` and
one learning-curve PNG per task under ``--doc``, with what has been measured so far: the
mean +- std over seeds of the final evaluation's return (and D4RL-normalized score).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import madata
from madata.collect import collect
from madata_algos.configs import CastBcqConfig, IcqConfig
from madata_algos.train import train

TASKS = ["halfcheetah-2x3", "hopper-3x1", "walker2d-2x3"]
DATASETS = {"medium-expert": ["medium", "expert"], "medium": ["medium"], "expert": ["expert"]}
# method -> (algorithm, config); None = the algorithm's defaults (the paper's or its reference code's)
METHODS = {
    "cast-bcq": ("cast-bcq", None),
    "ibcq": ("ibcq", None),
    "mabcq": ("mabcq", None),
    # ICQ-MA's defaults are its SMAC values; on MaMuJoCo the actor temperature must match the return scale
    # (OMIGA's MaMuJoCo ICQ uses beta = 100), and the short CPU runs here use the BCQ family's learning rate
    "icq-ma": ("icq-ma", IcqConfig(beta=100.0, actor_lr=1e-3, critic_lr=1e-3)),
    "bcq (centralized)": ("bcq", None),
    "cast-bcq --no-csaa": ("cast-bcq", CastBcqConfig(csaa=False)),
    "cast-bcq --no-subteam": ("cast-bcq", CastBcqConfig(subteam_sampling=False)),
    "cast-bcq --no-clipped-double-q": ("cast-bcq", CastBcqConfig(clipped_double_q=False)),
}
DECENTRALIZED_BASELINES = ["ibcq", "mabcq", "icq-ma"]


def dataset(work: Path, task: str, name: str, episodes: int) -> Path:
    """The collected dataset for (task, name), collecting (or finishing) it first."""
    path = work / "data" / f"{task}-{name}.zarr"
    collect(task, path, mix=DATASETS[name], episodes=episodes, seed=0, resume=True, progress=True)
    return path


def run_dir(work: Path, task: str, data: str, method: str, seed: int, args) -> Path:
    slug = method.replace(" (centralized)", "").replace(" --", "-").replace(" ", "")
    setting = f"b{args.batch_size}-e{args.eval_every}x{args.eval_episodes}"  # a run resumes only with these
    return work / "runs" / setting / task / data / slug / f"seed{seed}"


def run(path: Path, data: Path, method: str, seed: int, args) -> list[dict]:
    """Train one cell (or finish it); returns its evaluation log."""
    algorithm, config = METHODS[method]
    return train(data, path, algorithm=algorithm, steps=args.steps, seed=seed, config=config, batch_size=args.batch_size,
                 eval_every=args.eval_every, eval_episodes=args.eval_episodes, resume=path.exists(), progress=True)  # fmt: skip


def summarize(results: dict, args, elapsed: float) -> tuple[str, dict]:
    """Markdown tables (one per task: methods x datasets) and the JSON of every finished run."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    lines = [
        "# Table 2 on madata data: uncoordinated vs coordinated MaMuJoCo datasets",
        "",
        f"Measured on {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, Python {platform.python_version()}: "
        f"{args.steps} training iterations at batch {args.batch_size} per run (the paper trains far longer on a GPU; "
        f"these are short CPU runs and say so), evaluation every {args.eval_every} iterations on {args.eval_episodes} "
        f"episodes; datasets of {args.episodes} episodes each, collected with the shipped SAC behaviour policies "
        "(docs/behaviour.md). Cells: mean +- std over seeds of the final evaluation's return, the D4RL-normalized "
        "score in brackets, [n] seeds finished. `bcq` is centralized (it acts on the joint observation); every other "
        "method executes decentralized. Wall time so far: " + f"{elapsed / 60:.0f} min.",
        "",
        f"Command: `{command(args)}`",
    ]
    for task in shown(TASKS, args.tasks, results):
        datasets = shown(DATASETS, args.datasets, *results.get(task, {}).values())
        lines += ["", f"## {task}", "", "![learning curves](table2_" + task + ".png)", "",
                  "| method | " + " | ".join(datasets) + " |", "|---|" + "---:|" * len(datasets)]  # fmt: skip
        for method in shown(METHODS, args.methods, *(results.get(task, {}).values())):
            cells = []
            for data in datasets:
                finals = [log[-1] for log in results.get(task, {}).get(data, {}).get(method, {}).values()]
                if not finals:
                    cells.append("")
                    continue
                ret = np.array([r["eval_return"] for r in finals])
                cell = f"{ret.mean():.0f} +- {ret.std():.0f}"
                if finals[0]["eval_normalized"] is not None:
                    norm = np.array([r["eval_normalized"] for r in finals])
                    cell += f" ({norm.mean():.1f} +- {norm.std():.1f})"
                cells.append(f"{cell} [{len(finals)}]")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", {"command": command(args), "settings": settings(args), "results": results}


def shown(order, requested, *measured: dict) -> list[str]:
    """Names requested now or measured before, in the canonical order."""
    return [k for k in order if k in requested or any(k in m for m in measured)]


def settings(args) -> dict:
    """What makes runs comparable: results measured with other settings are never merged."""
    return {k: getattr(args, k) for k in ("steps", "batch_size", "eval_every", "eval_episodes", "episodes")}


def previous_results(path: Path, args) -> dict:
    """Results of earlier invocations with the same settings (e.g. other tasks or methods)."""
    if not path.exists():
        return {}
    blob = json.loads(path.read_text())
    return blob["results"] if blob.get("settings") == settings(args) else {}


def plot(results: dict, task: str, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = shown(DATASETS, args.datasets, results.get(task, {}))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, data in zip(axes[0], datasets, strict=True):
        for method in METHODS:
            logs = list(results.get(task, {}).get(data, {}).get(method, {}).values())
            if not logs:
                continue
            n = min(len(log) for log in logs)
            steps = [r["step"] for r in logs[0][:n]]
            curves = np.array([[r["eval_return"] for r in log[:n]] for log in logs])
            style = "-" if method in ("cast-bcq", *DECENTRALIZED_BASELINES) else "--"
            ax.plot(steps, curves.mean(0), style, marker="o", ms=3, label=f"{method} ({len(logs)})")
        ax.set_title(f"{task}, {data}")
        ax.set_xlabel("training iterations")
        ax.set_ylabel("evaluation return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def command(args) -> str:
    return (f"python benchmarks/table2.py --tasks {','.join(args.tasks)} --datasets {','.join(args.datasets)} "
            f"--methods '{','.join(args.methods)}' --seeds {','.join(map(str, args.seeds))} --steps {args.steps} "
            f"--batch-size {args.batch_size} --eval-every {args.eval_every} --eval-episodes {args.eval_episodes} "
            f"--episodes {args.episodes}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--datasets", default="medium-expert,medium,expert")
    ap.add_argument("--methods", default="all", help="comma-separated names from METHODS, or 'all'")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-episodes", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=200, help="episodes per dataset")
    ap.add_argument("--work", type=Path, default=Path(".runs/table2"))
    ap.add_argument("--doc", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    args.tasks = args.tasks.split(",")
    args.datasets = args.datasets.split(",")
    args.methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    unknown = [m for m in args.methods if m not in METHODS] + [d for d in args.datasets if d not in DATASETS]
    if unknown:
        raise SystemExit(f"table2: unknown methods or datasets {unknown}; known: {list(METHODS)}, {list(DATASETS)}")
    args.doc.mkdir(parents=True, exist_ok=True)
    results = previous_results(args.doc / "table2.json", args)
    t0 = time.time()
    for task in args.tasks:
        for data in args.datasets:
            path = dataset(args.work, task, data, args.episodes)
            print(f"{task} {data}: {madata.open(path).num_transitions} transitions", flush=True)
            for seed in args.seeds:
                for method in args.methods:
                    log = run(run_dir(args.work, task, data, method, seed, args), path, method, seed, args)
                    results.setdefault(task, {}).setdefault(data, {}).setdefault(method, {})[str(seed)] = log
                    last = log[-1]
                    print(f"{task} {data} {method} seed {seed}: return {last['eval_return']:.1f} "
                          f"({time.time() - t0:.0f} s so far)", flush=True)  # fmt: skip
                    text, blob = summarize(results, args, time.time() - t0)
                    (args.doc / "table2.md").write_text(text)
                    (args.doc / "table2.json").write_text(json.dumps(blob, indent=1))
                    plot(results, task, args, args.doc / f"table2_{task}.png")
    print(summarize(results, args, time.time() - t0)[0])


if __name__ == "__main__":
    main()
