"""Agent-batched networks compute exactly what separate per-agent networks compute."""

from __future__ import annotations

import pytest
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


def test_both_kernels_compute_the_same_function_and_gradients(monkeypatch):
    """The per-agent addmm path and the bmm path: same outputs and gradients on zero-padded inputs."""
    from madata_algos import networks

    torch.manual_seed(0)
    net = AgentMLP(3, [8, 9, 8], [16, 16], 2)
    x = pad_agents([torch.randn(40, d) for d in (8, 9, 8)])
    results = {}
    for name, threshold in (("bmm", float("inf")), ("per-agent", 0)):
        monkeypatch.setattr(networks, "PER_AGENT_MIN_ACTIVATIONS", threshold)
        assert net.per_agent_kernel(x, 3) == (name == "per-agent")
        net.zero_grad()
        out = net(x)
        out.square().sum().backward()
        results[name] = (out.detach(), [p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(results["bmm"][0], results["per-agent"][0], rtol=1e-5, atol=1e-6)
    for g1, g2 in zip(results["bmm"][1], results["per-agent"][1], strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_kernel_choice_by_size_and_threads():
    """Small inputs stay on one bmm (call overhead dominates); large CPU inputs go per agent when the agents do
    not divide evenly among the threads (3 agents on 2 threads) or on one thread; 2 agents on 2 threads keep bmm."""
    from madata_algos.networks import PER_AGENT_MIN_ACTIVATIONS

    threads = torch.get_num_threads()
    try:
        rows = PER_AGENT_MIN_ACTIVATIONS // 256
        three, two = AgentMLP(3, 4, [256], 1), AgentMLP(2, 4, [256], 1)
        torch.set_num_threads(2)
        assert not three.per_agent_kernel(torch.zeros(3, rows - 1, 4), 3)
        assert three.per_agent_kernel(torch.zeros(3, rows, 4), 3)
        assert not two.per_agent_kernel(torch.zeros(2, rows * 10, 4), 2)
        torch.set_num_threads(1)
        assert two.per_agent_kernel(torch.zeros(2, rows, 4), 2)
    finally:
        torch.set_num_threads(threads)


def test_shared_inputs_need_no_copy():
    """Agent k reads input k % n_in: one input for every twin critic gives what copies of it give."""
    torch.manual_seed(0)
    net = AgentMLP(4, 3, [8], 2)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(net(x), net(torch.cat([x, x])))
    torch.testing.assert_close(AgentMLP(2, 3, [8], 1)(x[:1]).shape, torch.Size([2, 5, 1]))
    with pytest.raises(ValueError, match="do not divide"):
        AgentMLP(3, 3, [8], 1)(x)


@pytest.mark.parametrize("threshold", [float("inf"), 0], ids=["bmm", "per-agent"])
def test_a_slice_of_the_nets_is_their_rows_of_all_and_leaves_the_others_without_gradient(monkeypatch, threshold):
    """TwinCritics.first evaluates head 1 alone: the same numbers as all heads' first rows, and backward
    never reaches head 2 (its weights get no gradient at all, not a zero one)."""
    from madata_algos import networks
    from madata_algos.ibcq import TwinCritics

    monkeypatch.setattr(networks, "PER_AGENT_MIN_ACTIVATIONS", threshold)
    torch.manual_seed(0)
    critics = TwinCritics([8, 9, 8], 2, [16, 16])
    obs, act = pad_agents([torch.randn(30, d) for d in (8, 9, 8)]), torch.randn(3, 30, 2)
    torch.testing.assert_close(critics.first(obs, act), critics(obs, act)[0])
    net = AgentMLP(4, [3, 4, 3, 4], [8], 1)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(net(x, slice(2, 4)), net(x)[2:4])
    net(x, slice(2, 4)).sum().backward()
    for p in (layer.weight for layer in net.layers):
        assert p.grad[:2].abs().sum() == 0 and p.grad[2:].abs().sum() > 0
    calls = []
    monkeypatch.setattr(AgentMLP, "agent_forward", lambda self, k, x: calls.append(k) or x[:, :1])
    net(x, slice(2, 4))
    assert calls in ([], [2, 3])  # the per-agent kernel runs nets 2 and 3 only


def test_keep_large_tensors_on_heap_applies_on_glibc():
    import sys

    from madata_algos.networks import keep_large_tensors_on_heap

    applied = keep_large_tensors_on_heap()
    assert applied == (sys.platform.startswith("linux") and __import__("platform").libc_ver()[0] == "glibc")
