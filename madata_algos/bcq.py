"""Centralized BCQ: single-agent BCQ (Fujimoto et al., 2019) on the joint observation and joint action.

The team is treated as one agent: its observation is the concatenation o = (o_1, ..., o_N)
and its action the joint action a = (a_1, ..., a_N). The CAST-BCQ paper's Table 2 runs
this baseline ("BCQ") to show what a centralized learner gets; its execution needs every
agent's observation at every step, so it is not a decentralized policy.

Continuous actions: :class:`JointBcq`, :class:`~madata_algos.ibcq.IndependentBcq` with one
"agent" whose inputs are the concatenated real components (zero padding dropped).
Discrete actions: :class:`JointBcqDiscrete`, BCQ's discrete variant over all K^N joint
actions with one behaviour classifier G(a | o) of the joint action.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from madata.errors import SchemaError
from madata_algos.configs import BcqConfig, BcqDiscreteConfig
from madata_algos.ibcq import IndependentBcq, IndependentBcqDiscrete

MAX_JOINT_ACTIONS = 4096  # K^N outputs of the joint Q-network and classifier; beyond this, use ibcq or cast-bcq


def _real_columns(dims: Sequence[int], width: int) -> list[int]:
    """Positions of the real components in agents' blocks of ``width`` laid end to end (padding skipped)."""
    return [i * width + k for i, d in enumerate(dims) for k in range(d)]


class JointBcq(IndependentBcq):
    """Continuous BCQ on the joint observation and joint action of agents with ``obs_dims``, ``act_dims``.

    Takes and returns the agent-major batches of the other algorithms (``obs`` [N, B, max obs_dim],
    ``action`` [N, B, max act_dim], zero-padded) and concatenates them inside.
    """

    def __init__(
        self,
        obs_dims: Sequence[int],
        act_dims: Sequence[int],
        max_action: Sequence[float],
        config: BcqConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        bounds = [float(m) for m, d in zip(max_action, act_dims, strict=True) for _ in range(d)]
        super().__init__([sum(obs_dims)], [sum(act_dims)], [bounds], config, device)
        self.n_agents, self.agent_O, self.agent_A = len(obs_dims), max(obs_dims), max(act_dims)
        dev = self.policy.max_action.device
        self.register_buffer("obs_columns", torch.tensor(_real_columns(obs_dims, self.agent_O), device=dev))
        self.register_buffer("act_columns", torch.tensor(_real_columns(act_dims, self.agent_A), device=dev))

    def joint(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Agent-major [N, B, width] -> the joint vector [1, B, sum of real dims]."""
        return x.transpose(0, 1).flatten(1).index_select(1, columns)[None]

    def split(self, joint_action: torch.Tensor) -> torch.Tensor:
        """The joint action [1, B, sum act_dims] -> agent-major [N, B, max act_dim], zero-padded."""
        B = joint_action.shape[1]
        out = joint_action.new_zeros(B, self.n_agents * self.agent_A)
        out[:, self.act_columns] = joint_action[0]
        return out.view(B, self.n_agents, self.agent_A).transpose(0, 1)

    def steps(self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None):
        """BCQ's iteration on the joint transition (o, a, r, o'); ``state`` is not used."""
        return super().steps(
            self.joint(obs, self.obs_columns),
            self.joint(action, self.act_columns),
            reward,
            self.joint(next_obs, self.obs_columns),
            terminated,
            generator=generator,
        )

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Centralized execution: every agent's observations [N, B, O] -> the joint action as [N, B, A]."""
        return self.split(super().act(self.joint(obs, self.obs_columns), generator))


class JointBcqDiscrete(IndependentBcqDiscrete):
    """Discrete BCQ over the K^N joint actions of ``n_agents`` agents with ``n_actions`` actions each.

    Joint action index: sum_i a_i K^(N-1-i) (agent 0 the most significant digit).
    Batches: ``obs`` [N, B, obs_dim], ``action`` [N, B] int64, as for the decentralized algorithms.
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        n_actions: int,
        config: BcqDiscreteConfig | None = None,
        device: torch.device | str = "cpu",
    ):
        joint = n_actions**n_agents
        if joint > MAX_JOINT_ACTIONS:
            raise SchemaError(
                f"centralized discrete BCQ: {n_agents} agents x {n_actions} actions make {joint} joint "
                f"actions, more than {MAX_JOINT_ACTIONS}; train a decentralized algorithm (ibcq, cast-bcq)"
            )
        super().__init__(1, n_agents * obs_dim, joint, config, device)
        self.n_agents, self.n_actions = n_agents, n_actions
        digits = n_actions ** torch.arange(n_agents - 1, -1, -1)  # [N]: K^(N-1), ..., K, 1
        self.register_buffer("digits", digits.to(next(self.parameters()).device))

    @staticmethod
    def joint_obs(obs: torch.Tensor) -> torch.Tensor:
        """[N, B, O] -> [1, B, N * O]."""
        return obs.transpose(0, 1).flatten(1)[None]

    def encode(self, action: torch.Tensor) -> torch.Tensor:
        """Per-agent actions [N, B] -> joint action indices [1, B]."""
        return (action * self.digits[:, None]).sum(0, keepdim=True)

    def decode_joint(self, index: torch.Tensor) -> torch.Tensor:
        """Joint action indices [1, B] -> per-agent actions [N, B]."""
        return index[0][None] // self.digits[:, None] % self.n_actions

    def steps(self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None):
        """Discrete BCQ's iteration over joint actions."""
        return super().steps(
            self.joint_obs(obs), self.encode(action), reward, self.joint_obs(next_obs), terminated, generator=generator
        )

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Centralized execution: the allowed joint action of highest Q(o, .) -> [N, B] int64."""
        return self.decode_joint(super().act(self.joint_obs(obs)))
