"""CAST-BCQ iteration time: madata's agent-batched update beside a per-agent-loop version.

    python benchmarks/train_step.py [--batch 100,256,1024] [--iters 20] [--small-batch 32,100]

The loop version is the same update organized the way the reference code is: every
per-agent network evaluated agent by agent, and the counterfactual target computed with
one joint-critic call per agent and per subteam. Both start from the same weights and
draw the same random numbers; the script first checks that one iteration of each gives
the same losses and parameters, then times ms per iteration (forward, backward, Adam,
target updates) on halfcheetah-2x3 (2 agents: obs 12, act 3, state 17) and hopper-3x1
(3 agents: obs 8, 9, 8, act 1, state 11) shapes with the reference network sizes, and
with small networks (64-64 everywhere) where per-call overhead, not arithmetic, dominates.

It also counts the floating-point operations of one iteration (torch's FlopCounterMode)
and measures this machine's matmul peak, so each row shows how close to the arithmetic
bound both versions already run: the vectorized update cannot take less than
FLOPs / peak, whatever its organization.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from madata_algos.cast_bcq import CastBcq, soft_clipped_double_q, subteam_masks
from madata_algos.configs import CastBcqConfig
from madata_algos.networks import AgentMLP, soft_update

TASKS = {"halfcheetah-2x3": ([12, 12], [3, 3], 17), "hopper-3x1": ([8, 9, 8], [1, 1, 1], 11)}


def agent_forward(net: AgentMLP, i: int, x: torch.Tensor) -> torch.Tensor:
    """Network ``i`` of an AgentMLP on its own unpadded input [R, in_i]."""
    for k, layer in enumerate(net.layers):
        x = torch.addmm(layer.bias[i, 0], x, layer.weight[i, : layer.in_features[i]])
        if k < len(net.layers) - 1:
            x = torch.relu(x)
    return x


class LoopUpdate:
    """CastBcq.update, agent by agent and subteam by subteam (the reference code's organization)."""

    def __init__(self, algo: CastBcq):
        self.m = algo

    def _obs(self, obs, i):
        return obs[i, :, : self.m.obs_dims[i]]

    def decode(self, obs, i, z):
        m = self.m
        x = torch.cat([z, self._obs(obs, i)], -1)
        return torch.tanh(agent_forward(m.decoder, i, x)) * m.max_action[i]

    def perturb(self, actor, obs, i, a):
        m = self.m
        xi = m.cfg.phi * m.max_action[i] * torch.tanh(agent_forward(actor, i, torch.cat([a, self._obs(obs, i)], -1)))
        return torch.maximum(torch.minimum(a + xi, m.max_action[i]), -m.max_action[i])

    def joint_q(self, state, joint, target=False):  # joint [R, N, A]
        net = self.m.joint_critic_target if target else self.m.joint_critic
        x = torch.cat([state, joint.flatten(1)], -1)
        return soft_clipped_double_q(agent_forward(net, 0, x)[:, 0], agent_forward(net, 1, x)[:, 0], self.m.cfg.lam)

    def ind_q(self, head, i, obs, a):
        return agent_forward(self.m.critic, head * self.m.n + i, torch.cat([a, self._obs(obs, i)], -1))[:, 0]

    def update(self, obs, action, reward, next_obs, terminated, state, next_state, generator):
        m, N, cfg = self.m, self.m.n, self.m.cfg
        B, stats = state.shape[0], {}
        # Eq. 3
        eps = torch.randn(N, B, m.latent, generator=generator)
        vae = 0.0
        for i in range(N):
            mu, log_std = agent_forward(m.encoder, i, torch.cat([action[i], self._obs(obs, i)], -1)).chunk(2, -1)
            log_std = log_std.clamp(-4, 15)
            std = log_std.exp()
            recon = self.decode(obs, i, mu + std * eps[i])
            rec = ((recon - action[i]) ** 2).sum(-1).mean() / m.act_mask[i].sum()
            kl = -0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2)).mean()
            vae = vae + rec + cfg.kl_weight * kl
        stats["vae"] = _step(m.opt_vae, vae)
        # Eq. 6
        n = cfg.n_target
        with torch.no_grad():
            z = torch.randn(N, B * n, m.latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            rep = next_obs.repeat_interleave(n, dim=1)
            cand = torch.stack([self.perturb(m.actor_target, rep, i, self.decode(rep, i, z[i])) for i in range(N)], 1)
            q = self.joint_q(next_state.repeat_interleave(n, dim=0), cand, target=True)
            y = reward + cfg.gamma * (1 - terminated) * q.view(B, n).max(1).values
        x = torch.cat([state, action.transpose(0, 1).flatten(1)], -1)
        jl = sum(F.mse_loss(agent_forward(m.joint_critic, k, x)[:, 0], y) for k in range(2))
        stats["joint_critic"] = _step(m.opt_joint, jl)
        # Eqs. 8-9
        with torch.no_grad():
            z = torch.randn(N, B, m.latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            pi = [self.perturb(m.actor, obs, i, self.decode(obs, i, z[i])) for i in range(N)]
            masks = subteam_masks(N, cfg.subteams, generator)
            delta = torch.zeros(N, B)
            for i in range(N):
                for s in range(masks.shape[0]):
                    mates = [torch.zeros_like(pi[j]) if masks[s, i, j] else pi[j] for j in range(N)]
                    with_a = torch.stack([action[i] if j == i else mates[j] for j in range(N)], 1)
                    with_d = torch.stack([torch.zeros_like(action[i]) if j == i else mates[j] for j in range(N)], 1)
                    delta[i] += self.joint_q(state, with_a) - self.joint_q(state, with_d)
            delta /= masks.shape[0]
        il = sum(((self.ind_q(k, i, obs, action[i]) - delta[i]) ** 2).mean() for k in range(2) for i in range(N))
        stats["individual_critic"] = _step(m.opt_critic, il)
        # actor
        with torch.no_grad():
            z = torch.randn(N, B, m.latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            sampled = [self.decode(obs, i, z[i]) for i in range(N)]
        al = -sum(self.ind_q(0, i, obs, self.perturb(m.actor, obs, i, sampled[i])).mean() for i in range(N))
        stats["actor"] = _step(m.opt_actor, al)
        soft_update(m.joint_critic_target, m.joint_critic, cfg.tau)
        soft_update(m.actor_target, m.actor, cfg.tau)
        return stats


def _step(opt, loss) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


SMALL = CastBcqConfig(vae_hidden=(64, 64), actor_hidden=(64, 64), critic_hidden=(64, 64))


def make(task: str, B: int, seed: int = 0, config: CastBcqConfig | None = None):
    obs_dims, act_dims, S = TASKS[task]
    torch.manual_seed(seed)
    algo = CastBcq(obs_dims, act_dims, S, [1.0] * len(obs_dims), config)
    g = torch.Generator().manual_seed(seed)
    N, width, A = len(obs_dims), max(obs_dims), max(act_dims)
    obs, next_obs = torch.zeros(N, B, width), torch.zeros(N, B, width)
    for i, o in enumerate(obs_dims):
        obs[i, :, :o], next_obs[i, :, :o] = torch.randn(B, o, generator=g), torch.randn(B, o, generator=g)
    batch = dict(obs=obs, action=(torch.rand(N, B, A, generator=g) * 2 - 1) * algo.act_mask, reward=torch.randn(B, generator=g),
                 next_obs=next_obs, terminated=(torch.rand(B, generator=g) < 0.05).float(),
                 state=torch.randn(B, S, generator=g), next_state=torch.randn(B, S, generator=g))  # fmt: skip
    return algo, batch


def check_same_numbers(task: str) -> float:
    """One iteration of each from the same start: largest relative difference of losses and weights."""
    algo, batch = make(task, 64)
    twin = copy.deepcopy(algo)
    twin.opt_vae = torch.optim.Adam([*twin.encoder.parameters(), *twin.decoder.parameters()], lr=twin.cfg.lr)
    twin.opt_actor = torch.optim.Adam(twin.actor.parameters(), lr=twin.cfg.lr)
    twin.opt_joint = torch.optim.Adam(twin.joint_critic.parameters(), lr=twin.cfg.lr)
    twin.opt_critic = torch.optim.Adam(twin.critic.parameters(), lr=twin.cfg.lr)
    a = algo.update(**batch, generator=torch.Generator().manual_seed(1))
    b = LoopUpdate(twin).update(**batch, generator=torch.Generator().manual_seed(1))
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for k in a)
    for p, q in zip(algo.parameters(), twin.parameters(), strict=True):
        worst = max(worst, float((p - q).abs().max() / (p.abs().max() + 1e-6)))
    return worst


def flops(fn) -> int:
    """Floating-point operations of one call (matrix products; elementwise work is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(iters: int = 10) -> float:
    """GFLOP/s of a large float32 matrix product on this machine: the arithmetic bound."""
    a, b = torch.randn(4096, 1024), torch.randn(1024, 1024)
    ms = time_it(lambda: a @ b, iters)
    return 2 * 4096 * 1024 * 1024 / ms / 1e6


def time_it(fn, iters: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="100,256,1024")
    ap.add_argument("--small-batch", default="32,100", help="batches for the small (64-64) networks")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    for task in TASKS:
        print(f"{task}: one iteration, vectorized vs loop, largest relative difference {check_same_numbers(task):.1e}")
    peak = matmul_peak()
    runs = [("reference", None, int(b)) for b in args.batch.split(",")]
    runs += [("64-64", SMALL, int(b)) for b in args.small_batch.split(",") if b]
    rows = []
    for task in TASKS:
        for nets, cfg, B in runs:
            algo, batch = make(task, B, config=cfg)
            g = torch.Generator().manual_seed(1)
            vec_fn = lambda a=algo, b=batch, g=g: a.update(**b, generator=g)  # noqa: E731
            loop = LoopUpdate(make(task, B, config=cfg)[0])
            loop_fn = lambda lo=loop, b=batch, g=g: lo.update(**b, generator=g)  # noqa: E731
            gflop = flops(vec_fn) / 1e9
            vec, lp = time_it(vec_fn, args.iters), time_it(loop_fn, args.iters)
            rows.append((task, nets, B, vec, lp, gflop, gflop / peak * 1000))
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f}; "
          f"float32 matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    print("\n| task | networks | batch | vectorized ms/iter | per-agent loop ms/iter | ratio | GFLOP/iter | "
          "arithmetic bound ms | bound / loop |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for task, nets, B, vec, lp, gflop, bound in rows:
        print(f"| {task} | {nets} | {B} | {vec:.1f} | {lp:.1f} | {vec / lp:.2f} | {gflop:.2f} | {bound:.1f} | {bound / lp:.2f} |")
    print(f"\ncommand: python benchmarks/train_step.py --batch {args.batch} --small-batch {args.small_batch} "
          f"--iters {args.iters}")  # fmt: skip


if __name__ == "__main__":
    main()
