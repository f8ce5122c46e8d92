"""Classification metrics of micro-expression recognition: ACC, UF1, UAR, per class, pooled and per fold.

Definitions (DFME / MEGC):

* ``ACC`` = correct / total.
* ``UF1`` = mean over classes ``c`` of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``.
* ``UAR`` = mean over classes ``c`` of ``recall_c = TP_c / N_c`` (``N_c`` = true samples of ``c``).

Classes absent from a fold (convention, the same as scikit-learn's ``f1_score(average='macro')`` and
``balanced_accuracy_score`` without an explicit label list):

* ``UAR`` averages over the classes present in ``y_true`` (recall of a class with ``N_c = 0`` is
  undefined and reported as NaN per class).
* ``UF1`` averages over the classes present in ``y_true`` **or** ``y_pred``: a class predicted but never
  true has ``F1 = 0`` and counts (false positives are penalised); a class neither true nor predicted has
  ``F1 = 0/0`` (NaN per class) and is left out rather than counted as 0 or 1.

When every class occurs in ``y_true`` -- the pooled predictions of a full protocol, the number to report
-- both metrics are over all ``num_classes`` classes and the convention does not matter.

Per dataset (a table mixing source datasets, e.g. the MEGC 2019 composite): each dataset's rows of the same
pooled predictions, then one metric; a class a dataset lacks follows the convention above.

Action units (:func:`au_summary`): an AU is detected when its probability is at least the threshold (0.5);
``F1_AU = 2 TP / (2 TP + FP + FN)`` over clips, per AU (scikit-learn's ``f1_score(average=None)``), and the
mean AU F1 averages over the AUs that occur in ``y_true`` (an AU that never occurs has no defined F1). Each
fold learns the AUs of its own training clips, so the pooled figures cover the union of the folds' AUs; a
fold that did not learn an AU counts as never detecting it there (its test clips still carry it). A fold's
mean covers the AUs it learnt that occur among its test clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

__all__ = ["AU_PROB_PREFIX", "AU_THRESHOLD", "ClassificationMetrics", "au_f1_scores", "au_summary", "compute_metrics",
           "cross_validation_summary", "per_dataset_metrics"]

#: predictions.csv column prefix of AU probabilities (``au_prob_12``; never ``prob_``, the class prefix)
AU_PROB_PREFIX = "au_prob_"
#: an AU counts as present when its probability is at least this (predictions.csv, metrics, predict)
AU_THRESHOLD = 0.5

DEFINITIONS = {
    "pooled": "all folds' predictions concatenated, then one metric",
    "fold_mean": "mean of per-fold metrics",
    "fold_std": "population standard deviation (ddof=0) of per-fold metrics",
    "uf1": "mean over classes present in y_true or y_pred of 2TP/(2TP+FP+FN)",
    "uar": "mean over classes present in y_true of TP/N_c",
}

#: added to ``definitions`` when a summary has ``per_dataset``
PER_DATASET_DEFINITION = (
    "pooled per source dataset: that dataset's rows of the pooled predictions (all folds concatenated), then one "
    "metric over the run's classes; a class the dataset lacks in y_true is left out of its uar, and of its uf1 "
    "unless predicted (the uf1/uar definitions)"
)


def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one set of predictions.

    Attributes:
        acc: Accuracy.
        uf1: Unweighted F1 (see module docstring for absent classes).
        uar: Unweighted average recall.
        per_class_recall: ``TP_c / N_c`` per class, NaN where ``N_c = 0``.
        per_class_f1: ``2TP_c / (2TP_c + FP_c + FN_c)`` per class, NaN where the class is neither true nor
            predicted.
        confusion: ``(num_classes, num_classes)`` counts, rows = true class, columns = predicted class.
    """

    acc: float
    uf1: float
    uar: float
    per_class_recall: tuple[float, ...]
    per_class_f1: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]

    @property
    def num_samples(self) -> int:
        """Number of samples the metrics were computed on."""
        return int(sum(map(sum, self.confusion)))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; undefined per-class values (NaN) become ``None``."""
        return {
            "acc": self.acc,
            "uf1": self.uf1,
            "uar": self.uar,
            "per_class_recall": _nan_to_none(self.per_class_recall),
            "per_class_f1": _nan_to_none(self.per_class_f1),
            "confusion": [list(r) for r in self.confusion],
        }


def _as_labels(values: Any, *, name: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} has class index {int(bad[0])} outside [0, {num_classes})")
    return arr


def compute_metrics(y_true: Any, y_pred: Any, *, num_classes: int) -> ClassificationMetrics:
    """ACC, UF1, UAR, per-class recall/F1 and the confusion matrix.

    Args:
        y_true: True class indices, shape ``(N,)``, values in ``[0, num_classes)``.
        y_pred: Predicted class indices, shape ``(N,)``.
        num_classes: Number of classes (fixes the confusion matrix size).

    Returns:
        The metrics.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    yt = _as_labels(y_true, name="y_true", num_classes=num_classes)
    yp = _as_labels(y_pred, name="y_pred", num_classes=num_classes)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred differ in length: {yt.shape[0]} vs {yp.shape[0]}")
    if yt.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    cm = confusion_matrix(yt, yp, labels=np.arange(num_classes))
    tp = np.diag(cm).astype(float)
    n_true = cm.sum(axis=1).astype(float)  # TP + FN
    n_pred = cm.sum(axis=0).astype(float)  # TP + FP
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(n_true > 0, tp / n_true, np.nan)
        f1 = np.where(n_true + n_pred > 0, 2 * tp / (n_true + n_pred), np.nan)  # 2TP/(2TP+FP+FN)
    return ClassificationMetrics(
        acc=float(tp.sum() / yt.size),
        uf1=float(np.nanmean(f1)),
        uar=float(np.nanmean(recall)),
        per_class_recall=tuple(float(v) for v in recall),
        per_class_f1=tuple(float(v) for v in f1),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
    )


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    names = [str(i) for i in range(int(num_classes))] if class_names is None else [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but num_classes is {num_classes}")
    return names


def _per_class(names: Sequence[str], m: ClassificationMetrics) -> dict[str, dict[str, float | None]]:
    return {name: {"recall": r, "f1": f1}
            for name, r, f1 in zip(names, _nan_to_none(m.per_class_recall), _nan_to_none(m.per_class_f1))}


def _dataset_names(datasets: Any, length: int) -> np.ndarray:
    names = np.asarray(datasets, dtype=object)
    if names.ndim != 1 or names.shape[0] != length:
        raise ValueError(f"datasets must be 1-D of length {length}, got shape {names.shape}")
    for index, name in enumerate(names):
        if name is None or (isinstance(name, float) and np.isnan(name)) or not str(name).strip():
            raise ValueError(f"datasets has no name at index {index}")
    return np.array([str(n) for n in names], dtype=object)


def per_dataset_metrics(
    y_true: Any,
    y_pred: Any,
    datasets: Any,
    *,
    subjects: Any,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of each source dataset's share of one set of (pooled) predictions.

    Args:
        y_true: True class indices, shape ``(N,)``.
        y_pred: Predicted class indices, shape ``(N,)``.
        datasets: The source dataset name of each prediction, shape ``(N,)``; no empty names.
        subjects: The subject of each prediction, shape ``(N,)`` (counted per dataset).
        num_classes: Number of classes of the run (a dataset lacking a class keeps the module's convention).
        class_names: Names of the classes in index order (default ``'0'``, ``'1'``, ...).

    Returns:
        ``{name: {clips, subjects, pooled: {acc, uf1, uar}, per_class: {class: {recall, f1}},
        confusion_matrix}}`` in sorted name order; per-class values are None where undefined.
    """
    names = _class_names(class_names, num_classes)
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim != 1 or yp.shape != yt.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {yt.shape} and {yp.shape}")
    groups = _dataset_names(datasets, yt.shape[0])
    subject_ids = np.asarray(subjects, dtype=object)
    if subject_ids.shape != yt.shape:
        raise ValueError(f"subjects must be 1-D of length {yt.shape[0]}, got shape {subject_ids.shape}")
    result = {}
    for name in sorted(set(groups)):
        mask = groups == name
        m = compute_metrics(yt[mask], yp[mask], num_classes=num_classes)
        result[name] = {
            "clips": int(mask.sum()),
            "subjects": len(set(subject_ids[mask].tolist())),
            "pooled": {"acc": m.acc, "uf1": m.uf1, "uar": m.uar},
            "per_class": _per_class(names, m),
            "confusion_matrix": [list(r) for r in m.confusion],
        }
    return result


def cross_validation_summary(
    y_true: Any,
    y_pred: Any,
    folds: Any,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    datasets: Any | None = None,
    subjects: Any | None = None,
) -> dict[str, Any]:
    """Pooled and per-fold metrics of a cross-validation run, labelled for reporting.

    Args:
        y_true: True class indices of every test prediction, shape ``(N,)``.
        y_pred: Predicted class indices, shape ``(N,)``.
        folds: The fold number each prediction came from, shape ``(N,)``.
        num_classes: Number of classes.
        class_names: Names of the classes in index order (default ``'0'``, ``'1'``, ...).
        datasets: The source dataset of each prediction, shape ``(N,)``, or None.
        subjects: The subject of each prediction, shape ``(N,)``; needed with ``datasets``.

    Returns:
        A JSON-ready dict with keys ``definitions``, ``classes``, ``num_samples``, ``num_folds``,
        ``pooled`` ({acc, uf1, uar}: all folds' predictions concatenated, then one metric),
        ``fold_mean`` / ``fold_std`` ({acc, uf1, uar}: mean and ddof=0 std of per-fold metrics),
        ``per_fold`` (list of {fold, num_samples, acc, uf1, uar}), ``per_class``
        ({name: {recall, f1}}, pooled; None where undefined) and ``confusion_matrix`` (pooled, rows = true);
        plus ``per_dataset`` (see :func:`per_dataset_metrics`) when ``datasets`` names more than one dataset.
    """
    class_names = _class_names(class_names, num_classes)
    fold_ids = np.asarray(folds)
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if fold_ids.ndim != 1 or fold_ids.shape[0] != yt.shape[0] or yp.shape[0] != yt.shape[0]:
        raise ValueError(
            f"y_true, y_pred and folds must be 1-D of equal length, got {yt.shape}, {yp.shape}, {fold_ids.shape}"
        )
    pooled = compute_metrics(yt, yp, num_classes=num_classes)
    keys = ("acc", "uf1", "uar")
    per_fold = []
    for f in np.unique(fold_ids):
        mask = fold_ids == f
        m = compute_metrics(yt[mask], yp[mask], num_classes=num_classes)
        per_fold.append({"fold": f.item(), "num_samples": int(mask.sum()), **{k: getattr(m, k) for k in keys}})
    table = np.array([[row[k] for k in keys] for row in per_fold], dtype=float)
    by_dataset = None
    if datasets is not None:
        if subjects is None:
            raise ValueError("datasets needs subjects (to count each dataset's subjects)")
        by_dataset = per_dataset_metrics(yt, yp, datasets, subjects=subjects, num_classes=num_classes,
                                         class_names=class_names)
        if len(by_dataset) < 2:  # one dataset: per_dataset would repeat the pooled figures
            by_dataset = None
    summary = {
        "definitions": dict(DEFINITIONS, **({"per_dataset": PER_DATASET_DEFINITION} if by_dataset else {})),
        "classes": list(class_names),
        "num_samples": pooled.num_samples,
        "num_folds": len(per_fold),
        "pooled": {k: getattr(pooled, k) for k in keys},
        "fold_mean": {k: float(v) for k, v in zip(keys, table.mean(axis=0))},
        "fold_std": {k: float(v) for k, v in zip(keys, table.std(axis=0, ddof=0))},
        "per_fold": per_fold,
        "per_class": _per_class(class_names, pooled),
        "confusion_matrix": [list(r) for r in pooled.confusion],
    }
    if by_dataset:
        summary["per_dataset"] = by_dataset
    return summary


# --------------------------------------------------------------------------- action units

AU_DEFINITIONS = {
    "f1": "per AU over clips: 2TP/(2TP+FP+FN), an AU detected when its probability >= threshold",
    "mean_f1": "mean of the per-AU F1 over the AUs present in y_true",
    "pooled": "all folds' test clips together, over the union of the AUs the folds learnt (a fold that did not "
              "learn an AU never detects it)",
    "fold_mean": "mean (and ddof=0 std) over folds of each fold's mean F1 over the AUs it learnt that occur in its "
                 "test clips",
}


def au_f1_scores(y_true: Any, y_pred: Any) -> dict[str, np.ndarray]:
    """Per-AU ``f1``, ``precision``, ``recall`` and ``support`` of multi-hot ``(N, A)`` truths and decisions.

    F1 of an AU absent from ``y_true`` is NaN when it is never predicted either, 0 when it is (false alarms
    count); precision is NaN for an AU never predicted, recall NaN for one never true.
    """
    yt = np.asarray(y_true, dtype=bool)
    yp = np.asarray(y_pred, dtype=bool)
    if yt.ndim != 2 or yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must be (N, A) of equal shape, got {yt.shape} and {yp.shape}")
    support = yt.sum(axis=0)
    predicted = yp.sum(axis=0)
    if not yt.shape[0]:
        nan = np.full(yt.shape[1], np.nan)
        return {"f1": nan, "precision": nan, "recall": nan, "support": support}
    f1 = f1_score(yt, yp, average=None, zero_division=np.nan)
    precision = precision_score(yt, yp, average=None, zero_division=np.nan)
    recall = recall_score(yt, yp, average=None, zero_division=np.nan)
    return {"f1": np.asarray(f1, dtype=float), "precision": np.where(predicted > 0, precision, np.nan),
            "recall": np.where(support > 0, recall, np.nan), "support": support}


def _mean_present(f1: np.ndarray, support: np.ndarray, learnt: np.ndarray | None = None) -> float:
    keep = support > 0
    if learnt is not None:
        keep &= learnt
    return float(np.mean(f1[keep])) if keep.any() else float("nan")


def au_summary(y_true: Any, probabilities: Any, folds: Any, *, au_names: Sequence[str],
               threshold: float = AU_THRESHOLD) -> dict[str, Any]:
    """Pooled and per-fold AU detection metrics of a cross-validation run.

    Args:
        y_true: ``(N, A)`` multi-hot true AUs of every test clip (over ``au_names``).
        probabilities: ``(N, A)`` AU probabilities; NaN where the clip's fold did not learn that AU.
        folds: ``(N,)`` fold of each clip.
        au_names: the ``A`` AU names (``AU1``, ...).
        threshold: probability at or above which an AU is detected.

    Returns:
        JSON-ready: ``definitions``, ``threshold``, ``aus``, ``pooled`` ({mean_f1, per_au: {name: {f1,
        precision, recall, support}}}), ``fold_mean`` / ``fold_std`` ({mean_f1}), ``per_fold`` (list of
        {fold, num_samples, aus_learnt, mean_f1}); None where undefined.
    """
    yt = np.asarray(y_true, dtype=bool)
    prob = np.asarray(probabilities, dtype=float)
    fold_ids = np.asarray(folds)
    if prob.shape != yt.shape or fold_ids.shape != (yt.shape[0],) or yt.shape[1] != len(au_names):
        raise ValueError(f"y_true {yt.shape}, probabilities {prob.shape}, folds {fold_ids.shape} and "
                         f"{len(au_names)} AU names do not agree")
    detected = np.nan_to_num(prob, nan=0.0) >= threshold
    pooled = au_f1_scores(yt, detected)
    per_fold = []
    for f in np.unique(fold_ids):
        mask = fold_ids == f
        learnt = ~np.isnan(prob[mask]).all(axis=0)
        scores = au_f1_scores(yt[mask], detected[mask])
        per_fold.append({"fold": f.item(), "num_samples": int(mask.sum()), "aus_learnt": int(learnt.sum()),
                         "mean_f1": _none(_mean_present(scores["f1"], scores["support"], learnt))})
    means = np.array([np.nan if row["mean_f1"] is None else row["mean_f1"] for row in per_fold], dtype=float)
    defined = means[~np.isnan(means)]
    return {
        "definitions": dict(AU_DEFINITIONS),
        "threshold": float(threshold),
        "aus": list(au_names),
        "pooled": {"mean_f1": _none(_mean_present(pooled["f1"], pooled["support"])),
                   "per_au": {name: {"f1": _none(pooled["f1"][i]), "precision": _none(pooled["precision"][i]),
                                     "recall": _none(pooled["recall"][i]), "support": int(pooled["support"][i])}
                              for i, name in enumerate(au_names)}},
        "fold_mean": {"mean_f1": _none(defined.mean()) if len(defined) else None},
        "fold_std": {"mean_f1": _none(defined.std(ddof=0)) if len(defined) else None},
        "per_fold": per_fold,
    }


def _none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)
