"""MABCQ (Jiang & Lu, 2021, "Offline Decentralized Multi-Agent Reinforcement Learning").

Every agent learns alone from its own transitions (o_i, a_i, r, o'_i), like I-BCQ; what
agent i sees as its environment's dynamics p_i(o'_i | o_i, a_i) mixes in its teammates'
behaviour in the data, which is not what they will do after training. MABCQ changes those
dynamics on purpose by weighing each transition's TD error with lambda = w_vd * w_tn:

* value deviation, w_vd = V(o') / E_{o'' ~ p_i(.|o_i, a_i)} V(o''): next states better than the
  expected one count more (optimism that the teammates will pick their good actions);
* transition normalization, w_tn proportional to 1 / p_i(o'_i | o_i, a_i): every next state
  the data show after (o_i, a_i) counts the same, however often the teammates' behaviour
  led there.

Choices where the paper leaves the implementation open (each is a :class:`MabcqConfig`
option, docs/algorithms.md):

* p_i is a conditional VAE T_i of the agent's own outcome x = (r, d, o'_i) given (o_i, a_i),
  trained on its negative ELBO (unit-variance Gaussian decoder). Its ELBO stands in for
  log p_i, and ``n_next`` outcomes drawn from it give every expectation over next states.
* The reward and termination are part of the outcome: from agent i's seat they depend on
  the teammates as much as o'_i does, and the value that the deviation compares is the
  outcome's, y = r + gamma (1 - d) V(o') (V: BCQ's target value), so that walking off a
  cliff (terminal, V(o') never learned) is judged by its reward.
* The two modifications compose as p_MABCQ(o') proportional to V(o') on the next states p_i
  reaches, uniformly weighted: lambda = p_MABCQ / p_i = w_vd * w_tn with w_tn = 1 / (Z p_i),
  and w_vd's expectation taken under that uniform measure (importance-weighted samples of p_i).
* Z(o_i, a_i), the number of next states in the paper's discrete setting, is the typical
  density exp(E_{p_i}[log p_i]) here (equal to 1 / K for K equally likely next states), and
  w_tn is divided by its minibatch median (1 for the typical transition).
* The paper assumes positive values; here w_vd compares values shifted by the minibatch's
  minimum, V - min + value_margin * (max - min), which bounds the ratio.
* lambda is clipped to [weight_min, weight_max] so that no single transition dominates.

Execution is decentralized, as the paper's setting is (agent i acts on o_i alone); the
CAST-BCQ paper says the MABCQ it compared against needed every agent's observation at
execution, which this one does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madata.errors import SchemaError
from madata_algos.cast_bcq_discrete import IndependentBcqDiscrete, allowed_actions
from madata_algos.configs import MabcqConfig
from madata_algos.ibcq import IndependentBcq, discrete_config
from madata_algos.networks import AgentMLP, minimize, soft_update


def value_deviation_weight(value: torch.Tensor, samples: torch.Tensor, sample_weight: torch.Tensor | None,
                           margin: float) -> torch.Tensor:  # fmt: skip
    """w_vd = V+(o') / E_{o''}[V+(o'')]: the value deviation, a ratio of positive values. [N, B].

    ``value`` [N, B]: each transition's own outcome value; ``samples`` [N, B, k]: the values of
    k outcomes drawn for the same (o_i, a_i); ``sample_weight`` [N, B, k] (summing to 1 over k):
    the measure of the expectation, None for the plain mean. V+ = V - min + margin * (max - min),
    min and max over the agent's minibatch, so w_vd lies in [margin / (1 + margin), (1 + margin) / margin].
    """
    lo = torch.minimum(value.amin(-1), samples.flatten(1).amin(-1))[:, None]  # [N, 1]
    hi = torch.maximum(value.amax(-1), samples.flatten(1).amax(-1))[:, None]
    shift = lo - margin * (hi - lo) - 1e-6  # the 1e-6 keeps 0 / 0 away when all values are equal
    weight = 1.0 / samples.shape[-1] if sample_weight is None else sample_weight
    return (value - shift) / ((samples - shift[..., None]) * weight).sum(-1)


def transition_normalization_weight(log_p: torch.Tensor, log_p_samples: torch.Tensor) -> torch.Tensor:
    """w_tn proportional to 1 / (Z(o, a) p(o'|o, a)): the transition normalization, 1 at the minibatch's median. [N, B].

    The paper's Z(o, a) makes p * w_tn uniform over the next states of (o, a) (for K discrete
    ones, Z p = K p). Continuous densities have no uniform over an unbounded support, so Z is
    taken as the typical density instead, exp(E_p[log p]) (= 1 / K when p is uniform), estimated
    from k outcomes drawn for the same (o, a). Dividing by the minibatch's median weight removes
    the constant by which drawn outcomes (decoder means) look likelier than real ones, and, unlike
    the mean, is not pulled by the few outcomes the model fits badly.
    ``log_p`` [N, B]: each transition's own outcome; ``log_p_samples`` [N, B, k].
    """
    log_w = log_p_samples.mean(-1) - log_p  # log (typical density / p(o'))
    # +-20 keeps exp finite; lambda is clipped far inside e^20 anyway
    return torch.exp((log_w - log_w.quantile(0.5, dim=-1, keepdim=True)).clamp(-20.0, 20.0))


def check_mabcq_config(cfg: MabcqConfig) -> None:
    if not 0.0 <= cfg.weight_min <= cfg.weight_max:
        raise SchemaError(f"MABCQ: need 0 <= weight_min <= weight_max, got {cfg.weight_min} and {cfg.weight_max}")
    if cfg.value_margin <= 0:
        raise SchemaError(f"MABCQ: value_margin must be > 0, got {cfg.value_margin}")
    if cfg.n_next < 1:
        raise SchemaError(f"MABCQ: n_next must be >= 1, got {cfg.n_next}")


class TransitionVae(nn.Module):
    """T_i(x | c) for every agent: outcome x = [r, d, o'_i] ([N, B, 2 + O]) given c = [a_i, o_i]
    ([N, B, C + O], a_i one-hot for discrete actions). Gaussian decoder with unit variance, so the
    negative ELBO is in nats (up to a constant shared by all transitions)."""

    def __init__(self, obs_dims: Sequence[int], act_width: int, hidden: Sequence[int], latent: int):
        super().__init__()
        n, self.O, self.latent = len(obs_dims), max(obs_dims), latent
        x_width = 2 + self.O
        self.encoder = AgentMLP(n, [x_width + act_width + o for o in obs_dims], hidden, 2 * latent)
        self.decoder = AgentMLP(n, [latent + act_width + o for o in obs_dims], hidden, x_width)
        mask = torch.arange(x_width)[None, :] < 2 + torch.tensor(list(obs_dims))[:, None]  # r, d, real o' columns
        self.register_buffer("x_mask", mask.float()[:, None])  # [N, 1, 2 + O]

    def outcome(self, reward: torch.Tensor, terminated: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """x = [r, d, o'_i]: reward, terminated [B], next_obs [N, B, O] -> [N, B, 2 + O]."""
        N, B, _ = next_obs.shape
        rd = torch.stack([reward, terminated], -1)[None].expand(N, B, 2)
        return torch.cat([rd, next_obs], -1)

    def neg_elbo(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None,
                 sample: bool = True) -> torch.Tensor:  # fmt: skip
        """-ELBO = 1/2 |x - D(z, c)|^2 + D_KL(N(mu, sigma) || N(0, 1)) per transition: [N, B].
        ``sample=False`` decodes z = mu, a deterministic estimate (used for the weights)."""
        mu, log_std = self.encoder(torch.cat([x, c], -1)).chunk(2, -1)
        log_std = log_std.clamp(-4, 15)
        std = log_std.exp()
        z = mu + std * torch.randn(mu.shape, device=mu.device, generator=generator) if sample else mu
        rec = 0.5 * ((self.decoder(torch.cat([z, c], -1)) - x) ** 2 * self.x_mask).sum(-1)
        kl = -0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2)).sum(-1)
        return rec + kl

    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ T_i(. | c): c [N, R, C + O] -> [N, R, 2 + O], z ~ N(0, 1); padded o' columns 0."""
        z = torch.randn(c.shape[0], c.shape[1], self.latent, device=c.device, generator=generator)
        return self.decoder(torch.cat([z, c], -1)) * self.x_mask


class _TransitionWeights:
    """What continuous and discrete MABCQ share: the transition model's loss and lambda.
    The host class provides ``transition`` (a :class:`TransitionVae`), ``mcfg`` (the MabcqConfig)
    and ``next_value(next_obs [N, R, O], generator) -> [N, R]``."""

    transition: TransitionVae
    mcfg: MabcqConfig

    def transition_loss(self, cond, reward, terminated, next_obs, generator=None) -> torch.Tensor:
        """-ELBO of T_i on the agent's own outcomes, mean over the minibatch, summed over agents."""
        x = self.transition.outcome(reward, terminated, next_obs)
        return self.transition.neg_elbo(x, cond, generator).mean(-1).sum()

    @torch.no_grad()
    def weights(self, cond, reward, terminated, next_obs, y, generator=None) -> torch.Tensor:
        """lambda = clip(w_vd * w_tn, weight_min, weight_max) [N, B] for transitions with targets ``y`` [N, B].

        Both factors use the same n_next outcomes drawn from T_i(o_i, a_i). With transition
        normalization on, w_vd's expectation is under the normalized next-state distribution
        (the samples importance-weighted by 1 / p_i); with it off, under p_i itself.
        """
        cfg, (N, B, _), k = self.mcfg, next_obs.shape, self.mcfg.n_next
        rep = cond.repeat_interleave(k, dim=1)  # [N, B*k, C]
        x = self.transition.sample(rep, generator)  # [N, B*k, 2 + O]
        w, measure = torch.ones_like(y), None
        if cfg.transition_normalization:
            log_p = -self.transition.neg_elbo(self.transition.outcome(reward, terminated, next_obs), cond, sample=False)
            log_p_samples = -self.transition.neg_elbo(x, rep, sample=False).view(N, B, k)
            w = w * transition_normalization_weight(log_p, log_p_samples)
            measure = torch.softmax(-log_p_samples, -1)
        if cfg.value_deviation:
            d = x[..., 1].clamp(0.0, 1.0)  # a sampled termination flag, read as a probability
            y_hat = x[..., 0] + cfg.gamma * (1.0 - d) * self.next_value(x[..., 2:], generator)
            w = w * value_deviation_weight(y, y_hat.view(N, B, k), measure, cfg.value_margin)
        return w.clamp(cfg.weight_min, cfg.weight_max)


class Mabcq(_TransitionWeights, IndependentBcq):
    """MABCQ with continuous actions: :class:`IndependentBcq` whose critic loss is weighted by lambda."""

    def __init__(self, obs_dims: Sequence[int], act_dims: Sequence[int], max_action: Sequence[float],
                 config: MabcqConfig | None = None, device: torch.device | str = "cpu"):  # fmt: skip
        cfg = config or MabcqConfig()
        check_mabcq_config(cfg)
        super().__init__(obs_dims, act_dims, max_action, cfg, device)
        self.mcfg = cfg
        latent = max(1, int(cfg.transition_latent_scale * self.O))
        self.transition = TransitionVae(obs_dims, self.A, cfg.transition_hidden, latent).to(self.max_action.device)
        self.opt_transition = torch.optim.Adam(self.transition.parameters(), lr=cfg.lr)

    def td_loss(self, obs, action, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """lambda_i * (Q_{i,k}(o_i, a_i) - y_i)^2, y_i BCQ's target, summed over both critics and agents."""
        with torch.no_grad():
            y = reward[None] + self.cfg.gamma * (1.0 - terminated[None]) * self.next_value(next_obs, generator)
            w = self.weights(torch.cat([action, obs], -1), reward, terminated, next_obs, y, generator)
        return self.critic_loss(obs, action, y, w)

    def update(self, obs, action, reward, next_obs, terminated, state=None, next_state=None,
               generator: torch.Generator | None = None) -> dict[str, float]:  # fmt: skip
        """Fit T_i on the minibatch, then BCQ's iteration with the weighted critic loss."""
        cond = torch.cat([action, obs], -1)
        stats = minimize((
            ("transition", self.opt_transition, lambda: self.transition_loss(cond, reward, terminated, next_obs, generator)),
        ))  # fmt: skip
        return stats | super().update(obs, action, reward, next_obs, terminated, generator=generator)


class MabcqDiscrete(_TransitionWeights, IndependentBcqDiscrete):
    """MABCQ with discrete actions: discrete I-BCQ (``n_agents`` agents, equal ``obs_dim`` and
    ``n_actions``) whose Huber TD loss is weighted by lambda. ``action`` [N, B] int64."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, config: MabcqConfig | None = None,
                 device: torch.device | str = "cpu"):  # fmt: skip
        cfg = config or MabcqConfig()
        check_mabcq_config(cfg)
        super().__init__(n_agents, obs_dim, n_actions, discrete_config(cfg), device)
        self.mcfg = cfg
        latent = max(1, int(cfg.transition_latent_scale * obs_dim))
        dev = next(self.parameters()).device
        self.transition = TransitionVae([obs_dim] * n_agents, n_actions, cfg.transition_hidden, latent).to(dev)
        self.opt_transition = torch.optim.Adam(self.transition.parameters(), lr=cfg.lr)

    def condition(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """c = [one_hot(a_i), o_i]: [N, B, K + O]."""
        return torch.cat([F.one_hot(action, self.k).float(), obs], -1)

    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Discrete BCQ's V(o') = Q'_i(o', argmax over allowed a' of Q_i(o', a')): [N, R]."""
        ok = allowed_actions(self.classifier(next_obs), self.cfg.threshold)
        best = self.critic(next_obs).masked_fill(~ok, float("-inf")).argmax(-1, keepdim=True)
        return self.target(next_obs).gather(-1, best)[..., 0]

    def weighted_critic_loss(self, obs, action, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """lambda_i * Huber(Q_i(o_i, a_i) - y_i), mean over the minibatch, summed over agents."""
        with torch.no_grad():
            y = reward[None] + self.cfg.gamma * (1.0 - terminated[None]) * self.next_value(next_obs)
            w = self.weights(self.condition(obs, action), reward, terminated, next_obs, y, generator)
        q = self.critic(obs).gather(-1, action[..., None])[..., 0]  # [N, B]
        return (F.smooth_l1_loss(q, y, reduction="none") * w).mean(-1).sum()

    def update(self, obs, action, reward, next_obs, terminated, state=None, next_state=None,
               generator: torch.Generator | None = None) -> dict[str, float]:  # fmt: skip
        cond = self.condition(obs, action)
        stats = minimize((
            ("transition", self.opt_transition, lambda: self.transition_loss(cond, reward, terminated, next_obs, generator)),
            ("classifier", self.opt_cls, lambda: F.cross_entropy(self.classifier(obs).flatten(0, 1), action.flatten()) * self.n),
            ("critic", self.opt_q, lambda: self.weighted_critic_loss(obs, action, reward, next_obs, terminated, generator)),
        ))  # fmt: skip
        soft_update(self.target, self.critic, self.cfg.tau)
        return stats
