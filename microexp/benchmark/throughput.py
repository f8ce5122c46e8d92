"""Training throughput per model family: microexp's loop against a bare PyTorch loop.

For each model the same random batches (batch 8, the model's own frames, channels and input size) go
through (1) :func:`microexp.engine.trainer.train_one_epoch` with the experiment runner's parts (AdamW
without decay on norms and biases, the per-step cosine schedule, cross-entropy from
:func:`build_loss`, gradient clipping at the default 1.0, loss and accuracy bookkeeping) and (2) a bare
loop (``zero_grad``, forward, ``cross_entropy``, ``backward``, ``AdamW.step``). Both start from the same
initial weights; their repeats are interleaved; one untimed warm-up step each comes first. Both loops use
the precision and memory format a recipe with the defaults gets (:mod:`microexp.engine.precision`): on CUDA
bf16 autocast where the GPU has it (else fp16 with a ``GradScaler``) and ``channels_last_3d`` weights and
input for the Conv3d models; on CPU fp32 and contiguous tensors. Both synchronise before the clock stops;
the section's details say which type and formats were used.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from microexp.benchmark.report import Figure, Section

logger = logging.getLogger(__name__)

__all__ = ["MODELS", "measure_throughput"]

#: One CPU-sized model per family (two for the two-stream family: the temporal stream the demo trains,
#: and both streams).
MODELS = ("flow_tiny", "two_stream_tiny", "r3d_tiny", "tsm_tiny", "timesformer_tiny", "frame_tiny")
BATCH = 8
NUM_CLASSES = 7


def _batches(spec: Any, steps: int, device: torch.device, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, spec.in_channels, spec.num_frames, spec.input_size, spec.input_size)
    return [{"video": torch.randn(shape, generator=generator).to(device),
             "label": torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator).to(device)}
            for _ in range(steps)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(*, device: str, steps: int, repeats: int, models: tuple[str, ...] = MODELS) -> Section:
    """Clips/s (forward + backward + optimizer step) of each model in both loops, and their ratio.

    Args:
        device: ``cpu`` or ``cuda``.
        steps: optimisation steps per timed repeat.
        repeats: timed repeats per loop (interleaved; medians reported).
    """
    from microexp.engine.precision import (autocast_dtype, dtype_name, make_grad_scaler, memory_format_for,
                                           prepare_model)
    from microexp.engine.trainer import build_optimizer, build_scheduler, train_one_epoch
    from microexp.losses import build_loss
    from microexp.models import create_model

    dev = torch.device(device)
    dtype = autocast_dtype(dev, amp=True, amp_dtype="auto")  # the recipe defaults: train.amp, amp_dtype auto
    section = Section(f"throughput_{device}", details={
        "batch_size": BATCH, "steps_per_repeat": steps, "amp_dtype": "auto", "dtype": dtype_name(dtype),
        "channels_last": True, "models": {}})
    for index, name in enumerate(models):
        torch.manual_seed(index)
        base = create_model(name, num_classes=NUM_CLASSES)
        spec = base.spec
        memory_format = memory_format_for(base, device=dev, channels_last=True)
        batches = _batches(spec, steps, dev, seed=index)
        warm = batches[:1]

        ours = prepare_model(copy.deepcopy(base), device=dev, memory_format=memory_format)
        optimizer = build_optimizer(ours, name="adamw", lr=1e-4, weight_decay=0.05)
        scheduler = build_scheduler(optimizer, name="cosine", epochs=repeats + 1, steps_per_epoch=steps,
                                    warmup_epochs=0)
        loss_fn = build_loss("ce", [BATCH] * NUM_CLASSES).to(dev)
        scaler = make_grad_scaler(dev, dtype)

        def run_ours(data: list[dict[str, torch.Tensor]]) -> None:
            train_one_epoch(ours, data, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, device=dev,
                            grad_clip=1.0, dtype=dtype, memory_format=memory_format, scaler=scaler, progress=False)
            _sync(dev)

        bare = prepare_model(copy.deepcopy(base), device=dev, memory_format=memory_format)
        bare_optimizer = torch.optim.AdamW(bare.parameters(), lr=1e-4, weight_decay=0.05)
        bare_scaler = make_grad_scaler(dev, dtype)

        def run_bare(data: list[dict[str, torch.Tensor]]) -> None:
            bare.train()
            for batch in data:
                videos = batch["video"].contiguous(memory_format=memory_format)
                bare_optimizer.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(bare(videos).float(), batch["label"])
                if bare_scaler.is_enabled():  # fp16 only
                    bare_scaler.scale(loss).backward()
                    bare_scaler.step(bare_optimizer)
                    bare_scaler.update()
                else:
                    loss.backward()
                    bare_optimizer.step()
            _sync(dev)

        run_ours(warm)
        run_bare(warm)
        times: dict[str, list[float]] = {"microexp": [], "bare": []}
        for _ in range(repeats):
            for label, fn in (("microexp", run_ours), ("bare", run_bare)):
                start = time.perf_counter()
                fn(batches)
                times[label].append(time.perf_counter() - start)
        clips = BATCH * steps
        ours_rate = tuple(clips / t for t in times["microexp"])
        bare_rate = tuple(clips / t for t in times["bare"])
        section.figures += [
            Figure(f"{name}.microexp.clips_per_s", ours_rate, "clips/s"),
            Figure(f"{name}.bare.clips_per_s", bare_rate, "clips/s"),
            Figure(f"{name}.microexp_over_bare", tuple(o / b for o, b in zip(ours_rate, bare_rate)), "x"),
        ]
        section.details["models"][name] = {"family": spec.family, "input": [spec.in_channels, spec.num_frames,
                                                                           spec.input_size, spec.input_size],
                                           "memory_format": str(memory_format).removeprefix("torch.")}
        logger.info("throughput %s on %s: microexp %.1f clips/s, bare %.1f clips/s", name, device,
                    section.figure(f"{name}.microexp.clips_per_s").median,  # type: ignore[union-attr]
                    section.figure(f"{name}.bare.clips_per_s").median)  # type: ignore[union-attr]
        del ours, bare, base, batches
    return section
