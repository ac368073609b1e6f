"""``madata export-d4rl``: a MaMuJoCo multi-agent dataset written back as a single-agent D4RL file.

    export_d4rl("walker-medium", "walker2d_medium-madata.hdf5", dtype="float32")

D4RL keys, one row per transition:

* ``observations`` / ``next_observations`` (N, S): the dataset's global state = the
  single-agent observation (Hopper/Walker2d: velocities clipped to +-10, as gymnasium's
  env returns them);
* ``actions`` (N, A): the joint action in the single-agent order (each agent's action put
  back at MaMuJoCo's ``act_index``: Walker2d's reversed order undone);
* ``rewards`` (N,), ``terminals`` (N,) bool = terminated, ``timeouts`` (N,) bool = truncated;
* ``metadata/algorithm``: ``"madata.export-d4rl"``; ``metadata/madata``: the dataset's metadata (JSON).

madata also writes ``madata/obs/<agent>`` and ``madata/next_obs/<agent>`` (N, o_i): each
agent's own local observation. ``infos/qpos`` and ``infos/qvel`` are *not* written: the
dataset does not hold the simulator state (the x position is never observed and the
state's velocities may be clipped), and writing made-up values there would mislead tools
that reset a simulator from them. ``split-d4rl`` uses the ``madata`` group when it fits the
requested split, so ``collect -> export-d4rl -> split-d4rl`` gives back the same per-agent
observations bit for bit (Walker2d's fast joints included).

The file appears atomically (written to a temporary name, then renamed).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

import madata
from madata.atomic import atomic_output, check_output
from madata.convert.d4rl_read import EXPORT_FORMAT, FLOAT_DTYPES, require_h5py
from madata.convert.split import AGENT_CONFS, mamujoco_split
from madata.envs.mamujoco import MAMUJOCO
from madata.envs.registry import get_task, is_task
from madata.errors import SchemaError
from madata.spaces import Box

FIELDS = ["obs", "next_obs", "action", "reward", "terminated", "truncated", "state", "next_state"]


def export_d4rl(
    dataset: str | os.PathLike, out: str | os.PathLike, *, dtype: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Write the MaMuJoCo dataset at ``dataset`` as a D4RL-format HDF5 file ``out``.

    ``dtype`` (float32 or float64) applies to observations, actions and rewards; default:
    the dataset's state dtype. Returns ``{"path", "rows", "episodes", "dtype"}``.
    """
    h5py = require_h5py()
    out = check_output(out, overwrite, "HDF5 file")
    ds = madata.open(dataset)
    env = ds.meta.env
    task = get_task(env["id"]) if is_task(env.get("id")) else None
    robot = env["id"].split("-")[0] if task is not None else None
    if task is None or task.family is not MAMUJOCO or robot not in AGENT_CONFS:
        raise SchemaError(
            f"{ds.root}: export-d4rl writes MaMuJoCo datasets of D4RL's robots ({', '.join(AGENT_CONFS)}); "
            f"this one's env is {env.get('id')!r}"
        )
    if ds.state_space is None:
        raise SchemaError(f"{ds.root}: the dataset has no global state; D4RL's observations are the global state")
    split = mamujoco_split(robot, task.env["agent_conf"], task.env["agent_obsk"])
    f = split.factorization
    if ds.agent_ids != f.agent_ids or ds.state_space.shape != (split.state_dim,):
        raise SchemaError(
            f"{ds.root}: agents {ds.agent_ids} and state {ds.state_space.shape} do not match "
            f"{split.describe()} (agents {f.agent_ids}, state ({split.state_dim},))"
        )
    for a in ds.agents:
        want = len(f.act_index[a.id])
        if not isinstance(a.action_space, Box) or a.action_space.shape != (want,):
            raise SchemaError(
                f"{ds.root}: {a.id}'s action space is {a.action_space}, expected a Box of shape ({want},)"
            )
    dtype = str(dtype or ds.state_space.dtype)
    if dtype not in FLOAT_DTYPES:
        raise SchemaError(f"dtype: expected one of {FLOAT_DTYPES}, got {dtype!r}")
    if ds.num_transitions == 0:
        raise SchemaError(f"{ds.root}: the dataset has no transitions to export")

    tr = ds.transitions(fields=FIELDS)
    N = len(tr["reward"])
    joint = np.zeros((N, split.act_dim), dtype=dtype)  # (N, A)
    for a in f.agent_ids:
        joint[:, f.act_index[a]] = tr[f"action/{a}"]
    info = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "source": str(ds.root),
        "env": env,
        "agents": f.agent_ids,
        "reference_scores": ds.meta.reference_scores,
        "description": ds.meta.description,
        "provenance": ds.meta.provenance,
    }
    with atomic_output(out, overwrite) as tmp:
        with h5py.File(tmp, "w") as h:
            h.create_dataset("observations", data=tr["state"].astype(dtype))
            h.create_dataset("next_observations", data=tr["next_state"].astype(dtype))
            h.create_dataset("actions", data=joint)
            h.create_dataset("rewards", data=tr["reward"].astype(dtype))
            h.create_dataset("terminals", data=tr["terminated"])
            h.create_dataset("timeouts", data=tr["truncated"])
            h.create_dataset("metadata/algorithm", data="madata.export-d4rl")
            h.create_dataset("metadata/madata", data=json.dumps(info, default=str))
            g = h.create_group("madata")
            g.attrs["madata"] = json.dumps({"format": EXPORT_FORMAT, "version": 1, "env": env})
            for a in f.agent_ids:
                g.create_dataset(f"obs/{a}", data=tr[f"obs/{a}"].astype(dtype))
                g.create_dataset(f"next_obs/{a}", data=tr[f"next_obs/{a}"].astype(dtype))
    return {"path": str(out), "rows": N, "episodes": ds.num_episodes, "dtype": dtype}
