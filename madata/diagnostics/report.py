"""The HTML report: one self-contained page (inline CSS, PNG plots as data URIs, the JSON embedded).

matplotlib draws the plots (Agg backend, never a window); it is imported only here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from madata.atomic import write_bytes_atomic
from madata.errors import MadataError

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.92em;max-width:60em} img{max-width:100%;border:1px solid #eee}
code{background:#f4f4f4;padding:0 .2em} .warning{background:#fff4e5;border-left:4px solid #e69500;padding:.4em .8em}
"""


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.1f}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(d: dict[str, Any]) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MadataError(
            "the HTML report draws its plots with matplotlib: pip install 'madata[algos]' (or matplotlib); "
            "--json and the text summary do not need it"
        ) from e
    out = {}
    # returns: overall histogram, and per behaviour combination
    combos = d["behaviour_mix"]["combinations"]
    fig, axes = plt.subplots(1, 2 if combos else 1, figsize=(11 if combos else 6, 3.6), squeeze=False)
    ax = axes[0, 0]
    hist = d["quality"]["return_histogram"]
    ax.stairs(hist["counts"], hist["edges"], fill=True, color="#4c72b0")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    ax.set_title("returns")
    if combos:
        ax = axes[0, 1]
        y = range(len(combos))
        means = [c["return_mean"] for c in combos]
        stds = [c["return_std"] for c in combos]
        colors = ["#55a868" if c["matched"] else "#c44e52" for c in combos]
        ax.barh(list(y), means, xerr=stds, color=colors, capsize=3)
        ax.set_yticks(list(y), [c["label"] for c in combos], fontsize=8)
        ax.set_xlabel("mean return, bars: one standard deviation (green: matched labels, red: mismatched)")
        ax.set_title("returns per behaviour combination")
    fig.tight_layout()
    out["returns"] = _png(fig)
    plt.close(fig)

    dep = d["dependence"]
    if "pairs" in dep:
        pairs = dep["pairs"]
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(pairs) + 3), 3.6))
        for x, p in enumerate(pairs):
            if p["statistic"] is None:
                continue
            jitter = (0.15 * ((i * 0.6180339) % 1.0 - 0.5) for i in range(len(p["null"])))
            ax.scatter(
                [x + j for j in jitter],
                p["null"],
                s=10,
                color="#8c8c8c",
                label="shuffled among similar states (null)" if x == 0 else None,
            )
            ax.scatter([x], [p["statistic"]], s=60, marker="D", color="#c44e52", label="data" if x == 0 else None)
        ax.set_xticks(range(len(pairs)), [" / ".join(p["agents"]) for p in pairs], fontsize=8)
        values = [v for p in pairs if p["statistic"] is not None for v in (p["statistic"], *p["null"])]
        ax.set_ylim(0, 1.3 * max(values, default=1.0))  # from 0: the excess read against the null's own size
        ax.set_ylabel("local residual RV")
        ax.set_title("dependence between agents' actions given the state")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        out["dependence"] = _png(fig)
        plt.close(fig)

    types = d.get("types")
    if types and "agents" in types:
        out["types"] = _types_plot(plt, types)

    cov = d["coverage"]["curve"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    n = cov["transitions"]
    for a in d["agents"]:
        ax.plot(n, cov[a], label=f"{a} (of {d['coverage']['agents'][a]['cells']:,})", lw=1.2)
    ax.plot(n, cov["joint"], label="joint", color="black", lw=2)
    if "independent" in cov:
        ax.plot(n, cov["independent"], label="joint, agents shuffled independently", color="black", ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("transitions (seeded random order)")
    ax.set_ylabel("occupied action cells")
    ax.set_title(f"coverage curves ({d['coverage']['bins']} bins per action component)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["coverage"] = _png(fig)
    plt.close(fig)
    return out


def _types_plot(plt, t: dict[str, Any]) -> str:
    """Episodes per recovered type of each agent, split by stored label; the team test against its null."""
    test = t["test"]
    fig, axes = plt.subplots(1, 2 if test else 1, figsize=(11 if test else 6, 3.6), squeeze=False)
    ax = axes[0, 0]
    bars = [(a, k) for a, v in t["agents"].items() for k in range(v["types"])]
    labels = sorted({lab for v in t["agents"].values() for c in v.get("labels_by_type", []) for lab in c})
    bottom = [0] * len(bars)
    for lab in labels or [None]:
        heights = [
            t["agents"][a]["labels_by_type"][k].get(lab, 0) if lab is not None else t["agents"][a]["sizes"][k]
            for a, k in bars
        ]
        ax.bar(range(len(bars)), heights, bottom=bottom, label=lab)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(bars)), [f"{a}\ntype {k}" for a, k in bars], fontsize=7)
    ax.set_ylabel("episodes")
    ax.set_title("recovered behaviour types" + (" (colours: stored labels)" if labels else ""))
    if labels:
        ax.legend(fontsize=8)
    if test:
        ax = axes[0, 1]
        ax.hist(test["null"], bins=30, color="#8c8c8c", label="agents' types shuffled apart (null)")
        ax.axvline(test["statistic"], color="#c44e52", lw=2, label=f"data (p = {test['p']:.3g})")
        ax.set_xlabel("multi-information of the agents' types (nats)")
        ax.set_ylabel("shuffles")
        ax.set_title("do the agents' types switch together?")
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def _used(d: dict[str, Any], name: str, requested: Any) -> Any:
    """What a statistic actually used for a setting (fewer groups or a smaller pool on small data)."""
    dep = d["dependence"]
    if name in ("groups", "group_size", "pool", "permutations") and name in dep:
        return dep[name]
    if name in ("groups", "group_size", "pool", "permutations"):
        return "not computed"
    return requested


def render_html(d: dict[str, Any]) -> str:
    """The report page for a :func:`~madata.diagnostics.diagnose` result ``d`` (nothing else is read)."""
    plots = _plots(d)
    q, mix, dep, cov = d["quality"], d["behaviour_mix"], d["dependence"], d["coverage"]
    parts = [
        f"<h1>madata diagnose: {html.escape(d['dataset'])}</h1>",
        f"<p>{html.escape(d.get('description') or '')}</p>",
        *[f"<p class='warning'><b>Warning:</b> {html.escape(w)}</p>" for w in d.get("warnings", [])],
        _table(
            ["dataset", "value"],
            [
                ["env", d["env"].get("id", "?")],
                ["agents", ", ".join(d["agents"])],
                ["episodes", d["num_episodes"]],
                ["transitions", d["num_transitions"]],
            ],
        ),
    ]

    parts.append("<h2>Quality</h2>")
    rows = []
    for name, key in (("return", "returns"), ("normalized score", "normalized_scores"), ("length", "lengths")):
        s = q.get(key)
        rows.append([name] + ([s["mean"], s["std"], s["min"], s["max"]] if s else [None] * 4))
    parts.append(_table(["", "mean", "std", "min", "max"], rows))
    ends = q["ends"]
    ref = q["reference_scores"]
    parts.append(
        f"<p>Ends: {ends['terminated']} terminated, {ends['truncated']} truncated. Normalized score = "
        f"100 (return - min) / (max - min) with reference scores "
        f"{'min ' + _fmt(ref['min']) + ', max ' + _fmt(ref['max']) if ref else 'unknown for this env'}.</p>"
    )
    parts.append(f'<img alt="returns" src="{plots["returns"]}">')

    parts.append("<h2>Behaviour mix</h2>")
    if mix["combinations"]:
        parts.append(
            _table(
                ["combination", "matched", "episodes", "share", "mean return", "std", "normalized mean"],
                [
                    [
                        c["label"],
                        "yes" if c["matched"] else "no",
                        c["episodes"],
                        c["share"],
                        c["return_mean"],
                        c["return_std"],
                        c["normalized_mean"],
                    ]
                    for c in mix["combinations"]
                ],
            )
        )
    gap = (
        f"<b>{_fmt(mix['gap'])}</b> (standard error {_fmt(mix['gap_se'])})"
        + (f", {_fmt(mix['gap_normalized'])} normalized points" if mix["gap_normalized"] is not None else "")
        if mix["gap"] is not None
        else f"not defined: {html.escape(mix['gap_note'] or '')}"
    )
    parts.append(
        f"<p>Miscoordination gap (mean return of matched-label combinations minus mismatched ones, each "
        f"combination weighted equally): {gap}. Mismatched share of labelled episodes: "
        f"{_fmt(mix['mismatched_share'])}; unlabelled episodes: {mix['unlabelled_episodes']}.</p>"
    )

    parts.append("<h2>Dependence between agents' actions given the state</h2>")
    if "pairs" in dep:
        parts.append(
            _table(
                ["agents", "local residual RV", "null mean", "null std", "excess", "z", "p"],
                [
                    [
                        " / ".join(p["agents"]),
                        p["statistic"],
                        p["null_mean"],
                        p["null_std"],
                        p["excess"],
                        p["z"],
                        p["p_value"],
                    ]
                    for p in dep["pairs"]
                ],
            )
        )
        parts.append(f'<img alt="dependence" src="{plots["dependence"]}">')
        parts.append(
            f"<p class='note'>Conditioning on the {html.escape(dep['conditioning'])}. {dep['groups']} disjoint groups "
            f"of {dep['group_size']} transitions with similar states (one per episode; mean distance to the group's "
            f"seed {dep['group_radius']:.2f} standard deviations) from a pool of {dep['pool']}, seed {dep['seed']}; "
            f"actions regressed within each group on {dep['components']} principal components; {dep['permutations']} "
            "shuffles of one agent's actions within every group give the null. Excess (about the squared correlation "
            "of what the state leaves unexplained) near 0: no dependence "
            "beyond the state (independently acting agents, or a joint policy with independent per-agent noise). "
            "Clearly positive: the agents share randomness or information the state does not hold. Smooth but "
            "sharply curved behaviour policies leave up to about 0.02 by themselves (MuJoCo SAC policies, measured).</p>"
        )
    else:
        parts.append(f"<p>Not computed: {html.escape(dep.get('skipped', ''))}.</p>")

    parts.append("<h2>Joint versus per-agent action coverage</h2>")
    rows = [[a, c["cells"], c["occupied"], c["fraction"]] for a, c in cov["agents"].items()]
    rows.append(["joint", cov["joint"]["cells"], cov["joint"]["occupied"], cov["joint"]["fraction"]])
    rows.append(["joint, agents shuffled independently", cov["joint"]["cells"], cov["independent"], None])
    parts.append(_table(["", "cells", "occupied", "fraction"], rows))
    parts.append(
        f"<p>Joint / independent ratio <b>{_fmt(cov['ratio'])}</b> (below 1: joint actions more concentrated "
        f"than independent agents with the same per-agent actions would give); saturation "
        f"{_fmt(cov['saturation'])} (near 1: too many cells for the data, use fewer bins). OG-MARL's SACo (distinct "
        f"(state, joint action) pairs per transition): {_fmt(cov.get('saco'))}.</p>"
    )
    parts.append(f'<img alt="coverage" src="{plots["coverage"]}">')

    parts += _types_section(d.get("types"), plots.get("types"))

    sa = d.get("state_action_coverage")
    parts.append("<h2>Joint actions at similar states</h2>")
    if sa and "skipped" not in sa:
        rows = [
            [name, v["groups"], v["mean"], v["p10"], v["independent_mean"], v["ratio"]]
            for name, v in (("anywhere", sa["all_states"]), ("top-return states", sa["top_return_states"]))
            if v
        ]
        parts.append(_table(["groups seeded", "groups", "coverage", "10th percentile", "independent", "ratio"], rows))
        parts.append(
            f"<p class='note'>Groups of {sa['group_size']} transitions with similar states (one per episode, from a "
            f"pool of {sa['pool']}, seed {sa['seed']}), seeded anywhere or only at states of the top "
            f"{sa['top']:.0%} of episodes by return. Coverage: the share of the combinations of the agents' action "
            f"cells ({sa['bins']} bins per component) that could appear in a group and do; independent: the same "
            f"with each agent's actions shuffled within every group ({sa['shuffles']} times). A ratio near 1: joint "
            "actions at those states are as varied as independently acting agents make them; well below 1: the "
            "agents act in fixed combinations there, so few joint actions are covered.</p>"
        )
    else:
        parts.append(f"<p>Not computed: {html.escape((sa or {}).get('skipped', 'not in this diagnosis'))}.</p>")

    parts.append("<h2>Settings</h2>")
    parts.append(
        _table(
            ["setting", "requested", "used"],
            [[k, v, _used(d, k, v)] for k, v in d["settings"].items()]
            + [[f"seconds: {k}", None, v] for k, v in d["timing_s"].items()],
        )
    )
    parts.append(
        "<p class='note'>The same numbers: <code>madata diagnose DATASET --json</code>; they are also "
        "embedded in this page (script element <code>#diagnosis</code>). Each section explains its numbers; "
        f"the full definitions are in docs/diagnostics.md of madata {html.escape(d['versions']['madata'])}.</p>"
    )
    data = json.dumps(d, default=str).replace("</", "<\\/")
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>madata diagnose: "
        f"{html.escape(Path(d['dataset']).name)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f"<script type='application/json' id='diagnosis'>{data}</script></body></html>\n"
    )


def _types_section(t: dict[str, Any] | None, plot: str | None) -> list[str]:
    """Recovered behaviour types per agent, the team-versus-agent test and the verdict."""
    out = ["<h2>Behaviour types recovered without labels</h2>"]
    if not t or "skipped" in t:
        return out + [f"<p>Not computed: {html.escape((t or {}).get('skipped', 'not in this diagnosis'))}.</p>"]
    rows = []
    for a, v in t["agents"].items():
        gains = "; ".join(f"{g['types']}: {g['heldout_gain_per_episode']:+.3f} (z {g['z']:.1f})" for g in v["tried"])
        by_type = "; ".join(
            f"type {k}: " + ", ".join(f"{lab} {n}" for lab, n in c.items())
            for k, c in enumerate(v.get("labels_by_type", []))
        )
        rows.append([a, v["types"], "/".join(map(str, v["sizes"])), gains or "-", v.get("ari_vs_labels"), by_type])
    out.append(
        _table(
            [
                "agent",
                "types",
                "episodes per type",
                "held-out gain per episode (nats), K: gain (z)",
                "ARI vs labels",
                "stored labels per type",
            ],
            rows,
        )
    )
    test = t["test"]
    if test:
        out.append(
            f"<p>Team test over {html.escape(', '.join(test['agents']))}: multi-information of their types "
            f"<b>{_fmt(test['statistic'])}</b> nats, null mean {_fmt(test['null_mean'])}, std {_fmt(test['null_std'])} "
            f"(each agent's types shuffled across episodes, {test['permutations']} times), p = <b>{_fmt(test['p'])}</b>.</p>"
        )
    if t.get("team") and t["team"].get("ari_vs_labels"):
        aris = ", ".join(f"{html.escape(a)} {_fmt(x)}" for a, x in t["team"]["ari_vs_labels"].items())
        out.append(f"<p>Team types ({t['team']['types']}) against each agent's stored labels, ARI: {aris}.</p>")
    out.append(f"<p>Verdict: <b>{html.escape(t['verdict'])}</b>.</p>")
    if plot:
        out.append(f'<img alt="types" src="{plot}">')
    st = t["settings"]
    out.append(
        f"<p class='note'>Each agent's episodes are fit to a mixture of behaviour types, each a nearest-neighbour "
        f"model of the agent's action given the state ({st['steps']} steps per episode, the first {st['early']} "
        f"among them, {st['neighbours']} neighbours from other episodes; seed {st['seed']}). A type is kept when it "
        "raises the log-likelihood of held-out steps by more than 3 standard errors. p at most 0.01: the agents' "
        "types switch together between episodes (a coordinated, team-level mixture). Several agents with types and "
        "a large p: they vary independently (the uncoordinated data CAST-BCQ is for). ARI: adjusted Rand index of "
        "the recovered types against the stored labels (1 = the same grouping of episodes, 0 = chance). An agent "
        "whose behaviours act alike where the teams' states overlap shows one type.</p>"
    )
    return out


def write_report(d: dict[str, Any], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write :func:`render_html` of ``d`` to ``path`` (atomically; an existing file only with ``overwrite``)."""
    return write_bytes_atomic(path, render_html(d).encode("utf-8"), overwrite=overwrite)
