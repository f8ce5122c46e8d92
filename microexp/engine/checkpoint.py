"""Self-describing checkpoints of plain types, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds what inference needs to rebuild the exact model without the recipe (model name and
constructor arguments, data and sampling config, class names) and what resuming needs (optimizer,
scheduler and scaler states, epoch, fold). Loading never unpickles arbitrary objects, so a tampered
file cannot run code; it fails with a one-line error instead.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from microexp import __version__
from microexp.errors import MicroexpError

FORMAT = "microexp-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model_name", "model_kwargs", "state_dict", "class_names")


class CheckpointError(MicroexpError, ValueError):
    """A checkpoint file is not a microexp checkpoint, is damaged, or does not fit."""


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    class_names: list[str],
    data: Mapping[str, Any] | None = None,
    epoch: int | None = None,
    fold: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact).

    Args:
        model: a registered model (its ``spec`` gives name and constructor arguments).
        class_names: label index -> class name.
        data: the data/sampling/transform config the model was trained with (plain types).
        epoch, fold: the last completed epoch and the fold, for resuming.
        metrics: plain-typed metrics to keep with the weights.
        optimizer, scheduler, scaler: states for resuming.
    """
    spec = model.spec
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "microexp_version": __version__,
        "model_name": spec.name,
        "model_kwargs": dict(spec.kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "data": dict(data or {}),
        "epoch": epoch,
        "fold": fold,
        "metrics": dict(metrics or {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "extra": dict(extra or {}),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; never executes code from the file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a microexp checkpoint, damaged, or holding non-plain objects.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{p}: not a loadable microexp checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a microexp checkpoint (no format={FORMAT!r} entry)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {', '.join(missing)}")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {payload['format_version']} is newer than this microexp reads ({FORMAT_VERSION})"
        )
    return payload


def model_from_checkpoint(payload: Mapping[str, Any], *, source: str = "checkpoint") -> nn.Module:
    """Rebuild the exact model from a loaded checkpoint (``create_model`` + ``load_state_dict``)."""
    from microexp.models import create_model

    try:
        model = create_model(payload["model_name"], **payload["model_kwargs"])
        model.load_state_dict(payload["state_dict"])
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{source}: cannot rebuild model {payload.get('model_name')!r} ({reason})") from None
    return model
