"""The GPU path's choices: autocast type, gradient scaler, memory format, compilation, cuDNN autotuning.

Each choice is a pure function of the device, the config values and (for tests) the device's capabilities,
so every CUDA branch is testable on a CPU. On CPU everything is off: fp32, contiguous tensors, no
compilation, which keeps CPU results exactly those of a plain loop.

- :func:`autocast_dtype`: ``train.amp`` + ``train.amp_dtype`` -> ``torch.bfloat16`` / ``torch.float16`` /
  ``None`` (fp32). ``auto`` takes bf16 where the GPU computes it natively, else fp16.
- :func:`make_grad_scaler`: a ``GradScaler`` that is enabled only for fp16 on CUDA (bf16 has fp32's
  exponent range and needs none). Its state belongs in ``last.pt`` for resuming.
- :func:`memory_format_for`: ``channels_last_3d`` for models built on ``Conv3d`` (the ``3dcnn`` family),
  ``contiguous_format`` for everything else (transformers, and the 2D CNN families, whose inputs stay 5-D).
- :func:`prepare_model`: move, convert the conv weights to that format, ``Module.compile`` on CUDA when asked.
- :func:`configure_backends`: ``cudnn.benchmark`` on CUDA unless the run is deterministic.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from microexp.config import AMP_DTYPES
from microexp.errors import ConfigError
from microexp.models import FAMILIES

logger = logging.getLogger(__name__)

__all__ = ["CHANNELS_LAST_3D_FAMILIES", "autocast_dtype", "configure_backends", "dtype_name", "is_conv3d_model",
           "make_grad_scaler", "memory_format_for", "needs_grad_scaler", "prepare_model"]

#: Families whose models are built on Conv3d (checked against every registered model by the tests).
CHANNELS_LAST_3D_FAMILIES = frozenset({"3dcnn"})

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(
    device: torch.device, *, amp: bool, amp_dtype: str = "auto", bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The autocast type of a run, or None for fp32.

    Args:
        device: the training device; mixed precision is used on CUDA only (CPU -> None).
        amp: ``train.amp``; False -> None.
        amp_dtype: ``train.amp_dtype``: ``auto`` (bf16 where supported, else fp16), ``bfloat16`` or ``float16``.
        bf16_supported: whether the GPU computes bf16 natively; None asks
            ``torch.cuda.is_bf16_supported(including_emulation=False)`` (tests pass it).

    Raises:
        ConfigError: an unknown ``amp_dtype``, or ``bfloat16`` asked for on a GPU without native bf16
            (it would be emulated, slower than fp32).
    """
    if amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype={amp_dtype!r}: expected one of {', '.join(AMP_DTYPES)}")
    if not amp or device.type != "cuda":
        return None
    if amp_dtype == "float16":
        return torch.float16
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
    if amp_dtype == "bfloat16" and not bf16_supported:
        raise ConfigError("train.amp_dtype=bfloat16: this GPU has no native bfloat16 "
                          "(torch.cuda.is_bf16_supported() is False); use train.amp_dtype=auto or float16")
    return torch.bfloat16 if bf16_supported else torch.float16


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for fp16 autocast on CUDA; a disabled one (a no-op) otherwise.

    Keep its ``state_dict()`` in ``last.pt`` and load it on resume: the loss scale it has found is state.
    """
    enabled = needs_grad_scaler(device, dtype)
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def needs_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> bool:
    """fp16 autocast on CUDA needs loss scaling (fp16 gradients underflow); bf16 and fp32 do not."""
    return device.type == "cuda" and dtype == torch.float16


def is_conv3d_model(model: nn.Module) -> bool:
    """Whether most of the model's parameters are ``Conv3d`` weights (a 3D CNN, not a transformer whose patch
    embedding or pooling happens to be a Conv3d). Works on ``meta`` models."""
    total = sum(p.numel() for p in model.parameters())
    conv3d = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv3d) for p in m.parameters(recurse=False))
    return total > 0 and conv3d * 2 > total


def memory_format_for(
    family_or_model: str | nn.Module, *, device: torch.device, channels_last: bool
) -> torch.memory_format:
    """The memory format of the model's weights and of its input ``(B, C, T, H, W)``.

    ``channels_last_3d`` on CUDA for Conv3d models (cuDNN's fast NDHWC kernels, most of all under bf16/fp16),
    when ``channels_last`` (``train.channels_last``) is on; ``contiguous_format`` otherwise: on CPU, for
    transformers (attention works on tokens), and for the 2D CNN families (their input is 5-D and reshaped
    to frames inside the model).

    Args:
        family_or_model: a family name (one of :data:`microexp.models.FAMILIES`) or a model, which is
            inspected (:func:`is_conv3d_model`).
        device: the training device.
        channels_last: ``train.channels_last``.

    Raises:
        ValueError: an unknown family name.
    """
    if isinstance(family_or_model, str):
        if family_or_model not in FAMILIES:
            raise ValueError(f"memory_format_for: family {family_or_model!r}: expected one of {', '.join(FAMILIES)}")
        conv3d = family_or_model in CHANNELS_LAST_3D_FAMILIES
    else:
        conv3d = is_conv3d_model(family_or_model)
    if channels_last and conv3d and device.type == "cuda":
        return torch.channels_last_3d
    return torch.contiguous_format


def prepare_model(
    model: nn.Module,
    *,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    compile: bool = False,
) -> nn.Module:
    """Move ``model`` to ``device``, convert its Conv3d weights to ``memory_format``, compile it on CUDA.

    The module is changed in place and returned (the same object: its ``state_dict`` keys and ``spec`` are
    unchanged, so checkpoints stay loadable; ``Module.compile`` rather than ``torch.compile``, which would
    wrap it and prefix every key with ``_orig_mod.``). Call it before the optimizer is built. Compilation is
    skipped off CUDA, with a warning: inductor on CPU needs a C++ toolchain and compiles for longer than
    the CPU runs take.
    """
    model.to(device)
    if memory_format == torch.channels_last_3d:
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                module.to(memory_format=memory_format)
    elif memory_format != torch.contiguous_format:
        raise ValueError(f"prepare_model: memory_format={memory_format}: expected torch.channels_last_3d or "
                         "torch.contiguous_format")
    if compile:
        if device.type == "cuda":
            model.compile()
        else:
            logger.warning("train.compile=true: not compiled on %s (torch.compile is used on CUDA only)", device)
    return model


def configure_backends(device: torch.device, *, deterministic: bool) -> bool:
    """``torch.backends.cudnn.benchmark = not deterministic`` on CUDA (autotuned conv kernels; their choice
    can vary between runs). Call it after :func:`microexp.seed.seed_everything`. Returns the value set
    (False off CUDA, where nothing is changed)."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = not deterministic
    return not deterministic


def dtype_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32`` (None), for logs and reports."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))
