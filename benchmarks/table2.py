"""The paper's Table 2 on madata's own MaMuJoCo data, at the paper's training budget.

    python benchmarks/table2.py run [--tier a,b,c] [--tasks ...] [--methods ...] [--seeds 0,1,2]
        [--work DIR] [--data DIR] [--done docs/results/table2/runs] [--threads 1]
        [--protocol cpu|reference] [--device cpu|cuda]
    python benchmarks/table2.py report [--work DIR ...] [--data DIR] [--out docs/results]

``run`` trains the cells of the table, in priority order (tier a: the five methods on
uncoordinated medium-expert data of the three robots; b: CAST-BCQ's ablations on hopper
and walker2d; c: CAST-BCQ and I-BCQ on the coordinated medium and expert datasets; x,
exploratory, outside the paper's table: CAST-BCQ whose teammates follow the joint policy,
``--teammate-candidates 10``), one
``madata_algos.train`` run per (task, dataset, method, seed). Several ``run`` processes
may share one work directory: each cell is claimed with a file lock, a killed run resumes
from its last checkpoint, and a finished one (``result.json`` in the work directory or
under ``--done``) is skipped. Each result records the git commit it ran from and the
SHA-256 of its dataset's commit record.

``report`` gathers every finished result (from the work directories and the committed
``docs/results/table2/runs``), copies new ones there, and writes ``table2.md``,
``table2.json`` and one learning-curve PNG per task.

The protocol (``PROTOCOL``) is the paper's budget on this CPU: 20,000 iterations per run,
evaluation every 1,000 on 10 episodes with the same episode seeds for every method,
1,000-episode datasets, and 256-256 networks at batch 256 (docs/results/table2.md says
why). A run's final return is the mean of its last 3 evaluations. ``--protocol reference``
(``REFERENCE``) is the same with the reference code's network sizes (the defaults of
``madata train``) at batch 1024: the check that the CPU protocol's sizes do not change the
ordering, run on a GPU (``benchmarks/table2_device.py``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import band, claimed, save_figure, write_result

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["hopper-3x1", "halfcheetah-2x3", "walker2d-2x3"]
DATASETS = {"medium-expert": ["medium", "expert"], "medium": ["medium"], "expert": ["expert"]}
BASELINES = ["ibcq", "mabcq", "icq-ma", "bcq"]
ABLATIONS = ["cast-bcq-no-csaa", "cast-bcq-no-subteam", "cast-bcq-no-clipped-double-q"]
# Sec. 3.2's reading of Eq. 7-8: teammates take the best of 10 joint candidates under the joint critic
EXPLORATORY = ["cast-bcq-teammates-10"]
LABELS = {
    "cast-bcq": "CAST-BCQ",
    "ibcq": "I-BCQ",
    "mabcq": "MA-BCQ",
    "icq-ma": "ICQ-MA",
    "bcq": "BCQ (centralized)",
    "cast-bcq-no-csaa": "CAST-BCQ --no-csaa",
    "cast-bcq-no-subteam": "CAST-BCQ --no-subteam",
    "cast-bcq-no-clipped-double-q": "CAST-BCQ --no-clipped-double-q",
    "cast-bcq-teammates-10": "CAST-BCQ --teammate-candidates 10",
}
# The paper's Table 2 (uncoordinated medium-expert): HalfCheetah-2x3, Hopper-3x1, Walker2d-2x3
PAPER = {
    "cast-bcq": (2937, 3078, 1590),
    "bcq": (2465, 408, 591),
    "ibcq": (2401, 403, 246),
    "mabcq": (2614, 1364, 987),
    "icq-ma": (1649, 923, 253),
}
PAPER_ORDER = ["halfcheetah-2x3", "hopper-3x1", "walker2d-2x3"]


@dataclass(frozen=True)
class Protocol:
    steps: int = 20_000
    batch_size: int = 256
    hidden: tuple[int, ...] | None = (256, 256)  # None: each network's default (the reference code's sizes)
    eval_every: int = 1000
    eval_episodes: int = 10
    episodes: int = 1000  # per dataset
    final_evals: int = 3  # a run's final return: the mean of its last evaluations

    @property
    def name(self) -> str:
        h = "ref" if self.hidden is None else "-".join(map(str, self.hidden))
        return f"s{self.steps}-b{self.batch_size}-h{h}-e{self.eval_every}x{self.eval_episodes}-d{self.episodes}"

    @property
    def sizes(self) -> str:
        if self.hidden is None:
            return "the reference code's network sizes (VAE 750-750, actor and critics 400-300)"
        return f"{'-'.join(map(str, self.hidden))} networks for every method"


PROTOCOL = Protocol()
REFERENCE = Protocol(batch_size=1024, hidden=None)


@dataclass(frozen=True)
class Cell:
    tier: str
    task: str
    data: str
    method: str
    seed: int

    def path(self, protocol: Protocol) -> Path:
        return Path(protocol.name) / self.task / self.data / self.method / f"seed{self.seed}"


def cells(seeds: list[int]) -> list[Cell]:
    """Every cell of the table, in the order they should be run."""
    out = [Cell("a", t, "medium-expert", m, s) for s in seeds for t in TASKS for m in ["cast-bcq", *BASELINES]]
    out += [
        Cell("b", t, "medium-expert", m, s) for s in seeds for t in ["hopper-3x1", "walker2d-2x3"] for m in ABLATIONS
    ]
    out += [
        Cell("c", t, d, m, s) for s in seeds for t in TASKS for d in ["medium", "expert"] for m in ["cast-bcq", "ibcq"]
    ]
    out += [
        Cell("x", t, "medium-expert", m, s) for s in seeds for t in ["walker2d-2x3", "hopper-3x1"] for m in EXPLORATORY
    ]
    return out


def method_config(method: str, protocol: Protocol):
    """(algorithm, config) of a method under the protocol's network sizes."""
    from madata_algos.configs import BcqConfig, CastBcqConfig, IcqConfig, MabcqConfig

    h = protocol.hidden
    bcq_sizes = {} if h is None else dict(vae_hidden=h, actor_hidden=h, critic_hidden=h)
    if method.startswith("cast-bcq"):
        ablation = {
            "cast-bcq": {},
            "cast-bcq-no-csaa": {"csaa": False},
            "cast-bcq-no-subteam": {"subteam_sampling": False},
            "cast-bcq-no-clipped-double-q": {"clipped_double_q": False},
            "cast-bcq-teammates-10": {"teammate_candidates": 10},
        }[method]
        return "cast-bcq", CastBcqConfig(**bcq_sizes, **ablation)
    if method in ("ibcq", "bcq"):
        return method, BcqConfig(**bcq_sizes)
    if method == "mabcq":
        return "mabcq", MabcqConfig(**bcq_sizes)
    if method == "icq-ma":
        return "icq-ma", IcqConfig() if h is None else IcqConfig(actor_hidden=h, critic_hidden=h)
    raise SystemExit(f"table2: unknown method {method!r}")


# ---------------------------------------------------------------------------- run


def git_commit() -> str:
    """The commit this script runs from, with "+dirty" when the tree has uncommitted changes.

    A copy of the tree without its git directory (a GPU machine's) names it in ``TABLE2_COMMIT``."""
    if os.environ.get("TABLE2_COMMIT"):
        return os.environ["TABLE2_COMMIT"]
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    return rev + ("+dirty" if dirty.strip() else "")


def dataset(data_dir: Path, task: str, name: str, protocol: Protocol) -> Path:
    """The dataset for (task, name), collected (or finished) first: `madata collect TASK --mix LEVELS --seed 0`."""
    import madata
    from madata.collect import collect

    path = data_dir / f"{task}-{name}.zarr"
    if path.exists():  # finished already: reading it takes no lock, so workers started together do not collide
        ds = madata.open(path, verify="none")
        if ds.record.complete and ds.num_episodes == protocol.episodes:
            return path
    collect(task, path, mix=DATASETS[name], episodes=protocol.episodes, seed=0, resume=True, progress=True)
    return path


def data_digest(path: Path) -> str:
    """SHA-256 of the dataset's commit record: it holds every chunk's checksum, so it names the exact data."""
    return hashlib.sha256((path / "commit.json").read_bytes()).hexdigest()


def same_data(result: dict, data_dir: Path) -> bool | None:
    """Whether a run trained on the dataset now in ``data_dir``: its ``data_sha256`` is the present commit record's
    digest with the record's sequence number at some earlier value (collections resumed by older versions of
    this script committed the same record again, advancing only that number). None: the dataset is not here."""
    path = data_dir / Path(result["data"]).name / "commit.json"
    if not path.exists():
        return None
    raw = path.read_text()
    now = int(re.search(r'"sequence":(\d+)', raw).group(1))
    return any(
        hashlib.sha256(re.sub(r'"sequence":\d+', f'"sequence":{n}', raw).encode()).hexdigest() == result["data_sha256"]
        for n in range(now + 1)
    )


def final_return(log: list[dict], protocol: Protocol) -> float:
    return float(np.mean([r["eval_return"] for r in log[-protocol.final_evals :]]))


def run_cell(cell: Cell, work: Path, data_dir: Path, protocol: Protocol, device: str | None = None) -> dict | None:
    """Train one cell unless another process holds it; returns its result, or None when skipped."""
    from madata_algos.train import train

    run = work / "runs" / cell.path(protocol)
    with claimed(run) as mine:
        if not mine:
            return None  # another worker trains it
        if (run / "result.json").exists():
            return json.loads((run / "result.json").read_text())
        data = dataset(data_dir, cell.task, cell.data, protocol)
        algorithm, config = method_config(cell.method, protocol)
        t0 = time.time()
        log = train(
            data,
            run,
            algorithm=algorithm,
            steps=protocol.steps,
            seed=cell.seed,
            config=config,
            batch_size=protocol.batch_size,
            eval_every=protocol.eval_every,
            eval_episodes=protocol.eval_episodes,
            resume=(run / "config.json").exists(),
            device=device,
            progress=True,
        )
        result = {
            "cell": vars(cell),
            "protocol": vars(protocol),
            "commit": git_commit(),
            "data": str(data),
            "data_sha256": data_digest(data),
            "final_return": final_return(log, protocol),
            "final_normalized": None
            if log[-1]["eval_normalized"] is None
            else float(np.mean([r["eval_normalized"] for r in log[-protocol.final_evals :]])),
            "wall_seconds_this_process": round(time.time() - t0, 1),
            "device": describe_device(device),
        }
        return write_result(run, result)


def describe_device(device: str | None) -> str:
    """The device a run trained on, in words (the GPU's name where there is one)."""
    import torch

    from madata_algos.train import resolve_device

    dev = resolve_device(device)
    return f"cuda: {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else "cpu"


SMOKE = Protocol(steps=20, eval_every=10, eval_episodes=2, episodes=8)
PROTOCOLS = {"cpu": PROTOCOL, "reference": REFERENCE, "smoke": SMOKE}


def protocol_of(args) -> Protocol:
    return SMOKE if args.smoke else PROTOCOLS[args.protocol]


def cmd_run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    protocol = protocol_of(args)
    todo = [
        c
        for c in cells(args.seeds)
        if c.tier in args.tier
        and c.task in args.tasks
        and c.method in args.methods
        and (args.datasets is None or c.data in args.datasets)
    ]
    done = {p.parent.relative_to(args.done) for p in args.done.glob("**/result.json")} if args.done.exists() else set()
    print(
        f"table2: {len(todo)} cells requested, {sum(c.path(protocol) in done for c in todo)} already committed; "
        f"protocol {protocol.name}; commit {git_commit()}",
        flush=True,
    )
    for cell in todo:
        if cell.path(protocol) in done:
            continue
        result = run_cell(cell, args.work, args.data, protocol, args.device)
        if result is not None:
            print(
                f"{cell.task} {cell.data} {cell.method} seed {cell.seed}: final return {result['final_return']:.1f}",
                flush=True,
            )


# ---------------------------------------------------------------------------- report


def read_log(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in csv.DictReader(f)]


def gather(roots: list[Path], store: Path, runs: str = "runs") -> list[dict]:
    """Finished results under ``root/runs`` for each of ``roots`` (copied into ``store`` when new) and in
    ``store``, with their logs."""
    for root in roots:
        for res in (root / runs).glob("**/result.json"):
            rel = res.parent.relative_to(root / runs)
            dest = store / rel
            if not (dest / "result.json").exists():
                dest.mkdir(parents=True, exist_ok=True)
                for name in ("log.csv", "config.json", "result.json"):  # result.json last: it marks the copy complete
                    shutil.copy2(res.parent / name, dest / name)
    out = []
    for res in sorted(store.glob("**/result.json")):
        r = json.loads(res.read_text())
        r["log"] = read_log(res.parent / "log.csv")
        out.append(r)
    return out


def short_commit(commit: str) -> str:
    """A commit's first 12 hex digits, keeping the mark of a tree that differed from it."""
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def devices_line(results: list[dict]) -> str:
    """How many runs trained on each device, e.g. '42 runs on cpu, 5 runs on cuda: NVIDIA H200'."""
    # the field came after the first runs
    count = Counter(r.get("device", "a device not recorded") for r in results)
    return ", ".join(f"{n} run{'s' * (n != 1)} on {dev}" for dev, n in count.most_common())


def summary(finals: list[float], seed: int = 0) -> dict:
    """mean, std and a 95 % percentile bootstrap interval of the mean over seeds."""
    from madata_algos.stats import bootstrap_interval

    x = np.asarray(finals, dtype=float)
    lo, hi = bootstrap_interval([x], lambda g: float(g[0].mean()), seed=seed)
    return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()), "ci95": [lo, hi], "seeds": x.tolist()}


def behaviour_returns(data_dir: Path, task: str, name: str) -> dict | None:
    """Mean, std and count of the episode return per behaviour combination of a dataset, when it is at hand."""
    import madata

    path = data_dir / f"{task}-{name}.zarr"
    if not (path / "commit.json").exists():
        return None
    table = madata.open(path).episodes.to_pandas()
    cols = sorted(c for c in table.columns if c.startswith("behaviour."))
    out = {}
    for key, group in table.groupby(cols)["return"]:
        out["/".join(key)] = [round(float(group.mean()), 1), round(float(group.std()), 1), int(group.size)]
    return out


def curves_plot(results: list[dict], task: str, path: Path) -> None:
    """Learning curves of every method on ``task``: mean over seeds with a +-1 std band, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = [d for d in DATASETS if any(r["cell"]["task"] == task and r["cell"]["data"] == d for r in results)]
    fig, axes = plt.subplots(1, len(datas), figsize=(6 * len(datas), 4.2), squeeze=False)
    for ax, data in zip(axes[0], datas, strict=True):
        for method, label in LABELS.items():
            logs = [
                r["log"]
                for r in results
                if r["cell"]["task"] == task and r["cell"]["data"] == data and r["cell"]["method"] == method
            ]
            if not logs:
                continue
            steps = [row["step"] for row in logs[0]]
            y = [[row["eval_return"] for row in log] for log in logs]
            band(
                ax,
                steps,
                y,
                f"{label} ({len(logs)})",
                "--" if method in ABLATIONS or method == "bcq" else ":" if method in EXPLORATORY else "-",
            )
        ax.set_title(f"{task}, {data}")
        ax.set_xlabel("training iterations")
        ax.set_ylabel("evaluation return (10 episodes)")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def cmd_report(args) -> None:
    from madata_algos.stats import bootstrap_interval, iqm, permutation_test, probability_of_improvement

    protocol = protocol_of(args)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "table2" / "runs"
    gathered = gather(args.work, store)
    results = [r for r in gathered if r["protocol"] == json.loads(json.dumps(vars(protocol)))]
    reference = [r for r in gathered if r["protocol"] == json.loads(json.dumps(vars(REFERENCE)))]
    if not results:
        raise SystemExit(
            f"table2 report: no finished runs of protocol {protocol.name} in {[str(w) for w in args.work]} or {store}"
        )
    cell = {}
    for r in results:
        c = r["cell"]
        cell.setdefault((c["task"], c["data"], c["method"]), []).append(r)
    table = {
        "/".join(k): summary([r["final_return"] for r in sorted(v, key=lambda r: r["cell"]["seed"])])
        for k, v in cell.items()
    }
    commits = sorted({r["commit"] for r in results})
    checked = {id(r): same_data(r, args.data) for r in gathered}
    differ = [r for r in gathered if checked[id(r)] is False]
    data_line = (
        f"Data: every one of the {len(gathered)} runs here trained on the datasets now in the data directory (each "
        "run's `data_sha256` is its dataset's present commit record, up to the record's sequence number)."
        if not differ and None not in checked.values()
        else f"Data: {len(differ)} run(s) trained on other data than the data directory now holds: "
        + ", ".join("/".join(str(v) for v in r["cell"].values()) for r in differ)
        + f"; {sum(v is None for v in checked.values())} run(s) could not be checked (dataset absent)."
    )
    lines = [
        "# Table 2 at the paper's budget: CAST-BCQ and the baselines on MaMuJoCo data",
        "",
        "Generated by `python benchmarks/table2.py report` from the finished runs in "
        "[`table2/runs/`](table2/runs/) (each run's `log.csv`, `config.json` and `result.json`). "
        "The analysis, the protocol's reasons and the verdicts are in [table2_analysis.md](table2_analysis.md).",
        "",
        f"**Protocol** (`{protocol.name}`): {protocol.steps:,} training iterations per run at batch "
        f"{protocol.batch_size}, {protocol.sizes}, evaluation every "
        f"{protocol.eval_every:,} iterations on {protocol.eval_episodes} episodes (episode k of seed s resets with "
        f"10000 (s + 1) + k, the same for every method), datasets of {protocol.episodes:,} episodes collected by "
        f"`madata collect TASK --mix LEVELS --episodes {protocol.episodes} --seed 0`. A run's final return is the mean of its "
        f"last {protocol.final_evals} evaluations; cells show mean +- std over seeds, the 95 % percentile bootstrap "
        "interval of the mean in brackets, and [n] seeds.",
        "",
        f"Ran from commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{short_commit(c)}`' for c in commits)} "
        f"(per run in its `result.json`). Devices: {devices_line(results)}.",
        "",
        data_line,
        "",
        "Commands: `python benchmarks/table2.py run --tier a,b,c --seeds 0,1,2` (any number of workers; "
        "`--tier x` for the exploratory runs) and `python benchmarks/table2.py report`.",
    ]
    blob = {"protocol": vars(protocol), "commits": commits, "cells": table, "behaviour": {}, "aggregate": {}}
    for tier, title, datas, methods in (
        (
            "a",
            "(a) Uncoordinated medium-expert: CAST-BCQ against the baselines",
            ["medium-expert"],
            ["cast-bcq", *BASELINES],
        ),
        ("b", "(b) CAST-BCQ's ablations, uncoordinated medium-expert", ["medium-expert"], ["cast-bcq", *ABLATIONS]),
        ("c", "(c) Coordinated datasets (one level for the whole team)", ["medium", "expert"], ["cast-bcq", "ibcq"]),
        (
            "x",
            "(x) Exploratory, outside the paper's table: teammates that follow the joint policy",
            ["medium-expert"],
            ["cast-bcq", *EXPLORATORY],
        ),
    ):
        rows = []
        for task in TASKS:
            if tier in ("b", "x") and not any(table.get(f"{task}/{d}/{m}") for d in datas for m in methods[1:]):
                continue  # CAST-BCQ's own row is there to compare with; without a run of the tier it says nothing
            for data in datas:
                for m in methods:
                    s = table.get(f"{task}/{data}/{m}")
                    if s is None:
                        continue
                    paper = ""
                    if data == "medium-expert" and m in PAPER:
                        paper = str(PAPER[m][PAPER_ORDER.index(task)])
                    rows.append(
                        f"| {task} | {data} | {LABELS[m]} | {s['mean']:.0f} +- {s['std']:.0f} "
                        f"[{s['ci95'][0]:.0f}, {s['ci95'][1]:.0f}] ({s['n']}) | {paper} |"
                    )
        if rows:
            status = "" if tier == "a" else " (as far as finished)"
            lines += [
                "",
                f"## {title}{status}",
                "",
                "| task | dataset | method | final return | paper |",
                "|---|---|---|---:|---:|",
                *rows,
            ]
    # aggregate over the three robots (tier a): normalized scores, IQM with stratified bootstrap intervals
    norm = {
        m: [np.array([r["final_normalized"] for r in cell.get((t, "medium-expert", m), [])]) for t in TASKS]
        for m in ["cast-bcq", *BASELINES]
    }
    complete = [m for m, groups in norm.items() if all(len(g) > 0 for g in groups)]
    if complete:
        lines += [
            "",
            "## Aggregate over the three robots (D4RL-normalized scores, tier a)",
            "",
            "IQM and mean over all runs of the three tasks, with 95 % stratified bootstrap intervals (runs "
            "resampled within each task), and the probability that a CAST-BCQ run beats a run of the "
            "method on the same task (averaged over tasks; its interval resamples both methods' runs). p: the "
            "two-sided p-value of a permutation test of CAST-BCQ against the method, stratified by task (runs "
            "relabelled within their task; the statistic is the mean over tasks of the difference of mean "
            "normalized scores), exact at these run counts.",
            "",
            "| method | runs | IQM | mean | P(CAST-BCQ > method) | p |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in complete:
            groups = norm[m]
            ci_iqm = bootstrap_interval(groups, lambda g: iqm(np.concatenate(g)))
            ci_mean = bootstrap_interval(groups, lambda g: float(np.concatenate(g).mean()))
            allx = np.concatenate(groups)
            poi, ci_poi, p_perm = None, None, None
            if m != "cast-bcq" and "cast-bcq" in complete:
                p_perm = permutation_test(norm["cast-bcq"], groups)
                poi = probability_of_improvement(norm["cast-bcq"], groups)
                # both methods' runs resampled within each task, as rliable does for this statistic
                ci_poi = bootstrap_interval(
                    norm["cast-bcq"] + groups, lambda g: probability_of_improvement(g[: len(TASKS)], g[len(TASKS) :])
                )
            blob["aggregate"][m] = {
                "iqm": iqm(allx),
                "iqm_ci95": ci_iqm,
                "mean": float(allx.mean()),
                "mean_ci95": ci_mean,
                "p_cast_bcq_better": poi,
                "p_cast_bcq_better_ci95": ci_poi,
                "permutation_p": p_perm,
            }
            shown = " | " if poi is None else f"{poi:.2f} [{ci_poi[0]:.2f}, {ci_poi[1]:.2f}] | {p_perm:.4f}"
            lines.append(
                f"| {LABELS[m]} | {allx.size} | {iqm(allx):.1f} [{ci_iqm[0]:.1f}, {ci_iqm[1]:.1f}] | "
                f"{allx.mean():.1f} [{ci_mean[0]:.1f}, {ci_mean[1]:.1f}] | {shown} |"
            )
    # the behaviour data's own returns
    beh_rows = []
    for task in TASKS:
        for data in DATASETS:
            b = behaviour_returns(args.data, task, data)
            if b is None:
                continue
            blob["behaviour"][f"{task}/{data}"] = b
            for combo, (mean, std, n) in b.items():
                beh_rows.append(f"| {task} | {data} | {combo} | {mean:.0f} +- {std:.0f} | {n} |")
    if beh_rows:
        lines += [
            "",
            "## The behaviour data's own returns",
            "",
            "Per combination of levels (agent 0 / agent 1 / ...).",
            "",
            "| task | dataset | levels | return | episodes |",
            "|---|---|---|---:|---:|",
            *beh_rows,
        ]
    for task in TASKS:
        if any(r["cell"]["task"] == task for r in results):
            curves_plot(results, task, args.out / f"table2_{task}.png")
            lines += ["", f"![learning curves, {task}](table2_{task}.png)"]
    if reference and protocol != REFERENCE:
        lines += reference_section(reference, cell, blob, args.out)
    (args.out / "table2.md").write_text("\n".join(lines) + "\n")
    (args.out / "table2.json").write_text(json.dumps(blob, indent=1))
    print("\n".join(lines))


def reference_section(reference: list[dict], cpu_cells: dict, blob: dict, out: Path) -> list[str]:
    """Per-seed finals of the reference protocol's runs beside the same cells under the CPU protocol."""
    ref_cells: dict = {}
    for r in reference:
        c = r["cell"]
        ref_cells.setdefault((c["task"], c["data"], c["method"]), []).append(r)
    devices = sorted({r.get("device", "cpu") for r in reference})
    commits = sorted({r["commit"] for r in reference})
    lines = [
        "",
        f"## The reference sizes and batch {REFERENCE.batch_size} (protocol `{REFERENCE.name}`)",
        "",
        f"The same protocol with {REFERENCE.sizes} at batch {REFERENCE.batch_size}, on {', '.join(devices)}; "
        f"from commit {', '.join(f'`{short_commit(c)}`' for c in commits)}. Final returns per seed, beside the CPU "
        f"protocol's (`{PROTOCOL.name}`) runs of the same cells. Command: `python benchmarks/table2_device.py` "
        "(its docstring).",
        "",
        "| task | dataset | method | reference protocol: seeds | mean +- std | CPU protocol: seeds | mean +- std |",
        "|---|---|---|---|---:|---|---:|",
    ]
    blob["reference"] = {}
    for key in sorted(ref_cells):
        ref = {r["cell"]["seed"]: r["final_return"] for r in ref_cells[key]}
        cpu = {r["cell"]["seed"]: r["final_return"] for r in cpu_cells.get(key, [])}
        blob["reference"]["/".join(key)] = {"reference": ref, "cpu": cpu}

        def show(x: dict) -> tuple[str, str]:
            if not x:
                return "", ""
            v = np.array(list(x.values()))
            return ", ".join(f"{s}: {f:.0f}" for s, f in sorted(x.items())), f"{v.mean():.0f} +- {v.std():.0f}"

        lines.append(f"| {key[0]} | {key[1]} | {LABELS[key[2]]} | {' | '.join(show(ref))} | {' | '.join(show(cpu))} |")
    for task in TASKS:
        if any(r["cell"]["task"] == task for r in reference):
            curves_plot(reference, task, out / f"table2_reference_{task}.png")
            lines += ["", f"![learning curves at the reference sizes, {task}](table2_reference_{task}.png)"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the table's cells (resumable; several workers may share --work)")
    r.add_argument("--tier", default="a,b,c", type=lambda s: s.split(","))
    r.add_argument("--tasks", default=",".join(TASKS), type=lambda s: s.split(","))
    r.add_argument(
        "--methods", default=",".join(["cast-bcq", *BASELINES, *ABLATIONS, *EXPLORATORY]), type=lambda s: s.split(",")
    )
    r.add_argument("--datasets", default=None, type=lambda s: s.split(","))
    r.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    r.add_argument("--work", type=Path, default=ROOT / ".runs" / "table2")
    r.add_argument("--data", type=Path, default=ROOT / ".runs" / "table2" / "data")
    r.add_argument(
        "--done",
        type=Path,
        default=ROOT / "docs" / "results" / "table2" / "runs",
        help="committed results: cells found here are not run again",
    )
    r.add_argument("--threads", type=int, default=1, help="torch threads of this worker")
    r.add_argument("--smoke", action="store_true", help="a tiny protocol to check the pipeline (results kept apart)")
    r.add_argument("--protocol", choices=["cpu", "reference"], default="cpu", help="network sizes and batch (above)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p = sub.add_parser("report", help="gather finished runs and write table2.md, table2.json and the plots")
    p.add_argument("--work", type=Path, nargs="*", default=[ROOT / ".runs" / "table2"])
    p.add_argument("--data", type=Path, default=ROOT / ".runs" / "table2" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--smoke", action="store_true", help="report the --smoke protocol's runs")
    p.set_defaults(protocol="cpu")  # the reference protocol's runs are a section of the CPU protocol's report
    args = ap.parse_args()
    cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
