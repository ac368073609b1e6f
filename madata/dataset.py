"""The user-facing reader: ``madata.open(path)`` returns a :class:`Dataset`.

A Dataset is a view of a :class:`~madata.store.Store` (the storage layer: metadata, commit
record, episode table, checked chunk reads) or of a selection of its episodes. Every read
goes through :meth:`Store.read_rows`, which decodes whole chunks and checks each against
the content checksum in the commit record, so damaged data raises a
:class:`~madata.errors.CorruptionError` naming the array, the rows and the episodes, and
is never returned.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from madata.commit import CommitRecord
from madata.errors import CorruptionError, SchemaError, UnknownNameError
from madata.integrity import quick_problems
from madata.schema import AgentSpec, DatasetSpec, Metadata, behaviour_column
from madata.spaces import Box, Space
from madata.store import Store

FIELDS = (
    "obs",
    "next_obs",
    "action",
    "state",
    "next_state",
    "reward",
    "agent_reward",
    "terminated",
    "truncated",
    "action_mask",
    "next_action_mask",
    "episode_id",
    "timestep",
)
_PER_AGENT = {"obs", "next_obs", "action", "agent_reward", "action_mask", "next_action_mask"}
_STORED = {"next_obs": "obs", "next_state": "state", "next_action_mask": "action_mask"}


@dataclass
class Episode:
    """One episode of ``length`` T steps. Per-agent fields are dicts keyed by agent id.

    ``obs[agent]`` [T+1, *obs_shape], ``actions[agent]`` [T, *act_shape], ``rewards`` [T],
    ``terminated``/``truncated`` [T], ``state`` [T+1, *state_shape] or None, ``info``: its
    episode-table row (return, end, seed, behaviour labels, provenance).
    """

    id: int
    length: int
    obs: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    state: np.ndarray | None
    agent_rewards: dict[str, np.ndarray] | None
    action_masks: dict[str, np.ndarray] | None
    info: dict[str, Any]

    @property
    def behaviour(self) -> dict[str, str | None]:
        return {k.split(".", 1)[1]: v for k, v in self.info.items() if k.startswith("behaviour.")}


class Dataset:
    """A committed madata dataset, or a selection of its episodes. Read-only.

    ``store`` is its :class:`~madata.store.Store`; ``select`` returns another Dataset over the same store.
    """

    def __init__(self, store: Store, selection: np.ndarray | None = None):
        self.store = store
        self._selection = selection  # episode ids, sorted; None = all

    @classmethod
    def load(cls, path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> Dataset:
        """Load metadata, commit record and episode table (checked against each other) without reading chunks.
        ``path``: a directory or an fsspec URL (``s3://...``, with ``storage_options``); a single store or a
        sharded dataset."""
        from madata.sharded import open_store

        return cls(open_store(path, storage_options))

    @property
    def root(self) -> Path | str:
        """The dataset's directory (a Path), or its URL on other storage."""
        return self.store.root

    @property
    def meta(self) -> Metadata:
        return self.store.meta

    @property
    def record(self) -> CommitRecord:
        return self.store.record

    # ------------------------------------------------------------ description

    @property
    def spec(self) -> DatasetSpec:
        return self.meta.spec

    @property
    def agents(self) -> list[AgentSpec]:
        return list(self.spec.agents)

    @property
    def agent_ids(self) -> list[str]:
        return self.spec.agent_ids

    @property
    def spaces(self) -> dict[str, dict[str, Space]]:
        """``{agent_id: {"observation": Box, "action": Box | Discrete}}``."""
        return {a.id: {"observation": a.observation_space, "action": a.action_space} for a in self.spec.agents}

    @property
    def state_space(self) -> Box | None:
        return self.spec.state_space

    @property
    def metadata(self) -> dict[str, Any]:
        return self.meta.to_json()

    @property
    def episodes(self) -> pa.Table:
        """The episode table (Arrow) of this dataset or selection; ``.to_pandas()`` works."""
        if self._selection is None:
            return self.store.table
        return self.store.table.take(pa.array(self._selection))

    @property
    def episode_ids(self) -> np.ndarray:
        if self._selection is None:
            return np.arange(self.record.num_episodes, dtype=np.int64)
        return self._selection

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ids)

    @property
    def is_full(self) -> bool:
        """True for the whole dataset, False for a selection (``select``)."""
        return self._selection is None

    def episode_lengths(self) -> np.ndarray:
        """Transitions of each episode, in ``episode_ids`` order: int64 [num_episodes]."""
        return self.store.column("length")[self.episode_ids]

    @property
    def num_transitions(self) -> int:
        if self._selection is None:
            return self.record.step_rows
        return int(self.store.column("length")[self._selection].sum())

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        env = self.meta.env.get("id", "?")
        return f"<madata.Dataset {self.root} env={env} agents={self.agent_ids} episodes={self.num_episodes} transitions={self.num_transitions}>"

    # ------------------------------------------------------------ selection

    def select(
        self,
        behaviour: dict[str, str | list[str]] | None = None,
        min_return: float | None = None,
        max_return: float | None = None,
        episodes: list[int] | np.ndarray | None = None,
    ) -> Dataset:
        """Episodes matching every condition: ``behaviour={"agent_0": "medium"}`` (a label or a
        list of labels per agent), a return range, or explicit episode ids."""
        mask = np.zeros(self.record.num_episodes, dtype=bool)
        mask[self.episode_ids] = True
        for agent, labels in (behaviour or {}).items():
            if agent not in self.agent_ids:
                raise UnknownNameError(f"select: unknown agent {agent!r}; agents are {self.agent_ids}")
            labels = [labels] if isinstance(labels, str) else list(labels)
            col = self.store.table.column(behaviour_column(agent))
            known = sorted(v for v in pc.unique(col).to_pylist() if v is not None)
            unknown = [v for v in labels if v not in known]
            if unknown:
                raise UnknownNameError(
                    f"select: agent {agent} has no episodes labelled {unknown}; its labels are {known}"
                )
            mask &= pc.fill_null(pc.is_in(col, value_set=pa.array(labels, pa.string())), False).to_numpy(
                zero_copy_only=False
            )
        ret = self.store.column("return")
        if min_return is not None:
            mask &= ret >= min_return
        if max_return is not None:
            mask &= ret <= max_return
        if episodes is not None:
            ids = np.asarray(episodes, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.record.num_episodes):
                raise SchemaError(f"select: episode ids must be in 0..{self.record.num_episodes - 1}")
            keep = np.zeros_like(mask)
            keep[ids] = True
            mask &= keep
        return Dataset(self.store, np.flatnonzero(mask))

    # ------------------------------------------------------------ reading

    def episode(self, i: int) -> Episode:
        """The ``i``-th episode of this dataset or selection."""
        ids = self.episode_ids
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise SchemaError(f"episode index must be an integer, got {i!r}")
        if not -len(ids) <= i < len(ids):
            raise SchemaError(f"episode index {i} out of range: this dataset has {len(ids)} episodes")
        e = int(ids[i])
        info = {k: v[0] for k, v in self.store.table.slice(e, 1).to_pydict().items()}
        T, s0, o0 = int(info["length"]), int(info["step_offset"]), int(info["obs_offset"])

        def obs_rows(name):
            return self.read_rows(name, o0, o0 + T + 1, cache=True)

        def step_rows(name):
            return self.read_rows(name, s0, s0 + T, cache=True)

        spec = self.spec
        return Episode(
            id=e,
            length=T,
            obs={a: obs_rows(f"obs/{a}") for a in self.agent_ids},
            actions={a: step_rows(f"action/{a}") for a in self.agent_ids},
            rewards=step_rows("reward"),
            terminated=step_rows("terminated"),
            truncated=step_rows("truncated"),
            state=obs_rows("state") if spec.state_space is not None else None,
            agent_rewards={a: step_rows(f"agent_reward/{a}") for a in self.agent_ids} if spec.agent_rewards else None,
            action_masks={a: obs_rows(f"action_mask/{a}") for a in self.agent_ids} if spec.action_masks else None,
            info=info,
        )

    def episode_groups(self, transitions: int) -> list[np.ndarray]:
        """This dataset's episode ids in consecutive runs of whole episodes, each run closed once it holds
        ``transitions`` transitions or more (the last may hold fewer): parts to read one at a time."""
        ids, ends = self.episode_ids, np.cumsum(self.episode_lengths())
        cuts, start, base = [], 0, 0
        while start < len(ids):  # one step per run: the first episode whose end reaches the run's quota closes it
            stop = int(np.searchsorted(ends, base + transitions, side="left")) + 1
            cuts.append(ids[start:stop])
            start, base = stop, int(ends[min(stop, len(ids)) - 1])
        return cuts

    def iter_episodes(self):
        for i in range(self.num_episodes):
            yield self.episode(i)

    def transitions(self, fields: list[str] | None = None, agents: list[str] | None = None) -> dict[str, np.ndarray]:
        """Flat transitions (o, a, r, o', terminated, truncated) of this dataset or selection.

        Keys: ``"obs/<agent>"`` [N, *obs_shape], ``"next_obs/<agent>"``, ``"action/<agent>"``,
        ``"state"``/``"next_state"`` [N, *state_shape], ``"reward"`` [N], ``"terminated"``,
        ``"truncated"`` [N] bool, ``"agent_reward/<agent>"``, ``"action_mask/<agent>"``,
        ``"next_action_mask/<agent>"``, ``"episode_id"``, ``"timestep"`` [N] int64.
        Next observations are derived through the episode index. A truncated transition's
        next observation is real (bootstrap from it); a terminated one's is the final
        observation the environment returned.
        """
        fields = list(fields) if fields is not None else self.default_fields()
        agents = list(agents) if agents is not None else self.agent_ids
        for f in fields:
            if f not in FIELDS:
                raise UnknownNameError(f"unknown transition field {f!r}; fields are {list(FIELDS)}")
            if f in ("state", "next_state") and self.spec.state_space is None:
                raise UnknownNameError(f"field {f!r}: this dataset has no global state")
            if f == "agent_reward" and not self.spec.agent_rewards:
                raise UnknownNameError("field 'agent_reward': this dataset has no per-agent rewards")
            if f in ("action_mask", "next_action_mask") and not self.spec.action_masks:
                raise UnknownNameError(f"field {f!r}: this dataset has no action masks")
        for a in agents:
            if a not in self.agent_ids:
                raise UnknownNameError(f"unknown agent {a!r}; agents are {self.agent_ids}")
        rows, ep = self._step_rows()
        out: dict[str, np.ndarray] = {}
        if len(rows) == 0:
            s0 = o0 = 0
        else:
            s0, o0 = int(rows.min()), int(rows.min() + ep.min())
        s1 = int(rows.max()) + 1 if len(rows) else 0
        o1 = int((rows + ep).max()) + 2 if len(rows) else 0
        # (field, output key, stored array) for every output; episode_id and timestep are derived, not read
        plan = [
            (f, key, None if f in ("episode_id", "timestep") else key.replace(f, _STORED.get(f, f), 1))
            for f in fields
            for key in ([f"{f}/{a}" for a in agents] if f in _PER_AGENT else [f])
        ]
        per_step = {stored: self.spec.array(stored).rows == "step" for _, _, stored in plan if stored}
        windows = {n: (s0, s1) if step else (o0, o1) for n, step in per_step.items()}
        self.store.prefetch(windows)  # on object storage: every chunk needed in one batch of requests
        spans: dict[str, np.ndarray] = {}  # each stored array is read once, even for obs and next_obs
        for f, key, stored in plan:
            if f == "episode_id":
                out[key] = ep
            elif f == "timestep":
                out[key] = rows - self.store.column("step_offset")[ep]
            else:
                if stored not in spans:
                    spans[stored] = self.read_rows(stored, *windows[stored])
                if per_step[stored]:
                    out[key] = spans[stored][rows - s0]
                else:  # observation rows: one more per episode than steps
                    shift = 1 if f.startswith("next_") else 0
                    out[key] = spans[stored][rows + ep + shift - o0]
        return out

    def default_fields(self) -> list[str]:
        f = ["obs", "action", "reward", "next_obs", "terminated", "truncated"]
        if self.spec.state_space is not None:
            f += ["state", "next_state"]
        if self.spec.agent_rewards:
            f += ["agent_reward"]
        if self.spec.action_masks:
            f += ["action_mask", "next_action_mask"]
        return f

    def read_rows(self, name: str, start: int = 0, stop: int | None = None, cache: bool = False) -> np.ndarray:
        """Rows ``[start, stop)`` of a stored array (of the whole store), checked against the committed checksums."""
        return self.store.read_rows(name, start, stop, cache)

    # ------------------------------------------------------------ internals

    def _step_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Step-row index and episode id of every transition of this selection, in order."""
        ids = self.episode_ids
        lengths = self.store.column("length")[ids]
        offsets = self.store.column("step_offset")[ids]
        total = int(lengths.sum())
        starts = np.repeat(offsets - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return starts + np.arange(total, dtype=np.int64), np.repeat(ids, lengths)


def open(  # noqa: A001
    path: str | os.PathLike,
    verify: Literal["quick", "none"] = "quick",
    storage_options: dict[str, Any] | None = None,
) -> Dataset:
    """Open a madata dataset for reading.

    ``verify="quick"`` (default) checks metadata, commit record, episode table, every
    array's shape and dtype, that every chunk file exists and matches its stored
    checksum (full chunks: raw bytes; the partial last chunk: decoded content). It reads
    each file once without decoding, which is fast. On object storage (``s3://...``, with
    ``storage_options``) it checks the root, each shard's metadata, commit record and
    episode table only: reading every chunk would download the dataset. Every later read
    is checked against the content checksums; ``madata verify`` checks everything.
    """
    ds = Dataset.load(path, storage_options)
    if verify == "quick":
        # a sharded dataset: each shard's own checks. On object storage a shard's metadata, commit record and
        # episode table were checked as it was opened, and every chunk is checked as it is read; the rest of
        # the quick check (a request per array, per partial chunk) is `verify`'s, or opening would cost minutes
        stores = getattr(ds.store, "shards", [ds.store]) if ds.store.location.local else []
        problems = [p for store in stores for p in quick_problems(store)]
        if problems:
            more = f" (and {len(problems) - 3} more; run `madata verify {ds.root}`)" if len(problems) > 3 else ""
            raise CorruptionError("; ".join(str(p) for p in problems[:3]) + more)
    elif verify != "none":
        raise SchemaError(f"verify must be 'quick' or 'none', got {verify!r}")
    return ds
