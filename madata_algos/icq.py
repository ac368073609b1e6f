"""ICQ-MA: implicit constraint Q-learning with a linear value decomposition.

Yang et al., "Believe What You See: Implicit Constraint Approach for Offline Multi-Agent
Reinforcement Learning", NeurIPS 2021. Values are estimated only from the dataset's own
actions, weighted by the implicit-constraint ratio pi*(a|s) / mu(a|s) = exp(Q(s, a) / alpha) / Z(s)
(the ICQ operator, Sec. 4.1); each agent's policy is advantage-weighted behaviour cloning of
the decomposed constrained-optimal joint policy (ICQ-MA, Sec. 4.2). The joint value is
Q_tot(s, a) = sum_i w_i(s) Q_i(o_i, a_i) + b(s) with w_i(s) >= 0. Execution is
decentralized: agent i acts on o_i alone. Continuous actions: :class:`IcqMa`; discrete: :class:`IcqMaDiscrete`.

Equations are cited by section and name: the paper's method section was not available, so
each docstring gives the formula itself, checked against the authors' public code
(YiqinYang/ICQ, ICQ-MA/) where the two could differ; docs/algorithms.md lists each difference.

One iteration (:meth:`IcqMa.update`), in the paper's order (critic, then policy):

1. :meth:`IcqMa.value_loss`: V(s) <- V(s) + rho(s, a) (Q'_tot(s, a) - V(s)) at the data's joint
   action a, rho = B * softmax over the minibatch of (Q'_tot - V(s)) / alpha, V(s) held fixed
   (the ICQ operator's expectation E_{a ~ mu}[rho Q'_tot]; its partition function Z(s)
   estimated on the minibatch relative to each state's value, see below);
2. :meth:`IcqMa.critic_loss`: Q_tot(s, a) <- r + gamma (1 - terminated) V(s');
3. :meth:`IcqMa.actor_loss`: -sum_i k_i(s) B softmax_batch(A_i / beta) log pi_i(a_i | o_i),
   k_i = w_i / sum_j w_j the mixer's normalized weights (the authors' code);
4. Polyak averaging of the target critics and mixer.

Choices where the paper or our data leave a detail open:

- Z(s) = E_{a ~ mu(.|s)} exp(Q(s, a) / alpha) is per state. The reference code estimates it
  as the minibatch mean of exp(Q'_tot / alpha), over *different* states, so states valued
  above the batch get rho > 1 whatever their actions. On MaMuJoCo, whose values spread over
  hundreds (alpha = 1000), that made V(s) diverge on every task (docs/results/table2_analysis.md).
  Here the minibatch estimates E_mu[exp((Q - V(s)) / alpha) | s] instead, with V(s) the
  state-value network held fixed, and V(s) regresses on V(s) + rho (Q'_tot - V(s)): a state's
  own level cancels from rho, and each target moves V towards Q' whatever the values' sign
  (rho > 0). ``state_baseline=False`` (``--no-state-baseline``) restores the reference's
  estimate, rho Q'_tot with rho = B softmax_batch(Q'_tot / alpha).

- The paper's target r + gamma rho' Q'_tot(s', a') needs the dataset's *next* joint action
  a'; a transition loader has none. V(s) is regressed on the estimate of rho Q'_tot at the
  batch's own (s, a) instead, whose conditional mean given s is E_{a ~ mu(.|s)}[rho Q'_tot(s, a)],
  so the critic's fixed point is the paper's; the cost is one state-value network used in
  training only. No policy action ever enters a target.
- ICQ-MA trains the critic with a TD(lambda)-like multi-step target on whole trajectories;
  the loader gives 1-step transitions, so this is the 1-step (lambda = 0) operator.
- Policy weights as in the authors' code (ICQ-MA/src/learners/offpg_learner.py): the
  normalized advantage weight B softmax_batch(A_i / beta) times the mixer's normalized
  weight k_i(s) = w_i(s) / sum_j w_j(s), outside the exponent, so beta keeps the meaning it
  has there whatever scale the mixer's weights drift to. The mixer keeps b(s) in Q_tot (the
  reference code drops it). Adam instead of the reference's RMSprop, Polyak targets instead
  of hard copies every 600 steps, no gradient-norm clip (every weight is bounded by B
  through the softmax).
- The reference's per-agent critic sees (s, o_i, agent id) with one network shared by all
  agents; here Q_i(o_i, a_i) is each agent's own network on its own observation, as in the
  one public MaMuJoCo ICQ (ComaDICE's). Its softmax normalizes over the minibatch; the
  reference's over the episodes of a batch at one time step.
- Continuous pi_i: a Gaussian with a tanh-bounded mean and a state-independent std (the
  single-agent ICQ code's actor). Its log-density of the data's action is exact at the
  bounds (a tanh-squashed Gaussian's is infinite there); baseline draws are clipped to the
  action box, as the environment would; execution takes the mean, inside the box.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madata.errors import SchemaError
from madata_algos.configs import IcqConfig, IcqDiscreteConfig
from madata_algos.ibcq import td_target
from madata_algos.networks import MLP, AgentMLP, Algorithm, soft_update


def implicit_constraint_value(q_tot: torch.Tensor, alpha: float, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """ICQ operator (Sec. 4.1), a per-sample estimate of E_{a ~ mu(.|s)}[rho Q(s, a)] with rho = exp(Q / alpha) / Z(s),
    Z(s) = E_{a ~ mu(.|s)} exp(Q(s, a) / alpha).

    ``q_tot`` [B]: Q'_tot at the data's own (s, a) pairs -> [B]. The data hold one action per
    state, so Z(s) is estimated on the minibatch. With ``baseline`` [B], a value b(s) per
    state: Z(s) = exp(b(s) / alpha) E_mu[exp((Q - b) / alpha) | s], the minibatch estimates
    the second factor, rho = B softmax_batch((Q - b) / alpha), and the estimate is
    b + rho (Q - b) (equal to E_mu[rho Q | s] wherever E_mu[rho | s] = 1). Both rho and the
    estimate's offset from b then depend on Q - b alone, so neither a state's level nor the
    sign of the values enters. Without a baseline (the reference code's), rho =
    B softmax_batch(Q / alpha) and the estimate is rho Q: Z is taken to be the same for every
    state, states valued above the batch get rho > 1 whatever their actions, and where values
    spread over more than about alpha, rho > 1 / gamma feeds back through the TD target without
    bound. The ratios average to 1 over the batch; alpha -> inf gives rho = 1 (SARSA on the
    data), alpha -> 0 puts all weight on the highest Q - b.
    """
    b = torch.zeros_like(q_tot) if baseline is None else baseline
    rho = q_tot.shape[-1] * torch.softmax((q_tot - b) / alpha, dim=-1)
    return b + rho * (q_tot - b)  # = E_mu[rho Q | s] when E_mu[rho | s] = 1, and shifts with Q and b


def advantage_weights(advantage: torch.Tensor, credit: torch.Tensor, beta: float) -> torch.Tensor:
    """ICQ-MA policy weights (Sec. 4.2, the authors' form): k_i(s) exp(A_i / beta) / Z_i, Z_i the minibatch mean of
    exp(A_i / beta), k_i(s) = w_i(s) / sum_j w_j(s) the mixer's normalized weights.

    ``advantage`` A_i and ``credit`` w_i(s) >= 0: [N, B] -> [N, B]; each agent's exp-factor averages to 1.
    """
    k = credit / credit.sum(0, keepdim=True).clamp_min(1e-8)
    return k * advantage.shape[-1] * torch.softmax(advantage / beta, dim=-1)


class LinearMixer(nn.Module):
    """Q_tot = sum_i w_i(s) Q_i + b(s) with w_i(s) >= 0, so dQ_tot / dQ_i >= 0 everywhere.

    QMIX's hypernetworks without the nonlinearity between its two mixing layers (ICQ's
    mixer): w_i(s) = sum_e |W1(s)|_ie |W2(s)|_e and b(s) = sum_e B1(s)_e |W2(s)|_e + V_b(s).
    """

    def __init__(self, n_agents: int, state_dim: int, embed: int):
        super().__init__()
        self.n, self.embed = n_agents, embed
        self.hyper_w1 = nn.Linear(state_dim, n_agents * embed)
        self.hyper_w2 = nn.Linear(state_dim, embed)
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_b2 = MLP(state_dim, [embed], 1)

    def coefficients(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state [B, S] -> (w [N, B] >= 0, b [B])."""
        w1 = self.hyper_w1(state).abs().view(-1, self.n, self.embed)  # [B, N, E]
        w2 = self.hyper_w2(state).abs()  # [B, E]
        w = (w1 @ w2[..., None])[..., 0]  # [B, N]
        b = (self.hyper_b1(state) * w2).sum(-1) + self.hyper_b2(state)[..., 0]
        return w.T, b

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Q_i [N, B], state [B, S] -> Q_tot [B]."""
        w, b = self.coefficients(state)
        return (w * q).sum(0) + b


class _IcqBase(Algorithm):
    """What both kinds of ICQ-MA share: the mixer, V(s), the target copies, the three losses and the update.

    Subclasses build ``critic`` (Q_i) and ``actor`` (pi_i) and define :meth:`agent_q`, :meth:`log_prob`,
    :meth:`policy_baseline` and :meth:`act` for their kind of action.
    """

    cfg: IcqDiscreteConfig

    def _finish(self, n_agents: int, state_dim: int, actor_params: list[nn.Parameter], device) -> None:
        cfg = self.cfg
        self.mixer = LinearMixer(n_agents, state_dim, cfg.mixer_embed)
        self.state_value = MLP(state_dim, cfg.critic_hidden, 1)  # V(s): the ICQ operator's next-state value
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.mixer_target = copy.deepcopy(self.mixer).requires_grad_(False)
        self.to(device)
        self.optimizers = {
            "value": torch.optim.Adam(self.state_value.parameters(), lr=cfg.critic_lr),
            "critic": torch.optim.Adam([*self.critic.parameters(), *self.mixer.parameters()], lr=cfg.critic_lr),
            "actor": torch.optim.Adam(actor_params, lr=cfg.actor_lr),
        }

    def joint_q(
        self, obs: torch.Tensor, action: torch.Tensor, state: torch.Tensor, target: bool = False
    ) -> torch.Tensor:
        """Q_tot(s, a) = sum_i w_i(s) Q_i(o_i, a_i) + b(s) -> [B]; ``target``: the Polyak-averaged copies."""
        critic, mixer = (self.critic_target, self.mixer_target) if target else (self.critic, self.mixer)
        return mixer(self.agent_q(critic, obs, action), state)

    # ------------------------------------------------------------ losses, one per equation

    def value_loss(self, obs: torch.Tensor, action: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """ICQ operator's next-state value (Sec. 4.1): (V(s) - [V(s) + rho (Q'_tot(s, a) - V(s))])^2 at the data's
        joint action a, rho = B softmax_batch((Q'_tot - V(s)) / alpha), Q'_tot from the target critics and mixer,
        V(s) inside the target held fixed (:func:`implicit_constraint_value`; ``state_baseline=False``: the
        reference's rho Q'_tot, rho = B softmax_batch(Q'_tot / alpha))."""
        v = self.state_value(state)[..., 0]
        with torch.no_grad():
            baseline = v.detach() if self.cfg.state_baseline else None
            target = implicit_constraint_value(self.joint_q(obs, action, state, target=True), self.cfg.alpha, baseline)
        return F.mse_loss(v, target)

    def critic_loss(self, obs, action, reward, terminated, state, next_state) -> torch.Tensor:
        """ICQ-MA's critic, 1-step (Sec. 4.2 with lambda = 0): (Q_tot(s, a) - [r + gamma (1 - terminated) V(s')])^2,
        trained through the per-agent critics Q_i and the mixer together."""
        with torch.no_grad():
            y = td_target(reward, terminated, self.state_value(next_state)[..., 0], self.cfg.gamma)
        return F.mse_loss(self.joint_q(obs, action, state), y)

    def actor_loss(self, obs, action, state, generator: torch.Generator | None = None, mask=None) -> torch.Tensor:
        """ICQ-MA's decomposed policy objective (Sec. 4.2): -sum_i mean_batch [k_i(s) exp(A_i / beta) / Z_i]
        log pi_i(a_i | o_i), A_i = Q_i(o_i, a_i) - E_{pi_i} Q_i(o_i, .) (:func:`advantage_weights`); with
        ``mask`` (discrete: the available actions [N, B, K]), pi_i over the available actions only."""
        with torch.no_grad():
            advantage = self.agent_q(self.critic, obs, action) - self.policy_baseline(obs, generator, mask)
            credit, _ = self.mixer.coefficients(state)
            weights = advantage_weights(advantage, credit, self.cfg.beta)
        return -(weights * self.log_prob(obs, action, mask)).mean(-1).sum()

    # ------------------------------------------------------------ one iteration

    def steps(
        self, obs, action, reward, next_obs, terminated, state, next_state, generator=None, action_mask=None,
        next_action_mask=None,
    ):  # fmt: skip
        """One iteration on a minibatch (shapes in the class docstring): value, critic, then policy.
        ``next_obs`` and ``next_action_mask`` are not needed: the next-state value is V(s') on the global
        state. ``action_mask`` (discrete data that stores them): the policy is over the available actions."""
        return [
            ("value", lambda: self.value_loss(obs, action, state)),
            ("critic", lambda: self.critic_loss(obs, action, reward, terminated, state, next_state)),
            ("actor", lambda: self.actor_loss(obs, action, state, generator, action_mask)),
        ]

    def after_steps(self) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.mixer_target, self.mixer, self.cfg.tau)


class IcqMa(_IcqBase):
    """ICQ-MA with continuous actions for ``len(obs_dims)`` agents on the global state of size ``state_dim``.

    Agent i acts in [-max_action_i, max_action_i]^act_dims_i. Batches are agent-major: ``obs``/``next_obs``
    [N, B, O] zero-padded to the largest obs dim, ``action`` [N, B, A] zero-padded, ``reward``/``terminated``
    [B], ``state``/``next_state`` [B, S].
    """

    def __init__(
        self,
        obs_dims: Sequence[int],
        act_dims: Sequence[int],
        state_dim: int,
        max_action: Sequence[float],
        config: IcqConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or IcqConfig()
        if not obs_dims or len(act_dims) != len(obs_dims) or len(max_action) != len(obs_dims):
            raise SchemaError(
                f"IcqMa: {len(obs_dims)} agents in obs_dims, but {len(act_dims)} act_dims and "
                f"{len(max_action)} max_action values; give one per agent"
            )
        n = self.n = len(obs_dims)
        self.obs_dims, self.act_dims, self.A = list(obs_dims), list(act_dims), max(act_dims)
        self.register_buffer("max_action", torch.tensor(max_action, dtype=torch.float32)[:, None, None])  # [N, 1, 1]
        # action components an agent does not have (padding) are always 0
        mask = torch.arange(self.A)[None, :] < torch.tensor(self.act_dims)[:, None]
        self.register_buffer("act_mask", mask.float()[:, None, :])  # [N, 1, A]
        # input [a_i (width A for all), o_i (zero-padded to O)]: padded observation columns are
        # exactly the weight rows AgentLinear keeps at 0
        self.critic = AgentMLP(n, [self.A + o for o in self.obs_dims], cfg.critic_hidden, 1)  # Q_i(o_i, a_i)
        self.actor = AgentMLP(n, self.obs_dims, cfg.actor_hidden, self.A)  # mean of pi_i(. | o_i)
        self.log_std = nn.Parameter(torch.zeros(n, 1, self.A))  # squashed into [log_std_min, log_std_max]
        self._finish(n, state_dim, [*self.actor.parameters(), self.log_std], device)

    def agent_q(self, critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_i(o_i, a_i) of every agent: obs [N, R, O], action [N, R, A] -> [N, R]."""
        return critic(torch.cat([action, obs], -1))[..., 0]

    def policy_mean(self, obs: torch.Tensor) -> torch.Tensor:
        """pi_i's mean, inside the action box: obs [N, R, O] -> [N, R, A] (0 in padded components)."""
        return torch.tanh(self.actor(obs)) * self.max_action * self.act_mask

    def policy_log_std(self) -> torch.Tensor:
        """[N, 1, A], in [log_std_min, log_std_max]."""
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return lo + torch.sigmoid(self.log_std) * (hi - lo)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, mask: None = None) -> torch.Tensor:
        """log pi_i(a_i | o_i) of every agent, a Gaussian over the real components: [N, B] (continuous actions
        have no masks)."""
        log_std = self.policy_log_std()
        z = (action - self.policy_mean(obs)) * torch.exp(-log_std)
        per_dim = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        return (per_dim * self.act_mask).sum(-1)

    @torch.no_grad()
    def policy_baseline(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, mask: None = None
    ) -> torch.Tensor:
        """E_{a ~ pi_i(.|o_i)} Q_i(o_i, a): the mean over ``baseline_samples`` draws clipped to the action box. [N, B]."""
        N, B, _ = obs.shape
        k = self.cfg.baseline_samples
        mean = self.policy_mean(obs)[:, None]  # [N, 1, B, A]
        eps = torch.randn((N, k, B, self.A), device=obs.device, dtype=obs.dtype, generator=generator)
        a = mean + self.policy_log_std().exp()[:, None] * eps  # [N, k, B, A]
        box = self.max_action[:, None]
        a = torch.maximum(torch.minimum(a, box), -box) * self.act_mask[:, None]
        rep = obs[:, None].expand(N, k, B, obs.shape[-1])
        return self.agent_q(self.critic, rep.reshape(N, k * B, -1), a.reshape(N, k * B, self.A)).view(N, k, B).mean(1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decentralized execution on each agent's own o_i: the mean action, inside the box. [N, B, O] -> [N, B, A]."""
        return self.policy_mean(obs)


class IcqMaDiscrete(_IcqBase):
    """ICQ-MA with ``n_actions`` discrete actions per agent. ``action`` int64 [N, B]; otherwise as :class:`IcqMa`."""

    def __init__(
        self,
        obs_dims: Sequence[int],
        state_dim: int,
        n_actions: int,
        config: IcqDiscreteConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or IcqDiscreteConfig()
        if not obs_dims or n_actions < 2:
            raise SchemaError(
                f"IcqMaDiscrete: need at least one agent and 2 actions, got {len(obs_dims)} and {n_actions}"
            )
        n = self.n = len(obs_dims)
        self.n_actions = n_actions
        self.critic = AgentMLP(n, list(obs_dims), cfg.critic_hidden, n_actions)  # Q_i(o_i, .)
        self.actor = AgentMLP(n, list(obs_dims), cfg.actor_hidden, n_actions)  # logits of pi_i(. | o_i)
        self._finish(n, state_dim, list(self.actor.parameters()), device)

    def agent_q(self, critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_i(o_i, a_i) of every agent: obs [N, R, O], action int64 [N, R] -> [N, R]."""
        return critic(obs).gather(-1, action[..., None])[..., 0]

    def logits(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pi_i's logits [N, R, K]; with ``mask`` [N, R, K], unavailable actions get probability 0."""
        logits = self.actor(obs)
        return logits if mask is None else logits.masked_fill(~mask, torch.finfo(logits.dtype).min)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log pi_i(a_i | o_i) of every agent: [N, B]."""
        return F.log_softmax(self.logits(obs, mask), -1).gather(-1, action[..., None])[..., 0]

    @torch.no_grad()
    def policy_baseline(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E_{a ~ pi_i(.|o_i)} Q_i(o_i, a), the exact sum over actions: [N, B]."""
        return (torch.softmax(self.logits(obs, mask), -1) * self.critic(obs)).sum(-1)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decentralized execution: each agent's most probable (available) action. [N, B, O] -> int64 [N, B]."""
        return self.logits(obs, mask).argmax(-1)
