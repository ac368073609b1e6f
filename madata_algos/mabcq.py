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
  outcome's, y = r + gamma (1 - d) V(o'), so that walking off a cliff (terminal, V(o')
  never learned) is judged by its reward. V is BCQ's value with ``value_candidates``
  candidate actions (2 by default, where the critic's own target uses n_target = 10): the
  n_next drawn outcomes need n_next such values per transition, which at 10 candidates made
  MABCQ 4x as costly as I-BCQ; the transition's own value uses the same estimator, so the
  ratio compares like with like.
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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madata_algos.configs import MabcqConfig, MabcqDiscreteConfig, TransitionWeightOptions
from madata_algos.ibcq import IndependentBcq, IndependentBcqDiscrete, td_target
from madata_algos.networks import AgentMLP


def value_deviation_weight(
    value: torch.Tensor, samples: torch.Tensor, sample_weight: torch.Tensor | None, margin: float
) -> torch.Tensor:
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

    def neg_elbo(
        self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
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


class TransitionWeights(nn.Module):
    """MABCQ's weights lambda = w_vd * w_tn, with the transition model T_i they need (``model``).

    ``value(next_obs [N, R, O]) -> [N, R]`` is the host algorithm's value of next observations
    (continuous: BCQ's value over ``value_candidates`` candidates; discrete: BCQ's greedy allowed value).
    """

    def __init__(self, obs_dims: Sequence[int], act_width: int, cfg: TransitionWeightOptions):
        super().__init__()
        self.cfg = cfg
        latent = max(1, int(cfg.transition_latent_scale * max(obs_dims)))
        self.model = TransitionVae(obs_dims, act_width, cfg.transition_hidden, latent)

    def loss(self, cond, reward, terminated, next_obs, generator=None) -> torch.Tensor:
        """-ELBO of T_i on the agent's own outcomes, mean over the minibatch, summed over agents."""
        x = self.model.outcome(reward, terminated, next_obs)
        return self.model.neg_elbo(x, cond, generator).mean(-1).sum()

    @torch.no_grad()
    def weights(
        self,
        cond,
        reward,
        terminated,
        next_obs,
        value: Callable[[torch.Tensor], torch.Tensor],
        gamma: float,
        generator=None,
    ) -> torch.Tensor:
        """lambda = clip(w_vd * w_tn, weight_min, weight_max) [N, B] for transitions conditioned on ``cond`` [N, B, C].

        Both factors use the same n_next outcomes drawn from T_i(o_i, a_i). With transition
        normalization on, w_vd's expectation is under the normalized next-state distribution
        (the samples importance-weighted by 1 / p_i); with it off, under p_i itself. w_vd compares
        outcome values y = r + gamma (1 - d) value(o'), the transition's own and the drawn ones alike.
        """
        cfg, (N, B, _), k = self.cfg, next_obs.shape, self.cfg.n_next
        rep = cond.repeat_interleave(k, dim=1)  # [N, B*k, C]
        x = self.model.sample(rep, generator)  # [N, B*k, 2 + O]
        w, measure = torch.ones(N, B, device=next_obs.device), None
        if cfg.transition_normalization:
            log_p = -self.model.neg_elbo(self.model.outcome(reward, terminated, next_obs), cond, sample=False)
            log_p_samples = -self.model.neg_elbo(x, rep, sample=False).view(N, B, k)
            w = w * transition_normalization_weight(log_p, log_p_samples)
            measure = torch.softmax(-log_p_samples, -1)
        if cfg.value_deviation:
            own = td_target(reward[None], terminated[None], value(next_obs), gamma)  # [N, B]
            d = x[..., 1].clamp(0.0, 1.0)  # a sampled termination flag, read as a probability
            drawn = td_target(x[..., 0], d, value(x[..., 2:]), gamma)  # [N, B*k]
            w = w * value_deviation_weight(own, drawn.view(N, B, k), measure, cfg.value_margin)
        return w.clamp(cfg.weight_min, cfg.weight_max)


class Mabcq(IndependentBcq):
    """MABCQ with continuous actions: :class:`~madata_algos.ibcq.IndependentBcq` whose critic loss is weighted
    by lambda, after a step on the transition models T_i."""

    def __init__(
        self,
        obs_dims: Sequence[int],
        act_dims: Sequence[int],
        max_action: Sequence[float],
        config: MabcqConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        cfg = config or MabcqConfig()
        super().__init__(obs_dims, act_dims, max_action, cfg, device)
        self.weighting = TransitionWeights(obs_dims, self.policy.A, cfg).to(device)
        self.optimizers["transition"] = torch.optim.Adam(self.weighting.parameters(), lr=cfg.lr)

    def critic_objective(self, obs, action, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """lambda_i * (Q_{i,k}(o_i, a_i) - y_i)^2, y_i BCQ's target, summed over both critics and agents."""
        y = self.target(reward, next_obs, terminated, generator)
        value = lambda o: self.next_value(o, generator, k=self.cfg.value_candidates)  # noqa: E731
        w = self.weighting.weights(
            torch.cat([action, obs], -1), reward, terminated, next_obs, value, self.cfg.gamma, generator
        )
        return self.critic_loss(obs, action, y, w)

    def steps(self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None):
        """Fit T_i on the minibatch, then BCQ's iteration with the weighted critic loss."""
        cond = torch.cat([action, obs], -1)
        fit = ("transition", lambda: self.weighting.loss(cond, reward, terminated, next_obs, generator))
        return [fit, *super().steps(obs, action, reward, next_obs, terminated, generator=generator)]


class MabcqDiscrete(IndependentBcqDiscrete):
    """MABCQ with discrete actions: discrete I-BCQ (``n_agents`` agents, equal ``obs_dim`` and
    ``n_actions``) whose Huber TD loss is weighted by lambda. ``action`` [N, B] int64."""

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        n_actions: int,
        config: MabcqDiscreteConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        cfg = config or MabcqDiscreteConfig()
        super().__init__(n_agents, obs_dim, n_actions, cfg, device)
        self.weighting = TransitionWeights([obs_dim] * n_agents, n_actions, cfg).to(device)
        self.optimizers["transition"] = torch.optim.Adam(self.weighting.parameters(), lr=cfg.lr)

    def condition(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """c = [one_hot(a_i), o_i]: [N, B, K + O]."""
        return torch.cat([F.one_hot(action, self.k).float(), obs], -1)

    def critic_objective(
        self, obs, action, reward, next_obs, terminated, generator=None, next_action_mask=None
    ) -> torch.Tensor:
        """lambda_i * Huber(Q_i(o_i, a_i) - y_i), mean over the minibatch, summed over agents. The weights
        value next observations drawn from the transition model, whose available actions are unknown:
        there the classifier alone limits the actions."""
        y = self.target(reward, next_obs, terminated, next_action_mask)
        w = self.weighting.weights(
            self.condition(obs, action), reward, terminated, next_obs, self.next_value, self.cfg.gamma, generator
        )
        return self.critic_loss(obs, action, y, w)

    def steps(
        self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None,
        action_mask=None, next_action_mask=None,
    ):  # fmt: skip
        """Fit T_i on the minibatch, then discrete BCQ's iteration with the weighted critic loss."""
        cond = self.condition(obs, action)
        fit = ("transition", lambda: self.weighting.loss(cond, reward, terminated, next_obs, generator))
        rest = super().steps(
            obs, action, reward, next_obs, terminated, generator=generator, next_action_mask=next_action_mask
        )
        return [fit, *rest]
