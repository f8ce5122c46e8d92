"""Training and evaluation loops as plain functions with explicit arguments.

In the style of torchvision's video-classification reference: ``train_one_epoch`` and ``evaluate`` know
nothing of folds, recipes or files; the experiment runner wires them. Batches are the Dataset's dicts
(``video`` ``(B, C, T, H, W)``, ``label``, ``clip``, ``subject``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from microexp.errors import ConfigError


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch did.

    ``data_seconds`` is the time spent waiting for the loader, so ``data_seconds / seconds`` is the
    fraction of the epoch the model was starved of data.
    """

    loss: float
    accuracy: float
    samples: int
    seconds: float
    data_seconds: float
    lr: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Predictions:
    """Per-clip outputs of :func:`evaluate`, in loader order."""

    clips: list[str] = field(default_factory=list)
    subjects: list[int] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    loss: float = float("nan")

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) if len(self.probabilities) else np.zeros(0, dtype=np.int64)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA device; use device=cpu or auto")
    return torch.device(name)


def build_optimizer(
    model: nn.Module, *, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ConfigError(f"optimizer={name!r}: expected adamw or sgd")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    step_size: int = 10,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warm-up, then cosine to zero, step decay or constant.

    Stepped once per optimisation step, so short CPU runs of few epochs still warm up smoothly.
    """
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if name == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if name == "step":
            return gamma ** ((step // max(1, steps_per_epoch)) // max(1, step_size))
        if name == "constant":
            return 1.0
        raise ConfigError(f"schedule={name!r}: expected cosine, step or constant")

    factor(warmup)  # fail now on a bad name, not at the first step after warm-up
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    amp: bool = False,
    channels_last: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool | None = None,
    description: str = "train",
) -> EpochStats:
    """One pass over ``loader``; mixed precision and ``channels_last`` only take effect on CUDA.

    Raises:
        FloatingPointError: the loss became NaN or infinite (a diverged run should stop, not continue).
    """
    model.train()
    use_amp = amp and device.type == "cuda"
    memory_format = torch.channels_last_3d if channels_last and device.type == "cuda" else torch.contiguous_format
    total_loss, correct, samples, data_seconds = 0.0, 0, 0, 0.0
    start = waited = time.perf_counter()
    bar = tqdm(_batches(loader), total=_length(loader), desc=description, leave=False, disable=_no_progress(progress))
    for batch in bar:
        data_seconds += time.perf_counter() - waited
        videos = batch["video"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(videos)
            loss = loss_fn(logits.float(), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{description}: loss is {loss.item()} after {samples} samples")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            _clip(model, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            _clip(model, grad_clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch_size = labels.shape[0]
        total_loss += loss.item() * batch_size
        correct += int((logits.argmax(dim=1) == labels).sum())
        samples += batch_size
        bar.set_postfix(loss=f"{total_loss / samples:.3f}")
        waited = time.perf_counter()
    return EpochStats(
        loss=total_loss / max(samples, 1),
        accuracy=correct / max(samples, 1),
        samples=samples,
        seconds=time.perf_counter() - start,
        data_seconds=data_seconds,
        lr=optimizer.param_groups[0]["lr"],
    )


def pretrain_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = 1.0,
    amp: bool = False,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    description: str = "pretrain",
) -> float:
    """One self-supervised pass: ``model(videos, generator=)`` returns an output with a ``loss`` (e.g.
    :class:`~microexp.models.masked_video.MaskedVideoAutoencoder`); labels are never read.

    Returns:
        The mean loss per clip.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    model.train()
    use_amp = amp and device.type == "cuda"
    total = torch.zeros((), device=device)  # summed on the device: no host sync per step
    samples = 0
    bar = tqdm(_batches(loader), total=_length(loader), desc=description, leave=False, disable=_no_progress(progress))
    for step, batch in enumerate(bar):
        videos = batch["video"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = model(videos, generator=generator).loss.float()
        if step % 20 == 0 and not torch.isfinite(loss):
            raise FloatingPointError(f"{description}: reconstruction loss is {loss.item()} after {samples} clips; "
                                     "lower pretrain.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _clip(model, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach() * videos.shape[0]
        samples += videos.shape[0]
    mean = float(total) / max(samples, 1)
    if samples and not math.isfinite(mean):
        raise FloatingPointError(f"{description}: reconstruction loss is {mean}; lower pretrain.lr")
    return mean


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    amp: bool = False,
    progress: bool | None = None,
    description: str = "eval",
) -> Predictions:
    """Class probabilities for every clip of ``loader`` (softmax of the logits), with clip ids."""
    model.eval()
    use_amp = amp and device.type == "cuda"
    clips: list[str] = []
    subjects: list[int] = []
    labels, probabilities = [], []
    total_loss, samples = 0.0, 0
    for batch in tqdm(_batches(loader), total=_length(loader), desc=description, leave=False,
                      disable=_no_progress(progress)):
        videos = batch["video"].to(device, non_blocking=True)
        targets = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(videos).float()
        if loss_fn is not None:
            total_loss += loss_fn(logits, targets).item() * targets.shape[0]
        samples += targets.shape[0]
        probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
        labels.append(targets.cpu().numpy())
        clips += [str(c) for c in batch["clip"]]
        subjects += [int(s) for s in batch["subject"]]
    num_classes = probabilities[0].shape[1] if probabilities else 0
    return Predictions(
        clips=clips,
        subjects=subjects,
        labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        probabilities=np.concatenate(probabilities) if probabilities else np.zeros((0, num_classes), np.float32),
        loss=total_loss / samples if loss_fn is not None and samples else float("nan"),
    )


def _batches(loader: Iterable[Any]) -> Iterator[Any]:
    """One iterator over ``loader``, made here.

    ``tqdm.auto`` calls ``iter()`` on what it wraps and then iterates it again; on a DataLoader with
    persistent workers the second ``iter()`` resets the first, drawing the sampler twice (so batches
    depended on the worker count) and discarding the batches already prefetched. An iterator is safe.
    """
    return iter(loader)


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _clip(model: nn.Module, max_norm: float | None) -> None:
    if max_norm is not None and max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _no_progress(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None hides the bar when not on a terminal."""
    return None if progress is None else not progress
