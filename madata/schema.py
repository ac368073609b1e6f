"""The dataset schema: the one place that says what a madata dataset holds.

Every reader and writer goes through this module. A dataset has

* **agents**, in a fixed order, each with its own observation and action space
  (heterogeneous shapes are stored as they are, never padded);
* **step rows**, one per transition: each agent's action, the team reward, optional
  per-agent rewards, and the ``terminated`` / ``truncated`` flags kept apart;
* **observation rows**, one per observation: an episode of T steps keeps its T + 1
  observations (the final one included), so next observations are derived through
  the episode index instead of being stored twice. The optional global state and
  optional action masks are observation rows too;
* an **episode table** (Arrow, persisted as Parquet) with one row per episode;
* **metadata**: schema version, agents and spaces, environment and factorization,
  versions, creation time, description, reference scores.

Row ``r`` of the step arrays belongs to episode ``e`` with
``step_offset[e] <= r < step_offset[e] + length[e]``; its observation is row
``r + e`` of the observation arrays and its next observation row ``r + e + 1``
(``obs_offset[e] = step_offset[e] + e``). The on-disk layout is in docs/format.md.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from madata.errors import SchemaError
from madata.spaces import Box, Discrete, Space, parse_space

SCHEMA_VERSION = 1
FORMAT = "madata"

RowKind = Literal["obs", "step"]
END_KINDS = ("terminated", "truncated")

_AGENT_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class AgentSpec:
    """One agent: its id and its own observation and action spaces."""

    id: str
    observation_space: Box
    action_space: Space

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "observation_space": self.observation_space.to_json(),
            "action_space": self.action_space.to_json(),
        }


@dataclass(frozen=True)
class ArraySpec:
    """One stored array: ``name`` (its path in the store), which rows it has, dtype and per-row shape."""

    name: str
    rows: RowKind
    dtype: str
    feature_shape: tuple[int, ...]
    agent: str | None = None

    def empty(self, n: int = 0) -> np.ndarray:
        return np.zeros((n, *self.feature_shape), dtype=self.dtype)


@dataclass(frozen=True)
class DatasetSpec:
    """What every row of a dataset holds: agents, optional state, optional per-agent rewards and masks."""

    agents: tuple[AgentSpec, ...]
    state_space: Box | None = None
    agent_rewards: bool = False
    action_masks: bool = False

    def __post_init__(self) -> None:
        if not self.agents:
            raise SchemaError("a dataset needs at least one agent")
        ids = [a.id for a in self.agents]
        for a in ids:
            if not isinstance(a, str) or not _AGENT_ID.match(a):
                raise SchemaError(f"agent id {a!r}: expected letters, digits, '_', '.' or '-'")
        if len(set(ids)) != len(ids):
            raise SchemaError(f"agent ids must be unique, got {ids}")
        for a in self.agents:
            if not isinstance(a.observation_space, Box):
                raise SchemaError(f"agent {a.id}: observation space must be a Box")
        if self.action_masks and not all(isinstance(a.action_space, Discrete) for a in self.agents):
            raise SchemaError("action masks need Discrete action spaces for every agent")

    @property
    def agent_ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def agent(self, agent_id: str) -> AgentSpec:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise SchemaError(f"unknown agent {agent_id!r}; agents are {self.agent_ids}")

    def arrays(self) -> list[ArraySpec]:
        """Every stored array, in a fixed order."""
        out: list[ArraySpec] = []
        for a in self.agents:
            obs = a.observation_space
            out.append(ArraySpec(f"obs/{a.id}", "obs", obs.dtype, obs.shape, a.id))
        if self.state_space is not None:
            out.append(ArraySpec("state", "obs", self.state_space.dtype, self.state_space.shape))
        if self.action_masks:
            for a in self.agents:
                out.append(ArraySpec(f"action_mask/{a.id}", "obs", "bool", (a.action_space.n,), a.id))
        for a in self.agents:
            act = a.action_space
            out.append(ArraySpec(f"action/{a.id}", "step", act.dtype, act.feature_shape, a.id))
        out.append(ArraySpec("reward", "step", "float64", ()))
        if self.agent_rewards:
            for a in self.agents:
                out.append(ArraySpec(f"agent_reward/{a.id}", "step", "float64", (), a.id))
        out.append(ArraySpec("terminated", "step", "bool", ()))
        out.append(ArraySpec("truncated", "step", "bool", ()))
        return out

    def array(self, name: str) -> ArraySpec:
        found = self._array_index().get(name)
        if found is not None:
            return found
        raise SchemaError(f"unknown array {name!r}; this dataset has {[s.name for s in self.arrays()]}")

    @functools.cache  # noqa: B019 (frozen and hashable; a handful of specs per process)
    def _array_index(self) -> dict[str, ArraySpec]:
        return {s.name: s for s in self.arrays()}

    def to_json(self) -> dict[str, Any]:
        return {
            "agents": [a.to_json() for a in self.agents],
            "state_space": None if self.state_space is None else self.state_space.to_json(),
            "agent_rewards": self.agent_rewards,
            "action_masks": self.action_masks,
        }


# ---------------------------------------------------------------- metadata


@dataclass
class Metadata:
    """Dataset-level facts stored once, at creation, in the root group's ``madata`` attribute."""

    spec: DatasetSpec
    chunk_rows: int
    env: dict[str, Any] = field(default_factory=dict)  # id, family, factorization kwargs
    description: str = ""
    reference_scores: dict[str, float] | None = None  # {"min": REF_MIN, "max": REF_MAX}
    provenance: dict[str, Any] = field(default_factory=dict)  # producer (collector/converter) and its arguments
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            **self.spec.to_json(),
            "chunk_rows": self.chunk_rows,
            "env": self.env,
            "description": self.description,
            "reference_scores": self.reference_scores,
            "provenance": self.provenance,
            "versions": self.versions,
            "created": self.created,
            "extra": self.extra,
        }


def _field(obj: dict, key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SchemaError(f"{where}: '{key}' must be {names}, got {value!r}"[:300])
    return value


def parse_metadata(obj: Any, where: str) -> Metadata:
    """Parse and validate stored metadata, field by field; ``where`` (a file path) goes into every error."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: metadata must be a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise SchemaError(f"{where}: not a madata dataset (format={obj.get('format')!r}, expected {FORMAT!r})")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: schema_version {version!r} is not supported by this madata "
            f"(expected {SCHEMA_VERSION}); upgrade madata or re-create the dataset"
        )
    raw_agents = obj.get("agents")
    if not isinstance(raw_agents, list):
        raise SchemaError(f"{where}: 'agents' must be a list of agents, got {raw_agents!r}"[:300])
    agents = []
    for k, a in enumerate(raw_agents):
        if not isinstance(a, dict) or not isinstance(a.get("id"), str):
            raise SchemaError(f"{where}: agents[{k}] must be an object with an 'id' string, got {a!r}"[:300])
        obs = parse_space(a.get("observation_space"), f"{where}: agents[{k}].observation_space")
        act = parse_space(a.get("action_space"), f"{where}: agents[{k}].action_space")
        if not isinstance(obs, Box):
            raise SchemaError(f"{where}: agents[{k}].observation_space must be a box")
        agents.append(AgentSpec(a["id"], obs, act))
    if "state_space" not in obj:
        raise SchemaError(f"{where}: metadata lacks the field 'state_space' (null when there is no global state)")
    state = obj["state_space"]
    state_space = None if state is None else parse_space(state, f"{where}: state_space")
    if state_space is not None and not isinstance(state_space, Box):
        raise SchemaError(f"{where}: state_space must be a box")
    flags = {}
    for key in ("agent_rewards", "action_masks"):
        if not isinstance(obj.get(key), bool):
            raise SchemaError(f"{where}: '{key}' must be true or false, got {obj.get(key)!r}")
        flags[key] = obj[key]
    try:
        spec = DatasetSpec(tuple(agents), state_space, flags["agent_rewards"], flags["action_masks"])
    except SchemaError as e:
        raise SchemaError(f"{where}: {e}") from None
    if "chunk_rows" not in obj:
        raise SchemaError(f"{where}: metadata lacks the field 'chunk_rows'")
    scores = _field(obj, "reference_scores", dict, where)
    if scores is not None and (
        set(scores) != {"min", "max"}
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
    ):
        raise SchemaError(f"{where}: 'reference_scores' must be {{'min': number, 'max': number}}, got {scores!r}")
    return Metadata(
        spec=spec,
        chunk_rows=parse_chunk_rows(obj["chunk_rows"], where),
        env=dict(_field(obj, "env", dict, where, {})),
        description=_field(obj, "description", str, where, ""),
        reference_scores=scores,
        provenance=dict(_field(obj, "provenance", dict, where, {})),
        versions=dict(_field(obj, "versions", dict, where, {})),
        created=_field(obj, "created", str, where, ""),
        extra=dict(_field(obj, "extra", dict, where, {})),
    )


def parse_chunk_rows(value: Any, where: str = "chunk_rows") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SchemaError(f"{where}: chunk_rows must be an integer, got {value!r}")
    n = int(value)
    if n < 1 or n > 1 << 24:
        raise SchemaError(f"{where}: chunk_rows must be in 1..16777216, got {n}")
    return n


# ---------------------------------------------------------------- episode table


def behaviour_column(agent_id: str) -> str:
    """Name of the episode-table column with ``agent_id``'s behaviour label."""
    return f"behaviour.{agent_id}"


def episode_table_schema(agent_ids: list[str]) -> pa.Schema:
    """Arrow schema of the episode table: one row per episode."""
    fields = [
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("step_offset", pa.int64(), nullable=False),  # first step row
        pa.field("obs_offset", pa.int64(), nullable=False),  # first observation row = step_offset + episode_id
        pa.field("length", pa.int64(), nullable=False),  # steps T; the episode has T + 1 observations
        pa.field("return", pa.float64(), nullable=False),  # undiscounted sum of team rewards
        pa.field("end", pa.string(), nullable=False),  # "terminated" or "truncated"
        pa.field("seed", pa.int64(), nullable=True),  # environment reset seed
    ]
    fields += [pa.field(behaviour_column(a), pa.string(), nullable=True) for a in agent_ids]
    fields.append(pa.field("provenance", pa.string(), nullable=True))  # JSON: producer and its arguments
    return pa.schema(fields)


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float written as "inf", "-inf" or "nan" (strict JSON has none of them;
    madata's metadata stores infinite bounds the same way)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else ("nan" if np.isnan(obj) else "inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
