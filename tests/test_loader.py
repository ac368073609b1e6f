"""The minibatch loaders return real transitions, with the right shapes, on the requested device."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import madata
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete
from madata_algos.loader import StreamingLoader, TransitionLoader
from tests.conftest import random_episode, write


def _lookup(ds):
    """Map each transition's first obs value of agent_0 (unique under random data) to its row."""
    tr = ds.transitions()
    key = {float(v): i for i, v in enumerate(tr["obs/agent_0"][:, 0])}
    return tr, key


@pytest.mark.parametrize("loader_cls", [TransitionLoader, StreamingLoader])
def test_heterogeneous_batches_are_real_transitions(small_dataset, loader_cls):
    path, agents, eps = small_dataset
    ds = madata.open(path)
    tr, key = _lookup(ds)
    loader = loader_cls(ds, device="cpu", seed=0)
    b = loader.sample(64)
    assert not b.stacked and isinstance(b.obs, list) and [o.shape for o in b.obs] == [(64, 8), (64, 9), (64, 8)]
    assert b.action[2].dtype == torch.int64 and b.action[2].shape == (64,)  # agent_2 is Discrete
    for j in range(64):
        i = key[float(b.obs[0][j, 0])]
        np.testing.assert_array_equal(b.obs[1][j].numpy(), tr["obs/agent_1"][i])
        np.testing.assert_array_equal(b.next_obs[1][j].numpy(), tr["next_obs/agent_1"][i])
        np.testing.assert_array_equal(b.next_state[j].numpy(), tr["next_state"][i])
        assert b.action[2][j].item() == tr["action/agent_2"][i]
        assert b.reward[j].item() == np.float32(tr["reward"][i])
        assert b.terminated[j].item() == float(tr["terminated"][i])  # truncated ends stay 0


def test_stacked_agents_and_several_batches(tmp_path):
    agents = [AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (5,)), Box.make(-1, 1, (2,))) for i in range(3)]
    rng = np.random.default_rng(0)
    eps = [random_episode(agents, T, rng, "terminated" if T % 2 else "truncated") for T in (3, 8, 1, 20)]
    ds = madata.open(write(tmp_path / "ds", agents, eps))
    tr, key = _lookup(ds)
    loader = TransitionLoader(ds, device="cpu", seed=1)
    b = loader.sample(16, n_batches=4)
    assert b.stacked and b.obs.shape == (4, 16, 3, 5) and b.action.shape == (4, 16, 3, 2) and b.reward.shape == (4, 16)
    assert b.state is None
    for j in range(16):
        i = key[float(b.obs[2, j, 0, 0])]
        np.testing.assert_array_equal(b.next_obs[2, j, 1].numpy(), tr["next_obs/agent_1"][i])
        np.testing.assert_array_equal(b.action[2, j, 2].numpy(), tr["action/agent_2"][i])
    # same seed, same batches
    again = TransitionLoader(ds, device="cpu", seed=1).sample(16, n_batches=4)
    assert torch.equal(again.obs, b.obs)


def test_discrete_stacked(tmp_path):
    agents = [AgentSpec(f"agent_{i}", Box.make(-1, 6, (2,)), Discrete(3)) for i in range(2)]
    rng = np.random.default_rng(0)
    ds = madata.open(write(tmp_path / "ds", agents, [random_episode(agents, 6, rng) for _ in range(3)]))
    b = TransitionLoader(ds, device="cpu").sample(8)
    assert b.action.dtype == torch.int64 and b.action.shape == (8, 2) and b.action.max() <= 2


@pytest.mark.parametrize("loader_cls", [TransitionLoader, StreamingLoader])
@pytest.mark.parametrize("sizes", [(4, 4, 4), (3, 5, 4)])
def test_action_masks_come_with_their_transitions(tmp_path, loader_cls, sizes):
    """The available actions at the observation and at the next one, per agent, bool: stacked when every
    agent has as many actions, a list otherwise. Without masks in the data, None."""
    agents = [AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (3,)), Discrete(k)) for i, k in enumerate(sizes)]
    rng = np.random.default_rng(2)
    eps = [random_episode(agents, T, rng, action_masks=True) for T in (5, 9, 2, 12)]
    ds = madata.open(write(tmp_path / "ds", agents, eps, action_masks=True))
    tr, key = _lookup(ds)
    b = loader_cls(ds, device="cpu", seed=3).sample(32)
    stacked = len(set(sizes)) == 1
    assert isinstance(b.next_action_mask, torch.Tensor) == stacked
    for j in range(32):
        i = key[float(b.obs[j, 0, 0] if b.stacked else b.obs[0][j, 0])]
        for n, a in enumerate(ds.agent_ids):
            for name in ("action_mask", "next_action_mask"):
                got = getattr(b, name)[j, n] if stacked else getattr(b, name)[n][j]
                assert got.dtype == torch.bool and got.tolist() == tr[f"{name}/{a}"][i].tolist(), (name, a)
    plain = madata.open(write(tmp_path / "plain", agents, [random_episode(agents, 4, rng)]))
    assert loader_cls(plain, device="cpu").sample(4).action_mask is None


def test_streaming_cycles_through_everything(tmp_path):
    agents = [AgentSpec("agent_0", Box.make(-np.inf, np.inf, (1,)), Box.make(-1, 1, (1,)))]
    rng = np.random.default_rng(0)
    eps = [random_episode(agents, 10, rng) for _ in range(30)]
    ds = madata.open(write(tmp_path / "ds", agents, eps, chunk_rows=20))
    loader = StreamingLoader(ds, device="cpu", buffer_chunks=2, samples_per_chunk=40)
    seen = set()
    for _ in range(200):
        seen.update(loader.sample(20).obs[:, 0, 0].tolist())
    assert len(seen) == 300  # every transition reached the buffer


def test_read_ahead_changes_no_sample_and_resumes_exactly(tmp_path):
    """Reading ranges in the background gives the same batches as reading them when needed, across
    passes (reshuffles) and across a checkpoint taken with one setting and restored with the other."""
    agents = [AgentSpec("agent_0", Box.make(-np.inf, np.inf, (1,)), Box.make(-1, 1, (1,)))]
    rng = np.random.default_rng(0)
    ds = madata.open(
        write(tmp_path / "ds", agents, [random_episode(agents, 10, rng) for _ in range(30)], chunk_rows=20)
    )

    def draws(loader, n):
        return torch.cat([loader.sample(8).obs[:, 0, 0] for _ in range(n)])

    plain = StreamingLoader(ds, device="cpu", seed=3, buffer_chunks=2, samples_per_chunk=16, read_ahead=0)
    ahead = StreamingLoader(ds, device="cpu", seed=3, buffer_chunks=2, samples_per_chunk=16, read_ahead=2)
    assert torch.equal(draws(plain, 100), draws(ahead, 100))  # 50 refills: more than three passes
    assert len(ahead.state_dict()["ahead"]) == 2 and plain.state_dict()["ahead"] == []  # kept in flight
    for saver, restorer in ((plain, ahead), (ahead, plain)):
        state = saver.state_dict()
        twin = StreamingLoader(
            ds, device="cpu", seed=9, buffer_chunks=2, samples_per_chunk=16, read_ahead=restorer.read_ahead
        )
        twin.load_state_dict(state)
        assert torch.equal(draws(saver, 60), draws(twin, 60))
    # closing stops the thread and changes no batch: the ranges read ahead come back first
    twin = StreamingLoader(ds, device="cpu", seed=9, buffer_chunks=2, samples_per_chunk=16, read_ahead=0)
    twin.load_state_dict(ahead.state_dict())
    with ahead:
        assert any(t.name.startswith("madata-read-ahead") for t in threading.enumerate())
    assert not any(t.name.startswith("madata-read-ahead") and t.is_alive() for t in threading.enumerate())
    assert torch.equal(draws(ahead, 60), draws(twin, 60))
    with pytest.raises(madata.SchemaError, match="read_ahead: expected an integer >= 0"):
        StreamingLoader(ds, device="cpu", read_ahead=-1)


def test_sequence_loader_windows_stay_inside_episodes(tmp_path):
    """Observations encode (episode, step): every window is consecutive steps of one episode; windows of
    short episodes are padded (mask False) with their last transition; all windows are reachable."""
    import torch

    from madata_algos.loader import SequenceLoader

    agents = [AgentSpec("a", Box.make(-np.inf, np.inf, (2,)), Box.make(-1, 1, (1,)))]
    lengths = [3, 8, 1, 6]
    with madata.create(tmp_path / "ds", agents, chunk_rows=8) as w:
        for e, T in enumerate(lengths):
            obs = np.stack([np.full(T + 1, e), np.arange(T + 1)], axis=1).astype("float32")
            end = np.zeros(T, bool)
            end[-1] = True
            w.add_episode(
                {"a": obs}, {"a": np.zeros((T, 1), "float32")}, np.arange(T, dtype=float), end, np.zeros(T, bool)
            )
    loader = SequenceLoader(madata.open(tmp_path / "ds"), seq_len=4, device="cpu", seed=0)
    assert len(loader.starts) == 1 + 5 + 1 + 3  # windows per episode: max(1, L - 4 + 1)
    batch, mask = loader.sample(2000)
    obs = batch.obs[..., 0, :]  # [B, T, 2] (one agent)
    ep, t = obs[..., 0], obs[..., 1]
    assert torch.equal(ep, ep[:, :1].expand_as(ep))  # one episode per window
    for b in range(200):
        L = lengths[int(ep[b, 0])]
        valid = int(mask[b].sum())
        assert valid == min(4, L)
        steps = t[b, :valid]
        assert torch.equal(steps, steps[0] + torch.arange(valid, dtype=steps.dtype))  # consecutive
        assert torch.all(t[b, valid:] == L - 1)  # padding repeats the last transition
    starts = {(int(e), int(s)) for e, s in zip(ep[:, 0], t[:, 0], strict=True)}
    assert len(starts) == len(loader.starts)  # every window was drawn
    again = SequenceLoader(madata.open(tmp_path / "ds"), seq_len=4, device="cpu", seed=0).sample(2000)[0]
    assert torch.equal(again.obs, batch.obs)  # seeded
    with pytest.raises(madata.SchemaError, match="seq_len"):
        SequenceLoader(madata.open(tmp_path / "ds"), seq_len=0)
