"""CAST-BCQ: counterfactual sample-average approximation with subteam masking (AAMAS 2023).

This module holds the paper's maths, one function per equation; the training loop that
strings them together (Algorithm 1) builds on them.

Notation: N agents; a joint critic Q(o, a) on the global state (or joint observation) and
the joint action; agent i's teammates -i; ST(i) the subteams of -i (the empty one
included); a^d the default action (zeros in MaMuJoCo, no-op / stay for discrete tasks).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch


def soft_clipped_double_q(q1: torch.Tensor, q2: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 10: lambda * min(Q1, Q2) + (1 - lambda) * max(Q1, Q2) (lambda = 1: clipped double Q)."""
    return lam * torch.minimum(q1, q2) + (1.0 - lam) * torch.maximum(q1, q2)


def subteam_masks(n_agents: int, m: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
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
