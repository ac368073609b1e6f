"""I-BCQ: every agent runs BCQ (Fujimoto et al., 2019) on its own (o_i, a_i, r, o'_i), blind to its teammates.

BCQ's pieces live here because the whole BCQ family is built from them: CAST-BCQ, MABCQ
and centralized BCQ compose the same per-agent parts rather than inherit and override.

* :func:`soft_clipped_double_q`, :func:`bcq_value`, :func:`td_target`: BCQ's target (its Eq. 13),
  tested once and called by every algorithm that bootstraps;
* :class:`BcqPolicy`: each agent's conditional VAE G_i(o_i) of the data's actions and its
  perturbation actor xi_i (with a Polyak-averaged copy), all agents batched in
  :class:`~madata_algos.networks.AgentMLP` s;
* :class:`TwinCritics`: each agent's Q_{i,1}, Q_{i,2}(o_i, a_i);
* :func:`allowed_actions`, :func:`discrete_bcq_value`: BCQ's discrete variant.

:class:`IndependentBcq` (continuous) follows BCQ's Algorithm 1: VAE step, critic step on the
soft clipped double-Q target, actor step, Polyak updates. :class:`IndependentBcqDiscrete` is
BCQ's discrete variant per agent. Execution is decentralized: agent i acts on o_i alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madata_algos.configs import BcqConfig, BcqDiscreteConfig
from madata_algos.networks import AgentMLP, Algorithm, soft_update

# ---------------------------------------------------------------------------- BCQ's target


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


def td_target(reward: torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) V(s'): a terminated transition does not bootstrap, a truncated one
    does (the loader keeps the two apart). Shapes broadcast: reward, terminated [B] against V [..., B]."""
    return reward + gamma * (1.0 - terminated) * next_value


def bcq_target(
    reward: torch.Tensor, terminated: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """BCQ's critic target (its Eq. 13): y = r + gamma (1 - d) max_j [lam min_k Q'_k + (1 - lam) max_k Q'_k](o', a_j).

    ``q1``, ``q2`` [..., B, n]; ``reward``, ``terminated`` broadcast against [..., B]. Returns y [..., B].
    """
    return td_target(reward, terminated, bcq_value(q1, q2, lam), gamma)


def allowed_actions(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """BCQ's discrete constraint: G(a|o) / max_a' G(a'|o) >= threshold. logits [..., n] -> bool [..., n]."""
    p = logits.softmax(-1)
    return p / p.max(-1, keepdim=True).values >= threshold


def available_allowed(allowed: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
    """BCQ's allowed actions [..., K] among the available ones (``available`` bool [..., K], None: all are).
    Where the classifier allows no available action, every available action is allowed (a dead SMAX unit's
    only action, the no-op, is one the classifier may rank low)."""
    if available is None:
        return allowed
    both = allowed & available
    return torch.where(both.any(-1, keepdim=True), both, available)


def discrete_bcq_value(q_next: torch.Tensor, q_next_target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Discrete BCQ's value of o': Q'(o', argmax over allowed a' of Q(o', a')) (the online critic picks, the
    target critic values). ``q_next``, ``q_next_target``, ``allowed`` [..., K] -> [...]."""
    best = q_next.masked_fill(~allowed, float("-inf")).argmax(-1, keepdim=True)
    return q_next_target.gather(-1, best)[..., 0]


# ---------------------------------------------------------------------------- per-agent parts


class BcqPolicy(nn.Module):
    """Every agent's BCQ policy: a conditional VAE G_i(o_i) of the data's actions (encoder E_i, decoder D_i) and a
    perturbation actor xi_i with its Polyak-averaged copy xi'_i.

    ``max_action[i]``: agent i's action bound, one float for all its components or one per component.
    Tensors are agent-major: ``obs`` [N, R, max obs_dim], ``action`` [N, R, max act_dim], zero-padded.
    Network inputs are laid out [a or z (the same width for every agent), o_i], so an agent's padded
    observation columns come last, where :class:`~madata_algos.networks.AgentLinear` keeps zero weights.
    """

    def __init__(
        self,
        obs_dims: Sequence[int],
        act_dims: Sequence[int],
        max_action: Sequence[float | Sequence[float]],
        cfg: BcqConfig,
    ):
        super().__init__()
        self.cfg, self.n = cfg, len(obs_dims)
        self.A = max(act_dims)
        self.latent = max(1, int(cfg.latent_scale * self.A))
        bound = torch.zeros(self.n, 1, self.A)  # 0 on padded components, so they stay 0 everywhere
        for i, (m, d) in enumerate(zip(max_action, act_dims, strict=True)):
            bound[i, 0, :d] = torch.as_tensor(m, dtype=torch.float32)
        self.register_buffer("max_action", bound)  # [N, 1, A]
        mask = (torch.arange(self.A)[None, :] < torch.tensor(list(act_dims))[:, None]).float()[:, None]
        self.register_buffer("act_mask", mask)  # [N, 1, A]
        in_oa = [self.A + o for o in obs_dims]
        self.encoder = AgentMLP(self.n, in_oa, cfg.vae_hidden, 2 * self.latent)  # E(o_i, a_i) -> mu, log sigma
        self.decoder = AgentMLP(self.n, [self.latent + o for o in obs_dims], cfg.vae_hidden, self.A)  # D(o_i, z)
        self.actor = AgentMLP(self.n, in_oa, cfg.actor_hidden, self.A)  # xi_i(o_i, a_i)
        self.actor_target = copy.deepcopy(self.actor)

    def vae_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def decode(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """a ~ G_i(o_i): obs [N, R, O] -> actions [N, R, A]; z ~ N(0, 1) clipped to +-latent_clip (BCQ's)."""
        if z is None:
            z = torch.randn(obs.shape[0], obs.shape[1], self.latent, device=obs.device, generator=generator)
            z = z.clamp(-self.cfg.latent_clip, self.cfg.latent_clip)
        return torch.tanh(self.decoder(torch.cat([z, obs], -1))) * self.max_action

    def perturb(self, obs: torch.Tensor, action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """a + Phi * max_action * tanh(xi(o, a)), clamped to the action box: [N, R, A] (``target``: xi')."""
        actor = self.actor_target if target else self.actor
        xi = self.cfg.phi * self.max_action * torch.tanh(actor(torch.cat([action, obs], -1)))
        return torch.maximum(torch.minimum(action + xi, self.max_action), -self.max_action)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None, target: bool = False) -> torch.Tensor:
        """The policy's action a~ + xi(o, a~), a~ ~ G_i(o_i): [N, R, A]."""
        return self.perturb(obs, self.decode(obs, generator), target)

    def candidates(
        self, obs: torch.Tensor, k: int, generator: torch.Generator | None = None, target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k sampled actions per row: (obs repeated [N, R*k, O], actions [N, R*k, A]); row r's come at r*k .. r*k+k-1."""
        rep = obs.repeat_interleave(k, dim=1)
        return rep, self.sample(rep, generator, target)

    def vae_loss(
        self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Eq. 3 / BCQ's VAE loss: (a - D(o, z))^2 + kl_weight * D_KL(N(mu, sigma) || N(0, 1)), z = mu + sigma eps;
        mean over the batch, the real action components and the latent, summed over agents."""
        mu, log_std = self.encoder(torch.cat([action, obs], -1)).chunk(2, -1)
        log_std = log_std.clamp(-4, 15)  # BCQ's reference clamp, keeps exp() finite
        std = log_std.exp()
        z = mu + std * torch.randn(mu.shape, device=mu.device, generator=generator)
        recon = self.decode(obs, z=z)
        rec = ((recon - action) ** 2).sum(-1).mean(-1) / self.act_mask.sum(-1).squeeze(-1)
        kl = -0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2)).mean(dim=(-2, -1))
        return (rec + self.cfg.kl_weight * kl).sum()

    def actor_loss(
        self,
        obs: torch.Tensor,
        q1: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """-Q_{i,1}(o_i, a~_i + xi_i(o_i, a~_i)), a~_i ~ G_i(o_i): the deterministic policy gradient through the
        first critic ``q1(obs, action) -> [N, R]``, mean over the batch, summed over agents."""
        with torch.no_grad():
            sampled = self.decode(obs, generator)
        return -q1(obs, self.perturb(obs, sampled)).mean(-1).sum()

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        q1: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Agent i draws n_act candidates from G_i(o_i), perturbs them, takes the argmax of Q_{i,1}.

        obs [N, B, O] -> actions [N, B, A] (padded components 0).
        """
        N, B, _ = obs.shape
        k = self.cfg.n_act
        rep, cand = self.candidates(obs, k, generator)
        best = q1(rep, cand).view(N, B, k).argmax(-1)  # [N, B]
        return cand.view(N, B, k, self.A).gather(2, best[..., None, None].expand(N, B, 1, self.A))[:, :, 0]


class TwinCritics(nn.Module):
    """Every agent's twin critics Q_{i,1}, Q_{i,2}(o_i, a_i), in one AgentMLP of 2N rows (head 1 of all agents, then head 2)."""

    def __init__(self, obs_dims: Sequence[int], act_width: int, hidden: Sequence[int]):
        super().__init__()
        self.n = len(obs_dims)
        in_oa = [act_width + o for o in obs_dims]
        self.net = AgentMLP(2 * self.n, in_oa * 2, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """obs [N, R, O], action [N, R, A] -> [2, N, R]."""
        return self.net(torch.cat([action, obs], -1))[..., 0].view(2, self.n, -1)  # both heads read the same input

    def first(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_{i,1} alone (acting, the actor's gradient): [N, R]. Head 2 is not evaluated, so the actor's
        backward does not run through it."""
        return self.net(torch.cat([action, obs], -1), slice(0, self.n))[..., 0]


# ---------------------------------------------------------------------------- I-BCQ, continuous


class IndependentBcq(Algorithm):
    """BCQ for each of ``len(obs_dims)`` agents, batched.

    Batches are agent-major: ``obs``/``next_obs`` [N, B, max obs_dim] and ``action`` [N, B, max act_dim],
    zero-padded; ``reward``, ``terminated`` [B]. The centralized baseline (``madata_algos/bcq.py``) is this
    class with one "agent" whose observation is the joint observation and whose action the joint action.
    """

    def __init__(
        self,
        obs_dims: Sequence[int],
        act_dims: Sequence[int],
        max_action: Sequence[float | Sequence[float]],
        config: BcqConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or BcqConfig()
        self.n = len(obs_dims)
        self.policy = BcqPolicy(obs_dims, act_dims, max_action, cfg)
        self.critic = TwinCritics(obs_dims, self.policy.A, cfg.critic_hidden)
        self.critic_target = copy.deepcopy(self.critic)
        self.to(device)
        self.optimizers = {
            "vae": torch.optim.Adam(self.policy.vae_parameters(), lr=cfg.lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.lr),
            "actor": torch.optim.Adam(self.policy.actor.parameters(), lr=cfg.lr),
        }

    @torch.no_grad()
    def next_value(
        self, next_obs: torch.Tensor, generator: torch.Generator | None = None, k: int | None = None
    ) -> torch.Tensor:
        """V(o') = :func:`bcq_value` over k (default n_target) candidates a_j = a~_j + xi'(o', a~_j), a~_j ~ G(o'): [N, B]."""
        k, (N, B, _) = k or self.cfg.n_target, next_obs.shape
        rep, cand = self.policy.candidates(next_obs, k, generator, target=True)
        q = self.critic_target(rep, cand).view(2, N, B, k)
        return bcq_value(q[0], q[1], self.cfg.lam)

    def target(self, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """BCQ's target for every agent's transition (:func:`td_target` of :meth:`next_value`): [N, B]."""
        return td_target(reward[None], terminated[None], self.next_value(next_obs, generator), self.cfg.gamma)

    def critic_loss(
        self, obs: torch.Tensor, action: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """sum_k (Q_k(o_i, a_i) - y_i)^2 for both critics of every agent, optionally weighted per transition.

        ``y``, ``weight`` [N, B]. Mean over the minibatch, summed over agents and the two critics
        (BCQ's reference sums the two critics' MSEs).
        """
        err = (self.critic(obs, action) - y[None]) ** 2  # [2, N, B]
        if weight is not None:
            err = err * weight[None]
        return err.mean(-1).sum()

    def critic_objective(self, obs, action, reward, next_obs, terminated, generator=None) -> torch.Tensor:
        """The critic step's loss: :meth:`critic_loss` on BCQ's target (MABCQ weighs it)."""
        return self.critic_loss(obs, action, self.target(reward, next_obs, terminated, generator))

    def steps(self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None):
        """BCQ's Algorithm 1 on a minibatch (shapes in the class docstring); ``state`` is not used."""
        return [
            ("vae", lambda: self.policy.vae_loss(obs, action, generator)),
            ("critic", lambda: self.critic_objective(obs, action, reward, next_obs, terminated, generator)),
            ("actor", lambda: self.policy.actor_loss(obs, self.critic.first, generator)),
        ]

    def after_steps(self) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.policy.actor_target, self.policy.actor, self.cfg.tau)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decentralized: agent i's best of n_act candidates from G_i(o_i) under Q_{i,1}. obs [N, B, O] -> [N, B, A]."""
        return self.policy.act(obs, self.critic.first, generator)


# ---------------------------------------------------------------------------- I-BCQ, discrete


class IndependentBcqDiscrete(Algorithm):
    """I-BCQ: discrete BCQ run by each agent on its own (o_i, a_i, r, o'_i), batched across agents.

    Batches: ``obs``/``next_obs`` [N, B, obs_dim], ``action`` [N, B] int64 (0-based), ``reward``, ``terminated`` [B].
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        n_actions: int,
        config: BcqDiscreteConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or BcqDiscreteConfig()
        self.n, self.k = n_agents, n_actions
        self.classifier = AgentMLP(n_agents, obs_dim, cfg.hidden, n_actions)  # G_i(a | o_i)
        self.critic = AgentMLP(n_agents, obs_dim, cfg.hidden, n_actions)  # Q_i(o_i, .)
        self.critic_target = copy.deepcopy(self.critic)
        self.to(device)
        self.optimizers = {
            "classifier": torch.optim.Adam(self.classifier.parameters(), lr=cfg.lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.lr),
        }

    def classifier_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Behaviour cloning of each agent's actions: cross-entropy of G_i, summed over agents."""
        return F.cross_entropy(self.classifier(obs).flatten(0, 1), action.flatten()) * self.n

    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor, next_action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """V(o') = Q'_i(o', argmax over allowed a' of Q_i(o', a')) for every agent: [N, R]; with
        ``next_action_mask`` [N, R, K], over the allowed actions available at o'."""
        allowed = available_allowed(allowed_actions(self.classifier(next_obs), self.cfg.threshold), next_action_mask)
        return discrete_bcq_value(self.critic(next_obs), self.critic_target(next_obs), allowed)

    @torch.no_grad()
    def target(self, reward, next_obs, terminated, next_action_mask=None) -> torch.Tensor:
        """Discrete BCQ's target for every agent (:func:`td_target` of :meth:`next_value`): [N, B]."""
        return td_target(reward[None], terminated[None], self.next_value(next_obs, next_action_mask), self.cfg.gamma)

    def critic_loss(self, obs, action, y, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Huber(Q_i(o_i, a_i) - y_i), mean over the minibatch (optionally weighted), summed over agents."""
        q = self.critic(obs).gather(-1, action[..., None])[..., 0]  # [N, B]
        err = F.smooth_l1_loss(q, y, reduction="none")
        if weight is not None:
            err = err * weight
        return err.mean(-1).sum()

    def critic_objective(
        self, obs, action, reward, next_obs, terminated, generator=None, next_action_mask=None
    ) -> torch.Tensor:
        """The critic step's loss: :meth:`critic_loss` on discrete BCQ's target (MABCQ weighs it)."""
        return self.critic_loss(obs, action, self.target(reward, next_obs, terminated, next_action_mask))

    def steps(
        self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None,
        action_mask=None, next_action_mask=None,
    ):  # fmt: skip
        """Discrete BCQ's iteration: the classifiers, then the critics (``next_action_mask`` [N, B, K]: the
        actions available at o', where the data stores them; ``action_mask`` is not needed: the classifier
        learns the data's own actions, which were available)."""
        return [
            ("classifier", lambda: self.classifier_loss(obs, action)),
            (
                "critic",
                lambda: self.critic_objective(obs, action, reward, next_obs, terminated, generator, next_action_mask),
            ),
        ]

    def after_steps(self) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.tau)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Agent i's allowed action of highest Q_i(o_i, .): obs [N, B, O] -> int64 [N, B]; with ``mask``
        [N, B, K], among the available actions."""
        ok = available_allowed(allowed_actions(self.classifier(obs), self.cfg.threshold), mask)
        return self.critic(obs).masked_fill(~ok, float("-inf")).argmax(-1)
