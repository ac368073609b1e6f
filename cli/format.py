"""Plain-text rendering of summaries for the terminal."""

from __future__ import annotations

from typing import Any


def _space(s: dict[str, Any]) -> str:
    if s["type"] == "discrete":
        return f"Discrete({s['n']})"
    lo, hi = (s["bounds"] + [None, None])[:2]
    return f"Box{tuple(s['shape'])} {s['dtype']} [{lo:g}, {hi:g}]" if s["bounds"] else f"Box{tuple(s['shape'])}"


def _stats(s: dict[str, float] | None, fmt: str = ".2f") -> str:
    if s is None:
        return "-"
    return f"mean {s['mean']:{fmt}}  std {s['std']:{fmt}}  min {s['min']:{fmt}}  max {s['max']:{fmt}}"


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"dataset   {s['path']}"]
    env = s["env"]
    if env:
        lines.append("env       " + "  ".join(f"{k}={v}" for k, v in env.items()))
    if s["description"]:
        lines.append(f"about     {s['description']}")
    lines.append(
        f"size      {s['num_episodes']} episodes, {s['num_transitions']} transitions, "
        f"{s['bytes_on_disk'] / 2**20:.1f} MiB on disk" + ("" if s["complete"] else "  (writer not closed: resumable)")
    )
    lines.append("agents")
    for a in s["agents"]:
        lines.append(f"  {a['id']:<12} obs {_space(a['observation'])}   action {_space(a['action'])}")
    if s["state"]:
        lines.append(f"  {'state':<12} {_space(s['state'])}")
    lines.append(f"returns   {_stats(s['returns'])}")
    if s["normalized_scores"]:
        lines.append(f"normalized {_stats(s['normalized_scores'], '.1f')}")
        if s.get("normalized_note"):
            lines.append(f"           (note: {s['normalized_note']})")
    lines.append(f"lengths   {_stats(s['lengths'], '.1f')}")
    lines.append("ends      " + "  ".join(f"{k} {v}" for k, v in s["ends"].items()))
    if s.get("wins"):
        lines.append(f"wins      {s['wins']['episodes']} episodes won ({s['wins']['rate']:.1%})")
    if s["behaviour_labels"]:
        lines.append("behaviour labels")
        for a, counts in s["behaviour_labels"].items():
            lines.append(f"  {a:<12} " + "  ".join(f"{k}: {v}" for k, v in counts.items()))
        lines.append("returns per combination")
        for k, v in s["behaviour_combinations"].items():
            won = f"  won {v['win_rate']:.0%}" if "win_rate" in v else ""
            lines.append(f"  {k:<40} {v['episodes']:>6} episodes  mean {v['mean']:.2f}  std {v['std']:.2f}{won}")
    lines.append(f"created   {s['created']}  schema v{s['schema_version']}  chunk_rows {s['chunk_rows']}")
    lines.append("versions  " + "  ".join(f"{k} {v}" for k, v in s["versions"].items()))
    if s["provenance"]:
        lines.append("provenance " + "  ".join(f"{k}={v}" for k, v in s["provenance"].items()))
    return "\n".join(lines)


def print_json(obj) -> None:
    """Strict JSON on stdout (infinite bounds as "inf"/"-inf", like the metadata), parseable by any JSON reader."""
    import json

    import typer

    from madata.schema import json_ready

    typer.echo(json.dumps(json_ready(obj), indent=2, default=str, allow_nan=False))
