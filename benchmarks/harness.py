"""What every benchmark shares: the machine line, timing by the median of repeats, markdown rows.

A benchmark prints what it measured, the machine it ran on (with the load average, since a
busy machine only ever adds time) and the command that reproduces it. Alternatives are
timed in interleaved rounds (A, B, A, B, ...) so that a load change during the run hits
both alike, and each is reported as its median over the rounds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def machine_line(**extra: object) -> str:
    """One line: cores, CPU, Python, torch (when imported) and threads, load average, and ``extra`` as k=v."""
    parts = [f"{os.cpu_count()} cores ({cpu_name()})", f"Python {platform.python_version()}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    parts.append(f"load average {os.getloadavg()[0]:.2f}")
    parts += [f"{k} {v}" for k, v in extra.items()]
    return "machine: " + ", ".join(parts)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and the seconds the call took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def time_once(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    return timed(fn)[1]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median over ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones), in seconds."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_once(fn) for _ in range(repeats))


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each of ``fns``, timed in interleaved rounds (so load changes hit all alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(time_once(fn))
    return samples


def compare(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each of ``fns``, timed in interleaved rounds."""
    return {name: statistics.median(s) for name, s in interleaved(fns, rounds, warmup).items()}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Median and quartiles of a[i] / b[i] over paired rounds: whether a gap exceeds the rounds' noise."""
    q = statistics.quantiles([x / y for x, y in zip(a, b, strict=True)], n=4)
    return statistics.median(x / y for x, y in zip(a, b, strict=True)), q[0], q[2]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """A markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    """The command that ran this benchmark, to print beside its results."""
    return "python " + " ".join(sys.argv)


@contextlib.contextmanager
def claimed(run: Path) -> Iterator[bool]:
    """Hold the lock of a long run's directory: True while this process owns ``run`` (several workers
    share one work directory), False when another process trains it."""
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / f".{run.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def write_result(run: Path, result: dict) -> dict:
    """``run/result.json``, written atomically: its presence marks the run finished."""
    tmp = run / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, run / "result.json")
    return result


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure to ``path`` (PNG) atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def band(ax, steps: list, y, label: str, style: str = "-") -> None:
    """One learning curve on ``ax``: the mean over runs of ``y`` [runs, len(steps)] with a +-1 std band."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    mean, std = y.mean(0), y.std(0)
    line = ax.plot(steps, mean, style, label=label)[0]
    ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
