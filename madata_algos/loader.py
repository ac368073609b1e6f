"""Minibatches of joint transitions for offline MARL, kept on the training device.

For anyone bringing their own algorithm:

* :class:`TransitionLoader` reads a dataset once, packs every field of every transition
  into one contiguous float32 tensor ``[N, F]`` on the device (the GPU when there is one),
  and samples minibatches with a single ``index_select`` from indices drawn on that
  device; splitting the gathered rows into fields is a view, not a copy.
* :class:`SequenceLoader` samples windows of ``seq_len`` consecutive transitions inside
  episodes (``[B, T, ...]`` fields and a ``[B, T]`` mask), for recurrent and transformer policies.
* :class:`StreamingLoader` serves datasets larger than memory: it reads chunk-aligned
  row ranges in order (shuffled between passes) into a shuffle buffer and samples there.

Every loader takes a seed, and ``state_dict``/``load_state_dict`` resume its sampling exactly.

A batch holds, per agent, ``obs``/``action``/``next_obs``; the global ``state`` and
``next_state`` when stored; ``reward`` [B]; ``terminated`` [B] as float (1: no bootstrap).
A truncated transition is *not* terminal: its next observation is real. Datasets with action
masks (SMAX) add ``action_mask`` and ``next_action_mask``: the available actions at the
observation and at the next one, bool.
Agents of equal shapes come stacked, ``obs`` [B, n_agents, obs_dim]; heterogeneous
agents come as lists of per-agent tensors.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from madata.dataset import Dataset
from madata.errors import SchemaError
from madata.spaces import Discrete


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Batch:
    """One minibatch; leading dims ``[*lead, B]`` (``lead`` = (n_batches,) when several were drawn).

    Per-agent fields are ``[..., B, n_agents, dim]`` tensors when the agents share shapes
    (``stacked``), else lists with one ``[..., B, dim_i]`` tensor per agent. Discrete
    actions are int64 ``[..., B, n_agents]`` (stacked) or ``[..., B]`` per agent.
    """

    obs: torch.Tensor | list[torch.Tensor]
    action: torch.Tensor | list[torch.Tensor]
    next_obs: torch.Tensor | list[torch.Tensor]
    reward: torch.Tensor
    terminated: torch.Tensor
    state: torch.Tensor | None
    next_state: torch.Tensor | None
    stacked: bool
    # available actions, bool [..., B, n_agents, K] (a list of [..., B, K_i] when K differs), where stored
    action_mask: torch.Tensor | list[torch.Tensor] | None = None
    next_action_mask: torch.Tensor | list[torch.Tensor] | None = None


class _Layout:
    """Where each field sits in a packed row: ``columns[key] = (start, stop, shape)``."""

    def __init__(self, ds: Dataset):
        self.agent_ids = ds.agent_ids
        self.discrete = [isinstance(a.action_space, Discrete) for a in ds.agents]
        self.has_state = ds.state_space is not None
        obs_shapes = [a.observation_space.shape for a in ds.agents]
        act_shapes = [a.action_space.feature_shape for a in ds.agents]
        for a, s in zip(ds.agents, obs_shapes, strict=True):
            if len(s) != 1:
                raise SchemaError(f"{ds.root}: agent {a.id} has observation shape {s}; the loader takes vectors")
        self.stacked = len(set(obs_shapes)) == 1 and len(set(act_shapes)) == 1
        self.fields = ["obs", "action", "next_obs"] + (["state", "next_state"] if self.has_state else [])
        self.fields += ["reward", "terminated"]
        self.masks = ds.spec.action_masks  # the schema allows them for discrete agents only
        if self.masks:
            self.fields += ["action_mask", "next_action_mask"]
        self.columns: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        pos = 0
        # per-agent fields agent-major inside each field, so a stacked field is one contiguous slice
        for f in ("obs", "action", "next_obs"):
            for a, os_, as_ in zip(self.agent_ids, obs_shapes, act_shapes, strict=True):
                shape = as_ if f == "action" else os_
                width = int(np.prod(shape, dtype=np.int64)) if shape else 1
                self.columns[f"{f}/{a}"] = (pos, pos + width, shape)
                pos += width
        if self.has_state:
            for f in ("state", "next_state"):
                width = int(np.prod(ds.state_space.shape))
                self.columns[f] = (pos, pos + width, ds.state_space.shape)
                pos += width
        for f in ("reward", "terminated"):
            self.columns[f] = (pos, pos + 1, ())
            pos += 1
        if self.masks:
            for f in ("action_mask", "next_action_mask"):
                for a in ds.agents:
                    self.columns[f"{f}/{a.id}"] = (pos, pos + a.action_space.n, (a.action_space.n,))
                    pos += a.action_space.n
        self.width = pos

    def pack(self, tr: dict[str, np.ndarray], out: np.ndarray) -> None:
        """Write transitions ``tr`` (from ``Dataset.transitions``) into ``out`` [n, width] float32."""
        for key, (lo, hi, _) in self.columns.items():
            v = tr[key]
            out[:, lo:hi] = v.reshape(len(v), hi - lo) if v.ndim > 1 else v[:, None]

    def unpack(self, rows: torch.Tensor) -> Batch:
        """Split gathered rows [..., B, width] into fields (views where possible)."""
        n = len(self.agent_ids)

        def field(f: str):
            cols = [self.columns[f"{f}/{a}"] for a in self.agent_ids]
            if self.stacked:
                lo, hi = cols[0][0], cols[-1][1]
                t = rows[..., lo:hi]
                if f == "action" and self.discrete[0]:
                    return t.round().long()  # [..., B, n]
                return t.unflatten(-1, (n, (hi - lo) // n))  # [..., B, n, dim]
            parts = [rows[..., lo:hi] for lo, hi, _ in cols]
            if f == "action":
                return [p[..., 0].round().long() if d else p for p, d in zip(parts, self.discrete, strict=True)]
            return parts

        def scalar(f: str):
            lo = self.columns[f][0]
            return rows[..., lo]

        def vec(f: str):
            lo, hi, _ = self.columns[f]
            return rows[..., lo:hi]

        def mask(f: str):
            parts = [rows[..., lo:hi] > 0.5 for lo, hi, _ in (self.columns[f"{f}/{a}"] for a in self.agent_ids)]
            return torch.stack(parts, -2) if len({p.shape[-1] for p in parts}) == 1 else parts

        return Batch(
            obs=field("obs"),
            action=field("action"),
            next_obs=field("next_obs"),
            reward=scalar("reward"),
            terminated=scalar("terminated"),
            state=vec("state") if self.has_state else None,
            next_state=vec("next_state") if self.has_state else None,
            stacked=self.stacked,
            action_mask=mask("action_mask") if self.masks else None,
            next_action_mask=mask("next_action_mask") if self.masks else None,
        )


class TransitionLoader:
    """The whole dataset packed on ``device``; ``sample(B, n)`` gathers ``n`` minibatches at once.

    Memory: ``N * F * 4`` bytes (halfcheetah-2x3 with state: F = 2*(12+3+12) + 2*17 + 2 = 90,
    360 MB per million transitions).
    """

    def __init__(self, ds: Dataset, device: str | torch.device | None = None, seed: int = 0):
        self.layout = _Layout(ds)
        self.device = torch.device(device) if device is not None else default_device()
        n = ds.num_transitions
        if n == 0:
            raise SchemaError(f"{ds.root}: no transitions to load")
        packed = np.empty((n, self.layout.width), dtype=np.float32)
        self.layout.pack(ds.transitions(self.layout.fields), packed)
        self.data = torch.from_numpy(packed).to(self.device)  # [N, F]
        self.size = n
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def sample(self, batch_size: int, n_batches: int | None = None) -> Batch:
        """``n_batches`` minibatches of ``batch_size`` (leading dim ``n_batches``), or one if None."""
        k = 1 if n_batches is None else n_batches
        idx = torch.randint(self.size, (k * batch_size,), device=self.device, generator=self.generator)
        rows = self.data.index_select(0, idx)
        rows = rows.view(batch_size, -1) if n_batches is None else rows.view(k, batch_size, -1)
        return self.layout.unpack(rows)

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume sampling exactly."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())


class SequenceLoader:
    """Windows of ``seq_len`` consecutive transitions inside one episode each, packed on ``device``.

    ``sample(B)`` returns ``(batch, mask)``: every field of the batch has leading dims ``[B, T]``
    (T = ``seq_len``) and ``mask`` is bool ``[B, T]``, False on the padding of windows taken from
    episodes shorter than T (their padded steps repeat the episode's last transition). Windows are
    uniform over all windows the dataset holds (an episode of L >= T steps holds L - T + 1, a
    shorter one 1), and never cross an episode boundary.
    """

    def __init__(self, ds: Dataset, seq_len: int, device: str | torch.device | None = None, seed: int = 0):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise SchemaError(f"seq_len: expected an integer >= 1, got {seq_len!r}")
        self.inner = TransitionLoader(ds, device=device, seed=seed)  # rows in episode order, episodes back to back
        self.layout, self.device, self.generator, self.seq_len = (
            self.inner.layout,
            self.inner.device,
            self.inner.generator,
            seq_len,
        )
        lengths = torch.as_tensor(ds.episode_lengths(), dtype=torch.int64)
        first = torch.cumsum(lengths, 0) - lengths  # each episode's first row in the packed data
        windows = (lengths - seq_len + 1).clamp_min(1)
        self.starts = torch.repeat_interleave(first, windows) + torch.cat(
            [torch.arange(int(w)) for w in windows.tolist()]
        )  # every window's first row
        self.ends = torch.repeat_interleave(first + lengths - 1, windows)  # the last row of its episode
        self.starts, self.ends = self.starts.to(self.device), self.ends.to(self.device)

    def sample(self, batch_size: int) -> tuple[Batch, torch.Tensor]:
        k = torch.randint(len(self.starts), (batch_size,), device=self.device, generator=self.generator)
        offsets = torch.arange(self.seq_len, device=self.device)
        rows = self.starts[k, None] + offsets[None]  # [B, T]
        mask = rows <= self.ends[k, None]
        rows = torch.minimum(rows, self.ends[k, None])
        data = self.inner.data.index_select(0, rows.reshape(-1)).view(batch_size, self.seq_len, -1)
        return self.layout.unpack(data), mask

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class StreamingLoader:
    """For data larger than memory: chunk-aligned row ranges read in order into a shuffle buffer.

    The buffer holds ``buffer_chunks`` ranges of ``chunk_rows`` transitions; every
    ``sample`` call draws from it, and after ``samples_per_chunk`` draws (default: one
    pass over a chunk's worth of rows) the oldest range is replaced by the next one.
    The order of ranges is reshuffled at every pass over the dataset.

    ``read_ahead`` ranges are read in a background thread while sampling goes on, so a
    dataset on object storage (``s3://``), where each chunk is a request, does not make
    training wait for the network; the ranges and the samples are the same with or
    without it (0 turns it off).
    """

    def __init__(
        self,
        ds: Dataset,
        device: str | torch.device | None = None,
        seed: int = 0,
        buffer_chunks: int = 4,
        samples_per_chunk: int | None = None,
        read_ahead: int = 1,
    ):
        self.ds, self.layout = ds, _Layout(ds)
        if ds.num_transitions == 0:
            raise SchemaError(f"{ds.root}: no transitions to load")
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
            raise SchemaError(
                f"read_ahead: expected an integer >= 0 (ranges read in the background), got {read_ahead!r}"
            )
        self.device = torch.device(device) if device is not None else default_device()
        self.rows_per_range = ds.meta.chunk_rows
        self.samples_per_chunk = samples_per_chunk or self.rows_per_range
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._ranges = ds.episode_groups(self.rows_per_range)  # runs of whole episodes, about a chunk each
        self._order: list[int] = []  # range indices still to read in this pass (read from the end)
        self._buffered: list[int] = []  # range indices in the buffer, oldest first
        self._drawn = 0
        self.read_ahead = read_ahead if len(self._ranges) > buffer_chunks else 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="madata-read-ahead") if self.read_ahead else None
        self._ahead: deque[tuple[int, Future]] = deque()  # ranges being read, in the order they will enter
        self._fill(min(buffer_chunks, len(self._ranges)))

    def _next_range(self) -> int:
        if not self._order:
            self._order = [int(i) for i in self.rng.permutation(len(self._ranges))]
        return self._order.pop()

    def _read(self, k: int) -> torch.Tensor:
        tr = self.ds.select(episodes=self._ranges[k]).transitions(self.layout.fields)
        packed = np.empty((len(tr["reward"]), self.layout.width), dtype=np.float32)
        self.layout.pack(tr, packed)
        return torch.from_numpy(packed).to(self.device)

    def _schedule(self, ranges: list[int]) -> None:
        """Start reading ``ranges`` in the background (they enter the buffer in this order)."""
        for k in ranges:
            self._ahead.append((k, self._pool.submit(self._read, k)))

    def _take_next(self) -> tuple[int, torch.Tensor]:
        """The next range and its rows: from the read-ahead (scheduling one more), or read now."""
        if not self._pool:
            k = self._next_range()
            return k, self._read(k)
        while len(self._ahead) <= self.read_ahead:  # keep read_ahead ranges in flight after this one
            self._schedule([self._next_range()])
        k, future = self._ahead.popleft()
        return k, future.result()

    def _fill(self, n: int) -> None:
        self._buffered = [self._next_range() for _ in range(n)]
        self.buffer = [self._read(k) for k in self._buffered]
        self.data = torch.cat(self.buffer)
        if self._pool:  # start reading the next ranges now
            self._schedule([self._next_range() for _ in range(self.read_ahead)])

    def sample(self, batch_size: int, n_batches: int | None = None) -> Batch:
        k = 1 if n_batches is None else n_batches
        idx = torch.randint(len(self.data), (k * batch_size,), device=self.device, generator=self.generator)
        rows = self.data.index_select(0, idx)
        self._drawn += k * batch_size
        if self._drawn >= self.samples_per_chunk and len(self._ranges) > len(self.buffer):
            self._drawn = 0
            self._buffered.pop(0)
            self.buffer.pop(0)
            r, data = self._take_next()
            self._buffered.append(r)
            self.buffer.append(data)
            self.data = torch.cat(self.buffer)
        rows = rows.view(batch_size, -1) if n_batches is None else rows.view(k, batch_size, -1)
        return self.layout.unpack(rows)

    def close(self) -> None:
        """Stop the read-ahead thread. The ranges it had drawn go back to the front of the order, so
        sampling goes on (reading in the foreground) with the very same batches."""
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._order += [k for k, _ in self._ahead][::-1]
            self._ahead.clear()

    def __enter__(self) -> StreamingLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume sampling exactly: the pass order, the buffer's ranges, the generators."""
        return {
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "order": list(self._order),
            "buffered": list(self._buffered),
            "ahead": [k for k, _ in self._ahead],  # drawn from the order already, not yet in the buffer
            "drawn": self._drawn,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.rng.bit_generator.state = state["rng"]
        self._order, self._drawn = list(state["order"]), int(state["drawn"])
        self._buffered = list(state["buffered"])
        self.buffer = [self._read(k) for k in self._buffered]
        self.data = torch.cat(self.buffer)
        ahead = list(state.get("ahead", []))
        if self._pool:
            self._ahead.clear()  # what was being read belongs to the state replaced
            self._schedule(ahead)
        else:  # read without read-ahead: the ranges drawn ahead come first
            self._order += ahead[::-1]
