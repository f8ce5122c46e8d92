"""A cross-validation experiment: folds -> fresh model per fold -> test once -> pooled and fold metrics.

Evaluation integrity is built in, not left to discipline:

* folds are subject-independent and checked for leakage before anything trains (``splits.check_folds``);
* model, optimizer, scheduler, loss and sampler are created anew for every fold;
* class counts for losses and samplers come from the fold's training subjects only;
* model selection sees training subjects only: the last epoch (fixed schedule) or the best epoch on an
  inner validation split carved from the training subjects; the test subjects are evaluated exactly
  once per fold, after training, and their predictions are never read before then;
* a killed run resumes at the last completed epoch of the fold it was in; completed folds are kept.

Outputs in the run directory: ``config.yaml``, ``folds.json``, ``fold_XX/`` (``log.csv``, ``last.pt``,
``model.pt``, ``predictions.csv``), ``predictions.csv``, ``metrics.json`` and plots.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from microexp.config import ExperimentConfig, save_config
from microexp.data.annotations import load_clip_table
from microexp.data.class_maps import apply_class_map, get_class_map
from microexp.data.dataset import EpochIndexSampler, MicroExpressionDataset
from microexp.data.flow import FlowSpec
from microexp.data.samplers import build_sampler
from microexp.data.sampling import SamplingSpec
from microexp.data.transforms import TransformSpec
from microexp.engine.checkpoint import load_checkpoint, save_checkpoint
from microexp.engine.trainer import build_optimizer, build_scheduler, evaluate, select_device, train_one_epoch
from microexp.errors import ConfigError
from microexp.losses import build_loss, loss_options
from microexp.metrics import compute_metrics, cross_validation_summary
from microexp.models import create_model, get_model_spec
from microexp.seed import seed_everything, seed_worker
from microexp.splits import Fold, check_folds, fixed_split, kfold_subject_splits, load_folds, loso_splits, save_folds

logger = logging.getLogger(__name__)

#: cv.protocol (the recipe's word) -> the protocol name microexp.splits checks folds under
SPLITS_PROTOCOL = {"kfold": "kfold", "loso": "loso", "split": "fixed"}

LOSS_FIELDS = {"gamma": "gamma", "beta": "beta", "label_smoothing": "label_smoothing", "max_m": "max_m",
               "scale": "s", "drw_epoch": "drw_epoch"}


@dataclass(frozen=True)
class ExperimentData:
    """The clip table with labels, and the class names in label order."""

    table: pd.DataFrame
    class_names: list[str]


def load_experiment_data(config: ExperimentConfig) -> ExperimentData:
    """Read, validate and label the clip table named by ``config.data``."""
    if not config.data.annotations:
        raise ConfigError("data.annotations is empty: set it in the recipe or with --set data.annotations=PATH")
    result = load_clip_table(config.data.annotations, format=config.data.format, root=config.data.root)
    table = result.resolve(strict=config.data.strict)
    class_map = get_class_map(config.data.class_map)
    labelled, problems = apply_class_map(table, class_map, strict=config.data.strict)
    for problem in problems:
        logger.warning("%s", problem)
    if labelled.empty:
        raise ConfigError(f"{config.data.annotations}: no clip left after validation and class map {class_map.name!r}")
    return ExperimentData(table=labelled.reset_index(drop=True), class_names=list(class_map.classes))


def build_folds(config: ExperimentConfig, table: pd.DataFrame) -> list[Fold]:
    """The outer folds of ``config.cv`` (validation subjects carved from training subjects)."""
    subjects = table["subject"].to_numpy()
    labels = table["label"].to_numpy()
    cv = config.cv
    if cv.protocol == "kfold":
        folds = kfold_subject_splits(subjects, labels, k=cv.folds, seed=config.seed, stratify=cv.stratify,
                                     val_fraction=cv.val_fraction)
    elif cv.protocol == "loso":
        folds = loso_splits(subjects, labels=labels, val_fraction=cv.val_fraction, seed=config.seed)
    else:
        folds = [fixed_split(subjects, cv.test_subjects, labels=labels, val_fraction=cv.val_fraction,
                             seed=config.seed)]
    check_folds(folds, subjects, protocol=SPLITS_PROTOCOL[cv.protocol])
    return folds


def run_experiment(config: ExperimentConfig, out_dir: str | Path, *, progress: bool | None = None) -> dict[str, Any]:
    """Train and test every fold (resuming where a previous run stopped) and write all outputs.

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(config, out)
    save_config(config, out / "config.yaml")
    data = load_experiment_data(config)
    folds_path = out / "folds.json"
    if folds_path.exists():
        folds = load_folds(folds_path)
        check_folds(folds, data.table["subject"].to_numpy(), protocol=SPLITS_PROTOCOL[config.cv.protocol])
    else:
        folds = build_folds(config, data.table)
        save_folds(folds, folds_path)
    device = select_device(config.device)
    logger.info("%d clips, %d subjects, %d folds, model %s on %s", len(data.table),
                data.table["subject"].nunique(), len(folds), config.model.name, device)
    for fold in folds:
        fold_dir = out / f"fold_{fold.fold:02d}"
        if (fold_dir / "predictions.csv").exists():
            logger.info("fold %d already complete: kept", fold.fold)
            continue
        run_fold(config, data, fold, fold_dir, device=device, progress=progress)
    predictions = pd.concat([pd.read_csv(out / f"fold_{f.fold:02d}" / "predictions.csv") for f in folds],
                            ignore_index=True)
    predictions.to_csv(out / "predictions.csv", index=False)
    return write_metrics(out, predictions, data.class_names, protocol=config.cv.protocol)


def run_fold(
    config: ExperimentConfig,
    data: ExperimentData,
    fold: Fold,
    fold_dir: Path,
    *,
    device: torch.device,
    progress: bool | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Train a fresh model on the fold's training subjects, select it without test subjects, test once.

    ``on_epoch(epoch, record)``, when given, is called after each epoch has been logged and checkpointed,
    with that epoch's ``log.csv`` record (``val_acc``/``val_uf1``/``val_uar`` when the fold has validation
    subjects); an exception it raises (e.g. ``optuna.TrialPruned``) ends the fold and propagates.
    """
    fold_dir.mkdir(parents=True, exist_ok=True)
    generator = seed_everything(config.seed * 1000 + fold.fold, deterministic=config.deterministic)
    table = data.table
    train_table = table[table["subject"].isin(fold.train_subjects)]
    val_table = table[table["subject"].isin(fold.val_subjects)]
    num_classes = len(data.class_names)
    class_counts = np.bincount(train_table["label"].to_numpy(), minlength=num_classes).tolist()

    model_kwargs = {"num_frames": config.data.num_frames, "input_size": config.data.size, **config.model.kwargs}
    spec = get_model_spec(config.model.name, **model_kwargs)
    model = create_model(config.model.name, num_classes=num_classes, pretrained=config.model.pretrained,
                         **model_kwargs).to(device)
    train_set = build_dataset(config, train_table, spec, train=True)
    loader_args = {"batch_size": config.train.batch_size, "num_workers": config.data.num_workers,
                   "worker_init_fn": seed_worker, "persistent_workers": config.data.num_workers > 0,
                   "pin_memory": device.type == "cuda"}
    sampler_kwargs = {"epochs": config.train.epochs} if config.train.sampler == "progressive" else {}
    # the sampler draws from its own generator: the DataLoader's one also feeds worker base seeds, and how
    # often it is drawn from depends on num_workers and persistent workers
    sampler_generator = torch.Generator()
    sampler = EpochIndexSampler(build_sampler(config.train.sampler, train_set.labels, generator=sampler_generator,
                                              **sampler_kwargs))
    train_loader = torch.utils.data.DataLoader(train_set, sampler=sampler, drop_last=len(train_set) > config.train.batch_size,
                                               generator=generator, **loader_args)
    val_loader = (torch.utils.data.DataLoader(build_dataset(config, val_table, spec, train=False), **loader_args)
                  if len(val_table) else None)
    loss_fn = build_loss(config.loss.name, class_counts, **_loss_kwargs(config)).to(device)  # weight buffers
    optimizer = build_optimizer(model, name=config.train.optimizer, lr=config.train.lr,
                                weight_decay=config.train.weight_decay, momentum=config.train.momentum)
    scheduler = build_scheduler(optimizer, name=config.train.schedule, epochs=config.train.epochs,
                                steps_per_epoch=max(1, len(train_loader)), warmup_epochs=config.train.warmup_epochs,
                                step_size=config.train.step_size)
    data_config = _data_config(config)
    start_epoch, best = _resume(fold_dir / "last.pt", model, optimizer, scheduler, fold)
    log_path = fold_dir / "log.csv"
    tensorboard = _tensorboard_writer(fold_dir.parent / "tensorboard" / fold_dir.name)
    for epoch in range(start_epoch, config.train.epochs):
        # every epoch's random streams derive from (seed, fold, epoch) alone, so a resumed fold draws the
        # same batches and dropout masks as an uninterrupted one
        epoch_seed = int(np.random.SeedSequence([config.seed, fold.fold, epoch]).generate_state(1)[0])
        sampler_generator.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        for part in (sampler, loss_fn, train_set):
            part.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                                device=device, grad_clip=config.train.grad_clip, amp=config.train.amp,
                                channels_last=config.train.channels_last, progress=progress,
                                description=f"fold {fold.fold} epoch {epoch + 1}/{config.train.epochs}")
        record = {"fold": fold.fold, "epoch": epoch, "train_loss": stats.loss, "train_acc": stats.accuracy,
                  "lr": stats.lr, "seconds": round(stats.seconds, 3), "data_seconds": round(stats.data_seconds, 3)}
        if val_loader is not None:
            val = evaluate(model, val_loader, device=device, loss_fn=loss_fn, amp=config.train.amp, progress=False,
                           description=f"fold {fold.fold} val")
            val_metrics = compute_metrics(val.labels, val.predicted, num_classes=num_classes)
            record.update(val_loss=val.loss, val_acc=val_metrics.acc, val_uf1=val_metrics.uf1, val_uar=val_metrics.uar)
            score = getattr(val_metrics, config.train.selection_metric)
            if config.train.model_selection == "val" and (best is None or score > best["score"]):
                best = {"score": float(score), "epoch": epoch}
                save_checkpoint(fold_dir / "best.pt", model=model, class_names=data.class_names, data=data_config,
                                epoch=epoch, fold=fold.fold, metrics={f"val_{config.train.selection_metric}": score})
        _append_csv(log_path, record)
        if tensorboard is not None:
            for name, value in record.items():
                if name not in ("fold", "epoch"):
                    tensorboard.add_scalar(name, value, epoch)
        save_checkpoint(fold_dir / "last.pt", model=model, class_names=data.class_names, data=data_config,
                        epoch=epoch, fold=fold.fold, optimizer=optimizer, scheduler=scheduler,
                        extra={"best": best or {}})
        logger.info("fold %d epoch %d: loss %.4f acc %.3f%s", fold.fold, epoch + 1, stats.loss, stats.accuracy,
                    f" val {config.train.selection_metric} {record.get('val_' + config.train.selection_metric, float('nan')):.3f}"
                    if val_loader is not None else "")
        if on_epoch is not None:
            on_epoch(epoch, record)
    if tensorboard is not None:
        tensorboard.close()
    if config.train.model_selection == "val" and (fold_dir / "best.pt").exists():
        model.load_state_dict(load_checkpoint(fold_dir / "best.pt")["state_dict"])
    save_checkpoint(fold_dir / "model.pt", model=model, class_names=data.class_names, data=data_config,
                    epoch=config.train.epochs - 1, fold=fold.fold, extra={"selection": config.train.model_selection})

    # the test subjects are touched here, once, after training and model selection are over
    test_table = table[table["subject"].isin(fold.test_subjects)]
    test_loader = torch.utils.data.DataLoader(build_dataset(config, test_table, spec, train=False), **loader_args)
    predictions = evaluate(model, test_loader, device=device, amp=config.train.amp, progress=progress,
                           description=f"fold {fold.fold} test")
    frame = pd.DataFrame({"clip": predictions.clips, "subject": predictions.subjects, "fold": fold.fold,
                          "label": predictions.labels, "pred": predictions.predicted})
    for index, name in enumerate(data.class_names):
        frame[f"prob_{name}"] = predictions.probabilities[:, index]
    tmp = fold_dir / "predictions.csv.tmp"
    frame.to_csv(tmp, index=False)
    tmp.replace(fold_dir / "predictions.csv")  # its presence marks the fold complete
    return frame


def write_metrics(out: Path, predictions: pd.DataFrame, class_names: list[str], *, protocol: str) -> dict[str, Any]:
    """metrics.json (pooled and fold-mean, labelled) and the plots, from predictions.csv alone."""
    summary = cross_validation_summary(predictions["label"].to_numpy(), predictions["pred"].to_numpy(),
                                       predictions["fold"].to_numpy(), num_classes=len(class_names),
                                       class_names=class_names)
    metrics = {"protocol": protocol, **summary}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    from microexp.engine.plots import plot_run

    plot_run(out, metrics)
    return metrics


def build_dataset(config: ExperimentConfig, table: pd.DataFrame, spec: Any, *, train: bool) -> MicroExpressionDataset:
    """The Dataset a recipe's ``data`` section describes, for a model with ``spec`` (its modality, mean, std)."""
    d = config.data
    flow = FlowSpec(method=d.flow_method, strain=spec.flow_channels == 3) if "flow" in spec.modality else None
    rgb_mean = tuple(spec.mean[:3]) if spec.modality != "flow" else (0.485, 0.456, 0.406)
    rgb_std = tuple(spec.std[:3]) if spec.modality != "flow" else (0.229, 0.224, 0.225)
    return MicroExpressionDataset(
        table,
        sampling=SamplingSpec(d.sampling, num_frames=d.num_frames, stride=d.stride, reference_fps=d.reference_fps),
        transform=TransformSpec(size=d.size, crop_scale=d.crop_scale, flip=d.flip, grayscale=d.grayscale,
                                mean=rgb_mean, std=rgb_std),
        train=train, backend=d.backend, cache_dir=d.cache_dir, seed=config.seed, modality=spec.modality, flow=flow,
        frame_difference=d.frame_difference,
    )


def _loss_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    """The loss section's values that the chosen loss accepts."""
    accepted = set(loss_options(config.loss.name))
    values = {LOSS_FIELDS[k]: getattr(config.loss, k) for k in LOSS_FIELDS}
    return {k: v for k, v in values.items() if k in accepted and v is not None}


def _data_config(config: ExperimentConfig) -> dict[str, Any]:
    """What a predictor needs to preprocess a clip like training did (plain types)."""
    d = config.data
    return {"num_frames": d.num_frames, "sampling": d.sampling, "stride": d.stride, "reference_fps": d.reference_fps,
            "size": d.size, "grayscale": d.grayscale, "frame_difference": d.frame_difference,
            "flow_method": d.flow_method, "class_map": d.class_map}


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            fold: Fold) -> tuple[int, dict[str, Any] | None]:
    if not path.exists():
        return 0, None
    payload = load_checkpoint(path)
    if payload.get("fold") != fold.fold:
        raise ConfigError(f"{path}: belongs to fold {payload.get('fold')}, not fold {fold.fold}")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    logger.info("fold %d: resuming after epoch %d", fold.fold, payload["epoch"] + 1)
    best = payload.get("extra", {}).get("best") or None
    return int(payload["epoch"]) + 1, best


def _check_same_config(config: ExperimentConfig, out: Path) -> None:
    """Resuming into a run directory made with another config would mix two experiments."""
    previous = out / "config.yaml"
    if not previous.exists():
        return
    from microexp.config import load_config

    if load_config(previous) != config:
        raise ConfigError(f"{out} holds a run with a different config.yaml; use a new --out or the same config to resume")


def _tensorboard_writer(log_dir: Path) -> Any:
    """A SummaryWriter when the optional ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _append_csv(path: Path, record: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(record))
        if new:
            writer.writeheader()
        writer.writerow(record)
