"""Behaviour mixes: which level each agent plays in each episode.

``--mix medium,expert`` means every per-agent combination of those levels gets an equal
share of the episodes: with 2 agents that is 4 combinations (medium/medium,
medium/expert, expert/medium, expert/expert), with Hopper's 3 agents 8. ``--combo
agent_0=medium,agent_1=expert`` fixes one combination for every episode.

``--mix-by team`` instead draws one level per episode for the whole team, as D4RL's
medium-expert files do: with ``--mix medium,expert`` the combinations are medium/medium
and expert/expert only (a coordinated mixture; the default ``--mix-by agent`` is the
paper's uncoordinated one).

Episode ``e`` plays ``combos[e % len(combos)]``, so the shares are equal when the number
of episodes is a multiple of the number of combinations and differ by at most one
episode otherwise (the first ``episodes % len(combos)`` combinations get one more).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from madata.errors import SchemaError, UnknownNameError

Combo = dict[str, str]  # agent id -> behaviour level
MIX_BY = ("agent", "team")  # who a level is drawn for: each agent, or the whole team

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _parse_name(token: str, what: str, text: str) -> str:
    name = token.strip()
    if not name:
        example = "'agent_0=medium,agent_1=expert'" if what == "combo" else "'medium,expert'"
        raise SchemaError(f"{what} {text!r}: an empty name; expected {example}")
    if not _NAME.match(name):
        raise SchemaError(f"{what} {text!r}: bad name {name!r}; use letters, digits, '_', '.' or '-'")
    return name


def parse_mix(text: str) -> list[str]:
    """``"medium,expert"`` -> ``["medium", "expert"]`` (order kept; no empty or repeated entries)."""
    if not isinstance(text, str):
        raise SchemaError(f"mix: expected a string like 'medium,expert', got {text!r}")
    levels = [_parse_name(tok, "mix", text) for tok in text.split(",")]
    _no_repeats(levels, "mix")
    return levels


def parse_combo(text: str, agent_ids: Sequence[str], partial: bool = False) -> Combo:
    """``"agent_0=medium,agent_1=expert"`` -> ``{"agent_0": "medium", "agent_1": "expert"}``.

    Every agent of ``agent_ids`` must appear exactly once (at most once with ``partial``);
    the result follows their order.
    """
    if not isinstance(text, str):
        raise SchemaError(f"combo: expected a string like 'agent_0=medium,agent_1=expert', got {text!r}")
    combo: Combo = {}
    for tok in text.split(","):
        if tok.count("=") != 1:
            raise SchemaError(f"combo {text!r}: entry {tok.strip()!r} is not AGENT=LEVEL")
        agent, level = (_parse_name(part, "combo", text) for part in tok.split("="))
        if agent in combo:
            raise SchemaError(f"combo {text!r}: agent {agent!r} appears twice")
        combo[agent] = level
    return check_combo(combo, agent_ids, partial)


def check_combo(combo: dict, agent_ids: Sequence[str], partial: bool = False) -> Combo:
    """Check that ``combo`` names each agent of ``agent_ids`` once (or some of them, with
    ``partial``); returns it in their order."""
    if not isinstance(combo, dict):
        raise SchemaError(f"combo: expected a dict agent -> level, got {combo!r}")
    for agent, level in combo.items():
        if agent not in agent_ids:
            raise UnknownNameError(f"combo: unknown agent {agent!r}; agents: {', '.join(agent_ids)}")
        if not isinstance(level, str) or not _NAME.match(level):
            raise SchemaError(f"combo: level of {agent} must be a name like 'medium', got {level!r}")
    missing = [a for a in agent_ids if a not in combo]
    if missing and not partial:
        raise SchemaError(f"combo: no level for agent(s) {', '.join(missing)}; give one level per agent")
    return {a: combo[a] for a in agent_ids if a in combo}


def combinations(levels: Sequence[str], agent_ids: Sequence[str], mix_by: str = "agent") -> list[Combo]:
    """The combinations a mix plays, in a fixed order.

    ``mix_by="agent"``: every per-agent combination (``len(levels) ** len(agent_ids)``;
    ``itertools.product`` order, the first agent varying slowest). ``mix_by="team"``: one
    combination per level, every agent at it (``len(levels)``).
    """
    if mix_by not in MIX_BY:
        raise SchemaError(f"mix_by: expected one of {', '.join(MIX_BY)}, got {mix_by!r}")
    if not levels:
        raise SchemaError("mix: needs at least one behaviour level")
    if not agent_ids:
        raise SchemaError("mix: needs at least one agent")
    _no_repeats(list(levels), "mix")
    if mix_by == "team":
        return [dict.fromkeys(agent_ids, lv) for lv in levels]
    return [dict(zip(agent_ids, combo, strict=True)) for combo in itertools.product(levels, repeat=len(agent_ids))]


def assign(num_episodes: int, combos: Sequence[Combo]) -> list[Combo]:
    """The combination of each episode: episode ``e`` gets ``combos[e % len(combos)]``.

    Shares are equal when ``num_episodes`` is a multiple of ``len(combos)``, and differ by
    at most one episode otherwise.
    """
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 0:
        raise SchemaError(f"episodes: expected an integer >= 0, got {num_episodes!r}")
    if not combos:
        raise SchemaError("assign: needs at least one behaviour combination")
    return [combo_of(e, combos) for e in range(num_episodes)]


def combo_of(e: int, combos: Sequence[Combo]) -> Combo:
    """Episode ``e``'s combination (:func:`assign`)."""
    return combos[e % len(combos)]


def combo_label(combo: Combo) -> str:
    """``{"agent_0": "medium", "agent_1": "expert"}`` -> ``"agent_0=medium,agent_1=expert"`` (parse_combo's input)."""
    return ",".join(f"{a}={lv}" for a, lv in combo.items())


def _no_repeats(levels: list[str], what: str) -> None:
    seen = set()
    for lv in levels:
        if lv in seen:
            raise SchemaError(f"{what}: level {lv!r} appears twice; list each level once")
        seen.add(lv)
