"""Reading D4RL's HDF5 files: where they live, what they hold, checked row by row.

:func:`read_d4rl` returns :class:`D4RLArrays` (the file's arrays, in its float dtype) after
checking keys, shapes, dtypes and flags, and that the file is of the expected robot (its
root height, for the robots that fall). Files written by ``madata export-d4rl`` also carry
each agent's own observations (their ``madata`` group), read back exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madata.convert.split import MaMuJoCoSplit
from madata.envs.mamujoco import SCENARIOS
from madata.errors import DatasetNotFoundError, SchemaError

EXPORT_FORMAT = "madata.d4rl-export"  # attribute of the `madata` group that export-d4rl writes
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FLOAT_DTYPES = ("float32", "float64")


# ---------------------------------------------------------------- where D4RL keeps its files


def d4rl_dataset_dir() -> Path:
    """D4RL's download directory: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env) if env else Path(os.path.expanduser("~/.d4rl/datasets"))


def d4rl_file_name(robot: str, tier: str, version: str = "v2") -> str:
    """D4RL's file name, e.g. ``halfcheetah_medium_replay-v2.hdf5`` for tier ``medium-replay``."""
    return f"{robot}_{tier.replace('-', '_')}-{version}.hdf5"


def resolve_source(robot: str, tier: str, version: str, source: str | os.PathLike | None) -> Path:
    """The file to read: ``source`` if given, else D4RL's own location (the error says where it looked)."""
    if source is not None:
        path = Path(source)
        if path.is_dir():
            raise DatasetNotFoundError(f"{path}: is a directory; --source takes the D4RL HDF5 file itself")
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: no such file (--source)")
        return path
    directory = d4rl_dataset_dir()
    path = directory / d4rl_file_name(robot, tier, version)
    if not path.is_file():
        where = (
            "$D4RL_DATASET_DIR"
            if os.environ.get("D4RL_DATASET_DIR")
            else "~/.d4rl/datasets ($D4RL_DATASET_DIR is not set)"
        )
        raise DatasetNotFoundError(
            f"{path}: D4RL file not found; looked for {path.name} in {directory} ({where}). "
            f"Download {robot}-{tier}-{version} into that directory, set D4RL_DATASET_DIR, or pass --source FILE.hdf5"
        )
    return path


# ---------------------------------------------------------------- reading and checking


@dataclass
class D4RLArrays:
    """A D4RL file's arrays, checked against the task. N rows, S = state dim, A = action dim."""

    path: Path
    observations: np.ndarray  # (N, S) float32|float64
    actions: np.ndarray  # (N, A) float32|float64
    rewards: np.ndarray  # (N,) float64
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    next_observations: np.ndarray | None = None  # (N, S)
    qpos: np.ndarray | None = None  # (N, nq)
    qvel: np.ndarray | None = None  # (N, nv)
    agent_obs: dict[str, np.ndarray] | None = None  # madata/obs/<agent> (N, o_i)
    agent_next_obs: dict[str, np.ndarray] | None = None  # madata/next_obs/<agent> (N, o_i)
    metadata: dict[str, Any] = field(default_factory=dict)  # small metadata/* items
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.observations)

    @property
    def dtype(self) -> str:
        return str(self.observations.dtype)


def require_h5py():
    try:
        import h5py
    except ImportError as e:
        raise SchemaError('reading and writing D4RL files needs h5py: pip install "madata[d4rl]"') from e
    return h5py


def read_d4rl(path: str | os.PathLike, split: MaMuJoCoSplit) -> D4RLArrays:
    """Read a D4RL HDF5 file whole and check every key against ``split``'s task."""
    h5py = require_h5py()
    path = Path(path)
    if not h5py.is_hdf5(path):
        raise SchemaError(
            f"{path}: not an HDF5 file; expected a D4RL .hdf5 file (observations, actions, rewards, terminals, timeouts)"
        )
    task = split.describe()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SchemaError(f"{path}: cannot be opened as HDF5 ({e})") from e
    with f:

        def get(key: str, required: bool = True):
            if key not in f:
                if required:
                    raise SchemaError(
                        f"{path}: missing key {key!r}; a D4RL file for {task} needs {', '.join(REQUIRED_KEYS)}"
                    )
                return None
            d = f[key]
            if not isinstance(d, h5py.Dataset):
                raise SchemaError(f"{path}: {key!r} is a group, expected an array")
            return d[()]

        obs = get("observations")
        N = len(obs) if np.ndim(obs) else 0

        def check(key: str, a, cols: int | None, kinds: str) -> np.ndarray:
            a = np.asarray(a)
            want = (N,) if cols is None else (N, cols)
            if cols is None and a.shape == (N, 1):  # D4RL's own loader accepts (N, 1) too
                a = a[:, 0]
            if a.shape != want:
                what = "" if cols is None else f"; is this a file of another task? ({task})"
                raise SchemaError(f"{path}: key {key!r} has shape {a.shape}, expected {_shape(want, cols)}{what}")
            if a.dtype.kind not in kinds:
                raise SchemaError(f"{path}: key {key!r} has dtype {a.dtype}, expected {_kinds(kinds)}")
            return a

        S, A = split.state_dim, split.act_dim
        if N == 0:
            raise SchemaError(
                f"{path}: key 'observations' is empty or scalar (shape {np.shape(obs)}), expected (N, {S})"
            )
        obs = check("observations", obs, S, "f")
        if str(obs.dtype) not in FLOAT_DTYPES:
            raise SchemaError(f"{path}: key 'observations' has dtype {obs.dtype}, expected float32 or float64")
        out = D4RLArrays(
            path=path,
            observations=obs,
            actions=_float(check("actions", get("actions"), A, "f")),
            rewards=check("rewards", get("rewards"), None, "fiu").astype(np.float64),
            terminals=_flags(check("terminals", get("terminals"), None, "biuf"), path, "terminals"),
            timeouts=_flags(check("timeouts", get("timeouts"), None, "biuf"), path, "timeouts"),
        )
        nxt = get("next_observations", required=False)
        if nxt is not None:
            out.next_observations = check("next_observations", nxt, S, "f").astype(obs.dtype, copy=False)
        qpos, qvel = get("infos/qpos", required=False), get("infos/qvel", required=False)
        if (qpos is None) != (qvel is None):
            have, lack = ("infos/qpos", "infos/qvel") if qvel is None else ("infos/qvel", "infos/qpos")
            raise SchemaError(f"{path}: has {have!r} but not {lack!r}; give both (raw simulator state) or neither")
        if qpos is not None:
            out.qpos = check("infos/qpos", qpos, split.nq, "f").astype(np.float64)
            out.qvel = check("infos/qvel", qvel, split.nv, "f").astype(np.float64)
        for key, a in (
            ("observations", out.observations),
            ("actions", out.actions),
            ("rewards", out.rewards),
            ("next_observations", out.next_observations),
            ("infos/qpos", out.qpos),
            ("infos/qvel", out.qvel),
        ):
            if a is not None and not np.isfinite(a).all():
                rows = np.flatnonzero(~np.isfinite(a.reshape(N, -1)).all(axis=1))
                raise SchemaError(
                    f"{path}: key {key!r} holds NaN or inf in rows {rows[:5].tolist()} ({len(rows)} rows)"
                )
        _read_madata_group(f, out, split, check)
        _check_root_height(out, split)
        out.metadata = _small_metadata(f)
    return out


# Walker2d's episodes end when its root height leaves [0.8, 2.0] (HalfCheetah's stays near 0):
# the one cheap way to tell the two apart, as their files have the same shapes (17 / 6)
_WALKER_HEALTHY_Z = (0.8, 2.0)


def _check_root_height(d: D4RLArrays, split: MaMuJoCoSplit) -> None:
    if split.robot not in ("halfcheetah", "walker2d"):
        return
    z = d.observations[:, 0]
    healthy = float(np.mean((z >= _WALKER_HEALTHY_Z[0]) & (z <= _WALKER_HEALTHY_Z[1])))
    if split.robot == "walker2d" and healthy < 0.5:
        other = "halfcheetah"
    elif split.robot == "halfcheetah" and healthy > 0.9:
        other = "walker2d"
    else:
        return
    raise SchemaError(
        f"{d.path}: observations[:, 0] (the root height) lies in Walker2d's healthy range {list(_WALKER_HEALTHY_Z)} "
        f"in {100 * healthy:.0f}% of the rows: this looks like a {other} file, not {split.robot} "
        f"(both have observations (N, 17) and actions (N, 6)); is this a file of another task?"
    )


def _read_madata_group(f, out: D4RLArrays, split: MaMuJoCoSplit, check) -> None:
    """Per-agent observations stored by ``madata export-d4rl``, when they fit the requested split."""
    if "madata" not in f:
        return
    g = f["madata"]
    try:
        info = json.loads(g.attrs.get("madata", "{}"))
    except (TypeError, ValueError):
        info = {}
    if info.get("format") != EXPORT_FORMAT:
        out.notes.append("the file has a 'madata' group that export-d4rl did not write: ignored")
        return
    env = info.get("env", {})
    if env.get("scenario") != SCENARIOS[split.robot][0]:
        raise SchemaError(
            f"{out.path}: written by madata export-d4rl from a {env.get('scenario')} dataset, "
            f"not {SCENARIOS[split.robot][0]}; is this a file of another task? ({split.describe()})"
        )
    mine = (split.task.env["agent_conf"], split.task.env["agent_obsk"])
    theirs = (env.get("agent_conf"), env.get("agent_obsk"))
    if theirs != mine:
        out.notes.append(
            f"madata/obs holds agent_conf {theirs[0]} agent_obsk {theirs[1]}, not {mine[0]} {mine[1]}: "
            "local observations rebuilt from the file's observations instead"
        )
        return
    if out.next_observations is None:
        out.notes.append("madata/obs present but next_observations missing: local observations rebuilt instead")
        return
    obs, nxt = {}, {}
    for a in split.agent_ids:
        o = len(split.factorization.obs_index[a])
        for key, d in ((f"madata/obs/{a}", obs), (f"madata/next_obs/{a}", nxt)):
            if key not in f:
                raise SchemaError(f"{out.path}: missing key {key!r} (export-d4rl writes one per agent)")
            d[a] = check(key, f[key][()], o, "f").astype(out.dtype, copy=False)
    out.agent_obs, out.agent_next_obs = obs, nxt


def _small_metadata(f) -> dict[str, Any]:
    """D4RL's ``metadata/*`` scalars and short strings (policy weights are skipped), JSON-ready."""
    out: dict[str, Any] = {}
    if "metadata" not in f:
        return out

    def visit(name, item):
        if len(out) >= 50 or not hasattr(item, "shape") or item.size > 16:
            return
        v = item[()]
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.ndarray):
            v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v.tolist()]
        elif isinstance(v, np.generic):
            v = v.item()
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            v = repr(v)
        out[f"metadata/{name}"] = v

    f["metadata"].visititems(visit)
    return out


def _shape(want: tuple, cols: int | None) -> str:
    return (
        f"(N, {cols}) with N = {want[0]} (the rows of 'observations')"
        if cols
        else f"(N,) with N = {want[0]} (the rows of 'observations')"
    )


def _kinds(kinds: str) -> str:
    return {"f": "floats", "fiu": "numbers", "biuf": "booleans (or 0/1)"}[kinds]


def _float(a: np.ndarray) -> np.ndarray:
    """float32 and float64 stay as they are; other floats (float16) become float32."""
    return a if str(a.dtype) in FLOAT_DTYPES else a.astype(np.float32)


def _flags(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if a.dtype != np.bool_:
        bad = ~np.isin(a, (0, 1))
        if bad.any():
            raise SchemaError(
                f"{path}: key {key!r} must hold booleans (0/1), got {np.unique(a[bad])[:5].tolist()} in rows {np.flatnonzero(bad)[:5].tolist()}"
            )
        a = a.astype(bool)
    return a
