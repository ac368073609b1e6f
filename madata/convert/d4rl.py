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
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import madata
from madata.convert.d4rl_plan import ConversionReport, EpisodePlan, SplitArrays, build_arrays, plan_episodes
from madata.convert.d4rl_read import EXPORT_FORMAT, FLOAT_DTYPES, D4RLArrays, read_d4rl, require_h5py, resolve_source
from madata.convert.split import CLIP, MaMuJoCoSplit, mamujoco_split, parse_agent_conf, parse_agent_obsk, parse_robot
from madata.dataset import Dataset
from madata.envs.mamujoco import D4RL_REF
from madata.errors import DatasetExistsError, MadataError, SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, from_gymnasium
from madata.store import DEFAULT_CHUNK_ROWS

PRODUCER = "madata.split-d4rl"

__all__ = ["EXPORT_FORMAT", "FLOAT_DTYPES", "PRODUCER", "require_h5py", "split_d4rl"]


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
    report = ConversionReport(source_rows=d.n, dtype=d.dtype, notes=list(d.notes),
                              next_observations="stored" if d.next_observations is not None else "next row")  # fmt: skip
    plan = plan_episodes(d, int(split.task.max_steps), report)
    arrays = build_arrays(d, plan, split, report)
    report.local_obs_from = arrays.local_obs_from
    report.episodes = len(plan.length)
    report.transitions = int(plan.length.sum())
    report.terminated_episodes = int(plan.terminated.sum())
    report.truncated_episodes = int((~plan.terminated).sum())
    if arrays.local_obs_from == "observations" and split.loses_raw_velocities:
        report.notes.append(
            f"{split.single_agent_env} clips velocities to +-{CLIP:g} in its observation, MaMuJoCo's local observations "
            "do not, and the file has no raw simulator state: local observations were indexed from the clipped "
            "observation (rows where that matters are counted in clipped_local_obs_rows)"
        )
    if not len(plan.length):
        raise SchemaError(f"{path}: no transition left after cutting episodes ({report.quirks})")
    found = report.found()
    if strict and found:
        detail = "; ".join(f"{k}: {v} (rows {report.examples.get(k, [])})" for k, v in found.items())
        raise SchemaError(f"{path}: --strict: {detail}; docs/d4rl.md explains each")
    _write(root, d, plan, split, arrays, report, path, tier=tier, version=version, strict=strict, chunk_rows=chunk_rows)
    return madata.open(root)


def _write(
    root: Path,
    d: D4RLArrays,
    plan: EpisodePlan,
    split: MaMuJoCoSplit,
    arrays: SplitArrays,
    report: ConversionReport,
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
        "report": report.to_json(),
        "madata_version": madata.__version__,
    }
    description = (
        f"{split.task.name}: D4RL {path.name} ({tier}) split by MaMuJoCo's factorization; "
        f"{report.episodes} episodes, {report.transitions} transitions, by {PRODUCER}"
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
