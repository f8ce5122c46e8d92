"""Studies: grids of cross-validation experiments with resume, and their tables and plots.

- :mod:`.grid`: :class:`Cell` (a recipe plus the overrides of its axes) and :func:`run_grid` (one
  ``run_experiment`` per cell into its own directory; ``resume`` keeps finished cells).
- :mod:`.tables`: results -> one row per cell -> mean ± std over seeds -> Markdown, CSV and plots.
- :mod:`.study`: :class:`Study`, :class:`StudyOptions` and :func:`run_study` (data, quick mode, summary).
- :mod:`.dfme`: the DFME model-family, key-frame sampling and imbalance studies.
- :mod:`.script`: the argument parser shared by ``recipes/dfme_*.py``.

This package may import :mod:`microexp.engine`, never :mod:`microexp.cli`.
"""

from microexp.studies.grid import Cell, CellResult, run_grid
from microexp.studies.study import Report, Study, StudyOptions, run_study

__all__ = ["Cell", "CellResult", "Report", "Study", "StudyOptions", "run_grid", "run_study"]
