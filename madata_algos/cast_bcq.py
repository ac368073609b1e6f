"""CAST-BCQ: counterfactual sample-average approximation with subteam masking (AAMAS 2023).

Continuous actions (MaMuJoCo). The update follows Algorithm 1: train the per-agent VAEs
(Eq. 3), the twin joint critics on n candidate joint actions (Eq. 6, combined by Eq. 10),
the individual critics on the counterfactual contribution with subteam masking
(Eqs. 8-9), and the per-agent perturbation actors through their individual critics.
Execution is decentralized: agent i acts on o_i alone (``CastBcq.act``, I-BCQ's rule).
Agents are batched: every per-agent network is one :class:`AgentMLP`.

Notation: N agents; a joint critic Q(o, a) on the global state (or joint observation) and
the joint action; agent i's teammates -i; ST(i) the subteams of -i (the empty one
included); a^d the default action (zeros in MaMuJoCo, no-op / stay for discrete tasks).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch

from madata_algos.configs import CastBcqConfig
from madata_algos.ibcq import BcqPolicy, TwinCritics, bcq_target, soft_clipped_double_q
from madata_algos.networks import AgentMLP, Algorithm, soft_update


def subteam_masks(
    n_agents: int, m: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Masks of M subteams per agent: ``[M, N, N]`` bool, ``mask[m, i, j]`` = teammate j is masked
    (takes the default action) in agent i's m-th sample; ``mask[m, i, i]`` is always False.

    Subteams are drawn uniformly from ST(i), all 2^(N-1) subsets of the teammates, the
    empty one included (the reference code never drew it for N > 2). When M >= 2^(N-1)
    every subteam is used exactly once instead (M is then 2^(N-1)), so N = 2 gives the
    exact average over {} and {other}, as the reference code does.
    """
    if n_agents < 1 or m < 1:
        raise ValueError(f"subteam_masks: need n_agents >= 1 and M >= 1, got {n_agents}, {m}")
    others = n_agents - 1
    if m >= 2**others:
        subsets = torch.tensor(list(itertools.product([False, True], repeat=others)), dtype=torch.bool, device=device)
        subsets = subsets.reshape(2**others, others)  # [S, N-1], every subteam once
        picked = subsets[:, None, :].expand(-1, n_agents, -1)  # the same enumeration for each agent
    else:
        picked = torch.rand((m, n_agents, others), generator=generator, device=device) < 0.5
    masks = torch.zeros((picked.shape[0], n_agents, n_agents), dtype=torch.bool, device=device)
    cols = torch.tensor([[j for j in range(n_agents) if j != i] for i in range(n_agents)], device=device)  # [N, N-1]
    if others:
        masks.scatter_(2, cols[None].expand(picked.shape[0], -1, -1), picked)
    return masks


def counterfactual_contribution(
    joint_q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    state: torch.Tensor,
    data_action: torch.Tensor,
    policy_action: torch.Tensor,
    default_action: torch.Tensor,
    masks: torch.Tensor,
) -> torch.Tensor:
    """Eq. 8: Delta_i = 1/M sum_m [ Q(o, (a_i, a^m_-i)) - Q(o, (a^d_i, a^m_-i)) ] for every agent i.

    ``state`` [B, S]; ``data_action`` a_i from the data, ``policy_action`` the joint
    policy's actions, ``default_action`` a^d: [B, N, A] each (``default_action`` may be
    [N, A]); ``masks`` [M, N, N] from :func:`subteam_masks`. Teammate j of agent i takes
    the default action where ``masks[m, i, j]``, else the joint policy's action. All
    M x N x 2 joint actions go through ``joint_q`` (state [R, S], joint action [R, N, A]
    -> [R]) in one call. Returns Delta [B, N].
    """
    B, N, A = data_action.shape
    M = masks.shape[0]
    default = default_action.expand(B, N, A)
    # teammates' actions a^m_-i: [M, N(i), B, N(j), A]
    mask = masks[:, :, None, :, None]
    teammates = torch.where(mask, default[None, None], policy_action[None, None])
    own = torch.eye(N, dtype=torch.bool, device=data_action.device)[None, :, None, :, None]  # j == i
    with_a_i = torch.where(own, data_action[None, None], teammates)
    with_default = torch.where(own, default[None, None], teammates)
    joint = torch.stack([with_a_i, with_default])  # [2, M, N, B, N, A]
    rows = joint.reshape(-1, N, A)
    s = state[None, None, None].expand(2, M, N, B, state.shape[-1]).reshape(-1, state.shape[-1])
    q = joint_q(s, rows).reshape(2, M, N, B)
    return (q[0] - q[1]).mean(dim=0).transpose(0, 1)  # mean over the M subteams -> [B, N]


# ---------------------------------------------------------------------------- the algorithm


class CastBcq(Algorithm):
    """CAST-BCQ for ``n_agents`` agents with observation sizes ``obs_dims`` and action sizes
    ``act_dims`` (each agent's actions in [-max_action_i, max_action_i]).

    Each agent's own parts are BCQ's, as in I-BCQ: ``policy`` (:class:`~madata_algos.ibcq.BcqPolicy`:
    the VAE G_{w^i}(o_i) of Eq. 3 and the perturbation actor xi_i trained through Q_i) and ``critic``
    (:class:`~madata_algos.ibcq.TwinCritics`: the twin individual critics Q_i(o_i, a_i) used for
    decentralized execution). What CAST-BCQ adds is the joint critic (Eqs. 6, 10) and the target of
    Q_i: the counterfactual contribution (Eqs. 8-9) instead of a Bellman backup, so Q_i has no
    target network.

    Batches come as agent-major tensors: ``obs`` [N, B, max obs_dim] (zero-padded),
    ``action`` [N, B, max act_dim], ``state`` [B, S] for the joint critic.
    """

    def __init__(
        self,
        obs_dims: list[int],
        act_dims: list[int],
        state_dim: int,
        max_action: list[float],
        config: CastBcqConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or CastBcqConfig()
        self.n, self.obs_dims = len(obs_dims), list(obs_dims)
        self.policy = BcqPolicy(obs_dims, act_dims, max_action, cfg)
        self.A = self.policy.A
        self.critic = TwinCritics(obs_dims, self.A, cfg.critic_hidden)  # Q_i, regressed on Delta_i (Eq. 9)
        self.twins = 2 if cfg.clipped_double_q else 1
        self.lam = cfg.lam  # one critic: q[0] is q[-1], and Eq. 10 gives it back whatever lambda
        joint_in = state_dim + self.n * self.A
        self.joint_critic = AgentMLP(self.twins, joint_in, cfg.critic_hidden, 1)  # Q(o, a; phi^1), Q(o, a; phi^2)
        self.joint_critic_target = copy.deepcopy(self.joint_critic)
        self.to(device)
        self.optimizers = {
            "vae": torch.optim.Adam(self.policy.vae_parameters(), lr=cfg.lr),
            "joint_critic": torch.optim.Adam(self.joint_critic.parameters(), lr=cfg.lr),
            "individual_critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.lr),
            "actor": torch.optim.Adam(self.policy.actor.parameters(), lr=cfg.lr),
        }

    # ------------------------------------------------------------ the joint critic

    def joint_values(self, state: torch.Tensor, joint_action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Each joint critic on its own: state [R, S], joint action [R, N, A] -> [twins, R]."""
        net = self.joint_critic_target if target else self.joint_critic
        x = torch.cat([state, joint_action.flatten(1)], -1)
        return net(x[None]).squeeze(-1)  # every critic reads the same input

    def joint_q(self, state: torch.Tensor, joint_action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Eq. 10 over the twin joint critics: state [R, S], joint action [R, N, A] -> [R]."""
        q = self.joint_values(state, joint_action, target)
        return soft_clipped_double_q(q[0], q[-1], self.lam)  # one critic: q[0] is q[-1]

    # ------------------------------------------------------------ losses, one per equation

    def joint_critic_loss(
        self, state, action, reward, next_state, next_obs, terminated, generator=None
    ) -> torch.Tensor:
        """Eq. 6: [r + gamma * (1 - terminated) * max_j Q'(o', a'_j) - Q^k(o, a)]^2 for both critics k,
        with a'_j (j = 1..n) candidate joint actions from the agents' VAEs and target actors, and Q'
        the twin target critics combined by Eq. 10 (:func:`~madata_algos.ibcq.bcq_target`)."""
        n, B = self.cfg.n_target, state.shape[0]
        with torch.no_grad():
            _, cand = self.policy.candidates(next_obs, n, generator, target=True)  # [N, B*n, A]
            q = self.joint_values(next_state.repeat_interleave(n, dim=0), cand.transpose(0, 1), target=True)
            q = q.view(self.twins, B, n)
            y = bcq_target(reward, terminated, q[0], q[-1], self.cfg.gamma, self.lam)
        q_now = self.joint_values(state, action.transpose(0, 1))  # [twins, B]
        return ((q_now - y[None]) ** 2).mean(-1).sum()

    def joint_policy_action(self, state, obs, k: int, generator=None) -> torch.Tensor:
        """Sec. 3.2's joint policy pi(o): of k candidate joint actions drawn from the agents' VAEs and perturbed
        by their actors, the one with the highest joint value (Eq. 10, current critics). [B, N, A]."""
        B = state.shape[0]
        _, cand = self.policy.candidates(obs, k, generator)  # [N, B*k, A], row b's at b*k .. b*k+k-1
        q = self.joint_q(state.repeat_interleave(k, dim=0), cand.transpose(0, 1)).view(B, k)
        best = cand.view(self.n, B, k, self.A)[:, torch.arange(B, device=state.device), q.argmax(-1)]
        return best.transpose(0, 1)

    def counterfactual_target(self, state, obs, action, generator=None) -> torch.Tensor:
        """Eq. 8 with the current joint critic (no gradient): Delta [B, N].

        Teammates follow the joint policy unless masked: one VAE sample + perturbation each, or with
        ``teammate_candidates = k`` the best of k joint candidates (:meth:`joint_policy_action`).
        Ablations: ``csaa=False`` regresses on Q(o, (a_i, pi_-i)) itself (no baseline, no
        masking); ``subteam_sampling=False`` keeps the baseline with the empty subteam only.
        """
        N, dev, k = self.n, state.device, self.cfg.teammate_candidates
        with torch.no_grad():
            if k:  # the joint policy of Eq. 6-7: the best joint candidate under the joint critic
                pi = self.joint_policy_action(state, obs, k, generator)
            else:  # one draw of each agent's policy
                pi = self.policy.sample(obs, generator).transpose(0, 1)  # [B, N, A]
            a = action.transpose(0, 1)  # [B, N, A]
            if not self.cfg.csaa:
                own = torch.eye(N, dtype=torch.bool, device=dev)[:, None, :, None]
                joint = torch.where(own, a[None], pi[None])  # [N(i), B, N, A]
                return self.joint_q(state.repeat(N, 1), joint.reshape(-1, N, self.A)).view(N, -1).transpose(0, 1)
            if self.cfg.subteam_sampling:
                masks = subteam_masks(N, self.cfg.subteams, generator, dev)
            else:
                masks = torch.zeros(1, N, N, dtype=torch.bool, device=dev)
            default = torch.zeros(N, self.A, device=dev)  # a^d = 0 in MaMuJoCo
            return counterfactual_contribution(self.joint_q, state, a, pi, default, masks)

    def individual_critic_loss(self, obs, action, delta) -> torch.Tensor:
        """Eq. 9: (Q_i(o_i, a_i) - Delta_i)^2 for both heads of every agent's Q_i (mean over the batch, summed)."""
        err = (self.critic(obs, action) - delta.transpose(0, 1)[None]) ** 2  # [2, N, B]
        if self.cfg.delta_weight:
            err = err * delta.transpose(0, 1).exp().clamp(max=10)[None]
        return err.mean(-1).sum()

    # ------------------------------------------------------------ Algorithm 1, one iteration

    def steps(self, obs, action, reward, next_obs, terminated, state, next_state, generator=None):
        """One iteration of Algorithm 1 on a minibatch (shapes in the class docstring)."""
        return [
            ("vae", lambda: self.policy.vae_loss(obs, action, generator)),  # lines 3-4
            (
                "joint_critic",  # lines 5-7
                lambda: self.joint_critic_loss(state, action, reward, next_state, next_obs, terminated, generator),
            ),
            (
                "individual_critic",  # lines 8-11
                lambda: self.individual_critic_loss(
                    obs, action, self.counterfactual_target(state, obs, action, generator)
                ),
            ),
            ("actor", lambda: self.policy.actor_loss(obs, self.critic.first, generator)),
        ]

    def after_steps(self) -> None:
        soft_update(self.joint_critic_target, self.joint_critic, self.cfg.tau)  # line 13
        soft_update(self.policy.actor_target, self.policy.actor, self.cfg.tau)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decentralized execution: agent i's best of n_act candidates from G_i(o_i) under Q_{i,1} (I-BCQ's rule)."""
        return self.policy.act(obs, self.critic.first, generator)
