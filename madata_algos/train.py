"""Training runs: dataset -> loader -> algorithm -> periodic evaluation -> logs, plots, checkpoints.

A run directory holds ``config.json`` (algorithm, dataset, seed, hyperparameters, and the
dataset's description, so the run can be evaluated without it), ``log.csv`` (one row per
evaluation), ``learning_curve.png`` and ``checkpoint.pt`` (the networks, optimizers and
every random generator, written atomically and checksummed). ``resume=True`` continues a
killed run from its last checkpoint and gives the same numbers as a run that was never
interrupted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import madata
from madata.errors import DatasetExistsError, OutputError, SchemaError
from madata_algos import registry
from madata_algos.evaluate import evaluate
from madata_algos.loader import Batch, StreamingLoader, TransitionLoader, default_device
from madata_algos.networks import keep_large_tensors_on_heap, pad_agents
from madata_algos.registry import DataInfo

EVAL_FIELDS = ["eval_return", "eval_std", "eval_normalized", "eval_win_rate"]
TIME_FIELDS = ["train_seconds", "eval_seconds"]  # cumulative across resumes
CHECKPOINT_FORMAT = "madata-checkpoint-1"


def agent_major(batch: Batch, action_starts: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Loader batch -> the algorithms' layout: per-agent fields [N, B, max dim] (zero-padded);
    discrete actions [N, B], shifted by ``action_starts`` to 0-based indices."""

    def per_agent(x):
        return x.transpose(0, 1) if batch.stacked else pad_agents(x)

    action = per_agent(batch.action)  # discrete data always come stacked (equal agents: registry.describe)
    if action_starts and any(action_starts):
        action = action - torch.tensor(action_starts, device=action.device)[:, None]
    out = {
        "obs": per_agent(batch.obs),
        "action": action,
        "next_obs": per_agent(batch.next_obs),
        "reward": batch.reward,
        "terminated": batch.terminated,
        "state": batch.state,
        "next_state": batch.next_state,
    }
    if batch.next_action_mask is not None:  # [N, B, K]: the actions available at o and at o'
        out["action_mask"] = per_agent(batch.action_mask)
        out["next_action_mask"] = per_agent(batch.next_action_mask)
    return out


STATE_PART = 1 << 18  # transitions of the state read at a time by state_standardizer


def state_standardizer(ds: madata.Dataset, data: DataInfo, device) -> Callable[[dict], dict]:
    """What the trainer does to every batch's global state: nothing, or where the task stores it raw (SMAX's
    world state: positions in map units, cooldowns that drift below zero) (s - mean) / std per feature, with
    the training data's statistics (a constant feature is only centred). Critics on the state learn from
    unit-scale inputs; the policies act on observations, so evaluation needs none of it."""
    if not data.standardize_state:
        return lambda batch: batch
    n, mean, m2 = 0, 0.0, 0.0  # per feature, over parts of the data read one at a time (Chan et al.'s merge)
    for episodes in ds.episode_groups(STATE_PART):
        s = np.asarray(ds.select(episodes=episodes).transitions(["state"])["state"], dtype=np.float64)
        s = s.reshape(len(s), -1)
        k, part_mean = len(s), s.mean(0)
        delta = part_mean - mean
        mean = mean + delta * k / (n + k)
        m2 = m2 + ((s - part_mean) ** 2).sum(0) + delta**2 * n * k / (n + k)
        n += k
    sd = np.sqrt(m2 / n)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(np.where(sd > 1e-6, sd, 1.0), dtype=torch.float32, device=device)

    def standardize(batch: dict) -> dict:
        return batch | {k: (batch[k] - mean) / std for k in ("state", "next_state")}

    return standardize


def make_policy(algo, data: DataInfo, device, generator: torch.Generator | None):
    """The trained policy for :func:`evaluate`: every agent's observations in one batched ``act`` call.

    A decentralized algorithm's ``act`` treats agent i's row with o_i alone; a centralized
    one (bcq) reads all of them, which is why its execution needs the joint observation.
    """
    width = max(data.obs_dims)

    def policy(obs: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        x = pad_agents([torch.as_tensor(obs[a], dtype=torch.float32, device=device) for a in data.agent_ids], width)
        if masks is not None and data.action_masks:  # the available actions, where the task has them (SMAX)
            m = torch.stack([torch.as_tensor(masks[a], dtype=torch.bool, device=device) for a in data.agent_ids])
            act = algo.act(x, generator, mask=m).cpu().numpy()
        else:
            act = algo.act(x, generator).cpu().numpy()  # greedy algorithms ignore the generator
        if data.discrete:  # [N, E] 0-based -> the spaces' own values
            return {a: act[i] + data.action_starts[i] for i, a in enumerate(data.agent_ids)}
        return {a: act[i, :, : data.act_dims[i]] for i, a in enumerate(data.agent_ids)}

    return policy


def eval_seed(seed: int) -> int:
    """Evaluation episode k of a run with ``seed`` resets with eval_seed(seed) + k: the same for every method."""
    return 10_000 * (seed + 1)


def train(
    dataset: str | os.PathLike | madata.Dataset,
    run_dir: str | os.PathLike,
    *,
    algorithm: str = "cast-bcq",
    steps: int,
    seed: int = 0,
    config: Any = None,
    batch_size: int = 1024,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    eval_max_steps: int | None = None,
    device: str | None = None,
    resume: bool = False,
    stream: bool = False,
    validation: float = 0.0,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``algorithm`` (a :mod:`~madata_algos.registry` name) on ``dataset`` for ``steps`` iterations.

    ``dataset``: a path or an opened :class:`madata.Dataset` (a selection, ``ds.select(...)``, too).
    ``config``: an instance of that algorithm's config class for the data's kind of actions (None:
    its defaults), e.g. ``CastBcqConfig(csaa=False)`` for an ablation. ``eval_episodes=0`` trains
    without an environment: the log then holds the losses only. ``stream=True`` samples from the
    streaming loader (data larger than memory). ``validation``: the fraction of episodes held out
    (drawn with the seed); at every evaluation the log adds each loss on held-out batches
    (``val_<loss>``), computed without a step. ``report`` receives one line after a warm-up (the
    expected time) and one per evaluation, for logs that are not a terminal. Returns the log rows.
    """
    for name, value, low in (
        ("steps", steps, 1),
        ("eval_every", eval_every, 1),
        ("batch_size", batch_size, 1),
        ("eval_episodes", eval_episodes, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise SchemaError(f"{name} (--{name.replace('_', '-')}) must be an integer >= {low}, got {value!r}")
    if eval_max_steps is not None and eval_max_steps < 1:
        raise SchemaError(f"eval_max_steps (--eval-max-steps) must be >= 1, got {eval_max_steps}")
    if not 0.0 <= validation < 1.0:
        raise SchemaError(f"validation (--validation) must be a fraction in [0, 1), got {validation}")
    spec = registry.get(algorithm)
    run = Path(run_dir)
    ds = dataset if isinstance(dataset, madata.Dataset) else madata.open(dataset)
    ds, held_out = split_validation(ds, validation, seed)
    data = registry.describe(ds, need_task=eval_episodes > 0)
    config = registry.check_config(spec, data, config)
    registry.check_data(spec, data)
    if batch_size > ds.num_transitions:
        raise SchemaError(
            f"{ds.root}: batch size {batch_size} is larger than the dataset's {ds.num_transitions} "
            "transitions; pass a smaller --batch-size"
        )
    dev = resolve_device(device)
    settings = {
        "algorithm": algorithm,
        "dataset": str(ds.root.resolve()) if isinstance(ds.root, Path) else ds.root,  # a path, or a URL
        "selection": selection_digest(ds),
        "task": data.task,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "eval_max_steps": eval_max_steps,
        "eval_seed": eval_seed(seed),
        "stream": stream,
        "validation": validation,
        "validation_episodes": None if held_out is None else held_out.num_episodes,
        "decentralized": spec.decentralized,
        "config": config.to_json(),
        "data": data.to_json(),
        "madata": madata.__version__,
        "torch": torch.__version__,
    }
    ckpt = run / "checkpoint.pt"
    if resume and (run / "config.json").exists():
        stored = read_json(run / "config.json")
        same = (
            "algorithm",
            "dataset",
            "selection",
            "task",
            "seed",
            "batch_size",
            "eval_every",
            "eval_episodes",
            "eval_max_steps",
            "stream",
            "validation",
            "config",
        )
        diff = differing(stored, json.loads(json.dumps(settings)), same)
        if diff:
            raise DatasetExistsError(
                f"{run}: the run was started with other settings ({'; '.join(diff)}); resume with the same options"
            )
        if ckpt.exists():
            settings["steps"] = max(steps, stored["steps"])
        # else: killed before its first checkpoint, so it starts again from step 0
    elif run.exists() and (not run.is_dir() or any(run.iterdir())):
        hint = "it holds no training run (no config.json)" if resume else "pass --resume to continue it"
        raise DatasetExistsError(f"{run}: run directory is not empty; {hint}, or choose another")

    torch.manual_seed(seed)
    np.random.seed(seed)
    keep_large_tensors_on_heap()
    loader = (StreamingLoader if stream else TransitionLoader)(ds, device=dev, seed=seed)
    val_loader = None if held_out is None else TransitionLoader(held_out, device=dev, seed=seed + 3)
    algo = registry.build(algorithm, data, config, dev)
    standardize = state_standardizer(ds, data, dev)
    make_dir(run)
    write_atomic(run / "config.json", json.dumps(settings, indent=2).encode())
    update_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    eval_gen = torch.Generator(device=dev).manual_seed(seed + 2)
    start, rows, clock = 0, [], {"train_seconds": 0.0, "eval_seconds": 0.0}
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, dev)
        algo.load_state_dict(state["model"])
        for name, opt in algo.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        loader.load_state_dict(state["loader"])
        if val_loader is not None:
            val_loader.load_state_dict(state["val_loader"])
        update_gen.set_state(state["update_rng"].cpu())  # generator states are CPU byte tensors
        eval_gen.set_state(state["eval_rng"].cpu())
        start = int(state["step"])
        rows = read_log(run / "log.csv", upto=start)
        if rows:
            clock = {k: float(rows[-1][k]) for k in TIME_FIELDS}
    policy = make_policy(algo, data, dev, eval_gen)
    losses: dict[str, float] = {}
    desc = f"{algorithm} {data.task or str(ds.root).rstrip('/').rsplit('/', 1)[-1]}"
    t_mark = time.perf_counter()
    with tqdm(
        total=steps, initial=start, desc=desc, disable=None if progress else True, mininterval=0.5, unit="it"
    ) as bar:
        for step in range(start + 1, steps + 1):
            batch = standardize(agent_major(loader.sample(batch_size), data.action_starts))
            losses = algo.update(**batch, generator=update_gen)
            bar.update(1)
            if report and step == start + WARMUP:
                per_k = (time.perf_counter() - t_mark) / WARMUP * 1000
                report(
                    f"{desc}: about {per_k:.1f} s per 1,000 iterations after {WARMUP}; "
                    f"{steps - step:,} to go, {per_k * (steps - step) / 1000 / 60:.1f} min plus evaluations"
                )
            if step % eval_every == 0 or step == steps:
                now = time.perf_counter()
                clock["train_seconds"] += now - t_mark
                row = {"step": step, **{k: round(v, 5) for k, v in losses.items()}}
                if val_loader is not None:
                    row |= validation_losses(algo, val_loader, batch_size, data.action_starts, standardize)
                eval_rng_before = eval_gen.get_state()
                if eval_episodes:
                    res = evaluate(
                        data.task, policy, episodes=eval_episodes, seed=eval_seed(seed), max_steps=eval_max_steps
                    )
                    row |= {
                        "eval_return": res.mean_return,
                        "eval_std": res.std_return,
                        "eval_normalized": res.mean_normalized,
                    }
                    if res.win_rate is not None:  # tasks that are won or lost (SMAX)
                        row["eval_win_rate"] = res.win_rate
                    bar.set_postfix_str(f"return {res.mean_return:.1f}")
                t_mark = time.perf_counter()
                clock["eval_seconds"] += t_mark - now
                row |= {k: round(v, 1) for k, v in clock.items()}
                rows.append(row)
                write_log(run / "log.csv", rows)
                plot(run / "learning_curve.png", rows, data.task or "", spec.label)
                save_checkpoint(
                    ckpt,
                    {
                        "model": algo.state_dict(),
                        "step": step,
                        "loader": loader.state_dict(),
                        **({} if val_loader is None else {"val_loader": val_loader.state_dict()}),
                        "update_rng": update_gen.get_state(),
                        "eval_rng": eval_gen.get_state(),
                        "eval_rng_before_last_eval": eval_rng_before,
                        "optimizers": {n: o.state_dict() for n, o in algo.optimizers.items()},
                    },
                )
                if report:
                    report(progress_line(desc, row, steps, clock))
                t_mark = time.perf_counter()
    return rows


WARMUP = 50  # iterations timed before the expected run time is reported


VALIDATION_BATCHES = 4  # batches the validation losses are averaged over


def split_validation(ds: madata.Dataset, fraction: float, seed: int) -> tuple[madata.Dataset, madata.Dataset | None]:
    """(training episodes, held-out episodes): ``fraction`` of the episodes drawn with ``seed``; (ds, None) for 0."""
    if fraction == 0:
        return ds, None
    ids = np.asarray(ds.episode_ids)
    n_val = int(round(fraction * len(ids)))
    if not 1 <= n_val < len(ids):
        raise SchemaError(
            f"{ds.root}: --validation {fraction} of {len(ids)} episodes holds out {n_val}; "
            "keep at least one episode on each side"
        )
    held = np.sort(np.random.default_rng(seed).permutation(ids)[:n_val])
    return ds.select(episodes=np.setdiff1d(ids, held)), ds.select(episodes=held)


def validation_losses(
    algo, loader: TransitionLoader, batch_size: int, action_starts, standardize: Callable[[dict], dict]
) -> dict[str, float]:
    """Each of the algorithm's losses on held-out batches (mean of VALIDATION_BATCHES), nothing updated: val_<name>;
    ``standardize``: the training batches' state standardization (:func:`state_standardizer`)."""
    gen = torch.Generator(device=loader.device).manual_seed(0)  # the same draws at every evaluation
    total: dict[str, float] = {}
    for _ in range(VALIDATION_BATCHES):
        batch = standardize(agent_major(loader.sample(batch_size), action_starts))
        for k, v in algo.losses(**batch, generator=gen).items():
            total[k] = total.get(k, 0.0) + v / VALIDATION_BATCHES
    return {f"val_{k}": round(v, 5) for k, v in total.items()}


def progress_line(desc: str, row: dict, steps: int, clock: dict[str, float]) -> str:
    """One line per evaluation, for logs that are not a terminal."""
    rate = row["step"] / max(clock["train_seconds"], 1e-9)
    text = f"{desc} step {row['step']:,}/{steps:,}"
    if "eval_return" in row:
        text += f": return {row['eval_return']:.1f} (std {row['eval_std']:.1f})"
        if row.get("eval_normalized") is not None:
            text += f", normalized {row['eval_normalized']:.1f}"
        if row.get("eval_win_rate") is not None:
            text += f", won {row['eval_win_rate']:.0%}"
    losses = [f"{k} {v:.4g}" for k, v in row.items() if k not in ("step", *EVAL_FIELDS, *TIME_FIELDS)]
    text += f"; losses {', '.join(losses)}" if "eval_return" not in row else ""
    return (
        text
        + f"; {clock['train_seconds'] + clock['eval_seconds']:.0f} s elapsed ({clock['eval_seconds']:.0f} s evaluating), {rate:.1f} it/s"
    )


def resolve_device(device: str | None) -> torch.device:
    """The training device: ``device`` if this torch build has it, else a one-line error."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SchemaError(f"--device {device}: not a device torch knows; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SchemaError(f"--device {device}: this torch build has no CUDA device ({torch.__version__}); use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise SchemaError(f"--device {device}: madata trains on cpu or cuda")
    return dev


def selection_digest(ds: madata.Dataset) -> str:
    """What part of the dataset is trained on: "all", or a digest of the selected episode ids."""
    ids = np.asarray(ds.episode_ids, dtype=np.int64)
    if ds.is_full:
        return "all"
    return f"{len(ids)} episodes, sha256 {hashlib.sha256(ids.tobytes()).hexdigest()[:16]}"


def differing(stored: dict, now: dict, keys) -> list[str]:
    """One short phrase per setting that differs, naming the field (and, for a config, its fields)."""
    out = []
    for k in keys:
        a, b = stored.get(k), now.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
            out += [f"{k}.{f} was {a.get(f)!r}, now {b.get(f)!r}" for f in fields]
        else:
            out.append(f"{k} was {a!r}, now {b!r}")
    return out


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SchemaError(f"{path}: exists and is not a directory; the run directory must be one") from None
    except OSError as e:
        raise OutputError(f"{path}: the run directory cannot be created ({e.strerror or e})") from None


def write_atomic(path: Path, data: bytes) -> None:
    from madata.atomic import write_bytes_atomic

    write_bytes_atomic(path, data)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SchemaError(f"{path}: cannot be read as JSON ({e}); the run directory is damaged") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save of ``state`` wrapped with its SHA-256, written atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    outer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
        },
        outer,
    )
    write_atomic(path, outer.getvalue())


def load_checkpoint(path: Path, device) -> dict:
    """The state saved by :func:`save_checkpoint`, after checking its checksum; a madata error if damaged."""
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
        payload = outer["payload"].numpy().tobytes()
        ok = outer.get("format") == CHECKPOINT_FORMAT and hashlib.sha256(payload).hexdigest() == outer["sha256"]
    except FileNotFoundError:
        raise SchemaError(f"{path}: no checkpoint; the run has not reached its first evaluation") from None
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, EOFError, ValueError) as e:
        raise SchemaError(
            f"{path}: not a readable madata checkpoint ({type(e).__name__}); the file is damaged"
        ) from None
    if not ok:
        raise SchemaError(f"{path}: does not match its stored checksum; the checkpoint is damaged")
    return torch.load(io.BytesIO(payload), map_location=device, weights_only=True)


def write_log(path: Path, rows: list[dict]) -> None:
    """log.csv: step, the algorithm's losses (in its update's order), the evaluation, the cumulative times."""
    losses = [k for k in rows[0] if k not in ("step", *EVAL_FIELDS, *TIME_FIELDS)]
    evals = [k for k in EVAL_FIELDS if k in rows[0]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["step", *losses, *evals, *TIME_FIELDS], restval="")
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, buf.getvalue().encode())


def read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    try:
        with open(path) as f:
            return [
                {k: (None if v == "" else float(v) if k != "step" else int(v)) for k, v in r.items()}
                for r in csv.DictReader(f)
                if int(r["step"]) <= upto
            ]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise SchemaError(
            f"{path}: cannot be read as the run's log ({type(e).__name__}); the run directory is damaged"
        ) from None


def plot(path: Path, rows: list[dict], task: str, label: str) -> None:
    """The learning curve (evaluation return, or the losses when there is no evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    if "eval_return" in rows[0]:
        mean = np.array([r["eval_return"] for r in rows], dtype=float)
        std = np.array([r["eval_std"] for r in rows], dtype=float)
        ax.plot(steps, mean, marker="o", label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_ylabel("evaluation return")
        ax.set_title(f"{label} on {task}")
    else:
        for k in (k for k in rows[0] if k not in ("step", *TIME_FIELDS)):
            ax.plot(steps, [r[k] for r in rows], marker="o", label=k)
        ax.set_yscale("symlog")
        ax.set_ylabel("training loss")
        ax.set_title(f"{label}: losses (no evaluation)")
    ax.set_xlabel("training iterations")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def evaluate_run(
    run_dir: str | os.PathLike,
    episodes: int | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    device: str | None = None,
):
    """Evaluate the last checkpoint of a run in its task with its algorithm; returns an :class:`EvalResult`.

    With no ``episodes``, ``seed`` or ``max_steps``, it repeats the run's last logged evaluation exactly
    (the same episodes, seeds, time limit and random draws). The dataset is not needed.
    """
    run = Path(run_dir)
    if not (run / "config.json").exists():
        raise SchemaError(f"{run}: not a training run (no config.json)")
    settings = read_json(run / "config.json")
    if "data" not in settings:
        raise SchemaError(f"{run}: made by an older madata that did not save the data description; retrain it")
    data = DataInfo.from_json(settings["data"])
    if data.task is None:
        raise SchemaError(f"{run}: trained on a dataset with no environment (env.id); there is nothing to evaluate in")
    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if value is not None and value < 1:
            raise SchemaError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    spec = registry.get(settings.get("algorithm", "cast-bcq"))
    dev = resolve_device(device)
    state = load_checkpoint(run / "checkpoint.pt", dev)
    algo = registry.build(spec.name, data, registry.config_from_json(spec, data, settings["config"]), dev)
    algo.load_state_dict(state["model"])
    repeat = episodes is None and seed is None and max_steps is None
    generator = torch.Generator(device=dev)
    if repeat and settings.get("eval_episodes"):
        generator.set_state(state["eval_rng_before_last_eval"].cpu())
        episodes, seed, max_steps = settings["eval_episodes"], settings["eval_seed"], settings["eval_max_steps"]
    else:
        episodes = episodes or 10
        seed = 0 if seed is None else seed
        max_steps = max_steps if max_steps is not None else settings.get("eval_max_steps")
        generator.manual_seed(seed)
    policy = make_policy(algo, data, dev, generator)
    return evaluate(data.task, policy, episodes=episodes, seed=seed, max_steps=max_steps)
