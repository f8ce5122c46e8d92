"""Study tables and plots: cell results -> one row per cell -> mean ± std over seeds -> Markdown, CSV, PNG.

Pure functions over pandas frames; the only I/O is writing the files named by the caller. Plots are
built on :class:`matplotlib.figure.Figure` (no pyplot, no global backend switch), so drawing a study's
plots leaves the caller's matplotlib state alone and no figure stays registered after it is saved.

Column names of :func:`results_frame` (one row per cell): the cell's axes, ``cell``, ``seed``,
``pooled_acc|uf1|uar`` (all folds' predictions concatenated, then one metric), ``fold_mean_*`` and
``fold_std_*`` (per-fold metrics, std with ddof 0; ``*_au_f1``, the mean AU F1, for runs with an AU head),
``recall_<class>`` (pooled per-class recall, NaN
when the class has no test clip), ``num_params``, ``train_seconds``, ``wall_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from microexp.fileio import atomic_path, write_text
from microexp.studies.grid import CellResult

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn, not with the tables
    from matplotlib.figure import Figure

__all__ = [
    "METRICS",
    "aggregate_over_seeds",
    "bar_chart",
    "format_count",
    "format_duration",
    "format_mean_std",
    "heatmap",
    "markdown_table",
    "metric_columns",
    "recall_columns",
    "results_frame",
    "scatter_chart",
    "write_csv",
    "write_table",
]

METRICS = ("acc", "uf1", "uar")


def results_frame(results: Sequence[CellResult]) -> pd.DataFrame:
    """One row per cell (columns in the module docstring), in the cells' order."""
    rows = []
    for result in results:
        metrics = result.metrics
        row: dict[str, Any] = {**result.cell.axes, "cell": result.cell.name, "seed": result.cell.seed}
        for k in METRICS:
            row[f"pooled_{k}"] = metrics["pooled"][k]
        for k in METRICS:
            row[f"fold_mean_{k}"] = metrics["fold_mean"][k]
            row[f"fold_std_{k}"] = metrics["fold_std"][k]
        for name, values in metrics.get("per_class", {}).items():
            recall = values.get("recall")
            row[f"recall_{name}"] = float("nan") if recall is None else float(recall)
        aus = metrics.get("aus")
        if aus is not None:  # runs with an AU head: mean AU F1, pooled and fold mean
            row["pooled_au_f1"] = _nan(aus["pooled"]["mean_f1"])
            row["fold_mean_au_f1"] = _nan(aus["fold_mean"]["mean_f1"])
            row["fold_std_au_f1"] = _nan(aus["fold_std"]["mean_f1"])
        row["num_params"] = result.num_params
        row["train_seconds"] = result.train_seconds
        row["wall_seconds"] = float("nan") if result.wall_seconds is None else result.wall_seconds
        rows.append(row)
    return pd.DataFrame(rows)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def recall_columns(frame: pd.DataFrame) -> list[str]:
    """The ``recall_<class>`` columns of a results frame, in class order."""
    return [c for c in frame.columns if c.startswith("recall_")]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Every numeric result column that is averaged over seeds."""
    fixed = [f"{p}_{k}" for p in ("pooled", "fold_mean", "fold_std") for k in (*METRICS, "au_f1")]
    return [c for c in fixed if c in frame] + recall_columns(frame) + ["num_params", "train_seconds", "wall_seconds"]


def aggregate_over_seeds(frame: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Mean and spread over seeds of every metric, one row per combination of ``axes``.

    Returns:
        The ``axes`` columns (first-appearance order of the groups), ``seeds`` (how many), ``seed_list``,
        and for every column of :func:`metric_columns` a ``<col>_mean`` and a ``<col>_std`` (sample
        standard deviation over seeds, ddof 1; NaN with a single seed).
    """
    if frame.empty:
        raise ValueError("no results to aggregate")
    missing = [a for a in axes if a not in frame]
    if missing:
        raise ValueError(f"axes {missing} are not columns of the results ({list(frame.columns)})")
    values = metric_columns(frame)
    rows = []
    for key, group in frame.groupby(list(axes), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(axes, key))
        row["seeds"] = len(group)
        row["seed_list"] = " ".join(str(s) for s in group["seed"])
        for column in values:
            series = group[column].astype(float)
            row[f"{column}_mean"] = series.mean()
            row[f"{column}_std"] = series.std(ddof=1) if series.notna().sum() > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_std(mean: float, std: float | None = None, *, digits: int = 3) -> str:
    """``0.812 ± 0.031``; ``0.812`` without a spread; ``–`` for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``–`` when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    from microexp.engine.experiment import format_seconds  # the run's ETA lines use the same form

    seconds = float(seconds)
    if 10 <= seconds < 60:  # tables: whole seconds read better
        return f"{seconds:.0f} s"
    return format_seconds(seconds)


def format_count(value: float) -> str:
    """Parameter counts: ``0.32M``, ``12.5k``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


Column = tuple[str, Callable[[Mapping[str, Any]], str]]


def markdown_table(frame: pd.DataFrame, columns: Sequence[Column], *, align: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table: one row per frame row, one column per ``(header, row -> text)``.

    Args:
        align: per column ``"l"`` or ``"r"`` (default: left).
    """
    align = list(align or ["l"] * len(columns))
    if len(align) != len(columns):
        raise ValueError(f"align has {len(align)} entries for {len(columns)} columns")
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    for row in frame.to_dict("records"):
        cells = [str(render(row)).replace("|", "\\|").replace("\n", " ") for _, render in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, markdown: str, out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (full-precision numbers) and ``<stem>.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    write_csv(frame, csv_path)
    write_text(md_path, markdown)
    return csv_path, md_path


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """``frame.to_csv(path, index=False)``, atomically (see :mod:`microexp.fileio`)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def _save_figure(fig: Figure, path: Path, **kwargs: Any) -> None:
    with atomic_path(path) as tmp:  # the temporary name keeps the .png suffix, so the format is kept
        fig.savefig(tmp, **kwargs)


def bar_chart(
    path: str | Path,
    categories: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    *,
    ylabel: str,
    title: str,
    chance: float | None = None,
) -> Path:
    """Grouped bars: one group per category, one bar per series ``label -> (values, errors)``.

    NaN values leave a gap; ``errors`` (e.g. std over seeds) are drawn as error bars (none when all are NaN,
    as with one seed); ``chance`` as a dashed line. The legend sits right of the axes so it hides no bar.
    """
    from matplotlib.figure import Figure

    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(categories))
    fig = Figure(figsize=(max(5.0, 0.9 * len(categories) + 2), 3.6))
    ax = fig.subplots()
    for i, (label, (values, errors)) in enumerate(series.items()):
        err = None if errors is None else np.asarray(errors, dtype=float)
        err = None if err is None or np.isnan(err).all() else np.nan_to_num(err)
        ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(values, dtype=float), width, yerr=err, capsize=2,
               label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, list(categories), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path, dpi=110, bbox_inches="tight")
    return path


def heatmap(
    path: str | Path,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
) -> Path:
    """A 0..1 heat map with the values written in the cells (NaN shown as ``–``)."""
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(1.6 + 0.85 * len(col_labels), 1.0 + 0.42 * len(row_labels)))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if not np.isnan(value) and value > 0.6 else "white")
    ax.set_xticks(range(len(col_labels)), list(col_labels), rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path, dpi=110)
    return path


def scatter_chart(
    path: str | Path,
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    chance: float | None = None,
    log_x: bool = True,
) -> Path:
    """Labelled points ``(x, y)`` (e.g. a score against parameters), y in 0..1; NaN points are left out.

    ``log_x`` draws x on a log scale (points with x <= 0 are left out there); ``chance`` is a dashed line.
    """
    from matplotlib.figure import Figure

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(xs) == len(ys) == len(labels):
        raise ValueError(f"scatter_chart: {len(xs)} x, {len(ys)} y and {len(labels)} labels")
    keep = ~(np.isnan(xs) | np.isnan(ys)) & ((xs > 0) if log_x else True)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ax.scatter(xs[keep], ys[keep], s=18)
    ax.margins(x=0.25)
    for xi, yi, label in zip(xs[keep], ys[keep], np.asarray(labels, dtype=object)[keep]):
        ax.annotate(str(label), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
    if log_x:
        ax.set_xscale("log")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    _save_figure(fig, path, dpi=110)
    return path
