"""Fold-honest ensembles of finished runs (``microexp ensemble``).

An ensemble averages the per-fold test probabilities of runs that share their folds: fold ``f``'s ensemble
is made of every member's fold-``f`` model, each trained without fold ``f``'s test subjects, so the pooled
predictions are as honest as any member's. Runs whose folds differ (another seed, protocol or table) would
mix models that saw each other's test subjects and are refused.

Weights: ``uniform`` (the mean), or ``val``: per fold, the convex weights that minimise the members'
negative log-likelihood on that fold's *validation* subjects (``fold_XX/val_predictions.csv``, written by
runs with ``cv.val_fraction > 0``); the test subjects never choose anything.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from microexp.config import load_config
from microexp.engine.experiment import VAL_PREDICTIONS
from microexp.engine.results import read_run_predictions, write_csv, write_metrics
from microexp.errors import ConfigError
from microexp.fileio import write_json
from microexp.engine.pretrain_record import OVERLAP_NAME
from microexp.splits import Fold, fold_differences, load_folds, save_folds

logger = logging.getLogger(__name__)

__all__ = ["WEIGHTINGS", "Member", "build_ensemble", "fit_weights", "load_member"]

WEIGHTINGS = ("uniform", "val")
#: the record of an ensemble folder: members, weights per fold
RECORD_NAME = "ensemble.json"


@dataclass(frozen=True)
class Member:
    """A finished run: its folds, pooled test predictions, class names and protocol."""

    run: Path
    folds: list[Fold]
    predictions: pd.DataFrame
    classes: list[str]
    protocol: str

    def probabilities(self, clips: Sequence[str]) -> np.ndarray:
        """``(N, C)`` test probabilities of ``clips``, in that order."""
        frame = self.predictions.set_index("clip")
        return frame.loc[list(clips), [f"prob_{c}" for c in self.classes]].to_numpy(dtype=np.float64)

    def val_predictions(self, fold: int) -> pd.DataFrame:
        path = self.run / f"fold_{fold:02d}" / VAL_PREDICTIONS
        if not path.is_file():
            raise ConfigError(f"{path}: no validation predictions; --weights val needs runs trained with "
                              "cv.val_fraction > 0 (by this version of microexp), or use --weights uniform")
        return pd.read_csv(path, dtype={"clip": str, "dataset": str})


def load_member(run: str | Path) -> Member:
    """A finished run's predictions, checked against its ``folds.json``.

    Raises:
        FileNotFoundError, ConfigError: not a finished run, or its predictions do not match its folds.
    """
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run}: no config.yaml (is it a directory written by microexp train?)")
    predictions, classes = read_run_predictions(run)
    if "pred" not in predictions.columns:
        raise ConfigError(f"{run}: an AU-only run (no emotion predictions) cannot be ensembled")
    if (run / OVERLAP_NAME).is_file():
        raise ConfigError(f"{run}: its encoders were pretrained on some of its test subjects ({OVERLAP_NAME}); an "
                          "ensemble of it would not be an honest estimate")
    predictions = predictions.astype({"clip": str})
    return Member(run=run, folds=load_folds(run / "folds.json"), predictions=predictions, classes=classes,
                  protocol=load_config(run / "config.yaml").cv.protocol)


def check_same_folds(members: Sequence[Member]) -> None:
    """Refuse members whose folds, classes, test clips or labels differ from the first member's."""
    first = members[0]
    first_labels = first.predictions.set_index("clip")["label"]
    for member in members[1:]:
        what = fold_differences(member.folds, first.folds)
        if what:
            raise ConfigError(f"{member.run}: its folds differ from {first.run}'s ({what}); an ensemble needs runs "
                              "of the same folds (same table, protocol and seed), else a member has trained on "
                              "another's test subjects")
        if member.classes != first.classes:
            raise ConfigError(f"{member.run}: classes {member.classes} differ from {first.run}'s {first.classes}")
        labels = member.predictions.set_index("clip")["label"]
        if set(labels.index) != set(first_labels.index):
            extra = sorted(set(labels.index) ^ set(first_labels.index))[:3]
            raise ConfigError(f"{member.run}: its test clips differ from {first.run}'s (e.g. {', '.join(extra)})")
        changed = labels.reindex(first_labels.index) != first_labels
        if changed.any():
            raise ConfigError(f"{member.run}: clip {changed[changed].index[0]} has another label than in "
                              f"{first.run} (another class map?)")


def fit_weights(probabilities: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Convex weights ``(M,)`` of the members' ``(N, C)`` probabilities that minimise the negative
    log-likelihood of ``labels`` (softmax-parametrised, L-BFGS from the uniform mixture)."""
    from scipy.optimize import minimize
    from scipy.special import softmax

    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])  # (M, N, C)
    picked = stacked[:, np.arange(len(labels)), labels]  # (M, N): each member's probability of the truth

    def nll(theta: np.ndarray) -> float:
        return float(-np.log(np.clip(softmax(theta) @ picked, 1e-12, None)).mean())

    result = minimize(nll, np.zeros(len(stacked)), method="L-BFGS-B")
    return softmax(result.x)


def build_ensemble(runs: Sequence[str | Path], out: str | Path, *, weights: str = "uniform") -> dict[str, Any]:
    """Ensemble the runs' per-fold test probabilities into ``out``: ``predictions.csv``, ``fold_XX/``,
    ``folds.json``, ``metrics.json`` (pooled and fold mean, as a run) and ``ensemble.json`` (members, their
    pooled scores, the weights of every fold).

    Returns:
        The ensemble's metrics.json.

    Raises:
        ConfigError: fewer than two runs, an unknown weighting, members whose folds differ, or (``val``) a
            fold without validation predictions.
    """
    if weights not in WEIGHTINGS:
        raise ConfigError(f"--weights {weights!r}: expected one of {', '.join(WEIGHTINGS)}")
    if len(runs) < 2:
        raise ConfigError(f"an ensemble needs at least two runs, got {len(runs)}")
    out = Path(out)
    resolved = [Path(r).resolve() for r in runs]
    if len(set(resolved)) < len(resolved):
        raise ConfigError("the same run is named twice")
    if out.resolve() in resolved:
        raise ConfigError(f"--out {out}: is one of the members")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / RECORD_NAME).is_file()):
        raise ConfigError(f"--out {out}: exists and is not an ensemble folder; choose a new folder")
    members = [load_member(r) for r in runs]
    check_same_folds(members)
    first = members[0]
    classes = first.classes
    frames, fold_weights = [], {}
    for fold in first.folds:
        tested = first.predictions[first.predictions["fold"] == fold.fold]
        clips = tested["clip"].tolist()
        if weights == "val":
            w = _validation_weights(members, fold.fold, classes)
        else:
            w = np.full(len(members), 1.0 / len(members))
        fold_weights[fold.fold] = [float(x) for x in w]
        mixture = sum(wi * m.probabilities(clips) for wi, m in zip(w, members))
        frame = tested[[c for c in ("clip", "subject", "dataset", "fold", "label") if c in tested.columns]].copy()
        frame["pred"] = mixture.argmax(axis=1)
        for index, name in enumerate(classes):
            frame[f"prob_{name}"] = mixture[:, index]
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("fold_*"):  # an earlier ensemble of other folds, in the same folder
        number = re.fullmatch(r"fold_(\d+)", stale.name)
        if stale.is_dir() and number and int(number.group(1)) not in fold_weights:
            shutil.rmtree(stale)
    save_folds(first.folds, out / "folds.json")
    for frame in frames:
        fold_dir = out / f"fold_{int(frame['fold'].iloc[0]):02d}"
        fold_dir.mkdir(exist_ok=True)
        write_csv(frame, fold_dir / "predictions.csv")
    write_csv(predictions, out / "predictions.csv")
    metrics = write_metrics(out, predictions, classes, protocol=first.protocol)
    member_scores = []
    for member in members:
        pooled = _pooled(member)
        member_scores.append({"run": str(member.run), **pooled})
    write_json(out / RECORD_NAME, {"weights": weights, "members": member_scores,
                                   "fold_weights": {str(k): v for k, v in fold_weights.items()},
                                   "note": "fold f's ensemble combines the members' fold-f models; weights "
                                           + ("are the mean" if weights == "uniform" else
                                              "minimise the NLL on fold f's validation subjects")})
    return metrics


def _validation_weights(members: Sequence[Member], fold: int, classes: list[str]) -> np.ndarray:
    frames = [m.val_predictions(fold) for m in members]
    clips = frames[0]["clip"].tolist()
    for member, frame in zip(members[1:], frames[1:]):
        if sorted(frame["clip"]) != sorted(clips):
            raise ConfigError(f"{member.run / f'fold_{fold:02d}' / VAL_PREDICTIONS}: other validation clips than "
                              f"{members[0].run}'s")
    columns = [f"prob_{c}" for c in classes]
    probabilities = [f.set_index("clip").loc[clips, columns].to_numpy(dtype=np.float64) for f in frames]
    labels = frames[0]["label"].to_numpy(dtype=np.int64)
    w = fit_weights(probabilities, labels)
    logger.info("fold %d: weights %s from %d validation clips", fold, ", ".join(f"{x:.2f}" for x in w), len(labels))
    return w


def _pooled(member: Member) -> dict[str, float]:
    from microexp.metrics import compute_metrics

    p = member.predictions
    m = compute_metrics(p["label"].to_numpy(), p["pred"].to_numpy(), num_classes=len(member.classes))
    return {"acc": m.acc, "uf1": m.uf1, "uar": m.uar}
