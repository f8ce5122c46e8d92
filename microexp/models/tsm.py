"""TSM family: Temporal Shift Module networks (Lin, Gan & Han, ICCV 2019).

A 2D ResNet processes the ``T`` key frames as a batch of images; in every residual block the input of the
residual branch (before ``conv1``) is shifted along time by :func:`temporal_shift` ("residual shift": 1/8
of the channels one step back, 1/8 one step forward), and the frame features are averaged (TSN consensus)
before the classifier. ``tsm_r50`` is the paper's TSM-ResNet50 (8 segments, 224 px); ``tsm_r18`` the same on
ResNet-18; ``tsm_tiny`` uses a tiny ResNet (widths 16-128) for CPU training.

Input ``(B, 3, T, H, W)`` with ``T == spec.num_frames``; ``forward_features`` returns ``(B, D, T, H/32, W/32)``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import pretrained as pt
from ._base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, VideoClassifier
from ._registry import register_model
from .layers import ClassifierHead, ResNet2d, TemporalShift, temporal_shift
from .pooling import CNN_POOLS, check_pool

__all__ = ["TSM", "temporal_shift", "tsm_tiny", "tsm_r18", "tsm_r50"]


class TSM(VideoClassifier):
    """2D ResNet with temporal shift in each residual branch and average consensus over frames.

    Args:
        arch: 2D ResNet (``resnet_tiny``, ``resnet18``, ``resnet34``, ``resnet50``).
        num_classes: classifier outputs.
        num_frames: segments ``T`` (fixed: the shift needs it).
        input_size: ``H = W`` the model is trained on (any size runs).
        fold_div: ``1/fraction`` of channels shifted each way (8 in the paper).
        drop_rate: dropout before the classifier (0.5 in the paper).
        attention: ``None`` or ``"cbam"`` (2D CBAM after each stage).
        pool: how the head pools the ``(B, D, T, h, w)`` frame features, one of :data:`~.pooling.CNN_POOLS`:
            ``"avg"`` (the paper's average consensus over frames and space), ``"attentive_patch"`` (APViT top-k
            positions over frames and space) or ``"cross_attention"`` (DAN heads); see :mod:`.pooling`.
        pool_keep: ``k`` of ``"attentive_patch"``, a fraction (float) or a count (int); ``None``: 0.8.
    """

    fixed_frames = True

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        num_frames: int,
        input_size: int,
        fold_div: int = 8,
        drop_rate: float = 0.5,
        attention: str | None = None,
        pool: str = "avg",
        pool_keep: float | int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if fold_div < 2:
            raise ValueError(f"fold_div: expected an int >= 2, got {fold_div!r}")
        check_pool(pool, CNN_POOLS, pool_keep)
        self.backbone = ResNet2d(arch=arch, attention=attention)
        for block in self.backbone.residual_blocks():
            block.conv1 = TemporalShift(block.conv1, num_segments=num_frames, fold_div=fold_div)
        self.num_features = self.backbone.num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, drop_rate=drop_rate,
                                   pool=pool, keep=pool_keep)
        self.spec = ModelSpec(
            family="tsm", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, D, T, H/32, W/32)`` (per-frame features, frames kept apart)."""
        self.check_input(x)
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.backbone(x)
        return x.reshape(b, t, *x.shape[1:]).transpose(1, 2)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Pool over frames and space (``avg``: the consensus), dropout, classifier."""
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision 2D ResNet -> ``backbone.*`` (``conv1`` of blocks under ``.net``); official TSM
        checkpoints (``base_model.*``, ``new_fc.*``) are renamed."""
        if any(k.startswith("base_model.") for k in state_dict):
            return pt.rename_prefixes(state_dict, {"base_model.": "backbone.", "new_fc.": "head.fc."})
        return pt.resnet2d_to_prefixed(state_dict, "backbone.", shift=True)


@register_model(family="tsm", modality="rgb", cpu_friendly=True)
def tsm_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    fold_div: int = 8,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> TSM:
    """TSM on a tiny 2D ResNet (one block per stage, widths 16-128)."""
    return TSM(arch="resnet_tiny", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
               fold_div=fold_div, drop_rate=drop_rate, attention=attention, pool=pool, pool_keep=pool_keep)


@register_model(family="tsm", modality="rgb")
def tsm_r18(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    fold_div: int = 8,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> TSM:
    """TSM-ResNet18, residual shift 1/8 each way, 8x224x224."""
    return TSM(arch="resnet18", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
               fold_div=fold_div, drop_rate=drop_rate, attention=attention, pool=pool, pool_keep=pool_keep)


@register_model(family="tsm", modality="rgb")
def tsm_r50(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    fold_div: int = 8,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> TSM:
    """TSM-ResNet50 (Lin et al. 2019), residual shift 1/8 each way, 8x224x224."""
    return TSM(arch="resnet50", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
               fold_div=fold_div, drop_rate=drop_rate, attention=attention, pool=pool, pool_keep=pool_keep)
