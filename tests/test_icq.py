"""ICQ-MA's losses against hand-computed values, its mixer, decentralized execution, and learning on toy data."""

from __future__ import annotations

import math

import pytest
import torch

from madata_algos.configs import IcqConfig, IcqDiscreteConfig
from madata_algos.icq import IcqMa, IcqMaDiscrete, LinearMixer, advantage_weights, implicit_constraint_value

SMALL = dict(actor_hidden=(16, 16), critic_hidden=(16, 16), mixer_embed=4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from intra-op threads, and on shared cores they slow the updates 5-10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _continuous(obs_dims=(3, 3), act_dims=(1, 1), max_action=(1.0, 1.0), state_dim=4, **kw) -> IcqMa:
    torch.manual_seed(0)
    return IcqMa(list(obs_dims), list(act_dims), state_dim, list(max_action), config=IcqConfig(**{**SMALL, **kw}))


def _discrete(n_agents=2, obs_dim=3, n_actions=3, state_dim=4, **kw) -> IcqMaDiscrete:
    torch.manual_seed(0)
    return IcqMaDiscrete([obs_dim] * n_agents, state_dim, n_actions, config=IcqDiscreteConfig(**{**SMALL, **kw}))


def _constant(net, values: torch.Tensor) -> None:
    """Make an AgentMLP output ``values`` [n_agents, out] whatever its input: zero last weights, bias = values."""
    with torch.no_grad():
        net.layers[-1].weight.zero_()
        net.layers[-1].bias.copy_(values[:, None, :])


class _Constant(torch.nn.Module):
    """A state-value network that outputs ``values`` [B] for a batch of B states."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = values

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.values[:, None]


# ---------------------------------------------------------------- the equations, by hand


def test_implicit_constraint_value_matches_closed_form():
    q = torch.tensor([1.0, 2.0, 4.0])
    e = [math.exp(0.5), math.exp(1.0), math.exp(2.0)]  # exp(Q / alpha), alpha = 2
    z = sum(e) / 3  # the minibatch estimate of Z
    want = torch.tensor([e[0] / z * 1.0, e[1] / z * 2.0, e[2] / z * 4.0])
    torch.testing.assert_close(implicit_constraint_value(q, 2.0), want)
    torch.testing.assert_close((want / q).mean(), torch.tensor(1.0))  # the ratios rho average to 1
    # alpha -> inf: SARSA on the data's actions; alpha -> 0: all weight on the best pair
    torch.testing.assert_close(implicit_constraint_value(q, 1e9), q)
    torch.testing.assert_close(implicit_constraint_value(q, 1e-3), torch.tensor([0.0, 0.0, 3 * 4.0]))


def test_implicit_constraint_value_with_a_state_baseline():
    """b + rho (Q - b), rho = B softmax_batch((Q - b) / alpha): each state's own level cancels from rho."""
    q, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 3.0, 1.0])
    e = [math.exp(0.25), math.exp(-0.5), math.exp(1.5)]  # exp((Q - b) / alpha), alpha = 2
    z = sum(e) / 3
    want = torch.tensor([0.5 + e[0] / z * 0.5, 3.0 + e[1] / z * -1.0, 1.0 + e[2] / z * 3.0])
    torch.testing.assert_close(implicit_constraint_value(q, 2.0, b), want)
    # shifting one state's Q and baseline together shifts its target alike and changes no other
    shift = torch.tensor([0.0, 100.0, -50.0])
    torch.testing.assert_close(implicit_constraint_value(q + shift, 2.0, b + shift), want + shift)


def test_state_only_values_are_their_own_icq_value():
    """Where every action of a state is equally good (Q depends on s alone), the ICQ operator's value is Q itself.
    With V(s) = Q(s) as the baseline every rho is 1; the reference's batch softmax of Q / alpha instead gives the
    higher-valued states rho > 1 / gamma (values over 300 with alpha = 1000, as on MaMuJoCo), the divergence."""
    q = torch.linspace(0.0, 300.0, 256)
    torch.testing.assert_close(implicit_constraint_value(q, 1000.0, q.clone()), q)
    rho = implicit_constraint_value(q, 1000.0) / q.clamp_min(1e-6)
    assert rho[-1] > 1 / 0.99 and rho[0] < 1


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_values_spread_over_states_are_learned_whatever_their_sign(sign):
    """Rewards sign * 5 s_0 whatever the actions, gamma = 0.5: the ICQ value is V(s) = sign (5 s_0 + 2.5), within
    [-10, 10]. With the state baseline V(s) is within 1 of it after 1,200 iterations, for positive and negative
    values alike; the reference's estimate (rho over the batch's different states) passes 10, which no return
    of this problem reaches."""

    def learned(state_baseline: bool) -> tuple[torch.Tensor, torch.Tensor]:
        algo = _continuous(obs_dims=(3, 3), state_dim=4, critic_hidden=(32, 32), alpha=1.0, gamma=0.5,
                           critic_lr=1e-3, tau=0.05, state_baseline=state_baseline)  # fmt: skip
        g = torch.Generator().manual_seed(1)
        for _ in range(1200):
            s, s2 = torch.rand(64, 4, generator=g), torch.rand(64, 4, generator=g)
            obs = s[None, :, :3].expand(2, 64, 3).contiguous()
            act = torch.rand(2, 64, 1, generator=g) * 2 - 1
            algo.update(obs=obs, action=act, reward=sign * 5 * s[:, 0], next_obs=obs, terminated=torch.zeros(64),
                        state=s, next_state=s2, generator=g)  # fmt: skip
        s = torch.rand(256, 4, generator=g)
        with torch.no_grad():
            return algo.state_value(s)[..., 0], sign * (5 * s[:, 0] + 2.5)

    v, want = learned(True)
    assert (v - want).abs().max() < 1.0
    if sign > 0:
        v, _ = learned(False)
        assert v.max() > 10


def test_value_and_critic_targets_match_closed_form():
    """V(s) regresses on V(s) + rho (Q'_tot - V(s)) at the data's (s, a); Q_tot on r + gamma (1 - terminated) V(s')."""
    algo = _continuous(alpha=2.0, gamma=0.9)
    q_target = torch.tensor([1.0, 2.0, 4.0])
    seen = {}

    def joint_q(obs, action, state, target=False):
        seen["target"] = target
        return q_target

    algo.joint_q = joint_q
    with torch.no_grad():  # V(s) = 0.5 everywhere
        algo.state_value.layers[-1].weight.zero_()
        algo.state_value.layers[-1].bias.fill_(0.5)
    obs, act, s = torch.zeros(2, 3, 3), torch.zeros(2, 3, 1), torch.randn(3, 4)
    e = [math.exp(0.5), math.exp(1.0), math.exp(2.0)]  # a constant V cancels from rho; the target is V + rho (Q - V)
    rho_q = [0.5 + e[0] / (sum(e) / 3) * 0.5, 0.5 + e[1] / (sum(e) / 3) * 1.5, 0.5 + e[2] / (sum(e) / 3) * 3.5]
    want = sum((0.5 - v) ** 2 for v in rho_q) / 3
    assert algo.value_loss(obs, act, s).item() == pytest.approx(want, rel=1e-5)
    assert seen["target"] is True  # the targets come from the Polyak-averaged critics and mixer

    reward, terminated = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.0, 1.0, 0.0])
    loss = algo.critic_loss(obs, act, reward, terminated, s, torch.randn(3, 4))
    y = [1.0 + 0.9 * 0.5, -1.0, 2.0 + 0.9 * 0.5]  # no bootstrap past a terminal transition
    assert loss.item() == pytest.approx(sum((q - t) ** 2 for q, t in zip([1.0, 2.0, 4.0], y, strict=True)) / 3)

    # a state-dependent V(s) is the baseline: V(s) + rho (Q' - V(s)), rho = B softmax_batch((Q' - V(s)) / alpha)
    v = torch.tensor([0.5, 3.0, 1.0])
    algo.state_value = _Constant(v)
    e = [math.exp(0.25), math.exp(-0.5), math.exp(1.5)]
    rho_q = [0.5 + e[0] / (sum(e) / 3) * 0.5, 3.0 + e[1] / (sum(e) / 3) * -1.0, 1.0 + e[2] / (sum(e) / 3) * 3.0]
    want = sum((b - t) ** 2 for b, t in zip(v.tolist(), rho_q, strict=True)) / 3
    assert algo.value_loss(obs, act, s).item() == pytest.approx(want, rel=1e-5)
    algo.cfg.state_baseline = False  # the reference's estimate: exp(Q' / alpha) over the batch
    e = [math.exp(0.5), math.exp(1.0), math.exp(2.0)]
    rho_q = [e[0] / (sum(e) / 3) * 1.0, e[1] / (sum(e) / 3) * 2.0, e[2] / (sum(e) / 3) * 4.0]
    want = sum((b - t) ** 2 for b, t in zip(v.tolist(), rho_q, strict=True)) / 3
    assert algo.value_loss(obs, act, s).item() == pytest.approx(want, rel=1e-5)


def test_advantage_weights_match_closed_form():
    """k_i(s) B exp(A_i / beta) / sum_batch exp(A_i / beta), k_i = w_i / sum_j w_j (the authors' form)."""
    adv = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    credit = torch.tensor([[1.0, 1.0, 1.0], [2.0, 4.0, 2.0]])
    k = [[1 / 3, 1 / 5, 1 / 3], [2 / 3, 4 / 5, 2 / 3]]  # w_i / (w_0 + w_1) per sample
    e0 = [math.exp(2.0), 1.0, math.exp(-2.0)]  # exp(A / beta), beta = 0.5
    e1 = [math.exp(1.0), math.exp(1.0), 1.0]
    want = torch.tensor(
        [[k[0][b] * 3 * e0[b] / sum(e0) for b in range(3)], [k[1][b] * 3 * e1[b] / sum(e1) for b in range(3)]]
    )
    torch.testing.assert_close(advantage_weights(adv, credit, 0.5), want)


def test_discrete_actor_loss_matches_closed_form():
    """Fixed Q_i and pi_i: A_i = Q_i(a_i) - sum_a pi_i(a) Q_i(a), weights k_i(s) B exp(A_i / beta) / Z_i with
    k_i = w_i / sum_j w_j; w_i(s) scales with |s_0| here, so k = (1/3, 2/3) whatever the state."""
    algo = _discrete(n_actions=2, beta=0.5, mixer_embed=1)
    _constant(algo.critic, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # Q_0(.) = (1, 0), Q_1(.) = (0, 2)
    _constant(algo.actor, torch.log(torch.tensor([[0.25, 0.75], [0.8, 0.2]])))  # pi_0, pi_1
    with torch.no_grad():  # w_0(s) = |1| * |s_0|, w_1(s) = |-2| * |s_0|
        algo.mixer.hyper_w1.weight.zero_()
        algo.mixer.hyper_w1.bias.copy_(torch.tensor([1.0, -2.0]))
        algo.mixer.hyper_w2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        algo.mixer.hyper_w2.bias.zero_()
    state = torch.randn(3, 4)
    state[:, 0] = torch.tensor([1.0, -2.0, 1.0])
    action = torch.tensor([[0, 1, 0], [1, 1, 0]])
    adv = [[1 - 0.25, 0 - 0.25, 1 - 0.25], [2 - 0.4, 2 - 0.4, 0 - 0.4]]  # baselines 0.25 and 0.2 * 2
    credit = [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0]]
    logp = [[math.log(0.25), math.log(0.75), math.log(0.25)], [math.log(0.2), math.log(0.2), math.log(0.8)]]
    want = 0.0
    for i in range(2):
        e = [math.exp(a / 0.5) for a in adv[i]]
        k = [credit[i][b] / (credit[0][b] + credit[1][b]) for b in range(3)]
        want -= sum(k[b] * 3 * e[b] / sum(e) * logp[i][b] for b in range(3)) / 3
    assert algo.actor_loss(torch.randn(2, 3, 3), action, state).item() == pytest.approx(want, rel=1e-5)


def test_continuous_log_prob_is_gaussian_over_real_components():
    """Agent 1 has one action of two: its padded component adds nothing to log pi_1."""
    algo = _continuous(obs_dims=(3, 2), act_dims=(2, 1), max_action=(2.0, 0.5))
    _constant(algo.actor, torch.tensor([[0.3, -0.2], [0.1, 0.7]]))
    mean = torch.tanh(torch.tensor([[0.3, -0.2], [0.1, 0.0]])) * torch.tensor([[2.0], [0.5]])
    std = math.exp(-3.0)  # log_std parameter 0: the middle of [-6, 0]
    a = torch.tensor([[[1.5, -2.0]], [[0.4, 0.0]]])  # [N, 1, A]; agent 0 at its bound
    got = algo.log_prob(torch.randn(2, 1, 3), a)
    normal = torch.distributions.Normal(mean, std)
    want = torch.stack([normal.log_prob(a[:, 0])[0].sum(), normal.log_prob(a[:, 0])[1, 0]])
    torch.testing.assert_close(got[:, 0], want)


def _clipped_normal_mean(m: float) -> float:
    """E[clip(X, -1, 1)] for X ~ N(m, 1)."""

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    def pdf(x: float) -> float:
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    inside = m * (cdf(1 - m) - cdf(-1 - m)) - (pdf(1 - m) - pdf(-1 - m))
    return inside - cdf(-1 - m) + (1 - cdf(1 - m))


def test_continuous_baseline_is_the_mean_q_over_clipped_policy_draws():
    """Q_i(o_i, a) = a (a linear critic): the baseline is E[clip(a ~ pi_i, -1, 1)], std 1 around means 0.5 and 0."""
    algo = _continuous(critic_hidden=(), baseline_samples=20000)
    with torch.no_grad():
        algo.critic.layers[0].weight.zero_()
        algo.critic.layers[0].weight[:, 0, 0] = 1.0  # input [a_i, o_i]: the action's weight
        algo.critic.layers[0].bias.zero_()
        algo.log_std.fill_(30.0)  # log std at log_std_max = 0
    _constant(algo.actor, torch.tensor([[math.atanh(0.5)], [0.0]]))
    got = algo.policy_baseline(torch.randn(2, 1, 3), torch.Generator().manual_seed(0))[:, 0]
    want = torch.tensor([_clipped_normal_mean(0.5), 0.0])
    assert _clipped_normal_mean(0.5) < 0.45  # clipping matters here: the unclipped mean is 0.5
    torch.testing.assert_close(got, want, atol=0.015, rtol=0)


# ---------------------------------------------------------------- structure


def test_mixer_is_monotone_and_linear_in_every_q_i():
    torch.manual_seed(0)
    mixer = LinearMixer(3, 5, 8)
    with torch.no_grad():  # negative hypernetwork outputs must still give w_i(s) >= 0
        mixer.hyper_w1.bias.fill_(-3.0)
        mixer.hyper_w2.bias.fill_(-3.0)
    state, q = torch.randn(16, 5), torch.randn(3, 16, requires_grad=True)
    q_tot = mixer(q, state)
    (grad,) = torch.autograd.grad(q_tot.sum(), q)
    assert (grad >= 0).all() and (grad > 0).any()
    w, b = mixer.coefficients(state)
    torch.testing.assert_close(grad, w)  # dQ_tot / dQ_i = w_i(s)
    torch.testing.assert_close(q_tot, (w * q).sum(0) + b)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_execution_is_decentralized(kind):
    algo = _continuous(obs_dims=(3, 2), act_dims=(2, 1), max_action=(2.0, 0.5)) if kind == "continuous" else _discrete()
    torch.manual_seed(1)
    obs = torch.randn(2, 64, 3)
    obs[1, :, 2] = 0.0 if kind == "continuous" else obs[1, :, 2]
    other = obs.clone()
    other[1, :, :2] = torch.randn(64, 2)  # agent 1's own observation changes
    a, b = algo.act(obs), algo.act(other)
    assert torch.equal(a[0], b[0])
    # the actions come from the actor's outputs (a greedy action of an untrained one may not move)
    before, after = algo.actor(obs), algo.actor(other)
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    if kind == "continuous":
        assert a.shape == (2, 64, 2)
        assert a[0].abs().max() <= 2.0 and a[1].abs().max() <= 0.5 and torch.all(a[1, :, 1] == 0)
        padded = obs.clone()
        padded[1, :, 2] = 9.0  # agent 1's observation padding column
        assert torch.equal(algo.act(padded), a)
    else:
        assert a.shape == (2, 64) and a.dtype == torch.int64


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_every_trainable_parameter_has_exactly_one_optimizer(kind):
    """Checkpointing saves ``algo.optimizers``; target networks are never trained directly."""
    algo = _continuous() if kind == "continuous" else _discrete()
    owned = [id(p) for opt in algo.optimizers.values() for g in opt.param_groups for p in g["params"]]
    trainable = [id(p) for p in algo.parameters() if p.requires_grad]
    assert sorted(owned) == sorted(trainable)
    targets = {id(p) for p in [*algo.critic_target.parameters(), *algo.mixer_target.parameters()]}
    assert targets and not targets & set(owned)


def test_invalid_action_specs_say_how_to_fix():
    with pytest.raises(ValueError, match="one per agent"):
        IcqMa([3, 3], [1], 4, [1.0])
    with pytest.raises(ValueError, match="2 actions"):
        IcqMaDiscrete([3, 3], 4, 1)


# ---------------------------------------------------------------- one update, and learning


def _batch(algo: IcqMa, B: int, g: torch.Generator) -> dict:
    """Bandit data (every transition terminal) with uniformly random behaviour: Q = r exactly.

    Continuous: r = -(a_0 - 0.5)^2 - (a_1 + 0.5)^2. Discrete: r = [a_0 = 2] + [a_1 = 0]."""
    obs, state = torch.randn(2, B, 3, generator=g), torch.randn(B, 4, generator=g)
    if isinstance(algo, IcqMaDiscrete):
        action = torch.randint(0, 3, (2, B), generator=g)
        reward = (action[0] == 2).float() + (action[1] == 0).float()
    else:
        action = torch.rand(2, B, 1, generator=g) * 2 - 1
        reward = -((action[0, :, 0] - 0.5) ** 2) - (action[1, :, 0] + 0.5) ** 2
    return dict(
        obs=obs, action=action, reward=reward, next_obs=obs, terminated=torch.ones(B), state=state, next_state=state
    )


def test_targets_are_polyak_averaged_and_updates_reproducible():
    runs = []
    for _ in range(2):
        algo = _continuous(tau=0.1)
        before = [p.clone() for p in algo.critic_target.parameters()]
        g = torch.Generator().manual_seed(3)
        stats = algo.update(**_batch(algo, 32, g), generator=g)
        for old, new, online in zip(before, algo.critic_target.parameters(), algo.critic.parameters(), strict=True):
            torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
        runs.append((stats, algo.state_dict()))
    assert set(runs[0][0]) == {"value", "critic", "actor"}
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_training_moves_the_policy_to_the_high_advantage_actions(kind):
    """Uniform behaviour data: behaviour cloning would stay uniform (mean 0); ICQ-MA's policy goes to
    the best action of each agent, and the critic's loss falls."""
    kw = dict(actor_lr=3e-3, critic_lr=3e-3, beta=0.1)
    algo = _continuous(**kw) if kind == "continuous" else _discrete(**kw)
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 256, 3, generator=g)
    critic = []
    for _ in range(300):
        critic.append(algo.update(**_batch(algo, 128, g), generator=g)["critic"])
    assert sum(critic[-20:]) < 0.2 * sum(critic[:20])
    if kind == "continuous":
        mean = algo.act(probe)[..., 0].mean(1)
        assert abs(mean[0] - 0.5) < 0.25 and abs(mean[1] + 0.5) < 0.25  # behaviour cloning: 0
    else:
        assert algo.act(probe)[0].eq(2).float().mean() > 0.95 and algo.act(probe)[1].eq(0).float().mean() > 0.95
        probs = algo.actor(probe).softmax(-1)
        assert probs[0, :, 2].mean() > 0.6 and probs[1, :, 0].mean() > 0.6
