"""A cross-validation experiment: folds -> fresh model per fold -> test once -> pooled and fold metrics.

Evaluation integrity is built in, not left to discipline:

* folds are subject-independent and checked for leakage before anything trains (``splits.check_folds``);
* model, optimizer, scheduler, loss and sampler are created anew for every fold;
* class counts for losses and samplers come from the fold's training subjects only;
* model selection sees training subjects only: the last epoch (fixed schedule) or the best epoch on an
  inner validation split carved from the training subjects; the test subjects are evaluated exactly
  once per fold, after training, and their predictions are never read before then;
* a killed run resumes at the last completed epoch of the fold it was in; completed folds are kept.

A run starts only once everything it needs has been checked: the clip table is read and validated, the
folds are built and ``data.num_frames`` is checked against the clips' lengths, the device and the cache
folder are checked, all before the run directory is created or touched. Then the run directory is
locked for the run's duration (:func:`hold_lock`; a second ``train`` on the same ``--out`` is refused,
naming the holder), and only then is ``config.yaml`` written.

Outputs in the run directory (every one written atomically through :mod:`microexp.fileio`):
``config.yaml``, ``folds.json``, ``fold_XX/`` (``log.csv``, ``last.pt``, ``model.pt``,
``predictions.csv``), ``predictions.csv``, ``metrics.json`` and plots; with ``final=True`` also
``final/`` (``log.csv``, ``last.pt``, ``model.pt``: one model trained on every subject).

Beside this module: :mod:`.run_dir` (the checks and the lock), :mod:`.results` (predictions, metrics and
log.csv files), :mod:`.progress` (fold k/K and the ETA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from microexp.config import (
    ExperimentConfig, annotation_sources, config_differences, is_composite, load_config, save_config,
)
from microexp.data.annotations import load_clip_table
from microexp.data.annotations.composite import TablePart, compose_tables
from microexp.data.class_maps import apply_class_map, get_class_map, summarise_left_out
from microexp.data.apex_flow import ApexFlowSpec
from microexp.data.aus import (
    AUVocabulary, au_cooccurrence, au_positive_weights, build_au_vocabulary, normalise_aus,
)
from microexp.data.dataset import EpochIndexSampler, MicroExpressionDataset, check_clip_inputs
from microexp.data.in_memory import InMemoryClips, in_memory_plan
from microexp.data.pipeline import ClipPipeline
from microexp.data.samplers import StagedSampler, build_sampler
from microexp.checkpoint import load_checkpoint, save_checkpoint
from microexp.engine.distributed import (
    DistributedContext, barrier, entered_on_main, gather_epoch_stats, gather_predictions, run_on_main, shard_dataset,
    train_batches, wrap_model,
)
from microexp.engine.precision import (
    autocast_dtype, configure_backends, dtype_name, make_grad_scaler, memory_format_for, prepare_model,
)
from microexp.engine.distill import check_teachers, teacher_targets
from microexp.engine.objectives import Objective, flip_model_input, needs_task_outputs
from microexp.engine.pretrain_record import OVERLAP_NAME, check_pretrained_subjects, encoder_for_fold, subject_keys
from microexp.engine.progress import RunProgress, UnitProgress, format_seconds  # noqa: F401 - re-exported
from microexp.engine.results import (  # noqa: F401 - read_run_predictions re-exported for callers of this module
    logged_epochs, read_log, read_run_predictions, write_csv, write_log, write_metrics,
)
from microexp.engine.run_dir import (  # noqa: F401 - RunLockedError re-exported
    LOCK_NAME, RunLockedError, check_not_a_file, hold_lock, probe_writable,
)
from microexp.engine.trainer import build_optimizer, build_scheduler, evaluate, select_device, train_one_epoch
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import OutputError, write_json
from microexp.label_noise import class_templates, relabel
from microexp.losses import build_loss, loss_options
from microexp.metrics import AU_PROB_PREFIX, AU_THRESHOLD, compute_metrics
from microexp.models import create_model, get_model_spec
from microexp.seed import seed_everything, seed_worker
from microexp.splits import (
    Fold, check_folds, cross_dataset_split, fixed_split, format_fold_selection, kfold_subject_splits,
    leave_one_dataset_out, load_folds, loso_splits, save_folds,
)

logger = logging.getLogger(__name__)

#: cv.protocol (the recipe's word) -> the protocol name microexp.splits checks folds under
SPLITS_PROTOCOL = {"kfold": "kfold", "loso": "loso", "lodo": "lodo", "split": "fixed", "cross": "fixed"}

LOSS_FIELDS = {"gamma": "gamma", "beta": "beta", "label_smoothing": "label_smoothing", "max_m": "max_m",
               "scale": "s", "drw_epoch": "drw_epoch", "reg_weight": "reg_weight"}

#: the folder of the final all-subjects model inside a run directory
FINAL_DIR = "final"
#: the folder of the per-unit locks (``fold_XX.lock``, ``final.lock``) of the processes sharing a run directory
LOCKS_DIR = "locks"
#: the short-held lock around a run's shared files (config.yaml, folds.json, the pooled outputs)
SHARED_FILES_LOCK = "shared.lock"
#: a fold's predictions on its validation subjects (written when it has some), beside the test predictions
VAL_PREDICTIONS = "val_predictions.csv"
#: the random stream of the final model (fold ``f`` uses stream ``f``; no protocol has this many folds)
FINAL_STREAM = 999


@dataclass(frozen=True)
class ExperimentData:
    """The clip table with labels, and the class names in label order."""

    table: pd.DataFrame
    class_names: list[str]


def load_experiment_data(config: ExperimentConfig) -> ExperimentData:
    """Read, validate and label the clip table named by ``config.data``."""
    if not config.data.annotations:
        raise ConfigError("data.annotations is empty: set it in the recipe or with --set data.annotations=PATH")
    table = read_clip_tables(config)
    # identity takes its classes from the table: under cv.protocol=cross, from the training datasets' clips alone
    vocabulary_clips = (table[table["dataset"].isin(config.cv.train_datasets)] if config.cv.protocol == "cross"
                        else table)
    class_map = get_class_map(config.data.class_map, table=vocabulary_clips)
    if "source_dataset" in table.columns:  # a composite: class maps are keyed by each sheet's own dataset name
        mapped = table.assign(dataset=table["source_dataset"], composite_dataset=table["dataset"])
        labelled, problems = apply_class_map(mapped, class_map, strict=config.data.strict, log=False)
        labelled = labelled.assign(dataset=labelled["composite_dataset"]).drop(columns="composite_dataset")
    else:
        labelled, problems = apply_class_map(table, class_map, strict=config.data.strict, log=False)
    for group in summarise_left_out(problems):  # one line per (dataset, emotion), with its count
        logger.warning("%s", group)
    if labelled.empty:
        raise ConfigError(f"{annotations_name(config)}: no clip left after validation and class map {class_map.name!r}")
    return ExperimentData(table=labelled.reset_index(drop=True), class_names=list(class_map.classes))


def annotations_name(config: ExperimentConfig) -> str:
    """The clip table in messages: its path, or ``data.annotations`` for a composite list."""
    return "data.annotations" if is_composite(config.data) else str(config.data.annotations)


def seen_subject_keys(table: pd.DataFrame, subjects: Sequence[int] | None = None) -> list[list[Any]]:
    """``[dataset, subject]`` of the clips' subjects (of ``subjects`` only, when given), as their sheets number
    them (a composite's source pairs), sorted: what a checkpoint records it has seen."""
    return [[d, s] for d, s in sorted(subject_keys(table, subjects))]


def final_training_table(config: ExperimentConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The clips a final model trains on: every clip, or under ``cv.protocol=cross`` the training datasets'."""
    if config.cv.protocol == "cross":
        return table[table["dataset"].isin(config.cv.train_datasets)]
    return table


def read_clip_tables(config: ExperimentConfig) -> pd.DataFrame:
    """The validated clip table of ``data.annotations``: one file, or a composite of several (one dataset each;
    see :mod:`microexp.data.annotations.composite`)."""
    sources = annotation_sources(config.data)
    if not is_composite(config.data):
        (source,) = sources
        return load_clip_table(source.path, format=source.format, root=source.root).resolve(strict=config.data.strict)
    parts = []
    for index, source in enumerate(sources):
        label = f"data.annotations[{index}] ({source.path})"
        table = load_clip_table(source.path, format=source.format, root=source.root).resolve(strict=config.data.strict)
        parts.append(TablePart(label, table, source.dataset))
    table = compose_tables(parts)
    for name, group in table.groupby("dataset", sort=False):
        logger.info("composite table: dataset %s, %d clips of %d subjects (ids %d..%d)", name, len(group),
                    group["subject"].nunique(), group["subject"].min(), group["subject"].max())
    return table


def check_num_frames(config: ExperimentConfig, table: pd.DataFrame) -> None:
    """Refuse ``data.num_frames`` above the longest clip's onset..offset span.

    No clip has that many distinct frames, so every sample would only repeat (or, for ``tim``,
    interpolate) frames while the workers' memory grows with ``num_frames``.

    Raises:
        ConfigError: naming the limit and the longest clip.
    """
    if table.empty:
        return
    spans = (table["offset"].astype("int64") - table["onset"].astype("int64") + 1).to_numpy()
    longest = int(spans.argmax())
    limit = int(spans[longest])
    if config.data.num_frames > limit:
        raise ConfigError(
            f"data.num_frames={config.data.num_frames}: more frames than any clip has; the longest clip "
            f"({table['clip'].iloc[longest]!r}, onset..offset) spans {limit} frames, so use data.num_frames <= {limit}"
        )


def build_folds(config: ExperimentConfig, table: pd.DataFrame) -> list[Fold]:
    """The outer folds of ``config.cv`` (validation subjects carved from training subjects).

    ``lodo`` (leave-one-dataset-out) reads the table's ``dataset`` column: fold ``i`` tests every subject
    of the ``i``-th dataset in sorted name order.
    """
    subjects = table["subject"].to_numpy()
    labels = table["label"].to_numpy()
    cv = config.cv
    if cv.protocol == "kfold":
        folds = kfold_subject_splits(subjects, labels, k=cv.folds, seed=config.seed, stratify=cv.stratify,
                                     val_fraction=cv.val_fraction)
    elif cv.protocol == "loso":
        folds = loso_splits(subjects, labels=labels, val_fraction=cv.val_fraction, seed=config.seed)
    elif cv.protocol == "lodo":
        if "dataset" not in table.columns or table["dataset"].isna().any():
            raise ConfigError("cv.protocol=lodo needs a dataset name for every clip (the clip table's dataset column)")
        folds = leave_one_dataset_out(table["dataset"].to_numpy(), subjects, labels=labels,
                                      val_fraction=cv.val_fraction, seed=config.seed)
    elif cv.protocol == "split":
        folds = [fixed_split(subjects, cv.test_subjects, labels=labels, val_fraction=cv.val_fraction,
                             seed=config.seed)]
    elif cv.protocol == "cross":
        if "dataset" not in table.columns or table["dataset"].isna().any():
            raise ConfigError("cv.protocol=cross needs a dataset name for every clip (the clip table's dataset column)")
        folds = [cross_dataset_split(table["dataset"].to_numpy(), subjects, train=cv.train_datasets,
                                     test=cv.test_datasets, labels=labels, val_fraction=cv.val_fraction,
                                     seed=config.seed)]
        unused = sorted(set(table["dataset"]) - set(cv.train_datasets) - set(cv.test_datasets))
        if unused:
            logger.info("cv.protocol=cross: the clips of dataset(s) %s take no part", ", ".join(unused))
    else:
        raise ConfigError(f"cv.protocol={cv.protocol!r}: expected one of {', '.join(SPLITS_PROTOCOL)}")
    check_folds(folds, subjects, protocol=SPLITS_PROTOCOL[cv.protocol])
    return folds


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    final: bool = False,
    cross_validation: bool = True,
    recipe: str | Path | None = None,
    only_folds: Sequence[int] | None = None,
    ctx: DistributedContext | None = None,
) -> dict[str, Any] | None:
    """Train and test every fold (resuming where a previous run stopped) and write all outputs.

    Args:
        config: the validated recipe.
        out_dir: the run directory (created once every check has passed).
        progress: tqdm bars (None: only on a terminal).
        final: after the folds, also train one model on every subject (:func:`train_final`).
        cross_validation: False skips the folds (with ``final=True``: only the final model).
        recipe: the recipe file the config came from, recorded in ``config.yaml`` (for plot titles).
        only_folds: run only these folds (a shard); other processes may run the others into the same
            ``out_dir`` at the same time. None runs every fold.
        ctx: under torchrun, from :func:`~microexp.engine.distributed.init_distributed`: every fold is
            trained data-parallel by all ranks, rank 0 alone writes files (and returns the metrics).

    Returns:
        The metrics dict written to ``metrics.json``: None when ``cross_validation`` is False, or while a
        fold of another shard is not complete yet (the last shard to finish writes it).

    Raises:
        RunLockedError: another process is training one of this shard's folds (or the final model) into
            ``out_dir``, or holds it for an audit.
        OutputError: the run directory or the cache cannot be written (one line naming the path, the
            cause and what was kept).
    """
    if not (cross_validation or final):
        raise ValueError("run_experiment: nothing to do (cross_validation=False and final=False)")
    out = Path(out_dir)
    data, folds, device, wanted, overlaps = _check_run(config, out, cross_validation=cross_validation, final=final,
                                                       only_folds=only_folds)
    ctx = ctx or DistributedContext(device=device)
    device = ctx.device if ctx.distributed else device  # cuda:LOCAL_RANK under torchrun
    # shards of one run share its directory: the run lock is shared (an audit or a pretraining run holding
    # it exclusively still refuses them), each fold and the final model have their own exclusive lock, and
    # the shared files are written under a short-held lock
    with hold_lock(out / LOCK_NAME, what=f"run directory {out}", shared=True), contextlib.ExitStack() as held:
        # rank 0 writes and reads the shared files; every rank gets its folds (or its error)
        folds = run_on_main(_start_shared_files, ctx, config, out, data, folds, overlaps,
                            cross_validation=cross_validation, recipe=recipe)
        mine = [f for f in folds if f.fold in wanted]
        # one decision for every rank (the lock is a collective under DDP): the folds still to train
        pending = run_on_main(lambda: [f.fold for f in mine if not (out / _unit(f.fold) / "predictions.csv").exists()],
                              ctx)
        for number in pending:
            held.enter_context(entered_on_main(hold_unit(out, _unit(number)), ctx))  # rank 0 holds it
        shard = (f" (folds {format_fold_selection(wanted)} of {len(folds)} in this process)"
                 if len(mine) < len(folds) else "")
        logger.info("%d clips, %d subjects, %s%s, model %s on %s", len(data.table), data.table["subject"].nunique(),
                    f"{len(folds)} folds" if cross_validation else "final model only", shard, config.model.name,
                    device)
        tracker = RunProgress(logger)
        for fold in mine:
            fold_dir = out / _unit(fold.fold)
            if not (fold_dir / "predictions.csv").exists():
                tracker.plan(_unit(fold.fold), config.train.epochs - logged_epochs(fold_dir / "log.csv"))
        if final and not (out / FINAL_DIR / "model.pt").exists():
            tracker.plan("final", config.train.epochs - logged_epochs(out / FINAL_DIR / "log.csv"))
        try:
            metrics = None
            if cross_validation:
                for index, fold in enumerate(mine):
                    fold_dir = out / _unit(fold.fold)
                    if run_on_main((fold_dir / "predictions.csv").exists, ctx):  # one decision for all ranks
                        logger.info("fold %d/%d (%s) already complete: kept", index + 1, len(mine), fold_dir.name)
                        continue
                    logger.info("fold %d/%d (%s): %d training, %d validation, %d test subjects", index + 1,
                                len(mine), fold_dir.name, len(fold.train_subjects), len(fold.val_subjects),
                                len(fold.test_subjects))
                    run_fold(config, data, fold, fold_dir, device=device, progress=progress,
                             tracker=tracker.unit(_unit(fold.fold), f"fold {index + 1}/{len(mine)}"), ctx=ctx)
                metrics = run_on_main(merge_folds, ctx, out, folds, data.class_names, protocol=config.cv.protocol)
            if final:
                # locked only now: a shard whose folds are done is not refused because another trains the final model
                try:
                    held.enter_context(entered_on_main(hold_unit(out, FINAL_DIR), ctx))
                except RunLockedError as exc:
                    logger.warning("final model not trained here: %s", exc)
                else:
                    train_final(config, data, out, device=device, progress=progress,
                                tracker=tracker.unit("final", "final"), ctx=ctx)
        except OutputError as exc:
            raise OutputError(f"{exc}; run state kept: {_kept(out, folds)}") from exc
    return metrics


def prepare_shards(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    final: bool = False,
    cross_validation: bool = True,
    recipe: str | Path | None = None,
    only_folds: Sequence[int] | None = None,
) -> tuple[list[int], bool]:
    """Every check of :func:`run_experiment`, then ``config.yaml`` and ``folds.json``: for a launcher that
    runs the folds in other processes (each ``run_experiment(..., only_folds=[f])`` into ``out_dir``).

    Returns:
        The fold numbers still to train (of ``only_folds``), and whether the final model is still to train.
    """
    out = Path(out_dir)
    data, folds, _, wanted, overlaps = _check_run(config, out, cross_validation=cross_validation, final=final,
                                                  only_folds=only_folds)
    with hold_lock(out / LOCK_NAME, what=f"run directory {out}", shared=True):
        folds = _start_shared_files(config, out, data, folds, overlaps, cross_validation=cross_validation,
                                    recipe=recipe)
    pending = [f.fold for f in folds if f.fold in wanted and not (out / _unit(f.fold) / "predictions.csv").exists()]
    return pending, final and not (out / FINAL_DIR / "model.pt").exists()


def _check_run(config: ExperimentConfig, out: Path, *, cross_validation: bool, final: bool,
               only_folds: Sequence[int] | None
               ) -> tuple[ExperimentData, list[Fold], torch.device, list[int], dict[int, list[int]]]:
    check_not_a_file(out)
    if (out / "audit_run.json").exists():  # engine/audit.py's marker: an audit's test-scored epochs are no train run
        raise ConfigError(f"{out} is a microexp audit directory, not a train run; use another --out")
    data, folds, device, overlaps = prepare_run(config, out, cross_validation=cross_validation, final=final)
    wanted = select_folds(folds, only_folds) if cross_validation else []
    return data, folds, device, wanted, overlaps


def _start_shared_files(config: ExperimentConfig, out: Path, data: ExperimentData, folds: list[Fold],
                        overlaps: dict[int, list[int]], *, cross_validation: bool,
                        recipe: str | Path | None) -> list[Fold]:
    """config.yaml (written or checked), the pretraining overlap record and folds.json, under the shared-files
    lock; returns the run's folds (those of an existing folds.json when resuming)."""
    with shared_files(out):
        _start_run(config, out, recipe=recipe)
        if overlaps:
            seen = {str(fold): subjects for fold, subjects in overlaps.items()}
            write_json(out / OVERLAP_NAME, {"model.pretrained": config.model.pretrained,
                                            "pretrain.allow_test_subjects": True,
                                            "test_subjects_seen_in_pretraining": seen})
        return resume_folds(config, out, folds, data) if cross_validation else folds


def select_folds(folds: list[Fold], only: Sequence[int] | None) -> list[int]:
    """The fold numbers a shard runs: ``only`` (checked against ``folds``), or every fold when None.

    Raises:
        ConfigError: ``only`` names a fold the protocol does not have.
    """
    numbers = [f.fold for f in folds]
    if only is None:
        return numbers
    unknown = sorted(set(only) - set(numbers))
    if unknown:
        raise ConfigError(f"--folds {format_fold_selection(only)}: fold(s) {', '.join(map(str, unknown))} do not "
                          f"exist; this run's protocol has folds {format_fold_selection(numbers)}")
    return sorted(set(only))


def merge_folds(out: Path, folds: list[Fold], class_names: list[str], *, protocol: str) -> dict[str, Any] | None:
    """The pooled ``predictions.csv`` and ``metrics.json`` once every fold of ``folds`` is complete.

    Written under the run's shared-files lock, so shards finishing at once merge one after the other (to
    the same files). Returns the metrics, or None (logging the missing folds) while some fold is not done.
    """
    with shared_files(out):
        missing = [f.fold for f in folds if not (out / _unit(f.fold) / "predictions.csv").exists()]
        if missing:
            logger.info("%d of %d folds complete; missing %s: metrics.json is written when the last one finishes "
                        "(microexp evaluate %s merges what is complete)", len(folds) - len(missing), len(folds),
                        format_fold_selection(missing), out)
            return None
        predictions = pd.concat([pd.read_csv(out / _unit(f.fold) / "predictions.csv", dtype={"dataset": str})
                                 for f in folds], ignore_index=True)
        write_csv(predictions, out / "predictions.csv")
        return write_metrics(out, predictions, class_names, protocol=protocol)


def fold_status(out: str | Path) -> tuple[list[Fold], list[int]]:
    """A run directory's folds (``folds.json``) and the numbers of those not complete yet."""
    run = Path(out)
    folds = load_folds(run / "folds.json")
    return folds, [f.fold for f in folds if not (run / _unit(f.fold) / "predictions.csv").exists()]


def merge_run(out: str | Path) -> dict[str, Any] | None:
    """:func:`merge_folds` for a run directory alone (its ``folds.json``, ``config.yaml`` and fold files):
    what a launcher does once its shards have finished. None while a fold is missing."""
    run = Path(out)
    folds, missing = fold_status(run)
    if missing:
        return merge_folds(run, folds, [], protocol="")  # logs what is missing
    protocol = load_config(run / "config.yaml").cv.protocol
    first = pd.read_csv(run / _unit(folds[0].fold) / "predictions.csv", nrows=0)
    classes = [c[len("prob_"):] for c in first.columns if c.startswith("prob_")]
    return merge_folds(run, folds, classes, protocol=protocol)


@contextlib.contextmanager
def shared_files(out: Path) -> Iterator[None]:
    """Hold the run directory's lock for its shared files (config.yaml, folds.json, pooled outputs): waits."""
    with hold_lock(out / SHARED_FILES_LOCK, what=f"the shared files of {out}", wait=True):
        yield


def hold_unit(out: Path, unit: str) -> Any:
    """The exclusive lock of one fold (``fold_XX``) or of the final model: one process trains it at a time."""
    (out / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
    return hold_lock(out / LOCKS_DIR / f"{unit}.lock", what=f"{unit} of run directory {out}")


def prepare_run(config: ExperimentConfig, out: Path, *, cross_validation: bool = True, final: bool = False
                ) -> tuple[ExperimentData, list[Fold], torch.device, dict[int, list[int]]]:
    """Everything a run checks before its directory is touched: the clip table and its labels, the clips'
    lengths and inputs, the folds, the encoder each fold (and the final model) loads from a pretraining
    folder, the device, and that the cache and ``out`` can be written.

    Returns:
        The labelled data, the folds (none when ``cross_validation`` is False), the device, and the test
        subjects each fold's encoder was pretrained on (only with ``pretrain.allow_test_subjects``; without it
        an overlap is a ``ConfigError`` here).
    """
    data = load_experiment_data(config)
    check_num_frames(config, data.table)
    if config.data.aus:  # a table without AUs fails now, not at its first fold (each fold still counts its own)
        fold_au_vocabulary(config, data.table, name=annotations_name(config), clips="clips of the table")
    pipeline = build_pipeline(config, model_spec(config))
    check_clip_inputs(data.table, pipeline)  # frames, or flow files for apex_flow
    # data.in_memory=on for a pipeline that cannot be served from stored tensors fails now
    in_memory_plan(pipeline, data.table, mode=config.data.in_memory, limit_mb=config.data.in_memory_limit_mb)
    folds = build_folds(config, data.table) if cross_validation else []
    for fold in [f.fold for f in folds] + ([None] if final else []):
        encoder_for_fold(config.model.pretrained, fold)  # a pretraining folder lacking an encoder fails now
    overlaps = check_pretrained_subjects(config, data.table, folds)  # refused unless pretrain.allow_test_subjects
    if config.loss.distill_from:  # the teachers have these folds and every model the student learns from
        check_teachers(config, folds, final=final)
    device = select_device(config.device)
    if config.data.cache_dir:
        probe_writable(Path(config.data.cache_dir), what="data.cache_dir ")
    probe_writable(out, what="")
    return data, folds, device, overlaps


def train_final(
    config: ExperimentConfig,
    data: ExperimentData,
    out: Path,
    *,
    device: torch.device,
    progress: bool | None = None,
    tracker: "UnitProgress | None" = None,
    ctx: DistributedContext | None = None,
) -> Path:
    """Train one model on every subject with the recipe's fixed schedule; write ``out/final/model.pt``.

    The schedule is the recipe's (``train.epochs``, last epoch kept): with every subject in training there
    is no held-out subject left to select an epoch honestly, so ``train.model_selection=val`` falls back to
    the last epoch, and the log and the checkpoint's ``extra`` say so. Resumable from ``final/last.pt``;
    an existing ``final/model.pt`` is kept.

    Returns:
        The path of ``model.pt``.
    """
    final_dir = out / FINAL_DIR
    target = final_dir / "model.pt"
    if run_on_main(target.exists, ctx or DistributedContext()):
        logger.info("final model already trained: kept %s", target)
        return target
    note = "fixed schedule: last of train.epochs, trained on every subject"
    if config.train.model_selection != "last":
        note += (f" (the recipe's train.model_selection={config.train.model_selection} needs held-out subjects, "
                 "which a model trained on every subject does not have)")
    table = final_training_table(config, data.table)
    if len(table) < len(data.table):
        note += f" of the training datasets ({', '.join(config.cv.train_datasets)})"
    logger.info("final model on all %d subjects (%d clips): %s", table["subject"].nunique(), len(table), note)
    fixed = dataclasses.replace(config, train=dataclasses.replace(config.train, model_selection="last"))
    empty = table.iloc[:0]
    extra = {"final": True, "trained_on": "all subjects", "selection": "last", "note": note,
             "recipe_model_selection": config.train.model_selection,
             "subjects": sorted(int(s) for s in table["subject"].unique()), "clips": len(table),
             "seen_subject_keys": seen_subject_keys(table)}
    _train_model(fixed, data, table, empty, final_dir, device=device, stream=FINAL_STREAM, fold=None,
                 name="final", progress=progress, tracker=tracker, model_extra=extra, ctx=ctx)
    logger.info("final model (all subjects) written: %s", target)
    return target


def run_fold(
    config: ExperimentConfig,
    data: ExperimentData,
    fold: Fold,
    fold_dir: Path,
    *,
    device: torch.device,
    progress: bool | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    tracker: "UnitProgress | None" = None,
    ctx: DistributedContext | None = None,
) -> pd.DataFrame:
    """Train a fresh model on the fold's training subjects, select it without test subjects, test once.

    ``on_epoch(epoch, record)``, when given, is called after each epoch has been logged and checkpointed,
    with that epoch's ``log.csv`` record (``val_acc``/``val_uf1``/``val_uar`` when the fold has validation
    subjects); an exception it raises (e.g. ``optuna.TrialPruned``) ends the fold and propagates.
    ``tracker`` reports epoch times and the run's ETA (a fold-only one when None). Under DDP (``ctx``) every
    rank trains and tests a share, ``on_epoch`` runs on every rank with the same record (it must decide the
    same everywhere), and rank 0 writes ``predictions.csv``; every rank returns the whole frame.
    """
    ctx = ctx or DistributedContext(device=device)
    table = data.table
    train_table = table[table["subject"].isin(fold.train_subjects)]
    val_table = table[table["subject"].isin(fold.val_subjects)]
    model, spec, loader_args = _train_model(
        config, data, train_table, val_table, fold_dir, device=device, stream=fold.fold, fold=fold.fold,
        test_subjects=fold.test_subjects, name=f"fold {fold.fold}", progress=progress, on_epoch=on_epoch,
        tracker=tracker,
        model_extra={"selection": config.train.model_selection,
                     # who the weights have seen: predict warns when "results" come from these subjects
                     "train_subjects": sorted(int(s) for s in fold.train_subjects),
                     "val_subjects": sorted(int(s) for s in fold.val_subjects),
                     # the same as (dataset, subject) of their sheets: matched across tables by extract-features
                     "seen_subject_keys": seen_subject_keys(table, [*fold.train_subjects, *fold.val_subjects]),
                     "pretrained": encoder_for_fold(config.model.pretrained, fold.fold)}, ctx=ctx)

    def predict(clips: pd.DataFrame, role: str) -> pd.DataFrame:
        dataset = build_dataset(config, clips, spec, train=False)
        part, indices = shard_dataset(dataset, ctx)  # each rank predicts a block; gathered in clip order
        loader = torch.utils.data.DataLoader(part, **loader_args)
        predictions = gather_predictions(evaluate(model, loader, device=device, dtype=dtype,
                                                  memory_format=memory_format, progress=progress,
                                                  description=f"fold {fold.fold} {role}"),
                                         ctx, indices=indices, total=len(dataset))
        return prediction_frame(predictions, clips, fold=fold.fold, class_names=data.class_names,
                                emotion_head=config.model.emotion_head)

    dtype = autocast_dtype(device, amp=config.train.amp, amp_dtype=config.train.amp_dtype)  # as in training
    memory_format = memory_format_for(model, device=device, channels_last=config.train.channels_last)
    if len(val_table) and not run_on_main((fold_dir / VAL_PREDICTIONS).exists, ctx):  # one decision for all ranks
        # the selected model on its validation subjects: what ensembles weigh their members on (never the test)
        val_frame = predict(val_table, "val")
        if ctx.is_main:
            write_csv(val_frame, fold_dir / VAL_PREDICTIONS)
    # the test subjects are touched here, once, after training and model selection are over
    frame = predict(table[table["subject"].isin(fold.test_subjects)], "test")
    if ctx.is_main:
        write_csv(frame, fold_dir / "predictions.csv")  # its presence marks the fold complete
    barrier()  # no rank goes on before the fold is marked complete
    return frame


def prediction_frame(predictions: Any, clips: pd.DataFrame, *, fold: int, class_names: list[str],
                     emotion_head: bool = True) -> pd.DataFrame:
    """A fold's per-clip predictions: clip, subject, fold, dataset (when the table has one), label, pred,
    ``prob_<class>`` and the AU columns."""
    frame = pd.DataFrame({"clip": predictions.clips, "subject": predictions.subjects, "fold": fold,
                          "label": predictions.labels, "pred": predictions.predicted})
    if not emotion_head:  # AU detection alone: the annotated emotion is kept, nothing predicted
        frame = frame.drop(columns="pred")
    if "dataset" in clips.columns:  # the source dataset of each clip: per-dataset metrics of mixed tables
        frame.insert(2, "dataset", frame["clip"].map(dict(zip(clips["clip"].astype(str), clips["dataset"]))))
    for index, name in enumerate(class_names[:predictions.probabilities.shape[1]]):
        frame[f"prob_{name}"] = predictions.probabilities[:, index]
    if predictions.au_probabilities is not None:
        frame = pd.concat([frame, au_prediction_columns(predictions)], axis=1)
    return frame


def _train_model(
    config: ExperimentConfig,
    data: ExperimentData,
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
    work_dir: Path,
    *,
    device: torch.device,
    stream: int,
    fold: int | None,
    name: str,
    test_subjects: Sequence[int] = (),
    progress: bool | None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    tracker: "UnitProgress | None" = None,
    model_extra: dict[str, Any] | None = None,
    ctx: DistributedContext | None = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train a fresh model on ``train_table`` in ``work_dir`` (resuming from its ``last.pt``), select it
    (last epoch, or best on ``val_table``), save ``model.pt``.

    ``stream`` keys every random stream (fold number; :data:`FINAL_STREAM` for the final model).

    Under DDP (``ctx``): every rank draws the same epoch stream and trains on its share, validation is
    sharded and gathered (every rank takes the same selection decision), rank 0 alone writes files.

    Returns:
        The selected model (unwrapped from DDP), its spec, and the DataLoader arguments for evaluation loaders.
    """
    ctx = ctx or DistributedContext(device=device)
    generator = seed_everything(config.seed * 1000 + stream, deterministic=config.deterministic)
    num_classes = len(data.class_names)
    class_counts = np.bincount(train_table["label"].to_numpy(), minlength=num_classes).tolist()
    absent = [c for c, n in zip(data.class_names, class_counts) if n == 0]
    if absent and len(train_table):
        logger.warning("%s: no training clip of class(es) %s (the class list comes from the whole table, e.g. "
                       "data.class_map=identity): the model cannot learn them", name, ", ".join(absent))

    model_kwargs = {"num_frames": config.data.num_frames, "input_size": config.data.size, **config.model.kwargs}
    emotion = config.model.emotion_head  # false: AU detection alone (no emotion classifier)
    vocabulary = fold_au_vocabulary(config, train_table, name=name)  # None unless data.aus
    if vocabulary is not None and vocabulary.dropped:
        logger.info("%s: %d AUs learnt (%s); %d rarer than %d dropped (%s)", name, len(vocabulary),
                    ", ".join(vocabulary.names), len(vocabulary.dropped), vocabulary.min_count,
                    ", ".join(f"AU{c} x{n}" for c, n in vocabulary.dropped))
    methods = config.noisy_labels
    if vocabulary is not None or needs_task_outputs(methods):  # task heads: the AU head, the confidence head
        model_kwargs.update(aus=list(vocabulary.codes) if vocabulary is not None else [],
                            au_head=config.model.au_head, confidence_head=methods.confidence)
    spec = model_spec(config)
    pretrained = encoder_for_fold(config.model.pretrained, fold)  # a pretraining folder: this fold's encoder
    net = create_model(config.model.name, num_classes=num_classes if emotion else 0, pretrained=pretrained,
                       **model_kwargs)
    au_targets = vocabulary.encode(train_table["aus"]) if vocabulary is not None else None
    if au_targets is not None and config.model.au_head == "graph":  # the training clips' co-occurrence only
        net.set_au_cooccurrence(torch.from_numpy(au_cooccurrence(au_targets)))
    # the GPU path (engine/precision.py): autocast type and its GradScaler, the family's memory format, compile
    configure_backends(device, deterministic=config.deterministic)
    dtype = autocast_dtype(device, amp=config.train.amp, amp_dtype=config.train.amp_dtype)
    scaler = make_grad_scaler(device, dtype)
    memory_format = memory_format_for(net, device=device, channels_last=config.train.channels_last)
    net = prepare_model(net, device=device, memory_format=memory_format, compile=config.train.compile)
    logger.info("%s: precision %s, memory format %s%s", name, dtype_name(dtype),
                str(memory_format).removeprefix("torch."),
                ", compiled" if config.train.compile and device.type == "cuda" else "")
    # DDP under torchrun (the model itself otherwise); checkpoints read and write the unwrapped ``net``
    # feature mixing classifies mixed features (the graph head's emotion coupling sits unused), and an AU-only
    # model leaves a two-stream fusion weight unused: DDP must look for parameters without gradients there
    model = wrap_model(net, ctx, device=device, sync_batchnorm=config.train.sync_batchnorm,
                       find_unused_parameters=methods.mix_fraction > 0 or not emotion)
    train_set = build_dataset(config, train_table, spec, train=True)
    # validation and test loaders are iterated once per epoch or once per fold: persistent workers there
    # would only triple the live workers (and their memory) while the train loader's are alive too
    loader_args = {"batch_size": config.train.batch_size, "num_workers": config.data.num_workers,
                   "worker_init_fn": seed_worker, "persistent_workers": False, "pin_memory": device.type == "cuda"}
    # a classifier-only last stage (train.classifier_epochs): the representation stage ends before it, and a
    # progressive sampler reaches class balance when it does
    retrain_from = config.train.epochs - config.train.classifier_epochs
    if config.train.classifier_epochs and ctx.distributed:  # DDP keeps the set of trained parameters fixed
        raise ConfigError("train.classifier_epochs: the classifier-only stage does not run under torchrun (DDP); "
                          "run it in one process per fold (microexp train --folds F, or --launcher)")
    sampler_kwargs = {"epochs": retrain_from} if config.train.sampler == "progressive" else {}
    # the sampler draws from its own generator: the DataLoader's one also feeds worker base seeds, and how
    # often it is drawn from depends on num_workers and persistent workers
    sampler_generator = torch.Generator()
    index_sampler = build_sampler(config.train.sampler, train_set.labels, generator=sampler_generator,
                                  **sampler_kwargs)
    if config.train.classifier_epochs:
        index_sampler = StagedSampler(index_sampler, build_sampler("class_balanced", train_set.labels,
                                                                   generator=sampler_generator),
                                      switch_epoch=retrain_from)
    sampler = EpochIndexSampler(index_sampler)
    # every clip trains each epoch: one process drops only a last batch of one (batch norm cannot train on it);
    # under DDP each rank takes its share of the same stream, in the same number of batches on every rank
    batching = train_batches(sampler, ctx, batch_size=config.train.batch_size)  # sampler or batch_sampler
    # the clips of the whole table held once per process (shared by the folds), when data.in_memory chooses it
    store = _in_memory_store(config, data, spec, name=name)
    if store is not None:
        # under DDP each rank draws its own crops and flips for its share
        seed = (config.seed, ctx.rank) if ctx.distributed else config.seed
        train_loader = store.loader(train_table, **batching, train=True, seed=seed, pin_memory=device.type == "cuda")
    else:
        worker_args = {k: v for k, v in loader_args.items() if k != "batch_size"}
        train_loader = torch.utils.data.DataLoader(train_set, generator=generator, **batching,
                                                   **{**worker_args, "persistent_workers": config.data.num_workers > 0})
    val_set = build_dataset(config, val_table, spec, train=False) if len(val_table) else None
    val_part, val_indices = shard_dataset(val_set, ctx) if val_set is not None else (None, [])
    if store is not None and val_set is not None:
        val_loader = store.loader(val_table.iloc[val_indices], batch_size=config.train.batch_size,
                                  pin_memory=device.type == "cuda")
    else:
        val_loader = torch.utils.data.DataLoader(val_part, **loader_args) if val_part is not None else None
    loss_fn = build_loss(config.loss.name, class_counts, **_loss_kwargs(config)).to(device)  # weight buffers
    relabel_log = work_dir / RELABEL_LOG
    au_pos_weight = None if au_targets is None else torch.from_numpy(au_positive_weights(au_targets))
    flip = (flip_model_input(modality=spec.modality, flow_channels=spec.flow_channels)
            if methods.eac_weight > 0 else None)  # EAC's second view
    soft_targets = None
    if config.loss.distill_from:  # the teachers' soft labels of this fold's training clips (never its test clips)
        soft_targets = teacher_targets(config, train_table, data.class_names, fold=fold, test_subjects=test_subjects,
                                       work_dir=work_dir, device=device, write=ctx.is_main)
    objective = Objective(loss_fn if emotion else None, au_vocabulary=vocabulary, au_weight=config.loss.au_weight,
                          au_pos_weight=au_pos_weight, methods=methods, flip=flip, soft_targets=soft_targets,
                          distill_weight=config.loss.distill_weight,
                          distill_temperature=config.loss.distill_temperature).to(device)
    optimizer = build_optimizer(model, name=config.train.optimizer, lr=config.train.lr,
                                weight_decay=config.train.weight_decay, momentum=config.train.momentum)
    scheduler = build_scheduler(optimizer, name=config.train.schedule, epochs=config.train.epochs,
                                steps_per_epoch=max(1, len(train_loader)), warmup_epochs=config.train.warmup_epochs,
                                step_size=config.train.step_size,
                                # the classifier stage restarts the schedule from the base rate
                                restart_epoch=retrain_from if config.train.classifier_epochs else None)
    data_config = _data_config(config, spec)
    start_epoch, best = _resume(work_dir / "last.pt", net, optimizer, scheduler, scaler, fold,
                                name=name)  # on every rank
    log_path = work_dir / "log.csv"
    # a kill between a log row and its last.pt leaves a row the resumed run writes again: keep exactly the
    # rows of the epochs last.pt holds, so log.csv has one row per epoch
    rows = read_log(log_path, before=start_epoch)
    if log_path.exists() and ctx.is_main:
        write_log(log_path, rows)
    relabel_rows = read_relabelled(relabel_log, before=start_epoch) if config.noisy_labels.relabel else []
    objective.relabelled.update({r["clip"]: data.class_names.index(r["new_label"]) for r in relabel_rows})
    relabel_loader = (_relabel_loader(config, train_table, spec, store, loader_args) if config.noisy_labels.relabel
                      else None)
    if tracker is None:
        tracker = RunProgress(logger).unit(name, name)
    tracker.begin(config.train.epochs - start_epoch)
    tensorboard = _tensorboard_writer(work_dir.parent / "tensorboard" / work_dir.name) if ctx.is_main else None
    for epoch in range(start_epoch, config.train.epochs):
        epoch_start = time.perf_counter()
        # every epoch's random streams derive from (seed, stream, epoch) alone, so a resumed fold draws the
        # same batches and dropout masks as an uninterrupted one
        epoch_seed = int(np.random.SeedSequence([config.seed, stream, epoch]).generate_state(1)[0])
        sampler_generator.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        for part in (sampler, objective, train_set):
            part.set_epoch(epoch)
        objective.reseed(epoch_seed + ctx.rank)  # erasing boxes and mixing partners: per rank, per epoch
        classifier_stage = epoch >= retrain_from
        if classifier_stage:
            retrain_classifier_only(net, optimizer, fresh=epoch == retrain_from, name=name)
        stats = train_one_epoch(model, train_loader, loss_fn=objective, optimizer=optimizer, scheduler=scheduler,
                                device=device, grad_clip=config.train.grad_clip, dtype=dtype,
                                memory_format=memory_format, scaler=scaler, progress=progress,
                                description=f"{name} epoch {epoch + 1}/{config.train.epochs}",
                                frozen_normalisation=classifier_stage)
        stats = gather_epoch_stats(stats, ctx)  # over every clip of the epoch, the same on every rank
        if relabel_loader is not None and epoch + 1 >= config.noisy_labels.relabel_warmup:
            # decided on rank 0 (the ranks' batch-norm statistics differ slightly) and given to every rank
            new_rows = run_on_main(relabel_training_clips, ctx, net, relabel_loader, dict(objective.relabelled),
                                   config, data.class_names, epoch=epoch, device=device, dtype=dtype,
                                   memory_format=memory_format)
            objective.relabelled.update({r["clip"]: data.class_names.index(r["new_label"]) for r in new_rows})
            relabel_rows += new_rows
            if ctx.is_main:
                write_csv(pd.DataFrame(relabel_rows, columns=list(RELABEL_COLUMNS)), relabel_log)
        record = {"fold": fold if fold is not None else "final", "epoch": epoch, "train_loss": stats.loss,
                  "train_acc": stats.accuracy, "lr": stats.lr, "seconds": round(stats.seconds, 3),
                  "data_seconds": round(stats.data_seconds, 3)}
        if relabel_loader is not None:
            record["relabelled"] = len(objective.relabelled)
        if val_loader is not None and emotion:  # (an AU-only model has no emotion to validate)
            val = gather_predictions(evaluate(net, val_loader, device=device, loss_fn=loss_fn, dtype=dtype,
                                              memory_format=memory_format, progress=False, description=f"{name} val"),
                                     ctx, indices=val_indices, total=len(val_set))
            val_metrics = compute_metrics(val.labels, val.predicted, num_classes=num_classes)
            record.update(val_loss=val.loss, val_acc=val_metrics.acc, val_uf1=val_metrics.uf1, val_uar=val_metrics.uar)
            score = getattr(val_metrics, config.train.selection_metric)
            if config.train.model_selection == "val" and (best is None or score > best["score"]):
                best = {"score": float(score), "epoch": epoch}
                if ctx.is_main:
                    save_checkpoint(work_dir / "best.pt", model=net, class_names=data.class_names, data=data_config,
                                    epoch=epoch, fold=fold, metrics={f"val_{config.train.selection_metric}": score})
        rows.append(record)
        if ctx.is_main:
            write_log(log_path, rows)
        if tensorboard is not None:
            for key, value in record.items():
                if key not in ("fold", "epoch"):
                    tensorboard.add_scalar(key, value, epoch)
        if ctx.is_main:  # optimizer and scheduler states are the same on every rank (same steps)
            save_checkpoint(work_dir / "last.pt", model=net, class_names=data.class_names, data=data_config,
                            epoch=epoch, fold=fold, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            extra={"best": best or {}})
        val_text = (f" val {config.train.selection_metric} {record.get('val_' + config.train.selection_metric, float('nan')):.3f}"
                    if val_loader is not None else "")
        tracker.epoch_done(epoch, config.train.epochs, time.perf_counter() - epoch_start,
                           f"loss {stats.loss:.4f} acc {stats.accuracy:.3f}{val_text}")
        if on_epoch is not None:
            on_epoch(epoch, record)
    if tensorboard is not None:
        tensorboard.close()
    barrier()  # rank 0's last best.pt is complete before any rank reads it
    if config.train.model_selection == "val" and (work_dir / "best.pt").exists():
        net.load_state_dict(load_checkpoint(work_dir / "best.pt")["state_dict"])
    if ctx.is_main:
        save_checkpoint(work_dir / "model.pt", model=net, class_names=data.class_names, data=data_config,
                        epoch=config.train.epochs - 1, fold=fold, extra=dict(model_extra or {}))
    return net, spec, loader_args


#: a fold's record of re-labelled training clips (``noisy_labels.relabel``), in its folder
RELABEL_LOG = "relabelled.csv"
RELABEL_COLUMNS = ("clip", "subject", "label", "new_label", "epoch")


def retrain_classifier_only(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, fresh: bool,
                            name: str) -> None:
    """Freeze every weight but the emotion classifier's (``classifier_prefixes``); ``fresh`` re-initialises
    the classifier in place (normal std 0.01, zero bias: the optimizer keeps its parameters) and clears
    their optimizer state (AdamW's moments of the first stage).

    Idempotent, so a fold resumed inside the classifier stage freezes the same weights again.
    """
    prefixes = model.classifier_prefixes()
    trained = []
    for key, parameter in model.named_parameters():
        keep = key.startswith(prefixes)
        parameter.requires_grad_(keep)
        if keep:
            trained.append(key)
            if fresh:
                with torch.no_grad():
                    torch.nn.init.normal_(parameter, std=0.01) if parameter.ndim > 1 else parameter.zero_()
                optimizer.state.pop(parameter, None)
    if not trained:
        raise ConfigError(f"{name}: train.classifier_epochs: model {model.spec.name} has no classifier weights "
                          f"under {', '.join(prefixes)}")
    if fresh:
        logger.info("%s: classifier stage: %s retrained alone on class-balanced sampling", name, ", ".join(trained))


def read_relabelled(path: Path, *, before: int) -> list[dict[str, Any]]:
    """The rows of a fold's ``relabelled.csv`` from epochs ``< before`` (what a resumed fold keeps)."""
    if before <= 0 or not path.is_file():
        return []
    frame = pd.read_csv(path, dtype={"clip": str, "label": str, "new_label": str})
    return [row for row in frame.to_dict("records") if int(row["epoch"]) < before]


def _relabel_loader(config: ExperimentConfig, train_table: pd.DataFrame, spec: Any, store: InMemoryClips | None,
                    loader_args: dict[str, Any]) -> Any:
    """The training clips as evaluation sees them (no augmentation), for the re-labelling pass."""
    if store is not None:
        return store.loader(train_table, batch_size=config.train.batch_size)
    return torch.utils.data.DataLoader(build_dataset(config, train_table, spec, train=False), **loader_args)


def relabel_training_clips(model: torch.nn.Module, loader: Any, relabelled: dict[str, int], config: ExperimentConfig,
                           class_names: list[str], *, epoch: int, device: torch.device, dtype: Any,
                           memory_format: Any) -> list[dict[str, Any]]:
    """One pass over the training clips: re-label those the template rule names (:func:`microexp.label_noise.relabel`).

    Templates are the class means of the confident clips' normalised features under the current labels; a clip
    already re-labelled (in ``relabelled``, clip -> label, not changed here) keeps its new label for the rest of
    training. Returns the new rows of ``relabelled.csv``. Only training clips are ever passed here.
    """
    n = config.noisy_labels
    seen = evaluate(model, loader, device=device, dtype=dtype, memory_format=memory_format, progress=False,
                    description="re-labelling pass", features=True)
    current = np.asarray([relabelled.get(c, int(label)) for c, label in zip(seen.clips, seen.labels)], dtype=np.int64)
    features = torch.from_numpy(seen.features).float()
    probabilities = torch.from_numpy(seen.probabilities).float()
    labels = torch.from_numpy(current)
    templates, has_template = class_templates(features, labels, probabilities, num_classes=len(class_names),
                                              min_confidence=n.relabel_confidence)
    new = relabel(features, labels, probabilities, templates, has_template, min_confidence=n.relabel_confidence,
                  distance_ratio=n.relabel_distance_ratio).numpy()
    rows = []
    for clip, subject, annotated, old, label in zip(seen.clips, seen.subjects, seen.labels, current, new):
        if label != old and clip not in relabelled:
            rows.append({"clip": clip, "subject": int(subject), "label": class_names[int(annotated)],
                         "new_label": class_names[int(label)], "epoch": epoch})
    if rows:
        logger.info("epoch %d: %d training clip(s) re-labelled (%d in all)", epoch + 1, len(rows),
                    len(relabelled) + len(rows))
    return rows


def fold_au_vocabulary(config: ExperimentConfig, train_table: pd.DataFrame, *, name: str,
                       clips: str = "training clips") -> AUVocabulary | None:
    """The AUs a fold learns, from its training clips alone (None unless ``data.aus``).

    Raises:
        ConfigError: no AU reaches ``data.au_min_count`` among the training clips.
    """
    if not config.data.aus:
        return None
    vocabulary = build_au_vocabulary(train_table["aus"], min_count=config.data.au_min_count)
    if not len(vocabulary):
        seen = ", ".join(f"AU{c} x{n}" for c, n in vocabulary.dropped) or "none"
        raise ConfigError(f"{name}: data.aus=true but no AU occurs data.au_min_count={config.data.au_min_count} "
                          f"times among the {vocabulary.clips} {clips} (seen: {seen}); lower data.au_min_count "
                          "or check the table's aus column")
    return vocabulary


def au_prediction_columns(predictions: Any) -> pd.DataFrame:
    """``aus`` (true, normalised), ``aus_pred`` (probability >= :data:`AU_THRESHOLD`) and ``au_prob_<code>``."""
    probabilities = predictions.au_probabilities
    codes = list(predictions.au_codes)
    present = probabilities >= AU_THRESHOLD
    columns = {"aus": [normalise_aus(a, strict=False) for a in predictions.aus],
               "aus_pred": ["+".join(c for c, on in zip(codes, row) if on) for row in present]}
    columns.update({f"{AU_PROB_PREFIX}{code}": probabilities[:, i] for i, code in enumerate(codes)})
    return pd.DataFrame(columns)


def _unit(fold: int) -> str:
    return f"fold_{fold:02d}"


# ----------------------------------------------------------------------------------------------------
# the run directory: checks before it is touched, the lock, config.yaml and folds.json


def _start_run(config: ExperimentConfig, out: Path, *, recipe: str | Path | None = None) -> None:
    """Write ``config.yaml``, or check that the run being resumed has the same result-relevant config.

    Keys that cannot change results (``config.RESULT_NEUTRAL_KEYS``: workers, device, cache folder) may
    differ on resume; they are logged and ``config.yaml`` keeps the values the run started with (it is the
    record of the run, and rewriting it on every resume would churn it).
    """
    path = out / "config.yaml"
    if recipe is not None and path.exists() and Path(recipe).resolve() == path.resolve():
        recipe = _recorded_recipe(path)  # a shard started from the run's own config.yaml keeps its header
    if path.exists() and not _anything_trained(out):
        # left by a start that failed before training (or by an older microexp that wrote it first)
        logger.info("%s: replacing the config.yaml of a run that never started training", out)
        save_config(config, path, recipe=recipe)
        return
    if path.exists():
        previous = load_config(path)
        differences = config_differences(previous, config)
        if differences:
            raise ConfigError(f"{out} holds a run with a different config.yaml ({'; '.join(differences)}); use a "
                              "new --out, or the same config to resume")
        neutral = config_differences(previous, config, ignore=())
        if neutral:
            logger.info("resuming with %s (cannot change results; %s keeps the values the run started with)",
                        "; ".join(neutral), path)
        return
    save_config(config, path, recipe=recipe)


def _recorded_recipe(path: Path) -> str | None:
    """The ``# recipe: PATH`` header of a saved config.yaml (see :func:`microexp.config.save_config`)."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    return first[len("# recipe: "):].strip() or None if first.startswith("# recipe: ") else None


def _anything_trained(out: Path) -> bool:
    return (out / "folds.json").exists() or (out / FINAL_DIR).exists() or any(out.glob("fold_*"))


def resume_folds(config: ExperimentConfig, out: Path, folds: list[Fold], data: ExperimentData) -> list[Fold]:
    """The folds of ``folds.json`` when resuming (checked against the table), else ``folds``, saved."""
    folds_path = out / "folds.json"
    if not folds_path.exists():
        save_folds(folds, folds_path)
        return folds
    stored = load_folds(folds_path)
    try:
        check_folds(stored, data.table["subject"].to_numpy(), protocol=SPLITS_PROTOCOL[config.cv.protocol])
    except MicroexpError as exc:
        raise ConfigError(f"{folds_path}: does not fit the clip table ({exc})") from exc
    return stored


def _kept(out: Path, folds: list[Fold]) -> str:
    """What survives an interrupted run: completed folds, resume points, the final model's state."""
    complete = [f.fold for f in folds if (out / f"fold_{f.fold:02d}" / "predictions.csv").exists()]
    parts = [f"{len(complete)}/{len(folds)} folds complete" + (f" ({', '.join(map(str, complete))})" if complete else "")]
    for f in folds:
        last = out / f"fold_{f.fold:02d}" / "last.pt"
        if f.fold not in complete and last.exists():
            parts.append(f"fold {f.fold} resumes from {last}")
    final_last = out / FINAL_DIR / "last.pt"
    if (out / FINAL_DIR / "model.pt").exists():
        parts.append(f"final model {out / FINAL_DIR / 'model.pt'}")
    elif final_last.exists():
        parts.append(f"final model resumes from {final_last}")
    return ", ".join(parts) + "; free space or fix the folder, then rerun the same command to resume"


def model_spec(config: ExperimentConfig) -> Any:
    """The ``ModelSpec`` of the recipe's model (frames and size from ``data``), without building it."""
    return get_model_spec(config.model.name, num_frames=config.data.num_frames, input_size=config.data.size,
                          **config.model.kwargs)


def build_pipeline(config: ExperimentConfig, spec: Any) -> ClipPipeline:
    """The preprocessing a recipe's ``data`` section describes, for a model with ``spec`` (its modality,
    mean, std): what the Dataset runs and the checkpoint stores."""
    d = config.data
    return ClipPipeline.for_model(
        spec, num_frames=d.num_frames, sampling=d.sampling, stride=d.stride, reference_fps=d.reference_fps,
        size=d.size, crop_scale=d.crop_scale, flip=d.flip, grayscale=d.grayscale,
        frame_difference=d.frame_difference, flow_method=d.flow_method, modality=d.modality,
        apex_flow=ApexFlowSpec(method=d.apex_flow_method, compute_size=d.apex_flow_size, encoding=d.apex_encoding),
    )


def build_dataset(config: ExperimentConfig, table: pd.DataFrame, spec: Any, *, train: bool) -> MicroExpressionDataset:
    """The Dataset a recipe's ``data`` section describes, for a model with ``spec``."""
    d = config.data
    return MicroExpressionDataset(table, pipeline=build_pipeline(config, spec), train=train, backend=d.backend,
                                  cache_dir=d.cache_dir, seed=config.seed)


def _in_memory_store(config: ExperimentConfig, data: ExperimentData, spec: Any, *, name: str) -> InMemoryClips | None:
    """The store of the whole clip table when ``data.in_memory`` chooses it (the choice is logged), else None."""
    d = config.data
    plan = in_memory_plan(build_pipeline(config, spec), data.table, mode=d.in_memory, limit_mb=d.in_memory_limit_mb)
    logger.info("%s: %s", name, plan.reason)
    if not plan.use:
        return None
    return InMemoryClips.shared(build_dataset(config, data.table, spec, train=False), num_workers=d.num_workers)


def _loss_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    """The loss section's values that the chosen loss accepts."""
    accepted = set(loss_options(config.loss.name))
    values = {LOSS_FIELDS[k]: getattr(config.loss, k) for k in LOSS_FIELDS}
    return {k: v for k, v in values.items() if k in accepted and v is not None}


def _data_config(config: ExperimentConfig, spec: Any) -> dict[str, Any]:
    """What a checkpoint records of the data: the preprocessing pipeline and the class map (plain types)."""
    return {"pipeline": build_pipeline(config, spec).to_dict(), "class_map": config.data.class_map}


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            scaler: torch.amp.GradScaler, fold: int | None, *, name: str) -> tuple[int, dict[str, Any] | None]:
    if not path.exists():
        return 0, None
    payload = load_checkpoint(path)
    if payload.get("fold") != fold:
        raise ConfigError(f"{path}: belongs to fold {payload.get('fold')}, not {name}")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler.is_enabled() and payload.get("scaler"):  # fp16: the loss scale found so far (none in bf16/fp32)
        scaler.load_state_dict(payload["scaler"])
    logger.info("%s: resuming after epoch %d", name, payload["epoch"] + 1)
    best = payload.get("extra", {}).get("best") or None
    return int(payload["epoch"]) + 1, best


def _tensorboard_writer(log_dir: Path) -> Any:
    """A SummaryWriter when the optional ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))
