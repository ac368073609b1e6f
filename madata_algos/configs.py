"""Algorithm configurations: plain dataclasses (no torch import), saved with every run.

Each field's comment names the paper's symbol or equation; the defaults are the paper's
or its reference code's values (docs/algorithms.md), and the CLI shows them in --help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from madata.errors import SchemaError


def check_ranges(config, **ranges: tuple[float, float]) -> None:
    """Raise a SchemaError naming the first field outside its closed range ``(lo, hi)``,
    and any hidden-size tuple that is empty or holds a size below 1."""
    for name, (lo, hi) in ranges.items():
        value = getattr(config, name)
        if not lo <= value <= hi:
            raise SchemaError(f"{type(config).__name__}.{name} (--{name.replace('_', '-')}) must be in [{lo}, {hi}], got {value}")
    for name, value in vars(config).items():
        if name.endswith("hidden") and (not value or min(value) < 1):
            raise SchemaError(f"{type(config).__name__}.{name} (--{name.replace('_', '-')}) needs sizes >= 1, got {value}")



@dataclass
class CastBcqConfig:
    """CAST-BCQ hyperparameters; defaults are the paper's or its reference code's (docs/algorithms.md)."""

    vae_hidden: tuple[int, ...] = (750, 750)  # hidden sizes of the VAEs G_{w^i}, encoder and decoder (Eq. 3)
    latent_scale: float = 2.0  # latent dim = latent_scale * action dim
    kl_weight: float = 0.5  # weight of D_KL in Eq. 3
    latent_clip: float = 0.5  # |z| bound when sampling the decoder (BCQ's; the reference's 0.05 was mistake 7)
    actor_hidden: tuple[int, ...] = (400, 300)  # hidden sizes of the perturbation actors xi_i
    phi: float = 0.05  # perturbation scale Phi (BCQ's; the reference's 0.001 was mistake 7)
    critic_hidden: tuple[int, ...] = (400, 300)  # hidden sizes of the joint critics Q(o, a; phi^k) and the Q_i
    lr: float = 1e-3  # Adam learning rate of every network
    gamma: float = 0.99  # discount gamma
    tau: float = 0.005  # Polyak rate of the target networks
    lam: float = 0.9  # lambda of the soft clipped double Q (Eq. 10)
    clipped_double_q: bool = True  # ablation --no-clipped-double-q: one joint critic, Eq. 10 with lambda = 1
    n_target: int = 10  # n candidate joint actions in the target (Eq. 6)
    n_act: int = 100  # candidates per agent at execution
    subteams: int = 6  # M subteam samples (Eq. 8); all 2^(N-1) subteams once when M >= 2^(N-1)
    delta_weight: bool = False  # the reference code's clip(exp(Delta), 0, 10) weights on Eq. 9 (not in the paper)
    csaa: bool = True  # ablation --no-csaa: regress Q_i on the joint Q with the joint policy's teammates
    subteam_sampling: bool = True  # ablation --no-subteam: the empty subteam only

    def __post_init__(self) -> None:
        check_ranges(self, latent_scale=(1e-9, 1e3), kl_weight=(0, 1e6), latent_clip=(1e-9, 1e3), phi=(0, 1),
                     lr=(1e-12, 1), gamma=(0, 1), tau=(1e-12, 1), lam=(0, 1), n_target=(1, 1e6), n_act=(1, 1e6),
                     subteams=(1, 1e6))  # fmt: skip

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

    def __post_init__(self) -> None:
        check_ranges(self, lr=(1e-12, 1), gamma=(0, 1), tau=(1e-12, 1), threshold=(0, 1), lam=(0, 1), subteams=(1, 1e6))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BcqConfig:
    """BCQ (Fujimoto et al., 2019), for ``bcq`` (one BCQ on the joint observation and joint action)
    and ``ibcq`` (one BCQ per agent on o_i, a_i): the BCQ paper's and its reference code's values.

    Continuous actions: a conditional VAE G(o) of the data's actions (reconstruction + kl_weight KL),
    a perturbation actor xi(o, a) in [-phi, phi] * max_action, twin critics on the target
    y = r + gamma (1 - d) max_j [lam min_k Q'_k(o', a_j) + (1 - lam) max_k Q'_k(o', a_j)] over
    n_target candidates a_j = a~_j + xi'(o', a~_j), a~_j ~ G(o'); acting takes argmax_j Q_1(o, a_j)
    over n_act candidates. Discrete actions (BCQ's discrete variant): a behaviour classifier G(a|o),
    a is allowed when G(a|o) / max_a' G(a'|o) >= threshold, Huber loss on
    y = r + gamma (1 - d) Q'(o', argmax over allowed a' of Q(o', a')).
    """

    vae_hidden: tuple[int, ...] = (750, 750)  # hidden sizes of the VAE G, encoder and decoder
    latent_scale: float = 2.0  # latent dim = latent_scale * action dim
    kl_weight: float = 0.5  # weight of D_KL(N(mu, sigma) || N(0, 1)) in the VAE loss
    latent_clip: float = 0.5  # |z| bound when sampling the decoder
    actor_hidden: tuple[int, ...] = (400, 300)  # hidden sizes of the perturbation actor xi
    phi: float = 0.05  # perturbation scale Phi
    critic_hidden: tuple[int, ...] = (400, 300)  # hidden sizes of the twin critics Q_1, Q_2
    lr: float = 1e-3  # Adam learning rate of every network
    gamma: float = 0.99  # discount gamma
    tau: float = 0.005  # Polyak rate of the target networks
    lam: float = 0.75  # lambda of the soft clipped double-Q target
    n_target: int = 10  # candidate actions n in the target
    n_act: int = 100  # candidate actions at execution (BCQ's reference code)
    discrete_hidden: tuple[int, ...] = (64, 64)  # discrete actions: hidden sizes of Q and of the classifier G
    threshold: float = 0.3  # discrete actions: a is allowed when G(a|o) / max_a' G(a'|o) >= threshold

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class MabcqConfig(BcqConfig):
    """MABCQ (Jiang & Lu, 2021): I-BCQ whose critic loss weighs each agent's transition
    (o_i, a_i, r, o'_i) by lambda = w_vd * w_tn, clipped to [weight_min, weight_max] (docs/algorithms.md).

    T_i is a conditional VAE of the agent's outcome (r, d, o'_i) given (o_i, a_i); n_next outcomes
    drawn from it give the expectations. Value deviation: w_vd = V+(y) / E[V+(y'')], y the outcome's
    value r + gamma (1 - d) V(o'), V+ its shift to positive values (value_margin). Transition
    normalization: w_tn = exp(E_{p_i}[log p_i]) / p_i(o'|o_i, a_i), log p_i the ELBO of T_i, 1 at the minibatch's median.
    """

    value_deviation: bool = True  # weigh by the value deviation w_vd (--no-value-deviation: w_vd = 1)
    transition_normalization: bool = True  # weigh by the transition normalization w_tn (--no-...: w_tn = 1)
    transition_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of the transition VAE T_i (our choice)
    transition_latent_scale: float = 1.0  # latent dim of T_i = this * observation dim (our choice)
    n_next: int = 5  # outcomes drawn from T_i for the expectations in w_vd and w_tn (our choice)
    value_margin: float = 0.1  # w_vd's values shifted to be > 0: V - min + margin * (max - min) (our choice)
    weight_min: float = 0.1  # lower clip of lambda = w_vd * w_tn (our choice)
    weight_max: float = 10.0  # upper clip of lambda (our choice)


@dataclass
class IcqConfig:
    """ICQ-MA hyperparameters (Yang et al., NeurIPS 2021); the losses are in ``madata_algos/icq.py``.

    alpha: the ICQ operator's temperature, implicit-constraint weights B * softmax_batch(Q'_tot / alpha) on the
    next-state value (Sec. 4.1). beta: the policy's temperature, weights B * softmax_batch(w_i(s) A_i / beta) on
    log pi_i(a_i | o_i) (Sec. 4.2). Defaults: the reference ICQ-MA code (its SMAC settings) unless a comment says
    otherwise; its critic temperature is named ``beta`` there and its actor temperature ``beta = 0.1``.
    """

    actor_hidden: tuple[int, ...] = (64, 64)  # hidden sizes of pi_i(a_i | o_i); reference agents are 64 wide (GRU)
    critic_hidden: tuple[int, ...] = (256, 256)  # hidden sizes of Q_i(o_i, a_i) and V(s); reference critic
    mixer_embed: int = 32  # hypernetwork width of Q_tot = sum_i w_i(s) Q_i + b(s); reference mixing_embed_dim
    actor_lr: float = 5e-4  # Adam learning rate of the policies (reference lr)
    critic_lr: float = 1e-4  # Adam learning rate of Q_i, the mixer and V(s) (reference critic_lr)
    gamma: float = 0.99  # discount gamma
    tau: float = 0.005  # Polyak rate of the target critics and mixer (the single-agent ICQ code's polyak 0.995)
    alpha: float = 1000.0  # critic temperature of the ICQ operator (reference: 1000)
    beta: float = 0.1  # actor temperature (reference: 0.1, SMAC; scale with the advantages: OMIGA's MaMuJoCo ICQ: 100)
    baseline_samples: int = 10  # continuous: actions drawn from pi_i for the baseline E_{a ~ pi_i} Q_i (our choice)
    log_std_min: float = -6.0  # continuous pi_i: lower bound of its state-independent log std (single-agent ICQ code)
    log_std_max: float = 0.0  # continuous pi_i: upper bound of the log std (single-agent ICQ code)

    def to_json(self) -> dict:
        return asdict(self)
