"""How long ``madata diagnose`` takes on a 1M-transition dataset (the issue's target: under 60 s).

Collects ``halfcheetah-2x3 --mix medium,expert`` (real MaMuJoCo data from the shipped SAC
checkpoints; 1,000 episodes of 1,000 steps = 1M transitions by default) into a temporary
directory, or takes ``--dataset``; then times

* ``diagnose()`` in-process with the default settings (best of ``--repeat``; every run kept),
  with its own per-stage timings, and
* ``madata diagnose DATASET --report FILE.html --json`` end to end in a fresh process
  (Python start, imports, reading, every statistic, the plots and the HTML page).

    python benchmarks/diagnose_speed.py --episodes 1000 --out docs/results/diagnose_speed.json

Results: docs/diagnostics.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import command_line, machine_line, time_once, timed

import madata
from madata.collect import collect
from madata.diagnostics import diagnose


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, help="an existing dataset (default: collect one)")
    p.add_argument("--episodes", type=int, default=1000, help="episodes to collect (1,000 steps each)")
    p.add_argument("--seed", type=int, default=0, help="collection and diagnosis seed")
    p.add_argument("--repeat", type=int, default=2, help="in-process runs (the best is reported)")
    p.add_argument("--tmp", type=Path, default=None, help="where the collected dataset goes (removed afterwards)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="madata-diagnose-", dir=args.tmp))
    try:
        if args.dataset is None:
            path = tmp / "hc.zarr"
            collect_s = time_once(
                lambda: collect(
                    "halfcheetah-2x3",
                    path,
                    mix=["medium", "expert"],
                    episodes=args.episodes,
                    seed=args.seed,
                    progress=True,
                )
            )
        else:
            path, collect_s = args.dataset, None
        ds = madata.open(path)
        runs = []
        for _ in range(args.repeat):
            d, seconds = timed(lambda ds=ds: diagnose(ds, seed=args.seed))
            runs.append({"seconds": seconds, "stages": d["timing_s"]})
            ds = madata.open(path)  # a fresh reader: no chunk cache carried over
        report = tmp / "report.html"
        cmd = [
            sys.executable,
            "-m",
            "cli.app",
            "diagnose",
            str(path),
            "--report",
            str(report),
            "--json",
            "--seed",
            str(args.seed),
        ]
        proc, cli_s = timed(
            lambda: subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        )
        if proc.returncode != 0:
            sys.exit(f"madata diagnose failed: {proc.stderr.strip()}")
        best = min(r["seconds"] for r in runs)
        result = {
            "dataset": str(args.dataset)
            if args.dataset
            else f"halfcheetah-2x3 --mix medium,expert --episodes {args.episodes} --seed {args.seed}",
            "transitions": ds.num_transitions,
            "episodes": ds.num_episodes,
            "collect_seconds": collect_s,
            "diagnose_seconds_best": best,
            "diagnose_runs": runs,
            "cli_seconds_end_to_end": cli_s,
            "report_bytes": report.stat().st_size,
            "settings": d["settings"],
            "dependence_excess": d["dependence"].get("excess"),
            "coverage_ratio": d["coverage"]["ratio"],
            "gap": d["behaviour_mix"]["gap"],
            "machine": machine_line(numpy=np.__version__),
            "command": command_line(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{result['transitions']:,} transitions, {result['episodes']} episodes")
    print(
        f"diagnose() best of {args.repeat}: {best:.1f} s  (stages of the last run: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1]["stages"].items())
        + ")"
    )
    print(f"madata diagnose --report --json, fresh process: {cli_s:.1f} s")
    print(result["machine"])
    print(f"reproduce: {result['command']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
