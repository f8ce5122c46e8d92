"""Masked-video pretraining runs (``microexp pretrain``) and the leak check ``train`` applies to them.

A pretraining run reads a clip table whose labels are ignored (``pretrain.annotations``, or the recipe's
``data.annotations``), feeds its clips through the recipe's own preprocessing pipeline (the one training
and prediction use) and trains :class:`~microexp.models.masked_video.MaskedVideoAutoencoder` around the
recipe's transformer. It writes, atomically:

- ``config.yaml`` (the recipe it ran; a rerun with another result-relevant config is refused);
- ``pretrain.json``: what each encoder was pretrained on (every ``(dataset, subject)`` pair, clip counts,
  the subjects left out) — the record ``train`` checks;
- ``log.csv`` and ``last.pt`` per unit (resumable after a kill: rerun the same command);
- ``encoder.pt`` per unit: a microexp checkpoint of the encoder alone, which ``model.pretrained`` loads.

``per_fold=True`` pretrains one encoder per outer fold of the recipe's protocol (``fold_XX/encoder.pt``),
each on the pool minus the clips of that fold's test subjects; that is how to pretrain on the labelled
table itself without showing a fold its test clips. ``model.pretrained: DIR`` then gives every fold its
own encoder.

The leak check (:func:`check_pretrained_subjects`): before a run starts, every fold's encoder record is
compared with the fold's test subjects; an overlap is refused unless ``pretrain.allow_test_subjects`` is
true, in which case it is logged, written to ``pretrain_overlap.json`` in the run and kept in the
fold's ``model.pt``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from microexp.checkpoint import save_checkpoint
from microexp.config import ExperimentConfig
from microexp.data.annotations import load_clip_table
from microexp.data.dataset import check_clip_inputs
from microexp.engine.experiment import _data_config, build_dataset, build_folds, build_pipeline, load_experiment_data, \
    model_spec
from microexp.engine.distributed import (
    DistributedContext, barrier, entered_on_main, gather_mean, run_on_main, train_batches, wrap_model,
)
from microexp.engine.precision import autocast_dtype, configure_backends, make_grad_scaler, prepare_model
from microexp.engine.pretrain_record import ENCODER_NAME, RECORD_NAME, subject_keys
from microexp.engine.progress import RunProgress, UnitProgress
from microexp.engine.results import logged_epochs, read_log, write_log
from microexp.engine.run_dir import LOCK_NAME, check_not_a_file, hold_lock, keep_config, probe_writable
from microexp.engine.trainer import build_optimizer, build_scheduler, pretrain_one_epoch, select_device
from microexp.errors import ConfigError
from microexp.fileio import atomic_path, write_json
from microexp.models import create_model
from microexp.models.masked_video import MaskedVideoAutoencoder, check_masked_encoder
from microexp.seed import seed_everything, seed_worker
from microexp.splits import Fold

logger = logging.getLogger(__name__)

__all__ = ["PretrainUnit", "run_pretrain", "pretraining_table"]

#: the random stream of a whole-pool unit (fold ``f`` uses stream ``f``), as the final model's in experiment
_POOL_STREAM = 999


@dataclass(frozen=True)
class PretrainUnit:
    """One encoder to pretrain: its folder and its clips."""

    name: str  #: ``pool`` or ``fold_XX``
    fold: int | None
    table: pd.DataFrame
    excluded_subjects: tuple[int, ...]  #: the labelled table's test subjects this unit was kept from


def pretraining_table(config: ExperimentConfig) -> pd.DataFrame:
    """The pretraining clips, labels ignored: ``pretrain.annotations`` or else ``data.annotations``."""
    p = config.pretrain
    path = p.annotations or config.data.annotations
    if not path:
        raise ConfigError("pretrain.annotations and data.annotations are both empty: set one (an unlabeled clip "
                          "table, e.g. from `microexp synth DIR --unlabeled N`)")
    if not p.annotations and isinstance(path, list):
        raise ConfigError("data.annotations is a composite list: name the pretraining clips' table in "
                          "pretrain.annotations (one file)")
    fmt, root = (p.format, p.root) if p.annotations else (config.data.format, config.data.root)
    result = load_clip_table(path, format=fmt, root=root, labels_required=False)
    table = result.resolve(strict=config.data.strict).reset_index(drop=True)
    if table.empty:
        raise ConfigError(f"{path}: no clip left to pretrain on after validation")
    table["label"] = 0  # the Dataset's item carries a label; pretraining never reads it
    return table


def _units(pool: pd.DataFrame, folds: list[Fold] | None,
           labelled: pd.DataFrame | None) -> list[PretrainUnit]:
    if folds is None:
        return [PretrainUnit("pool", None, pool, ())]
    units = []
    datasets = pool["dataset"].fillna("").astype(str) if "dataset" in pool.columns else pd.Series([""] * len(pool))
    keys = pd.Series(list(zip(datasets.tolist(), pool["subject"].astype(int).tolist())), dtype=object)
    for fold in folds:
        test = subject_keys(labelled, fold.test_subjects)
        kept = pool[~keys.isin(test).to_numpy()].reset_index(drop=True)
        if kept.empty:
            raise ConfigError(f"fold {fold.fold}: no pretraining clip left once the fold's test subjects are removed")
        units.append(PretrainUnit(f"fold_{fold.fold:02d}", fold.fold, kept,
                                  tuple(sorted(int(s) for s in fold.test_subjects))))
    return units


def run_pretrain(config: ExperimentConfig, out_dir: str | Path, *, per_fold: bool = False,
                 progress: bool | None = None, recipe: str | Path | None = None,
                 ctx: DistributedContext | None = None) -> list[Path]:
    """Pretrain (resuming where a previous run stopped) and write the encoders.

    Args:
        config: the validated recipe (its ``model``, ``data`` and ``pretrain`` sections).
        out_dir: the output folder (created once every check has passed; locked while running).
        per_fold: one encoder per outer fold of ``config.cv``, each without that fold's test subjects.
        progress: tqdm bars (None: only on a terminal).
        recipe: the recipe file, recorded in ``config.yaml``.
        ctx: under torchrun (:func:`~microexp.engine.distributed.init_distributed`): each unit is pretrained
            data-parallel by all ranks; rank 0 alone holds the lock and writes files.

    Returns:
        The ``encoder.pt`` paths, one per unit.
    """
    out = Path(out_dir)
    check_not_a_file(out)
    spec = model_spec(config)
    probe = create_model(config.model.name, num_classes=0, num_frames=config.data.num_frames,
                         input_size=config.data.size, **config.model.kwargs)
    try:
        check_masked_encoder(probe)
    except TypeError as exc:
        raise ConfigError(f"model.name={config.model.name!r}: {exc}") from exc
    p = config.pretrain
    try:  # the decoder's own checks (pretrain.target_pool against the patch side), before anything is written
        MaskedVideoAutoencoder(probe, mask_ratio=p.mask_ratio, decoder_dim=p.decoder_dim, decoder_depth=1,
                               decoder_heads=p.decoder_heads, target=p.target, target_pool=p.target_pool)
    except ValueError as exc:
        raise ConfigError(f"pretrain.{exc} (model {config.model.name}, model.kwargs "
                          f"{dict(config.model.kwargs)})") from exc
    del probe
    pool = pretraining_table(config)
    check_clip_inputs(pool, build_pipeline(config, spec))
    folds = labelled = None
    if per_fold:
        data = load_experiment_data(config)
        labelled = data.table
        folds = build_folds(config, labelled)
    units = _units(pool, folds, labelled)
    device = select_device(config.device)
    ctx = ctx or DistributedContext(device=device)
    device = ctx.device if ctx.distributed else device
    if config.data.cache_dir:
        probe_writable(Path(config.data.cache_dir), what="data.cache_dir ")
    probe_writable(out, what="")
    with entered_on_main(hold_lock(out / LOCK_NAME, what=f"pretraining folder {out}"), ctx):
        record = run_on_main(_start_pretraining, ctx, config, out, units, per_fold=per_fold, recipe=recipe)
        tracker = RunProgress(logger)
        for unit in units:
            unit_dir = out if unit.fold is None else out / unit.name
            if not (unit_dir / ENCODER_NAME).exists():
                tracker.plan(unit.name, config.pretrain.epochs - logged_epochs(unit_dir / "log.csv"))
        paths = []
        for index, unit in enumerate(units):
            unit_dir = out if unit.fold is None else out / unit.name
            label = unit.name if len(units) == 1 else f"{unit.name} ({index + 1}/{len(units)})"
            logger.info("%s: pretraining %s on %d clips of %d subjects (labels ignored), mask ratio %.2f",
                        label, config.model.name, len(unit.table), unit.table["subject"].nunique(),
                        config.pretrain.mask_ratio)
            paths.append(_pretrain_unit(config, unit, unit_dir, device=device, progress=progress,
                                        tracker=tracker.unit(unit.name, label), subjects=record["units"][unit.name],
                                        ctx=ctx))
    return paths


def _start_pretraining(config: ExperimentConfig, out: Path, units: list[PretrainUnit], *, per_fold: bool,
                       recipe: str | Path | None) -> dict[str, Any]:
    """config.yaml (written or checked) and the pretraining record (rank 0 only under DDP); returns the record."""
    keep_config(config, out, what="a pretraining run", recipe=recipe)
    record = {"format": "microexp-pretrain", "model": config.model.name, "per_fold": per_fold,
              "table": str(config.pretrain.annotations or config.data.annotations),
              "mask_ratio": config.pretrain.mask_ratio, "target": config.pretrain.target,
              "epochs": config.pretrain.epochs,
              "units": {u.name: {"fold": u.fold, "clips": len(u.table), "subjects": sorted(
                  [d, s] for d, s in subject_keys(u.table)), "excluded_test_subjects": list(u.excluded_subjects)}
                  for u in units}}
    previous = out / RECORD_NAME
    if previous.exists():
        kept = json.loads(previous.read_text())
        if kept.get("per_fold") != per_fold:
            raise ConfigError(f"{out} holds a pretraining run {'with' if kept.get('per_fold') else 'without'} "
                              "--per-fold; use a new --out, or the same command to resume")
    write_json(out / RECORD_NAME, record)
    return record


def _pretrain_unit(config: ExperimentConfig, unit: PretrainUnit, work_dir: Path, *, device: torch.device,
                   progress: bool | None, tracker: UnitProgress, subjects: dict[str, Any],
                   ctx: DistributedContext | None = None) -> Path:
    ctx = ctx or DistributedContext(device=device)
    target = work_dir / ENCODER_NAME
    if run_on_main(target.exists, ctx):
        logger.info("%s: already pretrained: kept %s", unit.name, target)
        return target
    p = config.pretrain
    stream = _POOL_STREAM if unit.fold is None else unit.fold
    generator = seed_everything(config.seed * 1000 + stream, deterministic=config.deterministic)
    encoder = create_model(config.model.name, num_classes=0, num_frames=config.data.num_frames,
                           input_size=config.data.size, pretrained=config.model.pretrained, **config.model.kwargs)
    model = MaskedVideoAutoencoder(encoder, mask_ratio=p.mask_ratio, decoder_dim=p.decoder_dim,
                                   decoder_depth=p.decoder_depth, decoder_heads=p.decoder_heads,
                                   target=p.target, target_pool=p.target_pool)
    # the masked autoencoder tokenises its input (transformer encoders): no channels_last_3d
    configure_backends(device, deterministic=config.deterministic)
    dtype = autocast_dtype(device, amp=config.train.amp, amp_dtype=config.train.amp_dtype)
    scaler = make_grad_scaler(device, dtype)
    model = prepare_model(model, device=device, compile=config.train.compile)
    net = model  # the autoencoder itself: checkpoints read and write it
    model = wrap_model(net, ctx, device=device, sync_batchnorm=config.train.sync_batchnorm)
    spec = model_spec(config)
    dataset = build_dataset(config, unit.table, spec, train=True)
    sampler_generator = torch.Generator()
    # the generator is reseeded per epoch from (seed, stream, epoch): a resumed run draws the same batches
    sampler = torch.utils.data.RandomSampler(dataset, generator=sampler_generator)
    # one process drops only a last batch of one (batch norm in conv stems); under DDP each rank takes its share
    batching = train_batches(sampler, ctx, batch_size=p.batch_size)
    clips_here = len(batching["batch_sampler"].shard) if "batch_sampler" in batching else len(dataset)
    loader = torch.utils.data.DataLoader(dataset, **batching, num_workers=config.data.num_workers,
                                         worker_init_fn=seed_worker, generator=generator,
                                         persistent_workers=config.data.num_workers > 0,
                                         pin_memory=device.type == "cuda")
    optimizer = build_optimizer(model, name="adamw", lr=p.lr, weight_decay=p.weight_decay)
    scheduler = build_scheduler(optimizer, name="cosine", epochs=p.epochs, steps_per_epoch=max(1, len(loader)),
                                warmup_epochs=p.warmup_epochs)
    last = work_dir / "last.pt"
    start_epoch = 0
    if last.exists():
        payload = torch.load(last, map_location="cpu", weights_only=True)
        net.load_state_dict(payload["autoencoder"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler.is_enabled() and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        start_epoch = int(payload["epoch"]) + 1
        logger.info("%s: resuming after epoch %d", unit.name, start_epoch)
    log_path = work_dir / "log.csv"
    rows = read_log(log_path, before=start_epoch)
    if log_path.exists() and ctx.is_main:
        write_log(log_path, rows)
    tracker.begin(p.epochs - start_epoch)
    for epoch in range(start_epoch, p.epochs):
        began = time.perf_counter()
        epoch_seed = int(np.random.SeedSequence([config.seed, stream, epoch]).generate_state(1)[0])
        sampler_generator.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        mask_generator = torch.Generator().manual_seed(epoch_seed + ctx.rank)  # each rank masks its clips anew
        dataset.set_epoch(epoch)
        loss = pretrain_one_epoch(model, loader, optimizer=optimizer, scheduler=scheduler, device=device,
                                  dtype=dtype, scaler=scaler, generator=mask_generator, progress=progress,
                                  description=f"{unit.name} epoch {epoch + 1}/{p.epochs}")
        loss = gather_mean(loss, clips_here, ctx)  # per clip over every rank's clips
        seconds = time.perf_counter() - began
        rows.append({"unit": unit.name, "epoch": epoch, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                     "seconds": round(seconds, 3)})
        if ctx.is_main:
            write_log(log_path, rows)
            with atomic_path(last) as tmp:
                torch.save({"autoencoder": net.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch},
                           tmp)
        tracker.epoch_done(epoch, p.epochs, seconds, f"reconstruction loss {loss:.4f}")
    extra = {"pretrain": {"method": "masked video (tube masking)", "mask_ratio": p.mask_ratio, "target": p.target,
                          "target_pool": p.target_pool,
                          "epochs": p.epochs, "unit": unit.name, "fold": unit.fold, **subjects,
                          "final_loss": rows[-1]["loss"] if rows else None}}
    if ctx.is_main:
        save_checkpoint(target, model=net.encoder, class_names=[], data=_data_config(config, spec),
                        epoch=p.epochs - 1, fold=unit.fold, extra=extra)
    barrier()  # the encoder is written before any rank goes on
    logger.info("%s: encoder written: %s", unit.name, target)
    return target
