"""Which part of a trained BCQ-family policy helps or hurts: a Table 2 run's final checkpoint acting
four ways in the real environment, on the same episode seeds.

    python benchmarks/table2_components.py RUN_DIR [RUN_DIR ...] [--episodes 10] [--values] [--critics]
        [--modes MODE,...] [--out FILE.md]

- ``vae``: one draw of each agent's VAE G_i(o_i), nothing else (per-agent behaviour cloning;
  centralized BCQ: one draw of its VAE of the joint action);
- ``vae + xi``: that draw perturbed by the actor xi_i, which was trained through Q_i;
- ``as trained``: the policy as it executes, each agent's best of n candidates under its own Q_i;
- ``joint critic`` (CAST-BCQ only): n joint candidates from the agents' policies, the best under the
  run's joint critic Q(s, a) (Eq. 10) -- a centralized choice, for diagnosis only;
- ``vae + random-sign xi`` (a control, by ``--modes`` only): the VAE draw moved by xi's step
  in each action component, each step's sign a coin flip, so that the change has xi's size but
  not its direction.

Going down the list, each step adds one learned part; a step that lowers the return says that part
misleads the policy. With ``--values`` (CAST-BCQ runs), a second table compares the joint critic's
values with the data: on 4,096 transitions drawn from the run's dataset, Q(s, a) at the data's
joint action, the discounted return the data actually collected from there (gamma^k r summed to
the episode's end; truncated episodes stop at their time limit, which understates long ones), and
max_j Q(s, a_j) over the policy's n_act joint candidates (100 in Table 2's runs). A critic
that rates its policy's candidates far above what the data earned, while that policy earns less
than the data, is overestimating the joint actions it has not seen. With ``--critics`` (CAST-BCQ
runs), a third table asks whether Q_i follows its target Delta_i (Eq. 8) and what each critic
says of xi (``critic_agreement``). Episode k resets with seed 10000 (seed + 1) + k, as the runs' own evaluations;
the draws come from a generator seeded with ``--seed``. I-BCQ and centralized BCQ runs from before
71cdf84 (Table 2's, from a8193c5) are read through their old network names (``LEGACY_NAMES``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter

import madata
from madata_algos import registry
from madata_algos.bcq import JointBcq
from madata_algos.cast_bcq import CastBcq
from madata_algos.evaluate import evaluate
from madata_algos.networks import pad_agents
from madata_algos.registry import DataInfo
from madata_algos.train import eval_seed, load_checkpoint

MODES = ["vae", "vae + xi", "as trained", "joint critic"]
CONTROL = "vae + random-sign xi"  # xi's step sizes in random directions (``--modes``)


# Runs from before 71cdf84 (Table 2's I-BCQ and centralized BCQ runs, from a8193c5) saved a plain
# state dict, without a checksum, with the BCQ policy's and the critics' networks at the top level;
# the layout of each network is unchanged. Their configs also held the discrete variant's options.
LEGACY_NAMES = {
    **{k: f"policy.{k}" for k in ("encoder", "decoder", "actor", "actor_target", "max_action", "act_mask")},
    "critic": "critic.net",
    "critic_target": "critic_target.net",
    **{k: k for k in ("obs_columns", "act_columns")},  # centralized BCQ's joint-vector columns
}
LEGACY_DISCRETE_OPTIONS = ("discrete_hidden", "threshold")


def legacy_name(key: str) -> str:
    """A pre-71cdf84 state-dict key under its present name: "critic.layers.0.weight" -> "critic.net.layers.0.weight"."""
    network, dot, rest = key.partition(".")
    return LEGACY_NAMES[network] + dot + rest


def load(run: Path):
    """(algorithm, data description, settings) of a finished run, from its config and last checkpoint."""
    settings = json.loads((run / "config.json").read_text())
    spec = registry.get(settings["algorithm"])
    if "data" in settings:
        data = DataInfo.from_json(settings["data"])
        config = registry.config_from_json(spec, data, settings["config"])
        model = load_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["model"]
    else:  # a run from before 71cdf84: describe its dataset, rename its networks
        if settings["algorithm"] not in ("ibcq", "bcq"):
            raise SystemExit(
                f"{run}: a {settings['algorithm']} run from before 71cdf84; only ibcq and bcq ones are read"
            )
        data = registry.describe(madata.open(settings["dataset"]))
        values = {k: v for k, v in settings["config"].items() if k not in LEGACY_DISCRETE_OPTIONS}
        config = registry.config_from_json(spec, data, values)
        old = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        model = {legacy_name(k): v for k, v in old.items()}
        settings = {**settings, "data": data.to_json()}
    algo = registry.build(spec.name, data, config, torch.device("cpu"))
    algo.load_state_dict(model)  # strict: a name or shape that does not fit stops here
    return algo, data, settings


@torch.no_grad()
def act(algo, mode: str, obs: torch.Tensor, state: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Actions [N, E, A] of ``mode`` for observations [N, E, O] and global states [E, S]."""
    if mode == "as trained":
        return algo.act(obs, g)
    if mode == "joint critic":
        return algo.joint_policy_action(state, obs, algo.cfg.n_act, g).transpose(0, 1)  # the best of n_act
    joint = isinstance(algo, JointBcq)  # centralized BCQ: one VAE and actor on the joint observation
    x = algo.joint(obs, algo.obs_columns) if joint else obs
    a = algo.policy.decode(x, g)
    if mode == "vae + xi":
        a = algo.policy.perturb(x, a)
    elif mode == CONTROL:  # the same step in each component, its sign a coin flip: does xi's direction matter?
        step = (algo.policy.perturb(x, a) - a).abs()
        sign = torch.randint(0, 2, step.shape, generator=g, device=step.device) * 2 - 1
        m = algo.policy.max_action
        a = torch.maximum(torch.minimum(a + sign * step, m), -m)
    elif mode != "vae":
        raise ValueError(f"unknown mode {mode!r}")
    return algo.split(a) if joint else a


def returns(algo, data: DataInfo, mode: str, episodes: int, seed: int, draw_seed: int) -> np.ndarray:
    """Undiscounted returns [episodes] of ``mode`` in the run's task, on the run's own evaluation episodes."""
    g, width = torch.Generator().manual_seed(draw_seed), max(data.obs_dims)

    @torch.no_grad()
    def policy(obs: dict[str, np.ndarray], state: np.ndarray) -> dict[str, np.ndarray]:
        x = pad_agents([torch.as_tensor(obs[a], dtype=torch.float32) for a in data.agent_ids], width)
        a = act(algo, mode, x, torch.as_tensor(state, dtype=torch.float32), g).numpy()
        return {agent: a[i, :, : data.act_dims[i]] for i, agent in enumerate(data.agent_ids)}

    return np.array(evaluate(data.task, policy, episodes, eval_seed(seed), with_state=True).returns)


def dataset_sample(algo, data: DataInfo, settings: dict, samples: int, seed: int):
    """``samples`` transitions drawn without replacement from the run's dataset (seeded): (rows [R], the
    columns read, global states [R, S], observations [N, R, O] and joint actions [N, R, A], padded)."""
    ds = madata.open(settings["dataset"])
    agents, width = data.agent_ids, max(data.obs_dims)
    t = ds.transitions(["state", "reward", "episode_id", "obs", "action"])
    rows = np.random.default_rng(seed).choice(len(t["reward"]), size=min(samples, len(t["reward"])), replace=False)
    state = torch.as_tensor(t["state"][rows], dtype=torch.float32)
    obs = pad_agents([torch.as_tensor(t[f"obs/{a}"][rows], dtype=torch.float32) for a in agents], width)
    act = pad_agents([torch.as_tensor(t[f"action/{a}"][rows], dtype=torch.float32) for a in agents], algo.A)
    return rows, t, state, obs, act


@torch.no_grad()
def values(algo, data: DataInfo, settings: dict, samples: int = 4096, seed: int = 0) -> dict[str, float]:
    """Means over ``samples`` dataset transitions: the joint critic at the data's joint action, the data's own
    discounted return from there, and the best of the policy's joint candidates under the joint critic."""
    rows, t, state, obs, act = dataset_sample(algo, data, settings, samples, seed)
    gamma, reward, ep = algo.cfg.gamma, t["reward"].astype(np.float64), t["episode_id"]
    ret = np.zeros_like(reward)  # discounted return to the episode's end: G_t = r_t + gamma G_t+1, per episode
    starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(ep)], strict=True):
        ret[a:b] = lfilter([1.0], [1.0, -gamma], reward[a:b][::-1])[::-1]
    g, k = torch.Generator().manual_seed(seed), algo.cfg.n_act
    _, cand = algo.policy.candidates(obs, k, g)
    best = algo.joint_q(state.repeat_interleave(k, 0), cand.transpose(0, 1)).view(len(rows), k).max(-1).values
    return {
        "Q(s, a_data)": algo.joint_q(state, act.transpose(0, 1)).mean().item(),
        "data's discounted return": float(ret[rows].mean()),
        "max_j Q(s, a_j), policy candidates": best.mean().item(),
    }


def rank_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rho along the last axis (no ties in continuous values): [..., k] x2 -> [...]."""
    rx, ry = (v.argsort(-1).argsort(-1).to(torch.float64) for v in (x, y))
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    return (rx * ry).sum(-1) / (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()


@torch.no_grad()
def critic_agreement(
    algo, data: DataInfo, settings: dict, samples: int = 512, k: int = 10, draws: int = 16, seed: int = 0
) -> dict[str, float]:
    """How CAST-BCQ's critics judge its actions, at ``samples`` dataset states (means over states and agents;
    values in the critics' units, discounted return).

    Delta_i(o, a_i) is Eq. 8's estimate averaged over ``draws`` independent draws of the teammates'
    actions and subteams (Eq. 9 regresses Q_i on one such draw).
    - ``xi's gain under Q / Delta_i / Q_i``: what the perturbation xi adds to one VAE draw a~, by the
      joint critic (all agents perturbed, Eq. 10), by Delta_i and by Q_{i,1} (agent i's perturbed);
    - among the k candidates agent i chooses from when acting (VAE + xi): ``candidate spread``, the
      spread of mean Delta_i (what the choice can gain), ``Delta split-half rho``, Spearman's rho between
      two halves of the draws (how consistently Delta ranks them), ``Q_i vs Delta rho``, and ``Q_i pick``:
      mean Delta_i of Q_i's argmax above a random candidate's, as a share of the best one's (1: Delta's
      best; 0: chance; < 0: worse than chance).
    """
    g = torch.Generator().manual_seed(seed)
    _, _, state, obs, _ = dataset_sample(algo, data, settings, samples, seed)
    N, B = obs.shape[:2]

    def delta(action: torch.Tensor) -> torch.Tensor:  # Delta_i at agent i's own action [N, B, A]: [draws, N, B]
        return torch.stack([algo.counterfactual_target(state, obs, action, g) for _ in range(draws)]).transpose(1, 2)

    vae = algo.policy.decode(obs, g)
    xi = algo.policy.perturb(obs, vae)
    joint = algo.joint_q(state, xi.transpose(0, 1)) - algo.joint_q(state, vae.transpose(0, 1))
    rep, cand = algo.policy.candidates(obs, k, g)  # [N, B*k, A]
    q_i = algo.critic.first(rep, cand).view(N, B, k)
    cand = cand.view(N, B, k, algo.A)
    per_cand = torch.stack([delta(cand[:, :, c]) for c in range(k)], -1)  # [draws, N, B, k]
    mean = per_cand.mean(0)
    picked = mean.gather(-1, q_i.argmax(-1, keepdim=True))[..., 0]
    chance = mean.mean(-1)
    half = draws // 2
    return {
        "xi's gain under Q": joint.mean().item(),
        "under Delta_i": (delta(xi).mean(0) - delta(vae).mean(0)).mean().item(),
        "under Q_i": (algo.critic.first(obs, xi) - algo.critic.first(obs, vae)).mean().item(),
        "candidate spread": mean.std(-1).mean().item(),
        "Delta split-half rho": rank_correlation(per_cand[:half].mean(0), per_cand[half:].mean(0)).mean().item(),
        "Q_i vs Delta rho": rank_correlation(q_i, mean).mean().item(),
        "Q_i pick": ((picked - chance).mean() / (mean.max(-1).values - chance).mean()).item(),
    }


def joint_critic_table(runs: list[tuple], measure, seed: int) -> str:
    """A markdown table of ``measure(algo, data, settings, seed=seed)`` for each loaded run with a joint critic."""
    lines = []
    for algo, data, settings in runs:
        if not isinstance(algo, CastBcq):
            continue
        v = measure(algo, data, settings, seed=seed)
        if not lines:
            lines = ["| task | method | run seed | " + " | ".join(v) + " |", "|---|---|---:|" + "---:|" * len(v)]
        row = " | ".join(f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" for x in v.values())
        lines.append(f"| {data.task} | {settings['algorithm']} | {settings['seed']} | {row} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--episodes", type=int, default=10, help="episodes per mode; 0 skips the returns table")
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        type=lambda v: v.split(","),
        help=f"comma-separated, from: {', '.join([*MODES, CONTROL])}",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the policies' random draws")
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    ap.add_argument("--values", action="store_true", help="also compare CAST-BCQ's joint critic with the data")
    ap.add_argument(
        "--critics", action="store_true", help="also compare CAST-BCQ's individual critics with their targets (Eq. 8)"
    )
    args = ap.parse_args()
    if unknown := set(args.modes) - {*MODES, CONTROL}:
        ap.error(f"unknown --modes {sorted(unknown)}; modes: {', '.join([*MODES, CONTROL])}")
    torch.set_num_threads(1)
    lines = [
        "| task | method | run seed | " + " | ".join(args.modes) + " |",
        "|---|---|---:|" + "---:|" * len(args.modes),
    ]
    loaded = [load(run) for run in args.runs]  # each checkpoint read once, for every table
    for run, (algo, data, settings) in zip(args.runs, loaded, strict=True) if args.episodes else []:
        cells = []
        for mode in args.modes:
            if mode == "joint critic" and not isinstance(algo, CastBcq):
                cells.append("")
                continue
            r = returns(algo, data, mode, args.episodes, settings["seed"], args.seed)
            cells.append(f"{r.mean():.0f} +- {r.std():.0f}")
            print(f"{run}: {mode}: {r.mean():.1f} +- {r.std():.1f} over {len(r)} episodes", flush=True)
        lines.append(f"| {data.task} | {settings['algorithm']} | {settings['seed']} | " + " | ".join(cells) + " |")
    parts = []
    if args.episodes:
        caption = f"Final checkpoints acting {len(args.modes)} ways, {args.episodes} episodes each (mean +- std of the return):"
        parts.append(caption + "\n\n" + "\n".join(lines))
    captions = {
        values: "The joint critic against the data, on 4,096 dataset transitions (`--values`):",
        critic_agreement: "How the critics judge the policy's actions, at 512 dataset states (`--critics`; "
        "see `critic_agreement`):",
    }
    for wanted, measure in ((args.values, values), (args.critics, critic_agreement)):
        if wanted:
            parts.append(captions[measure] + "\n\n" + joint_critic_table(loaded, measure, args.seed))
    table = "\n\n".join(parts)
    print(table)
    if args.out:
        flags = "".join(f" --{f}" for f in ("values", "critics") if getattr(args, f))
        if args.modes != MODES:
            flags += f" --modes '{','.join(args.modes)}'"
        command = " ".join(["python benchmarks/table2_components.py", *map(str, args.runs)])
        args.out.write_text(
            f"Generated by\n`{command} --episodes {args.episodes} --seed {args.seed}{flags}`.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
