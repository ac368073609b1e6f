"""Algorithm configurations: plain dataclasses (no torch import), saved with every run.

Each field's comment names the paper's symbol or equation; the defaults are the paper's
or its reference code's values (docs/algorithms.md), and the CLI shows them in --help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class CastBcqConfig:
    """CAST-BCQ hyperparameters; defaults are the paper's or its reference code's (docs/algorithms.md)."""

    vae_hidden: tuple[int, ...] = (750, 750)  # G_{w^i} encoder and decoder (Eq. 3)
    latent_scale: float = 2.0  # latent dim = latent_scale * action dim
    kl_weight: float = 0.5  # weight of D_KL in Eq. 3
    latent_clip: float = 0.5  # |z| bound when sampling the decoder (BCQ's; the reference's 0.05 was mistake 7)
    actor_hidden: tuple[int, ...] = (400, 300)  # perturbation actor xi_i
    phi: float = 0.05  # perturbation scale Phi (BCQ's; the reference's 0.001 was mistake 7)
    critic_hidden: tuple[int, ...] = (400, 300)  # joint critics Q(o, a; phi^k) and individual critics Q_i
    lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target networks
    lam: float = 0.9  # lambda of the soft clipped double Q (Eq. 10)
    clipped_double_q: bool = True  # ablation --no-clipped-double-q: one joint critic, Eq. 10 with lambda = 1
    n_target: int = 10  # n candidate joint actions in the target (Eq. 6)
    n_act: int = 100  # candidates per agent at execution
    subteams: int = 6  # M subteam samples (Eq. 8); all 2^(N-1) subteams once when M >= 2^(N-1)
    delta_weight: bool = False  # the reference code's clip(exp(Delta), 0, 10) weights on Eq. 9 (not in the paper)
    csaa: bool = True  # ablation --no-csaa: regress Q_i on the joint Q with the joint policy's teammates
    subteam_sampling: bool = True  # ablation --no-subteam: the empty subteam only

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class DiscreteConfig:
    """Discrete CAST-BCQ and I-BCQ (grid world, StarCraft-like maps); BCQ's discrete variant."""

    hidden: tuple[int, ...] = (64, 64)  # critics and behaviour classifiers
    lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    threshold: float = 0.3  # BCQ's tau: action a is allowed when G(a|o) / max_a' G(a'|o) >= threshold
    lam: float = 0.9  # Eq. 10 (CAST-BCQ's joint critic)
    clipped_double_q: bool = True  # ablation: one joint critic (Eq. 10 with lambda = 1)
    subteams: int = 10  # M (Eq. 8; the reference's discrete value)
    csaa: bool = True
    subteam_sampling: bool = True

    def to_json(self) -> dict:
        return asdict(self)
