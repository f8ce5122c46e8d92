"""What a masked-video pretraining run records, and the check ``train`` makes of it before a run starts.

Kept apart from :mod:`.pretrain` so that the experiment engine can check encoders without importing the
pretraining engine (which builds on the experiment's data helpers).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch

from microexp.checkpoint import FORMAT as CHECKPOINT_FORMAT
from microexp.config import ExperimentConfig
from microexp.errors import ConfigError
from microexp.splits import Fold

logger = logging.getLogger(__name__)

__all__ = ["RECORD_NAME", "ENCODER_NAME", "OVERLAP_NAME", "is_pretrain_dir", "subject_keys", "encoder_for_fold",
           "check_pretrained_subjects"]

#: the record of a pretraining folder (what each encoder saw)
RECORD_NAME = "pretrain.json"
#: a pretrained encoder (a microexp checkpoint with ``extra.pretrain``)
ENCODER_NAME = "encoder.pt"
#: written into a train run that accepted an overlap (``pretrain.allow_test_subjects``)
OVERLAP_NAME = "pretrain_overlap.json"


def is_pretrain_dir(path: str | Path) -> bool:
    """True for the output folder of ``microexp pretrain``."""
    return (Path(path) / RECORD_NAME).is_file()


def subject_keys(table: pd.DataFrame, subjects: Iterable[int] | None = None) -> set[tuple[str, int]]:
    """``(dataset, subject)`` of the clips of ``table`` (of ``subjects`` only, when given); dataset "" when the
    table has no dataset column. A composite table's clips give their sheet's own pair (``source_dataset``,
    ``source_subject``), so a subject matches itself across a composite and the single tables it was built from."""
    rows = table if subjects is None else table[table["subject"].isin(list(subjects))]
    if "source_subject" in rows.columns:
        return set(zip(rows["source_dataset"].astype(str).tolist(), rows["source_subject"].astype(int).tolist()))
    datasets = rows["dataset"].fillna("").astype(str) if "dataset" in rows.columns else pd.Series([""] * len(rows))
    return set(zip(datasets.tolist(), rows["subject"].astype(int).tolist()))


def encoder_for_fold(pretrained: str | None, fold: int | None) -> str | None:
    """``model.pretrained`` for one fold: a pretraining folder gives ``fold_XX/encoder.pt`` when it has one,
    else its whole-pool ``encoder.pt``; a file is used as is."""
    if pretrained is None or not is_pretrain_dir(pretrained):
        return pretrained
    root = Path(pretrained)
    if fold is not None and (root / f"fold_{fold:02d}" / ENCODER_NAME).is_file():
        return str(root / f"fold_{fold:02d}" / ENCODER_NAME)
    if (root / ENCODER_NAME).is_file():
        return str(root / ENCODER_NAME)
    what = f"fold_{fold:02d}/{ENCODER_NAME} or {ENCODER_NAME}" if fold is not None else ENCODER_NAME
    raise ConfigError(f"model.pretrained={pretrained!r}: no {what} in this pretraining folder (finish "
                      "`microexp pretrain`, or run it without --per-fold for the final model)")


def _pretrained_subjects(path: str) -> set[tuple[str, int]] | None:
    """The ``(dataset, subject)`` pairs a ``microexp pretrain`` encoder saw; None for any other weights file
    (torchvision, timm, official VideoMAE, a microexp train checkpoint), which carries no such record.

    Only the record is read: the file is memory-mapped, its weights neither copied nor verified (``train``
    loads and checks them when it builds each fold's model).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, ValueError, EOFError):  # e.g. a legacy (non-zip) .pth, which
        return None  # mmap cannot read; microexp writes zip files only, so it holds no pretraining record
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        return None
    record = (payload.get("extra") or {}).get("pretrain")
    if not record:
        return None
    return {(str(d), int(s)) for d, s in record.get("subjects", [])}


def check_pretrained_subjects(config: ExperimentConfig, table: pd.DataFrame, folds: list[Fold]) -> dict[int, list[int]]:
    """The test subjects each fold's encoder was pretrained on; refused unless ``pretrain.allow_test_subjects``.

    Returns:
        fold -> the overlapping test subject ids (only folds with an overlap).

    Raises:
        ConfigError: an overlap while ``pretrain.allow_test_subjects`` is false (naming the fold, the encoder
            and the subjects), or a pretraining folder without the encoder a fold needs.
    """
    pretrained = config.model.pretrained
    if pretrained is None:
        return {}
    overlaps: dict[int, list[int]] = {}
    cached: dict[str, set[tuple[str, int]] | None] = {}
    for fold in folds:
        path = encoder_for_fold(pretrained, fold.fold)
        if path not in cached:
            cached[path] = _pretrained_subjects(path)
        seen = cached[path]
        if seen is None:
            continue
        test = subject_keys(table, fold.test_subjects)
        shared = sorted({s for d, s in test & seen})
        if shared:
            overlaps[fold.fold] = shared
    if overlaps and not config.pretrain.allow_test_subjects:
        fold, shared = next(iter(overlaps.items()))
        shown = ", ".join(map(str, shared[:8])) + (" ..." if len(shared) > 8 else "")
        raise ConfigError(
            f"model.pretrained={pretrained!r}: the encoder of fold {fold} was pretrained on clips of {len(shared)} of "
            f"its test subject(s) ({shown}); {len(overlaps)} fold(s) affected. Pretrain with `microexp pretrain "
            "--per-fold` (each fold without its test subjects) or on other subjects, or set "
            "pretrain.allow_test_subjects=true to accept it (recorded in the run)")
    for fold, shared in overlaps.items():
        logger.warning("fold %d: its encoder was pretrained on %d of its test subjects (pretrain.allow_test_subjects"
                       "=true; recorded in pretrain_overlap.json)", fold, len(shared))
    return overlaps
