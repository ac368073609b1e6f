"""Planning a D4RL file's split: where its episodes start and end, and every row of the multi-agent
dataset as index arrays into the file. Every boundary quirk D4RL's files have is resolved here and
counted in a :class:`ConversionReport` (stored in the dataset's provenance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from madata.convert.d4rl_read import D4RLArrays
from madata.convert.split import MaMuJoCoSplit

QUIRKS = (
    "timeout_transitions_dropped",  # truncated episode's last step had no next observation: dropped
    "terminal_final_obs_copied",  # terminated episode's final observation unknown: copy of the last one
    "empty_episodes_dropped",  # a 1-step episode whose only step was dropped
    "final_partial_episode_steps",  # rows after the last terminal/timeout: stored as a truncated episode
    "terminal_and_timeout",  # both flags on one row: stored as terminated
    "next_observation_mismatches",  # next_observations[t] != observations[t+1] inside an episode
    "infos_observation_mismatches",  # infos/qpos,qvel disagree with observations
    "clipped_local_obs_rows",  # local observation from a clipped state with a raw-read velocity at +-10
    "actions_out_of_bounds",  # rows with an action component outside the action box (clipped to it)
    "episodes_over_time_limit",  # episodes longer than the env's time limit (a timeout missing?)
)


@dataclass
class ConversionReport:
    """What a conversion met: per quirk of :data:`QUIRKS` its count and a few example file rows, and notes."""

    source_rows: int
    dtype: str
    next_observations: str  # "stored" or "next row"
    quirks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUIRKS, 0))
    examples: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    last_row: str = ""  # what the file's last row is: terminal, timeout or neither
    local_obs_from: str = ""
    episodes: int = 0
    transitions: int = 0
    terminated_episodes: int = 0
    truncated_episodes: int = 0

    def note(self, kind: str, rows: np.ndarray, count: int | None = None) -> None:
        """Count ``rows`` (file rows) under ``kind`` (one of QUIRKS) and keep the first five as examples."""
        self.quirks[kind] += len(rows) if count is None else count
        if len(rows):
            self.examples[kind] = [int(r) for r in rows[:5]]

    def found(self) -> dict[str, int]:
        return {k: v for k, v in self.quirks.items() if v}

    def to_json(self) -> dict[str, Any]:
        return {
            k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in vars(self).items()
        }


# ---------------------------------------------------------------- episodes


@dataclass
class EpisodePlan:
    """Kept episodes: file row ``start`` and ``length`` T, ``terminated``, and where the final
    (T+1-th) observation comes from: file row ``final_row`` (>= 0) or ``next_observations[last_row]``."""

    start: np.ndarray  # (E,) int64
    length: np.ndarray  # (E,) int64
    terminated: np.ndarray  # (E,) bool
    final_row: np.ndarray  # (E,) int64, -1: next_observations of the episode's last kept row


def plan_episodes(d: D4RLArrays, max_steps: int, report: ConversionReport) -> EpisodePlan:
    """Cut the rows into episodes at terminals and timeouts; resolve the boundary quirks, counted in ``report``."""
    N, term, tout = d.n, d.terminals, d.timeouts
    has_next = d.next_observations is not None
    end = term | tout
    report.note("terminal_and_timeout", np.flatnonzero(term & tout))
    last = np.flatnonzero(end)
    report.last_row = "terminal" if term[-1] else "timeout" if tout[-1] else "neither"
    if not len(last) or last[-1] != N - 1:
        first = int(last[-1]) + 1 if len(last) else 0
        report.note("final_partial_episode_steps", np.array([first]), count=N - first)
        last = np.append(last, N - 1)
    start = np.concatenate([[0], last[:-1] + 1]).astype(np.int64)
    terminated = term[last]
    if has_next:
        length = last - start + 1
        final_row = np.full(len(start), -1, dtype=np.int64)
        inner = np.flatnonzero(~end[:-1])  # t and t+1 in one episode
        mism = inner[(d.next_observations[inner] != d.observations[inner + 1]).any(axis=1)]
        report.note("next_observation_mismatches", mism)
    else:
        # a row's next observation is the next row, unknown for an episode's last row
        length = np.where(terminated, last - start + 1, last - start)
        final_row = last.copy()  # terminated: a copy of the last observation; truncated: the real next one
        report.note("terminal_final_obs_copied", last[terminated])
        report.note("timeout_transitions_dropped", last[~terminated])
    empty = length == 0
    report.note("empty_episodes_dropped", start[empty])
    keep = ~empty
    plan = EpisodePlan(start[keep], length[keep].astype(np.int64), terminated[keep], final_row[keep])
    report.note("episodes_over_time_limit", plan.start[plan.length > max_steps])
    return plan


# ---------------------------------------------------------------- the split


@dataclass
class SplitArrays:
    """The whole dataset as contiguous arrays (episodes back to back, the writer's row layout)."""

    obs: dict[str, np.ndarray]  # (R, o_i), R = sum(T + 1)
    state: np.ndarray  # (R, S)
    actions: dict[str, np.ndarray]  # (sum T, d_i)
    rewards: np.ndarray  # (sum T,)
    local_obs_from: str


def build_arrays(d: D4RLArrays, plan: EpisodePlan, split: MaMuJoCoSplit, report: ConversionReport) -> SplitArrays:
    """Every kept row, split per agent, in one pass of vectorized indexing."""
    N = d.n
    T = plan.length
    L = T + 1
    obs_off = np.cumsum(L) - L
    step_off = np.cumsum(T) - T
    # observation rows index a file row, or N + k for next_observations[last kept row of episode k]
    use_next = plan.final_row < 0
    next_src = (plan.start + T - 1)[use_next]  # rows whose next_observations give a final observation
    final = plan.final_row.copy()
    final[use_next] = N + np.arange(int(use_next.sum()))
    obs_idx = np.repeat(plan.start - obs_off, L) + np.arange(int(L.sum()))
    obs_idx[obs_off + T] = final
    step_idx = np.repeat(plan.start - step_off, T) + np.arange(int(T.sum()))

    ext_state = d.observations if not len(next_src) else np.concatenate([d.observations, d.next_observations[next_src]])
    ext, src = _local_observations(d, split, next_src, ext_state, obs_idx, report)
    acts = d.actions[step_idx]
    lo, hi = split.factorization.joint_bounds()
    out_of_box = np.flatnonzero(((acts < lo) | (acts > hi)).any(axis=1))
    if len(out_of_box):
        report.note("actions_out_of_bounds", step_idx[out_of_box])
        acts = np.clip(acts, lo, hi)  # a dataset's actions lie in its action space; the report counts the rows clipped
    return SplitArrays(
        obs={a: ext[a][obs_idx] for a in split.agent_ids},
        state=ext_state[obs_idx],
        actions={a: np.ascontiguousarray(acts[:, split.factorization.act_index[a]]) for a in split.agent_ids},
        rewards=d.rewards[step_idx],
        local_obs_from=src,
    )


def _local_observations(
    d: D4RLArrays,
    split: MaMuJoCoSplit,
    next_src: np.ndarray,
    ext_state: np.ndarray,
    obs_idx: np.ndarray,
    report: ConversionReport,
) -> tuple[dict[str, np.ndarray], str]:
    """Each agent's local observation for every row of ``ext_state`` (file rows, then the
    next_observations of ``next_src``), from the best source the file has, and its name."""
    dtype, N = d.dtype, d.n
    if d.agent_obs is not None:  # written by export-d4rl: the dataset's own
        return {
            a: np.concatenate([d.agent_obs[a], d.agent_next_obs[a][next_src]]) for a in split.agent_ids
        }, "madata/obs"
    raw = None
    if d.qpos is not None:
        raw = split.source(d.qpos, d.qvel)  # (N, S) unclipped
        bad = ~np.isclose(split.state_from_source(raw), d.observations.astype(np.float64), rtol=1e-5, atol=1e-5).all(
            axis=1
        )
        if bad.any():
            raw = None
            report.note("infos_observation_mismatches", np.flatnonzero(bad))
            report.notes.append(
                f"infos/qpos,qvel disagree with observations in {int(bad.sum())} rows: local observations built from observations"
            )
    if raw is not None:  # exact for every file row; final observations from next_observations may be unsure
        ext = split.local_from_source(raw, dtype)
        unsure_rows = np.zeros(0, dtype=np.int64)
        if len(next_src):
            nxt, unsure = split.local_from_state(d.next_observations[next_src], dtype)
            ext = {a: np.concatenate([ext[a], nxt[a]]) for a in split.agent_ids}
            unsure_rows = next_src[unsure]
        src = "infos/qpos+qvel"
    else:
        ext, unsure = split.local_from_state(ext_state, dtype)
        used = np.zeros(len(ext_state), dtype=bool)
        used[obs_idx] = True
        unsure_rows = np.flatnonzero(unsure & used)  # rows of ext_state -> rows of the file
        beyond = unsure_rows >= N
        unsure_rows[beyond] = next_src[unsure_rows[beyond] - N]
        src = "observations"
    report.note("clipped_local_obs_rows", np.unique(unsure_rows), count=len(unsure_rows))
    return ext, src
