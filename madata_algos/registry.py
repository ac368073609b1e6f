"""The algorithms ``madata train`` knows: one table, name -> what it is and how to build it.

Every algorithm follows one interface on agent-major tensors (N agents, minibatch B):

* ``update(obs, action, reward, next_obs, terminated, state, next_state, generator=None)
  -> dict[str, float]`` (its losses by name): ``obs``/``next_obs`` [N, B, max obs dim]
  zero-padded, ``action`` [N, B, max act dim] (continuous) or int64 [N, B] (discrete, 0-based),
  ``reward``/``terminated`` [B], ``state``/``next_state`` [B, S] or None;
* ``act(obs [N, B, O], generator=None)`` -> [N, B, A] or int64 [N, B] (the generator argument
  only where acting is random);
* its optimizers are attributes named ``opt_*`` (checkpoints save them by that name).

This module imports no torch: ``madata train --help`` lists the table without loading an
algorithm, and each builder imports its algorithm's module when called.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import madata
from madata.envs.registry import get_task
from madata.errors import SchemaError, UnknownNameError
from madata.spaces import Discrete
from madata_algos.configs import BcqConfig, CastBcqConfig, DiscreteConfig, IcqConfig, MabcqConfig


@dataclass(frozen=True)
class DataInfo:
    """What the builders need to know of a dataset (read once by :func:`describe`)."""

    root: str
    task: str
    agent_ids: tuple[str, ...]
    obs_dims: tuple[int, ...]
    discrete: bool
    act_dims: tuple[int, ...]  # continuous: action sizes; discrete: 1 per agent
    max_action: tuple[float, ...]  # continuous: max |bound| of each agent's action box; discrete: ()
    n_actions: int | None  # discrete: actions per agent (equal for all)
    action_starts: tuple[int, ...]  # discrete: the first action value of each agent (0-based inside); else 0s
    default_action: int | None  # discrete: the no-op as a 0-based index, when the metadata names one
    state_dim: int | None  # size of the stored global state, None when there is none


Builder = Callable[[DataInfo, Any, Any], Any]  # (data, config, device) -> algorithm


@dataclass(frozen=True)
class AlgorithmSpec:
    """One row of the table. ``continuous``/``discrete``: builders for each kind of action space (None: not
    supported). ``decentralized``: agent i acts on o_i alone. ``needs_state``: trains on the global state."""

    name: str
    label: str  # in plots and tables
    summary: str  # one line, shown by `madata train --help`
    config: type
    continuous: Builder | None
    discrete: Builder | None
    decentralized: bool
    needs_state: bool


# ---------------------------------------------------------------------------- builders


def _cast_bcq(d: DataInfo, cfg: CastBcqConfig, device):
    from madata_algos.cast_bcq import CastBcq

    return CastBcq(list(d.obs_dims), list(d.act_dims), d.state_dim, list(d.max_action), cfg, device)


def _cast_bcq_discrete(d: DataInfo, cfg: CastBcqConfig, device):
    from madata_algos.cast_bcq_discrete import CastBcqDiscrete

    if d.default_action is None:
        raise SchemaError(f"{d.root}: discrete CAST-BCQ needs env.default_action (the no-op) in the dataset's metadata")
    dcfg = DiscreteConfig(lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau, lam=cfg.lam, subteams=cfg.subteams, csaa=cfg.csaa,
                          subteam_sampling=cfg.subteam_sampling, clipped_double_q=cfg.clipped_double_q)  # fmt: skip
    return CastBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, d.state_dim, d.default_action, dcfg, device)


def _bcq(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.bcq import JointBcq

    return JointBcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _bcq_discrete(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.bcq import JointBcqDiscrete

    return JointBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, cfg, device)


def _ibcq(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.ibcq import IndependentBcq

    return IndependentBcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _ibcq_discrete(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.cast_bcq_discrete import IndependentBcqDiscrete
    from madata_algos.ibcq import discrete_config

    return IndependentBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, discrete_config(cfg), device)


def _mabcq(d: DataInfo, cfg: MabcqConfig, device):
    from madata_algos.mabcq import Mabcq

    return Mabcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _mabcq_discrete(d: DataInfo, cfg: MabcqConfig, device):
    from madata_algos.mabcq import MabcqDiscrete

    return MabcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, cfg, device)


def _icq(d: DataInfo, cfg: IcqConfig, device):
    from madata_algos.icq import IcqMa

    if d.discrete:
        return IcqMa(list(d.obs_dims), None, d.state_dim, None, d.n_actions, cfg, device)
    return IcqMa(list(d.obs_dims), list(d.act_dims), d.state_dim, list(d.max_action), None, cfg, device)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    s.name: s
    for s in (
        AlgorithmSpec("cast-bcq", "CAST-BCQ",
                      "CAST-BCQ: counterfactual SAA with subteam masking; decentralized execution, needs a global state.",
                      CastBcqConfig, _cast_bcq, _cast_bcq_discrete, decentralized=True, needs_state=True),
        AlgorithmSpec("bcq", "BCQ",
                      "Centralized BCQ on the joint observation and joint action; execution needs every agent's observation.",
                      BcqConfig, _bcq, _bcq_discrete, decentralized=False, needs_state=False),
        AlgorithmSpec("ibcq", "I-BCQ",
                      "Independent BCQ: each agent runs BCQ on its own observations and actions; decentralized.",
                      BcqConfig, _ibcq, _ibcq_discrete, decentralized=True, needs_state=False),
        AlgorithmSpec("mabcq", "MABCQ",
                      "MABCQ (Jiang & Lu 2021): I-BCQ with value-deviation and transition-normalization weights; decentralized.",
                      MabcqConfig, _mabcq, _mabcq_discrete, decentralized=True, needs_state=False),
        AlgorithmSpec("icq-ma", "ICQ-MA",
                      "ICQ-MA (Yang et al. 2021): implicit constraint Q-learning, mixed value Q_tot = sum_i w_i(s) Q_i + b(s); decentralized, needs a global state.",
                      IcqConfig, _icq, _icq, decentralized=True, needs_state=True),
    )
}  # fmt: skip


def names() -> list[str]:
    return list(ALGORITHMS)


def get(name: str) -> AlgorithmSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UnknownNameError(f"unknown algorithm {name!r}; available: {', '.join(ALGORITHMS)}") from None


# ---------------------------------------------------------------------------- data and configs


def describe(ds: madata.Dataset) -> DataInfo:
    """Read and check what the algorithms need from ``ds``: its task, spaces and state."""
    task = ds.meta.env.get("id")
    if task is None:
        raise SchemaError(f"{ds.root}: metadata names no environment (env.id); evaluation needs one")
    _check_matches_task(ds, task)
    obs_dims = []
    for a in ds.agents:
        if len(a.observation_space.shape) != 1:
            raise SchemaError(f"{ds.root}: agent {a.id} has observation shape {a.observation_space.shape}; "
                              "the algorithms take vectors")  # fmt: skip
        obs_dims.append(int(a.observation_space.shape[0]))
    kinds = {isinstance(a.action_space, Discrete) for a in ds.agents}
    if len(kinds) > 1:
        raise SchemaError(f"{ds.root}: agents mix discrete and continuous actions; the algorithms take one kind")
    state_dim = None if ds.state_space is None else int(np.prod(ds.state_space.shape))
    common = dict(root=str(ds.root), task=task, agent_ids=tuple(ds.agent_ids), obs_dims=tuple(obs_dims), state_dim=state_dim)
    if kinds == {True}:
        spaces = [a.action_space for a in ds.agents]
        if len({s.n for s in spaces}) > 1 or len(set(obs_dims)) > 1:
            raise SchemaError(f"{ds.root}: the discrete algorithms need agents of equal observation and action sizes, "
                              f"got observations {obs_dims} and {[s.n for s in spaces]} actions")  # fmt: skip
        default = ds.meta.env.get("default_action")
        return DataInfo(**common, discrete=True, act_dims=(1,) * len(spaces), max_action=(), n_actions=int(spaces[0].n),
                        action_starts=tuple(int(s.start) for s in spaces),
                        default_action=None if default is None else int(default) - int(spaces[0].start))  # fmt: skip
    boxes = [a.action_space for a in ds.agents]
    return DataInfo(**common, discrete=False, act_dims=tuple(int(b.shape[0]) for b in boxes),
                    max_action=tuple(float(max(np.max(np.abs(b.low)), np.max(np.abs(b.high)))) for b in boxes),
                    n_actions=None, action_starts=(0,) * len(boxes), default_action=None)  # fmt: skip


def _check_matches_task(ds: madata.Dataset, task: str) -> None:
    """The policy is evaluated in ``task``'s environment: the dataset's agents and spaces must be that
    environment's (a dataset relabelled with another task's id would otherwise fail after training)."""
    from madata.envs.team import make_team_env

    get_task(task)
    env = make_team_env(task)
    try:
        f = env.factorization
    finally:
        env.close()

    def shapes(agents):
        return {a.id: (a.observation_space.shape, getattr(a.action_space, "n", None) or a.action_space.shape) for a in agents}

    got, want = shapes(ds.agents), shapes(f.agents)
    state = None if ds.state_space is None else ds.state_space.shape
    if got != want or (state is not None and state != f.state_space.shape):
        raise SchemaError(f"{ds.root}: its metadata names task {task!r}, but its agents (observation shape, actions) "
                          f"{got} and state {state} are not that task's {want} and {f.state_space.shape}; "
                          "is it a dataset of another task?")  # fmt: skip


def check_config(spec: AlgorithmSpec, config: Any) -> Any:
    """The config for ``spec``: its defaults for None, else ``config`` itself if it is of the algorithm's class."""
    if config is None:
        return spec.config()
    if type(config) is not spec.config:
        raise SchemaError(f"algorithm {spec.name!r} takes a {spec.config.__name__}, got a {type(config).__name__}")
    return config


def config_from_json(cls: type, values: dict) -> Any:
    """Rebuild a config saved by ``to_json`` (JSON has lists where the dataclass has tuples)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SchemaError(f"{cls.__name__}: unknown fields {unknown} in the saved config")
    return cls(**{k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in values.items()})


def check_data(spec: AlgorithmSpec, data: DataInfo) -> None:
    """Raise if ``spec`` cannot learn from ``data``: no variant for its kind of actions, or no global state."""
    if (spec.discrete if data.discrete else spec.continuous) is None:
        kind = "discrete" if data.discrete else "continuous"
        others = [s.name for s in ALGORITHMS.values() if (s.discrete if data.discrete else s.continuous)]
        raise SchemaError(f"{data.root}: {spec.name} has no variant for {kind} actions; algorithms with one: {', '.join(others)}")
    if spec.needs_state and data.state_dim is None:
        stateless = [s.name for s in ALGORITHMS.values() if not s.needs_state]
        raise SchemaError(f"{data.root}: no global state stored; {spec.name} trains on one ({', '.join(stateless)} do not)")


def build(name: str, data: DataInfo, config: Any = None, device: Any = "cpu") -> Any:
    """The algorithm ``name`` for ``data`` with ``config`` (None: its defaults), its networks on ``device``."""
    spec = get(name)
    config = check_config(spec, config)
    check_data(spec, data)
    return (spec.discrete if data.discrete else spec.continuous)(data, config, device)
