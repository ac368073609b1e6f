"""CAST-BCQ for discrete actions (the paper's StarCraft setting; here the grid world and SMAX).

The generative model of agent i is a behaviour classifier G_i(a_i | o_i) (BCQ's
discrete variant): an action is allowed when G_i(a|o_i) / max_a' G_i(a'|o_i) >= threshold.
CAST-BCQ's joint critic Q(s, a) takes the one-hot joint action and is trained by Eq. 6
with the max over the joint actions whose every component is allowed, combining twin
critics by Eq. 10; the individual critic Q_i(o_i, .) has one output per action and is
regressed on the counterfactual contribution (Eqs. 8-9) with masked teammates taking the
default (no-op) action. Execution: agent i takes the allowed action of highest Q_i.

Discrete I-BCQ is :class:`~madata_algos.ibcq.IndependentBcqDiscrete`.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F

from madata_algos.cast_bcq import counterfactual_contribution, subteam_masks
from madata_algos.configs import CastBcqDiscreteConfig
from madata_algos.ibcq import allowed_actions, soft_clipped_double_q, td_target
from madata_algos.networks import AgentMLP, Algorithm, soft_update


class CastBcqDiscrete(Algorithm):
    """N agents with ``obs_dim`` observations and ``n_actions`` actions each; ``default_action`` the no-op.

    Batches: ``obs``/``next_obs`` [N, B, obs_dim], ``action`` [N, B] int64, ``state``/``next_state`` [B, S].
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        n_actions: int,
        state_dim: int,
        default_action: int,
        config: CastBcqDiscreteConfig | None = None,
        device="cpu",
    ):
        super().__init__()
        self.cfg = cfg = config or CastBcqDiscreteConfig()
        self.n, self.k, self.default = n_agents, n_actions, default_action
        self.classifier = AgentMLP(n_agents, obs_dim, cfg.hidden, n_actions)  # G_i(a_i | o_i)
        self.twins = 2 if cfg.clipped_double_q else 1
        self.lam = cfg.lam  # one critic: q[0] is q[-1], and Eq. 10 gives it back whatever lambda
        self.joint_critic = AgentMLP(self.twins, state_dim + n_agents * n_actions, cfg.hidden, 1)  # twin Q(s, a)
        self.ind_critic = AgentMLP(n_agents, obs_dim, cfg.hidden, n_actions)  # Q_i(o_i, .)
        self.joint_critic_target = copy.deepcopy(self.joint_critic)
        # every joint action, [K^N, N]
        self.register_buffer("joint_actions", torch.tensor(list(itertools.product(range(n_actions), repeat=n_agents))))
        self.to(device)
        self.optimizers = {
            "classifier": torch.optim.Adam(self.classifier.parameters(), lr=cfg.lr),
            "joint_critic": torch.optim.Adam(self.joint_critic.parameters(), lr=cfg.lr),
            "individual_critic": torch.optim.Adam(self.ind_critic.parameters(), lr=cfg.lr),
        }

    def joint_q(self, state: torch.Tensor, joint_action: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Eq. 10 over the twin joint critics: state [R, S], joint action [R, N] int (or [R, N, 1]) -> [R]."""
        a = joint_action.reshape(joint_action.shape[0], self.n).long()
        x = torch.cat([state, F.one_hot(a, self.k).float().flatten(1)], -1)
        q = (self.joint_critic_target if target else self.joint_critic)(x[None]).squeeze(-1)
        return soft_clipped_double_q(q[0], q[-1], self.lam)  # one critic: q[0] is q[-1]

    def greedy_joint(
        self, state: torch.Tensor, obs: torch.Tensor, target: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint policy: the allowed joint action of highest Q. Returns (actions [B, N], Q [B])."""
        B, J = state.shape[0], self.joint_actions.shape[0]
        ok = allowed_actions(self.classifier(obs), self.cfg.threshold)  # [N, B, K]
        cand_ok = ok.permute(1, 0, 2)[:, torch.arange(self.n), self.joint_actions].all(-1)  # [B, J]
        q = self.joint_q(state.repeat_interleave(J, 0), self.joint_actions.repeat(B, 1), target).view(B, J)
        q = q.masked_fill(~cand_ok, float("-inf"))
        best = q.argmax(1)
        return self.joint_actions[best], q.gather(1, best[:, None])[:, 0]

    def classifier_loss(self, obs, action) -> torch.Tensor:
        """Behaviour cloning of each agent's actions: cross-entropy of G_i."""
        logits = self.classifier(obs)  # [N, B, K]
        return F.cross_entropy(logits.flatten(0, 1), action.flatten(), reduction="mean") * self.n

    def joint_critic_loss(self, state, action, reward, next_state, next_obs, terminated) -> torch.Tensor:
        """Eq. 6 over allowed joint actions, both critics."""
        with torch.no_grad():
            _, q_next = self.greedy_joint(next_state, next_obs, target=True)
            y = td_target(reward, terminated, q_next, self.cfg.gamma)
        a = F.one_hot(action.transpose(0, 1), self.k).float().flatten(1)
        q = self.joint_critic(torch.cat([state, a], -1)[None]).squeeze(-1)  # [twins, B]
        return ((q - y[None]) ** 2).mean(-1).sum()

    def counterfactual_target(self, state, obs, action, generator=None) -> torch.Tensor:
        """Eq. 8 with no-op defaults; Delta [B, N]."""
        with torch.no_grad():
            pi, _ = self.greedy_joint(state, obs)  # [B, N]
            a = action.transpose(0, 1)
            if not self.cfg.csaa:
                own = torch.eye(self.n, dtype=torch.bool, device=state.device)[:, None, :]
                joint = torch.where(own, a[None], pi[None])  # [N, B, N]
                return self.joint_q(state.repeat(self.n, 1), joint.reshape(-1, self.n)).view(self.n, -1).T
            if self.cfg.subteam_sampling:
                masks = subteam_masks(self.n, self.cfg.subteams, generator, state.device)
            else:
                masks = torch.zeros(1, self.n, self.n, dtype=torch.bool, device=state.device)
            default = torch.full((self.n, 1), float(self.default), device=state.device)
            return counterfactual_contribution(
                self.joint_q, state, a[..., None].float(), pi[..., None].float(), default, masks
            )

    def individual_critic_loss(self, obs, action, delta) -> torch.Tensor:
        """Eq. 9: (Q_i(o_i, a_i) - Delta_i)^2 on the data's actions (mean over the batch, summed over agents)."""
        q = self.ind_critic(obs).gather(-1, action[..., None])[..., 0]  # [N, B]
        return ((q - delta.T) ** 2).mean(-1).sum()

    def steps(self, obs, action, reward, next_obs, terminated, state, next_state, generator=None):
        """One iteration of Algorithm 1: classifiers, joint critic (Eq. 6), individual critics (Eqs. 8-9)."""
        return [
            ("classifier", lambda: self.classifier_loss(obs, action)),
            ("joint_critic", lambda: self.joint_critic_loss(state, action, reward, next_state, next_obs, terminated)),
            (
                "individual_critic",
                lambda: self.individual_critic_loss(
                    obs, action, self.counterfactual_target(state, obs, action, generator)
                ),
            ),
        ]

    def after_steps(self) -> None:
        soft_update(self.joint_critic_target, self.joint_critic, self.cfg.tau)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decentralized: agent i takes its allowed action of highest Q_i(o_i, .). obs [N, B, O] -> [N, B]."""
        ok = allowed_actions(self.classifier(obs), self.cfg.threshold)
        return self.ind_critic(obs).masked_fill(~ok, float("-inf")).argmax(-1)
