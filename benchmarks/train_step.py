"""CAST-BCQ iteration time: madata's agent-batched update beside a per-agent-loop version.

    python benchmarks/train_step.py [--batch 100,256,1024] [--small-batch 32,100]
        [--networks reference,256-256,64-64] [--threads 1,2] [--rounds 20]

The loop version is the same update organized the way the reference code is: every
per-agent network evaluated agent by agent, and the counterfactual target computed with
one joint-critic call per agent and per subteam. Both start from the same weights and
draw the same random numbers; the script first checks that one iteration of each gives
the same losses and parameters, then times ms per iteration (forward, backward, Adam,
target updates) on halfcheetah-2x3 (2 agents: obs 12, act 3, state 17) and hopper-3x1
(3 agents: obs 8, 9, 8, act 1, state 11) shapes with the reference network sizes, with
the 256-256 networks of Table 2's CPU protocol, and with small networks (64-64 everywhere)
where per-call overhead, not arithmetic, dominates. Three versions are timed in
interleaved rounds (median; the ratio's quartiles over paired rounds show the noise): the vectorized update as shipped (its networks choose a
kernel per shape and thread count, ``AgentMLP.per_agent_kernel``), the same update forced
to one ``bmm`` per layer (as before that choice existed), and the loop.

It also counts the floating-point operations of one iteration (torch's FlopCounterMode)
and measures this machine's matmul peak, so each row shows how close to the arithmetic
bound both versions already run: the vectorized update cannot take less than
FLOPs / peak, whatever its organization.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics

import torch
import torch.nn.functional as F
from harness import command_line, interleaved, machine_line, markdown_table, median_seconds, paired_ratio
from torch.utils.flop_counter import FlopCounterMode

from madata_algos import networks
from madata_algos.cast_bcq import CastBcq, soft_clipped_double_q, subteam_masks
from madata_algos.configs import CastBcqConfig
from madata_algos.networks import keep_large_tensors_on_heap, soft_update

TASKS = {"halfcheetah-2x3": ([12, 12], [3, 3], 17), "hopper-3x1": ([8, 9, 8], [1, 1, 1], 11)}


class LoopUpdate:
    """CastBcq.update, agent by agent and subteam by subteam (the reference code's organization)."""

    def __init__(self, algo: CastBcq):
        self.m = algo

    def _obs(self, obs, i):
        return obs[i, :, : self.m.obs_dims[i]]

    def decode(self, obs, i, z):
        m = self.m
        x = torch.cat([z, self._obs(obs, i)], -1)
        return torch.tanh(m.policy.decoder.agent_forward(i, x)) * m.policy.max_action[i]

    def perturb(self, actor, obs, i, a):
        m = self.m
        bound = m.policy.max_action[i]
        xi = m.cfg.phi * bound * torch.tanh(actor.agent_forward(i, torch.cat([a, self._obs(obs, i)], -1)))
        return torch.maximum(torch.minimum(a + xi, bound), -bound)

    def joint_q(self, state, joint, target=False):  # joint [R, N, A]
        net = self.m.joint_critic_target if target else self.m.joint_critic
        x = torch.cat([state, joint.flatten(1)], -1)
        return soft_clipped_double_q(net.agent_forward(0, x)[:, 0], net.agent_forward(1, x)[:, 0], self.m.cfg.lam)

    def ind_q(self, head, i, obs, a):
        return self.m.critic.net.agent_forward(head * self.m.n + i, torch.cat([a, self._obs(obs, i)], -1))[:, 0]

    def update(self, obs, action, reward, next_obs, terminated, state, next_state, generator):
        m, N, cfg = self.m, self.m.n, self.m.cfg
        opt = m.optimizers
        latent, act_mask = m.policy.latent, m.policy.act_mask
        B, stats = state.shape[0], {}
        # Eq. 3
        eps = torch.randn(N, B, latent, generator=generator)
        vae = 0.0
        for i in range(N):
            mu, log_std = m.policy.encoder.agent_forward(i, torch.cat([action[i], self._obs(obs, i)], -1)).chunk(2, -1)
            log_std = log_std.clamp(-4, 15)
            std = log_std.exp()
            recon = self.decode(obs, i, mu + std * eps[i])
            rec = ((recon - action[i]) ** 2).sum(-1).mean() / act_mask[i].sum()
            kl = -0.5 * (1 + 2 * log_std - mu.pow(2) - std.pow(2)).mean()
            vae = vae + rec + cfg.kl_weight * kl
        stats["vae"] = _step(opt["vae"], vae)
        # Eq. 6
        n = cfg.n_target
        with torch.no_grad():
            z = torch.randn(N, B * n, latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            rep = next_obs.repeat_interleave(n, dim=1)
            actor_target = m.policy.actor_target
            cand = torch.stack([self.perturb(actor_target, rep, i, self.decode(rep, i, z[i])) for i in range(N)], 1)
            q = self.joint_q(next_state.repeat_interleave(n, dim=0), cand, target=True)
            y = reward + cfg.gamma * (1 - terminated) * q.view(B, n).max(1).values
        x = torch.cat([state, action.transpose(0, 1).flatten(1)], -1)
        jl = sum(F.mse_loss(m.joint_critic.agent_forward(k, x)[:, 0], y) for k in range(2))
        stats["joint_critic"] = _step(opt["joint_critic"], jl)
        # Eqs. 8-9
        with torch.no_grad():
            z = torch.randn(N, B, latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            pi = [self.perturb(m.policy.actor, obs, i, self.decode(obs, i, z[i])) for i in range(N)]
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
        stats["individual_critic"] = _step(opt["individual_critic"], il)
        # actor
        with torch.no_grad():
            z = torch.randn(N, B, latent, generator=generator).clamp(-cfg.latent_clip, cfg.latent_clip)
            sampled = [self.decode(obs, i, z[i]) for i in range(N)]
        al = -sum(self.ind_q(0, i, obs, self.perturb(m.policy.actor, obs, i, sampled[i])).mean() for i in range(N))
        stats["actor"] = _step(opt["actor"], al)
        soft_update(m.joint_critic_target, m.joint_critic, cfg.tau)
        soft_update(m.policy.actor_target, m.policy.actor, cfg.tau)
        return stats


def _step(opt, loss) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


SMALL = CastBcqConfig(vae_hidden=(64, 64), actor_hidden=(64, 64), critic_hidden=(64, 64))
MEDIUM = CastBcqConfig(
    vae_hidden=(256, 256), actor_hidden=(256, 256), critic_hidden=(256, 256)
)  # Table 2's CPU protocol


def make(task: str, B: int, seed: int = 0, config: CastBcqConfig | None = None):
    obs_dims, act_dims, S = TASKS[task]
    torch.manual_seed(seed)
    algo = CastBcq(obs_dims, act_dims, S, [1.0] * len(obs_dims), config)
    g = torch.Generator().manual_seed(seed)
    N, width, A = len(obs_dims), max(obs_dims), max(act_dims)
    obs, next_obs = torch.zeros(N, B, width), torch.zeros(N, B, width)
    for i, o in enumerate(obs_dims):
        obs[i, :, :o], next_obs[i, :, :o] = torch.randn(B, o, generator=g), torch.randn(B, o, generator=g)
    batch = dict(
        obs=obs,
        action=(torch.rand(N, B, A, generator=g) * 2 - 1) * algo.policy.act_mask,
        reward=torch.randn(B, generator=g),
        next_obs=next_obs,
        terminated=(torch.rand(B, generator=g) < 0.05).float(),
        state=torch.randn(B, S, generator=g),
        next_state=torch.randn(B, S, generator=g),
    )
    return algo, batch


def check_same_numbers(task: str) -> float:
    """One iteration of each from the same start: largest relative difference of losses and weights."""
    algo, batch = make(task, 64)
    twin = copy.deepcopy(algo)
    twin.optimizers = {
        "vae": torch.optim.Adam(twin.policy.vae_parameters(), lr=twin.cfg.lr),
        "actor": torch.optim.Adam(twin.policy.actor.parameters(), lr=twin.cfg.lr),
        "joint_critic": torch.optim.Adam(twin.joint_critic.parameters(), lr=twin.cfg.lr),
        "individual_critic": torch.optim.Adam(twin.critic.parameters(), lr=twin.cfg.lr),
    }
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


def matmul_peak(rounds: int = 10) -> float:
    """GFLOP/s of a large float32 matrix product on this machine: the arithmetic bound."""
    a, b = torch.randn(4096, 1024), torch.randn(1024, 1024)
    return 2 * 4096 * 1024 * 1024 / median_seconds(lambda: a @ b, rounds) / 1e9


@contextlib.contextmanager
def always_bmm():
    """The update as it was before the kernel choice: one ``bmm`` per layer whatever the shape."""
    saved = networks.PER_AGENT_MIN_ACTIVATIONS
    networks.PER_AGENT_MIN_ACTIVATIONS = float("inf")
    try:
        yield
    finally:
        networks.PER_AGENT_MIN_ACTIVATIONS = saved


NETWORKS = {"reference": None, "256-256": MEDIUM, "64-64": SMALL}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="100,256,1024", help="batches for the reference and 256-256 networks")
    ap.add_argument("--small-batch", default="32,100", help="batches for the small (64-64) networks")
    ap.add_argument("--networks", default="reference,256-256,64-64")
    ap.add_argument("--threads", default=str(torch.get_num_threads()), help="torch thread counts to measure")
    ap.add_argument("--rounds", type=int, default=20, help="timed iterations of each version (median reported)")
    args = ap.parse_args()
    keep_large_tensors_on_heap()  # as madata train does (both versions alike)
    for task in TASKS:
        print(f"{task}: one iteration, vectorized vs loop, largest relative difference {check_same_numbers(task):.1e}")
    peak = matmul_peak()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for task in TASKS:
            for nets in args.networks.split(","):
                batches = args.small_batch if nets == "64-64" else args.batch
                for B in [int(b) for b in batches.split(",") if b]:
                    cfg = NETWORKS[nets]
                    algo, batch = make(task, B, config=cfg)
                    g = torch.Generator().manual_seed(1)
                    vec = lambda a=algo, b=batch, g=g: a.update(**b, generator=g)  # noqa: E731

                    def bmm(a=algo, b=batch, g=g):
                        with always_bmm():
                            a.update(**b, generator=g)

                    loop = LoopUpdate(make(task, B, config=cfg)[0])
                    per_agent = lambda lo=loop, b=batch, g=g: lo.update(**b, generator=g)  # noqa: E731
                    gflop = flops(vec) / 1e9
                    runs = interleaved({"vec": vec, "bmm": bmm, "loop": per_agent}, args.rounds)
                    ms = {k: statistics.median(v) * 1000 for k, v in runs.items()}
                    ratio, lo, hi = paired_ratio(runs["vec"], runs["loop"])
                    bound = gflop / peak * 1000
                    rows.append(
                        (
                            task,
                            nets,
                            threads,
                            B,
                            f"{ms['vec']:.1f}",
                            f"{ms['bmm']:.1f}",
                            f"{ms['loop']:.1f}",
                            f"{ratio:.2f} ({lo:.2f}-{hi:.2f})",
                            f"{ms['bmm'] / ms['loop']:.2f}",
                            f"{gflop:.2f}",
                            f"{bound:.1f}",
                        )
                    )
    print("\n" + machine_line(peak=f"{peak:.0f} GFLOP/s (float32 matmul)"))
    print(
        "\n"
        + markdown_table(
            [
                "task",
                "networks",
                "threads",
                "batch",
                "vectorized ms/iter",
                "always-bmm ms/iter",
                "per-agent loop ms/iter",
                "vectorized / loop (quartiles)",
                "always-bmm / loop",
                "GFLOP/iter",
                "arithmetic bound ms",
            ],
            rows,
            numeric_from=2,
        )
    )
    print(f"\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
