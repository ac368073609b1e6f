"""The Table 2 baselines: bcq, ibcq and mabcq's key loss terms against hand-computed examples
(ICQ-MA's are in test_icq.py), and for every baseline, icq-ma included, a short training run on
the grid world and on halfcheetah-2x3 data that beats the run's own initial policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import madata
from madata.envs.grid import GridWorld
from madata.envs.registry import get_task
from madata_algos import registry
from madata_algos.bcq import JointBcq, JointBcqDiscrete
from madata_algos.configs import (
    BcqConfig,
    BcqDiscreteConfig,
    IcqConfig,
    IcqDiscreteConfig,
    MabcqConfig,
    MabcqDiscreteConfig,
)
from madata_algos.evaluate import evaluate
from madata_algos.ibcq import IndependentBcq, bcq_target
from madata_algos.mabcq import Mabcq, transition_normalization_weight, value_deviation_weight
from madata_algos.train import make_policy, train

SMALL = dict(vae_hidden=(32, 32), actor_hidden=(32, 32), critic_hidden=(32, 32), n_target=4, n_act=8)
BASELINES = ["bcq", "ibcq", "mabcq", "icq-ma"]


def small_config(algorithm: str, task: str):
    """Small networks for CPU tests, of the variant the task's actions select (the grid's are discrete).
    ICQ-MA: 1e-3 learning rates (its defaults, 5e-4 and 1e-4, need far more than these few hundred
    steps) and an actor temperature beta on the scale of each task's advantages."""
    discrete = task == "grid"
    cls = registry.get(algorithm).variant(discrete).config
    if cls in (IcqConfig, IcqDiscreteConfig):
        return cls(
            actor_hidden=(32, 32),
            critic_hidden=(32, 32),
            actor_lr=1e-3,
            critic_lr=1e-3,
            beta=10.0 if discrete else 100.0,
        )
    if discrete:
        return cls(hidden=(32, 32), **({"transition_hidden": (32, 32)} if cls is MabcqDiscreteConfig else {}))
    return cls(**SMALL, transition_hidden=(32, 32)) if cls is MabcqConfig else cls(**SMALL)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from intra-op threads, and on cores shared with other work
    they make the training runs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Fixed(nn.Module):
    """A network stand-in that returns the same output whatever its inputs."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, *inputs):
        return self.out


# ---------------------------------------------------------------------------- BCQ's target: bcq, ibcq


def test_bcq_target_by_hand():
    """y = r + gamma (1 - d) max_j [lam min(Q'1, Q'2) + (1 - lam) max(Q'1, Q'2)](o', a_j)."""
    q1 = torch.tensor([[1.0, 4.0], [2.0, 0.0]])  # [B = 2, n = 2 candidates]
    q2 = torch.tensor([[3.0, 2.0], [-1.0, 5.0]])
    y = bcq_target(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), q1, q2, gamma=0.9, lam=0.75)
    # sample 0: candidates 0.75 * 1 + 0.25 * 3 = 1.5 and 0.75 * 2 + 0.25 * 4 = 2.5 -> 1 + 0.9 * 2.5
    # sample 1: terminated, no bootstrap -> 2
    torch.testing.assert_close(y, torch.tensor([3.25, 2.0]))


def _patched_ibcq(cls=IndependentBcq, **kw):
    algo = cls([3, 3], [1, 1], [1.0, 1.0], kw.pop("config", BcqConfig(**SMALL, gamma=0.5)))
    algo.next_value = lambda next_obs, generator=None, k=None: torch.tensor([[2.0, 3.0], [1.0, 0.0]])  # V(o') [N, B]
    algo.critic = Fixed(torch.tensor([[[1.0, 0.0], [2.0, -1.0]], [[3.0, -1.0], [1.5, 0.0]]]))  # [2 critics, N, B]
    return algo


def _batch(N=2, B=2, obs_dim=3, act_dim=1):
    return dict(
        obs=torch.zeros(N, B, obs_dim),
        action=torch.zeros(N, B, act_dim),
        reward=torch.tensor([1.0, -1.0]),
        next_obs=torch.zeros(N, B, obs_dim),
        terminated=torch.tensor([0.0, 1.0]),
    )


def test_ibcq_critic_loss_by_hand():
    """Each agent's own target y_i = r + gamma (1 - d) V_i(o'_i), both critics' squared errors summed."""
    algo = _patched_ibcq()
    loss = algo.critic_objective(**_batch())
    # y = [[1 + 0.5 * 2, -1], [1 + 0.5 * 1, -1]] = [[2, -1], [1.5, -1]]
    # critic 1: agent 0 ((1-2)^2 + (0+1)^2) / 2 = 1, agent 1 ((2-1.5)^2 + 0) / 2 = 0.125
    # critic 2: agent 0 ((3-2)^2 + 0) / 2 = 0.5,     agent 1 (0 + (0+1)^2) / 2 = 0.5
    assert loss.item() == pytest.approx(2.125)


def test_ibcq_acts_on_its_own_observation():
    torch.manual_seed(0)
    algo = IndependentBcq([3, 4], [2, 1], [1.0, 0.5], BcqConfig(**SMALL))
    obs = torch.randn(2, 5, 4)
    obs[0, :, 3] = 0.0  # agent 0's padding
    other = obs.clone()
    other[1] = torch.randn(5, 4)
    a, b = algo.act(obs, torch.Generator().manual_seed(0)), algo.act(other, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert a[0].abs().max() <= 1 and a[1, :, 0].abs().max() <= 0.5 and not a[1, :, 1].any()  # bounds, padding 0


# ---------------------------------------------------------------------------- centralized BCQ


def test_joint_bcq_concatenates_real_components():
    """Hopper-like agents (observations 2, 3, 2; actions 1, 2, 1): the joint vectors skip the padding."""
    algo = JointBcq([2, 3, 2], [1, 2, 1], [1.0, 0.5, 1.0], BcqConfig(**SMALL))
    obs = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0], [6.0, 7.0, 0.0]])[:, None]  # [N, B = 1, 3]
    assert algo.joint(obs, algo.obs_columns).tolist() == [[[1, 2, 3, 4, 5, 6, 7]]]
    joint_action = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    torch.testing.assert_close(algo.split(joint_action)[:, 0], torch.tensor([[0.1, 0.0], [0.2, 0.3], [0.4, 0.0]]))
    assert algo.policy.max_action[0, 0].tolist() == [1.0, 0.5, 0.5, 1.0]  # each component keeps its agent's bound
    a = algo.act(torch.randn(3, 4, 3), torch.Generator().manual_seed(0))
    assert a.shape == (3, 4, 2) and not a[0, :, 1].any() and a[1].abs().max() <= 0.5


def test_joint_bcq_discrete_target_by_hand():
    """Discrete BCQ over joint actions: y = r + gamma Q'(o', argmax over allowed a' of Q(o', a')).

    2 agents x 2 actions: joint index 2 a_0 + a_1. G(.|o') = [0.5, 0.1, 0.3, 0.1]: with
    threshold 0.3 only joint actions 0 and 2 are allowed, so the argmax of Q(o') = [1, 9, 3, 8]
    is 2 (not 1), and Q'(o', 2) = 2.5.
    """
    algo = JointBcqDiscrete(2, 2, 2, BcqDiscreteConfig(gamma=0.9, threshold=0.3))
    assert algo.encode(torch.tensor([[1], [0]])).tolist() == [[2]]
    assert algo.decode_joint(torch.tensor([[0, 1, 2, 3]])).tolist() == [[0, 0, 1, 1], [0, 1, 0, 1]]
    algo.classifier = Fixed(torch.tensor([0.5, 0.1, 0.3, 0.1]).log()[None, None])  # [1, B = 1, 4]
    algo.critic_target = Fixed(torch.tensor([[[0.5, 7.0, 2.5, 6.0]]]))

    class Critic(nn.Module):  # Q(o', .) for the next observation (all ones), Q(o, .) for o (zeros)
        def forward(self, x):
            return torch.tensor([[[1.0, 9.0, 3.0, 8.0]]]) if x.sum() > 0 else torch.tensor([[[0.0, 0.0, 4.0, 0.0]]])

    algo.critic = Critic()
    loss = algo.critic_objective(
        algo.joint_obs(torch.zeros(2, 1, 2)),
        algo.encode(torch.tensor([[1], [0]])),
        torch.tensor([1.0]),
        algo.joint_obs(torch.ones(2, 1, 2)),
        torch.tensor([0.0]),
    )
    # y = 1 + 0.9 * 2.5 = 3.25; Q(o, joint action 2) = 4; Huber(0.75) = 0.5 * 0.75^2
    assert loss.item() == pytest.approx(0.28125)


def test_joint_bcq_discrete_refuses_huge_joint_spaces():
    with pytest.raises(madata.errors.SchemaError, match="joint actions"):
        JointBcqDiscrete(8, 2, 5)


# ---------------------------------------------------------------------------- MABCQ's weights


def test_transition_normalization_makes_next_states_uniform():
    """After (o, a) the data reach o1 with p 1/2, o2 and o3 with 1/4 each: p * w_tn is the same for all three."""
    p = torch.tensor([0.5, 0.5, 0.25, 0.25])  # a minibatch drawn from p: o1, o1, o2, o3
    samples = p.log()[None, None].expand(1, 4, 4)  # k = 4 drawn outcomes per (o, a), the same draw
    w = transition_normalization_weight(p.log()[None], samples)[0]
    # typical density exp(E log p) = 2^-1.5; weights 2^-1.5 / p = [0.707, 0.707, 1.414, 1.414], median 1
    torch.testing.assert_close(w, torch.tensor([2**-0.5, 2**-0.5, 2**0.5, 2**0.5]))
    torch.testing.assert_close(p * w, torch.full((4,), 2**-1.5))


def test_value_deviation_by_hand():
    value = torch.tensor([[4.0, 0.0]])  # [N = 1, B = 2]
    samples = torch.tensor([[[0.0, 4.0], [0.0, 4.0]]])  # two outcomes of each (o, a): values 0 and 4
    # margin 0.5: values shifted by -(0 - 0.5 * 4) = +2 -> own [6, 2], samples [2, 6]
    w = value_deviation_weight(value, samples, None, margin=0.5)
    torch.testing.assert_close(w, torch.tensor([[6 / 4, 2 / 4]]), atol=1e-5, rtol=0)
    w = value_deviation_weight(value, samples, torch.tensor([[[0.25, 0.75], [0.25, 0.75]]]), margin=0.5)
    torch.testing.assert_close(w, torch.tensor([[6 / 5, 2 / 5]]), atol=1e-5, rtol=0)  # E = 0.25 * 2 + 0.75 * 6


def test_mabcq_weighs_the_td_errors():
    algo = _patched_ibcq(Mabcq, config=MabcqConfig(**SMALL, gamma=0.5, transition_hidden=(8,)))
    algo.weighting.weights = lambda *args, **kw: torch.tensor([[1.0, 2.0], [0.5, 0.0]])
    # the I-BCQ example's squared errors times lambda, per agent and critic:
    # critic 1: (1 * 1 + 2 * 1) / 2 + (0.5 * 0.25 + 0) / 2; critic 2: (1 * 1 + 2 * 0) / 2 + (0.5 * 0 + 0 * 1) / 2
    assert algo.critic_objective(**_batch()).item() == pytest.approx(1.5 + 0.0625 + 0.5 + 0.0)


def test_mabcq_weights_switched_off_are_one():
    torch.manual_seed(0)
    algo = Mabcq(
        [3, 3],
        [1, 1],
        [1.0, 1.0],
        MabcqConfig(**SMALL, transition_hidden=(8,), value_deviation=False, transition_normalization=False),
    )
    b = _batch(B=2)
    w = algo.weighting.weights(
        torch.cat([b["action"], b["obs"]], -1),
        b["reward"],
        b["terminated"],
        b["next_obs"],
        lambda o: torch.randn(o.shape[:2]),
        0.9,
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(w, torch.ones(2, 2))
    with pytest.raises(madata.errors.SchemaError, match="weight_min"):
        Mabcq([3], [1], [1.0], MabcqConfig(weight_min=2.0, weight_max=1.0))


# ---------------------------------------------------------------------------- short training runs


def _noisy_expert_grid(path, episodes: int, epsilon: float, seed: int) -> madata.Dataset:
    """Grid episodes of the optimal team (agent_0 forward until x = 5, agent_1 until y = 3, then
    stay), each agent acting uniformly at random with probability ``epsilon`` at every step."""
    env = GridWorld()
    rng = np.random.default_rng(seed)
    ids = env.possible_agents
    with madata.create(path, env.madata_agents(), state_space=env.madata_state_space(), env=get_task("grid").env) as w:
        for _ in range(episodes):
            first, _ = env.reset(seed=seed)
            obs, acts, rewards, done = {a: [first[a]] for a in ids}, {a: [] for a in ids}, [], False
            while not done:
                x, y = env.pos
                act = {"agent_0": 2 if x < env.width - 1 else 1, "agent_1": 2 if y < env.height - 1 else 1}
                act = {a: int(rng.integers(3)) if rng.random() < epsilon else v for a, v in act.items()}
                o, r, term, trunc, _ = env.step(act)
                for a in ids:
                    obs[a].append(o[a])
                    acts[a].append(act[a])
                rewards.append(r["agent_0"])
                done = term["agent_0"] or trunc["agent_0"]
            ends = np.zeros((2, len(rewards)), bool)
            ends[0 if term["agent_0"] else 1, -1] = True
            w.add_episode(
                {a: np.array(v, np.float32) for a, v in obs.items()},
                {a: np.array(v) for a, v in acts.items()},
                np.array(rewards),
                ends[0],
                ends[1],
                state=np.array(obs["agent_0"], np.float32),
            )
    return madata.open(path)


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "noisy-expert"
    ds = _noisy_expert_grid(path, episodes=200, epsilon=0.5, seed=0)
    assert (ds.transitions(["reward"])["reward"] == 10).sum() > 20  # the goal is in the data
    return path


@pytest.fixture(scope="module")
def hc_data(tmp_path_factory):
    pytest.importorskip("gymnasium_robotics")
    from madata.collect import collect

    path = tmp_path_factory.mktemp("hc") / "medium-expert"
    collect("halfcheetah-2x3", path, mix=["medium", "expert"], episodes=4, max_steps=100, seed=0, envs=2)
    return path


def _initial_return(path, algorithm: str, config, seed: int, episodes: int, max_steps: int | None) -> float:
    """The return of the run's own initial policy: train() seeds torch with ``seed`` right before it builds."""
    data = registry.describe(madata.open(path))
    torch.manual_seed(seed)
    algo = registry.build(algorithm, data, config, "cpu")
    policy = make_policy(algo, data, "cpu", torch.Generator().manual_seed(seed + 2))
    return evaluate(data.task, policy, episodes=episodes, seed=10_000 * (seed + 1), max_steps=max_steps).mean_return


@pytest.mark.parametrize("algorithm", BASELINES)
def test_learns_to_reach_the_grid_goal(grid_data, tmp_path, algorithm):
    """From half-random episodes of the optimal team, the trained greedy policy reaches the goal
    (return 5 or 6; 6 is optimal) where the initial one does not (the grid is deterministic)."""
    cfg = small_config(algorithm, "grid")
    rows = train(
        grid_data,
        tmp_path / "run",
        algorithm=algorithm,
        steps=1000,
        seed=0,
        config=cfg,
        batch_size=128,
        eval_every=1000,
        eval_episodes=1,
        device="cpu",
    )
    before = _initial_return(grid_data, algorithm, cfg, 0, 1, None)
    assert before < 0 < rows[-1]["eval_return"]


@pytest.mark.parametrize("algorithm", BASELINES)
def test_improves_on_halfcheetah(hc_data, tmp_path, algorithm):
    """200 iterations on medium/expert data: the policy runs forward (about +35 to +95 over 50 steps)
    where the initial one stands still (about 0)."""
    cfg = small_config(algorithm, "halfcheetah")
    rows = train(
        hc_data,
        tmp_path / "run",
        algorithm=algorithm,
        steps=200,
        seed=0,
        config=cfg,
        batch_size=64,
        eval_every=200,
        eval_episodes=2,
        eval_max_steps=50,
        device="cpu",
    )
    before = _initial_return(hc_data, algorithm, cfg, 0, 2, 50)
    assert rows[-1]["eval_return"] > before + 20
