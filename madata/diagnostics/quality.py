"""Quality: returns, normalized scores, lengths, ends, and the behaviour-mix table.

The return statistics come from :func:`madata.summary.summarize` (one source for them);
this module adds what needs the per-episode behaviour labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from madata.dataset import Dataset
from madata.schema import behaviour_column
from madata.summary import normalized_score, summarize


def quality(ds: Dataset) -> dict[str, Any]:
    """Returns, normalized scores (D4RL convention, where reference scores are known), lengths and
    how episodes ended (terminated/truncated counts), over the dataset or selection; plus a
    histogram of the returns (``bins`` equal-width bins: ``edges`` [bins + 1], ``counts`` [bins])."""
    s = summarize(ds)
    returns = ds.episodes.column("return").to_numpy()
    counts, edges = np.histogram(returns, bins=int(np.clip(len(returns) // 5, 5, 40)))
    return {
        "num_episodes": s["num_episodes"],
        "num_transitions": s["num_transitions"],
        "returns": s["returns"],
        "return_quantiles": _quantiles(returns),
        "return_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "normalized_scores": s["normalized_scores"],
        "reference_scores": s["reference_scores"],
        "lengths": s["lengths"],
        "ends": s["ends"],
    }


def _quantiles(x: np.ndarray) -> dict[str, float]:
    qs = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {k: float(v) for k, v in zip(("p05", "p25", "p50", "p75", "p95"), qs, strict=True)}


def behaviour_mix(ds: Dataset) -> dict[str, Any]:
    """The behaviour-mix table and the miscoordination gap, from the per-agent behaviour labels.

    ``combinations``: one row per per-agent combination of labels (episodes where any
    agent is unlabelled are left out and counted in ``unlabelled_episodes``): its share of
    the labelled episodes, episode count, mean/std return (and normalized mean where
    reference scores are known), and whether it is *matched* (every agent has the same
    label) or *mismatched*.

    ``gap`` (the miscoordination gap) = mean over matched combinations of their mean
    return - mean over mismatched combinations of theirs, each combination weighted
    equally so that unequal shares do not bias it. With two agents and two levels it is
    the interaction contrast ``(R_mm + R_ee - R_me - R_em) / 2``: 0 when each agent's
    level adds to the return on its own, positive when mixing levels costs more than
    the levels' own effects (miscoordination), negative when mixing helps. ``gap_se``:
    its standard error from the pooled within-combination variance. ``mismatched_share``:
    the share of labelled episodes whose agents' labels differ. The gap needs both a
    matched and a mismatched combination; otherwise it is None and ``gap_note`` says why.
    """
    t = ds.episodes
    agents = ds.agent_ids
    returns = t.column("return").to_numpy().astype(np.float64)
    labels = [t.column(behaviour_column(a)).to_pylist() for a in agents]
    ref = ds.meta.reference_scores
    labelled = np.array([all(lab[e] is not None for lab in labels) for e in range(len(returns))], dtype=bool)
    out: dict[str, Any] = {
        "labelled_episodes": int(labelled.sum()),
        "unlabelled_episodes": int((~labelled).sum()),
        "combinations": [],
        "mismatched_share": None,
        "gap": None,
        "gap_se": None,
        "gap_normalized": None,
        "gap_note": None,
    }
    if not labelled.any():
        out["gap_note"] = "no behaviour labels: the table and the gap need a label for every agent"
        return out
    groups: dict[tuple[str, ...], list[int]] = {}
    for e in np.flatnonzero(labelled):
        groups.setdefault(tuple(lab[e] for lab in labels), []).append(int(e))
    n_lab = int(labelled.sum())
    rows = []
    for combo, eps in sorted(groups.items()):
        r = returns[eps]
        norm = normalized_score(r, ref)
        rows.append(
            {
                "combination": dict(zip(agents, combo, strict=True)),
                "label": ",".join(f"{a}={lv}" for a, lv in zip(agents, combo, strict=True)),
                "matched": len(set(combo)) == 1,
                "episodes": len(eps),
                "share": len(eps) / n_lab,
                "return_mean": float(r.mean()),
                "return_std": float(r.std()),  # population std, as `madata info` shows it
                "normalized_mean": None if norm is None else float(norm.mean()),
            }
        )
    out["combinations"] = rows
    out["mismatched_share"] = float(sum(r["share"] for r in rows if not r["matched"]))
    matched = [r for r in rows if r["matched"]]
    mismatched = [r for r in rows if not r["matched"]]
    if not matched or not mismatched:
        out["gap_note"] = (
            "every labelled episode has matched labels: nothing to compare against"
            if not mismatched
            else "no episode has matched labels: nothing to compare against"
        )
        return out
    gap = np.mean([r["return_mean"] for r in matched]) - np.mean([r["return_mean"] for r in mismatched])
    # pooled within-combination variance: combinations with one episode still get a standard error
    dof = sum(r["episodes"] - 1 for r in rows)
    pooled = sum(r["episodes"] * r["return_std"] ** 2 for r in rows) / dof if dof > 0 else float("nan")
    var = pooled * (
        sum(1 / r["episodes"] for r in matched) / len(matched) ** 2
        + sum(1 / r["episodes"] for r in mismatched) / len(mismatched) ** 2
    )
    out["gap"] = float(gap)
    out["gap_se"] = None if not np.isfinite(var) else float(np.sqrt(var))
    if ref:
        out["gap_normalized"] = float(100.0 * gap / (ref["max"] - ref["min"]))
    return out
