"""Networks batched across agents: one weight tensor ``[n_agents, in, out]`` and one
``torch.baddbmm`` per layer, instead of a Python loop over per-agent modules.

Agents with unequal input sizes (Hopper 3x1: 8, 9 and 8) are padded inside the compute
to the largest size with zeros; a padded input column meets weights that never get a
gradient (the input there is always 0), so the result is exactly that of separate
per-agent networks. Nothing is padded on disk.
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Sequence

import torch
from torch import nn


class AgentLinear(nn.Module):
    """``n_agents`` independent linear layers: ``x`` [n_agents, B, in] -> [n_agents, B, out].

    ``in_features`` may differ per agent (a list); inputs are then padded to the largest.
    Each agent's weights are initialized like ``nn.Linear`` with its own fan-in.
    """

    def __init__(self, n_agents: int, in_features: int | Sequence[int], out_features: int):
        super().__init__()
        ins = [in_features] * n_agents if isinstance(in_features, int) else list(in_features)
        if len(ins) != n_agents:
            raise ValueError(f"AgentLinear: {len(ins)} input sizes for {n_agents} agents")
        self.n_agents, self.in_features, self.out_features = n_agents, ins, out_features
        self.weight = nn.Parameter(torch.zeros(n_agents, max(ins), out_features))
        self.bias = nn.Parameter(torch.zeros(n_agents, 1, out_features))
        with torch.no_grad():
            for i, fan_in in enumerate(ins):
                bound = 1.0 / math.sqrt(fan_in)
                self.weight[i, :fan_in].uniform_(-bound, bound)  # padded rows stay 0
                self.bias[i].uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, nets: slice = slice(None)) -> torch.Tensor:
        """x [len(nets), B, max in] -> [len(nets), B, out]: the layers ``nets`` alone."""
        return torch.baddbmm(self.bias[nets], x, self.weight[nets])

    def extra_repr(self) -> str:
        return f"n_agents={self.n_agents}, in_features={self.in_features}, out_features={self.out_features}"


# A CPU ``bmm`` over agents gives each thread whole matrices: when the agents divide evenly among
# the threads (2 agents on 2 threads) it is the fastest kernel, but 3 agents on 2 threads leave a
# thread idle a third of the time (hopper-3x1, 256-256 networks, batch 256: 1.20x the per-agent
# loop), and on one thread a per-agent ``addmm`` is a little faster too. So from this many
# activations per agent and layer (rows x widest layer) on, those cases run one multithreaded
# ``addmm`` per agent; below it (64-wide networks at batch 32-100) call overhead dominates and one
# ``bmm`` wins. Measured in benchmarks/train_step.py (docs/results/benchmarks.md).
PER_AGENT_MIN_ACTIVATIONS = 1 << 14


class AgentMLP(nn.Module):
    """Per-agent MLPs evaluated together: [n_agents, B, in] -> [n_agents, B, out] (ReLU between layers).

    The kernel is chosen for the shape (:meth:`per_agent_kernel`): one ``baddbmm`` per layer
    for all agents, or, on large CPU batches, each agent's whole MLP as multithreaded
    ``addmm`` s on its own unpadded inputs. Both compute the same function.
    """

    def __init__(self, n_agents: int, in_features: int | Sequence[int], hidden: Sequence[int], out_features: int):
        super().__init__()
        sizes = [*hidden, out_features]
        layers: list[AgentLinear] = [AgentLinear(n_agents, in_features, sizes[0])]
        layers += [AgentLinear(n_agents, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.layers = nn.ModuleList(layers)
        self.widest = max(sizes)

    def per_agent_kernel(self, x: torch.Tensor, n: int) -> bool:
        """True when one multithreaded product per agent beats a ``bmm`` over ``n`` agents for input ``x``."""
        threads = torch.get_num_threads()
        uneven = threads == 1 or n % threads != 0
        return x.device.type == "cpu" and uneven and x.shape[-2] * self.widest >= PER_AGENT_MIN_ACTIVATIONS

    def forward(self, x: torch.Tensor, nets: slice = slice(None)) -> torch.Tensor:
        """x [n_in, B, in] -> [len(nets), B, out], the MLPs ``nets`` (default all) alone. MLP k reads input
        k % n_in (n_in divides their number), so networks sharing their inputs (twin critics) need no copy
        of them; evaluating only the MLPs a loss needs keeps backward from running through the others."""
        ks = range(self.layers[0].n_agents)[nets]
        if len(ks) % x.shape[0]:
            raise ValueError(f"AgentMLP of {len(ks)} agents: {x.shape[0]} inputs do not divide among them")
        if self.per_agent_kernel(x, len(ks)):
            return torch.stack([self.agent_forward(k, x[j % x.shape[0]]) for j, k in enumerate(ks)])
        if x.shape[0] == 1:
            x = x.expand(len(ks), -1, -1)
        elif x.shape[0] != len(ks):
            x = x.repeat(len(ks) // x.shape[0], 1, 1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x, nets))
        return self.layers[-1](x, nets)

    def agent_forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Agent ``i``'s MLP alone: x [B, >= its input size] (padding beyond it is dropped) -> [B, out]."""
        x = x[:, : self.layers[0].in_features[i]]
        for k, layer in enumerate(self.layers):
            x = torch.addmm(layer.bias[i, 0], x, layer.weight[i, : layer.in_features[i]])
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def pad_agents(parts: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Stack per-agent tensors [B, d_i] into [n_agents, B, max d] with zero padding."""
    width = width or max(p.shape[-1] for p in parts)
    out = parts[0].new_zeros((len(parts), *parts[0].shape[:-1], width))
    for i, p in enumerate(parts):  # n_agents copies, once per batch: not the hot loop
        out[i, ..., : p.shape[-1]] = p
    return out


class MLP(nn.Module):
    """A plain MLP for one network over joint inputs (the joint critic): ReLU between layers."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- tau * source + (1 - tau) * target."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


class Algorithm(nn.Module):
    """What every algorithm shares. A subclass lists its iteration's loss steps in order (:meth:`steps`:
    ``(name, loss_fn)`` pairs, each stepped by ``optimizers[name]``) and its target updates
    (:meth:`after_steps`); :meth:`update` runs them, :meth:`losses` evaluates the same losses at the
    current parameters without a step (validation batches). Batches: the registry's agent-major layout."""

    optimizers: dict[str, torch.optim.Optimizer]

    def steps(self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None):
        """The iteration's ``(name, loss_fn)`` steps, in the paper's order."""
        raise NotImplementedError(f"{type(self).__name__} must list its loss steps")

    def after_steps(self) -> None:
        """Polyak updates of the target networks, after every step."""

    def update(
        self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None,
        action_mask=None, next_action_mask=None,
    ):  # fmt: skip
        """One training iteration on a minibatch: every step with its optimizer, then the target updates.
        Returns each step's loss (before its update) by name. ``action_mask``/``next_action_mask`` (where the
        data stores action masks) reach only algorithms that use them (the registry refuses masked data to
        others)."""
        masks = _masks(action_mask, next_action_mask)
        stats = minimize(
            self.optimizers,
            self.steps(obs, action, reward, next_obs, terminated, state, next_state, generator, **masks),
        )
        self.after_steps()
        return stats

    @torch.no_grad()
    def losses(
        self, obs, action, reward, next_obs, terminated, state=None, next_state=None, generator=None,
        action_mask=None, next_action_mask=None,
    ):  # fmt: skip
        """The iteration's losses at the current parameters, nothing updated: {name: value}."""
        batch = (obs, action, reward, next_obs, terminated, state, next_state, generator)
        masks = _masks(action_mask, next_action_mask)
        return {name: float(fn()) for name, fn in self.steps(*batch, **masks)}


def _masks(action_mask, next_action_mask) -> dict:
    """The mask arguments of :meth:`Algorithm.steps`, given only where the data has them."""
    given = {"action_mask": action_mask, "next_action_mask": next_action_mask}
    return {k: v for k, v in given.items() if v is not None}


def minimize(optimizers: dict[str, torch.optim.Optimizer], steps) -> dict[str, float]:
    """Run ``(name, loss_fn)`` steps in order, each with ``optimizers[name]``: each loss is computed after
    the previous step's update (as the algorithms' pseudocode orders them). Returns the losses by name."""
    stats = {}
    for name, loss_fn in steps:
        opt = optimizers[name]
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stats[name] = loss.item()
    return stats


def keep_large_tensors_on_heap() -> bool:
    """Let glibc reuse freed large blocks instead of returning them to the OS (Linux only).

    By default glibc maps every allocation above 32 MiB afresh and unmaps it when freed, so
    each large activation tensor of a training step is page-faulted anew: an addmm + ReLU
    over [38400, 256] float32 took 45 ms instead of 28 ms on this project's CPU
    (MABCQ's value estimates: 306 instead of 202 ms per hopper-3x1 iteration). Raising the
    mmap and trim thresholds, as PyTorch's CPU tuning guide suggests through jemalloc or
    tcmalloc, keeps those blocks in the heap. Returns whether the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters, <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
