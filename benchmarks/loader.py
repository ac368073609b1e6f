"""Minibatch sampling throughput: madata's loaders beside naive baselines, in one run.

    python benchmarks/loader.py [--transitions 1000000] [--batch 1024] [--seconds 3] [--s3]

Builds a halfcheetah-2x3-shaped dataset (2 agents, obs 12, action 3, state 17; float32;
episodes of 1000 steps; random content) and measures joint samples/s for:
naive numpy fancy indexing over separate per-field arrays (next observations gathered
through the episode index, as a reader of the raw store would), one numpy gather from a
packed array, madata's TransitionLoader on the CPU (and on the GPU when one is present),
its StreamingLoader, and random row access straight into Zarr (what never to do).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from harness import command_line, machine_line, timed

import madata
from madata.schema import AgentSpec
from madata.spaces import Box
from madata_algos.loader import StreamingLoader, TransitionLoader


def build(path: Path | str, n: int, T: int = 1000, storage_options: dict | None = None) -> madata.Dataset:
    agents = [AgentSpec(f"agent_{i}", Box.make(-np.inf, np.inf, (12,)), Box.make(-1, 1, (3,))) for i in range(2)]
    rng = np.random.default_rng(0)
    end = np.zeros(T, bool)
    end[-1] = True
    with madata.create(
        path, agents, state_space=Box.make(-np.inf, np.inf, (17,)), commit_every=0, storage_options=storage_options
    ) as w:
        for _ in range(n // T):
            w.add_episode(
                obs={a.id: rng.standard_normal((T + 1, 12), dtype=np.float32) for a in agents},
                actions={a.id: rng.uniform(-1, 1, (T, 3)).astype(np.float32) for a in agents},
                rewards=rng.standard_normal(T),
                terminated=np.zeros(T, bool),
                truncated=end,
                state=rng.standard_normal((T + 1, 17), dtype=np.float32),
            )
    return madata.open(path, storage_options=storage_options)


def remote_rows(ds: madata.Dataset, n: int, batch: int, seconds: float) -> list[tuple[str, float]]:
    """StreamingLoader samples/s from the local dataset and from a copy on S3 (a moto server on 127.0.0.1,
    in a process of its own), without and with read-ahead, each with a small MLP's forward and backward pass per batch
    standing in for a training step (so there is time to read ahead into)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from scale import s3_server

    server, options = s3_server(own_process=True)
    try:
        remote, secs = timed(lambda: build("s3://scale/loader.zarr", n, storage_options=options))
        print(f"wrote the same {remote.num_transitions} transitions to S3 (moto) in {secs:.1f} s")
        width = 2 * 12 + 2 * 3 + 17
        net = torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)

        def step(loader):
            b = loader.sample(batch)
            x = torch.cat([b.obs.flatten(1), b.action.flatten(1), b.state], dim=1)
            loss = net(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a core for the server and the reads: on 2 cores the moto server is on this machine
        for name, data in (("local", ds), ("s3", remote)):
            for ahead in (0, 1):
                loader = StreamingLoader(data, device="cpu", seed=0, read_ahead=ahead, samples_per_chunk=16_384)
                label = (
                    f"StreamingLoader from {name}, read_ahead {ahead}, + MLP step per batch "
                    "(1 torch thread, refill every 16k samples)"
                )
                rows.append((label, rate(lambda loader=loader: step(loader), batch, seconds)))
        torch.set_num_threads(threads)
        return rows
    finally:
        server.stop()


def rate(fn, batch: int, seconds: float, sync=lambda: None) -> float:
    fn()  # warm up
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transitions", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--s3", action="store_true", help="also: streaming from S3 (moto) against local, with read-ahead")
    args = ap.parse_args()
    B = args.batch
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        ds, seconds = timed(lambda: build(Path(d) / "ds", args.transitions))
        print(f"built {ds.num_transitions} transitions in {seconds:.1f} s")
        tr = ds.transitions()
        rng = np.random.default_rng(0)
        N = ds.num_transitions

        # naive: separate arrays, next obs through the episode index (obs rows = step row + episode)
        obs = {a: ds.read_rows(f"obs/{a}") for a in ds.agent_ids}
        acts = {a: ds.read_rows(f"action/{a}") for a in ds.agent_ids}
        state, reward, term = ds.read_rows("state"), ds.read_rows("reward"), ds.read_rows("terminated")
        ep = tr["episode_id"] if "episode_id" in tr else np.repeat(np.arange(ds.num_episodes), 1000)

        def naive():
            i = rng.integers(0, N, B)
            o = i + ep[i]
            return (
                [obs[a][o] for a in obs],
                [acts[a][i] for a in acts],
                [obs[a][o + 1] for a in obs],
                state[o],
                state[o + 1],
                reward[i],
                term[i],
            )

        rows.append(("numpy fancy indexing, separate arrays", rate(naive, B, args.seconds)))
        packed = np.concatenate(
            [v.reshape(N, -1).astype(np.float32) for k, v in tr.items() if k != "truncated"], axis=1
        )

        def packed_np():
            return packed[rng.integers(0, N, B)]

        rows.append((f"numpy, one gather from packed [N, {packed.shape[1]}]", rate(packed_np, B, args.seconds)))
        cpu, seconds = timed(lambda: TransitionLoader(ds, device="cpu", seed=0))
        print(f"TransitionLoader(cpu) packed {N} rows in {seconds:.1f} s")
        rows.append(
            (
                f"madata TransitionLoader cpu, 1 batch/call (torch threads {torch.get_num_threads()})",
                rate(lambda: cpu.sample(B), B, args.seconds),
            )
        )
        rows.append(
            ("madata TransitionLoader cpu, 16 batches/call", rate(lambda: cpu.sample(B, 16), 16 * B, args.seconds))
        )
        if torch.cuda.is_available():
            gpu = TransitionLoader(ds, device="cuda", seed=0)
            sync = torch.cuda.synchronize
            rows.append(
                ("madata TransitionLoader cuda, 1 batch/call", rate(lambda: gpu.sample(B), B, args.seconds, sync))
            )
            rows.append(
                (
                    "madata TransitionLoader cuda, 16 batches/call",
                    rate(lambda: gpu.sample(B, 16), 16 * B, args.seconds, sync),
                )
            )
        stream = StreamingLoader(ds, device="cpu", seed=0)
        rows.append(
            (
                "madata StreamingLoader cpu (4 x 65536-row buffer, refills included)",
                rate(lambda: stream.sample(B, 16), 16 * B, max(args.seconds, 5.0)),
            )
        )
        if args.s3:
            rows += remote_rows(ds, args.transitions, B, max(args.seconds, 5.0))
        arr = zarr.open_array(str(ds.root / "obs" / "agent_0"), mode="r")  # the store read as plain Zarr
        rows.append(("random row access into Zarr (1 field only)", rate(lambda: arr[int(rng.integers(0, N))], 1, 1.0)))

    print("\n" + machine_line(GPU=torch.cuda.get_device_name() if torch.cuda.is_available() else "none"))
    print(f"joint samples/s, batch {B}, {N} transitions of halfcheetah-2x3 shape\n")
    print("| method | samples/s |\n|---|---:|")
    for name, r in rows:
        print(f"| {name} | {r / 1e6:.2f} M |" if r >= 1e5 else f"| {name} | {r:,.0f} |")
    print(f"\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
