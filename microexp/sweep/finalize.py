"""The final step of a nested sweep: each outer fold's best configuration, retrained and tested once.

For every searched outer fold ``f``, the best COMPLETE trial of study ``{study}-fold{f:02d}`` (by inner
validation value) gives a full recipe. It is trained exactly as ``microexp train`` trains fold ``f``
(:func:`microexp.engine.experiment.run_fold`: fold ``f``'s training subjects, model selection without
test subjects) and tested once on fold ``f``'s test subjects, which no trial of that study has seen.
The pooled and fold-mean metrics over these folds are the *nested test metrics*: the honest estimate
of what the search procedure achieves. They are written, labelled as such, to ``DIR/final/``
(``fold_XX/{config.yaml,log.csv,model.pt,predictions.csv}``, ``folds.json``, ``predictions.csv``,
``metrics.json`` and plots), the same layout as a ``microexp train`` run, plus ``fold_XX/fold.json`` (the
fold's subjects). A fold whose best configuration and subjects have not changed since it was last
finalized is kept. Each fold study must have been made for this base recipe, metric, inner folds and
outer fold (and search space, when given), as when resuming a search.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from microexp.config import build_config, load_config, save_config
from microexp.engine.experiment import (build_folds, hold_unit, load_experiment_data, run_fold, select_folds,
                                       shared_files, write_metrics)
from microexp.engine.trainer import select_device
from microexp.fileio import atomic_path, write_json
from microexp.splits import save_folds
from microexp.sweep.report import best_trials
from microexp.sweep.space import SearchSpace
from microexp.sweep.studies import SweepError, SweepSettings, check_study, fold_studies
from microexp.sweep.studies import select_folds as select_outer_folds

logger = logging.getLogger(__name__)

__all__ = ["ESTIMATE_LABEL", "FinalResult", "finalize"]

ESTIMATE_LABEL = "nested test metrics (pooled and fold mean)"


@dataclass(frozen=True)
class FinalResult:
    """The nested test metrics and which outer folds they cover (``metrics`` None while ``missing`` folds,
    finalized by other shards, are not done)."""

    metrics: dict[str, Any] | None
    folds: list[int]
    total_folds: int
    out_dir: Path
    missing: tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every outer fold of the protocol was searched and finalized."""
        return len(self.folds) == self.total_folds


def finalize(settings: SweepSettings, base_raw: Mapping[str, Any], *, space: SearchSpace | None = None,
             progress: bool | None = None, only_folds: Sequence[int] | None = None) -> FinalResult:
    """Retrain and test each searched outer fold's best configuration; write ``DIR/final/``.

    Args:
        space: the search space; when given, each fold study must have searched it.
        only_folds: a shard: retrain only these outer folds (other processes may finalize the others at
            the same time; each fold has its own lock). The pooled outputs are written once every fold is
            done and current, by whichever shard finishes last.

    Raises:
        ConfigError: a fold study was made with another base recipe, metric, inner folds, outer fold
            subjects or (when given) search space.
        SweepError: a fold study has no COMPLETE trial yet.
    """
    base = build_config(base_raw, source="base recipe")
    data = load_experiment_data(base)
    all_folds = build_folds(base, data.table)
    folds = select_outer_folds(all_folds, settings.outer_folds)
    studies = fold_studies(settings, [f.fold for f in folds])
    for fold in folds:  # the same check as resuming a search: a study of other data must not be "tested" here
        check_study(studies[fold.fold], settings, fold, base=base, space=space)
    best = best_trials(studies)
    missing = [f.fold for f in folds if f.fold not in best]
    if missing:
        raise SweepError(f"fold(s) {missing} have no completed trial yet; run more trials before --finalize")
    final = Path(settings.out_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    with shared_files(final):
        save_folds(folds, final / "folds.json")
    mine = [f for f in folds if f.fold in set(select_folds(folds, only_folds))]
    device = None
    for fold in mine:
        trial = best[fold.fold]
        config = build_config(trial.config, source=f"fold {fold.fold} trial {trial.number}")
        fold_dir = final / f"fold_{fold.fold:02d}"
        if (fold_dir / "predictions.csv").exists() and _same_run(fold_dir, config, fold):
            logger.info("final fold %d: best configuration and subjects unchanged (trial %d); kept", fold.fold,
                        trial.number)
            continue
        with hold_unit(final, fold_dir.name):
            if (fold_dir / "predictions.csv").exists() and _same_run(fold_dir, config, fold):
                continue  # another shard finished it while this one waited for nothing (checked again under the lock)
            if fold_dir.exists() and not _same_run(fold_dir, config, fold):
                shutil.rmtree(fold_dir)  # another trial's fold; the same trial's interrupted fold resumes from last.pt
            fold_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, fold_dir / "config.yaml")
            write_json(fold_dir / "fold.json", fold.to_dict())
            device = device or select_device(config.device)
            logger.info("final fold %d: retraining trial %d's configuration (inner %s %.4f) and testing once",
                        fold.fold, trial.number, settings.metric, trial.value)
            run_fold(config, data, fold, fold_dir, device=device, progress=progress)
    with shared_files(final):
        missing = tuple(f.fold for f in folds if not _current(final / f"fold_{f.fold:02d}", best[f.fold], f))
        if missing:
            logger.info("final step: outer fold(s) %s not finalized yet (other shards); the nested test metrics are "
                        "written when the last one is", ",".join(map(str, missing)))
            return FinalResult(metrics=None, folds=[f.fold for f in folds], total_folds=len(all_folds), out_dir=final,
                               missing=missing)
        frames = [pd.read_csv(final / f"fold_{f.fold:02d}" / "predictions.csv") for f in folds]
        return _write_final(final, frames, folds, all_folds, best, settings, data.class_names, base.cv.protocol)


def _current(fold_dir: Path, trial: Any, fold: Any) -> bool:
    """``fold_dir`` holds a finished fold of ``trial``'s configuration on ``fold``'s subjects."""
    config = build_config(trial.config, source=f"fold {fold.fold} trial {trial.number}")
    return (fold_dir / "predictions.csv").exists() and _same_run(fold_dir, config, fold)


def _write_final(final: Path, frames: list[pd.DataFrame], folds: list[Any], all_folds: list[Any],
                 best: Mapping[int, Any], settings: SweepSettings, class_names: list[str], protocol: str) -> FinalResult:
    """The nested test metrics over every outer fold: pooled predictions, metrics.json and plots."""
    predictions = pd.concat(frames, ignore_index=True)
    with atomic_path(final / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    metrics = write_metrics(final, predictions, class_names, protocol=protocol)
    numbers = [f.fold for f in folds]
    metrics = {
        "estimate": ESTIMATE_LABEL,
        "description": "each outer fold's best inner-validation configuration, retrained on the fold's training "
                       "subjects and tested once on its test subjects (never seen by that fold's search)",
        "outer_folds": numbers,
        "total_outer_folds": len(all_folds),
        "all_outer_folds": len(numbers) == len(all_folds),
        "selected_trials": {str(f): {"trial": best[f].number, f"inner_{settings.metric}": best[f].value,
                                     "params": best[f].params} for f in numbers},
        **metrics,
    }
    write_json(final / "metrics.json", json.loads(json.dumps(metrics, default=str)))  # strict JSON, atomic
    return FinalResult(metrics=metrics, folds=numbers, total_folds=len(all_folds), out_dir=final)


def _same_run(fold_dir: Path, config: Any, fold: Any) -> bool:
    """True when ``fold_dir`` was trained with ``config`` on ``fold``'s subjects (config.yaml, fold.json)."""
    config_file, fold_file = fold_dir / "config.yaml", fold_dir / "fold.json"
    if not (config_file.exists() and fold_file.exists()):
        return False
    try:
        subjects = json.loads(fold_file.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return subjects == json.loads(json.dumps(fold.to_dict())) and load_config(config_file) == config
