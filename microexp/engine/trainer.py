"""Training and evaluation loops as plain functions with explicit arguments.

In the style of torchvision's video-classification reference: ``train_one_epoch`` and ``evaluate`` know
nothing of folds, recipes or files; the experiment runner wires them. Batches are the Dataset's dicts
(``video`` ``(B, C, T, H, W)``, ``label``, ``clip``, ``subject``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from microexp.engine.objectives import Objective
from microexp.errors import ConfigError


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch did.

    ``data_seconds`` is the time the host spent waiting for the loader, so ``data_seconds / seconds`` is the
    fraction of the epoch the model was starved of data. On CPU that is exact. On CUDA the loops do not
    wait for the device after each step, so while the host waits for a batch the GPU may still be working
    through steps already queued: there it is an upper bound of the GPU's data-starved time (and the
    loader's cost hidden behind GPU work does not count). ``seconds`` ends after the epoch's last result
    has been read back, so it includes the queued GPU work.
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
    #: ``(N, A)`` AU probabilities (sigmoid) of a model with an AU head, in the order of ``au_codes``; else None
    au_probabilities: np.ndarray | None = None
    au_codes: tuple[str, ...] = ()
    #: the clips' AU strings as the loader gave them (the true AUs), when the model has an AU head
    aus: list[str] = field(default_factory=list)
    #: ``(N, D)`` pooled features, when :func:`evaluate` was asked for them (``features=True``)
    features: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        if not len(self.probabilities):
            return np.zeros(0, dtype=np.int64)
        if not self.probabilities.shape[1]:  # an AU-only model: no emotion predicted
            return np.full(len(self.probabilities), -1, dtype=np.int64)
        return self.probabilities.argmax(axis=1)


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
    restart_epoch: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warm-up, then cosine to zero, step decay or constant.

    Stepped once per optimisation step, so short CPU runs of few epochs still warm up smoothly.
    ``restart_epoch``: the schedule runs over ``restart_epoch`` epochs, then starts again from the base
    rate (no warm-up) over the remaining ones (a second training stage, e.g. retraining the classifier alone).
    """
    def stage(stage_epochs: int, stage_warmup: int) -> Callable[[int], float]:
        total = max(1, stage_epochs * steps_per_epoch)
        warmup = min(stage_warmup * steps_per_epoch, total - 1)

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
        return factor

    if restart_epoch is None or not 0 < restart_epoch < epochs:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, stage(epochs, warmup_epochs))
    first, second = stage(restart_epoch, warmup_epochs), stage(epochs - restart_epoch, 0)
    switch = restart_epoch * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: first(step) if step < switch else second(step - switch))


#: How often (in steps) the loops read their running loss on the host to check it is finite and to update the
#: progress bar; they also check at the end. In between nothing waits for the GPU.
CHECK_EVERY = 25


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Objective,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    scaler: torch.amp.GradScaler | None = None,
    check_every: int = CHECK_EVERY,
    progress: bool | None = None,
    description: str = "train",
    frozen_normalisation: bool = False,
) -> EpochStats:
    """One pass over ``loader`` (batches ``video (B, C, T, H, W)``, ``label (B,)``).

    Args:
        loss_fn: ``(logits, labels) -> loss``, or an :class:`~microexp.engine.objectives.Objective` (the AU
            term and the uncertain-label methods), which computes the step's loss from the model itself.
        dtype: the autocast type (:func:`microexp.engine.precision.autocast_dtype`); None = fp32.
        memory_format: the input's memory format, the model's own
            (:func:`~microexp.engine.precision.memory_format_for`, applied by ``prepare_model``).
        scaler: a ``GradScaler`` for fp16 (:func:`~microexp.engine.precision.make_grad_scaler`); a disabled
            one or None steps the optimizer directly.
        frozen_normalisation: keep batch-norm layers in eval mode (their statistics frozen), for a stage
            that trains the classifier alone.
        check_every: the loss and accuracy are summed on the device; every ``check_every`` steps and at the
            end the sum is read on the host, checked finite and shown in the progress bar. No other step
            waits for the device (an enabled ``GradScaler`` does, inside ``scaler.step``).

    Returns:
        :class:`EpochStats`; ``data_seconds`` is the host's time blocked on the loader (see there).

    Raises:
        FloatingPointError: the loss became NaN or infinite (found at the next check: a diverged run
            should stop, not continue).
    """
    model.train()
    if frozen_normalisation:  # a classifier-only stage: the frozen backbone's batch-norm statistics stay as they are
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    objective = loss_fn if isinstance(loss_fn, Objective) else Objective(loss_fn)
    tally = _Tally(device, check_every=check_every, description=description, what="loss", hint="")
    data_seconds = 0.0
    start = waited = time.perf_counter()
    bar = tqdm(_batches(loader), total=_length(loader), desc=description, leave=False, disable=_no_progress(progress))
    for batch in bar:
        data_seconds += time.perf_counter() - waited
        videos = batch["video"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = batch["label"].to(device, non_blocking=True)
        with _autocast(device, dtype):
            step = objective(model, videos, batch, labels)
        _step(model, step.loss, optimizer=optimizer, scheduler=scheduler, scaler=scaler, grad_clip=grad_clip)
        tally.add(step.loss.detach(), step.samples, correct=step.correct)
        if tally.due():
            bar.set_postfix(loss=f"{tally.check():.3f}")
        waited = time.perf_counter()
    mean_loss, accuracy = tally.finish()
    return EpochStats(
        loss=mean_loss,
        accuracy=accuracy,
        samples=tally.samples,
        seconds=time.perf_counter() - start,  # after finish(), which waits for the device
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
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    scaler: torch.amp.GradScaler | None = None,
    check_every: int = CHECK_EVERY,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    description: str = "pretrain",
) -> float:
    """One self-supervised pass: ``model(videos, generator=)`` returns an output with a ``loss`` (e.g.
    :class:`~microexp.models.masked_video.MaskedVideoAutoencoder`); labels are never read.

    ``dtype``, ``memory_format``, ``scaler`` and ``check_every`` as in
    :func:`train_one_epoch`.

    Returns:
        The mean loss per clip.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    model.train()
    # float32 sums, as before: the logged pretraining loss stays what it was
    tally = _Tally(device, check_every=check_every, description=description, what="reconstruction loss",
                   hint="; lower pretrain.lr", loss_dtype=torch.float32)
    bar = tqdm(_batches(loader), total=_length(loader), desc=description, leave=False, disable=_no_progress(progress))
    for batch in bar:
        videos = batch["video"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with _autocast(device, dtype):
            loss = model(videos, generator=generator).loss.float()
        _step(model, loss, optimizer=optimizer, scheduler=scheduler, scaler=scaler, grad_clip=grad_clip)
        tally.add(loss.detach(), videos.shape[0])
        if tally.due():
            bar.set_postfix(loss=f"{tally.check():.3f}")
    return tally.finish()[0]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: bool | None = None,
    description: str = "eval",
    features: bool = False,
) -> Predictions:
    """Class probabilities for every clip of ``loader`` (softmax of the fp32 logits), with clip ids.

    A model with an AU head (:class:`~microexp.models.multitask.MultiTaskVideoModel`) also gives AU
    probabilities (sigmoid); an AU-only model gives no class probabilities (``(N, 0)``). ``features=True``
    also keeps each clip's pooled feature (``forward_head(..., pre_logits=True)``; the model must be a
    registered one, not DDP-wrapped).
    ``dtype`` and ``memory_format`` as in :func:`train_one_epoch` (pass the training run's). Probabilities,
    labels and the loss stay on the device until the end: one transfer, no per-batch wait.
    """
    model.eval()
    au_codes = () if features else tuple(getattr(model, "au_codes", ()))  # a features pass reads emotion only
    clips: list[str] = []
    subjects: list[int] = []
    aus: list[str] = []
    labels, probabilities, au_probabilities, pooled = [], [], [], []
    total_loss = torch.zeros((), dtype=_sum_dtype(device), device=device)
    samples = 0
    for batch in tqdm(_batches(loader), total=_length(loader), desc=description, leave=False,
                      disable=_no_progress(progress)):
        videos = batch["video"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = batch["label"].to(device, non_blocking=True)
        with _autocast(device, dtype):
            if features:
                maps = model.forward_features(videos)
                pooled.append(model.forward_head(maps, pre_logits=True).float())
                logits = model.forward_head(maps).float()
            elif au_codes:
                out = model(videos, outputs=True)
                au_probabilities.append(torch.sigmoid(out.au_logits.float()))
                aus += [str(a) for a in batch["aus"]]
                logits = (out.logits.float() if out.logits is not None
                          else torch.zeros(targets.shape[0], 0, device=videos.device))
            else:
                logits = model(videos).float()
        if loss_fn is not None and logits.shape[1]:
            total_loss += loss_fn(logits, targets).to(total_loss.dtype) * targets.shape[0]
        samples += targets.shape[0]
        probabilities.append(torch.softmax(logits, dim=1))
        labels.append(targets)
        clips += [str(c) for c in batch["clip"]]
        subjects += [int(s) for s in batch["subject"]]
    num_classes = probabilities[0].shape[1] if probabilities else 0
    au_array = None
    if au_codes:
        au_array = (torch.cat(au_probabilities).cpu().numpy() if au_probabilities
                    else np.zeros((0, len(au_codes)), np.float32))
    return Predictions(
        clips=clips,
        subjects=subjects,
        labels=torch.cat(labels).cpu().numpy() if labels else np.zeros(0, dtype=np.int64),
        probabilities=(torch.cat(probabilities).cpu().numpy() if probabilities
                       else np.zeros((0, num_classes), np.float32)),
        loss=float(total_loss) / samples if loss_fn is not None and samples and num_classes else float("nan"),
        au_probabilities=au_array,
        au_codes=au_codes,
        aus=aus,
        features=torch.cat(pooled).cpu().numpy() if pooled else None,
    )


class _Tally:
    """Running sums of one pass, kept on the device and read on the host only when checked.

    The loss sum is float64 (float32 on MPS, which has no float64) unless ``loss_dtype`` says otherwise:
    the per-step ``loss * batch_size`` in float64 is exactly what a Python-float accumulation of
    ``loss.item() * batch_size`` gave. A NaN or infinite step makes the sum non-finite, so a check every
    ``check_every`` steps sees every bad step since the last check.
    """

    def __init__(self, device: torch.device, *, check_every: int, description: str, what: str, hint: str,
                 loss_dtype: torch.dtype | None = None) -> None:
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every={check_every!r}: expected an integer >= 1 (steps between checks)")
        self.check_every, self.description, self.what, self.hint = check_every, description, what, hint
        self.loss = torch.zeros((), dtype=loss_dtype or _sum_dtype(device), device=device)
        # a float sum: an AU-only objective counts each clip's fraction of AU decisions right
        self.correct = torch.zeros((), dtype=_sum_dtype(device), device=device)
        self.samples = self.steps = self.checked_steps = self.checked_samples = 0

    def add(self, loss: torch.Tensor, batch_size: int, *, correct: torch.Tensor | None = None) -> None:
        self.loss += loss.to(self.loss.dtype) * batch_size
        if correct is not None:
            self.correct += correct.to(self.correct.dtype)
        self.samples += batch_size
        self.steps += 1

    def due(self) -> bool:
        return self.steps % self.check_every == 0

    def check(self) -> float:
        """The mean loss so far (waits for the device).

        Raises:
            FloatingPointError: the sum is NaN or infinite, naming the steps and samples where it became so.
        """
        total = float(self.loss)
        mean = total / max(self.samples, 1)
        if not math.isfinite(total):
            where = (f"at step {self.steps}" if self.steps - self.checked_steps == 1 else
                     f"between steps {self.checked_steps + 1} and {self.steps}")
            raise FloatingPointError(
                f"{self.description}: {self.what} is {mean} {where} (after {self.checked_samples} to {self.samples} "
                f"samples; checked every {self.check_every} steps){self.hint}")
        self.checked_steps, self.checked_samples = self.steps, self.samples
        return mean

    def finish(self) -> tuple[float, float]:
        """``(mean loss, accuracy)`` of the pass, checked; ``(0.0, 0.0)`` for an empty pass, as before."""
        if not self.samples:
            return 0.0, 0.0
        mean = self.check()
        return mean, float(self.correct) / self.samples


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` to ``dtype``, or nothing for fp32 (None)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


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


def _step(model: nn.Module, loss: torch.Tensor, *, optimizer: torch.optim.Optimizer, scheduler: Any,
          scaler: torch.amp.GradScaler | None, grad_clip: float | None) -> None:
    """Backward, clip, optimizer and scheduler step; through ``scaler`` when it is enabled (fp16 on CUDA)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
        _clip(model, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        _clip(model, grad_clip)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


def _clip(model: nn.Module, max_norm: float | None) -> None:
    if max_norm is not None and max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _no_progress(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None hides the bar when not on a terminal."""
    return None if progress is None else not progress
