"""Each agent's behaviour type recovered without labels, and whether types are drawn per team or per agent.

The question: in one episode, which of a few behaviours (policies) did each agent follow,
and did the whole team switch behaviour together from episode to episode (a coordinated,
team-level mixture, such as D4RL's medium-expert files split into agents), or did each
agent's behaviour vary on its own (the paper's uncoordinated data)?

Model: agent ``i`` follows one of ``K_i`` behaviour types for a whole episode; type ``k``
draws its action from ``p_k(a | s)`` at state ``s`` (the global state where stored, else
every agent's observation side by side).

Estimator (*a nearest-neighbour mixture, fit by EM at the episode level*), per agent:

1. From every episode, its first ``early`` steps and random others, ``steps`` in all
   (seeded). The first steps matter: every episode starts from the same initial-state
   distribution, so there different behaviours are seen acting in the same states, while
   later a team's behaviour decides where it goes (medium and expert teams visit nearly
   disjoint states: 98-99 % of later nearest neighbours on MaMuJoCo come from the same
   kind of team), and any behaviour can be explained there by one policy that acts
   differently in different places.
2. Each sampled step's ``neighbours`` nearest sampled steps of *other* episodes, by the
   standardized state (a k-d tree).
3. ``p_k(a | s)``: Gaussian around the mean action of the neighbours, each neighbour
   weighted by its episode's probability of being of type ``k`` (a prior of weight 1 on
   type ``k``'s mean action), with a variance per type and action component. Discrete
   actions enter one-hot. Neighbours always come from other episodes, so an episode never
   predicts itself.
4. EM: an episode's type probabilities come from the sum of its steps' log-likelihoods
   under each type (and the type's share); the types' predictions are rebuilt from them;
   until no episode's most likely type changes; ``restarts`` random starts, the best kept.
5. How many types: every episode's sampled steps are split in two halves (alternating).
   Types are fit on the first; the second half's log-likelihood under the fitted mixture
   is the held-out score of the episode. ``K + 1`` types are kept over ``K`` when the mean
   gain per episode exceeds 0.05 nats with ``z = mean / standard error > 3`` (one-sided p
   about 0.001); otherwise the search stops. The reported types are refit on all sampled steps.
6. An agent left with one type is searched again with the other agents' types as the
   starting points (no random ones); the same held-out rule decides whether it keeps them.

The test: over the agents with at least two types, the multi-information of their types
across episodes, ``I = sum_i H(T_i) - H(T_1, ..., T_n)`` (nats; 0 when the types are
independent, ``H(T)`` when they are all one team type), against its null from shuffling
each agent's types across episodes independently (``permutations`` times):
``p = (1 + #{null >= I}) / (1 + permutations)``.

How to read it: ``p <= 0.01`` says the agents' behaviours switch together from episode
to episode (team-level mixing: a coordinated dataset); the team's type per episode (the
combination of the varying agents' types) is then every agent's type under that model. Types found for several agents
with a large ``p`` say they vary independently (per-agent mixing: the uncoordinated data
CAST-BCQ is for). One type per agent (or only one agent that varies) says every agent
kept one behaviour, as far as the data show. Where behaviour labels are stored, each
agent's recovered types are compared with them (adjusted Rand index, 1 = the same
partition of episodes; 0 = chance). Types are found only where behaviours differ in the
states they share: an agent whose behaviours act alike in the first steps of a team-level
mixture may show one type.

Cost: the k-d tree, ``O(Q log Q)`` for ``Q = episodes * steps`` sampled steps (its queries
grow with the state dimension); each EM iteration ``O(Q * neighbours * K * action dim)``.
Memory ``O(Q * neighbours)``. Independent of the episodes' lengths beyond ``steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from madata.diagnostics.neighbours import standardize

Z_KEEP = 3.0  # the held-out gain of one more type must exceed 3 standard errors
MIN_GAIN = 0.05  # and 0.05 nats per episode (a likelihood ratio of 5 %): smaller types do not matter
MIN_EPISODES = 10
STEPS, EARLY = 64, 32  # sampled steps per episode, and how many of them are its first steps


def sample_steps(episode: np.ndarray, steps: int, early: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: from each episode (``episode`` [N], rows in episode order) its first ``early`` rows
    and random others, ``steps`` in all (fewer in shorter episodes), in row order."""
    starts = np.r_[0, np.flatnonzero(np.diff(episode)) + 1]
    ends = np.r_[starts[1:], len(episode)]
    out = []
    for s, t in zip(starts, ends, strict=True):
        first = min(early, t - s, steps)
        rest = np.arange(s + first, t)
        pick = rng.choice(rest, min(steps - first, len(rest)), replace=False) if len(rest) else rest
        out.append(np.r_[np.arange(s, s + first), np.sort(pick)])
    return np.concatenate(out)


def _sample(
    episode: np.ndarray, steps: int, early: int, seed: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The generator, dense episode index [N] and sampled rows of :func:`behaviour_types` (no rows for
    fewer than ``MIN_EPISODES`` episodes, which it skips)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E5]))
    _, ep = np.unique(episode, return_inverse=True)
    few = len(ep) == 0 or ep.max() + 1 < MIN_EPISODES
    return rng, ep, np.zeros(0, np.int64) if few else sample_steps(ep, steps, early, rng)


def types_rows(episode: np.ndarray, seed: int, steps: int = STEPS, early: int = EARLY) -> np.ndarray:
    """The rows that :func:`behaviour_types` reads, for ``episode`` [N] each transition's episode."""
    return _sample(episode, steps, early, seed)[2]


def other_episode_neighbours(z: np.ndarray, episode: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``z`` [Q, D], the ``k`` nearest rows of other episodes: indices [Q, k] and a
    validity mask [Q, k] (False where fewer than ``k`` other-episode rows exist)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(z)
    extra = k
    while True:
        kk = min(len(z), k + extra)
        _, idx = tree.query(z, k=kk, workers=-1)
        idx = idx.reshape(len(z), kk)
        other = episode[idx] != episode[:, None]
        if (other.sum(1) >= k).all() or kk == len(z):
            break
        extra *= 4  # some row's own episode crowds its neighbourhood (a long stay in one state)
    order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # other-episode rows first, nearest first
    return np.take_along_axis(idx, order, 1), np.take_along_axis(other, order, 1)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis, keepdims=True))).squeeze(axis)


class _Mixture:
    """The nearest-neighbour mixture of one agent: actions ``y`` [Q, A] (standardized) of sampled steps
    from episodes ``qep`` [Q] (0..E-1), their neighbours ``nbr``/``valid`` [Q, k]."""

    def __init__(self, y: np.ndarray, qep: np.ndarray, nbr: np.ndarray, valid: np.ndarray, n_episodes: int):
        self.y, self.qep, self.E = y, qep, n_episodes
        self.nbr_ep = np.where(valid, qep[nbr], 0)
        self.valid = valid.astype(float)
        self.y_nbr = y[nbr]  # [Q, k, A]

    def step_loglik(self, r: np.ndarray, fit: np.ndarray) -> np.ndarray:
        """Log-likelihood [Q, K] of every sampled step under each type, given episode type probabilities
        ``r`` [E, K]; variances are estimated on the steps where ``fit`` [Q] is True."""
        w = r[self.nbr_ep] * self.valid[:, :, None]  # [Q, k, K]: neighbours' weight for each type
        rq = r[self.qep] * fit[:, None]
        prior = (rq.T @ self.y) / np.maximum(rq.sum(0), 1e-9)[:, None]  # [K, A]: each type's mean action
        mean = (np.matmul(w.transpose(0, 2, 1), self.y_nbr) + prior[None]) / (w.sum(1)[:, :, None] + 1.0)
        sq = (self.y[:, None, :] - mean) ** 2  # [Q, K, A]
        var = np.einsum("qk,qka->ka", rq, sq) / np.maximum(rq.sum(0), 1e-9)[:, None] + 1e-6
        return -0.5 * (sq / var[None] + np.log(2 * np.pi * var)[None]).sum(2)

    def episode_loglik(self, step_ll: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Sum over each episode's steps where ``rows`` [Q] is True: [E, K]."""
        out = np.zeros((self.E, step_ll.shape[1]))
        np.add.at(out, self.qep[rows], step_ll[rows])
        return out

    def fit(self, r: np.ndarray, rows: np.ndarray, max_iter: int = 100) -> tuple[np.ndarray, float]:
        """EM from type probabilities ``r`` [E, K], on the steps where ``rows`` is True: (r, log-likelihood)."""
        last = None
        for _ in range(max_iter):
            ll = self.episode_loglik(self.step_loglik(r, rows), rows) + np.log(r.mean(0) + 1e-12)
            total = _logsumexp(ll, 1)
            r = np.exp(ll - total[:, None])
            hard = r.argmax(1)
            if last is not None and (hard == last).all():
                break
            last = hard
        return r, float(total.sum())


def _random_start(E: int, K: int, rng: np.random.Generator) -> np.ndarray:
    return 0.9 * np.eye(K)[rng.integers(K, size=E)] + 0.1 / K


def agent_types(
    mix: _Mixture,
    halves: np.ndarray,
    max_types: int,
    restarts: int,
    rng: np.random.Generator,
    seeded: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """Choose the number of types by held-out gain (module docstring, step 5); returns ``types`` [E]
    (0..K-1, ordered by size), ``K``, and per K tried its held-out gain over K - 1 (mean nats per episode,
    z)."""
    fit_rows, test_rows = halves == 0, halves == 1
    E = mix.E
    r_prev, held_prev = np.ones((E, 1)), None
    tried = []
    for K in range(1, max_types + 1):
        starts = [np.ones((E, 1))] if K == 1 else [_random_start(E, K, rng) for _ in range(restarts)]
        starts += [0.9 * np.eye(K)[t] + 0.1 / K for t in seeded if K > 1 and t.max() + 1 == K]
        if not starts:  # seeded search only: no seed with this many types
            break
        r = max((mix.fit(s, fit_rows) for s in starts), key=lambda t: t[1])[0]
        held = _logsumexp(
            mix.episode_loglik(mix.step_loglik(r, fit_rows), test_rows) + np.log(r + 1e-300), 1
        )  # each episode's second half under its first half's type probabilities
        if held_prev is not None:
            gain = held - held_prev
            z = gain.mean() / (gain.std(ddof=1) / np.sqrt(E) + 1e-12)
            tried.append({"types": K, "heldout_gain_per_episode": float(gain.mean()), "z": float(z)})
            if not (z > Z_KEEP and gain.mean() > MIN_GAIN):
                break
        r_prev, held_prev = r, held
    K = r_prev.shape[1]
    r_all, _ = mix.fit(r_prev, np.ones(len(halves), bool)) if K > 1 else (r_prev, 0.0)
    hard = r_all.argmax(1)
    by_size = np.argsort(-np.bincount(hard, minlength=K), kind="stable")
    types = np.argsort(by_size)[hard]  # type 0 the largest
    return {"K": int(K), "types": types, "tried": tried}


def multi_information(types: np.ndarray) -> float:
    """``sum_i H(T_i) - H(T_1..T_n)`` in nats for ``types`` [E, n] (small non-negative integers)."""
    E, n = types.shape

    def entropy(cols: np.ndarray) -> float:
        _, counts = np.unique(cols, axis=0, return_counts=True)
        p = counts / E
        return float(-(p * np.log(p)).sum())

    return sum(entropy(types[:, [i]]) for i in range(n)) - entropy(types)


def adjusted_rand_index(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Hubert and Arabie's adjusted Rand index of two partitions of the same items: 1 identical, ~0 chance."""
    _, a = np.unique(np.asarray(a, dtype=object).astype(str), return_inverse=True)
    _, b = np.unique(np.asarray(b, dtype=object).astype(str), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    both, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), len(a) * (len(a) - 1) / 2
    expected, best = rows * cols / max(total, 1), (rows + cols) / 2
    return 1.0 if best == expected else (both - expected) / (best - expected)


def behaviour_types(
    cond: np.ndarray,
    features: dict[str, np.ndarray],
    episode: np.ndarray,
    *,
    steps: int = STEPS,
    early: int = EARLY,
    neighbours: int = 32,
    max_types: int = 4,
    restarts: int = 4,
    permutations: int = 999,
    seed: int = 0,
    labels: dict[str, Sequence[str | None]] | None = None,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Recovered behaviour types per agent and the team-versus-agent test (module docstring).

    ``cond`` [N, D] conditioning vectors, ``features`` {agent: [N, d]} actions as floats (one-hot
    for discrete), ``episode`` [N] episode ids in row order; ``labels`` {agent: [E]} the stored
    behaviour labels per episode, if any. Returns a JSON-ready dict: ``agents`` {agent: {types,
    episode_types, sizes, tried, ari_vs_labels, labels_by_type, seeded_from_other_agents}},
    ``test`` {statistic, null, null_mean, null_std, p, permutations, agents} or None, ``team``
    {types, episode_types, sizes, ari_vs_labels} when the test says team-level (else None),
    ``verdict``, ``sampled_steps`` and the settings; or ``{"skipped": reason}`` for fewer
    than 10 episodes.
    """
    rng, ep, rows = _sample(episode, steps, early, seed)
    E = int(ep.max()) + 1
    if E < MIN_EPISODES:
        return {"skipped": f"types are fit across episodes and need at least {MIN_EPISODES}; the data has {E}"}
    qep = ep[rows]
    x = cond[rows].reshape(len(rows), -1)
    z = standardize(x.astype(np.float64), x)
    nbr, valid = other_episode_neighbours(z, qep, min(neighbours, len(rows) - 1))
    position = np.arange(len(rows)) - np.searchsorted(qep, qep)  # each sampled step's rank in its episode
    halves = position % 2
    out: dict[str, Any] = {}
    mixtures: dict[str, _Mixture] = {}

    def record(agent: str, found: dict[str, Any]) -> None:
        info = {
            "types": found["K"],
            "episode_types": found["types"].tolist(),
            "sizes": np.bincount(found["types"], minlength=found["K"]).tolist(),
            "tried": found["tried"],
        }
        if labels is not None and agent in labels and all(v is not None for v in labels[agent]):
            lab = np.asarray(labels[agent], dtype=object).astype(str)
            info["ari_vs_labels"] = adjusted_rand_index(lab, found["types"])
            info["labels_by_type"] = [
                {str(k): int(v) for k, v in zip(*np.unique(lab[found["types"] == t], return_counts=True), strict=True)}
                for t in range(found["K"])
            ]
        out[agent] = info

    for agent, x in features.items():
        y = x[rows].reshape(len(rows), -1).astype(np.float64)
        sd = y.std(0)
        y = (y[:, sd > 0] - y[:, sd > 0].mean(0)) / sd[sd > 0]
        if y.shape[1] == 0:  # one constant action: one type
            found = {"K": 1, "types": np.zeros(E, int), "tried": []}
        else:
            mixtures[agent] = _Mixture(y, qep, nbr, valid, E)
            found = agent_types(mixtures[agent], halves, max_types, restarts, rng)
        record(agent, found)
        if progress:
            progress(1)
    # an agent with one type is searched again from the types found for the others: a split that
    # random starts miss (a weak one, as where teams switch together) is then tried directly
    found_types = {a: np.asarray(out[a]["episode_types"]) for a in out if out[a]["types"] > 1}
    for agent in features:
        others = [t for a, t in found_types.items() if a != agent]
        if out[agent]["types"] > 1 or not others or agent not in mixtures:
            continue
        found = agent_types(mixtures[agent], halves, max_types, 0, rng, seeded=others)
        if found["K"] > 1:
            record(agent, found)
            out[agent]["seeded_from_other_agents"] = True
    varying = [a for a in out if out[a]["types"] > 1]
    test = None
    if len(varying) >= 2:
        types = np.stack([np.asarray(out[a]["episode_types"]) for a in varying], 1)
        stat = multi_information(types)
        null = np.array(
            [
                multi_information(np.stack([rng.permutation(types[:, i]) for i in range(types.shape[1])], 1))
                for _ in range(permutations)
            ]
        )
        test = {
            "agents": varying,
            "statistic": stat,
            "null_mean": float(null.mean()),
            "null_std": float(null.std()),
            "p": float((1 + (null >= stat - 1e-12).sum()) / (1 + permutations)),
            "permutations": permutations,
            "null": np.round(null, 6).tolist(),
        }
    team = None
    if test is not None and test["p"] <= 0.01:
        # a team-level mixture: the team's type is the combination of the varying agents' types, and under
        # that model it is every agent's type, including agents whose own actions do not show it
        _, team_types = np.unique(np.stack([out[a]["episode_types"] for a in varying], 1), axis=0, return_inverse=True)
        team_types = team_types.reshape(-1)
        by_size = np.argsort(-np.bincount(team_types), kind="stable")
        team_types = np.argsort(by_size)[team_types]
        team = {"types": int(team_types.max()) + 1, "episode_types": team_types.tolist()}
        team["sizes"] = np.bincount(team_types).tolist()
        if labels is not None:
            team["ari_vs_labels"] = {
                a: adjusted_rand_index(np.asarray(v, dtype=object).astype(str), team_types)
                for a, v in labels.items()
                if all(x is not None for x in v)
            }
    if test is None:
        verdict = (
            "one behaviour type per agent: no agent's behaviour is seen to change between episodes"
            if not varying
            else f"only {varying[0]}'s behaviour changes between episodes; the others keep one type"
        )
    elif test["p"] <= 0.01:
        verdict = "team-level mixture: the agents' behaviour types switch together between episodes (coordinated)"
    else:
        verdict = "per-agent mixture: the agents' behaviour types vary independently between episodes (uncoordinated)"
    return {
        "agents": out,
        "test": test,
        "team": team,
        "verdict": verdict,
        "sampled_steps": int(len(rows)),
        "settings": {
            "steps": steps,
            "early": early,
            "neighbours": neighbours,
            "max_types": max_types,
            "restarts": restarts,
            "permutations": permutations,
            "seed": seed,
        },
    }
