"""Every algorithm's configs: ranges enforced field by field, JSON round trips, and a run's recorded
config rebuilds exactly the networks it trained."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from madata.errors import SchemaError
from madata_algos import registry
from madata_algos.configs import Config, flag_name

CONFIGS = sorted(
    {v.config for s in registry.ALGORITHMS.values() for v in s.variants().values()}, key=lambda c: c.__name__
)


def _outside(f: dataclasses.Field, kind) -> list:
    """Values just outside a field's declared range, and values of the wrong type."""
    bounds = f.metadata.get("bounds", {})
    bad = []
    if "gt" in bounds:
        bad.append(bounds["gt"])
    if "ge" in bounds:
        bad.append(bounds["ge"] - (1 if kind is int else 1e-3))
    if "lt" in bounds:
        bad.append(bounds["lt"])
    if "le" in bounds:
        bad.append(bounds["le"] + (1 if kind is int else 1e-3))
    if kind is int:
        bad += [1.5, "3", True]
    elif kind is float:
        bad += [math.nan, math.inf, "0.1", None]
    elif kind is bool:
        bad += [1, "yes", None]
    elif typing.get_origin(kind) is tuple:
        bad += [(0,), (64, -1), [64, 64], (2.5,), "64,64"]
    return bad


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_rejects_values_outside_its_range(cls):
    hints = typing.get_type_hints(cls)
    cls()  # the defaults are valid
    checked = 0
    for f in dataclasses.fields(cls):
        for value in _outside(f, hints[f.name]):
            with pytest.raises(SchemaError, match=rf"{cls.__name__}\.{f.name} \({flag_name(f)}\)"):
                cls(**{f.name: value})
            checked += 1
    assert checked >= len(dataclasses.fields(cls))


def test_every_numeric_field_has_a_range_where_it_has_a_natural_one():
    """Learning rates, discounts, Polyak rates, temperatures, counts and sizes all declare bounds."""
    natural = (
        "lr",
        "gamma",
        "tau",
        "lam",
        "phi",
        "alpha",
        "beta",
        "threshold",
        "n_",
        "subteams",
        "samples",
        "scale",
        "kl_weight",
        "latent_clip",
        "margin",
        "embed",
        "weight_",
    )
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float) and any(k in f.name for k in natural):
                assert f.metadata.get("bounds"), f"{cls.__name__}.{f.name} declares no range"


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_json_round_trip(cls):
    cfg = cls()
    assert cls.from_json(cfg.to_json()) == cfg
    with pytest.raises(SchemaError, match="unknown fields"):
        cls.from_json({**cfg.to_json(), "bogus": 1})


def test_cross_field_checks():
    from madata_algos.configs import IcqConfig, MabcqConfig

    with pytest.raises(SchemaError, match="weight_min"):
        MabcqConfig(weight_min=2.0, weight_max=1.0)
    with pytest.raises(SchemaError, match="log_std_min"):
        IcqConfig(log_std_min=0.0, log_std_max=-1.0)


def test_configs_are_plain_dataclasses_of_one_base():
    for cls in CONFIGS:
        assert issubclass(cls, Config) and dataclasses.is_dataclass(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def _data(discrete: bool) -> registry.DataInfo:
    if discrete:
        return registry.DataInfo(
            root="d",
            task=None,
            agent_ids=("a0", "a1"),
            obs_dims=(3, 3),
            discrete=True,
            act_dims=(1, 1),
            max_action=(),
            n_actions=3,
            action_starts=(0, 0),
            default_action=1,
            state_dim=4,
        )
    return registry.DataInfo(
        root="c",
        task=None,
        agent_ids=("a0", "a1", "a2"),
        obs_dims=(3, 4, 3),
        discrete=False,
        act_dims=(1, 2, 1),
        max_action=(1.0, 1.0, 1.0),
        n_actions=None,
        action_starts=(0, 0, 0),
        default_action=None,
        state_dim=5,
    )


@pytest.mark.parametrize("name", registry.names())
@pytest.mark.parametrize("discrete", [False, True])
def test_recorded_config_rebuilds_the_networks_it_trained(name, discrete):
    """A non-default config is recorded as JSON; rebuilding from that JSON gives the same parameter shapes,
    and they differ from the defaults' (the options were used, not dropped)."""
    spec = registry.get(name)
    data = _data(discrete)
    cls = spec.variant(discrete).config
    sizes = {f.name: (5, 7) for f in dataclasses.fields(cls) if f.name.endswith("hidden")}
    cfg = cls(**sizes)
    algo = registry.build(name, data, cfg)
    again = registry.build(name, data, registry.config_from_json(spec, data, cfg.to_json()))
    shapes = {k: tuple(v.shape) for k, v in algo.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in again.state_dict().items()}
    default = {k: tuple(v.shape) for k, v in registry.build(name, data, None).state_dict().items()}
    assert shapes != default
