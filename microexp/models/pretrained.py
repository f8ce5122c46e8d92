"""Initialise models from local checkpoints; nothing is downloaded.

:func:`load_pretrained` reads a file with ``torch.load(weights_only=True)``, unwraps the usual containers
(``state_dict``, ``model_state`` of pytorchvideo, ``model``, ``module.`` prefixes of DataParallel), lets the
model map the foreign keys onto its own (``VideoClassifier.convert_pretrained_state_dict``, which uses the
pure functions below), drops the source classifier, loads the rest non-strictly and reports missing,
unexpected and shape-mismatched keys. The classifier stays freshly initialised for the model's classes.

Sources each family understands:

=============================  ==============================================================================
model                          state dicts
=============================  ==============================================================================
``r3d_*``                      torchvision ``r3d_18`` (as is); torchvision 2D ``resnet18/34`` (inflated to 3D)
``x3d_*``                      pytorchvideo X3D (``blocks.*``)
``tsm_*``                      torchvision 2D ResNet; official TSM (``base_model.*``, ``new_fc.*``)
``frame_*``                    torchvision 2D ResNet
``two_stream_*``, ``flow_*``   torchvision 2D ResNet (RGB stream as is, flow stream by cross-modality
                               averaging of ``conv1``, Wang et al. TSN 2016)
``timesformer_*``              timm ViT (``patch_embed``, ``blocks.i.attn.qkv``...; temporal attention
                               initialised from the spatial one), official TimeSformer (``model.*``)
``videomae_*``                 official VideoMAE / VideoMAE V2 (pretraining ``encoder.*`` or fine-tuned keys;
                               decoder dropped, ``norm`` -> ``fc_norm``, ``pos_embed`` resized), timm ViT (inflated)
``mvit_*``                     torchvision MViT weight files (``mvit_v2_s``, ``mvit_v1_b``: plain state dicts) ->
                               ``net.*``, ``head.1`` -> ``head.fc`` (dropped); relative (v2) and absolute (v1)
                               position tables resized to the model's frames and size
``swin3d_*``                   torchvision Video Swin weight files (``swin3d_t``) -> ``net.*``, ``head`` -> ``head.fc``
                               (dropped); loads at any input size
every model                    its own checkpoints (``state_dict`` as saved by microexp), including the
                               ``encoder.pt`` of ``microexp pretrain`` (masked-video pretraining)
=============================  ==============================================================================
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from microexp.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "PretrainedError",
    "PretrainedLoadResult",
    "check_pretrained_file",
    "load_pretrained",
    "read_state_dict",
    "unwrap_state_dict",
    "rename_prefixes",
    "inflate_conv_weight",
    "inflate_resnet2d_to_r3d",
    "resnet2d_to_prefixed",
    "cross_modality_conv_weight",
    "resize_pos_embed",
]

class PretrainedError(ConfigError):
    """A ``model.pretrained`` file that cannot be used: not a checkpoint, truncated, holding Python objects
    beyond tensors (refused, never executed), or with no weight matching the model."""


#: what ``torch.load`` raises on a file that is not a (complete) checkpoint: these are the file's fault.
#: Anything else (MemoryError, a bug) keeps its traceback; OSError (permissions, a directory) propagates as is.
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError,
               UnicodeDecodeError, struct.error, zipfile.BadZipFile)

_CONTAINER_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "module", "net")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class PretrainedLoadResult:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: model keys that received weights.
        missing: model keys (outside the classifier) that got nothing from the file.
        unexpected: file keys (after mapping) the model does not have.
        mismatched: keys present on both sides with different shapes (skipped).
        classifier: file keys of the source classifier, dropped.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    classifier: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (``weights_only=True``) and return its unwrapped state dict.

    Args:
        path: the file.
        mmap: map the tensors instead of reading them (zip-format files; legacy files are read).

    Raises:
        FileNotFoundError: no such file (or not a file).
        PretrainedError: (a ``ConfigError``) the file is not a readable checkpoint, holds Python objects
            that ``weights_only`` refuses to unpickle (they are never executed), or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise PretrainedError(
                f"{path}: refused: it holds Python objects beyond tensors, which torch.load(weights_only=True) "
                "does not unpickle (nothing in it was executed); if you trust the file, re-save only its state dict "
                "(torch.save(model.state_dict(), 'weights.pth'))"
            ) from exc
        raise PretrainedError(f"{path}: not a PyTorch checkpoint ({_describe(exc)})") from exc
    except _UNREADABLE as exc:
        raise PretrainedError(f"{path}: not a readable PyTorch checkpoint, or truncated ({_describe(exc)})") from exc
    return unwrap_state_dict(obj, source=str(path))


def check_pretrained_file(path: str | os.PathLike) -> None:
    """Check that ``path`` is a usable weights file without reading its tensors (for config validation).

    The pickled structure is read with ``weights_only=True`` (nothing is executed) and the tensors are
    memory-mapped, so this is cheap even for large files.

    Raises:
        FileNotFoundError, PretrainedError: as :func:`read_state_dict`.
    """
    state = read_state_dict(path, mmap=True)
    if not state:
        raise PretrainedError(f"{path}: holds no tensors")


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict in a checkpoint object and strip DataParallel/compile prefixes."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, Mapping):
            raise PretrainedError(f"{source}: expected a state dict or a dict holding one, got {type(obj).__name__}")
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise PretrainedError(
                f"{source}: no state dict found; expected tensors or one of the keys {list(_CONTAINER_KEYS)}, "
                f"got keys {sorted(map(str, obj))[:10]}"
            )
        obj = inner
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def rename_prefixes(state_dict: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Replace the first matching key prefix of each key (``{"fc.": "head.fc."}``); other keys unchanged."""
    out = {}
    for key, value in state_dict.items():
        for old, new in mapping.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def strip_common_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` when every key has it (e.g. ``model.`` of official TimeSformer checkpoints)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def inflate_conv_weight(weight: torch.Tensor, time_kernel: int) -> torch.Tensor:
    """I3D inflation (Carreira & Zisserman 2017): ``(O, I, kh, kw)`` -> ``(O, I, t, kh, kw)`` repeated over
    ``t`` and divided by ``t``, so a static clip gives the 2D network's response."""
    return weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel


_RESNET2D_KEY = re.compile(r"^(conv1|bn1|layer[1-4]|fc)\.")


def inflate_resnet2d_to_r3d(state_dict: Mapping[str, torch.Tensor], *, time_kernel: int = 3) -> dict[str, torch.Tensor]:
    """A torchvision 2D BasicBlock ResNet (resnet18/34) state dict -> torchvision ``VideoResNet`` (R3D) keys.

    ``conv1``/``bn1`` -> ``stem.0``/``stem.1``; ``layerX.Y.convK``/``bnK`` -> ``layerX.Y.convK.0``/``.1``;
    3x3 (and the 7x7 stem) kernels are inflated over ``time_kernel`` frames, 1x1 downsample kernels over one.
    ``fc`` becomes ``head.fc`` (the classifier, dropped by the loader).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("conv1."):
            new, value = "stem.0." + key[6:], inflate_conv_weight(value, time_kernel)
        elif key.startswith("bn1."):
            new = "stem.1." + key[4:]
        elif key.startswith("fc."):
            new = "head." + key
        else:
            m = re.match(r"^(layer[1-4]\.\d+)\.(conv|bn)([12])\.(.*)$", key)
            if m:
                block, kind, idx, rest = m.groups()
                new = f"{block}.conv{idx}.{0 if kind == 'conv' else 1}.{rest}"
                if kind == "conv" and value.ndim == 4:
                    value = inflate_conv_weight(value, time_kernel)
            elif re.match(r"^layer[1-4]\.\d+\.downsample\.0\.weight$", key) and value.ndim == 4:
                new, value = key, inflate_conv_weight(value, 1)
            else:
                new = key
        out[new] = value
    return out


def resnet2d_to_prefixed(
    state_dict: Mapping[str, torch.Tensor], prefix: str, *, shift: bool = False, classifier: str = "head.fc."
) -> dict[str, torch.Tensor]:
    """Move torchvision 2D ResNet keys (``conv1``, ``bn1``, ``layer*``) under ``prefix``; ``fc`` -> ``classifier``.

    Args:
        shift: also rename ``layerX.Y.conv1`` to ``layerX.Y.conv1.net`` (TSM's wrapped residual conv).
    Keys that are not torchvision ResNet keys are returned unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            out[classifier + key[3:]] = value
            continue
        if _RESNET2D_KEY.match(key):
            if shift:
                key = re.sub(r"^(layer[1-4]\.\d+)\.conv1\.", r"\1.conv1.net.", key)
            key = prefix + key
        out[key] = value
    return out


def is_resnet2d_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a torchvision 2D ResNet state dict (``conv1.weight`` of 4 dims, ``layer1.*`` keys)."""
    w = state_dict.get("conv1.weight")
    return w is not None and w.ndim == 4 and any(k.startswith("layer1.") for k in state_dict)


def cross_modality_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Cross-modality initialisation (TSN): average an RGB conv kernel ``(O, 3, k, k)`` over its input
    channels and replicate it to ``(O, in_channels, k, k)``."""
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)


def resize_pos_embed(pos: torch.Tensor, *, num_prefix: int, new_len: int) -> torch.Tensor:
    """Resize a ``(1, prefix + N, D)`` embedding to ``prefix + new_len`` tokens.

    Square grids (``N`` and ``new_len`` perfect squares) are resized bicubically in 2D, anything else
    (temporal embeddings) linearly in 1D.
    """
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    old_len = grid.shape[1]
    if old_len == new_len:
        return pos
    old_side, new_side = round(old_len ** 0.5), round(new_len ** 0.5)
    x = grid.transpose(1, 2)  # (1, D, N)
    if old_side * old_side == old_len and new_side * new_side == new_len and old_len > 1:
        x = x.reshape(1, -1, old_side, old_side)
        x = F.interpolate(x.float(), size=(new_side, new_side), mode="bicubic", align_corners=False)
        x = x.flatten(2)
    else:
        x = F.interpolate(x.float(), size=new_len, mode="linear", align_corners=False)
    return torch.cat([prefix, x.transpose(1, 2).to(pos.dtype)], dim=1)


def load_pretrained(
    model: nn.Module, path: str | os.PathLike, *, keep_classifier: bool = False
) -> PretrainedLoadResult:
    """Load local weights into ``model`` (a registered microexp model) and report what matched.

    Args:
        model: the model to initialise, in place.
        path: checkpoint file (torchvision, pytorchvideo, timm, official TSM/TimeSformer or microexp).
        keep_classifier: also load the classifier when its shape matches (default: the classifier is
            always replaced, i.e. keeps its fresh initialisation for the model's classes).

    Returns:
        A :class:`PretrainedLoadResult`; missing and unexpected keys are also logged.

    Raises:
        FileNotFoundError: no such file.
        PretrainedError: (a ``ConfigError``, one line at the CLI) unreadable or unsafe file, or no tensor of
            it matches the model.
    """
    state = read_state_dict(path)
    convert = getattr(model, "convert_pretrained_state_dict", None)
    if convert is not None:
        state = convert(state)
    own = model.state_dict()
    prefixes = tuple(model.classifier_prefixes()) if hasattr(model, "classifier_prefixes") else ()
    result = PretrainedLoadResult(path=str(path))
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        is_classifier = bool(prefixes) and key.startswith(prefixes)
        if key in own and own[key].shape != value.shape:
            (result.classifier if is_classifier else result.mismatched).append(key)
            continue
        if is_classifier and not keep_classifier:
            result.classifier.append(key)
            continue
        usable[key] = value
    if not any(k in own for k in usable):
        raise PretrainedError(
            f"{path}: no weight matches model {getattr(getattr(model, 'spec', None), 'name', type(model).__name__)} "
            f"(file keys such as {sorted(state)[:3]}); see microexp.models.pretrained for supported sources"
        )
    missing, unexpected = model.load_state_dict(usable, strict=False)
    result.loaded = [k for k in usable if k in own]
    result.missing = [k for k in missing if not (prefixes and k.startswith(prefixes))]
    result.unexpected = list(unexpected)
    name = getattr(getattr(model, "spec", None), "name", "") or type(model).__name__
    log.info(
        "%s: loaded %d tensors from %s; classifier replaced (%d source keys dropped)",
        name, len(result.loaded), path, len(result.classifier),
    )
    if result.missing:
        log.warning("%s: %d keys missing from %s: %s", name, len(result.missing), path, _short(result.missing))
    if result.unexpected:
        log.warning("%s: %d unexpected keys in %s: %s", name, len(result.unexpected), path, _short(result.unexpected))
    if result.mismatched:
        log.warning(
            "%s: %d keys skipped for shape mismatch: %s", name, len(result.mismatched), _short(result.mismatched)
        )
    return result


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")
