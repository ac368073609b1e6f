"""``madata diagnose DATASET [--report FILE.html] [--json]``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

from cli.errors import handle_errors
from cli.format import print_json
from cli.options import Scheduler, Workers
from madata.diagnostics.defaults import DEFAULTS
from madata.errors import OutOfMemoryError

D = SimpleNamespace(**DEFAULTS)  # the defaults shown in --help


def diagnose_command(
    dataset: Annotated[
        str, typer.Argument(help="A madata dataset: a directory or an fsspec URL (s3://...).", show_default=False)
    ],
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing report file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every number as JSON instead of text.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of every subsample and shuffle (recorded).")] = D.seed,
    groups: Annotated[
        int, typer.Option(help="Groups of similar states for the dependence statistic (at most).")
    ] = D.groups,
    group_size: Annotated[int, typer.Option(help="Transitions per group, one per episode.")] = D.group_size,
    pool: Annotated[int, typer.Option(help="Transitions (sampled) the groups are drawn from.")] = D.pool,
    permutations: Annotated[int, typer.Option(help="Shuffled copies making the dependence null.")] = D.permutations,
    bins: Annotated[int, typer.Option(help="Coverage bins per continuous action component.")] = D.bins,
    shuffles: Annotated[int, typer.Option(help="Shuffled copies for the joint-coverage yardstick.")] = D.shuffles,
    out_of_core: Annotated[
        bool | None,
        typer.Option(
            "--out-of-core/--in-memory",
            help="Read the dataset part by part, holding only what the statistics need (same numbers). Default: "
            "out of core with --workers/--scheduler, or when in memory would need over half the free memory.",
            show_default=False,
        ),
    ] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
) -> None:
    """How good and how uncoordinated a dataset is: returns per behaviour combination, the miscoordination
    gap, dependence between agents' actions given the state against its shuffled null, joint versus
    per-agent coverage. Definitions: docs/diagnostics.md."""
    from madata.atomic import check_output
    from madata.diagnostics import diagnose, write_report
    from madata.distributed import check_cluster, dask_client

    if report is not None:  # before minutes of statistics, not after
        check_output(report, overwrite, "report file")
    workers = check_cluster(workers, scheduler)
    on_dask = workers is not None or scheduler is not None
    if on_dask and out_of_core is False:
        raise typer.BadParameter("--in-memory reads in this process: --workers and --scheduler do not apply")
    try:
        with dask_client(workers, scheduler) as client:
            d = diagnose(
                dataset,
                seed=seed,
                groups=groups,
                group_size=group_size,
                pool=pool,
                permutations=permutations,
                bins=bins,
                shuffles=shuffles,
                progress=not as_json,
                out_of_core=out_of_core,
                client=client,
            )
    except MemoryError:  # the allocation that failed is gone again: room to say so
        hint = "" if out_of_core else "; --out-of-core reads it part by part, in a fraction of the memory"
        raise OutOfMemoryError(f"{dataset}: diagnose ran out of memory{hint}; smaller --pool also helps") from None
    if report is not None:
        write_report(d, report, overwrite=overwrite)
    if as_json:
        print_json(d)
        return
    typer.echo(format_diagnosis(d))
    if report is not None:
        typer.echo(f"report    {report}")


def _num(x, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def format_diagnosis(d: dict) -> str:
    """The text form of a diagnosis: one block per statistic."""
    q, mix, dep, cov = d["quality"], d["behaviour_mix"], d["dependence"], d["coverage"]
    r = q["returns"]
    lines = [
        f"dataset   {d['dataset']}  ({d['num_episodes']} episodes, {d['num_transitions']} transitions)",
        *[f"warning   {w}" for w in d.get("warnings", [])],
        f"returns   mean {r['mean']:.2f}  std {r['std']:.2f}  min {r['min']:.2f}  max {r['max']:.2f}",
    ]
    if q["normalized_scores"]:
        n = q["normalized_scores"]
        lines.append(f"normalized mean {n['mean']:.1f}  std {n['std']:.1f}")
    lines.append(
        f"lengths   mean {q['lengths']['mean']:.1f}  ends: {q['ends']['terminated']} terminated, "
        f"{q['ends']['truncated']} truncated"
    )
    if mix["combinations"]:
        lines.append("behaviour mix")
        for c in mix["combinations"]:
            tag = "matched   " if c["matched"] else "mismatched"
            lines.append(
                f"  {c['label']:<44} {tag} {c['share']:6.1%}  return {c['return_mean']:10.2f} (std {c['return_std']:.2f})"
            )
    if mix["gap"] is not None:
        lines.append(
            f"miscoordination gap {mix['gap']:.2f} (standard error {mix['gap_se']:.2f}; matched minus mismatched combinations)"
        )
    else:
        lines.append(f"miscoordination gap: not defined ({mix['gap_note']})")
    if "pairs" in dep:
        lines.append(
            f"dependence given the {dep['conditioning'].split(' (')[0]} (local residual RV; null: one agent's actions shuffled within "
            f"{dep['groups']} groups of {dep['group_size']} similar states, seed {dep['seed']})"
        )
        for p in dep["pairs"]:
            lines.append(
                f"  {' / '.join(p['agents']):<24} {_num(p['statistic'])}  null {_num(p['null_mean'])} "
                f"(std {_num(p['null_std'], '.2g')})  excess {_num(p['excess'], '.4f')}  p {_num(p['p_value'], '.3f')}"
            )
    else:
        lines.append(f"dependence: not computed ({dep['skipped']})")
    agents = "  ".join(f"{a} {c['occupied']}/{c['cells']}" for a, c in cov["agents"].items())
    lines.append(
        f"coverage  ({cov['bins']} bins per component) {agents}  joint {cov['joint']['occupied']}/"
        f"{cov['joint']['cells']}  independent {_num(cov['independent'], '.1f')}  ratio {_num(cov['ratio'], '.3f')}"
        f"  SACo (OG-MARL) {_num(cov.get('saco'), '.4f')}"
    )
    lines += _format_types(d.get("types"))
    sa = d.get("state_action_coverage")
    if sa and "skipped" not in sa:
        parts = [
            f"{name} {v['mean']:.3f} (independent {v['independent_mean']:.3f}, ratio {_num(v['ratio'], '.3f')})"
            for name, v in (("all states", sa["all_states"]), ("top-return states", sa["top_return_states"]))
            if v
        ]
        lines.append(
            f"state-action coverage (share of the agents' action combinations seen together among "
            f"{sa['group_size']} similar states, {sa['bins']} bins per component): " + "; ".join(parts)
        )
    elif sa:
        lines.append(f"state-action coverage: not computed ({sa['skipped']})")
    return "\n".join(lines)


def _format_types(t: dict | None) -> list[str]:
    """Recovered behaviour types and the team-versus-agent test, one line per agent."""
    if not t:
        return []
    if "skipped" in t:
        return [f"behaviour types: not computed ({t['skipped']})"]
    lines = ["behaviour types, label-free (each agent's actions given the state, per episode)"]
    for a, v in t["agents"].items():
        gains = "  ".join(
            f"{g['types']} types: {g['heldout_gain_per_episode']:+.3f} (z {g['z']:.1f})" for g in v["tried"]
        )
        ari = f"  ARI vs labels {v['ari_vs_labels']:.3f}" if "ari_vs_labels" in v else ""
        sizes = "/".join(map(str, v["sizes"]))
        seeded = " (searched from the other agents' types)" if v.get("seeded_from_other_agents") else ""
        lines.append(
            f"  {a:<10} {v['types']} type(s) ({sizes} episodes){ari}  held-out nats/episode: {gains or '-'}{seeded}"
        )
    test = t["test"]
    if test:
        lines.append(
            f"  team test over {', '.join(test['agents'])}: multi-information {test['statistic']:.3f} nats "
            f"(null mean {test['null_mean']:.3f}, std {test['null_std']:.3f}), p {test['p']:.3f} ({test['permutations']} shuffles)"
        )
    if t.get("team") and t["team"].get("ari_vs_labels"):
        aris = ", ".join(f"{a} {x:.3f}" for a, x in t["team"]["ari_vs_labels"].items())
        lines.append(f"  team types ({t['team']['types']}) against each agent's labels: ARI {aris}")
    lines.append(f"  verdict: {t['verdict']}")
    return lines


def register(root: typer.Typer) -> None:
    root.command("diagnose")(handle_errors(diagnose_command))
