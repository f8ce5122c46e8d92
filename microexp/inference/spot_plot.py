"""The plot of a spotted long video: its motion curve, the threshold and the intervals found (and the true
ones, when known), written atomically. matplotlib's object API: no display, no global backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from microexp.fileio import atomic_path

__all__ = ["plot_spotting"]

#: at most this many points are drawn; longer curves are reduced to the maximum of each bin (peaks stay visible)
MAX_POINTS = 20000


def plot_spotting(curve_csv: str | Path, intervals: Sequence[dict[str, Any]], out: str | Path, *, title: str = "",
                  truth: Sequence[dict[str, Any]] = ()) -> Path:
    """Write the plot of one video to ``out`` (PNG) and return it.

    Args:
        curve_csv: the ``frame,motion`` file ``microexp spot`` writes.
        intervals: spotted rows (``onset``, ``apex``, ``offset``, optional ``emotion``).
        truth: true intervals (``onset``, ``offset``), drawn under the axis.
    """
    import pandas as pd

    curve = pd.read_csv(curve_csv)
    frames, motion = curve["frame"].to_numpy(), curve["motion"].to_numpy()
    if len(frames) > MAX_POINTS:
        step = int(np.ceil(len(frames) / MAX_POINTS))
        cut = len(frames) // step * step
        frames = frames[:cut:step]
        motion = motion[:cut].reshape(-1, step).max(axis=1)
    fig = Figure(figsize=(12, 3.2), dpi=110)
    ax = fig.add_subplot()
    ax.plot(frames, motion, lw=0.7, color="0.25", label="motion (noise units, against each window's first frame)")
    for i, row in enumerate(intervals):
        ax.axvspan(row["onset"], row["offset"], color="tab:orange", alpha=0.35, lw=0,
                   label="spotted" if i == 0 else None)
        if row.get("emotion"):
            ax.annotate(str(row["emotion"]), (row["apex"], ax.get_ylim()[1]), fontsize=6, ha="center", va="top")
    for i, row in enumerate(truth):
        ax.axvspan(row["onset"], row["offset"], ymax=0.05, color="tab:green", lw=0, label="true" if i == 0 else None)
    ax.set_xlabel("frame")
    ax.set_ylabel("motion")
    ax.set_title(title or Path(curve_csv).stem, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return Path(out)
