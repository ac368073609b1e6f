"""The paper's Figure 1(b) on the grid world: CAST-BCQ against I-BCQ on uniform-random data.

    python benchmarks/grid_figure1.py [--episodes 100,1000] [--seeds 10] [--steps 3000] [--out docs/results]

For each dataset size it collects uniform-random episodes (`madata collect grid --mix
random`, seed 0), trains each method with every seed, and runs the decentralized greedy
policy once from the start (the grid is deterministic): does it reach the goal, and with
what return (optimal: 6). Prints a markdown table and the command; with --out it writes
grid_figure1.md, grid_figure1.json and grid_figure1.png there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import madata
from madata.collect import collect
from madata.envs.grid import GOAL_REWARD, NOOP_ACTION
from madata_algos.cast_bcq_discrete import CastBcqDiscrete, IndependentBcqDiscrete
from madata_algos.evaluate import evaluate
from madata_algos.loader import TransitionLoader

AGENTS = ("agent_0", "agent_1")


def train_and_run(ds: madata.Dataset, method: str, seed: int, steps: int, batch: int) -> float:
    torch.manual_seed(seed)
    loader = TransitionLoader(ds, device="cpu", seed=seed)
    algo = CastBcqDiscrete(2, 2, 3, 2, NOOP_ACTION) if method == "CAST-BCQ" else IndependentBcqDiscrete(2, 2, 3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = loader.sample(batch)
        algo.update(
            obs=b.obs.transpose(0, 1),
            action=b.action.T,
            reward=b.reward,
            next_obs=b.next_obs.transpose(0, 1),
            terminated=b.terminated,
            state=b.state,
            next_state=b.next_state,
            generator=g,
        )

    def policy(obs):
        act = algo.act(torch.stack([torch.as_tensor(obs[a]) for a in AGENTS])).numpy()
        return {a: act[i] for i, a in enumerate(AGENTS)}

    return evaluate("grid", policy, episodes=1, seed=seed).returns[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", default="100,1000")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[str, list[float]]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        for n in (int(x) for x in args.episodes.split(",")):
            ds = collect("grid", Path(d) / f"grid{n}", mix=["random"], episodes=n, seed=0)
            for method in ("CAST-BCQ", "I-BCQ"):
                rets = [train_and_run(ds, method, s, args.steps, args.batch) for s in range(args.seeds)]
                results[f"{n} episodes / {method}"] = rets
                print(f"{n} episodes, {method}: returns {rets} ({time.time() - t0:.0f} s)", flush=True)
    cmd = (
        f"python benchmarks/grid_figure1.py --episodes {args.episodes} --seeds {args.seeds} --steps {args.steps} "
        f"--batch {args.batch}"
    )
    lines = ["| dataset / method | seeds reaching the goal | mean return | returns |", "|---|---:|---:|---|"]
    for key, rets in results.items():
        reached = sum(r > 0 and r <= GOAL_REWARD for r in rets)  # a goal episode has return 10 - steps + 1 > 0
        lines.append(f"| {key} | {reached} / {len(rets)} | {np.mean(rets):.1f} | {', '.join(f'{r:g}' for r in rets)} |")
    table = "\n".join(lines)
    print("\n" + table + f"\n\ncommand: {cmd}\ntime: {time.time() - t0:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grid_figure1.json").write_text(json.dumps({"command": cmd, "results": results}, indent=2))
        (args.out / "grid_figure1.md").write_text(f"# Grid world, Figure 1(b)\n\n{table}\n\nCommand: `{cmd}`\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = list(results)
        ax.bar(range(len(keys)), [sum(r > 0 for r in results[k]) for k in keys])
        ax.set_xticks(range(len(keys)), keys, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"seeds reaching the goal (of {args.seeds})")
        fig.tight_layout()
        fig.savefig(args.out / "grid_figure1.png", dpi=100)


if __name__ == "__main__":
    main()
