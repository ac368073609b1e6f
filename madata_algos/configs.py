"""Algorithm configurations: one dataclass per algorithm and kind of action, saved with every run.

Each field is declared with :func:`option`: its default (the paper's or its reference
code's value unless the help says otherwise), its help text (the paper's symbol or
equation; ``madata train --help`` shows it) and its valid range. :class:`Config` checks
every range when a config is built, so a config that exists is one that can run, and
``to_json`` / ``from_json`` round-trip it. No torch import here: the CLI reads these
classes without loading an algorithm.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from madata.errors import SchemaError


def option(
    default: Any,
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    flag: str | None = None,
) -> Any:
    """A config field: its default, its help ``doc`` (shown by the CLI), its range (``gt``, ``ge``, ``lt``, ``le``)
    and, where it differs from the field's name, its command-line name ``flag``. Tuples are hidden layer sizes,
    each >= 1 (``()``: a linear map)."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return field(default=default, metadata={"help": doc, "bounds": bounds, "flag": flag})


_CHECKS = {
    "gt": (lambda v, b: v > b, ">"),
    "ge": (lambda v, b: v >= b, ">="),
    "lt": (lambda v, b: v < b, "<"),
    "le": (lambda v, b: v <= b, "<="),
}


def flag_name(f: dataclasses.Field) -> str:
    """The command-line option of a config field: ``--vae-hidden`` for ``vae_hidden``."""
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


@dataclass
class Config:
    """Base of every algorithm's config: range checks and JSON."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, kind, where = (
                getattr(self, f.name),
                hints[f.name],
                f"{type(self).__name__}.{f.name} ({flag_name(f)})",
            )
            if typing.get_origin(kind) is tuple:
                if not isinstance(value, tuple) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
                ):
                    raise SchemaError(
                        f"{where}: expected hidden layer sizes, integers >= 1 such as (256, 256), got {value!r}"
                    )
                continue
            if kind is bool:
                if not isinstance(value, bool):
                    raise SchemaError(f"{where}: expected true or false, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
                raise SchemaError(f"{where}: expected {kind.__name__}, got {value!r}")
            if not math.isfinite(value):
                raise SchemaError(f"{where}: expected a finite number, got {value!r}")
            for key, bound in f.metadata.get("bounds", {}).items():
                check, sign = _CHECKS[key]
                if not check(value, bound):
                    raise SchemaError(f"{where}: must be {sign} {bound}, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Config:
        """Rebuild a config saved by :meth:`to_json` (JSON has lists where the dataclass has tuples)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SchemaError(f"{cls.__name__}: unknown fields {unknown} in the saved config")
        return cls(
            **{
                k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v
                for k, v in values.items()
            }
        )

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", f.name) for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------- options shared by several configs


def _lr() -> Any:
    return option(1e-3, "Adam learning rate of every network", gt=0, le=1)


def _gamma() -> Any:
    return option(0.99, "discount gamma", ge=0, lt=1)


def _tau() -> Any:
    return option(0.005, "Polyak rate of the target networks", gt=0, le=1)


@dataclass
class BcqConfig(Config):
    """BCQ (Fujimoto et al., 2019) with continuous actions, for ``bcq`` (one BCQ on the joint observation and
    joint action) and ``ibcq`` (one BCQ per agent on o_i, a_i): the BCQ paper's and reference code's values.

    A conditional VAE G(o) of the data's actions (reconstruction + kl_weight KL), a perturbation actor
    xi(o, a) in [-phi, phi] * max_action, twin critics on the target
    y = r + gamma (1 - d) max_j [lam min_k Q'_k(o', a_j) + (1 - lam) max_k Q'_k(o', a_j)] over n_target
    candidates a_j = a~_j + xi'(o', a~_j), a~_j ~ G(o'); acting takes argmax_j Q_1(o, a_j) over n_act candidates.
    """

    vae_hidden: tuple[int, ...] = option((750, 750), "hidden sizes of the VAE G, encoder and decoder")
    latent_scale: float = option(2.0, "latent dim = latent_scale * action dim", gt=0, le=1000)
    kl_weight: float = option(0.5, "weight of D_KL(N(mu, sigma) || N(0, 1)) in the VAE loss", ge=0)
    latent_clip: float = option(0.5, "|z| bound when sampling the decoder", gt=0)
    actor_hidden: tuple[int, ...] = option((400, 300), "hidden sizes of the perturbation actor xi")
    phi: float = option(0.05, "perturbation scale Phi", ge=0, le=1)
    critic_hidden: tuple[int, ...] = option((400, 300), "hidden sizes of the twin critics Q_1, Q_2")
    lr: float = _lr()
    gamma: float = _gamma()
    tau: float = _tau()
    lam: float = option(0.75, "lambda of the soft clipped double-Q target", ge=0, le=1)
    n_target: int = option(10, "candidate actions n in the target", ge=1)
    n_act: int = option(100, "candidate actions at execution (BCQ's reference code)", ge=1)


@dataclass
class BcqDiscreteConfig(Config):
    """BCQ's discrete variant (Fujimoto et al., 2019b), for ``bcq`` and ``ibcq`` on discrete actions.

    A behaviour classifier G(a|o); a is allowed when G(a|o) / max_a' G(a'|o) >= threshold; Huber loss on
    y = r + gamma (1 - d) Q'(o', argmax over allowed a' of Q(o', a')).
    """

    hidden: tuple[int, ...] = option((64, 64), "hidden sizes of Q and of the behaviour classifier G")
    lr: float = _lr()
    gamma: float = _gamma()
    tau: float = _tau()
    threshold: float = option(0.3, "BCQ's tau: a is allowed when G(a|o) / max_a' G(a'|o) >= threshold", ge=0, le=1)


@dataclass
class CastBcqConfig(BcqConfig):
    """CAST-BCQ with continuous actions: each agent's VAE G_{w^i}, perturbation actor xi_i and individual
    critics Q_i are BCQ's; the twin joint critic is trained by Eq. 6 (combined by Eq. 10) and each Q_i is
    regressed on the counterfactual contribution Delta_i (Eqs. 8-9)."""

    vae_hidden: tuple[int, ...] = option((750, 750), "hidden sizes of the VAEs G_{w^i}, encoder and decoder (Eq. 3)")
    latent_clip: float = option(
        0.5, "|z| bound when sampling the decoder (BCQ's; the reference's 0.05 was mistake 7)", gt=0
    )
    actor_hidden: tuple[int, ...] = option((400, 300), "hidden sizes of the perturbation actors xi_i")
    phi: float = option(0.05, "perturbation scale Phi (BCQ's; the reference's 0.001 was mistake 7)", ge=0, le=1)
    critic_hidden: tuple[int, ...] = option((400, 300), "hidden sizes of the joint critics Q(o, a; phi^k) and the Q_i")
    lam: float = option(0.9, "lambda of the soft clipped double Q (Eq. 10)", ge=0, le=1)
    n_target: int = option(10, "n candidate joint actions in the target (Eq. 6)", ge=1)
    n_act: int = option(100, "candidates per agent at execution", ge=1)
    subteams: int = option(6, "M subteam samples (Eq. 8); all 2^(N-1) subteams once when M >= 2^(N-1)", ge=1)
    delta_weight: bool = option(
        False, "the reference code's clip(exp(Delta), 0, 10) weights on Eq. 9 (not in the paper)"
    )
    csaa: bool = option(True, "ablation --no-csaa: regress Q_i on the joint Q with the joint policy's teammates")
    subteam_sampling: bool = option(True, "ablation --no-subteam: the empty subteam only", flag="subteam")
    clipped_double_q: bool = option(True, "ablation --no-clipped-double-q: one joint critic, Eq. 10 with lambda = 1")
    teammate_candidates: int = option(
        0,
        "Eq. 7-8's teammates: 0 = one VAE sample + perturbation each (Table 2's runs); k >= 1 = the joint "
        "policy's action, the best of k candidate joint actions under the current joint critic (Sec. 3.2's pi)",
        ge=0,
    )


@dataclass
class CastBcqDiscreteConfig(BcqDiscreteConfig):
    """CAST-BCQ with discrete actions (grid world, StarCraft-like maps): behaviour classifiers G_i, a twin
    joint critic over one-hot joint actions trained by Eq. 6 over the allowed joint actions, and individual
    critics Q_i(o_i, .) regressed on Delta_i with masked teammates taking the no-op (Eqs. 8-9)."""

    hidden: tuple[int, ...] = option((64, 64), "hidden sizes of the critics and the behaviour classifiers")
    lam: float = option(0.9, "lambda of the soft clipped double Q (Eq. 10)", ge=0, le=1)
    subteams: int = option(10, "M subteam samples (Eq. 8; the reference's discrete value)", ge=1)
    csaa: bool = option(True, "ablation --no-csaa: regress Q_i on the joint Q with the joint policy's teammates")
    subteam_sampling: bool = option(True, "ablation --no-subteam: the empty subteam only", flag="subteam")
    clipped_double_q: bool = option(True, "ablation --no-clipped-double-q: one joint critic, Eq. 10 with lambda = 1")
    joint_candidates: int = option(
        0,
        "joint actions Eq. 6's max and Eq. 8's joint policy range over: 0 every allowed one (K^N, exact); n the "
        "agents' greedy one and n - 1 drawn from their classifiers (SMAX: K^N is too many)",
        ge=0,
    )


@dataclass
class TransitionWeightOptions(Config):
    """MABCQ's weights lambda = w_vd * w_tn on each agent's transitions (docs/algorithms.md); every value is our choice."""

    value_deviation: bool = option(True, "weigh by the value deviation w_vd (--no-value-deviation: w_vd = 1)")
    transition_normalization: bool = option(True, "weigh by the transition normalization w_tn (--no-...: w_tn = 1)")
    transition_hidden: tuple[int, ...] = option((256, 256), "hidden sizes of the transition VAE T_i")
    transition_latent_scale: float = option(1.0, "latent dim of T_i = this * observation dim", gt=0, le=1000)
    n_next: int = option(5, "outcomes drawn from T_i for the expectations in w_vd and w_tn", ge=1)
    value_candidates: int = option(2, "candidate actions in the values V(o') that w_vd compares (continuous)", ge=1)
    value_margin: float = option(0.1, "w_vd's values shifted to be > 0: V - min + margin * (max - min)", gt=0)
    weight_min: float = option(0.1, "lower clip of lambda = w_vd * w_tn", ge=0)
    weight_max: float = option(10.0, "upper clip of lambda", gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_min > self.weight_max:
            raise SchemaError(
                f"{type(self).__name__}: weight_min (--weight-min) must be <= weight_max (--weight-max), "
                f"got {self.weight_min} > {self.weight_max}"
            )


@dataclass
class MabcqConfig(TransitionWeightOptions, BcqConfig):
    """MABCQ (Jiang & Lu, 2021) with continuous actions: I-BCQ whose critic loss weighs each agent's
    transition (o_i, a_i, r, o'_i) by lambda = w_vd * w_tn, clipped to [weight_min, weight_max]."""


@dataclass
class MabcqDiscreteConfig(TransitionWeightOptions, BcqDiscreteConfig):
    """MABCQ with discrete actions: discrete I-BCQ whose Huber TD loss is weighted by lambda = w_vd * w_tn."""


@dataclass
class IcqDiscreteConfig(Config):
    """ICQ-MA (Yang et al., NeurIPS 2021) with discrete actions; the losses are in ``madata_algos/icq.py``.

    alpha: the ICQ operator's temperature, implicit-constraint weights
    rho = B * softmax_batch((Q'_tot - V(s)) / alpha) in the next-state value's target V(s) + rho (Q'_tot - V(s))
    (state_baseline; without it, rho Q'_tot with rho = B * softmax_batch(Q'_tot / alpha), as in the reference
    code). beta: the policy's temperature, weights k_i(s) B softmax_batch(A_i / beta) on
    log pi_i(a_i | o_i), k_i the mixer's normalized weights. Defaults: the authors' ICQ-MA code (SMAC), where
    the critic temperature is also named beta.
    """

    actor_hidden: tuple[int, ...] = option(
        (64, 64), "hidden sizes of pi_i(a_i | o_i) (the reference's agents: a 64-wide GRU)"
    )
    critic_hidden: tuple[int, ...] = option((256, 256), "hidden sizes of Q_i(o_i, a_i) and V(s) (reference critic)")
    mixer_embed: int = option(
        32, "hypernetwork width of Q_tot = sum_i w_i(s) Q_i + b(s) (reference mixing_embed_dim)", ge=1
    )
    actor_lr: float = option(5e-4, "Adam learning rate of the policies (reference lr)", gt=0, le=1)
    critic_lr: float = option(1e-4, "Adam learning rate of Q_i, the mixer and V(s) (reference critic_lr)", gt=0, le=1)
    gamma: float = _gamma()
    tau: float = option(
        0.005, "Polyak rate of the target critics and mixer (single-agent ICQ's polyak 0.995)", gt=0, le=1
    )
    alpha: float = option(1000.0, "critic temperature of the ICQ operator (reference: 1000)", gt=0)
    beta: float = option(0.1, "actor temperature (reference, SMAC: 0.1)", gt=0)
    state_baseline: bool = option(
        True,
        "estimate the ICQ operator relative to each state's value: target V(s) + rho (Q'_tot - V(s)), "
        "rho = B softmax_batch((Q'_tot - V(s)) / alpha) (our fix); --no-state-baseline: rho Q'_tot with "
        "rho = B softmax_batch(Q'_tot / alpha), the reference's, which diverges where values spread across "
        "states by more than alpha",
    )


@dataclass
class IcqConfig(IcqDiscreteConfig):
    """ICQ-MA with continuous actions: Gaussian policies pi_i with a tanh-bounded mean and a state-independent
    std (the single-agent ICQ code's actor); the baseline E_{a ~ pi_i} Q_i(o_i, a) is a sample mean."""

    beta: float = option(100.0, "actor temperature (the only public MaMuJoCo ICQ, in ComaDICE's code: 100)", gt=0)
    baseline_samples: int = option(10, "actions drawn from pi_i for the baseline E_{a ~ pi_i} Q_i (our choice)", ge=1)
    log_std_min: float = option(-6.0, "lower bound of pi_i's state-independent log std (single-agent ICQ code)")
    log_std_max: float = option(0.0, "upper bound of the log std (single-agent ICQ code)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.log_std_min >= self.log_std_max:
            raise SchemaError(
                f"IcqConfig: log_std_min (--log-std-min) must be < log_std_max (--log-std-max), "
                f"got {self.log_std_min} >= {self.log_std_max}"
            )
