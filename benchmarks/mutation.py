"""Mutation testing: how many single-point changes of a module the test suite notices.

    python benchmarks/mutation.py madata_algos/cast_bcq.py madata_algos/cast_bcq_discrete.py
        --tests tests/test_cast_bcq.py,tests/test_cast_bcq_update.py [--jobs 2] [--timeout 120] [--json out.json]

The mutants are mutmut's (``mutmut.mutation.file_mutation.create_mutations``, mutmut 3.8:
operator swaps, number + 1, string changes, argument removal, keyword and name swaps,
``x = None`` for assignments, ...): each is the whole module with one node replaced. The
harness is ours, because mutmut's own runner took about 15 s per mutant here: the parent
imports torch and pytest once, and for every mutant forks a child that loads the mutated
module under its real name before anything imports it, then runs the given tests with
``-x``. A mutant is *killed* when a test fails or errors, *survives* when they all pass,
and *times out* (counted as killed, listed apart) past ``--timeout`` seconds.

Prints the kill rate per file, every survivor as a diff line, and the command.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mutants(path: Path) -> list[tuple[int, str, str]]:
    """(line, one-line description, whole mutated source) for every mutant of ``path``."""
    import libcst as cst
    from mutmut.mutation.file_mutation import create_mutations, deep_replace

    code = path.read_text()
    module, mutations, _, _ = create_mutations(str(path), code)
    out = []
    for m in mutations:
        mutated = deep_replace(module, m.original_node, m.mutated_node).code
        if mutated == code:
            continue
        diff = [
            d
            for d in difflib.unified_diff(code.splitlines(), mutated.splitlines(), lineterm="", n=0)
            if d[:1] in "+-" and d[:3] not in ("+++", "---")
        ]
        pos = module.code_for_node(m.original_node)
        line = next((i + 1 for i, ln in enumerate(code.splitlines()) if diff and ln == diff[0][1:]), 0)
        out.append((line, " / ".join(d.strip() for d in diff)[:300] or pos[:100], mutated))
    del cst
    return out


def run_child(module_name: str, path: Path, source: str, tests: list[str]) -> None:
    """In the forked child: install the mutant under its module name, run the tests, exit with pytest's code."""
    import pytest

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = str(path)
    sys.modules[module_name] = mod
    try:
        exec(compile(source, str(path), "exec"), mod.__dict__)
    except Exception:
        os._exit(3)  # the mutant does not even import: killed
    code = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-W", "ignore"])
    os._exit(int(code))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--tests", required=True, help="comma-separated test files or node ids")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", type=Path, default=None, help="write every mutant's outcome here")
    ap.add_argument(
        "--log",
        type=Path,
        default=None,
        help="append each outcome here as it comes (JSON lines); mutants already in it are not run again",
    )
    ap.add_argument(
        "--preload",
        default="madata,madata_algos.networks,madata_algos.configs",
        help="modules the parent imports once (none of them may import a mutated file)",
    )
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "tests"))
    import importlib

    import pytest  # noqa: F401  (imported once, before forking)
    import torch  # noqa: F401

    mutated = {".".join(f.with_suffix("").parts) for f in args.files}
    for name in filter(None, args.preload.split(",")):
        importlib.import_module(name)
    leaked = mutated & set(sys.modules)
    if leaked:
        raise SystemExit(f"mutation: --preload imported {sorted(leaked)}, the modules under test")

    tests = args.tests.split(",")
    todo = []
    for f in args.files:
        name = ".".join(f.with_suffix("").parts)
        for line, desc, src in mutants(f):
            todo.append({"file": str(f), "module": name, "line": line, "mutant": desc, "source": src})
    print(f"{len(todo)} mutants in {', '.join(map(str, args.files))}; tests: {', '.join(tests)}", flush=True)
    known = {}
    if args.log and args.log.exists():  # outcomes of an earlier, interrupted run
        for line in args.log.read_text().splitlines():
            r = json.loads(line)
            known[(r["file"], r["line"], r["mutant"])] = r["outcome"]
    for t in todo:
        if (t["file"], t["line"], t["mutant"]) in known:
            t["outcome"] = known[(t["file"], t["line"], t["mutant"])]
    running: dict[int, tuple[dict, float]] = {}
    t0, done = time.time(), 0
    queue = [t for t in todo if "outcome" not in t]
    print(f"{len(todo) - len(queue)} outcomes taken from {args.log}", flush=True) if known else None

    def record(item: dict) -> None:
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps({k: v for k, v in item.items() if k != "source"}) + "\n")

    while queue or running:
        while queue and len(running) < args.jobs:
            item = queue.pop(0)
            pid = os.fork()
            if pid == 0:
                run_child(item["module"], ROOT / item["file"], item["source"], tests)
            running[pid] = (item, time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for p, (item, started) in list(running.items()):
                if time.time() - started > args.timeout:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    item["outcome"] = "timeout"
                    record(item)
                    del running[p]
                    done += 1
            time.sleep(0.05)
            continue
        item, _ = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        item["outcome"] = "survived" if code == 0 else "killed"
        record(item)
        done += 1
        if done % 25 == 0:
            print(f"  {done}/{len(queue) + done + len(running)} in {time.time() - t0:.0f} s", flush=True)
    print()
    for f in args.files:
        mine = [t for t in todo if t["file"] == str(f)]
        killed = sum(t["outcome"] != "survived" for t in mine)
        timeouts = sum(t["outcome"] == "timeout" for t in mine)
        print(
            f"{f}: {killed}/{len(mine)} killed ({100 * killed / max(1, len(mine)):.1f} %), {timeouts} of them by timeout"
        )
        for t in mine:
            if t["outcome"] == "survived":
                print(f"  survived, line {t['line']}: {t['mutant']}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in t.items() if k != "source"} for t in todo], indent=1))
    print(
        f"\n{time.time() - t0:.0f} s; command: python benchmarks/mutation.py {' '.join(map(str, args.files))} "
        f"--tests {args.tests} --jobs {args.jobs} --timeout {args.timeout:g}"
    )


if __name__ == "__main__":
    main()
