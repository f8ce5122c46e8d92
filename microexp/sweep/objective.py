"""The objective of one outer fold's study: a trial's recipe, trained on inner training subjects and scored
on inner validation subjects carved from the outer fold's training subjects.

The objective is a callable class holding the data (Optuna's examples): the outer fold's test subjects'
clips are removed from its table when it is built, so no trial can read them. Each epoch reports the
inner validation metric (step ``inner_fold * epochs + epoch``) so that a pruner can stop the trial; the
reason of a pruned trial is kept in ``trial.user_attrs['prune_reason']``.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import optuna

from microexp.config import ExperimentConfig, build_config
from microexp.engine.experiment import ExperimentData, run_fold
from microexp.engine.trainer import select_device
from microexp.errors import ConfigError, user_message
from microexp.metrics import compute_metrics
from microexp.splits import Fold, kfold_subject_splits
from microexp.sweep.space import SearchSpace, apply_params, flatten

__all__ = ["INNER_HOLDOUT", "METRICS", "SweepObjective", "inner_splits", "trial_config"]

METRICS = ("uf1", "uar", "acc")
#: a single inner validation split holds out 1/INNER_HOLDOUT of the training subjects
INNER_HOLDOUT = 4


def inner_splits(table: Any, fold: Fold, *, k: int, seed: int, stratify: bool) -> list[Fold]:
    """Inner train/validation splits of an outer fold's training subjects (``train`` + ``val`` roles).

    Each inner fold is returned as a :class:`Fold` whose ``val_subjects`` and ``test_subjects`` are both
    the inner validation subjects: ``run_fold`` scores them every epoch (intermediate values) and once at
    the end (the selected model's trial value). The outer fold's test subjects appear in none of them.

    Args:
        table: the clip table (``subject`` and ``label`` columns).
        fold: the outer fold.
        k: 1 = one split holding out 1/4 of the subjects (1/n with n < 4 subjects); k > 1 = a
            subject-grouped k-fold.
        seed: split seed (fixed for the whole study, so every trial sees the same inner splits).
        stratify: stratify the inner folds by class (as ``cv.stratify``).
    """
    pool = set(fold.train_subjects) | set(fold.val_subjects)
    inner_table = table[table["subject"].isin(pool)]
    present = inner_table["subject"].nunique()
    if present < 2 or (k > 1 and present < k):
        raise ConfigError(f"outer fold {fold.fold} has {present} training subject(s) with clips; "
                          f"{'--inner-folds ' + str(k) if k > 1 else 'an inner validation split'} needs at least "
                          f"{max(k, 2)}")
    splits = kfold_subject_splits(inner_table["subject"].to_numpy(), inner_table["label"].to_numpy(),
                                  k=min(INNER_HOLDOUT, present) if k == 1 else k, seed=seed, stratify=stratify)
    chosen = splits[:1] if k == 1 else splits
    return [Fold(fold=s.fold, train_subjects=s.train_subjects, val_subjects=s.test_subjects,
                 test_subjects=s.test_subjects) for s in chosen]


def trial_config(base_raw: Mapping[str, Any], params: Mapping[str, Any], *, source: str = "trial") -> ExperimentConfig:
    """Base recipe (after ``--set``) plus a trial's parameters, validated like a recipe.

    Raises:
        ConfigError: the combination is not a valid recipe, or the model rejects its arguments.
    """
    # build_config checks the model name and arguments too (on the meta device: no weights are built)
    return build_config(apply_params(base_raw, params), source=source)


class SweepObjective:
    """The Optuna objective of one outer fold's study (a callable holding the data, per Optuna's examples).

    Args:
        base_raw: the base recipe mapping with ``--set`` overrides applied.
        space: the search space.
        data: the whole labelled clip table; the objective keeps only the outer fold's training subjects.
        fold: the outer fold.
        metric: ``uf1``, ``uar`` or ``acc`` (inner validation, maximised).
        inner_folds: see :func:`inner_splits`.
        work_dir: where trials' temporary run folders go (removed after each inner fold).
        progress: per-epoch progress bars.
    """

    def __init__(self, *, base_raw: Mapping[str, Any], space: SearchSpace, data: ExperimentData, fold: Fold,
                 metric: str = "uf1", inner_folds: int = 1, work_dir: str | Path | None = None,
                 progress: bool | None = False) -> None:
        if metric not in METRICS:
            raise ConfigError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
        self.base_raw = dict(base_raw)
        base = build_config(base_raw, source="base recipe")
        self.base_values = flatten(base.to_dict())
        self.space = space
        self.fold = fold
        self.metric = metric
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.progress = progress
        allowed = set(fold.train_subjects) | set(fold.val_subjects)
        # the outer test subjects' clips are gone before any trial exists: the search cannot read them
        table = data.table[data.table["subject"].isin(allowed)].reset_index(drop=True)
        self.data = ExperimentData(table=table, class_names=list(data.class_names))
        self.inner = inner_splits(table, fold, k=inner_folds, seed=base.seed * 1000 + fold.fold,
                                  stratify=base.cv.stratify)

    def __call__(self, trial: Any) -> float:
        params = self.space.suggest(trial, self.base_values)
        try:
            config = trial_config(self.base_raw, params, source=f"fold {self.fold.fold} trial {trial.number}")
        except ConfigError as exc:
            reason = f"invalid config: {user_message(exc)}"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason) from None
        trial.set_user_attr("config", config.to_dict())
        device = select_device(config.device)
        scores = []
        for inner in self.inner:
            if self.work_dir is not None:
                self.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"fold{self.fold.fold:02d}-trial{trial.number:04d}-", dir=self.work_dir))
            try:
                frame = run_fold(config, self.data, inner, work / f"inner_{inner.fold:02d}", device=device,
                                 progress=self.progress,
                                 on_epoch=functools.partial(self._report, trial, inner.fold, config.train.epochs))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            metrics = compute_metrics(frame["label"].to_numpy(), frame["pred"].to_numpy(),
                                      num_classes=len(self.data.class_names))
            scores.append(float(getattr(metrics, self.metric)))
        trial.set_user_attr("inner_scores", scores)
        return float(np.mean(scores))

    def _report(self, trial: Any, inner_fold: int, epochs: int, epoch: int, record: Mapping[str, Any]) -> None:
        value = float(record[f"val_{self.metric}"])
        step = inner_fold * epochs + epoch
        trial.report(value, step)
        if trial.should_prune():
            reason = (f"pruned at step {step} (inner fold {inner_fold}, epoch {epoch + 1}/{epochs}): "
                      f"val_{self.metric}={value:.4f}")
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
