"""Table 2's runs on one GPU, several at once: the reference-size check (CAST-BCQ and I-BCQ
at the reference code's network sizes and batch 1024, ``--protocol reference``) or cells of
the CPU protocol that the CPU workers have not started (``--protocol cpu --cells``).

    python benchmarks/table2_device.py --data DIR --work DIR --out DIR --deadline 480
        [--protocol reference|cpu] [--task hopper-3x1] [--methods cast-bcq,ibcq] [--seeds 0,1,2]
        [--cells TIER:METHOD:SEED,...] [--smoke]

One ``table2.py run`` process per cell, all started together on the GPU (each is
launch-bound, so several share the card). ``--cells`` lists them in priority order
(default: every seed of every method in tier a, seed by seed). When the measured pace says
the slowest run would not finish before ``--deadline`` seconds, the live run lowest in
priority is stopped, so that the others finish sooner; a stopped run keeps its checkpoint
and log (it resumes with the same command, on the same kind of device: a CUDA generator's
state does not load into a CPU one). Every 20 s, and at the end, the runs' logs, configs
and results and this script's own log are packed into ``OUT/table2_device.tgz`` (written
atomically), so that a machine taken back halfway still returns what had finished.
``report`` in table2.py puts the finished runs beside the CPU protocol's (each
``result.json`` names its device).
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

from table2 import LABELS, PROTOCOLS, SMOKE, Cell, Protocol

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
    tmp = out / "table2_device.tgz.partial"
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(work.rglob("*")):
            if p.is_file() and (p.name in ("log.csv", "config.json", "result.json") or p.suffix == ".log"):
                tar.add(p, arcname=str(p.relative_to(work)))
        tar.add(log_path, arcname="driver.log")
    os.replace(tmp, out / "table2_device.tgz")


def parse_cells(text: str) -> list[Cell]:
    """``TIER:METHOD:SEED,...`` -> cells (task and dataset filled in later)."""
    out = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in ("a", "b", "c", "x") or parts[1] not in LABELS or not parts[2].isdigit():
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected TIER:METHOD:SEED, TIER one of a, b, c, x and METHOD one of {', '.join(LABELS)}"
            )
        out.append(Cell(parts[0], "", "", parts[1], int(parts[2])))
    return out


def name(cell: Cell) -> str:
    return f"{cell.method} s{cell.seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline", type=float, required=True, help="seconds from now by which runs must end")
    ap.add_argument("--task", default="hopper-3x1")
    ap.add_argument("--methods", type=lambda s: s.split(","), help="tier a's methods (default cast-bcq,ibcq)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], help="their seeds (default 0,1,2)")
    ap.add_argument("--cells", default=None, type=parse_cells, help="TIER:METHOD:SEED,... in priority order")
    ap.add_argument("--protocol", choices=["reference", "cpu"], default="reference")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="the tiny protocol, to check this script anywhere")
    args = ap.parse_args()
    protocol = SMOKE if args.smoke else PROTOCOLS[args.protocol]
    if args.cells and (args.methods or args.seeds):
        ap.error("--cells names methods and seeds itself; --methods and --seeds do not apply with it")
    seeds, methods = args.seeds or [0, 1, 2], args.methods or ["cast-bcq", "ibcq"]
    cells = args.cells or [Cell("a", "", "", m, s) for s in seeds for m in methods]
    cells = [Cell(c.tier, args.task, "medium-expert", c.method, c.seed) for c in cells]
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

    procs: dict[Cell, subprocess.Popen] = {}
    for cell in cells:
        cmd = [sys.executable, str(HERE / "table2.py"), "run", "--tier", cell.tier, "--tasks", cell.task]
        cmd += ["--methods", cell.method, "--seeds", str(cell.seed), "--work", str(args.work)]
        cmd += ["--data", str(args.data), "--done", str(args.work / "none"), "--device", args.device]
        cmd += ["--smoke"] if args.smoke else ["--protocol", args.protocol]
        with open(args.work / "logs" / f"{cell.method}-seed{cell.seed}.log", "a") as out:
            procs[cell] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        say(f"started {name(cell)}: {' '.join(cmd)}")
    run_dir = {c: args.work / "runs" / c.path(protocol) for c in procs}
    last_pack, stopped = 0.0, set()
    fresh_from = dict.fromkeys(procs, 1)  # a pace counts once this many evaluations are logged (see below)
    while True:
        live = [c for c in cells if procs[c].poll() is None]  # in priority order
        now = time.time() - t0
        if not live or now > args.deadline:
            break
        measured = {c: pace(run_dir[c] / "log.csv", protocol) for c in live}
        need = {c: v for c, (_, v) in measured.items()}
        if now - last_pack > PACK_EVERY:
            say(" | ".join(f"{name(c)}: {'?' if need[c] is None else f'{need[c]:.0f} s left'}" for c in live))
            pack(args.work, args.out, log_path)
            last_pack = now
        # shed only on paces measured wholly after the last shed (their interval's start too): the survivors
        # run faster once fewer runs share the GPU, and an interval straddling a shed would not show it
        if len(live) > 1 and all(measured[c][0] >= fresh_from[c] for c in live):
            slowest = max(need[c] for c in live)
            if now + slowest > args.deadline:
                drop = live[-1]
                say(f"the slowest run needs {slowest:.0f} s of {args.deadline - now:.0f} left: stopping {name(drop)}")
                os.killpg(procs[drop].pid, signal.SIGTERM)
                stopped.add(drop)
                fresh_from = {c: measured[c][0] + 2 for c in live}
        time.sleep(2)
    for k, p in procs.items():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            stopped.add(k)
            p.wait()
    for k, p in procs.items():
        finished = (run_dir[k] / "result.json").exists()
        say(f"{name(k)}: {'finished' if finished else 'stopped' if k in stopped else f'exit {p.returncode}'}")
    pack(args.work, args.out, log_path)
    say(f"packed into {args.out / 'table2_device.tgz'}")


if __name__ == "__main__":
    main()
