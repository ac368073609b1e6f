"""Every line of discrete CAST-BCQ's and discrete I-BCQ's updates, pinned against hand computations.

As in test_cast_bcq_update.py: the networks are hand-made linear maps with known weights,
and each loss is recomputed one sample, one agent and one joint action at a time.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from test_cast_bcq_update import Linear

from madata_algos.cast_bcq import subteam_masks
from madata_algos.cast_bcq_discrete import CastBcqDiscrete
from madata_algos.configs import BcqDiscreteConfig, CastBcqDiscreteConfig
from madata_algos.ibcq import IndependentBcqDiscrete, allowed_actions

N, OBS, K, S, B = 3, 4, 3, 5, 6
NOOP = 1  # the default action, not 0, so a default of zeros shows


def make(**kw) -> CastBcqDiscrete:
    cfg = dict(hidden=(8,), lam=0.7, gamma=0.9, tau=0.1, threshold=0.3, lr=2e-3)  # lr: not Adam's default
    cfg.update(kw)
    torch.manual_seed(0)
    return CastBcqDiscrete(N, OBS, K, S, NOOP, CastBcqDiscreteConfig(**cfg))


def hand_made(algo: CastBcqDiscrete) -> CastBcqDiscrete:
    algo.classifier = Linear(N, OBS, K, 21)
    algo.joint_critic = Linear(algo.twins, S + N * K, 1, 22)
    algo.joint_critic_target = Linear(algo.twins, S + N * K, 1, 23)
    algo.ind_critic = Linear(N, OBS, K, 24)
    return algo


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(200 + seed)
    return dict(
        obs=torch.randn(N, B, OBS, generator=g),
        action=torch.randint(0, K, (N, B), generator=g),
        reward=torch.randn(B, generator=g),
        next_obs=torch.randn(N, B, OBS, generator=g) + 1.0,
        terminated=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]),
        state=torch.randn(B, S, generator=g),
        next_state=torch.randn(B, S, generator=g) - 1.0,
    )


def allowed(algo, i, o, available=None) -> list[int]:
    """BCQ's discrete constraint for agent i on o: G(a|o) / max G >= threshold; among the ``available``
    actions (a list of bools), all of those where the classifier allows none of them."""
    p = algo.classifier.at(i, o).softmax(-1)
    ok = [a for a in range(K) if p[a] / p.max() >= algo.cfg.threshold]
    if available is None:
        return ok
    return [a for a in ok if available[a]] or [a for a in range(K) if available[a]]


def jq(algo, net, s, joint) -> torch.Tensor:
    """Eq. 10 over the twin joint critics at the one-hot joint action ``joint`` (a tuple of ints)."""
    x = torch.cat([s, *[F.one_hot(torch.tensor(a), K).float() for a in joint]])
    qs = [net.at(k, x)[0] for k in range(algo.twins)]
    return qs[0] if len(qs) == 1 else algo.cfg.lam * min(qs) + (1 - algo.cfg.lam) * max(qs)


def greedy(algo, net, s, obs_b, options=None):
    """The allowed joint action of highest Q under ``net`` (among ``options``, default all allowed ones):
    (joint action, its value)."""
    if options is None:
        options = itertools.product(*[allowed(algo, i, obs_b[i]) for i in range(N)])
    return max(((tuple(j), jq(algo, net, s, j)) for j in options), key=lambda t: t[1].item())


def test_allowed_actions_threshold_is_inclusive():
    p = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    assert allowed_actions(p.log(), 0.5).tolist() == [[True, True, False, False]]  # 0.25 / 0.5 = 0.5 >= 0.5
    assert allowed_actions(p.log(), 0.51).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("clipped", [True, False])
def test_joint_critic_loss_is_eq6_over_allowed_joint_actions(clipped):
    algo = hand_made(make(clipped_double_q=clipped))
    d = batch()
    loss = algo.joint_critic_loss(d["state"], d["action"], d["reward"], d["next_state"], d["next_obs"], d["terminated"])
    want = torch.zeros(())
    for b in range(B):
        _, v = greedy(algo, algo.joint_critic_target, d["next_state"][b], d["next_obs"][:, b])
        y = d["reward"][b] + algo.cfg.gamma * (1 - d["terminated"][b]) * v
        x = torch.cat([d["state"][b], *[F.one_hot(d["action"][i, b], K).float() for i in range(N)]])
        for k in range(algo.twins):
            want = want + (algo.joint_critic.at(k, x)[0] - y) ** 2 / B
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


def hand_delta(algo, d, masks, mode="csaa", options=None):
    out = torch.zeros(B, N)
    for b in range(B):
        # the current critic's joint policy, over every allowed joint action or the sampled ``options``
        pi, _ = greedy(algo, algo.joint_critic, d["state"][b], d["obs"][:, b], None if options is None else options[b])
        a = d["action"][:, b].tolist()
        for i in range(N):
            if mode == "no-csaa":
                out[b, i] = jq(algo, algo.joint_critic, d["state"][b], [a[i] if j == i else pi[j] for j in range(N)])
                continue
            terms = []
            for m in range(masks.shape[0]):
                mates = [NOOP if masks[m, i, j] else pi[j] for j in range(N)]
                with_a = [a[i] if j == i else mates[j] for j in range(N)]
                with_d = [NOOP if j == i else mates[j] for j in range(N)]
                terms.append(
                    jq(algo, algo.joint_critic, d["state"][b], with_a)
                    - jq(algo, algo.joint_critic, d["state"][b], with_d)
                )
            out[b, i] = torch.stack(terms).mean()
    return out


@pytest.mark.parametrize(
    "kw,mode", [({}, "csaa"), ({"subteam_sampling": False}, "no-subteam"), ({"csaa": False}, "no-csaa")]
)
def test_counterfactual_target_is_eq8_with_the_noop_default(kw, mode):
    algo = hand_made(make(subteams=3, **kw))  # 3 < 2^(N-1) = 4: sampled subteams
    d = batch()
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(6))
    if mode == "csaa":
        masks = subteam_masks(N, 3, torch.Generator().manual_seed(6))
    else:
        masks = torch.zeros(1, N, N, dtype=torch.bool)
    torch.testing.assert_close(got, hand_delta(algo, d, masks, mode), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clipped, twins", [(True, 2), (False, 1)])
def test_joint_critic_has_one_head_per_twin_and_reads_any_joint_action(clipped, twins):
    """Eq. 10 needs two joint critics (one without clipped double Q); a batch whose agents all take
    action 0 still one-hot encodes K actions per agent."""
    algo = make(clipped_double_q=clipped)
    assert algo.twins == twins and algo.joint_critic(torch.zeros(1, 2, S + N * K)).shape == (twins, 2, 1)
    d = batch()
    zero = torch.zeros(B, N, dtype=torch.long)
    assert algo.joint_q(d["state"], zero).shape == (B,)
    assert algo.joint_critic_loss(
        **{k: d[k] for k in ("state", "reward", "next_state", "next_obs", "terminated")}, action=zero.T
    ).isfinite()


@pytest.mark.parametrize("kw", [{}, dict(csaa=False), dict(subteam_sampling=False)])
def test_every_tensor_of_eq8_is_made_on_the_algorithms_device(kw):
    """On "meta" (torch's shape-only device) a mask or default action left on the CPU raises, as on a GPU."""
    torch.manual_seed(0)
    algo = CastBcqDiscrete(N, OBS, K, S, NOOP, CastBcqDiscreteConfig(hidden=(8,), **kw), device="meta")
    d = {k: v.to("meta") for k, v in batch().items()}
    delta = algo.counterfactual_target(d["state"], d["obs"], d["action"])
    assert delta.device.type == "meta" and delta.shape == (B, N)


def test_individual_critic_loss_is_eq9_on_the_data_actions():
    algo = hand_made(make())
    d = batch()
    delta = torch.randn(B, N)
    loss = algo.individual_critic_loss(d["obs"], d["action"], delta)
    want = sum(
        (algo.ind_critic.at(i, d["obs"][i, b])[d["action"][i, b]] - delta[b, i]) ** 2
        for i in range(N)
        for b in range(B)
    )
    torch.testing.assert_close(loss, want / B, rtol=1e-5, atol=1e-5)


def test_classifier_loss_is_behaviour_cloning_per_agent():
    algo = hand_made(make())
    d = batch()
    want = sum(F.cross_entropy(algo.classifier.at(i, d["obs"][i]), d["action"][i]) for i in range(N))
    torch.testing.assert_close(algo.classifier_loss(d["obs"], d["action"]), want, rtol=1e-5, atol=1e-6)


def test_act_takes_the_allowed_action_of_highest_individual_q():
    algo = hand_made(make(threshold=0.6))
    d = batch()
    got = algo.act(d["obs"])
    for i in range(N):
        for b in range(B):
            ok = allowed(algo, i, d["obs"][i, b])
            q = algo.ind_critic.at(i, d["obs"][i, b])
            assert got[i, b].item() == max(ok, key=lambda a: q[a].item())


def _adam_step(params, loss, lr):
    opt = torch.optim.Adam(params, lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def _polyak(target, before, online, tau):
    with torch.no_grad():
        for t, t0, p in zip(target.parameters(), before.parameters(), online.parameters(), strict=True):
            t.copy_((1 - tau) * t0 + tau * p)


def _same_state(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("n, masked", [(0, False), (3, True)])
def test_cast_bcq_discrete_update_is_algorithm1_in_order(n, masked):
    algo = make(subteams=3, joint_candidates=n)
    twin = copy.deepcopy(algo)
    d = batch()
    m = {"action_mask": some_mask(12), "next_action_mask": some_mask(13)} if masked else {}
    stats = algo.update(**d, generator=torch.Generator().manual_seed(8), **m)
    lr, g = twin.cfg.lr, torch.Generator().manual_seed(8)
    target_before = copy.deepcopy(twin.joint_critic_target)
    want = {
        "classifier": _adam_step(twin.classifier.parameters(), twin.classifier_loss(d["obs"], d["action"]), lr),
        "joint_critic": _adam_step(
            twin.joint_critic.parameters(),
            twin.joint_critic_loss(
                d["state"],
                d["action"],
                d["reward"],
                d["next_state"],
                d["next_obs"],
                d["terminated"],
                g,
                m.get("next_action_mask"),
            ),  # fmt: skip
            lr,
        ),
    }
    delta = twin.counterfactual_target(d["state"], d["obs"], d["action"], g, m.get("action_mask"))
    want["individual_critic"] = _adam_step(
        twin.ind_critic.parameters(), twin.individual_critic_loss(d["obs"], d["action"], delta), lr
    )
    _polyak(twin.joint_critic_target, target_before, twin.joint_critic, twin.cfg.tau)
    assert list(stats) == list(want)
    for k in want:
        assert stats[k] == pytest.approx(want[k], rel=1e-6, abs=1e-7), k
    _same_state(algo, twin)


# ---------------------------------------------------------------------------- sampled joint actions, masks


def hand_candidates(algo, obs, mask, generator) -> list[list[tuple[int, ...]]]:
    """joint_candidates = n: per sample, the agents' greedy joint action (each agent's allowed action of
    highest Q_i), then n - 1 joint actions whose agent i draws from G_i over its allowed actions (the draws
    replayed from the same generator state through torch.multinomial on the same probabilities)."""
    n = algo.cfg.joint_candidates
    Bn = obs.shape[1]
    ok = [[allowed(algo, i, obs[i, b], None if mask is None else mask[i, b].tolist()) for b in range(Bn)]
          for i in range(N)]  # fmt: skip
    greedy_a = [[max(ok[i][b], key=lambda a: algo.ind_critic.at(i, obs[i, b])[a].item()) for b in range(Bn)]
                for i in range(N)]  # fmt: skip
    p = torch.zeros(N, Bn, K)  # G_i renormalized over the allowed actions
    for i in range(N):
        for b in range(Bn):
            p[i, b, ok[i][b]] = algo.classifier.at(i, obs[i, b])[ok[i][b]].softmax(-1)
    drawn = torch.multinomial(p.flatten(0, 1), n - 1, replacement=True, generator=generator).view(N, Bn, -1)
    for i in range(N):
        for b in range(Bn):
            assert set(drawn[i, b].tolist()) <= set(ok[i][b])  # only allowed (and available) actions are drawn
    return [
        [tuple(greedy_a[i][b] for i in range(N))]
        + [tuple(drawn[i, b, c].item() for i in range(N)) for c in range(n - 1)]
        for b in range(Bn)
    ]


def some_mask(seed: int = 5) -> torch.Tensor:
    """Available actions [N, B, K]: random, with one sample whose agents have one available action each."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(N, B, K, generator=g) < 0.6
    m[torch.arange(N)[:, None], torch.arange(B), torch.randint(0, K, (N, B), generator=g)] = True  # one at least
    m[:, 0] = False
    m[:, 0, 2] = True
    return m


@pytest.mark.parametrize("masked, n", [(False, 4), (True, 4), (True, 2)])
def test_sampled_candidates_are_the_greedy_joint_action_and_draws_from_the_classifiers(masked, n):
    algo = hand_made(make(joint_candidates=n, threshold=0.2))
    d = batch()
    mask = some_mask() if masked else None
    cand, ok = algo.candidates(d["obs"], mask, torch.Generator().manual_seed(3))
    assert cand.shape == (B, n, N) and ok.shape == (B, n) and ok.all()
    want = hand_candidates(algo, d["obs"], mask, torch.Generator().manual_seed(3))
    assert [[tuple(c) for c in row] for row in cand.tolist()] == want
    if masked:
        assert (cand[0] == 2).all()  # the only available action
    # the draws follow G_i over the allowed actions: frequencies over many draws
    algo = hand_made(make(joint_candidates=4001, threshold=0.0))
    cand, _ = algo.candidates(d["obs"][:, :1], None, torch.Generator().manual_seed(4))
    for i in range(N):
        freq = torch.bincount(cand[0, 1:, i], minlength=K).float() / 4000
        torch.testing.assert_close(freq, algo.classifier.at(i, d["obs"][i, 0]).softmax(-1), atol=0.03, rtol=0)


def test_one_candidate_is_the_greedy_joint_action_alone():
    algo = hand_made(make(joint_candidates=1))
    d = batch()
    cand, _ = algo.candidates(d["obs"])
    assert torch.equal(cand[:, 0].T, algo.act(d["obs"]))


@pytest.mark.parametrize("n, masked", [(0, True), (3, False), (3, True)])
def test_joint_critic_loss_is_eq6_over_the_candidates_at_o_prime(n, masked):
    """Eq. 6's max ranges over the candidate joint actions at o' (all allowed ones, or n sampled), among the
    actions available at o' where the data has masks."""
    algo = hand_made(make(joint_candidates=n))
    d = batch()
    mask = some_mask(7) if masked else None
    loss = algo.joint_critic_loss(d["state"], d["action"], d["reward"], d["next_state"], d["next_obs"],
                                  d["terminated"], torch.Generator().manual_seed(2), mask)  # fmt: skip
    if n:
        options = hand_candidates(algo, d["next_obs"], mask, torch.Generator().manual_seed(2))
    else:
        options = [
            list(itertools.product(*[allowed(algo, i, d["next_obs"][i, b], mask[i, b].tolist()) for i in range(N)]))
            for b in range(B)
        ]
    want = torch.zeros(())
    for b in range(B):
        _, v = greedy(algo, algo.joint_critic_target, d["next_state"][b], None, options[b])
        y = d["reward"][b] + algo.cfg.gamma * (1 - d["terminated"][b]) * v
        x = torch.cat([d["state"][b], *[F.one_hot(d["action"][i, b], K).float() for i in range(N)]])
        for k in range(algo.twins):
            want = want + (algo.joint_critic.at(k, x)[0] - y) ** 2 / B
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["csaa", "no-csaa"])
def test_counterfactual_target_with_sampled_candidates_and_masks(mode):
    """Eq. 8's joint policy is the candidate of highest Q at o (the greedy joint action among them), over the
    available actions; the subteam masks are drawn after the candidates."""
    kw = {"csaa": False} if mode == "no-csaa" else {}
    algo = hand_made(make(subteams=3, joint_candidates=3, **kw))
    d, mask = batch(), some_mask(9)
    got = algo.counterfactual_target(d["state"], d["obs"], d["action"], torch.Generator().manual_seed(6), mask)
    g = torch.Generator().manual_seed(6)
    options = hand_candidates(algo, d["obs"], mask, g)
    masks = subteam_masks(N, 3, g) if mode == "csaa" else None
    torch.testing.assert_close(got, hand_delta(algo, d, masks, mode, options), rtol=1e-5, atol=1e-5)


def test_enumeration_refuses_too_many_joint_actions():
    from madata.errors import SchemaError

    with pytest.raises(SchemaError, match=r"10\^5 = 100000 joint actions.*--joint-candidates"):
        CastBcqDiscrete(5, 4, 10, 3, 4)
    with pytest.raises(SchemaError, match="4097 joint actions per sample"):
        CastBcqDiscrete(1, 4, 4097, 3, 0)
    assert CastBcqDiscrete(4, 2, 8, 3, 0).joint_actions.shape == (4096, 4)  # the most it enumerates
    assert CastBcqDiscrete(5, 4, 10, 3, 4, CastBcqDiscreteConfig(joint_candidates=8)).act(
        torch.randn(5, 2, 4)
    ).shape == (5, 2)


def test_act_takes_the_available_allowed_action_of_highest_individual_q():
    algo = hand_made(make(threshold=0.6))
    d, mask = batch(), some_mask(11)
    got = algo.act(d["obs"], mask=mask)
    for i in range(N):
        for b in range(B):
            ok = allowed(algo, i, d["obs"][i, b], mask[i, b].tolist())
            q = algo.ind_critic.at(i, d["obs"][i, b])
            assert got[i, b].item() == max(ok, key=lambda a: q[a].item())


# ---------------------------------------------------------------------------- discrete I-BCQ


def make_ibcq(**kw) -> IndependentBcqDiscrete:
    cfg = dict(hidden=(8,), gamma=0.9, tau=0.1, threshold=0.3, lr=2e-3)  # lr: not Adam's default
    cfg.update(kw)
    torch.manual_seed(0)
    algo = IndependentBcqDiscrete(N, OBS, K, BcqDiscreteConfig(**cfg))
    return algo


def test_ibcq_discrete_critic_loss_is_double_q_over_allowed_actions():
    """y_i = r + gamma (1 - d) Q'_i(o'_i, argmax over allowed a' of Q_i(o'_i, a')), Huber loss, per agent."""
    algo = make_ibcq()
    algo.classifier, algo.critic, algo.critic_target = (
        Linear(N, OBS, K, 31),
        Linear(N, OBS, K, 32),
        Linear(N, OBS, K, 33),
    )
    d = batch()
    loss = algo.critic_objective(d["obs"], d["action"], d["reward"], d["next_obs"], d["terminated"])
    want = torch.zeros(())
    for i in range(N):
        for b in range(B):
            o2 = d["next_obs"][i, b]
            best = max(allowed(algo, i, o2), key=lambda a: algo.critic.at(i, o2)[a].item())
            y = d["reward"][b] + algo.cfg.gamma * (1 - d["terminated"][b]) * algo.critic_target.at(i, o2)[best]
            q = algo.critic.at(i, d["obs"][i, b])[d["action"][i, b]]
            want = want + F.smooth_l1_loss(q, y) / B
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_ibcq_discrete_update_and_act():
    algo = make_ibcq()
    twin = copy.deepcopy(algo)
    d = batch()
    stats = algo.update(**d, generator=torch.Generator().manual_seed(1))
    lr, target_before = twin.cfg.lr, copy.deepcopy(twin.critic_target)
    ce = sum(F.cross_entropy(twin.classifier(d["obs"])[i], d["action"][i]) for i in range(N))
    want = {"classifier": _adam_step(twin.classifier.parameters(), ce, lr)}
    loss = twin.critic_objective(d["obs"], d["action"], d["reward"], d["next_obs"], d["terminated"])
    want["critic"] = _adam_step(twin.critic.parameters(), loss, lr)
    _polyak(twin.critic_target, target_before, twin.critic, twin.cfg.tau)
    assert list(stats) == list(want)
    for k in want:
        assert stats[k] == pytest.approx(want[k], rel=1e-6, abs=1e-7), k
    _same_state(algo, twin)
    algo.classifier, algo.critic = Linear(N, OBS, K, 41), Linear(N, OBS, K, 42)
    got = algo.act(d["obs"])
    for i in range(N):
        for b in range(B):
            q = algo.critic.at(i, d["obs"][i, b])
            assert got[i, b].item() == max(allowed(algo, i, d["obs"][i, b]), key=lambda a: q[a].item())
