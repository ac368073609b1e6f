"""Every line of CAST-BCQ's update, pinned against per-sample hand computations.

The networks are replaced by hand-made linear maps with known weights (``Linear``), so each
loss can be recomputed here from the paper's equations, one sample and one agent at a time,
with nothing shared with the implementation but the random draws (replayed from the same
seed in the same order). Tests check the values of the losses of Eq. 3, 6, 8, 9 and 10 and
of the actor, each ablation's branch, the order of Algorithm 1's steps with their
optimizers, and which target networks are Polyak-averaged.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from madata_algos.cast_bcq import CastBcq, subteam_masks
from madata_algos.configs import CastBcqConfig

N, OBS, A, S = 3, 4, 2, 5  # agents, observation size, action size, state size
B = 6
MAX_ACTION = [1.0, 0.5, 2.0, 1.5]  # one bound per agent, so a wrong agent's bound shows


class Linear(nn.Module):
    """A hand-made stand-in for an AgentMLP: x [n, R, in] -> x @ W[n] + c[n], [n, R, out]."""

    def __init__(self, n: int, d_in: int, d_out: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n, d_in, d_out, generator=g) * 0.5)
        self.c = nn.Parameter(torch.randn(n, 1, d_out, generator=g) * 0.5)

    def forward(
        self, x: torch.Tensor, nets: slice = slice(None)
    ) -> torch.Tensor:  # as AgentMLP: net k reads input k % n_in
        W, c = self.W[nets], self.c[nets]
        return x.repeat(W.shape[0] // x.shape[0], 1, 1) @ W + c

    def at(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Network k on one input vector (the hand computation's view)."""
        return x @ self.W[k] + self.c[k, 0]


def make(seed: int = 0, n: int = N, **kw) -> CastBcq:
    cfg = dict(
        vae_hidden=(8,),
        actor_hidden=(8,),
        critic_hidden=(8,),
        n_target=3,
        n_act=5,
        phi=0.3,
        latent_clip=0.7,
        lam=0.8,
        gamma=0.9,
        tau=0.1,
        lr=2e-3,  # not Adam's default, so an optimizer built without lr= shows
        kl_weight=0.4,
    )
    cfg.update(kw)
    torch.manual_seed(seed)
    return CastBcq([OBS] * n, [A] * n, S, MAX_ACTION[:n], CastBcqConfig(**cfg))


def hand_made(algo: CastBcq) -> CastBcq:
    """Replace every network by a Linear with known weights (distinct seeds, so online != target)."""
    n, lat, twins = algo.n, algo.policy.latent, algo.twins
    algo.policy.encoder = Linear(n, A + OBS, 2 * lat, 1)
    algo.policy.decoder = Linear(n, lat + OBS, A, 2)
    algo.policy.actor = Linear(n, A + OBS, A, 3)
    algo.policy.actor_target = Linear(n, A + OBS, A, 4)
    algo.critic.net = Linear(2 * n, A + OBS, 1, 5)  # rows: Q_{i,1} of every agent, then Q_{i,2}
    algo.joint_critic = Linear(twins, S + n * A, 1, 6)
    algo.joint_critic_target = Linear(twins, S + n * A, 1, 7)
    return algo


def batch(seed: int = 0, n: int = N) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + seed)
    return dict(
        obs=torch.randn(n, B, OBS, generator=g),
        action=(torch.rand(n, B, A, generator=g) * 2 - 1) * 0.5,
        reward=torch.randn(B, generator=g),
        next_obs=torch.randn(n, B, OBS, generator=g) + 1.0,
        terminated=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]),
        state=torch.randn(B, S, generator=g),
        next_state=torch.randn(B, S, generator=g) - 1.0,
    )


# ---------------------------------------------------------------------------- the paper's maps, by hand


def decode(algo, i, o, z):
    """G_i(o_i) with latent z: max_action_i * tanh(D_i(z, o_i))."""
    return MAX_ACTION[i] * torch.tanh(algo.policy.decoder.at(i, torch.cat([z, o])))


def perturb(algo, actor, i, o, a):  # actor: algo.policy.actor or .actor_target
    """a + Phi max_action_i tanh(xi_i(a, o_i)), clipped to agent i's box."""
    m = MAX_ACTION[i]
    return (a + algo.cfg.phi * m * torch.tanh(actor.at(i, torch.cat([a, o])))).clamp(-m, m)


def joint_q(algo, net, s, joint):
    """Eq. 10: lambda min_k Q_k + (1 - lambda) max_k Q_k (one critic: itself). joint: list of per-agent actions."""
    x = torch.cat([s, *joint])
    qs = [net.at(k, x)[0] for k in range(algo.twins)]
    if len(qs) == 1:
        return qs[0]
    return algo.cfg.lam * min(qs) + (1 - algo.cfg.lam) * max(qs)


def latents(g: torch.Generator, rows: int, algo) -> torch.Tensor:
    """The z draws of one decode call over ``rows`` rows per agent: [N, rows, latent], clipped."""
    clip = algo.cfg.latent_clip
    return torch.randn(algo.n, rows, algo.policy.latent, generator=g).clamp(-clip, clip)


def policy_actions(algo, obs, g):
    """Every agent's joint-policy action a~ + xi(o, a~) on its own o_i, [B][N] lists (one decode call)."""
    z = latents(g, obs.shape[1], algo)
    return [
        [perturb(algo, algo.policy.actor, i, obs[i, b], decode(algo, i, obs[i, b], z[i, b])) for i in range(algo.n)]
        for b in range(obs.shape[1])
    ]


# ---------------------------------------------------------------------------- Eq. 6 and 10: the joint critic


@pytest.mark.parametrize("clipped", [True, False])
def test_joint_critic_loss_is_eq6_with_eq10(clipped):
    algo = hand_made(make(clipped_double_q=clipped))
    d = batch()
    loss = algo.joint_critic_loss(
        d["state"],
        d["action"],
        d["reward"],
        d["next_state"],
        d["next_obs"],
        d["terminated"],
        torch.Generator().manual_seed(7),
    )
    g, n = torch.Generator().manual_seed(7), algo.cfg.n_target
    z = latents(g, B * n, algo)  # candidate j of sample b is row b * n + j
    want = torch.zeros(())
    for b in range(B):
        values = []
        for j in range(n):
            cand = [
                perturb(
                    algo,
                    algo.policy.actor_target,
                    i,
                    d["next_obs"][i, b],
                    decode(algo, i, d["next_obs"][i, b], z[i, b * n + j]),
                )
                for i in range(N)
            ]
            values.append(joint_q(algo, algo.joint_critic_target, d["next_state"][b], cand))
        y = d["reward"][b] + algo.cfg.gamma * (1 - d["terminated"][b]) * max(values)
        x = torch.cat([d["state"][b], *d["action"][:, b]])
        for k in range(algo.twins):  # each critic regresses on y on its own (mean over the batch)
            want = want + (algo.joint_critic.at(k, x)[0] - y) ** 2 / B
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


def test_joint_q_combines_the_twins_by_eq10_and_target_selects_the_copy():
    algo = hand_made(make())
    s, a = torch.randn(4, S), torch.randn(4, N, A)
    for target, net in ((False, algo.joint_critic), (True, algo.joint_critic_target)):
        got = algo.joint_q(s, a, target=target)
        want = torch.stack([joint_q(algo, net, s[r], list(a[r])) for r in range(4)])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- Eq. 8: the counterfactual target


def hand_joint_policy(algo, d, g, k):
    """Sec. 3.2's joint policy: of k candidate joint actions per sample (one decode call over k copies of every
    o_i, perturbed by the actors), the one of highest joint value under the current critics: [B][N] lists."""
    z = latents(g, B * k, algo)
    out = []
    for b in range(B):
        cands = [
            [perturb(algo, algo.policy.actor, i, d["obs"][i, b], decode(algo, i, d["obs"][i, b], z[i, b * k + j]))
             for i in range(algo.n)]
            for j in range(k)
        ]  # fmt: skip
        values = torch.stack([joint_q(algo, algo.joint_critic, d["state"][b], c) for c in cands])
        out.append(cands[int(values.argmax())])
    return out


def hand_delta(algo, d, g, masks=None, mode="csaa", pi=None):
    """Delta_i per Eq. 8 (or an ablation's variant) with the CURRENT joint critic: [B, N]. ``pi``: the
    teammates' joint-policy actions [B][N] (default: one draw of each agent's policy, from ``g``)."""
    pi = policy_actions(algo, d["obs"], g) if pi is None else pi
    if mode == "csaa" and masks is None:
        masks = subteam_masks(algo.n, algo.cfg.subteams, g)  # drawn after the policy's latents
    out = torch.zeros(B, algo.n)
    for b in range(B):
        a = list(d["action"][:, b])
        for i in range(algo.n):
            if mode == "no-csaa":  # Q(o, (a_i, pi_-i)) itself
                out[b, i] = joint_q(
                    algo, algo.joint_critic, d["state"][b], [a[i] if j == i else pi[b][j] for j in range(algo.n)]
                )
                continue
            subteams = masks if mode == "csaa" else torch.zeros(1, algo.n, algo.n, dtype=torch.bool)
            terms = []
            for m in range(subteams.shape[0]):
                mates = [torch.zeros(A) if subteams[m, i, j] else pi[b][j] for j in range(algo.n)]  # a^d = 0
                with_a = [a[i] if j == i else mates[j] for j in range(algo.n)]
                with_d = [torch.zeros(A) if j == i else mates[j] for j in range(algo.n)]
                terms.append(
                    joint_q(algo, algo.joint_critic, d["state"][b], with_a)
                    - joint_q(algo, algo.joint_critic, d["state"][b], with_d)
                )
            out[b, i] = torch.stack(terms).mean()
    return out


def test_counterfactual_target_enumerates_every_subteam_for_three_agents():
    """N = 3, M = 6 >= 2^(N-1): the four subteams {}, {j}, {k}, {j, k} of each agent, once each."""
    algo = hand_made(make())
    d = batch()
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(3))
    want = hand_delta(algo, d, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_counterfactual_target_with_sampled_subteams():
    """N = 4, M = 3 < 2^3: M subteams drawn per agent (after the policy's latents)."""
    algo = hand_made(make(n=4, subteams=3))
    d = batch(n=4)
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(4))
    want = hand_delta(algo, d, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flag,mode", [("csaa", "no-csaa"), ("subteam_sampling", "no-subteam")])
def test_ablations_change_only_their_own_branch(flag, mode):
    """--no-csaa: Delta_i = Q(o, (a_i, pi_-i)); --no-subteam: the baseline with the empty subteam only."""
    algo = hand_made(make(**{flag: False}))
    d = batch()
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(5))
    want = hand_delta(algo, d, torch.Generator().manual_seed(5), mode=mode)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    full = hand_delta(hand_made(make()), d, torch.Generator().manual_seed(5))
    assert not torch.allclose(got, full, atol=1e-3)  # and it is not the full method


@pytest.mark.parametrize("mode", ["csaa", "no-csaa"])
def test_teammates_can_follow_the_joint_policys_best_candidate(mode):
    """teammate_candidates = k: the teammates of Eq. 8 (and of --no-csaa) take the components of the best of k
    candidate joint actions under the joint critic, not one draw of each agent's policy."""
    algo = hand_made(make(teammate_candidates=4, csaa=mode == "csaa"))
    d = batch()
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    want = hand_delta(algo, d, g, mode=mode, pi=hand_joint_policy(algo, d, g, 4))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw", [{}, dict(n=4, subteams=3), dict(csaa=False), dict(subteam_sampling=False), dict(teammate_candidates=3)]
)
def test_every_tensor_of_eq8_is_made_on_the_algorithms_device(kw):
    """On "meta" (torch's shape-only device) a mask, default action or network left on the CPU raises,
    the way it would on a GPU; this machine has none."""
    n = kw.pop("n", N)
    torch.manual_seed(0)
    cfg = CastBcqConfig(vae_hidden=(8,), actor_hidden=(8,), critic_hidden=(8,), **kw)
    algo = CastBcq([OBS] * n, [A] * n, S, MAX_ACTION[:n], cfg, device="meta")
    d = {k: v.to("meta") for k, v in batch(n=n).items()}
    delta = algo.counterfactual_target(d["state"], d["obs"], d["action"])
    assert delta.device.type == "meta" and delta.shape == (B, n)
    assert subteam_masks(n, 3, None, "meta").device.type == "meta"


# ---------------------------------------------------------------------------- Eq. 9: the individual critics


@pytest.mark.parametrize("weighted", [False, True])
def test_individual_critic_loss_regresses_each_q_i_on_its_own_delta(weighted):
    algo = hand_made(make(delta_weight=weighted))
    d = batch()
    delta = torch.randn(B, N) * 2  # a distinct target per agent
    loss = algo.individual_critic_loss(d["obs"], d["action"], delta)
    want = torch.zeros(())
    for i in range(N):
        for head in range(2):  # twin heads Q_{i,1}, Q_{i,2}: rows i and N + i
            for b in range(B):
                q = algo.critic.net.at(head * N + i, torch.cat([d["action"][i, b], d["obs"][i, b]]))[0]
                w = delta[b, i].exp().clamp(0, 10) if weighted else 1.0  # the reference code's weights
                want = want + w * (q - delta[b, i]) ** 2 / B
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- Eq. 3 and the actor


def test_vae_loss_is_eq3():
    algo = hand_made(make())
    with torch.no_grad():
        lat = algo.policy.latent
        algo.policy.encoder.c[0, 0, lat] = -9.0  # agent 0's first log-std far below -4: the clamp matters
        algo.policy.encoder.c[1, 0, lat + 1] = 20.0  # agent 1's second log-std above 15
    d = batch()
    loss = algo.policy.vae_loss(d["obs"], d["action"], torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    eps = torch.randn(N, B, lat, generator=g)
    want = torch.zeros(())
    for i in range(N):
        rec = kl = 0.0
        for b in range(B):
            a, o = d["action"][i, b], d["obs"][i, b]
            h = algo.policy.encoder.at(i, torch.cat([a, o]))
            mu, log_std = h[:lat], h[lat:].clamp(-4, 15)
            z = mu + log_std.exp() * eps[i, b]
            rec = rec + ((decode(algo, i, o, z) - a) ** 2).mean() / B
            kl = kl + (-0.5 * (1 + 2 * log_std - mu**2 - (2 * log_std).exp())).mean() / B
        want = want + rec + algo.cfg.kl_weight * kl
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


def test_actor_loss_ascends_the_first_individual_critic():
    algo = hand_made(make())
    d = batch()
    loss = algo.policy.actor_loss(d["obs"], algo.critic.first, torch.Generator().manual_seed(11))
    pi = policy_actions(algo, d["obs"], torch.Generator().manual_seed(11))
    want = -sum(algo.critic.net.at(i, torch.cat([pi[b][i], d["obs"][i, b]]))[0] / B for i in range(N) for b in range(B))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- Algorithm 1: order, optimizers, targets


@pytest.mark.parametrize("kw", [{}, {"clipped_double_q": False}])
def test_update_is_algorithm1_in_order(kw):
    """One update() equals, step by step: the VAE step (Eq. 3), the joint critic step (Eq. 6) after it, the
    individual critic step on Delta (Eqs. 8-9) from the just-updated joint critic, the actor step through
    the just-updated Q_i, then Polyak averaging of the joint critic's and the actors' targets only.
    Each step uses an Adam with the configured learning rate over exactly that network's parameters."""
    algo = make(**kw)
    twin = copy.deepcopy(algo)
    d = batch()
    stats = algo.update(**d, generator=torch.Generator().manual_seed(13))

    lr, tau = twin.cfg.lr, twin.cfg.tau
    polyak = ((twin.joint_critic_target, twin.joint_critic), (twin.policy.actor_target, twin.policy.actor))
    targets_before = [copy.deepcopy(t) for t, _ in polyak]
    g = torch.Generator().manual_seed(13)

    def step(params, loss):
        opt = torch.optim.Adam(params, lr=lr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    want = {}
    want["vae"] = step(
        [*twin.policy.encoder.parameters(), *twin.policy.decoder.parameters()],
        twin.policy.vae_loss(d["obs"], d["action"], g),
    )
    want["joint_critic"] = step(
        twin.joint_critic.parameters(),
        twin.joint_critic_loss(
            d["state"], d["action"], d["reward"], d["next_state"], d["next_obs"], d["terminated"], g
        ),
    )
    delta = twin.counterfactual_target(d["state"], d["obs"], d["action"], g)
    want["individual_critic"] = step(
        twin.critic.parameters(), twin.individual_critic_loss(d["obs"], d["action"], delta)
    )
    want["actor"] = step(twin.policy.actor.parameters(), twin.policy.actor_loss(d["obs"], twin.critic.first, g))
    with torch.no_grad():
        for (target, online), before in zip(polyak, targets_before, strict=True):
            for t, t0, p in zip(target.parameters(), before.parameters(), online.parameters(), strict=True):
                t.copy_((1 - tau) * t0 + tau * p)

    assert list(stats) == ["vae", "joint_critic", "individual_critic", "actor"]
    for k in want:
        assert stats[k] == pytest.approx(want[k], rel=1e-6, abs=1e-7), k
    for (name, p), q in zip(algo.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert not hasattr(algo, "critic_target")  # Q_i regresses on Delta_i: no bootstrap, no target network


def test_update_moves_every_trained_network_and_no_target_beyond_tau():
    """Each online network moves by Adam's first step (|dtheta| about lr); the targets by tau of the gap only."""
    algo = make()
    before = {k: v.clone() for k, v in algo.named_parameters()}
    algo.update(**batch(), generator=torch.Generator().manual_seed(2))
    after = dict(algo.named_parameters())
    for name in before:
        moved = (after[name] - before[name]).abs().max().item()
        if "target" in name:
            assert moved < 1.5 * algo.cfg.lr * algo.cfg.tau, name
        else:
            assert moved == pytest.approx(algo.cfg.lr, rel=0.05), name
