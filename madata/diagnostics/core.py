"""``diagnose(dataset)``: every diagnostic of one dataset, as one JSON-ready dict."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

import madata
from madata.dataset import Dataset
from madata.diagnostics.coverage import (
    MAX_CODE,
    action_coverage,
    cell_count,
    coverage_of_cells,
    saco,
    state_action_coverage,
)
from madata.diagnostics.defaults import DEFAULTS
from madata.diagnostics.dependence import action_dependence
from madata.diagnostics.quality import behaviour_mix, quality
from madata.diagnostics.streaming import conditioning, conditioning_name, features_of, stream_inputs
from madata.diagnostics.types import behaviour_types
from madata.errors import SchemaError
from madata.schema import behaviour_column
from madata.spaces import Box


def _check(ds: Dataset) -> None:
    """Refuse what cannot be diagnosed, saying why: no episodes, fewer than two agents."""
    if ds.num_episodes == 0:
        raise SchemaError(f"{ds.root}: the dataset has no episodes; there is nothing to diagnose")
    if len(ds.agent_ids) < 2:
        raise SchemaError(
            f"{ds.root}: diagnose measures coordination between agents and needs at least 2; this dataset has "
            f"{len(ds.agent_ids)} ({', '.join(ds.agent_ids)}). `madata info` shows its returns"
        )


def load_inputs(ds: Dataset) -> dict[str, Any]:
    """Read and check what the data-only statistics use, all in memory.

    Returns ``cond`` [N, D] (the global state, else every agent's observation side by
    side, flattened), ``cond_name``, ``actions`` ({agent: [N, *act_shape]} as stored),
    ``features`` ({agent: [N, d]} float: Box actions flattened, discrete ones one-hot)
    and ``episode`` [N]. The writer refuses values that are not finite, so these are.
    """
    _check(ds)
    acts = ds.transitions(fields=["action"])
    actions = {a: acts[f"action/{a}"] for a in ds.agent_ids}
    return {
        "cond": conditioning(ds),
        "cond_name": conditioning_name(ds),
        "actions": actions,
        "features": features_of(ds, actions),
        "episode": ds.transitions(fields=["episode_id"])["episode_id"],
    }


def in_memory_bytes(ds: Dataset) -> int:
    """About the most memory (bytes) :func:`load_inputs` and the statistics on it hold: the conditioning
    vectors and actions as stored, the features, and SACo's rows in float64 twice (the rows and their sort)."""
    n = ds.num_transitions
    if ds.state_space is not None:
        cond = int(np.prod(ds.state_space.shape))
    else:
        cond = sum(int(np.prod(s.observation_space.shape)) for s in ds.agents)
    acts = sum(int(np.prod(s.action_space.shape)) if isinstance(s.action_space, Box) else 1 for s in ds.agents)
    feats = sum(
        int(np.prod(s.action_space.shape)) if isinstance(s.action_space, Box) else s.action_space.n for s in ds.agents
    )
    return n * (4 * (cond + acts + feats) + 16 * (cond + acts) + 8 * (len(ds.agents) + 4))


def available_memory() -> int | None:
    """Bytes of memory available now without swapping (Linux: MemAvailable, which counts reclaimable page
    cache; elsewhere the free pages sysconf reports), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


FEW_EPISODES = 50  # below this, tests across episodes rest on too little to read p-values at face value


def _warnings(episodes: int, groups: int, group_size: int, pool: int, dep: dict, types: dict) -> list[str]:
    """What a reader should know before trusting the numbers: little data, or settings the data could not meet."""
    out = []
    if episodes < FEW_EPISODES:
        out.append(
            f"only {episodes} episodes: the dependence test, the behaviour types and their p-values rest on "
            "few independent samples; read them as rough"
        )
    if "skipped" in dep:
        out.append(f"the dependence statistic was not computed: {dep['skipped']}")
    elif dep["groups"] < groups or dep["group_size"] < group_size or dep["pool"] < pool:
        out.append(
            f"the dependence statistic used {dep['groups']} groups of {dep['group_size']} from a pool of "
            f"{dep['pool']:,} (requested {groups} of {group_size} from {pool:,}): the data is smaller than the settings"
        )
    if "skipped" in types:
        out.append(f"behaviour types were not computed: {types['skipped']}")
    return out


def diagnose(
    dataset: Dataset | str | os.PathLike,
    *,
    groups: int = DEFAULTS["groups"],
    group_size: int = DEFAULTS["group_size"],
    permutations: int = DEFAULTS["permutations"],
    pool: int = DEFAULTS["pool"],
    bins: int = DEFAULTS["bins"],
    shuffles: int = DEFAULTS["shuffles"],
    seed: int = DEFAULTS["seed"],
    progress: bool = False,
    out_of_core: bool | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Quality and coordination diagnostics of a dataset (or selection), JSON-ready.

    Keys: ``dataset``, ``env``, ``agents``, ``settings`` (every size and the seed used),
    ``quality`` (:func:`~madata.diagnostics.quality.quality`), ``behaviour_mix``
    (:func:`~madata.diagnostics.quality.behaviour_mix`), ``dependence``
    (:func:`~madata.diagnostics.dependence.action_dependence`: up to ``groups`` disjoint
    groups of ``group_size`` similar states from a pool of ``pool`` transitions,
    ``permutations`` shuffles), ``coverage``
    (:func:`~madata.diagnostics.coverage.action_coverage`: ``bins`` per action component,
    ``shuffles`` independent copies), ``state_action_coverage``
    (:func:`~madata.diagnostics.coverage.state_action_coverage`: its own defaults, the same
    ``seed``), ``types`` (:func:`~madata.diagnostics.types.behaviour_types`: each agent's
    behaviour types recovered without labels and the team-versus-agent test; its own
    defaults, the same ``seed``), ``reading`` (how the data was read), ``timing_s`` (seconds
    per stage). The same ``seed`` gives the same numbers, whichever way the data is read.

    ``out_of_core=True`` reads the dataset part by part and holds only what the statistics
    need (:mod:`~madata.diagnostics.streaming`; on ``client``'s Dask workers if given);
    ``None`` does so when a client is given or the in-memory path would need more than half
    the free memory (:func:`in_memory_bytes`). Raises :class:`~madata.errors.SchemaError` for a dataset with
    no episodes, fewer than two agents, or non-finite observations, states or actions.
    """
    for name, v in (
        ("groups", groups),
        ("group_size", group_size),
        ("permutations", permutations),
        ("pool", pool),
        ("bins", bins),
        ("shuffles", shuffles),
        ("seed", seed),
    ):
        low = {"seed": 0, "shuffles": 0, "group_size": 4}.get(name, 1)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise SchemaError(f"diagnose: {name} must be an integer >= {low}, got {v!r}")
    ds = dataset if isinstance(dataset, Dataset) else madata.open(dataset)
    _check(ds)
    if out_of_core is False and client is not None:
        raise SchemaError("diagnose: a Dask client reads the data part by part; it does not apply in memory")
    if out_of_core is None:
        free = available_memory()
        # cells too many for one int64 id are numbered over the whole data, which only memory can do
        numbered = all(cell_count(a.action_space, bins) < MAX_CODE for a in ds.agents)
        out_of_core = client is not None or (numbered and free is not None and in_memory_bytes(ds) > free / 2)
    timing: dict[str, float] = {}
    n_pairs = len(ds.agent_ids) * (len(ds.agent_ids) - 1) // 2
    spaces = {a.id: a.action_space for a in ds.agents}
    with tqdm(
        total=4 + n_pairs + len(ds.agent_ids),
        desc="diagnose",
        unit="step",
        disable=None if progress else True,
        file=sys.stderr,
        mininterval=0.5,
    ) as bar:
        t0 = time.perf_counter()
        if out_of_core:
            inputs = stream_inputs(ds, bins=bins, pool=pool, seed=seed, client=client, progress=progress)
        else:
            inputs = load_inputs(ds)
        timing["read"] = time.perf_counter() - t0
        bar.update(1)

        t0 = time.perf_counter()
        qual, mix = quality(ds), behaviour_mix(ds)
        timing["quality"] = time.perf_counter() - t0
        bar.update(1)

        t0 = time.perf_counter()
        dep = action_dependence(
            inputs["cond"],
            inputs["features"],
            inputs["episode"],
            groups=groups,
            group_size=group_size,
            permutations=permutations,
            pool=pool,
            seed=seed,
            progress=bar.update,
        )
        if "skipped" in dep:
            bar.update(1 + n_pairs)
        timing["dependence"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if out_of_core:
            cov = coverage_of_cells(inputs["codes"], inputs["cells"], bins=bins, shuffles=shuffles, seed=seed)
            cov["saco"] = inputs["saco"]
        else:
            cov = action_coverage(inputs["actions"], spaces, bins=bins, shuffles=shuffles, seed=seed)
            cov["saco"] = saco(inputs["cond"], inputs["actions"]) if ds.state_space is not None else None
        ids, ret = ds.episode_ids, ds.episodes.column("return").to_numpy()
        row_return = ret[np.searchsorted(ids, inputs["episode"])]
        sa_cov = state_action_coverage(
            inputs["cond"], inputs["actions"], spaces, inputs["episode"], row_return, seed=seed
        )
        timing["coverage"] = time.perf_counter() - t0
        bar.update(1)

        t0 = time.perf_counter()
        labels = {a: ds.episodes.column(behaviour_column(a)).to_pylist() for a in ds.agent_ids}
        types = behaviour_types(
            inputs["cond"], inputs["features"], inputs["episode"], labels=labels, seed=seed, progress=bar.update
        )
        timing["types"] = time.perf_counter() - t0
    dep["conditioning"] = inputs["cond_name"]
    warnings = _warnings(ds.num_episodes, groups, group_size, pool, dep, types)
    return {
        "dataset": str(ds.root),
        "env": ds.meta.env,
        "description": ds.meta.description,
        "agents": ds.agent_ids,
        "num_episodes": ds.num_episodes,
        "num_transitions": ds.num_transitions,
        "warnings": warnings,
        "settings": {
            "groups": groups,
            "group_size": group_size,
            "permutations": permutations,
            "pool": pool,
            "bins": bins,
            "shuffles": shuffles,
            "seed": seed,
        },
        "quality": qual,
        "behaviour_mix": mix,
        "dependence": dep,
        "coverage": cov,
        "state_action_coverage": sa_cov,
        "types": types,
        "reading": {"out_of_core": out_of_core, "parts": inputs.get("parts"), "dask": client is not None},
        "timing_s": timing,
        "versions": {"madata": madata.__version__, "numpy": np.__version__},
    }
