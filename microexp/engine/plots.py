"""Plots of a run: pooled confusion matrix, per-class recall, training curves per fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def plot_run(out: Path, metrics: dict[str, Any]) -> list[Path]:
    """Write ``confusion_matrix.png``, ``per_class_recall.png`` and ``training_curves.png`` into ``out``."""
    written = [plot_confusion(out / "confusion_matrix.png", metrics), plot_recall(out / "per_class_recall.png", metrics)]
    logs = sorted(out.glob("fold_*/log.csv"))
    if logs:
        written.append(plot_curves(out / "training_curves.png", [pd.read_csv(p) for p in logs]))
    return written


def plot_confusion(path: Path, metrics: dict[str, Any]) -> Path:
    matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
    names = metrics["classes"]
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 0.8 + 0.8 * len(names)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    pooled = metrics["pooled"]
    ax.set_title(f"pooled confusion (UF1 {pooled['uf1']:.3f}, UAR {pooled['uar']:.3f})", fontsize=9)
    return _save(fig, path)


def plot_recall(path: Path, metrics: dict[str, Any]) -> Path:
    names = metrics["classes"]
    recall = [metrics["per_class"][n]["recall"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(names), 3.2))
    ax.bar(names, recall, color="tab:blue")
    ax.axhline(1.0 / len(names), color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall (pooled)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(path: Path, logs: list[pd.DataFrame]) -> Path:
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for log in logs:
        fold = int(log["fold"].iloc[0])
        loss_ax.plot(log["epoch"] + 1, log["train_loss"], label=f"fold {fold}")
        column = "val_uf1" if "val_uf1" in log else "train_acc"
        score_ax.plot(log["epoch"] + 1, log[column], label=f"fold {fold}")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylabel("validation UF1 (training subjects)" if "val_uf1" in logs[0] else "training accuracy")
    if len(logs) <= 10:
        score_ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
