"""I-BCQ: every agent runs BCQ (Fujimoto et al., 2019) on its own (o_i, a_i, r, o'_i), blind to its teammates.

Continuous actions (:class:`IndependentBcq`): per agent a conditional VAE G_i(o_i) of the
data's actions, a perturbation actor xi_i and twin critics Q_{i,1}, Q_{i,2}(o_i, a_i), all
agents batched in :class:`AgentMLP` s (one ``baddbmm`` per layer). One iteration follows
BCQ's Algorithm 1: VAE step, critic step on the soft clipped double-Q target, actor step,
Polyak updates. Execution is decentralized: agent i acts on o_i alone.

Discrete actions: :class:`~madata_algos.cast_bcq_discrete.IndependentBcqDiscrete` (BCQ's
discrete variant, kept beside discrete CAST-BCQ), built from a :class:`BcqConfig` by
:func:`discrete_config`.

The centralized baseline (``madata_algos/bcq.py``) is this class with one "agent" whose
observation is the joint observation and whose action is the joint action.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from madata_algos.configs import BcqConfig, DiscreteConfig
from madata_algos.networks import AgentMLP, minimize, soft_update


def soft_clipped_double_q(q1: torch.Tensor, q2: torch.Tensor, lam: float) -> torch.Tensor:
    """BCQ's soft clipped double Q, CAST-BCQ's Eq. 10: lambda min(Q1, Q2) + (1 - lambda) max(Q1, Q2).

    lambda = 1 is clipped double Q; any shapes that broadcast.
    """
    return lam * torch.minimum(q1, q2) + (1.0 - lam) * torch.maximum(q1, q2)


def bcq_value(q1: torch.Tensor, q2: torch.Tensor, lam: float) -> torch.Tensor:
    """BCQ's value of a next observation: max_j [lam min(Q'_1, Q'_2) + (1 - lam) max(Q'_1, Q'_2)](o', a_j).

    ``q1``, ``q2`` [..., B, n]: the twin target critics on n candidate actions a_j. Returns [..., B].
    """
    return soft_clipped_double_q(q1, q2, lam).max(-1).values


def bcq_target(reward: torch.Tensor, terminated: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
               gamma: float, lam: float) -> torch.Tensor:  # fmt: skip
    """BCQ's critic target (its Eq. 13): y = r + gamma (1 - d) max_j [lam min_k Q'_k + (1 - lam) max_k Q'_k](o', a_j).

    ``reward``, ``terminated`` broadcast against [..., B]; ``q1``, ``q2`` [..., B, n]. Returns y [..., B].
    A terminated transition does not bootstrap; a truncated one does (the loader keeps them apart).
    """
    return reward + gamma * (1.0 - terminated) * bcq_value(q1, q2, lam)


def discrete_config(cfg: BcqConfig) -> DiscreteConfig:
    """The options of BCQ's discrete variant, taken from a :class:`BcqConfig`."""
    return DiscreteConfig(hidden=cfg.discrete_hidden, lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau, threshold=cfg.threshold)


class IndependentBcq(nn.Module):
    """BCQ for each of ``len(obs_dims)`` agents, batched.

    ``max_action[i]``: agent i's action bound, one float for all its components or one per
    component. Batches are agent-major: ``obs``/``next_obs`` [N, B, max obs_dim] and
    ``action`` [N, B, max act_dim], zero-padded; ``reward``, ``terminated`` [B].
    """

    def __init__(self, obs_dims: Sequence[int], act_dims: Sequence[int], max_action: Sequence[float | Sequence[float]],
                 config: BcqConfig | None = None, device: torch.device | str = "cpu"):  # fmt: skip
        super().__init__()
        self.cfg = cfg = config or BcqConfig()
        self.n = n = len(obs_dims)
        self.obs_dims, self.act_dims = list(obs_dims), list(act_dims)
        self.O, self.A = max(obs_dims), max(act_dims)
        self.latent = max(1, int(cfg.latent_scale * self.A))
        bound = torch.zeros(n, 1, self.A)  # [N, 1, A]; 0 on padded components, so they stay 0 everywhere
        for i, (m, d) in enumerate(zip(max_action, act_dims, strict=True)):
            bound[i, 0, :d] = torch.as_tensor(m, dtype=torch.float32)
        self.register_buffer("max_action", bound)
        self.register_buffer("act_mask", (torch.arange(self.A)[None, :] < torch.tensor(act_dims)[:, None]).float()[:, None])
        # inputs are [a or z (same width for every agent), o_i]: an agent's padded observation columns
        # come last, where AgentLinear keeps its weight rows at 0
        in_oa = [self.A + o for o in obs_dims]
        self.encoder = AgentMLP(n, in_oa, cfg.vae_hidden, 2 * self.latent)  # E(o_i, a_i) -> mu, log sigma
        self.decoder = AgentMLP(n, [self.latent + o for o in obs_dims], cfg.vae_hidden, self.A)  # D(o_i, z)
        self.actor = AgentMLP(n, in_oa, cfg.actor_hidden, self.A)  # xi_i(o_i, a_i)
        self.critic = AgentMLP(2 * n, in_oa * 2, cfg.critic_hidden, 1)  # rows [Q_{., 1} for N agents, Q_{., 2} for N]
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.to(device)
        self.opt_vae = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=cfg.lr)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)

    # ------------------------------------------------------------ networks

    def decode(self, obs: torch.Tensor, generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """a ~ G_i(o_i): obs [N, R, O] -> actions [N, R, A]; z ~ N(0, 1) clipped to +-latent_clip (BCQ's)."""
        if z is None:
            z = torch.randn(obs.shape[0], obs.shape[1], self.latent, device=obs.device, generator=generator)
            z = z.clamp(-self.cfg.latent_clip, self.cfg.latent_clip)
        return torch.tanh(self.decoder(torch.cat([z, obs], -1))) * self.max_action

    def perturb(self, actor: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """a + Phi * max_action * tanh(xi(o, a)), clamped to the action box: [N, R, A]."""
        xi = self.cfg.phi * self.max_action * torch.tanh(actor(torch.cat([action, obs], -1)))
        return torch.maximum(torch.minimum(action + xi, self.max_action), -self.max_action)

    def q(self, obs: torch.Tensor, action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Both critics: obs [N, R, O], action [N, R, A] -> [2, N, R]."""
        x = torch.cat([action, obs], -1)
        net = self.critic_target if target else self.critic
        return net(torch.cat([x, x]))[..., 0].view(2, self.n, -1)

    # ------------------------------------------------------------ losses

    def vae_loss(self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(a - D(o, z))^2 + kl_weight * D_KL(N(mu, sigma) || N(0, 1)), z = mu + sigma eps; summed over agents."""
        mu, log_std = self.encoder(torch.cat([action, obs], -1)).chunk(2, -1)
        log_std = log_std.clamp(-4, 15)  # BCQ's reference clamp, keeps exp() finite
        std = log_std.exp()
        z = mu + std * torch.randn(mu.shape, device=mu.device, generator=generator)
        recon = self.decode(obs, z=z)
        rec = ((recon - action) ** 2).sum(-1).mean(-1) / self.act_mask.sum(-1).squeeze(-1)  # mean over real components
        kl = -0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2)).mean(dim=(-2, -1))
        return (rec + self.cfg.kl_weight * kl).sum()

    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """V(o') = :func:`bcq_value` over n_target candidates a_j = a~_j + xi'(o', a~_j), a~_j ~ G(o'): [N, B]."""
        k, (N, B, _) = self.cfg.n_target, next_obs.shape
        rep = next_obs.repeat_interleave(k, dim=1)  # [N, B*k, O]
        cand = self.perturb(self.actor_target, rep, self.decode(rep, generator))
        q = self.q(rep, cand, target=True).view(2, N, B, k)
        return bcq_value(q[0], q[1], self.cfg.lam)

    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, y: torch.Tensor,
                    weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """sum_k (Q_k(o_i, a_i) - y_i)^2 for both critics of every agent, optionally weighted per transition.

        ``y``, ``weight`` [N, B]. Mean over the minibatch, summed over agents and the two critics
        (BCQ's reference sums the two critics' MSEs).
        """
        err = (self.q(obs, action) - y[None]) ** 2  # [2, N, B]
        if weight is not None:
            err = err * weight[None]
        return err.mean(-1).sum()

    def td_loss(self, obs, action, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """The critic step: :meth:`critic_loss` on :func:`bcq_target` (MABCQ adds its weights here)."""
        y = reward[None] + self.cfg.gamma * (1.0 - terminated[None]) * self.next_value(next_obs, generator)
        return self.critic_loss(obs, action, y)

    def actor_loss(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """-Q_{i,1}(o_i, a~_i + xi_i(o_i, a~_i)), a~_i ~ G_i(o_i): deterministic policy gradient through Q_{i,1}."""
        with torch.no_grad():
            sampled = self.decode(obs, generator)
        return -self.q(obs, self.perturb(self.actor, obs, sampled))[0].mean(-1).sum()

    # ------------------------------------------------------------ BCQ's Algorithm 1, one iteration

    def update(self, obs, action, reward, next_obs, terminated, state=None, next_state=None,
               generator: torch.Generator | None = None) -> dict[str, float]:  # fmt: skip
        """One iteration on a minibatch (shapes in the class docstring); ``state`` is not used."""
        stats = minimize((
            ("vae", self.opt_vae, lambda: self.vae_loss(obs, action, generator)),
            ("critic", self.opt_critic, lambda: self.td_loss(obs, action, reward, next_obs, terminated, generator)),
            ("actor", self.opt_actor, lambda: self.actor_loss(obs, generator)),
        ))  # fmt: skip
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.tau)
        return stats

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Agent i draws n_act candidates from G_i(o_i), perturbs them, takes the argmax of Q_{i,1}.

        obs [N, B, O] -> actions [N, B, A] (padded components 0).
        """
        N, B, _ = obs.shape
        k = self.cfg.n_act
        rep = obs.repeat_interleave(k, dim=1)  # [N, B*k, O]
        cand = self.perturb(self.actor, rep, self.decode(rep, generator))
        best = self.q(rep, cand)[0].view(N, B, k).argmax(-1)  # [N, B]
        return cand.view(N, B, k, self.A).gather(2, best[..., None, None].expand(N, B, 1, self.A))[:, :, 0]
