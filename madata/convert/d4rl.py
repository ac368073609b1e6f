"""``madata split-d4rl``: a D4RL HDF5 file split into a multi-agent dataset by MaMuJoCo's factorization.

    ds = split_d4rl("walker2d", "2x3", "walker-medium", tier="medium")   # ~/.d4rl/datasets/walker2d_medium-v2.hdf5
    ds = split_d4rl("hopper", "3x1", "out", source="hopper.hdf5", strict=True)

The split (docs/d4rl.md has the whole story):

* each agent's action is the joint action at MaMuJoCo's ``act_index`` (never contiguous:
  Walker2d 2x3 is ``[2, 1, 0]`` / ``[5, 4, 3]``);
* each agent's local observation is MaMuJoCo's, built from the best source the file has:
  ``madata/obs/<agent>`` (files written by ``madata export-d4rl``), else the raw simulator
  state ``infos/qpos`` + ``infos/qvel``, else the observation vector itself (exact except
  where Walker2d's single-agent observation clipped a velocity MaMuJoCo reads raw: counted);
* the single-agent observation is kept as the global state, in the file's float dtype;
* episodes are cut after every ``terminals`` (-> terminated) and ``timeouts`` (-> truncated)
  row. D4RL's boundary quirks are resolved and counted in a conversion report stored in
  the dataset's provenance (``provenance["report"]``); ``strict=True`` makes any of them an error.

Everything is read and checked before the output directory is created; a failure while
writing removes what was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import madata
from madata.convert.split import CLIP, MaMuJoCoSplit, mamujoco_split, parse_agent_conf, parse_agent_obsk, parse_robot
from madata.dataset import Dataset
from madata.envs.mamujoco import D4RL_REF, SCENARIOS
from madata.errors import DatasetExistsError, DatasetNotFoundError, MadataError, SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, from_gymnasium
from madata.store import DEFAULT_CHUNK_ROWS

PRODUCER = "madata.split-d4rl"
EXPORT_FORMAT = "madata.d4rl-export"  # attribute of the `madata` group that export-d4rl writes
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FLOAT_DTYPES = ("float32", "float64")
QUIRKS = (
    "timeout_transitions_dropped",  # truncated episode's last step had no next observation: dropped
    "terminal_final_obs_copied",  # terminated episode's final observation unknown: copy of the last one
    "empty_episodes_dropped",  # a 1-step episode whose only step was dropped
    "final_partial_episode_steps",  # rows after the last terminal/timeout: stored as a truncated episode
    "terminal_and_timeout",  # both flags on one row: stored as terminated
    "next_observation_mismatches",  # next_observations[t] != observations[t+1] inside an episode
    "infos_observation_mismatches",  # infos/qpos,qvel disagree with observations
    "clipped_local_obs_rows",  # local observation from a clipped state with a raw-read velocity at +-10
    "actions_out_of_bounds",  # rows with an action component outside the action box (clipped to it)
    "episodes_over_time_limit",  # episodes longer than the env's time limit (a timeout missing?)
)


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


# ---------------------------------------------------------------- episodes


@dataclass
class EpisodePlan:
    """Kept episodes: file row ``start`` and ``length`` T, ``terminated``, and where the final
    (T+1-th) observation comes from: file row ``final_row`` (>= 0) or ``next_observations[last_row]``."""

    start: np.ndarray  # (E,) int64
    length: np.ndarray  # (E,) int64
    terminated: np.ndarray  # (E,) bool
    final_row: np.ndarray  # (E,) int64, -1: next_observations of the episode's last kept row
    quirks: dict[str, int]
    examples: dict[str, list[int]]  # a few file rows per quirk
    last_row: str  # what the file's last row is: terminal, timeout or neither


def plan_episodes(d: D4RLArrays, max_steps: int) -> EpisodePlan:
    """Cut the rows into episodes at terminals and timeouts; resolve and count the boundary quirks."""
    N, term, tout = d.n, d.terminals, d.timeouts
    has_next = d.next_observations is not None
    quirks = dict.fromkeys(QUIRKS, 0)
    examples: dict[str, list[int]] = {}

    def note(kind: str, rows: np.ndarray) -> None:
        quirks[kind] += len(rows)
        if len(rows):
            examples[kind] = [int(r) for r in rows[:5]]

    end = term | tout
    note("terminal_and_timeout", np.flatnonzero(term & tout))
    last = np.flatnonzero(end)
    last_row = "terminal" if term[-1] else "timeout" if tout[-1] else "neither"
    if not len(last) or last[-1] != N - 1:
        first = int(last[-1]) + 1 if len(last) else 0
        quirks["final_partial_episode_steps"] = N - first
        examples["final_partial_episode_steps"] = [first]
        last = np.append(last, N - 1)
    start = np.concatenate([[0], last[:-1] + 1]).astype(np.int64)
    terminated = term[last]
    if has_next:
        length = last - start + 1
        final_row = np.full(len(start), -1, dtype=np.int64)
        inner = np.flatnonzero(~end[:-1])  # t and t+1 in one episode
        mism = inner[(d.next_observations[inner] != d.observations[inner + 1]).any(axis=1)]
        note("next_observation_mismatches", mism)
    else:
        # a row's next observation is the next row, unknown for an episode's last row
        length = np.where(terminated, last - start + 1, last - start)
        final_row = last.copy()  # terminated: a copy of the last observation; truncated: the real next one
        note("terminal_final_obs_copied", last[terminated])
        note("timeout_transitions_dropped", last[~terminated])
    empty = length == 0
    note("empty_episodes_dropped", start[empty])
    keep = ~empty
    plan = EpisodePlan(
        start[keep], length[keep].astype(np.int64), terminated[keep], final_row[keep], quirks, examples, last_row
    )
    note("episodes_over_time_limit", plan.start[plan.length > max_steps])
    return plan


# ---------------------------------------------------------------- the split


@dataclass
class SplitArrays:
    """The whole dataset as contiguous arrays (episodes back to back, the writer's row layout)."""

    obs: dict[str, np.ndarray]  # (R, o_i), R = sum(T + 1)
    state: np.ndarray  # (R, S)
    actions: dict[str, np.ndarray]  # (sum T, d_i)
    rewards: np.ndarray  # (sum T,)
    local_obs_from: str


def build_arrays(d: D4RLArrays, plan: EpisodePlan, split: MaMuJoCoSplit, report: dict[str, Any]) -> SplitArrays:
    """Every kept row, split per agent, in one pass of vectorized indexing."""
    N = d.n
    T = plan.length
    L = T + 1
    obs_off = np.cumsum(L) - L
    step_off = np.cumsum(T) - T
    # observation rows index a file row, or N + k for next_observations[last kept row of episode k]
    use_next = plan.final_row < 0
    next_src = (plan.start + T - 1)[use_next]  # rows whose next_observations give a final observation
    final = plan.final_row.copy()
    final[use_next] = N + np.arange(int(use_next.sum()))
    obs_idx = np.repeat(plan.start - obs_off, L) + np.arange(int(L.sum()))
    obs_idx[obs_off + T] = final
    step_idx = np.repeat(plan.start - step_off, T) + np.arange(int(T.sum()))

    ext_state = d.observations if not len(next_src) else np.concatenate([d.observations, d.next_observations[next_src]])
    ext, src = _local_observations(d, split, next_src, ext_state, obs_idx, report)
    acts = d.actions[step_idx]
    lo, hi = split.factorization.joint_bounds()
    out_of_box = np.flatnonzero(((acts < lo) | (acts > hi)).any(axis=1))
    if len(out_of_box):
        report["quirks"]["actions_out_of_bounds"] = int(len(out_of_box))
        report["examples"]["actions_out_of_bounds"] = step_idx[out_of_box][:5].tolist()
        acts = np.clip(acts, lo, hi)  # a dataset's actions lie in its action space; the report counts the rows clipped
    return SplitArrays(
        obs={a: ext[a][obs_idx] for a in split.agent_ids},
        state=ext_state[obs_idx],
        actions={a: np.ascontiguousarray(acts[:, split.factorization.act_index[a]]) for a in split.agent_ids},
        rewards=d.rewards[step_idx],
        local_obs_from=src,
    )


def _local_observations(
    d: D4RLArrays,
    split: MaMuJoCoSplit,
    next_src: np.ndarray,
    ext_state: np.ndarray,
    obs_idx: np.ndarray,
    report: dict[str, Any],
) -> tuple[dict[str, np.ndarray], str]:
    """Each agent's local observation for every row of ``ext_state`` (file rows, then the
    next_observations of ``next_src``), from the best source the file has, and its name."""
    dtype, N = d.dtype, d.n
    if d.agent_obs is not None:  # written by export-d4rl: the dataset's own
        return {
            a: np.concatenate([d.agent_obs[a], d.agent_next_obs[a][next_src]]) for a in split.agent_ids
        }, "madata/obs"
    raw = None
    if d.qpos is not None:
        raw = split.source(d.qpos, d.qvel)  # (N, S) unclipped
        bad = ~np.isclose(split.state_from_source(raw), d.observations.astype(np.float64), rtol=1e-5, atol=1e-5).all(
            axis=1
        )
        if bad.any():
            raw = None
            report["quirks"]["infos_observation_mismatches"] = int(bad.sum())
            report["examples"]["infos_observation_mismatches"] = np.flatnonzero(bad)[:5].tolist()
            report["notes"].append(
                f"infos/qpos,qvel disagree with observations in {int(bad.sum())} rows: local observations built from observations"
            )
    if raw is not None:  # exact for every file row; final observations from next_observations may be unsure
        ext = split.local_from_source(raw, dtype)
        unsure_rows = np.zeros(0, dtype=np.int64)
        if len(next_src):
            nxt, unsure = split.local_from_state(d.next_observations[next_src], dtype)
            ext = {a: np.concatenate([ext[a], nxt[a]]) for a in split.agent_ids}
            unsure_rows = next_src[unsure]
        src = "infos/qpos+qvel"
    else:
        ext, unsure = split.local_from_state(ext_state, dtype)
        used = np.zeros(len(ext_state), dtype=bool)
        used[obs_idx] = True
        unsure_rows = np.flatnonzero(unsure & used)  # rows of ext_state -> rows of the file
        beyond = unsure_rows >= N
        unsure_rows[beyond] = next_src[unsure_rows[beyond] - N]
        src = "observations"
    if len(unsure_rows):
        report["quirks"]["clipped_local_obs_rows"] = int(len(unsure_rows))
        report["examples"]["clipped_local_obs_rows"] = np.unique(unsure_rows)[:5].tolist()
    return ext, src


def split_d4rl(
    robot: str,
    agent_conf: str,
    out: str | os.PathLike,
    *,
    tier: str = "medium",
    version: str = "v2",
    source: str | os.PathLike | None = None,
    agent_obsk: int = 1,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Dataset:
    """Split a D4RL file of ``robot`` into a ``<robot>-<agent_conf>`` multi-agent dataset at ``out``.

    ``source``: the HDF5 file (default: D4RL's ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``,
    ``<robot>_<tier>-<version>.hdf5``). ``tier`` is also every agent's behaviour label.
    ``strict``: any boundary quirk or inconsistency in the file is an error (listed in
    :data:`QUIRKS`). Returns the opened dataset; the conversion report is its
    ``meta.provenance["report"]``.
    """
    robot = parse_robot(robot)
    agent_conf = parse_agent_conf(robot, agent_conf)
    agent_obsk = parse_agent_obsk(agent_obsk)
    tier, version = _parse_label(tier, "tier"), _parse_label(version, "version")
    path = resolve_source(robot, tier, version, source)
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetExistsError(
            f"{root}: path exists and is not empty; choose another output path (nothing was overwritten)"
        )
    split = mamujoco_split(robot, agent_conf, agent_obsk)
    d = read_d4rl(path, split)
    max_steps = int(split.task.env["max_steps"])
    plan = plan_episodes(d, max_steps)
    report: dict[str, Any] = {
        "source_rows": d.n,
        "dtype": d.dtype,
        "next_observations": "stored" if d.next_observations is not None else "next row",
        "last_row": plan.last_row,
        "quirks": plan.quirks,
        "examples": plan.examples,
        "notes": list(d.notes),
    }
    arrays = build_arrays(d, plan, split, report)
    report["local_obs_from"] = arrays.local_obs_from
    report["episodes"] = len(plan.length)
    report["transitions"] = int(plan.length.sum())
    report["terminated_episodes"] = int(plan.terminated.sum())
    report["truncated_episodes"] = int((~plan.terminated).sum())
    if arrays.local_obs_from == "observations" and split.loses_raw_velocities:
        report["notes"].append(
            f"{split.single_agent_env} clips velocities to +-{CLIP:g} in its observation, MaMuJoCo's local observations "
            "do not, and the file has no raw simulator state: local observations were indexed from the clipped "
            "observation (rows where that matters are counted in clipped_local_obs_rows)"
        )
    if not len(plan.length):
        raise SchemaError(f"{path}: no transition left after cutting episodes ({report['quirks']})")
    found = {k: v for k, v in report["quirks"].items() if v}
    if strict and found:
        detail = "; ".join(f"{k}: {v} (rows {report['examples'].get(k, [])})" for k, v in found.items())
        raise SchemaError(f"{path}: --strict: {detail}; docs/d4rl.md explains each")
    _write(root, d, plan, split, arrays, report, path, tier=tier, version=version, strict=strict, chunk_rows=chunk_rows)
    return madata.open(root)


def _write(
    root: Path,
    d: D4RLArrays,
    plan: EpisodePlan,
    split: MaMuJoCoSplit,
    arrays: SplitArrays,
    report: dict[str, Any],
    path: Path,
    *,
    tier: str,
    version: str,
    strict: bool,
    chunk_rows: int,
) -> None:
    f, dtype = split.factorization, d.dtype
    agents = [
        AgentSpec(
            a.id, Box.make(-np.inf, np.inf, a.observation_space.shape, dtype), _action_box(a, str(d.actions.dtype))
        )
        for a in f.agents
    ]
    provenance = {
        "producer": PRODUCER,
        "source": _describe_file(path),
        "robot": split.robot,
        "agent_conf": split.task.env["agent_conf"],
        "agent_obsk": split.task.env["agent_obsk"],
        "tier": tier,
        "version": version,
        "strict": strict,
        "d4rl_metadata": d.metadata,
        "report": report,
        "madata_version": madata.__version__,
    }
    description = (
        f"{split.task.name}: D4RL {path.name} ({tier}) split by MaMuJoCo's factorization; "
        f"{report['episodes']} episodes, {report['transitions']} transitions, by {PRODUCER}"
    )
    existed = root.exists()
    writer = None
    # commits by episode count only: each commit rewrites every array's partial last chunk,
    # and D4RL's random tiers have ~50k short episodes (the output is removed on failure anyway)
    try:
        writer = madata.create(
            root,
            agents,
            state_space=Box.make(-np.inf, np.inf, (split.state_dim,), dtype),
            env=split.task.env,
            description=description,
            reference_scores=D4RL_REF[split.robot],
            provenance=provenance,
            chunk_rows=chunk_rows,
            commit_every=2000,
            commit_seconds=0.0,
        )
        labels = dict.fromkeys(split.agent_ids, tier)
        o = s = 0
        for k in range(len(plan.length)):
            T = int(plan.length[k])
            end, never = np.zeros(T, dtype=bool), np.zeros(T, dtype=bool)
            end[-1] = True
            term = bool(plan.terminated[k])
            first = int(plan.start[k])
            writer.add_episode(
                obs={a: v[o : o + T + 1] for a, v in arrays.obs.items()},
                actions={a: v[s : s + T] for a, v in arrays.actions.items()},
                rewards=arrays.rewards[s : s + T],
                terminated=end if term else never,
                truncated=never if term else end,
                state=arrays.state[o : o + T + 1],
                behaviour=labels,
                seed=None,
                provenance={"d4rl_rows": [first, first + T]},
            )
            o, s = o + T + 1, s + T
        writer.close()
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except MadataError:
                pass
        _remove_output(root, existed)
        raise


def _remove_output(root: Path, existed: bool) -> None:
    """Undo a failed write: remove what this command created (an empty directory that was there stays)."""
    shutil.rmtree(root.with_name(f".{root.name}.creating"), ignore_errors=True)
    if root.is_dir():
        shutil.rmtree(root, ignore_errors=True)
        if existed:
            root.mkdir()


def _action_box(agent: AgentSpec, dtype: str) -> Box:
    sp = agent.action_space
    return Box(sp.shape, sp.low, sp.high, dtype) if isinstance(sp, Box) else from_gymnasium(sp)


def _describe_file(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    st = path.stat()
    return {"path": str(path.resolve()), "name": path.name, "bytes": st.st_size, "sha256": h.hexdigest()}


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _parse_label(value: str, name: str) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise SchemaError(f"{name}: expected letters, digits, '-', '_' or '.', got {value!r}")
    return value
