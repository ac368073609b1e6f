"""The algorithms ``madata train`` knows: one table, name -> what it is and how to build it.

Every algorithm follows one interface on agent-major tensors (N agents, minibatch B):

* ``update(obs, action, reward, next_obs, terminated, state, next_state, generator=None)
  -> dict[str, float]`` (its losses by name): ``obs``/``next_obs`` [N, B, max obs dim]
  zero-padded, ``action`` [N, B, max act dim] (continuous) or int64 [N, B] (discrete, 0-based),
  ``reward``/``terminated`` [B], ``state``/``next_state`` [B, S] or None;
* ``act(obs [N, B, O], generator=None)`` -> [N, B, A] or int64 [N, B] (the generator argument
  only where acting is random);
* ``optimizers``: its optimizers by name (checkpoints save them under these names).

This module imports no torch: ``madata train --help`` lists the table without loading an
algorithm, and each builder imports its algorithm's module when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import madata
from madata.envs.registry import get_task, is_task
from madata.errors import SchemaError, UnknownNameError
from madata.spaces import Discrete
from madata_algos.configs import (
    BcqConfig,
    BcqDiscreteConfig,
    CastBcqConfig,
    CastBcqDiscreteConfig,
    Config,
    IcqConfig,
    IcqDiscreteConfig,
    MabcqConfig,
    MabcqDiscreteConfig,
    flag_name,
)


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
    action_masks: bool = False  # the data stores each agent's available actions (SMAX)
    standardize_state: bool = False  # the task stores a raw global state (SMAX): training standardizes it

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> DataInfo:
        """Rebuild what a run saved: enough to build its algorithm and evaluate it without the dataset."""
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except TypeError as e:
            raise SchemaError(f"the run's saved data description does not fit this madata version: {e}") from None


Builder = Callable[[DataInfo, Any, Any], Any]  # (data, config, device) -> algorithm


@dataclass(frozen=True)
class Variant:
    """An algorithm for one kind of action space: its config class and how to build it."""

    config: type[Config]
    build: Builder
    masks: bool = False  # learns and acts with the data's action masks (needed where the data stores them)


@dataclass(frozen=True)
class AlgorithmSpec:
    """One row of the table. ``continuous``/``discrete``: the variant for each kind of action space (None: not
    supported). ``decentralized``: agent i acts on o_i alone. ``needs_state``: trains on the global state."""

    name: str
    label: str  # in plots and tables
    summary: str  # one line, shown by `madata train --help`
    continuous: Variant | None
    discrete: Variant | None
    decentralized: bool
    needs_state: bool

    def variants(self) -> dict[str, Variant]:
        return {k: v for k, v in (("continuous", self.continuous), ("discrete", self.discrete)) if v is not None}

    def variant(self, discrete: bool, where: str = "") -> Variant:
        kind = "discrete" if discrete else "continuous"
        v = self.discrete if discrete else self.continuous
        if v is None:
            others = [s.name for s in ALGORITHMS.values() if (s.discrete if discrete else s.continuous)]
            raise SchemaError(
                f"{where}{': ' if where else ''}{self.name} has no variant for {kind} actions; "
                f"algorithms with one: {', '.join(others)}"
            )
        return v


# ---------------------------------------------------------------------------- builders


def _cast_bcq(d: DataInfo, cfg: CastBcqConfig, device):
    from madata_algos.cast_bcq import CastBcq

    return CastBcq(list(d.obs_dims), list(d.act_dims), d.state_dim, list(d.max_action), cfg, device)


def _cast_bcq_discrete(d: DataInfo, cfg: CastBcqDiscreteConfig, device):
    from madata_algos.cast_bcq_discrete import CastBcqDiscrete

    if d.default_action is None:
        raise SchemaError(f"{d.root}: discrete CAST-BCQ needs env.default_action (the no-op) in the dataset's metadata")
    try:
        return CastBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, d.state_dim, d.default_action, cfg, device)
    except SchemaError as e:  # too many joint actions to enumerate: name the data
        raise SchemaError(f"{d.root}: {e}") from None


def _bcq(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.bcq import JointBcq

    return JointBcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _bcq_discrete(d: DataInfo, cfg: BcqDiscreteConfig, device):
    from madata_algos.bcq import JointBcqDiscrete

    return JointBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, cfg, device)


def _ibcq(d: DataInfo, cfg: BcqConfig, device):
    from madata_algos.ibcq import IndependentBcq

    return IndependentBcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _ibcq_discrete(d: DataInfo, cfg: BcqDiscreteConfig, device):
    from madata_algos.ibcq import IndependentBcqDiscrete

    return IndependentBcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, cfg, device)


def _mabcq(d: DataInfo, cfg: MabcqConfig, device):
    from madata_algos.mabcq import Mabcq

    return Mabcq(list(d.obs_dims), list(d.act_dims), list(d.max_action), cfg, device)


def _mabcq_discrete(d: DataInfo, cfg: MabcqDiscreteConfig, device):
    from madata_algos.mabcq import MabcqDiscrete

    return MabcqDiscrete(len(d.obs_dims), d.obs_dims[0], d.n_actions, cfg, device)


def _icq(d: DataInfo, cfg: IcqConfig, device):
    from madata_algos.icq import IcqMa

    return IcqMa(list(d.obs_dims), list(d.act_dims), d.state_dim, list(d.max_action), cfg, device)


def _icq_discrete(d: DataInfo, cfg: IcqDiscreteConfig, device):
    from madata_algos.icq import IcqMaDiscrete

    return IcqMaDiscrete(list(d.obs_dims), d.state_dim, d.n_actions, cfg, device)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    s.name: s
    for s in (
        AlgorithmSpec(
            "cast-bcq",
            "CAST-BCQ",
            "CAST-BCQ: counterfactual SAA with subteam masking; decentralized execution, needs a global state.",
            Variant(CastBcqConfig, _cast_bcq),
            Variant(CastBcqDiscreteConfig, _cast_bcq_discrete, masks=True),
            decentralized=True,
            needs_state=True,
        ),
        AlgorithmSpec(
            "bcq",
            "BCQ",
            "Centralized BCQ on the joint observation and joint action; execution needs every agent's observation.",
            Variant(BcqConfig, _bcq),
            Variant(BcqDiscreteConfig, _bcq_discrete),
            decentralized=False,
            needs_state=False,
        ),
        AlgorithmSpec(
            "ibcq",
            "I-BCQ",
            "Independent BCQ: each agent runs BCQ on its own observations and actions; decentralized.",
            Variant(BcqConfig, _ibcq),
            Variant(BcqDiscreteConfig, _ibcq_discrete, masks=True),
            decentralized=True,
            needs_state=False,
        ),
        AlgorithmSpec(
            "mabcq",
            "MABCQ",
            "MABCQ (Jiang & Lu 2021): I-BCQ with value-deviation and transition-normalization weights; decentralized.",
            Variant(MabcqConfig, _mabcq),
            Variant(MabcqDiscreteConfig, _mabcq_discrete, masks=True),
            decentralized=True,
            needs_state=False,
        ),
        AlgorithmSpec(
            "icq-ma",
            "ICQ-MA",
            "ICQ-MA (Yang et al. 2021): implicit constraint Q-learning, mixed value Q_tot = sum_i w_i(s) Q_i + b(s); decentralized, needs a global state.",
            Variant(IcqConfig, _icq),
            Variant(IcqDiscreteConfig, _icq_discrete, masks=True),
            decentralized=True,
            needs_state=True,
        ),
    )
}


def names() -> list[str]:
    return list(ALGORITHMS)


def get(name: str) -> AlgorithmSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UnknownNameError(f"unknown algorithm {name!r}; available: {', '.join(ALGORITHMS)}") from None


# ---------------------------------------------------------------------------- data and configs


def describe(ds: madata.Dataset, need_task: bool = True) -> DataInfo:
    """Read and check what the algorithms need from ``ds``: its task, spaces and state.

    ``need_task``: the run evaluates its policy, so the dataset must name a known task whose
    environment has the dataset's agents and spaces. Without it, ``task`` is the dataset's
    env id when it names a known task, else None.
    """
    task = ds.meta.env.get("id")
    if need_task:
        if task is None:
            raise SchemaError(
                f"{ds.root}: metadata names no environment (env.id), so the policy cannot be evaluated; "
                "train without evaluation (--eval-episodes 0) or give the dataset an env id"
            )
        _check_matches_task(ds, task)
    elif task is not None and not is_task(task):
        task = None
    obs_dims = []
    for a in ds.agents:
        if len(a.observation_space.shape) != 1:
            raise SchemaError(
                f"{ds.root}: agent {a.id} has observation shape {a.observation_space.shape}; "
                "the algorithms take vectors"
            )
        obs_dims.append(int(a.observation_space.shape[0]))
    kinds = {isinstance(a.action_space, Discrete) for a in ds.agents}
    if len(kinds) > 1:
        raise SchemaError(f"{ds.root}: agents mix discrete and continuous actions; the algorithms take one kind")
    state_dim = None if ds.state_space is None else int(np.prod(ds.state_space.shape))
    raw = state_dim is not None and task is not None and get_task(task).family.raw_state
    common = dict(
        root=str(ds.root), task=task, agent_ids=tuple(ds.agent_ids), obs_dims=tuple(obs_dims), state_dim=state_dim,
        standardize_state=raw,
    )  # fmt: skip
    if kinds == {True}:
        spaces = [a.action_space for a in ds.agents]
        if len({s.n for s in spaces}) > 1 or len(set(obs_dims)) > 1:
            raise SchemaError(
                f"{ds.root}: the discrete algorithms need agents of equal observation and action sizes, "
                f"got observations {obs_dims} and {[s.n for s in spaces]} actions"
            )
        default = ds.meta.env.get("default_action")
        return DataInfo(
            **common,
            discrete=True,
            act_dims=(1,) * len(spaces),
            max_action=(),
            n_actions=int(spaces[0].n),
            action_starts=tuple(int(s.start) for s in spaces),
            default_action=None if default is None else int(default) - int(spaces[0].start),
            action_masks=ds.spec.action_masks,
        )
    boxes = [a.action_space for a in ds.agents]
    return DataInfo(
        **common,
        discrete=False,
        act_dims=tuple(int(b.shape[0]) for b in boxes),
        max_action=tuple(float(max(np.max(np.abs(b.low)), np.max(np.abs(b.high)))) for b in boxes),
        n_actions=None,
        action_starts=(0,) * len(boxes),
        default_action=None,
    )


def _check_matches_task(ds: madata.Dataset, task: str) -> None:
    """The policy is evaluated in ``task``'s environment: the dataset's agents and spaces must be that
    environment's (a dataset relabelled with another task's id would otherwise fail after training)."""
    spec = get_task(task)
    agents, state_space = spec.family.spec(spec)

    def shapes(agents):
        return {
            a.id: (a.observation_space.shape, getattr(a.action_space, "n", None) or a.action_space.shape)
            for a in agents
        }

    got, want = shapes(ds.agents), shapes(agents)
    state = None if ds.state_space is None else ds.state_space.shape
    if got != want or (state is not None and state != state_space.shape):
        raise SchemaError(
            f"{ds.root}: its metadata names task {task!r}, but its agents (observation shape, actions) "
            f"{got} and state {state} are not that task's {want} and {state_space.shape}; "
            "is it a dataset of another task?"
        )


def check_config(spec: AlgorithmSpec, data: DataInfo, config: Any) -> Config:
    """The config for ``spec`` on ``data``: the variant's defaults for None, else ``config`` itself if it is of
    that variant's class (a continuous config is refused for discrete data and the other way round)."""
    variant = spec.variant(data.discrete, data.root)
    if config is None:
        return variant.config()
    if type(config) is not variant.config:
        kind = "discrete" if data.discrete else "continuous"
        raise SchemaError(
            f"{data.root}: {spec.name} on {kind} actions takes a {variant.config.__name__}, "
            f"got a {type(config).__name__}"
        )
    return config


def config_from_options(spec: AlgorithmSpec, data: DataInfo, given: dict[str, Any]) -> Config:
    """The variant's config with the options a user set (field name -> value); an option of another
    variant only is refused, naming it and the options that apply."""
    variant = spec.variant(data.discrete, data.root)
    fields = {f.name: f for f in dataclasses.fields(variant.config)}
    foreign = [k for k in given if k not in fields]
    if foreign:
        kind = "discrete" if data.discrete else "continuous"
        others = [f for v in spec.variants().values() for f in dataclasses.fields(v.config) if f.name in foreign]
        names = sorted({flag_name(f) for f in others})
        raise SchemaError(
            f"{data.root}: {' and '.join(names)} {'does' if len(names) == 1 else 'do'} not apply to "
            f"{spec.name} on {kind} actions; its options: {', '.join(flag_name(f) for f in fields.values())}"
        )
    return variant.config(**given)


def config_from_json(spec: AlgorithmSpec, data: DataInfo, values: dict) -> Config:
    """Rebuild the config a run saved (``to_json``) for ``spec`` on ``data``."""
    return spec.variant(data.discrete, data.root).config.from_json(values)


def check_data(spec: AlgorithmSpec, data: DataInfo) -> None:
    """Raise if ``spec`` cannot learn from ``data``: no variant for its kind of actions, no global state,
    or action masks it does not use."""
    variant = spec.variant(data.discrete, data.root)
    if data.action_masks and not variant.masks:
        masked = [s.name for s in ALGORITHMS.values() if s.discrete is not None and s.discrete.masks]
        raise SchemaError(
            f"{data.root}: the data stores action masks (available actions) and {spec.name} does not use them yet; "
            f"{', '.join(masked)} do"
        )
    if spec.needs_state and data.state_dim is None:
        stateless = [s.name for s in ALGORITHMS.values() if not s.needs_state]
        raise SchemaError(
            f"{data.root}: no global state stored; {spec.name} trains on one ({', '.join(stateless)} do not)"
        )


def build(name: str, data: DataInfo, config: Any = None, device: Any = "cpu") -> Any:
    """The algorithm ``name`` for ``data`` with ``config`` (None: its defaults), its networks on ``device``."""
    spec = get(name)
    config = check_config(spec, data, config)
    check_data(spec, data)
    return spec.variant(data.discrete).build(data, config, device)
