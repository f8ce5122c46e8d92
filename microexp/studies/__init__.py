"""Studies: grids of cross-validation experiments with resume, and their tables and plots.

- :mod:`.grid`: :class:`Cell` (a recipe plus the overrides of its axes) and :func:`run_grid` (one
  ``run_experiment`` per cell into its own directory; ``resume`` keeps finished cells).
- :mod:`.tables`: results -> one row per cell -> mean ± std over seeds -> Markdown, CSV and plots.
- :mod:`.options`: :class:`StudyOptions` and the defaults (synthetic data, ``--quick`` overrides).
- :mod:`.study`: :class:`Study` and :func:`run_study` (data, quick mode, summary).
- :mod:`.dfme`: the DFME model-family, key-frame sampling and imbalance studies.

The command line is ``microexp study NAME`` (:mod:`microexp.cli.study`); this package parses no
arguments and configures no logging. It may import :mod:`microexp.engine`, never :mod:`microexp.cli`.
The names below are imported on first use (PEP 562), so the CLI reads :mod:`.options` without pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cell": "microexp.studies.grid",
    "CellResult": "microexp.studies.grid",
    "run_grid": "microexp.studies.grid",
    "Report": "microexp.studies.study",
    "Study": "microexp.studies.study",
    "run_study": "microexp.studies.study",
    "StudyOptions": "microexp.studies.options",
}

__all__ = ["Cell", "CellResult", "Report", "Study", "StudyOptions", "run_grid", "run_study"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'microexp.studies' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
