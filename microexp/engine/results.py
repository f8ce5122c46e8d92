"""A run's record files: predictions and metrics (written atomically, read back checked), and log.csv."""

from __future__ import annotations

import contextlib
import csv
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import atomic_open, atomic_path, write_json
from microexp.data.aus import parse_aus
from microexp.metrics import AU_PROB_PREFIX, au_summary, cross_validation_summary
from microexp.splits import Fold, load_folds

logger = logging.getLogger(__name__)

#: what ``microexp evaluate`` writes while some folds are missing (never metrics.json)
PARTIAL_METRICS = "metrics_partial.json"

__all__ = ["read_log", "logged_epochs", "read_run_predictions", "write_csv", "write_log", "write_metrics",
           "write_partial_metrics"]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame.to_csv(path)`` atomically (a kill or a full disk never leaves a partial file)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_metrics(out: Path, predictions: pd.DataFrame, class_names: list[str], *, protocol: str) -> dict[str, Any]:
    """metrics.json (pooled and fold-mean, labelled; strict JSON, atomic) and the plots, from predictions alone.

    A ``dataset`` column naming more than one dataset adds ``per_dataset`` (pooled over each dataset's rows).
    AU columns (``au_prob_<code>``) add ``aus``; predictions without ``pred`` (AU detection alone) give the AU
    metrics only (``task: au``).
    """
    if "pred" not in predictions.columns:
        metrics = {"protocol": protocol, **au_only_summary(predictions)}
        write_json(out / "metrics.json", metrics)
        (out / PARTIAL_METRICS).unlink(missing_ok=True)
        from microexp.engine.plots import plot_run

        plot_run(out, metrics)
        return metrics
    datasets = subjects = None
    if "dataset" in predictions.columns:
        if predictions["dataset"].isna().any():  # fold files of an older version, resumed: no names for some clips
            logger.warning("some predictions have no dataset (folds written by an older microexp?): metrics.json "
                           "has no per_dataset")
        else:
            datasets, subjects = predictions["dataset"].astype(str).to_numpy(), predictions["subject"].to_numpy()
    summary = cross_validation_summary(predictions["label"].to_numpy(), predictions["pred"].to_numpy(),
                                       predictions["fold"].to_numpy(), num_classes=len(class_names),
                                       class_names=class_names, datasets=datasets, subjects=subjects)
    metrics = {"protocol": protocol, **summary}
    aus = au_metrics(predictions)
    if aus is not None:
        metrics["aus"] = aus
    write_json(out / "metrics.json", metrics)
    (out / PARTIAL_METRICS).unlink(missing_ok=True)  # what evaluate merged while shards ran is outdated now
    from microexp.engine.plots import plot_run

    plot_run(out, metrics)
    return metrics


def write_partial_metrics(out: Path, folds: list[Fold], missing: list[int], *, protocol: str) -> dict[str, Any]:
    """``metrics_partial.json``: the metrics of the complete folds of a run whose shards are not all done.

    Labelled ``complete: false`` with the folds present and missing; ``metrics.json`` is never written
    from a subset of folds (its pooled numbers would silently cover fewer subjects).
    """
    present = [f.fold for f in folds if f.fold not in missing]
    frames = [_read_predictions_csv(out / f"fold_{f:02d}" / "predictions.csv") for f in present]
    predictions = pd.concat(frames, ignore_index=True)
    if "pred" not in predictions.columns:  # AU detection alone
        metrics = {"protocol": protocol, "complete": False, "folds_complete": present, "folds_missing": list(missing),
                   "note": "partial: only the complete folds are counted", **au_only_summary(predictions)}
        write_json(out / PARTIAL_METRICS, metrics)
        return metrics
    classes = [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]
    summary = cross_validation_summary(predictions["label"].to_numpy(), predictions["pred"].to_numpy(),
                                       predictions["fold"].to_numpy(), num_classes=len(classes), class_names=classes)
    metrics = {"protocol": protocol, "complete": False, "folds_complete": present, "folds_missing": list(missing),
               "note": "partial: only the complete folds are counted", **summary}
    aus = au_metrics(predictions)
    if aus is not None:
        metrics["aus"] = aus
    write_json(out / PARTIAL_METRICS, metrics)
    return metrics


def au_metrics(predictions: pd.DataFrame) -> dict[str, Any] | None:
    """The AU detection metrics (:func:`microexp.metrics.au_summary`) of predictions with ``au_prob_`` columns.

    The true AUs are the ``aus`` column; an AU column a fold lacks (the fold did not learn it) is NaN there.
    Returns None when there are no AU columns.
    """
    columns = [c for c in predictions.columns if c.startswith(AU_PROB_PREFIX)]
    if not columns or "aus" not in predictions.columns:
        return None
    codes = sorted((c[len(AU_PROB_PREFIX):] for c in columns), key=lambda code: (int(code.lstrip("LR")), code))
    index = {code: i for i, code in enumerate(codes)}
    truth = np.zeros((len(predictions), len(codes)), dtype=bool)
    for row, cell in enumerate(predictions["aus"].tolist()):
        for code in parse_aus(cell, strict=False):
            if code in index:
                truth[row, index[code]] = True
    probabilities = predictions[[f"{AU_PROB_PREFIX}{c}" for c in codes]].to_numpy(dtype=float)
    return au_summary(truth, probabilities, predictions["fold"].to_numpy(), au_names=[f"AU{c}" for c in codes])


def au_only_summary(predictions: pd.DataFrame) -> dict[str, Any]:
    """The metrics of AU detection alone (no emotion predicted): ``task``, counts and ``aus``.

    Raises:
        ConfigError: the predictions have neither ``pred`` nor AU columns.
    """
    aus = au_metrics(predictions)
    if aus is None:
        raise ConfigError("predictions.csv has no pred column and no au_prob_<code> columns: nothing to score")
    return {"task": "au", "num_samples": int(len(predictions)), "num_folds": int(predictions["fold"].nunique()),
            "aus": aus}


def read_run_predictions(run_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """``RUN/predictions.csv``, checked against ``RUN/folds.json`` before anything is computed from it.

    Every fold of ``folds.json`` must be present, every row must belong to a test subject of its fold,
    every test subject of every fold must appear, no clip may appear twice and, where a fold's own
    ``fold_XX/predictions.csv`` exists, the pooled file must hold exactly its clips. A ``dataset`` column
    (text, written for clip tables that have one) is optional but, when present, must name every row's dataset.

    Returns:
        The predictions and the class names (from the ``prob_<class>`` columns, in order).

    Raises:
        FileNotFoundError: no predictions.csv or folds.json.
        ConfigError: one line naming what is missing, duplicated or unreadable.
    """
    run = Path(run_dir)
    path = run / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions (is {run} a finished microexp train run?)")
    predictions = _read_predictions_csv(path)
    classes = [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]
    au_only = "pred" not in predictions.columns and any(c.startswith(AU_PROB_PREFIX) for c in predictions.columns)
    required = ("clip", "subject", "fold") if au_only else ("clip", "subject", "fold", "label", "pred")
    missing = [c for c in required if c not in predictions.columns]
    if missing or not (classes or au_only):
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing or ['prob_<class>'])}")
    numeric = ["subject", "fold"] if au_only else ["subject", "fold", "label", "pred", *(f"prob_{c}" for c in classes)]
    bad = predictions["clip"].isna()
    for column in numeric:
        bad |= pd.to_numeric(predictions[column], errors="coerce").isna()
    if bad.any():
        rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise ConfigError(f"{path}: empty or unreadable values on line(s) {', '.join(map(str, rows))} (a truncated "
                          "file?); nothing was written")
    for column in () if au_only else ("label", "pred"):
        out_of_range = ~predictions[column].astype("int64").between(0, len(classes) - 1)
        if out_of_range.any():
            raise ConfigError(f"{path}: {column} {predictions[column][out_of_range].iloc[0]} on line "
                              f"{int(np.flatnonzero(out_of_range.to_numpy())[0]) + 2} is not a class index "
                              f"0..{len(classes) - 1}; nothing was written")
    if "dataset" in predictions.columns:
        unnamed = predictions["dataset"].isna() | (predictions["dataset"].astype(str).str.strip() == "")
        if unnamed.any():
            raise ConfigError(f"{path}: empty dataset on line {int(np.flatnonzero(unnamed.to_numpy())[0]) + 2} (the "
                              "dataset column, when present, names every clip's source dataset; drop the column to "
                              "evaluate without per-dataset metrics); nothing was written")
    folds = load_folds(run / "folds.json")
    problems = _prediction_problems(predictions, folds, run)
    if problems:
        raise ConfigError(f"{path} does not match {run / 'folds.json'}: {'; '.join(problems)}; nothing was written")
    return predictions, classes


def _read_predictions_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"dataset": str})  # dataset names as written, never parsed as numbers
    except pd.errors.EmptyDataError as exc:
        raise ConfigError(f"{path}: empty file (no header, no rows); nothing was written") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{path}: not a readable CSV ({reason}); nothing was written") from exc


def _prediction_problems(predictions: pd.DataFrame, folds: list[Fold], run: Path) -> list[str]:
    problems = []
    clips = predictions["clip"].astype(str)
    duplicated = sorted(set(clips[clips.duplicated()]))
    if duplicated:
        problems.append(f"{len(duplicated)} clip(s) listed more than once ({_some(duplicated)})")
    fold_numbers = {f.fold for f in folds}
    fold_column = predictions["fold"].astype("int64")
    unknown = sorted(set(fold_column) - fold_numbers)
    if unknown:
        problems.append(f"fold(s) {_some(unknown)} are not in folds.json")
    for fold in folds:
        rows = predictions[fold_column == fold.fold]
        if rows.empty:
            problems.append(f"fold {fold.fold} has no predictions")
            continue
        subjects = set(rows["subject"].astype("int64"))
        wrong = sorted(subjects - set(fold.test_subjects))
        if wrong:
            problems.append(f"fold {fold.fold} lists clips of subject(s) {_some(wrong)}, which it does not test")
        absent = sorted(set(fold.test_subjects) - subjects)
        if absent:
            problems.append(f"fold {fold.fold} lacks every clip of test subject(s) {_some(absent)}")
        fold_file = run / f"fold_{fold.fold:02d}" / "predictions.csv"
        if fold_file.is_file():
            with contextlib.suppress(MicroexpError):
                expected = set(_read_predictions_csv(fold_file)["clip"].astype(str))
                lacking = sorted(expected - set(rows["clip"].astype(str)))
                if lacking:
                    problems.append(f"fold {fold.fold} lacks {len(lacking)} of its {len(expected)} test clips "
                                    f"({_some(lacking)})")
    return problems


def _some(values: list[Any], n: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def read_log(path: Path, *, before: int) -> list[dict[str, Any]]:
    """The rows of ``log.csv`` for epochs ``< before``, one per epoch (the first of any duplicate)."""
    if before <= 0 or not path.exists():
        return []
    rows: dict[int, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                epoch = int(row.get("epoch") or "")
            except ValueError:  # a line cut by a kill mid-append
                continue
            if 0 <= epoch < before and None not in row and epoch not in rows:
                rows[epoch] = row
    return [rows[e] for e in sorted(rows)]


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``log.csv`` atomically (tiny: one row per epoch)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        if fields:
            writer.writeheader()
        writer.writerows(rows)


def logged_epochs(path: Path) -> int:
    """How many distinct epochs ``log.csv`` holds (an estimate of a fold's progress, for the ETA)."""
    return len(read_log(path, before=sys.maxsize))
