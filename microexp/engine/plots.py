"""Plots of a run: pooled confusion matrix, per-class recall, training (and validation) curves per fold.

Every plot is titled with what produced it (run folder, model, input, protocol, read from
``RUN/config.yaml`` when present) and written atomically through :func:`microexp.fileio.atomic_path`,
so a kill never leaves a truncated PNG. Figures are built with matplotlib's object API (no pyplot, no
global backend switch), so plotting never needs a display and leaves no figure open.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from microexp.fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["confusion_figure", "curves_figure", "describe_run", "plot_confusion", "plot_curves", "plot_recall",
           "plot_run", "read_logs", "recall_figure"]

#: runs with at most this many folds get one legend entry per fold
MAX_FOLD_LEGEND = 10
DPI = 110


def plot_run(out: Path, metrics: dict[str, Any]) -> list[Path]:
    """Write ``confusion_matrix.png``, ``per_class_recall.png`` and ``training_curves.png`` into ``out``.

    Args:
        out: the run directory (``config.yaml`` and ``fold_XX/log.csv`` are read from it when present).
        metrics: the run's ``metrics.json`` content (``classes``, ``confusion_matrix``, ``pooled``, ``per_class``).

    Returns:
        The paths written (``training_curves.png`` only when some fold has a readable ``log.csv``).
    """
    out = Path(out)
    title = describe_run(out, metrics)
    written = []
    if "confusion_matrix" in metrics:  # (an AU-only run has no emotion predictions)
        written = [plot_confusion(out / "confusion_matrix.png", metrics, title=title),
                   plot_recall(out / "per_class_recall.png", metrics, title=title)]
    logs = read_logs(out)
    if logs:
        written.append(plot_curves(out / "training_curves.png", logs, title=title))
    return written


def describe_run(out: Path, metrics: Mapping[str, Any] | None = None) -> str:
    """One line naming the run: folder, model, input and protocol (from ``out/config.yaml`` when readable).

    For example ``demo/run · tsm-tiny_rgb-8f_synth_5fold · tsm_tiny · 8 frames onset_apex, 112 px · kfold, 5 folds,
    val 25% · 36 test clips``. The recipe's name appears when ``config.yaml`` starts with a ``# recipe: PATH``
    comment line (the resolved config does not store the recipe otherwise).
    """
    config, recipe = _read_config(Path(out) / "config.yaml")
    data, model, cv = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("data", "model", "cv"))
    resolved = Path(out).resolve()
    parts = ["/".join(resolved.parts[-2:]) if len(resolved.parts) > 2 else str(resolved)]
    if recipe:
        parts.append(Path(recipe).stem)
    if model.get("name"):
        parts.append(str(model["name"]))
    if data:
        frames = f"{data['num_frames']} frames" if "num_frames" in data else "frames"
        sampling = f" {data['sampling']}" if data.get("sampling") else ""
        size = f", {data['size']} px" if data.get("size") else ""
        parts.append(f"{frames}{sampling}{size}")
    protocol = cv.get("protocol") or (metrics or {}).get("protocol")
    if protocol:
        text = str(protocol)
        if protocol == "kfold" and cv.get("folds"):
            text += f", {cv['folds']} folds"
        elif metrics and metrics.get("num_folds"):
            text += f", {metrics['num_folds']} folds"
        if cv.get("val_fraction"):
            text += f", val {float(cv['val_fraction']):.0%}"
        parts.append(text)
    if metrics and metrics.get("num_samples"):
        parts.append(f"{metrics['num_samples']} test clips")
    return " · ".join(parts)


def read_logs(out: Path) -> list[pd.DataFrame]:
    """Each fold's ``log.csv`` (``fold_XX`` folders, in fold order) with a ``fold`` column; unreadable ones skipped."""
    logs = []
    for path in sorted(Path(out).glob("fold_*/log.csv")):
        try:
            log = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            logger.warning("%s: not plotted (%s)", path, " ".join(str(exc).split()))
            continue
        if log.empty or not {"epoch", "train_loss"} <= set(log.columns):
            logger.warning("%s: not plotted (no epoch rows)", path)
            continue
        log = log.assign(fold=_fold_number(path.parent.name))
        logs.append(log)
    return logs


def plot_confusion(path: Path, metrics: dict[str, Any], *, title: str | None = None) -> Path:
    """Write :func:`confusion_figure` to ``path`` atomically."""
    return _save(confusion_figure(metrics, title=title), path)


def plot_recall(path: Path, metrics: dict[str, Any], *, title: str | None = None) -> Path:
    """Write :func:`recall_figure` to ``path`` atomically."""
    return _save(recall_figure(metrics, title=title), path)


def plot_curves(path: Path, logs: Sequence[pd.DataFrame], *, title: str | None = None) -> Path:
    """Write :func:`curves_figure` to ``path`` atomically."""
    return _save(curves_figure(logs, title=title), path)


def confusion_figure(metrics: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """The pooled confusion matrix: counts, shaded by each true class's share; classes in label order."""
    matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
    names = metrics["classes"]
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(3.5, 1.2 + 0.8 * len(names))
    fig = Figure(figsize=(side + 0.6, side))
    ax = fig.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
    support = matrix.sum(axis=1).astype(int)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), [f"{n} (n={s})" for n, s in zip(names, support)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    pooled = metrics["pooled"]
    ax.set_title(f"pooled confusion: UF1 {pooled['uf1']:.3f}, UAR {pooled['uar']:.3f}", fontsize=9)
    return _finish(fig, title)


def recall_figure(metrics: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Pooled recall per class with its value on each bar and the class's test support ``n`` under it."""
    names = metrics["classes"]
    support = np.asarray(metrics["confusion_matrix"], dtype=int).sum(axis=1)
    recall = [metrics["per_class"][n]["recall"] for n in names]
    heights = [0.0 if r is None else float(r) for r in recall]
    fig = Figure(figsize=(max(4.5, 1.5 + 0.8 * len(names)), 3.6))
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), heights, color="tab:blue")
    ax.bar_label(bars, labels=["n/a" if r is None else f"{r:.2f}" for r in recall], padding=2, fontsize=8)
    ax.axhline(1.0 / len(names), color="grey", linestyle="--", linewidth=1, label=f"chance (1/{len(names)})")
    ax.set_xticks(range(len(names)), [f"{n}\nn={s}" for n, s in zip(names, support)], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("recall (pooled over folds)")
    pooled = metrics["pooled"]
    ax.set_title(f"per-class recall: UAR {pooled['uar']:.3f}, UF1 {pooled['uf1']:.3f} (n = test clips)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return _finish(fig, title)


def curves_figure(logs: Sequence[pd.DataFrame], *, title: str | None = None) -> Figure:
    """Loss per epoch (training solid, validation dashed) and validation UF1 (or training accuracy) per fold."""
    has_val = any("val_loss" in log and log["val_loss"].notna().any() for log in logs)
    fig = Figure(figsize=(10, 3.8))
    loss_ax, score_ax = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(logs))]
    # many folds (LOSO): thin, faint fold lines under the bold mean
    fold_style = {"linewidth": 1.2} if len(logs) <= MAX_FOLD_LEGEND else {"linewidth": 0.7, "alpha": 0.5}
    for log, color in zip(logs, colors):
        epoch = log["epoch"] + 1
        label = f"fold {_fold_label(log)}"
        loss_ax.plot(epoch, log["train_loss"], color=color, label=label, **fold_style)
        if has_val and "val_loss" in log:
            loss_ax.plot(epoch, log["val_loss"], color=color, linestyle="--", **fold_style)
        if has_val and "val_uf1" in log:
            score_ax.plot(epoch, log["val_uf1"], color=color, marker=".", label=label, **fold_style)
            if "train_acc" in log:
                score_ax.plot(epoch, log["train_acc"], color=color, linestyle=":", linewidth=0.8, alpha=0.5)
        elif "train_acc" in log:
            score_ax.plot(epoch, log["train_acc"], color=color, label=label, **fold_style)
    if len(logs) > 1:
        _plot_mean(loss_ax, logs, "train_loss", "mean (train)")
        if has_val:
            _plot_mean(loss_ax, logs, "val_loss", "mean (val)", linestyle="--")
            _plot_mean(score_ax, logs, "val_uf1", "mean val UF1")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("loss: training (solid)" + (", validation (dashed)" if has_val else ""), fontsize=9)
    score_ax.set_xlabel("epoch")
    if has_val:
        score_ax.set_ylabel("UF1 / accuracy")
        score_ax.set_title("validation UF1 (held-out training subjects); training accuracy dotted", fontsize=9)
    else:
        score_ax.set_ylabel("training accuracy")
        score_ax.set_title("training accuracy (no validation split: cv.val_fraction = 0)", fontsize=9)
    score_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(logs) <= MAX_FOLD_LEGEND:
        score_ax.legend(fontsize=7, ncol=2, loc="best")
    return _finish(fig, title)


def _plot_mean(ax: Any, logs: Sequence[pd.DataFrame], column: str, label: str, **style: Any) -> None:
    frames = [log.set_index("epoch")[column] for log in logs if column in log]
    if not frames:
        return
    mean = pd.concat(frames, axis=1).mean(axis=1, skipna=True)
    ax.plot(mean.index + 1, mean.to_numpy(), color="black", linewidth=2, label=label, **style)


def _fold_number(name: str) -> int | str:
    suffix = name.removeprefix("fold_")
    return int(suffix) if suffix.isdigit() else suffix


def _fold_label(log: pd.DataFrame) -> str:
    return str(log["fold"].iloc[0])


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """``config.yaml`` as a plain mapping and the recipe named by a leading ``# recipe: PATH`` comment.

    ``({}, None)`` when the file is absent or unreadable: titles are best-effort, never a reason to fail.
    """
    try:
        text = path.read_text(encoding="utf-8")
        loaded = yaml.safe_load(text)
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        logger.warning("%s: not read for the plot titles (%s)", path, " ".join(str(exc).split()))
        return {}, None
    first = text.split("\n", 1)[0]
    recipe = first.removeprefix("# recipe:").strip() if first.startswith("# recipe:") else None
    return (loaded if isinstance(loaded, dict) else {}), (recipe or None)


def _finish(fig: Figure, title: str | None) -> Figure:
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, atomically (the temporary file keeps the ``.png`` suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path
