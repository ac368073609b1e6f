"""Behaviour-policy checkpoints that load without the library that trained them.

A checkpoint is two files side by side: ``NAME.npz`` (weights, read with
``allow_pickle=False``, so loading never runs code from the file) and ``NAME.json``
(what it is: task, level, architecture, training command, steps and seed, and its
measured average return). The policy is a SAC actor of the whole robot: a ReLU MLP on
the single-agent observation (the MaMuJoCo global state) with a Gaussian head squashed
by tanh and rescaled to the action box; inference is plain numpy, batched.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from madata.atomic import atomic_output, write_bytes_atomic
from madata.errors import CorruptionError, SchemaError

CHECKPOINT_FORMAT = "madata.behaviour.sac-actor"
CHECKPOINT_VERSION = 1
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC's clamp (stable-baselines3 uses the same)
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@dataclass
class CheckpointInfo:
    """The JSON sidecar of a checkpoint."""

    task: str  # madata task the policy controls (the whole robot), e.g. "halfcheetah-2x3"
    env_id: str  # single-agent gymnasium id it was trained on, e.g. "HalfCheetah-v5"
    level: str  # "medium", "expert", ...
    obs_dim: int
    act_dim: int
    hidden: list[int]
    action_low: list[float]
    action_high: list[float]
    train_steps: int  # environment steps of training when the snapshot was taken
    seed: int
    average_return: float | None = None  # over `eval_episodes` stochastic episodes, measured here
    return_std: float | None = None
    eval_episodes: int = 0
    trained_with: dict[str, str] = field(default_factory=dict)  # library versions
    command: str = ""
    format: str = CHECKPOINT_FORMAT
    version: int = CHECKPOINT_VERSION


class SacActor:
    """A squashed-Gaussian MLP policy: ``act(obs [B, obs_dim], noise [B, act_dim] | None) -> [B, act_dim]``."""

    def __init__(self, info: CheckpointInfo, weights: dict[str, np.ndarray]):
        self.info = info
        n = len(info.hidden)
        self.layers = [(weights[f"w{i}"], weights[f"b{i}"]) for i in range(n)]
        self.mu = (weights["mu_w"], weights["mu_b"])
        self.log_std = (weights["log_std_w"], weights["log_std_b"])
        low, high = np.asarray(info.action_low), np.asarray(info.action_high)
        self.scale, self.bias = (high - low) / 2.0, (high + low) / 2.0
        shapes = [w.shape for w, _ in self.layers] + [self.mu[0].shape]
        if shapes[0][0] != info.obs_dim or shapes[-1][1] != info.act_dim:
            raise CorruptionError(f"checkpoint {info.task}/{info.level}: weight shapes {shapes} disagree with its JSON")

    def act(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions for a batch; ``noise`` ~ N(0, 1) gives SAC's stochastic action, None its mean action.

        Computed as one matrix-vector product per row: a batched BLAS matrix product
        rounds each row differently depending on the batch size and the other rows,
        which would make a collected episode depend on the episodes stepped beside it.
        """
        h = np.asarray(obs, dtype=np.float32)[:, None, :]  # [B, 1, obs_dim]: a stack of row vectors
        for w, b in self.layers:
            h = np.maximum(h @ w + b, 0.0)
        u = (h @ self.mu[0] + self.mu[1])[:, 0]  # [B, act_dim]
        if noise is not None:
            log_std = np.clip((h @ self.log_std[0] + self.log_std[1])[:, 0], LOG_STD_MIN, LOG_STD_MAX)
            u = u + np.exp(log_std) * noise
        return (np.tanh(u) * self.scale + self.bias).astype(np.float32)


def save_checkpoint(path: str | os.PathLike, info: CheckpointInfo, weights: dict[str, np.ndarray]) -> Path:
    """Write ``path.npz`` and ``path.json`` (atomically each); returns the .json path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    SacActor(info, weights)  # refuse inconsistent weights before writing
    with atomic_output(path.with_suffix(".npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
    js = path.with_suffix(".json")
    write_bytes_atomic(js, (json.dumps(asdict(info), indent=2) + "\n").encode())
    return js


def load_checkpoint(path: str | os.PathLike) -> SacActor:
    """Load ``path`` (.json, .npz or the common prefix)."""
    base = Path(path)
    if base.suffix in (".json", ".npz"):
        base = base.with_suffix("")
    js, npz = base.with_suffix(".json"), base.with_suffix(".npz")
    try:
        obj = json.loads(js.read_text())
    except FileNotFoundError as e:
        raise SchemaError(f"{js}: no behaviour checkpoint here") from e
    except json.JSONDecodeError as e:
        raise CorruptionError(f"{js}: checkpoint description is not valid JSON ({e})") from e
    if obj.get("format") != CHECKPOINT_FORMAT or obj.get("version") != CHECKPOINT_VERSION:
        raise SchemaError(
            f"{js}: not a madata behaviour checkpoint of version {CHECKPOINT_VERSION} "
            f"(format={obj.get('format')!r}, version={obj.get('version')!r})"
        )
    try:
        info = CheckpointInfo(**obj)
    except TypeError as e:
        raise SchemaError(f"{js}: unexpected checkpoint fields ({e})") from e
    try:
        with np.load(npz, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise CorruptionError(f"{npz}: weights of checkpoint {js.name} are missing") from e
    except (ValueError, OSError) as e:
        raise CorruptionError(f"{npz}: weights cannot be read ({e})") from e
    missing = {"mu_w", "mu_b", "log_std_w", "log_std_b"} - set(weights)
    if missing:
        raise CorruptionError(f"{npz}: weights lack {sorted(missing)}")
    return SacActor(info, weights)
