"""CAST-BCQ for discrete actions (the paper's StarCraft setting; here the grid world and SMAX).

The generative model of agent i is a behaviour classifier G_i(a_i | o_i) (BCQ's
discrete variant): an action is allowed when G_i(a|o_i) / max_a' G_i(a'|o_i) >= threshold.
CAST-BCQ's joint critic Q(s, a) takes the one-hot joint action and is trained by Eq. 6
with the max over the joint actions whose every component is allowed, combining twin
critics by Eq. 10; the individual critic Q_i(o_i, .) has one output per action and is
regressed on the counterfactual contribution (Eqs. 8-9) with masked teammates taking the
default (no-op) action. Execution: agent i takes the allowed action of highest Q_i.

Which joint actions the max of Eq. 6 and the joint policy pi of Eq. 8 range over
(``joint_candidates``): 0, every allowed one of the K^N (exact; the grid world); n >= 1, n
candidates per sample, as the continuous algorithm draws n from its VAEs: the agents' own
greedy joint action (each agent's allowed action of highest Q_i) and n - 1 joint actions
drawn by each agent from G_i over its allowed actions. SMAX needs the second: 2s3z has
10^5 joint actions and 10m_vs_11m 16^10. With action masks (SMAX), "allowed" also means
available.

Discrete I-BCQ is :class:`~madata_algos.ibcq.IndependentBcqDiscrete`.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F

from madata.errors import SchemaError
from madata_algos.cast_bcq import counterfactual_contribution, subteam_masks
from madata_algos.configs import CastBcqDiscreteConfig
from madata_algos.ibcq import allowed_actions, available_allowed, soft_clipped_double_q, td_target
from madata_algos.networks import AgentMLP, Algorithm, soft_update

MAX_ENUMERATED = 4096  # joint actions per sample that joint_candidates = 0 may enumerate


class CastBcqDiscrete(Algorithm):
    """N agents with ``obs_dim`` observations and ``n_actions`` actions each; ``default_action`` the no-op.

    Batches: ``obs``/``next_obs`` [N, B, obs_dim], ``action`` [N, B] int64, ``state``/``next_state`` [B, S];
    where the data stores them, ``action_mask``/``next_action_mask`` [N, B, K] bool, the available actions.
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
        if cfg.joint_candidates == 0:
            if n_actions**n_agents > MAX_ENUMERATED:
                raise SchemaError(
                    f"discrete CAST-BCQ with joint_candidates = 0 enumerates all K^N = {n_actions}^{n_agents} = "
                    f"{n_actions**n_agents} joint actions per sample (at most {MAX_ENUMERATED}); "
                    "sample them instead with --joint-candidates n (e.g. 16)"
                )
            joint = list(itertools.product(range(n_actions), repeat=n_agents))
            self.register_buffer("joint_actions", torch.tensor(joint))  # every joint action, [K^N, N]
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

    def candidates(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint actions that Eq. 6 maximizes over and the joint policy chooses from, at obs [N, B, O]
        (``mask`` [N, B, K]: the available actions). Returns (joint actions [B, J, N], allowed [B, J])."""
        logits = self.classifier(obs)
        ok = available_allowed(allowed_actions(logits, self.cfg.threshold), mask)  # [N, B, K]
        N, B = ok.shape[:2]
        n = self.cfg.joint_candidates
        if n == 0:  # all K^N; allowed when every agent's action is
            J = self.joint_actions.shape[0]
            allowed = ok.permute(1, 0, 2)[:, torch.arange(N, device=ok.device), self.joint_actions].all(-1)
            return self.joint_actions.expand(B, J, N), allowed
        greedy = self.ind_critic(obs).masked_fill(~ok, float("-inf")).argmax(-1)[..., None]  # [N, B, 1]
        if n > 1:  # each agent draws from G_i(. | o_i) over its allowed actions
            p = logits.masked_fill(~ok, float("-inf")).softmax(-1)  # > 0 on the best allowed action, however far
            drawn = torch.multinomial(p.flatten(0, 1), n - 1, replacement=True, generator=generator)
            greedy = torch.cat([greedy, drawn.view(N, B, n - 1)], -1)
        return greedy.permute(1, 2, 0), torch.ones(B, n, dtype=torch.bool, device=ok.device)

    def greedy_joint(
        self,
        state: torch.Tensor,
        obs: torch.Tensor,
        target: bool = False,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint policy: the allowed candidate joint action of highest Q. Returns (actions [B, N], Q [B])."""
        cand, allowed = self.candidates(obs, mask, generator)  # [B, J, N], [B, J]
        B, J = allowed.shape
        q = self.joint_q(state.repeat_interleave(J, 0), cand.reshape(B * J, self.n), target).view(B, J)
        q = q.masked_fill(~allowed, float("-inf"))
        best = q.argmax(1)
        return cand[torch.arange(B, device=q.device), best], q.gather(1, best[:, None])[:, 0]

    def classifier_loss(self, obs, action) -> torch.Tensor:
        """Behaviour cloning of each agent's actions: cross-entropy of G_i."""
        logits = self.classifier(obs)  # [N, B, K]
        return F.cross_entropy(logits.flatten(0, 1), action.flatten(), reduction="mean") * self.n

    def joint_critic_loss(
        self, state, action, reward, next_state, next_obs, terminated, generator=None, next_action_mask=None
    ) -> torch.Tensor:
        """Eq. 6 over the allowed candidate joint actions at o', both critics."""
        with torch.no_grad():
            _, q_next = self.greedy_joint(next_state, next_obs, True, next_action_mask, generator)
            y = td_target(reward, terminated, q_next, self.cfg.gamma)
        a = F.one_hot(action.transpose(0, 1), self.k).float().flatten(1)
        q = self.joint_critic(torch.cat([state, a], -1)[None]).squeeze(-1)  # [twins, B]
        return ((q - y[None]) ** 2).mean(-1).sum()

    def counterfactual_target(self, state, obs, action, generator=None, action_mask=None) -> torch.Tensor:
        """Eq. 8 with no-op defaults; Delta [B, N]."""
        with torch.no_grad():
            pi, _ = self.greedy_joint(state, obs, mask=action_mask, generator=generator)  # [B, N]
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

    def steps(
        self, obs, action, reward, next_obs, terminated, state, next_state, generator=None,
        action_mask=None, next_action_mask=None,
    ):  # fmt: skip
        """One iteration of Algorithm 1: classifiers, joint critic (Eq. 6), individual critics (Eqs. 8-9)."""
        return [
            ("classifier", lambda: self.classifier_loss(obs, action)),
            (
                "joint_critic",
                lambda: self.joint_critic_loss(
                    state, action, reward, next_state, next_obs, terminated, generator, next_action_mask
                ),
            ),
            (
                "individual_critic",
                lambda: self.individual_critic_loss(
                    obs, action, self.counterfactual_target(state, obs, action, generator, action_mask)
                ),
            ),
        ]

    def after_steps(self) -> None:
        soft_update(self.joint_critic_target, self.joint_critic, self.cfg.tau)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decentralized: agent i takes its allowed action of highest Q_i(o_i, .). obs [N, B, O] -> [N, B];
        with ``mask`` [N, B, K], among the available actions."""
        ok = available_allowed(allowed_actions(self.classifier(obs), self.cfg.threshold), mask)
        return self.ind_critic(obs).masked_fill(~ok, float("-inf")).argmax(-1)
