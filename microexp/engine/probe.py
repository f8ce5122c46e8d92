"""Linear probe: how well a logistic regression on frozen pooled features separates the classes, per protocol.

``probe(features_dir, protocol='loso'|'kfold'|'lodo')`` reads a folder of ``microexp extract-features``
(:func:`microexp.inference.features.load_features`), builds subject-independent folds with
:mod:`microexp.splits` (checked for leakage there) and, per fold, fits ``StandardScaler`` +
``LogisticRegression`` on the training clips only and predicts the test clips once. Metrics are those of a
training run (:func:`microexp.metrics.cross_validation_summary`): ``pooled`` (all folds' test predictions
concatenated, then one metric), ``fold_mean``/``fold_std`` (mean and ddof=0 std of per-fold metrics), and
``per_dataset`` when the clips come from several datasets.

Subjects: a fold groups clips by (dataset, subject), so subject 1 of two datasets are two people; a
composite table's numbering needs no offsets here.

Labels: ``labels='checkpoint'`` uses the index's ``label`` (the checkpoint's classes, through its class map);
clips with -1 (outside those classes) are left out and counted. ``labels='emotion'`` uses the emotion names
as classes (sorted; blank emotions left out): for a checkpoint whose classes are not the ones to probe (a
pretrained or AU-only model, another class map).

Vocabulary per fold: the classifier learns the classes present among the fold's training clips. A test clip
of a class the fold's training lacks stays in the predictions (it cannot be predicted right, which the
metrics count as an error), and ``missing_classes`` in metrics.json lists, per fold, the classes its
training lacked and how many test clips they held. A fold whose training holds one class predicts it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microexp.errors import ConfigError
from microexp.fileio import write_json
from microexp.inference.features import FeatureSet, load_features
from microexp.metrics import cross_validation_summary
from microexp.splits import Fold, check_folds, kfold_subject_splits, leave_one_dataset_out, loso_splits

logger = logging.getLogger(__name__)

__all__ = ["PROBE_PROTOCOLS", "CLASS_WEIGHTS", "LABEL_SOURCES", "ProbeResult", "probe", "write_probe",
           "format_probe"]

PROBE_PROTOCOLS = ("loso", "kfold", "lodo")
CLASS_WEIGHTS = ("balanced", "none")
LABEL_SOURCES = ("checkpoint", "emotion")
PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ProbeResult:
    """The probe's test predictions (one row per probed clip, each tested once) and metrics.

    Attributes:
        predictions: clip, subject, dataset, fold, label, pred, true, predicted, prob_<class>...
        metrics: JSON-ready: ``protocol``, ``probe`` (settings), the
            :func:`~microexp.metrics.cross_validation_summary` keys, ``missing_classes``, ``left_out``.
        folds: the folds (subject ids are the probe's (dataset, subject) group numbers; see ``groups``).
        groups: group number -> ``(dataset, subject)``.
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    folds: list[Fold]
    groups: dict[int, tuple[str, int]]


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def _labels(fs: FeatureSet, source: str) -> tuple[np.ndarray, list[str], str]:
    """Per-clip class index (-1: left out), class names, and what was left out (one phrase)."""
    index = fs.index
    if source == "checkpoint":
        names = fs.class_names
        labels = index["label"].to_numpy(np.int64)
        if not names:
            top = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
            names = [str(i) for i in range(top)]
        if not (labels >= 0).any():
            raise ConfigError(f"{fs.folder}: no clip has a label among the checkpoint's classes "
                              f"({', '.join(names) or 'none: a model without classes'}); use --labels emotion")
        if labels.max() >= len(names):
            raise ConfigError(f"{fs.folder}: index.csv has label {int(labels.max())} but the checkpoint has "
                              f"{len(names)} classes")
        return labels, names, "clips outside the checkpoint's classes (label -1)"
    emotions = index["emotion"].fillna("").astype(str).str.strip()
    names = sorted({e for e in emotions if e})
    if not names:
        raise ConfigError(f"{fs.folder}: index.csv has no emotion names to probe")
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup.get(e, -1) for e in emotions], np.int64), names, "clips without an emotion"


def _groups(index: pd.DataFrame) -> tuple[np.ndarray, dict[int, tuple[str, int]]]:
    """One integer per (dataset, subject), numbered in sorted order."""
    pairs = list(zip(index["dataset"].fillna("").astype(str), index["subject"].astype("int64")))
    numbers = {p: i for i, p in enumerate(sorted(set(pairs)))}
    return np.array([numbers[p] for p in pairs], np.int64), {i: (d, int(s)) for (d, s), i in numbers.items()}


def build_probe_folds(protocol: str, groups: np.ndarray, datasets: np.ndarray, labels: np.ndarray, *,
                      folds: int, seed: int) -> list[Fold]:
    """The outer folds of ``protocol`` over per-clip group ids (no validation subjects: nothing is tuned)."""
    if protocol == "kfold":
        out = kfold_subject_splits(groups, labels, k=folds, seed=seed)
    elif protocol == "loso":
        out = loso_splits(groups)
    else:
        if len({d for d in datasets}) < 2:
            raise ConfigError(f"protocol lodo needs clips of at least 2 datasets; the features have "
                              f"{sorted(set(datasets.tolist())) or ['none']}")
        out = leave_one_dataset_out(datasets, groups)
    check_folds(out, groups, protocol=protocol)
    return out


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, *, C: float,
                 class_weight: str, max_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Test probabilities ``(n_test, num_classes)`` (0 for classes not learnt) and whether lbfgs converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    learnt = np.unique(y_train)
    probs = np.zeros((len(x_test), num_classes))
    if len(learnt) == 1:
        probs[:, learnt[0]] = 1.0
        return probs, learnt, True
    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=C, class_weight=None if class_weight == "none" else class_weight, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs, learnt, converged


def probe(
    features: str | Path | FeatureSet,
    *,
    protocol: str = "loso",
    folds: int = 10,
    seed: int = 0,
    C: float = 1.0,
    class_weight: str = "balanced",
    labels: str = "checkpoint",
    max_iter: int = 1000,
) -> ProbeResult:
    """Linear-probe evaluation of pooled features under a subject-independent protocol (module docstring).

    Args:
        features: a features folder (or one read by :func:`load_features`).
        protocol: 'loso', 'kfold' or 'lodo'.
        folds: k of 'kfold'.
        seed: the k-fold subject shuffle and the classifier's seed.
        C: inverse L2 strength of the logistic regression, > 0.
        class_weight: 'balanced' (weights inverse to each training fold's class frequency) or 'none'.
        labels: 'checkpoint' (the index's label) or 'emotion' (emotion names as classes).
        max_iter: lbfgs iterations.

    Raises:
        ConfigError: a bad option, lodo with one dataset, too few subjects for the folds, no labels.
        FileNotFoundError, FeatureError: the folder cannot be read or is inconsistent.
    """
    _check_choice("protocol", protocol, PROBE_PROTOCOLS)
    _check_choice("class weight", class_weight, CLASS_WEIGHTS)
    _check_choice("labels", labels, LABEL_SOURCES)
    if not (isinstance(C, (int, float)) and not isinstance(C, bool) and np.isfinite(C) and C > 0):
        raise ConfigError(f"C {C!r}: expected a number > 0")
    fs = features if isinstance(features, FeatureSet) else load_features(features)
    y_all, class_names, left_out_what = _labels(fs, labels)
    keep = y_all >= 0
    index = fs.index[keep].reset_index(drop=True)
    x, y = fs.features[keep].astype(np.float64), y_all[keep]
    if len(y) == 0:
        raise ConfigError(f"{fs.folder}: no clip left to probe")
    groups, group_names = _groups(index)
    datasets = index["dataset"].fillna("").astype(str).to_numpy()
    fold_list = build_probe_folds(protocol, groups, datasets, y, folds=folds, seed=seed)
    num_classes = len(class_names)
    probs = np.zeros((len(y), num_classes))
    fold_of = np.full(len(y), -1, np.int64)
    missing: list[dict[str, Any]] = []
    unconverged: list[int] = []
    for fold in fold_list:
        train = np.isin(groups, fold.train_subjects)
        test = np.isin(groups, fold.test_subjects)
        p, learnt, converged = _fit_predict(x[train], y[train], x[test], num_classes, C=float(C),
                                            class_weight=class_weight, max_iter=max_iter, seed=seed)
        probs[test], fold_of[test] = p, fold.fold
        if not converged:
            unconverged.append(fold.fold)
        absent = sorted(set(range(num_classes)) - set(learnt.tolist()))
        held = {class_names[c]: int((y[test] == c).sum()) for c in absent if (y[test] == c).any()}
        if held:
            missing.append({"fold": fold.fold, "classes_not_in_training": [class_names[c] for c in absent],
                            "test_clips_of_those_classes": held})
    if (fold_of < 0).any():  # the splits test every subject once (check_folds): a bug if not
        raise RuntimeError("some probed clips were never tested")
    pred = probs.argmax(axis=1)
    predictions = pd.DataFrame({
        "clip": index["clip"].astype(str), "subject": index["subject"].astype("int64"),
        "dataset": datasets, "fold": fold_of, "label": y, "pred": pred,
        "true": [class_names[i] for i in y], "predicted": [class_names[i] for i in pred],
    })
    for c, name in enumerate(class_names):
        predictions[f"prob_{name}"] = probs[:, c]
    summary = cross_validation_summary(y, pred, fold_of, num_classes=num_classes, class_names=class_names,
                                       datasets=datasets if len(set(datasets)) > 1 else None,
                                       subjects=groups)
    if unconverged:
        logger.warning("logistic regression did not converge in %d iterations in fold(s) %s (raise max_iter or "
                       "lower C)", max_iter, unconverged)
    metrics = {
        "protocol": protocol,
        "probe": {"classifier": "StandardScaler + LogisticRegression (lbfgs, L2), fitted on each fold's training "
                                "clips only", "C": float(C), "class_weight": class_weight, "max_iter": max_iter,
                  "seed": seed, "folds": folds if protocol == "kfold" else len(fold_list), "labels": labels,
                  "unconverged_folds": unconverged, "groups": "(dataset, subject) pairs"},
        "features": {"folder": str(fs.folder) if fs.folder else None, "checkpoint": fs.meta.get("checkpoint"),
                     "checkpoint_digest": fs.meta.get("checkpoint_digest"), "model_name": fs.meta.get("model_name"),
                     "num_features": int(x.shape[1]),
                     "seen_subject_clips": fs.meta.get("seen_subject_clips")},
        **summary,
        "missing_classes": missing,
        "left_out": {"clips": int((~keep).sum()), "reason": left_out_what},
    }
    if fs.meta.get("seen_subject_clips"):
        metrics["warning"] = (f"{fs.meta['seen_subject_clips']} clip(s) are from subjects the checkpoint trained on: "
                              "the probe then measures the training fit, not held-out transfer")
        logger.warning("%s", metrics["warning"])
    return ProbeResult(predictions, metrics, fold_list, group_names)


def write_probe(result: ProbeResult, out: str | Path) -> tuple[Path, Path]:
    """predictions.csv and metrics.json in ``out`` (each atomic)."""
    from microexp.engine.results import write_csv

    folder = Path(out)
    return write_csv(result.predictions, folder / PREDICTIONS_FILE), write_json(folder / METRICS_FILE, result.metrics)


def format_probe(result: ProbeResult) -> str:
    """A short table: pooled and fold mean ± std of UF1, UAR and ACC (and per dataset)."""
    m = result.metrics
    head = (f"linear probe, {m['protocol']} ({m['num_folds']} folds), {m['num_samples']} clips, "
            f"{len(m['classes'])} classes, D={m['features']['num_features']}")
    lines = [head, f"{'':<22}{'UF1':>16}{'UAR':>16}{'ACC':>16}",
             f"{'pooled':<22}" + "".join(f"{m['pooled'][k]:>16.3f}" for k in ("uf1", "uar", "acc")),
             f"{'fold mean ± std':<22}" + "".join(f"{m['fold_mean'][k]:>8.3f} ± {m['fold_std'][k]:.3f}"
                                                  for k in ("uf1", "uar", "acc"))]
    for name, d in m.get("per_dataset", {}).items():
        lines.append(f"{('pooled ' + name)[:22]:<22}"
                     + "".join(f"{d['pooled'][k]:>16.3f}" for k in ("uf1", "uar", "acc")))
    if m["missing_classes"]:
        lines.append(f"{len(m['missing_classes'])} fold(s) tested clips of classes their training lacked "
                     "(see missing_classes in metrics.json)")
    if m["left_out"]["clips"]:
        lines.append(f"{m['left_out']['clips']} {m['left_out']['reason']} left out")
    return "\n".join(lines)
