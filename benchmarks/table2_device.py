"""Table 2's reference-size check on one GPU: CAST-BCQ and I-BCQ at the reference code's
network sizes and batch 1024 (``table2.py --protocol reference``), several seeds at once.

    python benchmarks/table2_device.py --data DIR --work DIR --out DIR --deadline 480
        [--task hopper-3x1] [--methods cast-bcq,ibcq] [--seeds 0,1,2] [--smoke]

One ``table2.py run`` process per (method, seed), all started together on the GPU (each
is launch-bound, so several share the card). Seeds come in priority order: when the
measured pace says the slowest run would not finish before ``--deadline`` seconds, the
runs of the highest seed still running are stopped, so that the others finish sooner; a
stopped run keeps its checkpoint and log (it resumes with the same command). Every 20 s,
and at the end, the runs' logs, configs and results and this script's own log are packed
into ``OUT/table2_reference.tgz`` (written atomically), so that a machine taken back
halfway still returns what had finished. ``report`` in table2.py puts the finished runs
beside the CPU protocol's.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from table2 import REFERENCE, SMOKE, Cell, Protocol

HERE = Path(__file__).resolve().parent
PACK_EVERY = 20.0  # seconds between packs of the results
EVAL_SLACK = 1.5  # evaluations grow longer as the policy learns to stay up (hopper): their pace is padded


def pace(log: Path, protocol: Protocol) -> tuple[int, float | None]:
    """(evaluations logged, seconds this run still needs at the pace of its last interval); None before its first."""
    if not log.exists():
        return 0, None
    with open(log) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return 0, None
    last = rows[-1]
    prev = rows[-2] if len(rows) > 1 else {"step": 0, "train_seconds": 0.0}
    per_step = (float(last["train_seconds"]) - float(prev["train_seconds"])) / (int(last["step"]) - int(prev["step"]))
    per_eval = float(last["eval_seconds"]) / len(rows) * EVAL_SLACK
    left = protocol.steps - int(last["step"])
    return len(rows), left * per_step + left / protocol.eval_every * per_eval


def pack(work: Path, out: Path, log_path: Path) -> None:
    """The runs' small files and the logs, into one archive, replaced atomically."""
    tmp = out / "table2_reference.tgz.partial"
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(work.rglob("*")):
            if p.is_file() and (p.name in ("log.csv", "config.json", "result.json") or p.suffix == ".log"):
                tar.add(p, arcname=str(p.relative_to(work)))
        tar.add(log_path, arcname="driver.log")
    os.replace(tmp, out / "table2_reference.tgz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline", type=float, required=True, help="seconds from now by which runs must end")
    ap.add_argument("--task", default="hopper-3x1")
    ap.add_argument("--methods", default="cast-bcq,ibcq", type=lambda s: s.split(","))
    ap.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="the tiny protocol, to check this script anywhere")
    args = ap.parse_args()
    protocol = SMOKE if args.smoke else REFERENCE
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = args.out / "driver.log"
    log_file = open(log_path, "a")

    def say(line: str) -> None:
        msg = f"[{time.time() - t0:6.0f} s] {line}"
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    procs: dict[tuple[str, int], subprocess.Popen] = {}
    for seed in args.seeds:
        for method in args.methods:
            cmd = [sys.executable, str(HERE / "table2.py"), "run", "--tier", "a", "--tasks", args.task]
            cmd += ["--methods", method, "--seeds", str(seed), "--work", str(args.work), "--data", str(args.data)]
            cmd += ["--done", str(args.work / "none"), "--device", args.device]
            cmd += ["--smoke"] if args.smoke else ["--protocol", "reference"]
            with open(args.work / "logs" / f"{method}-seed{seed}.log", "a") as out:
                procs[method, seed] = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            say(f"started {method} seed {seed}: {' '.join(cmd)}")
    run_dir = {k: args.work / "runs" / Cell("a", args.task, "medium-expert", *k).path(protocol) for k in procs}
    last_pack, stopped = 0.0, set()
    fresh_from = dict.fromkeys(procs, 1)  # a pace counts once this many evaluations are logged (see below)
    while True:
        live = [k for k, p in procs.items() if p.poll() is None]
        now = time.time() - t0
        if not live or now > args.deadline:
            break
        measured = {k: pace(run_dir[k] / "log.csv", protocol) for k in live}
        need = {k: v for k, (_, v) in measured.items()}
        if now - last_pack > PACK_EVERY:
            say(" | ".join(f"{m} s{s}: {'?' if need[m, s] is None else f'{need[m, s]:.0f} s left'}" for m, s in live))
            pack(args.work, args.out, log_path)
            last_pack = now
        seeds_live = sorted({s for _, s in live})
        # shed only on paces measured wholly after the last shed (their interval's start too): the survivors
        # run faster once fewer runs share the GPU, and an interval straddling a shed would not show it
        if len(seeds_live) > 1 and all(measured[k][0] >= fresh_from[k] for k in live):
            slowest = max(need[k] for k in live)
            if now + slowest > args.deadline:
                drop = seeds_live[-1]
                say(f"the slowest run needs {slowest:.0f} s of {args.deadline - now:.0f} left: stopping seed {drop}")
                for k in live:
                    if k[1] == drop:
                        os.killpg(procs[k].pid, signal.SIGTERM)
                        stopped.add(k)
                fresh_from = {k: measured[k][0] + 2 for k in live}
        time.sleep(2)
    for k, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            stopped.add(k)
            p.wait()
    for k, p in procs.items():
        finished = (run_dir[k] / "result.json").exists()
        say(f"{k[0]} seed {k[1]}: {'finished' if finished else 'stopped' if k in stopped else f'exit {p.returncode}'}")
    pack(args.work, args.out, log_path)
    say(f"packed into {args.out / 'table2_reference.tgz'}")


if __name__ == "__main__":
    main()
