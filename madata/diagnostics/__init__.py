"""Coordination-quality diagnostics: how good and how uncoordinated a dataset is, before training.

    from madata.diagnostics import diagnose, write_report
    d = diagnose("hc.zarr", seed=0)          # JSON-ready dict
    write_report(d, "hc-report.html")        # one self-contained page, plots embedded

Quality (:mod:`~madata.diagnostics.quality`): returns, normalized scores, lengths,
ends, the behaviour-mix table and the miscoordination gap (needs behaviour labels).
Coordination from the data alone, labels or not: the dependence between agents' actions
given the state against its shuffled null (:mod:`~madata.diagnostics.dependence`), and
joint versus per-agent action coverage (:mod:`~madata.diagnostics.coverage`).
docs/diagnostics.md defines every number and how to read it.
"""

from madata.diagnostics.core import DEFAULTS, diagnose, load_inputs
from madata.diagnostics.coverage import action_coverage
from madata.diagnostics.dependence import action_dependence
from madata.diagnostics.quality import behaviour_mix, quality
from madata.diagnostics.report import render_html, write_report

__all__ = [
    "DEFAULTS", "action_coverage", "action_dependence", "behaviour_mix", "diagnose", "load_inputs", "quality",
    "render_html", "write_report",
]  # fmt: skip
