"""Knowledge distillation from finished runs, fold by fold (``loss.distill_from``).

A student fold ``f`` learns from the soft predictions of the teachers' fold-``f`` models on fold ``f``'s
*training* clips. The teachers' runs must have the student's folds (same table, protocol and seed), and each
teacher model's recorded training and validation subjects must exclude fold ``f``'s test subjects: the soft
labels then carry nothing about the clips the student is tested on. A final all-subjects student learns from
the teachers' final models.

Soft labels (EmoXNetLite's label-smoothed soft labels): each teacher's probabilities at temperature ``T``
(``p ** (1 / T)`` renormalised, i.e. ``softmax(z / T)`` of its logits), averaged over the teachers, then
smoothed, ``(1 - eps) q + eps / C``. They are computed once per fold, with the teacher's own preprocessing
(its recipe's ``data`` section, no augmentation), and kept in ``fold_XX/teacher_targets.csv`` so a resumed
fold reads them back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from microexp.checkpoint import DIGEST_KEY, load_checkpoint, model_from_checkpoint
from microexp.config import ExperimentConfig, load_config
from microexp.errors import ConfigError
from microexp.fileio import write_json
from microexp.engine.pretrain_record import OVERLAP_NAME
from microexp.splits import Fold, fold_differences, load_folds

logger = logging.getLogger(__name__)

__all__ = ["TARGETS_NAME", "check_teachers", "soften", "teacher_targets"]

#: a fold's soft labels from its teachers, and which teachers' weights (digests) made them
TARGETS_NAME = "teacher_targets.csv"
TARGETS_RECORD = "teacher_targets.json"


def check_teachers(config: ExperimentConfig, folds: list[Fold], *, final: bool) -> None:
    """Refuse teachers whose folds differ from the student's, or that lack a model the student needs.

    Raises:
        ConfigError: one line naming the teacher run and what differs or is missing.
    """
    for run in map(Path, config.loss.distill_from):
        for name in ("config.yaml", "folds.json"):
            if not (run / name).is_file():
                raise ConfigError(f"loss.distill_from: {run}: no {name} (a teacher is a finished microexp train run "
                                  "directory)")
        if (run / OVERLAP_NAME).is_file():
            raise ConfigError(f"loss.distill_from: {run}: its encoders were pretrained on some of its test subjects "
                              f"({OVERLAP_NAME}); its soft labels would carry them")
        if folds:
            what = fold_differences(load_folds(run / "folds.json"), folds)
            if what:
                raise ConfigError(f"loss.distill_from: {run}: its folds differ from this run's ({what}); a teacher "
                                  "must have the student's folds (same table, protocol and seed), else its fold-f "
                                  "model may have trained on fold f's test subjects")
            missing = [f.fold for f in folds if not (run / f"fold_{f.fold:02d}" / "model.pt").is_file()]
            if missing:
                raise ConfigError(f"loss.distill_from: {run}: no model.pt for fold(s) {missing} (an unfinished run?)")
            for fold in folds:  # what each model recorded it saw, checked before the student's folder is touched
                checkpoint = run / f"fold_{fold.fold:02d}" / "model.pt"
                _check_unseen(checkpoint, load_checkpoint(checkpoint), fold.fold, fold.test_subjects)
        if final and not (run / "final" / "model.pt").is_file():
            raise ConfigError(f"loss.distill_from: {run}: no final/model.pt; a final student learns from the teachers' "
                              "final models (train the teachers with --final)")


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(z / T)`` from ``softmax(z)``: ``p ** (1 / T)``, renormalised per row."""
    logp = np.log(np.clip(probabilities, 1e-12, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def teacher_targets(config: ExperimentConfig, train_table: pd.DataFrame, class_names: list[str], *,
                    fold: int | None, test_subjects: Sequence[int], work_dir: Path, device: torch.device,
                    write: bool = True) -> dict[str, np.ndarray]:
    """Clip id -> the smoothed, tempered mean of the teachers' probabilities, for the clips of ``train_table``.

    Args:
        fold: the student's fold number (None: the final all-subjects model, taught by the teachers' final
            models).
        test_subjects: the fold's test subjects, which no teacher model may have trained or selected on.
        work_dir: the student's fold folder; ``teacher_targets.csv`` there is read back when it holds exactly
            these clips (and written there when ``write``: rank 0 under DDP).

    Raises:
        ConfigError: a teacher model has other classes, or has seen one of the fold's test subjects.
    """
    path = work_dir / TARGETS_NAME
    clips = train_table["clip"].astype(str).tolist()
    loss = config.loss
    checkpoints = [Path(run) / ("final" if fold is None else f"fold_{fold:02d}") / "model.pt"
                   for run in loss.distill_from]
    payloads = [load_checkpoint(c) for c in checkpoints]  # once: the digests below and the teachers' models
    record = {"teachers": [{"checkpoint": str(c), "weights_digest": p.get(DIGEST_KEY)}
                           for c, p in zip(checkpoints, payloads)],
              "temperature": loss.distill_temperature, "smoothing": loss.distill_smoothing}
    record_path = work_dir / TARGETS_RECORD
    if path.is_file() and record_path.is_file():  # read back only what the same teachers wrote for these clips
        stored = pd.read_csv(path, dtype={"clip": str})
        if sorted(stored["clip"]) == sorted(clips) and json.loads(record_path.read_text(encoding="utf-8")) == record:
            logger.info("%s: soft labels read back from %s", work_dir.name, path)
            columns = [f"prob_{c}" for c in class_names]
            return dict(zip(stored["clip"], stored[columns].to_numpy(dtype=np.float32)))
    mixture = np.zeros((len(clips), len(class_names)), dtype=np.float64)
    for run, checkpoint, payload in zip(map(Path, loss.distill_from), checkpoints, payloads):
        probabilities = _teacher_probabilities(run, checkpoint, payload, train_table, class_names, fold=fold,
                                               test_subjects=test_subjects, device=device)
        mixture += soften(probabilities, loss.distill_temperature) / len(loss.distill_from)
    smoothed = (1.0 - loss.distill_smoothing) * mixture + loss.distill_smoothing / len(class_names)
    frame = pd.DataFrame({"clip": clips, **{f"prob_{c}": smoothed[:, i] for i, c in enumerate(class_names)}})
    if write:
        from microexp.engine.results import write_csv

        write_csv(frame, path)
        write_json(record_path, record)
    logger.info("%s: soft labels of %d training clips from %d teacher(s) at T=%g", work_dir.name, len(clips),
                len(loss.distill_from), loss.distill_temperature)
    return dict(zip(clips, smoothed.astype(np.float32)))


def _teacher_probabilities(run: Path, checkpoint: Path, payload: dict, table: pd.DataFrame, class_names: list[str],
                           *, fold: int | None, test_subjects: Sequence[int], device: torch.device) -> np.ndarray:
    from microexp.engine.experiment import build_dataset  # the engine's Dataset of a recipe (no import cycle)
    from microexp.engine.trainer import evaluate

    if list(payload["class_names"]) != list(class_names):
        raise ConfigError(f"loss.distill_from: {checkpoint}: classes {payload['class_names']} differ from this run's "
                          f"{class_names}")
    if fold is not None:
        _check_unseen(checkpoint, payload, fold, test_subjects)
    teacher_config = load_config(run / "config.yaml")
    model = model_from_checkpoint(payload, source=str(checkpoint)).to(device).eval()
    dataset = build_dataset(teacher_config, table, model.spec, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=teacher_config.train.batch_size,
                                         num_workers=teacher_config.data.num_workers)
    predictions = evaluate(model, loader, device=device, progress=False,
                           description=f"teacher {run.name} on training clips")
    order = {c: i for i, c in enumerate(predictions.clips)}
    return predictions.probabilities[[order[c] for c in table["clip"].astype(str)]]


def _check_unseen(checkpoint: Path, payload: dict, fold: int, test_subjects: Sequence[int]) -> None:
    """Refuse a teacher model whose recorded training or validation subjects include a test subject."""
    extra = payload.get("extra") or {}
    seen = set(extra.get("train_subjects", [])) | set(extra.get("val_subjects", []))
    if not seen:
        raise ConfigError(f"loss.distill_from: {checkpoint}: records no training subjects, so it cannot be shown "
                          "not to have seen this fold's test subjects")
    leaked = sorted(seen & {int(s) for s in test_subjects})
    if leaked:
        raise ConfigError(f"loss.distill_from: {checkpoint}: trained on test subject(s) {leaked[:5]} of fold "
                          f"{fold}; its soft labels would leak them")
