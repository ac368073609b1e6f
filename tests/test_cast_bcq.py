"""CAST-BCQ's equations against hand-computed values."""

from __future__ import annotations

import itertools

import pytest
import torch

from madata_algos.cast_bcq import counterfactual_contribution, soft_clipped_double_q, subteam_masks


def test_soft_clipped_double_q():
    q1, q2 = torch.tensor([1.0, 5.0]), torch.tensor([3.0, 2.0])
    torch.testing.assert_close(soft_clipped_double_q(q1, q2, 0.9), torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 5]))
    torch.testing.assert_close(soft_clipped_double_q(q1, q2, 1.0), torch.minimum(q1, q2))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_exact_enumeration_includes_the_empty_subteam(n):
    masks = subteam_masks(n, 2 ** (n - 1))
    assert masks.shape == (2 ** (n - 1), n, n)
    for i in range(n):
        assert not masks[:, i, i].any()
        subteams = {tuple(row.tolist()) for row in masks[:, i]}
        assert len(subteams) == 2 ** (n - 1)  # every subteam once
        assert tuple([False] * n) in subteams  # the empty subteam: everyone follows the joint policy


def test_subteam_masks_of_one_agent_and_of_one_sample():
    """A lone agent has one (empty) subteam; M = 1 of 2 agents draws it; N < 1 or M < 1 is refused by name."""
    assert subteam_masks(1, 1).tolist() == [[[False]]]
    assert subteam_masks(1, 5).shape == (1, 1, 1)  # M capped at 2^0 = 1
    one = subteam_masks(2, 1, generator=torch.Generator().manual_seed(0))
    assert one.shape == (1, 2, 2) and not one.diagonal(dim1=1, dim2=2).any()
    for n, m in ((0, 1), (2, 0), (-1, -1)):
        with pytest.raises(ValueError, match=rf"subteam_masks: need n_agents >= 1 and M >= 1, got {n}, {m}"):
            subteam_masks(n, m)


def test_sampled_subteams_are_uniform_and_include_empty():
    g = torch.Generator().manual_seed(0)
    masks = subteam_masks(5, 8, generator=g)  # 8 < 2^4: sampled
    assert masks.shape == (8, 5, 5) and not masks.diagonal(dim1=1, dim2=2).any()
    big = torch.cat([subteam_masks(5, 15, generator=g) for _ in range(400)])
    assert abs(big.float().sum() / (big.shape[0] * 5 * 4) - 0.5) < 0.02
    empty = (~big.any(dim=2)).float().mean()  # P(empty subteam) = 1/16
    assert abs(empty - 1 / 16) < 0.01


def _bilinear_q(w: torch.Tensor, c: torch.Tensor):
    """Q(s, a) = s_0 * (sum_j w_j . a_j + sum_{j<k} c_jk a_j[0] a_k[0])."""

    def q(s, a):
        lin = (a * w).sum(dim=(1, 2))
        n = a.shape[1]
        inter = sum(c[j, k] * a[:, j, 0] * a[:, k, 0] for j in range(n) for k in range(j + 1, n))
        return s[:, 0] * (lin + inter)

    return q


def _closed_form(w, c, s0, a, pi, masks):
    """Delta_i by hand: average over the given subteams of the marginal value of a_i vs 0."""
    B, N, _ = a.shape
    out = torch.zeros(B, N)
    for i in range(N):
        vals = []
        for m in range(masks.shape[0]):
            mate = [torch.zeros_like(pi[:, j, 0]) if masks[m, i, j] else pi[:, j, 0] for j in range(N)]
            # the a_i-dependent part of Q: w_i.a_i + a_i[0] * sum_{j != i} c_ij mate_j[0]
            v = (w[i] * a[:, i]).sum(-1) + a[:, i, 0] * sum(
                c[min(i, j), max(i, j)] * mate[j] for j in range(N) if j != i
            )
            vals.append(s0 * v)
        out[:, i] = torch.stack(vals).mean(0)
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_counterfactual_contribution_matches_closed_form(n):
    torch.manual_seed(0)
    B, A = 7, 2
    w, c = torch.randn(n, A), torch.randn(n, n)
    s = torch.randn(B, 4)
    a, pi = torch.randn(B, n, A), torch.randn(B, n, A)
    masks = subteam_masks(n, 2 ** (n - 1))
    delta = counterfactual_contribution(_bilinear_q(w, c), s, a, pi, torch.zeros(n, A), masks)
    torch.testing.assert_close(delta, _closed_form(w, c, s[:, 0], a, pi, masks), rtol=1e-5, atol=1e-5)
    if n == 2:  # Delta_1 = s0 * (w_1.a_1 + c a_1 * (pi_2 + 0) / 2): the exact two-subteam average
        want = s[:, 0] * ((w[0] * a[:, 0]).sum(-1) + c[0, 1] * a[:, 0, 0] * pi[:, 1, 0] / 2)
        torch.testing.assert_close(delta[:, 0], want, rtol=1e-5, atol=1e-5)


def test_teammates_indexing_uses_each_agents_own_block():
    """Reference-code mistake 1: teammates' actions sliced as a[i:i+d]. Here agent j's block is a[:, j]."""
    n, A = 3, 2
    calls = []

    def q(s, a):
        calls.append(a)
        return a.sum(dim=(1, 2))

    a = torch.arange(n * A, dtype=torch.float32).reshape(1, n, A) + 1
    pi = -a
    counterfactual_contribution(q, torch.zeros(1, 1), a, pi, torch.zeros(n, A), subteam_masks(n, 4))
    rows = calls[0].reshape(2, 4, n, 1, n, A)
    for m, i, j in itertools.product(range(4), range(n), range(n)):
        block = rows[0, m, i, 0, j]
        assert torch.equal(block, a[0, j]) if j == i else (torch.equal(block, pi[0, j]) or not block.any())


def _small(N=2, **kw):
    from madata_algos.cast_bcq import CastBcq
    from madata_algos.configs import CastBcqConfig

    torch.manual_seed(0)
    cfg = CastBcqConfig(vae_hidden=(16, 16), actor_hidden=(16, 16), critic_hidden=(16, 16), n_target=4, n_act=8, **kw)
    return CastBcq([5] * N, [3] * N, 7, [1.0] * N, cfg)


def test_no_clipped_double_q_has_one_joint_critic():
    """Ablation --no-clipped-double-q: one joint critic, so Eq. 10 reduces to that critic (lambda = 1)."""
    algo = _small(2, clipped_double_q=False)
    assert algo.joint_critic.layers[0].weight.shape[0] == 1
    s, a = torch.randn(6, 7), torch.rand(6, 2, 3)
    x = torch.cat([s, a.flatten(1)], -1)
    torch.testing.assert_close(algo.joint_q(s, a), algo.joint_critic(x[None])[0, :, 0])


def test_execution_is_decentralized():
    """Reference-code mistake 4: agent i's action depends on o_i alone."""
    algo = _small(2)
    obs = torch.randn(2, 4, 5)
    other = obs.clone()
    other[1] = torch.randn(4, 5)  # change agent 1's observations only
    a = algo.act(obs, torch.Generator().manual_seed(0))
    b = algo.act(other, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert a.shape == (2, 4, 3) and a.abs().max() <= 1


def test_perturbation_and_latent_scales_as_configured():
    """Reference-code mistake 7: latent clip and Phi are the configured ones."""
    algo = _small(2, phi=0.05, latent_clip=0.5)
    obs, a = torch.randn(2, 64, 5), torch.zeros(2, 64, 3)
    moved = algo.policy.perturb(obs, a)
    assert moved.abs().max() <= 0.05 + 1e-6 and moved.abs().max() > 0.005
    algo.cfg.latent_clip = 0.0  # every z = 0: decoding is deterministic
    d1, d2 = algo.policy.decode(obs), algo.policy.decode(obs)
    assert torch.equal(d1, d2)


def test_discrete_cast_bcq_and_ibcq_update_and_act():
    from madata_algos.cast_bcq_discrete import CastBcqDiscrete
    from madata_algos.ibcq import IndependentBcqDiscrete, allowed_actions

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    B = 16
    batch = dict(
        obs=torch.randn(2, B, 2),
        action=torch.randint(0, 3, (2, B)),
        reward=torch.randn(B),
        next_obs=torch.randn(2, B, 2),
        terminated=torch.zeros(B),
        state=torch.randn(B, 2),
        next_state=torch.randn(B, 2),
    )
    for algo in (CastBcqDiscrete(2, 2, 3, 2, default_action=1), IndependentBcqDiscrete(2, 2, 3)):
        first = algo.update(**batch, generator=g)
        for _ in range(10):
            last = algo.update(**batch, generator=g)
        assert last["classifier"] < first["classifier"]
        a = algo.act(batch["obs"])
        assert a.shape == (2, B) and a.dtype == torch.int64 and a.max() <= 2
    # BCQ's constraint: only actions with G(a|o) / max G >= threshold
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    assert allowed_actions(logits, 0.3).tolist() == [[True, True, False]]


def test_discrete_counterfactual_masks_with_the_noop():
    """Masked teammates take the default (no-op) action, not zeros."""
    from madata_algos.cast_bcq_discrete import CastBcqDiscrete

    algo = CastBcqDiscrete(2, 2, 3, 2, default_action=1)
    seen = []
    algo.joint_q = lambda s, a, target=False: (
        seen.append(a.reshape(len(a), 2).clone()),
        a.reshape(len(a), 2)[:, 0].float(),
    )[1]
    algo.counterfactual_target(torch.zeros(1, 2), torch.zeros(2, 1, 2), torch.tensor([[2], [0]]))
    rows = seen[-1].view(2, 2, 2, 2)  # [with a_i / with default, subteam m ({} then {other}), agent i, agent j]
    assert rows[0, 1, 0].tolist() == [2, 1]  # agent 0 keeps its action 2, its masked teammate takes the no-op 1
    assert rows[1, 1, 0].tolist() == [1, 1]  # the baseline: agent 0's default too
    assert rows[0, 1, 1].tolist() == [1, 0]  # agent 1 keeps its action 0, agent 0 masked


def test_heterogeneous_agents_ignore_their_padding():
    """Hopper-like observation sizes 2, 3, 2: what sits in an agent's padded columns changes nothing."""
    from madata_algos.cast_bcq import CastBcq
    from madata_algos.configs import CastBcqConfig

    torch.manual_seed(0)
    cfg = CastBcqConfig(vae_hidden=(8,), actor_hidden=(8,), critic_hidden=(8,))
    algo = CastBcq([2, 3, 2], [1, 1, 1], 4, [1.0] * 3, cfg)
    obs = torch.randn(3, 5, 3)
    obs[0, :, 2] = obs[2, :, 2] = 0.0
    a = torch.rand(3, 5, 1)
    q = algo.critic(obs, a)
    noisy = obs.clone()
    noisy[0, :, 2] = 7.0  # agent 0's padding column
    q_noisy = algo.critic(noisy, a)
    assert torch.equal(q, q_noisy)  # the padding column meets agent 0's zero weight rows
    first = algo.critic.net.layers[0]  # input [a (1), o (3)]: agent 0's row 3 is padding
    assert torch.all(first.weight[0, 3] == 0) and torch.any(first.weight[1, 3] != 0)
    q.sum().backward()
    assert torch.all(first.weight.grad[0, 3] == 0)  # and stays 0
