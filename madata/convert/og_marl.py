"""OG-MARL's flashbax Vaults in and out, with TensorStore only (no jax, no flashbax).

    madata import og-marl vaults/smac_v1/3m --uid Good -o 3m-good.zarr
    madata export 3m-good.zarr --format og-marl -o vaults/madata/3m-good

A vault lives at ``<vault_dir>/<uid>/``: ``metadata.json`` (``version`` 1.x;
``structure_shape`` and ``structure_dtype``, nested dicts of the leaves' shapes and dtypes;
any user metadata) and one TensorStore array per leaf (driver ``zarr``, in an ``ocdbt``
key-value store under the uid directory, path ``observations.``, ``infos.state.``, ...: the
leaf's keys joined by dots, with a trailing dot), shaped ``(B, T_max, ...)`` with a
preallocated time axis, plus ``vault_index`` (int32, shape (1,)): how many time steps
were written. OG-MARL's experience: ``observations`` (B, T, N, obs), ``actions`` (B, T, N)
integers or (B, T, N, act) floats, ``rewards``, ``terminals``, ``truncations`` (B, T, N),
``infos.state`` (B, T, S) and ``infos.legals`` (B, T, N, actions). Episodes follow each
other along T in every batch row; one ends at a step where every agent's terminal (or
every agent's truncation) is set, as OG-MARL splits them.

Import: agents are ``agent_0 .. agent_{N-1}``; the team reward is the agents' common
reward when they all got the same, else their mean, and the per-agent rewards are kept as
``agent_rewards``; ``legals`` become action masks. A vault does not store an episode's
final observation (the step after the last action): it is taken from ``infos.next_*``
leaves where a vault has them (madata's export writes them), else the last observation
is repeated, and the provenance says so. A trailing episode without an end is dropped and
reported (``strict=True`` refuses the vault instead). Agents whose observations, actions
and rewards are all zero are reported as padding (kept); a vault whose actions break its
own legals is refused, naming the first such step. Each batch row is read whole into
memory (OG-MARL's SMAC vaults: about 0.5 GB for a million steps of 3m).

Export writes B = 1, T = every step, the leaves above plus ``infos.next_observations``
(and ``infos.next_state``, ``infos.next_legals``) so nothing is lost, and madata's own
record (agent ids, spaces, env, reference scores, each episode's seed, behaviour labels
and provenance) under the user-metadata key ``madata``: importing an exported vault gives
back identical arrays and episode facts.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import madata
from madata.atomic import atomic_directory, check_new_directory
from madata.dataset import Dataset
from madata.errors import CorruptionError, DatasetExistsError, DatasetNotFoundError, OutputError, SchemaError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete, parse_space

METADATA_FILE = "metadata.json"
TIME_AXIS_MAX = int(10e12)  # flashbax preallocates the time axis to this length
REQUIRED = ("observations", "actions", "rewards", "terminals", "truncations")


def _ts():
    try:
        import tensorstore as ts
    except ImportError as e:  # pragma: no cover - the extra is installed in the tests
        raise SchemaError("OG-MARL vaults need tensorstore: pip install 'madata[og-marl]'") from e
    return ts


# ---------------------------------------------------------------------------- reading


def _vault_path(vault_dir: Path, uid: str | None) -> Path:
    if not vault_dir.is_dir():
        raise DatasetNotFoundError(f"{vault_dir}: no such vault directory")
    if (vault_dir / METADATA_FILE).is_file():  # given the uid directory itself
        return vault_dir
    uids = sorted(p.name for p in vault_dir.iterdir() if (p / METADATA_FILE).is_file())
    if uid is None:
        if len(uids) != 1:
            raise SchemaError(
                f"{vault_dir}: holds {len(uids)} vaults ({', '.join(uids) or 'none'}); choose one with --uid"
            )
        uid = uids[0]
    if uid not in uids:
        raise DatasetNotFoundError(f"{vault_dir}: no vault with uid {uid!r}; it has {', '.join(uids) or 'none'}")
    return vault_dir / uid


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested structure -> {"infos.state.": value, ...} (flashbax's datastore names)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}."] = v
    return out


class _Vault:
    """One vault's metadata and leaves, read with TensorStore."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.meta = json.loads((path / METADATA_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptionError(f"{path / METADATA_FILE}: not readable as JSON ({e})") from e
        if not isinstance(self.meta, dict) or int(float(self.meta.get("version", -1))) != 1:
            raise SchemaError(
                f"{path / METADATA_FILE}: expected a flashbax vault of version 1.x, got {self.meta.get('version')!r}"
            )
        try:
            shapes = _leaves(self.meta["structure_shape"])
            dtypes = _leaves(self.meta["structure_dtype"])
        except (KeyError, AttributeError) as e:
            raise CorruptionError(f"{path / METADATA_FILE}: no structure_shape/structure_dtype ({e})") from e
        self.names = sorted(shapes)
        missing = [n[:-1] for n in (f"{r}." for r in REQUIRED) if n not in shapes]
        if missing:
            raise SchemaError(
                f"{path}: not an OG-MARL experience: no {', '.join(missing)} (leaves: {', '.join(n[:-1] for n in self.names)})"
            )
        self.dtypes = dtypes
        # every leaf the metadata lists must be there (a missing one is a damaged vault); opened once, read per row
        self.stores = {name: self._open(name) for name in self.names}
        self.length = int(self._open("vault_index").read().result()[0])

    def _open(self, name: str):
        ts = _ts()
        spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{self.path.resolve()}", "path": name}}
        try:
            return ts.open(spec).result()
        except (ValueError, RuntimeError) as e:  # tensorstore reports a missing or damaged leaf so
            raise CorruptionError(
                f"{self.path}: leaf {name.rstrip('.')!r} cannot be opened ({str(e).splitlines()[0]})"
            ) from e

    def read(self, name: str, b: int) -> np.ndarray | None:
        """Leaf ``name`` (e.g. "infos.state.") of batch row ``b``, the written steps only; None when absent."""
        if name not in self.dtypes:
            return None
        try:
            return np.asarray(self.stores[name][b, : self.length].read().result())
        except (ValueError, RuntimeError) as e:
            raise CorruptionError(
                f"{self.path}: leaf {name.rstrip('.')!r} cannot be read ({str(e).splitlines()[0]})"
            ) from e

    @property
    def batch(self) -> int:
        """B: the rows of the batch axis (the time axis in ``structure_shape`` is the writer's buffer, not the data)."""
        try:
            return int(ast.literal_eval(_leaves(self.meta["structure_shape"])["observations."])[0])
        except (ValueError, SyntaxError, TypeError, IndexError) as e:
            raise CorruptionError(f"{self.path / METADATA_FILE}: the shape of observations is not a tuple ({e})") from e


def import_og_marl(
    vault_dir: str | os.PathLike, out: str | os.PathLike, *, uid: str | None = None, strict: bool = False
) -> Dataset:
    """Write the episodes of an OG-MARL vault to a new madata dataset ``out`` (see the module docstring)."""
    out = check_new_directory(out)
    vault = _Vault(_vault_path(Path(vault_dir), uid))
    own = vault.meta.get("madata")  # written by madata's export: restores what a vault cannot hold
    rows = [_row(vault, b) for b in range(vault.batch)]
    N, obs_dim = rows[0]["obs"].shape[1], rows[0]["obs"].shape[2:]
    agents = _agents(own, rows, N, obs_dim)
    state_dim = None if rows[0]["state"] is None else rows[0]["state"].shape[1:]
    masks = rows[0]["legals"] is not None
    report: dict[str, Any] = {"dropped_unfinished_steps": 0, "final_observation": "from infos.next_observations"}
    episodes = []
    for b, r in enumerate(rows):
        ends = np.flatnonzero(r["term"].all(1) | r["trunc"].all(1))  # as OG-MARL splits: every agent done
        start = 0
        for end in ends:
            episodes.append((b, start, int(end) + 1))
            start = int(end) + 1
        if start < vault.length:
            if strict:
                raise SchemaError(
                    f"{vault.path}: batch row {b} ends with {vault.length - start} steps of an unfinished episode"
                )
            report["dropped_unfinished_steps"] += vault.length - start
    if not episodes:
        raise SchemaError(f"{vault.path}: no finished episode in {vault.length} steps")
    if rows[0]["next_obs"] is None:
        report["final_observation"] = "repeated: the vault does not store it"
    report["padded_agents"] = [a.id for i, a in enumerate(agents) if all(_zero_agent(r, i) for r in rows)]
    if masks and np.issubdtype(rows[0]["act"].dtype, np.integer):
        for b, r in enumerate(rows):
            taken = np.take_along_axis(r["legals"], r["act"][..., None].astype(np.int64), -1)[..., 0]
            bad = np.argwhere(taken == 0)
            if len(bad):  # a dataset whose actions break its own masks would fail verify: refuse it now
                t, i = bad[0]
                raise SchemaError(
                    f"{vault.path}: batch row {b}, step {t}: agent_{i} takes action {int(r['act'][t, i])}, which its "
                    f"legals forbid ({len(bad)} such steps); madata's action masks must allow the actions taken"
                )
    env = own["env"] if own else {"id": vault.meta.get("env", vault.path.parent.name), "family": "og-marl"}
    facts = own["episodes"] if own else None
    with atomic_directory(out) as tmp:
        with madata.create(
            tmp,
            agents,
            state_space=_state_space(own, state_dim),
            agent_rewards=own["agent_rewards"] if own else True,
            action_masks=masks,
            env=env,
            description=f"{len(episodes)} episodes imported from the OG-MARL vault {vault.path}",
            reference_scores=own.get("reference_scores") if own else None,
            provenance={
                "producer": "madata.import_og_marl",
                "vault": str(vault.path.resolve()),
                "uid": vault.path.name,
                "vault_metadata": {k: v for k, v in vault.meta.items() if k != "madata"},
                "report": report,
                **({"source_provenance": own["provenance"]} if own else {}),
            },
            commit_every=0,
        ) as w:
            for e, (b, s, t) in enumerate(episodes):
                w.add_episode(
                    **_episode(rows[b], s, t, agents, own is None or own["agent_rewards"]),
                    **(_facts(facts[e]) if facts else {"provenance": {"batch_row": b, "steps": [s, t]}}),
                )
    return madata.open(out)


def _row(vault: _Vault, b: int) -> dict[str, Any]:
    r = {
        "obs": vault.read("observations.", b),
        "act": vault.read("actions.", b),
        "rew": vault.read("rewards.", b).astype(np.float64),
        "term": vault.read("terminals.", b).astype(bool),
        "trunc": vault.read("truncations.", b).astype(bool),
        "state": vault.read("infos.state.", b),
        "legals": vault.read("infos.legals.", b),
        "next_obs": vault.read("infos.next_observations.", b),
        "next_state": vault.read("infos.next_state.", b),
        "next_legals": vault.read("infos.next_legals.", b),
    }
    if r["rew"].ndim == 1:  # a team reward (B, T): every agent gets it
        r["rew"] = np.repeat(r["rew"][:, None], r["obs"].shape[1], 1)
    return r


def _agents(own: dict | None, rows: list[dict], N: int, obs_dim: tuple) -> list[AgentSpec]:
    if own:
        where = "metadata.json: madata.agents"
        return [
            AgentSpec(a["id"], parse_space(a["observation_space"], where), parse_space(a["action_space"], where))
            for a in own["agents"]
        ]
    act = rows[0]["act"]
    out = []
    for i in range(N):
        if np.issubdtype(act.dtype, np.integer):
            n = (
                rows[0]["legals"].shape[-1]
                if rows[0]["legals"] is not None
                else int(max(r["act"].max() for r in rows)) + 1
            )
            space = Discrete(n)
        else:
            lo, hi = min(float(r["act"][:, i].min()) for r in rows), max(float(r["act"][:, i].max()) for r in rows)
            bounded = lo >= -1 and hi <= 1
            space = Box.make(-1.0 if bounded else -np.inf, 1.0 if bounded else np.inf, act.shape[3:])
        out.append(AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, obs_dim), space))
    return out


def _state_space(own: dict | None, state_dim: tuple | None) -> Box | None:
    if state_dim is None:
        return None
    if own and own.get("state_space"):
        return parse_space(own["state_space"], "metadata.json: madata.state_space")
    return Box.make(-np.inf, np.inf, state_dim)


def _episode(r: dict, s: int, t: int, agents: list[AgentSpec], keep_agent_rewards: bool) -> dict[str, Any]:
    def with_final(x: np.ndarray, nxt: np.ndarray | None) -> np.ndarray:
        return np.concatenate([x[s:t], (nxt if nxt is not None else x)[t - 1 : t]])

    T = t - s
    rew = r["rew"][s:t]
    shared = bool(np.all(rew == rew[:, :1]))
    terminated = bool(r["term"][t - 1].all())
    end = np.zeros(T, bool)
    end[-1] = True
    ep = {
        "obs": {
            a.id: with_final(r["obs"][:, i], None if r["next_obs"] is None else r["next_obs"][:, i])
            for i, a in enumerate(agents)
        },
        "actions": {a.id: r["act"][s:t, i] for i, a in enumerate(agents)},
        "rewards": rew[:, 0] if shared else rew.mean(1),
        "terminated": end if terminated else np.zeros(T, bool),
        "truncated": np.zeros(T, bool) if terminated else end,
    }
    if keep_agent_rewards:
        ep["agent_rewards"] = {a.id: rew[:, i] for i, a in enumerate(agents)}
    if r["state"] is not None:
        ep["state"] = with_final(r["state"], r["next_state"])
    if r["legals"] is not None:
        ep["action_masks"] = {
            a.id: with_final(r["legals"][:, i], None if r["next_legals"] is None else r["next_legals"][:, i]).astype(
                bool
            )
            for i, a in enumerate(agents)
        }
    return ep


def _facts(f: dict) -> dict[str, Any]:
    return {
        "behaviour": {k: v for k, v in f["behaviour"].items() if v is not None},
        "seed": f["seed"],
        "provenance": None if f["provenance"] is None else json.loads(f["provenance"]),
    }


def _zero_agent(r: dict, i: int) -> bool:
    return not (np.any(r["obs"][:, i]) or np.any(r["act"][:, i]) or np.any(r["rew"][:, i]))


# ---------------------------------------------------------------------------- writing


def export_og_marl(ds: Dataset | str | os.PathLike, out: str | os.PathLike, *, uid: str = "madata") -> Path:
    """Write ``ds`` as a flashbax vault at ``out/uid`` (B = 1; see the module docstring); returns its path.

    Reads the whole dataset into memory (``Dataset.transitions()``) and writes each leaf once.
    """
    ds = ds if isinstance(ds, Dataset) else madata.open(ds)
    out = Path(out)
    path = out / uid
    if path.exists():
        raise DatasetExistsError(f"{path}: exists; choose another output path or uid (nothing was written)")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: its directory {out.parent} does not exist; create it first")
    first = ds.agents[0]
    for a in ds.agents[1:]:
        if (
            a.observation_space.shape != first.observation_space.shape
            or type(a.action_space) is not type(first.action_space)
            or a.action_space.shape != first.action_space.shape
        ):
            raise SchemaError(
                f"{ds.root}: a vault stacks agents along one axis, so every agent needs the same observation shape and "
                f"action space; {a.id} has {a.observation_space.shape} / {a.action_space}, {first.id} "
                f"{first.observation_space.shape} / {first.action_space}"
            )
    tr = ds.transitions()
    ids = ds.agent_ids
    T = len(tr["reward"])

    def stack(key: str) -> np.ndarray:
        return np.stack([tr[f"{key}/{a}"] for a in ids], 1)[None]  # (1, T, N, ...)

    team = np.repeat(tr["reward"][:, None], len(ids), 1)
    leaves: dict[str, np.ndarray] = {
        "observations.": stack("obs"),
        "actions.": stack("action").astype(np.int32) if isinstance(first.action_space, Discrete) else stack("action"),
        "rewards.": (stack("agent_reward") if ds.spec.agent_rewards else team[None]).astype(np.float64),
        "terminals.": np.repeat(tr["terminated"][:, None], len(ids), 1)[None].astype(np.float32),
        "truncations.": np.repeat(tr["truncated"][:, None], len(ids), 1)[None].astype(np.float32),
        "infos.next_observations.": stack("next_obs"),
    }
    if ds.state_space is not None:
        leaves["infos.state."], leaves["infos.next_state."] = tr["state"][None], tr["next_state"][None]
    if ds.spec.action_masks:
        leaves["infos.legals."] = stack("action_mask").astype(np.float32)
        leaves["infos.next_legals."] = stack("next_action_mask").astype(np.float32)
    table = ds.episodes
    own = {
        "agents": [a.to_json() for a in ds.agents],
        "state_space": None if ds.state_space is None else ds.state_space.to_json(),
        "env": ds.meta.env,
        "reference_scores": ds.meta.reference_scores,
        "agent_rewards": ds.spec.agent_rewards,
        "provenance": ds.meta.provenance,
        "episodes": [
            {"seed": r["seed"], "provenance": r["provenance"], "behaviour": {a: r[f"behaviour.{a}"] for a in ids}}
            for r in table.select(["seed", "provenance", *[f"behaviour.{a}" for a in ids]]).to_pylist()
        ],
    }
    meta = {"version": 1.2, "structure_shape": {}, "structure_dtype": {}, "madata": own}
    for name, x in leaves.items():
        node_s, node_d = meta["structure_shape"], meta["structure_dtype"]
        *parents, leaf = name.rstrip(".").split(".")
        for p in parents:
            node_s, node_d = node_s.setdefault(p, {}), node_d.setdefault(p, {})
        node_s[leaf] = str((1, T, *x.shape[2:]))
        node_d[leaf] = np.dtype(x.dtype).name
    out.mkdir(exist_ok=True)
    with atomic_directory(path) as tmp:
        tmp.mkdir()
        ts = _ts()
        for name, x in {**leaves, "vault_index": np.array([T], np.int32)}.items():
            spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{tmp.resolve()}", "path": name}}
            shape = x.shape if name == "vault_index" else (1, TIME_AXIS_MAX, *x.shape[2:])
            spec["metadata"] = {"compressor": {"id": "gzip", "level": 5}}
            store = ts.open(spec, shape=shape, dtype=ts.dtype(np.dtype(x.dtype).name), create=True).result()
            (store if name == "vault_index" else store[:, :T]).write(x).result()
        (tmp / METADATA_FILE).write_text(json.dumps(meta))
    return path
