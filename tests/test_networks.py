"""Agent-batched networks compute exactly what separate per-agent networks compute."""

from __future__ import annotations

import torch
from torch import nn

from madata_algos.networks import MLP, AgentMLP, pad_agents, soft_update


def _separate(net: AgentMLP, i: int) -> nn.Sequential:
    """Agent ``i``'s slice of ``net`` as an ordinary nn.Sequential."""
    mods = []
    for k, layer in enumerate(net.layers):
        lin = nn.Linear(layer.in_features[i], layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[i, : layer.in_features[i]].T)
            lin.bias.copy_(layer.bias[i, 0])
        mods.append(lin)
        if k < len(net.layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def test_equals_separate_networks_heterogeneous():
    torch.manual_seed(0)
    ins = [8, 9, 8]  # Hopper 3x1
    net = AgentMLP(3, ins, [16, 16], 2)
    xs = [torch.randn(5, d) for d in ins]
    out = net(pad_agents(xs))
    assert out.shape == (3, 5, 2)
    for i, x in enumerate(xs):
        torch.testing.assert_close(out[i], _separate(net, i)(x), rtol=1e-5, atol=1e-6)


def test_padded_weights_get_no_gradient():
    torch.manual_seed(0)
    net = AgentMLP(2, [3, 5], [4], 1)
    xs = [torch.randn(7, 3), torch.randn(7, 5)]
    net(pad_agents(xs)).sum().backward()
    first = net.layers[0]
    assert torch.all(first.weight.grad[0, 3:] == 0) and torch.all(first.weight[0, 3:] == 0)
    assert torch.any(first.weight.grad[1, 3:] != 0)


def test_mlp_and_soft_update():
    torch.manual_seed(0)
    a, b = MLP(4, [8], 1), MLP(4, [8], 1)
    before = [p.clone() for p in b.parameters()]
    soft_update(b, a, 0.25)
    for pb, p0, pa in zip(b.parameters(), before, a.parameters(), strict=True):
        torch.testing.assert_close(pb, 0.75 * p0 + 0.25 * pa)
