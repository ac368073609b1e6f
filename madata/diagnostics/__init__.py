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

from __future__ import annotations

import importlib
from typing import Any

from madata.diagnostics.defaults import DEFAULTS

_LAZY = {
    "diagnose": "core",
    "load_inputs": "core",
    "action_coverage": "coverage",
    "action_dependence": "dependence",
    "behaviour_mix": "quality",
    "quality": "quality",
    "render_html": "report",
    "write_report": "report",
}

__all__ = ["DEFAULTS", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:  # the statistics load numpy-heavy modules only when used
    if name not in _LAZY:
        raise AttributeError(f"module 'madata.diagnostics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"madata.diagnostics.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
