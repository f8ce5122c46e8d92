"""Moved to :mod:`microexp.sweep.report`.

This alias keeps ``from microexp.engine.sweep_report import ...`` working for one release.
"""

from microexp.sweep.report import (
    IMBALANCE_KEYS, SAMPLING_KEY, BestTrial, best_trials, heatmap_table, plot_heatmap, plot_sweep, trials_frame,
    write_best, write_trials_csv,
)

__all__ = [
    "BestTrial", "IMBALANCE_KEYS", "SAMPLING_KEY", "best_trials", "heatmap_table", "plot_heatmap",
    "plot_sweep", "trials_frame", "write_best", "write_trials_csv",
]
