"""Collect a dataset from any PettingZoo ``ParallelEnv`` with one or more behaviour policies per agent.

    from mpe2 import simple_spread_v3
    from madata.pettingzoo import collect_pettingzoo

    ds = collect_pettingzoo(
        lambda: simple_spread_v3.parallel_env(continuous_actions=True, max_cycles=25),
        "spread.zarr",
        policies={"agent_0": {"random": "random", "greedy": my_policy}, "agent_1": {"random": "random"}, ...},
        episodes=400,
        seed=0,
    )

or from the command line, naming the env as ``pettingzoo:MODULE[:FUNCTION]`` (default
function ``parallel_env``; keyword arguments with ``--env-arg KEY=VALUE``)::

    madata collect pettingzoo:mpe2.simple_spread_v3 --env-arg continuous_actions=true \
        --policy agent_0=random --policy agent_0=mypkg.policies:greedy --policy agent_1=random ... -o spread.zarr

A policy is ``"random"`` (uniform over the agent's action space) or a callable
``policy(obs, rng) -> action`` for one agent: ``obs`` its observation (as the env gives it,
without an action mask), ``rng`` a ``numpy.random.Generator`` that is the policy's only
source of randomness. A policy object may also define ``bind(env, agent)``, called once
before collecting (for policies that need the env), and ``reset(rng)``, called at the start
of each of its episodes (for policies with memory). On the command line a class is
instantiated once per agent. Each agent's policies are its behaviour levels: every per-agent
combination gets an equal share of the episodes (episode ``e`` plays combination
``e mod K``), and each episode records its agents' labels, as ``madata collect --mix``
does for built-in tasks.

What is taken from the env: the agents and their observation and action spaces (Box or
Discrete), the global state (``env.state()``, where the env has a ``state_space``), action
masks (observations that are dicts of ``observation`` and ``action_mask``, PettingZoo's
convention; discrete agents only), per-agent rewards (``agent_rewards``; the team reward
stored in ``rewards`` is their mean) and the end of each episode: ``terminated`` when any
agent terminated, else ``truncated``. madata stores teams of fixed size: an env where some
agents leave before the others is refused at the step where it happens.

Episode ``e`` is a pure function of ``(seed, e)``: its reset seed and every policy's
generator come from ``numpy.random.SeedSequence([seed, e, ...])``, so the same seed gives
the same data and ``resume=True`` continues an interrupted collection bit for bit.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import madata
from madata.collect import episode_bar, parse_int, refuse_other_collection
from madata.dataset import Dataset
from madata.errors import SchemaError, UnknownNameError
from madata.schema import AgentSpec
from madata.spaces import Box, Discrete
from madata.store import read_root
from madata.writer import DatasetWriter

PRODUCER = "madata.collect_pettingzoo"
Policy = Callable[[Any, np.random.Generator], Any]


def env_from_spec(spec: str, kwargs: Mapping[str, Any] | None = None) -> Callable[[], Any]:
    """``"pettingzoo:MODULE[:FUNCTION]"`` (or without the prefix) -> a factory of that ParallelEnv."""
    text = spec.removeprefix("pettingzoo:")
    module, _, fn = text.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UnknownNameError(
            f"env {spec!r}: cannot import {module!r} ({e}); install the package that provides it"
        ) from e
    factory = getattr(mod, fn or "parallel_env", None)
    if not callable(factory):
        raise UnknownNameError(f"env {spec!r}: {module} has no function {fn or 'parallel_env'!r}")
    kwargs = dict(kwargs or {})

    def make() -> Any:
        try:
            return factory(**kwargs)
        except TypeError as e:  # an --env-arg the env function does not take
            raise SchemaError(f"env {spec!r} with {kwargs}: {e}") from e

    return make


def policy_from_spec(text: str) -> Policy | str:
    """``"random"``, or ``"MODULE:CALLABLE"`` imported; a class is instantiated (one policy per call)."""
    if text == "random":
        return "random"
    module, _, name = text.partition(":")
    if not module or not name:
        raise SchemaError(f"policy {text!r}: expected 'random' or MODULE:CALLABLE, e.g. mypkg.policies:greedy")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UnknownNameError(f"policy {text!r}: cannot import it ({e})") from e
    if isinstance(fn, type):  # a policy class: one instance per agent, which may keep state
        fn = fn()
    if not callable(fn):
        raise SchemaError(f"policy {text!r}: {name} is not callable")
    return fn


def collect_pettingzoo(
    make_env: Callable[[], Any],
    out: str | os.PathLike,
    *,
    policies: Mapping[str, Mapping[str, Policy | str]],
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    env_name: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    resume: bool = False,
    commit_every: int = 10,
    commit_seconds: float = 1.0,
    progress: bool = False,
) -> Dataset:
    """Run ``episodes`` episodes of the env ``make_env()`` builds and write them to ``out``.

    ``policies[agent]`` maps behaviour labels to policies (``"random"`` or a callable
    ``(obs, rng) -> action``); every agent of the env needs at least one. ``max_steps``
    truncates episodes there. ``env_name`` and ``env_kwargs`` (the arguments ``make_env``
    used) are recorded (default name: the env's ``metadata["name"]``). ``resume=True``
    continues an interrupted collection made with the same env, labels, episodes and seed
    (or starts one). An env that breaks a rule in the first episode leaves nothing behind;
    later, the episodes written whole are kept and can be resumed. Returns the dataset.
    """
    episodes, seed = parse_int(episodes, "episodes", 1), parse_int(seed, "seed", 0)
    max_steps = None if max_steps is None else parse_int(max_steps, "max_steps", 1)
    env = make_env()
    try:
        agents = list(env.possible_agents)
        specs, masked = _agent_specs(env, agents)
        missing = [a for a in agents if not policies.get(a)]
        unknown = [a for a in policies if a not in agents]
        if missing or unknown:
            raise SchemaError(
                f"policies: every agent of the env needs at least one policy and no other agent may be named; "
                f"missing {missing}, unknown {unknown}; the env's agents are {agents}"
            )
        for a in agents:
            for label, p in policies[a].items():
                if not (p == "random" or callable(p)):
                    raise SchemaError(f"policies[{a!r}][{label!r}]: expected 'random' or a callable, got {p!r}")
        for a in agents:  # policies that need the env (its units, its map) get it once, before any episode
            for p in policies[a].values():
                if hasattr(p, "bind"):
                    p.bind(env, a)
        labels = {a: list(policies[a]) for a in agents}
        combos = [dict(zip(agents, c, strict=True)) for c in itertools.product(*(labels[a] for a in agents))]
        state_space = _box(env.state_space, "state_space") if hasattr(env, "state_space") else None
        name = env_name or str(getattr(env, "metadata", {}).get("name", type(env).__name__))
        provenance = {
            "producer": PRODUCER,
            "env": name,
            "env_kwargs": dict(env_kwargs or {}),
            "labels": labels,
            "policies": {a: {lb: _describe(p) for lb, p in policies[a].items()} for a in agents},
            "episodes": episodes,
            "seed": seed,
            "max_steps": max_steps,
            "madata_version": madata.__version__,
        }
        root = Path(out)
        resuming = resume and (root / "zarr.json").exists()
        if resuming:
            refuse_other_collection(
                root,
                read_root(root)[0].provenance,
                provenance,
                ("producer", "env", "env_kwargs", "labels", "policies", "episodes", "seed", "max_steps"),
            )
            writer = DatasetWriter.resume(root, commit_every=commit_every, commit_seconds=commit_seconds)
        else:
            writer = madata.create(
                root,
                specs,
                state_space=state_space,
                agent_rewards=True,
                action_masks=masked,
                env={"id": name, "family": "pettingzoo", "kwargs": dict(env_kwargs or {}), "max_steps": max_steps},
                description=f"{name}: {episodes} episodes, every per-agent combination of "
                + "; ".join(f"{a}: {','.join(labels[a])}" for a in agents)
                + f", collected by {PRODUCER} with seed {seed}",
                provenance=provenance,
                commit_every=commit_every,
                commit_seconds=commit_seconds,
            )
        fresh = not resuming
        try:
            _run(
                writer,
                env,
                agents,
                specs,
                masked,
                state_space is not None,
                policies,
                combos,
                seed,
                episodes,
                max_steps,
                name,
                progress,
            )
        except SchemaError:
            if fresh and madata.open(root, verify="none").num_episodes == 0:
                shutil.rmtree(root, ignore_errors=True)  # the env broke a rule in the first episode: leave nothing
            raise
    finally:
        env.close()
    return madata.open(out)


def _run(writer, env, agents, specs, masked, with_state, policies, combos, seed, episodes, max_steps, name, progress):
    """Episodes from the writer's count up to ``episodes``, each written whole."""
    with (
        writer,
        episode_bar(episodes, writer.num_episodes, f"collect {name}", progress) as bar,
    ):
        for e in range(writer.num_episodes, episodes):
            combo = combos[e % len(combos)]
            ep = _episode(env, agents, specs, masked, with_state, policies, combo, seed, e, max_steps)
            writer.add_episode(**ep, behaviour=combo, provenance={"combo": combo})
            bar.update(1)


# ---------------------------------------------------------------------------- one episode


def _episode(env, agents, specs, masked, with_state, policies, combo, seed, e, max_steps) -> dict[str, Any]:
    reset_seed = int(np.random.SeedSequence([seed, e]).generate_state(1)[0] >> 1)
    rngs = {a: np.random.default_rng(np.random.SeedSequence([seed, e, 1 + i])) for i, a in enumerate(agents)}
    obs, _ = env.reset(seed=reset_seed)
    for a in agents:  # a policy with memory starts each episode afresh, from this episode's generator
        p = policies[a][combo[a]]
        if hasattr(p, "reset"):
            p.reset(rngs[a])
    space = {s.id: s.action_space for s in specs}
    o = {a: [] for a in agents}
    m = {a: [] for a in agents}
    acts = {a: [] for a in agents}
    rew = {a: [] for a in agents}
    states = []
    terminated = done = False
    t = 0
    while True:
        _check_team(obs, agents, e, t)
        for a in agents:
            x, mask = _split(obs[a], masked)
            o[a].append(x)
            m[a].append(mask)
        if with_state:
            states.append(np.asarray(env.state(), dtype=np.float32))
        if done or (max_steps is not None and t >= max_steps):
            break
        action = {}
        for a in agents:
            p = policies[a][combo[a]]
            action[a] = _random(space[a], rngs[a], m[a][-1]) if p == "random" else p(o[a][-1], rngs[a])
            if not env.action_space(a).contains(action[a]):  # before the env's own assert, with names
                raise SchemaError(
                    f"episode {e}, step {t}: {a}'s policy {combo[a]!r} returned {action[a]!r}, "
                    f"which is not in its action space {env.action_space(a)}"
                )
            acts[a].append(action[a])
        obs, r, te, tr, _ = env.step(action)
        for a in agents:
            rew[a].append(float(r.get(a, 0.0)))
        ended = {a for a in agents if te.get(a) or tr.get(a)}
        if ended and ended != set(agents):
            raise SchemaError(
                f"episode {e}, step {t}: agents {sorted(ended)} ended while {sorted(set(agents) - ended)} go on; "
                "madata stores teams of fixed size"
            )
        terminated = any(te.get(a) for a in agents)
        done = bool(ended)
        t += 1
    T = t
    end = np.zeros(T, bool)
    end[-1] = True
    out = {
        "obs": {a: np.stack(o[a]).astype(np.float32) for a in agents},
        "actions": {a: np.asarray(acts[a]) for a in agents},
        "rewards": np.mean([rew[a] for a in agents], axis=0),
        "terminated": end if terminated else np.zeros(T, bool),
        "truncated": np.zeros(T, bool) if terminated else end,
        "agent_rewards": {a: np.asarray(rew[a]) for a in agents},
        "seed": reset_seed,
    }
    if with_state:
        out["state"] = np.stack(states)
    if masked:
        out["action_masks"] = {a: np.stack(m[a]).astype(bool) for a in agents}
    return out


def _check_team(obs: Mapping[str, Any], agents: list[str], e: int, t: int) -> None:
    missing = [a for a in agents if a not in obs]
    if missing:
        raise SchemaError(
            f"episode {e}, step {t}: the env gave no observation for {missing}; madata stores fixed teams"
        )


def _split(x: Any, masked: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if masked:
        return np.asarray(x["observation"]), np.asarray(x["action_mask"])
    return np.asarray(x), None


def _random(space: Box | Discrete, rng: np.random.Generator, mask: np.ndarray | None) -> Any:
    if isinstance(space, Discrete):
        allowed = np.flatnonzero(mask) if mask is not None else np.arange(space.n)
        return int(space.start + rng.choice(allowed))
    low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), space.shape)
    high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), space.shape)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise SchemaError("a random policy needs a bounded Box action space")
    return rng.uniform(low, high).astype(space.dtype)


# ---------------------------------------------------------------------------- spaces


def _box(space: Any, where: str) -> Box:
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        raise SchemaError(f"{where}: expected a gymnasium Box, got {type(space).__name__}")
    return Box.make(space.low, space.high, space.shape)  # stored as float32, as madata stores every Box


def _agent_specs(env: Any, agents: list[str]) -> tuple[list[AgentSpec], bool]:
    """madata's agent specs from the env's spaces, and whether observations carry action masks."""
    from gymnasium import spaces

    specs, masked = [], []
    for a in agents:
        obs_space, act_space = env.observation_space(a), env.action_space(a)
        has_mask = isinstance(obs_space, spaces.Dict) and {"observation", "action_mask"} <= set(obs_space.spaces)
        masked.append(has_mask)
        obs_box = _box(obs_space["observation"] if has_mask else obs_space, f"{a}'s observation space")
        if isinstance(act_space, spaces.Discrete):
            act = Discrete(int(act_space.n), int(act_space.start))
        elif isinstance(act_space, spaces.Box):
            act = _box(act_space, f"{a}'s action space")
        else:
            raise SchemaError(f"{a}'s action space: expected Box or Discrete, got {type(act_space).__name__}")
        specs.append(AgentSpec(a, obs_box, act))
    if any(masked) and not all(masked):
        raise SchemaError("action masks: some agents' observations carry them and others not; madata needs all or none")
    return specs, all(masked) and bool(masked)


def _describe(p: Policy | str) -> str:
    if p == "random":
        return "random"
    named = p if hasattr(p, "__qualname__") else type(p)  # a function, or an instance of a policy class
    return f"{named.__module__}:{named.__qualname__}"


def parse_env_args(items: list[str]) -> dict[str, Any]:
    """``["continuous_actions=true", "max_cycles=25"]`` -> keyword arguments (values parsed as JSON where they can be)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SchemaError(f"--env-arg {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
