"""Small inputs: the data-wait fraction of one-frame 28x28 training with per-item loading and in memory.

``frame_tiny`` (a tiny 2D ResNet) trains on ``clips`` one-frame 28x28 RGB inputs (the apex frame,
``apex_centered`` sampling with 1 frame; random resized crop at ``crop_scale`` 0.85 and a flip, as
recipes train) from generated 32 px frame folders, with a warm clip cache: the case where per-item
overhead (cache read, transforms, collation, about 1 ms an item) dwarfs the model's step. The same
model, optimizer, sampler and batches go through :func:`~microexp.engine.trainer.train_one_epoch` with

* the per-item path: a DataLoader over :class:`~microexp.data.dataset.MicroExpressionDataset`, with 0
  and with ``workers`` workers (persistent, as the engine's train loader);
* the in-memory path: :class:`~microexp.data.in_memory.InMemoryClips` (built once, its build time
  reported) and its loader, augmentation per batch.

Figures per path: ``data_fraction`` (``data_seconds / seconds`` of the epochs after the first, whose
worker start-up is not steady state) and ``epoch_seconds``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from microexp.benchmark.report import Figure, Section

logger = logging.getLogger(__name__)

__all__ = ["make_small_clips", "measure_small_inputs"]

MODEL = "frame_tiny"
SIZE = 28
NUM_CLASSES = 3


def make_small_clips(out: Path, *, clips: int, subjects: int, frames: int = 5, side: int = 32, seed: int = 0
                     ) -> pd.DataFrame:
    """``clips`` PNG frame folders of ``frames`` smooth random ``side`` px frames; returns their clip table."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for n in range(clips):
        folder = out / f"clip{n:04d}"
        folder.mkdir(parents=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BILINEAR))
        for i in range(frames):
            Image.fromarray(np.roll(image, i, axis=1)).save(folder / f"img{i}.png")
        rows.append({"subject": n % subjects + 1, "clip": f"clip{n:04d}", "path": str(folder), "onset": 0,
                     "apex": frames // 2, "offset": frames - 1, "first_frame": 0, "fps": 200.0, "aus": "",
                     "label": int(rng.integers(NUM_CLASSES))})
    return pd.DataFrame(rows)


def measure_small_inputs(work: Path, *, device: str, clips: int = 442, subjects: int = 26, epochs: int = 3,
                         batch_size: int = 32, workers: int = 2) -> Section:
    """Train ``frame_tiny`` ``epochs`` epochs per loading path on ``clips`` one-frame 28x28 inputs.

    Args:
        work: an empty folder (clips and cache).
        device: ``cpu`` or ``cuda``.
        epochs: per path (>= 2: the first is not reported in ``data_fraction``).
        workers: the per-item path's worker count besides 0 (the engine's default is 2).
    """
    import torch

    from microexp.data.dataset import EpochIndexSampler, MicroExpressionDataset
    from microexp.data.in_memory import InMemoryClips
    from microexp.data.pipeline import ClipPipeline
    from microexp.engine.precision import autocast_dtype, make_grad_scaler, memory_format_for
    from microexp.engine.trainer import build_optimizer, build_scheduler, train_one_epoch
    from microexp.losses import build_loss
    from microexp.models import create_model
    from microexp.seed import seed_worker

    if epochs < 2:
        raise ValueError(f"epochs={epochs}: the small-input benchmark needs at least 2 epochs")
    dev = torch.device(device)
    dtype = autocast_dtype(dev, amp=True)  # the recipes' default: bf16 (or fp16) on CUDA, fp32 on the CPU
    table = make_small_clips(work / "small_clips", clips=clips, subjects=subjects)
    base = create_model(MODEL, num_classes=NUM_CLASSES, num_frames=1, input_size=SIZE)
    pipeline = ClipPipeline.for_model(base.spec, num_frames=1, sampling="apex_centered", size=SIZE)
    cache = work / "small_cache"
    train_set = MicroExpressionDataset(table, pipeline=pipeline, train=True, cache_dir=cache)
    for index in range(len(train_set)):  # warm the cache
        train_set[index]
    started = time.perf_counter()
    store = InMemoryClips.build(MicroExpressionDataset(table, pipeline=pipeline, cache_dir=cache))
    build_seconds = time.perf_counter() - started

    section = Section(f"small_inputs_{device}", details={
        "model": MODEL, "clips": clips, "input": list(pipeline.input_shape()), "batch_size": batch_size,
        "epochs": epochs, "store_mb": round(store.nbytes / 2**20, 3), "cache": "warm", "paths": {}})
    counts = np.bincount(table["label"].to_numpy(), minlength=NUM_CLASSES).tolist()
    paths = [(f"per_item_w{w}", w) for w in sorted({0, workers})] + [("in_memory", None)]
    for name, num_workers in paths:
        torch.manual_seed(0)
        model = create_model(MODEL, num_classes=NUM_CLASSES, num_frames=1, input_size=SIZE).to(dev)
        memory_format = memory_format_for(model, device=dev, channels_last=True)
        scaler = make_grad_scaler(dev, dtype)
        optimizer = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05)
        scheduler = build_scheduler(optimizer, name="cosine", epochs=epochs,
                                    steps_per_epoch=max(1, clips // batch_size), warmup_epochs=0)
        loss_fn = build_loss("ce", counts).to(dev)
        generator = torch.Generator()
        sampler = EpochIndexSampler(torch.utils.data.RandomSampler(range(clips), generator=generator))
        if num_workers is None:
            loader = store.loader(table, batch_size=batch_size, sampler=sampler, train=True, seed=0,
                                  pin_memory=dev.type == "cuda")
        else:
            loader = torch.utils.data.DataLoader(train_set, sampler=sampler, batch_size=batch_size,
                                                 num_workers=num_workers, persistent_workers=num_workers > 0,
                                                 worker_init_fn=seed_worker, pin_memory=dev.type == "cuda")
        seconds, waits = [], []
        for epoch in range(epochs):
            generator.manual_seed(epoch)
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            stats = train_one_epoch(model, loader, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                                    device=dev, grad_clip=1.0, dtype=dtype, memory_format=memory_format,
                                    scaler=scaler, progress=False)
            seconds.append(stats.seconds)
            waits.append(stats.data_seconds)
        del loader
        fractions = tuple(d / s for d, s in zip(waits[1:], seconds[1:]))
        section.figures += [Figure(f"{name}.data_fraction", fractions, "fraction"),
                            Figure(f"{name}.epoch_seconds", tuple(seconds[1:]), "s")]
        section.details["paths"][name] = {"num_workers": num_workers, "seconds": [round(s, 3) for s in seconds],
                                          "data_seconds": [round(d, 3) for d in waits]}
        logger.info("small inputs on %s, %s: %.2f s an epoch, data-wait fraction %.3f", device, name,
                    float(np.median(seconds[1:])), float(np.median(fractions)))
    section.figures.append(Figure("in_memory.build_seconds", (build_seconds,), "s"))
    per_item = section.figure(f"per_item_w{workers}.epoch_seconds")
    ours = section.figure("in_memory.epoch_seconds")
    if per_item is not None and ours is not None:
        section.figures.append(Figure("per_item_over_in_memory.epoch_seconds",
                                      (per_item.median / max(ours.median, 1e-9),), "x"))
    return section
