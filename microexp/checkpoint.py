"""Self-describing checkpoints of plain types, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds what inference needs to rebuild the exact model without the recipe (model name and
constructor arguments, data and sampling config, class names) and what resuming needs (optimizer,
scheduler and scaler states, epoch, fold). Loading never unpickles arbitrary objects, so a malicious
file cannot run code; it fails with a one-line error instead.

Integrity: :func:`save_checkpoint` stores ``weights_sha256``, a SHA-256 over the weights in a canonical
form (:func:`weights_digest`: every ``state_dict`` entry in name order, with its name, dtype, shape and
raw bytes), and ``spec_sha256`` over the model name and arguments, class names and data config
(:func:`spec_digest`); :func:`load_checkpoint` recomputes both, so a file whose tensor data or labels
were changed (bytes flipped on disk, or edited) is refused with a one-line :class:`CheckpointError`.
Optimizer and scheduler states (resuming only) are not covered. Checkpoints written
before the digest existed still load, with a warning that their weights cannot be verified.
:func:`model_from_checkpoint` refuses weights holding NaN or infinity (a diverged training run), naming
the first such tensor.

Checkpoints are written through :func:`microexp.fileio.atomic_path`: a temporary file, fsync'd and renamed,
with the normal permissions of a new file (``0644`` under the usual umask); a full or read-only disk is an
:class:`~microexp.fileio.OutputError` naming the path, and the previous checkpoint is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from microexp import __version__
from microexp.errors import MicroexpError
from microexp.fileio import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "microexp-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model_name", "model_kwargs", "state_dict", "class_names")
#: payload key of the weights' SHA-256 (see :func:`weights_digest`)
DIGEST_KEY = "weights_sha256"
#: payload key of the SHA-256 of what inference reads besides the weights (see :func:`spec_digest`)
SPEC_DIGEST_KEY = "spec_sha256"
_SPEC_KEYS = ("model_name", "model_kwargs", "class_names", "data")
#: what a checkpoint is, for messages about files that are not one
EXPECTED = "expected a model.pt written by microexp train (predict also takes a file from microexp export)"
#: exceptions torch.load raises on a damaged or foreign file (the restricted unpickler, the zip reader)
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, KeyError,
                IndexError, struct.error, zipfile.BadZipFile, UnicodeDecodeError, OverflowError)
_PICKLE_PROTOCOL = 0x80  # first byte of a pickle of protocol >= 2 (torch.save's legacy, non-zip format)


class CheckpointError(MicroexpError, ValueError):
    """A checkpoint file is not a microexp checkpoint, is damaged, or does not fit."""


def weights_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a state dict in canonical form: entries sorted by name; each contributes its name,
    dtype, shape and raw (C-contiguous, native byte order) bytes, so the same weights give the same digest
    whatever the device or the order of the dict.

    Raises:
        TypeError: an entry is not a tensor.
    """
    h = hashlib.sha256(b"microexp-weights-v1\0")
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode("utf-8", "surrogatepass"))
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def spec_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of what rebuilds and labels the model besides its weights: model name and arguments,
    class names and data config, as canonical JSON (sorted keys), so a changed class order or sampling
    setting is caught like changed weights."""
    text = json.dumps({k: payload.get(k) for k in _SPEC_KEYS}, sort_keys=True, default=repr, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
    """Write a checkpoint atomically (a crash or a full disk mid-write leaves the previous file intact).

    Args:
        model: a registered model (its ``spec`` gives name and constructor arguments).
        class_names: label index -> class name.
        data: the data/sampling/transform config the model was trained with (plain types).
        epoch, fold: the last completed epoch and the fold, for resuming.
        metrics: plain-typed metrics to keep with the weights.
        optimizer, scheduler, scaler: states for resuming.
        extra: other plain-typed entries (e.g. a marker of a final all-subjects model).

    Raises:
        OutputError: the file cannot be written (disk full, read-only, not a directory); the previous
            checkpoint at ``path``, if any, is kept.
    """
    spec = model.spec
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "microexp_version": __version__,
        "model_name": spec.name,
        "model_kwargs": dict(spec.kwargs),
        "state_dict": state_dict,
        DIGEST_KEY: weights_digest(state_dict),
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
    payload[SPEC_DIGEST_KEY] = spec_digest(payload)
    target = Path(path)
    with atomic_path(target, kept="the previous checkpoint is kept" if target.exists() else None) as tmp:
        _save_file(payload, tmp)
    return target


class _Writes:
    """A binary file that remembers the first ``OSError`` of a write (torch reports it as a RuntimeError)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._handle.flush()


def _save_file(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` whose disk errors (full, read-only) surface as the ``OSError`` they are."""
    with open(path, "wb") as handle:
        writes = _Writes(handle)
        try:
            torch.save(obj, writes)
        except BaseException as exc:
            if writes.error is not None and writes.error is not exc:
                raise writes.error from exc
            raise


def _sniff(p: Path) -> str | None:
    """Why ``p`` cannot be a checkpoint judging by its first bytes (None when it may be one)."""
    try:
        with open(p, "rb") as handle:
            head = handle.read(512)
    except IsADirectoryError:
        return f"a folder; {EXPECTED}"
    if not head:
        return f"an empty file; {EXPECTED}"
    if p.suffix.lower() == ".onnx":
        return "an ONNX export (microexp export), not a checkpoint; export needs the checkpoint it was made from"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(p):
            return f"a damaged or truncated archive (its zip directory is missing); {EXPECTED}"
        with zipfile.ZipFile(p) as archive:
            torchscript = any("/code/" in n or n.startswith("code/") for n in archive.namelist())
        if torchscript:
            return "a TorchScript export (microexp export), not a checkpoint; export needs the checkpoint it was made from"
        return None
    if head[0] == _PICKLE_PROTOCOL:  # torch.save(..., _use_new_zipfile_serialization=False)
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"an unknown binary file; {EXPECTED}"
    first = text.splitlines()[0] if text.strip() else ""
    kind = "a CSV file" if first.count(",") >= 1 or p.suffix.lower() == ".csv" else "a text file"
    return f"{kind}; {EXPECTED}"


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; never executes code from the file.

    Checks the weights against the stored ``weights_sha256`` (a checkpoint without one, written before
    microexp stored it, loads with a warning that it cannot be verified).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a microexp checkpoint (a text/CSV file, an export, a foreign file), damaged,
            truncated, holding non-plain objects, or weights that do not match their digest.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    reason = _sniff(p)
    if reason is not None:
        raise CheckpointError(f"{p}: not a microexp checkpoint: {reason}")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except _LOAD_ERRORS as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{p}: not a loadable microexp checkpoint ({detail})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a microexp checkpoint (no format={FORMAT!r} entry)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {', '.join(missing)}")
    if not isinstance(payload["format_version"], int) or payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {payload['format_version']} is newer than this microexp reads ({FORMAT_VERSION})"
        )
    _verify_weights(p, payload)
    return payload


def _verify_weights(p: Path, payload: Mapping[str, Any]) -> None:
    state = payload["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: damaged checkpoint (its state_dict is not a mapping of tensors)")
    stored = payload.get(DIGEST_KEY)
    if stored is None:
        logger.warning("%s: checkpoint has no weights digest (written before microexp stored one), so its weights "
                       "cannot be verified; re-save it to add one", p)
        return
    if weights_digest(state) != stored:
        raise CheckpointError(f"{p}: the weights do not match the SHA-256 stored with them: the file was modified "
                              "or damaged after it was written; refusing it")
    spec = payload.get(SPEC_DIGEST_KEY)
    if spec is not None and spec_digest(payload) != spec:
        raise CheckpointError(f"{p}: the model name, arguments, class names or data config do not match the SHA-256 "
                              "stored with them: the file was modified or damaged after it was written; refusing it")


def nonfinite_tensor(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The first entry (in name order) holding NaN or infinity, described; None when all are finite."""
    for name in sorted(state_dict):
        t = state_dict[name]
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"{name!r} ({bad} of {t.numel()} values NaN or infinite)"
    return None


def model_from_checkpoint(payload: Mapping[str, Any], *, source: str = "checkpoint") -> nn.Module:
    """Rebuild the exact model from a loaded checkpoint (``create_model`` + ``load_state_dict``).

    Raises:
        CheckpointError: the weights hold NaN/infinity, or do not fit the model the checkpoint names
            (unknown model, constructor arguments or weights of another shape).
    """
    from microexp.models import create_model

    bad = nonfinite_tensor(payload["state_dict"])
    if bad is not None:
        raise CheckpointError(f"{source}: weights are not finite: tensor {bad}; the training run diverged, "
                              "use a checkpoint from before it did")
    try:
        model = create_model(payload["model_name"], **payload["model_kwargs"])
    except (ValueError, TypeError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{source}: cannot rebuild model {payload.get('model_name')!r} ({reason})") from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches: the file does not fit the model
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{source}: cannot rebuild model {payload.get('model_name')!r} ({reason})") from exc
    return model
