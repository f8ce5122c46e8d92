"""Frame family: a 2D CNN on the apex frame alone.

The baseline that shows how much of a benchmark's signal is temporal: if it matches the video models,
they are not using motion. It receives the same ``(B, 3, T, H, W)`` clip as every other model and keeps
only ``x[:, :, apex_index]``. ``apex_index`` must be where the clip's sampling strategy puts the apex:
``num_frames // 2`` (the default) for ``apex_centered``, the last frame (``-1``, counted from the end
like a Python index, so it stays right when ``num_frames`` changes) for ``onset_apex``. The other
strategies have no fixed apex position; :func:`microexp.config.validate` refuses a recipe whose pairing
does not read the apex.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import pretrained as pt
from ._base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, VideoClassifier
from ._registry import register_model
from .layers import ClassifierHead, ResNet2d
from .pooling import CNN_POOLS, check_pool

__all__ = ["FrameClassifier", "frame_tiny", "frame_r18", "resolve_apex_index"]


def resolve_apex_index(apex_index: int | None, num_frames: int) -> int:
    """The frame index ``0 <= i < num_frames`` a frame model reads.

    Args:
        apex_index: ``None`` (``num_frames // 2``), an index, or a negative index counted from the end.
        num_frames: ``T`` of the clips.

    Raises:
        ValueError: not an int in ``[-num_frames, num_frames)`` or None.
    """
    if apex_index is None:
        return num_frames // 2
    if isinstance(apex_index, bool) or not isinstance(apex_index, int) or not -num_frames <= apex_index < num_frames:
        raise ValueError(
            f"apex_index: expected an int in [{-num_frames}, {num_frames}) (negative counts from the end) "
            f"or None, got {apex_index!r}"
        )
    return apex_index % num_frames


class FrameClassifier(VideoClassifier):
    """2D ResNet on one frame of the clip.

    Args:
        arch: 2D ResNet (``resnet_tiny``, ``resnet18``, ``resnet34``, ``resnet50``).
        num_classes: classifier outputs.
        num_frames: ``T`` of the clips it receives.
        input_size: ``H = W`` the model is trained on (any size runs).
        apex_index: index along ``T`` of the apex frame; negative counts from the end (``-1`` = the last
            frame, the apex of ``onset_apex`` sampling); ``None`` = ``num_frames // 2`` (``apex_centered``).
        drop_rate: dropout before the classifier.
        attention: ``None`` or ``"cbam"``.
        pool: how the head pools the ``(B, D, h, w)`` map, one of :data:`~.pooling.CNN_POOLS` (``"avg"``,
            ``"attentive_patch"``, ``"cross_attention"``); see :mod:`.pooling`.
        pool_keep: ``k`` of ``"attentive_patch"``, a fraction (float) or a count (int); ``None``: 0.8.
    """

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        num_frames: int,
        input_size: int,
        apex_index: int | None = None,
        drop_rate: float = 0.5,
        attention: str | None = None,
        pool: str = "avg",
        pool_keep: float | int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.apex_index = resolve_apex_index(apex_index, num_frames)
        check_pool(pool, CNN_POOLS, pool_keep)
        self.backbone = ResNet2d(arch=arch, attention=attention)
        self.num_features = self.backbone.num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, drop_rate=drop_rate,
                                   pool=pool, keep=pool_keep)
        self.spec = ModelSpec(
            family="frame", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std), apex_index=self.apex_index,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, D, H/32, W/32)`` from frame ``apex_index``."""
        self.check_input(x)
        if x.shape[2] <= self.apex_index:
            raise ValueError(
                f"{self.spec.name or 'frame model'}: apex_index {self.apex_index} needs T > {self.apex_index}, "
                f"got shape {tuple(x.shape)}"
            )
        return self.backbone(x[:, :, self.apex_index])

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision 2D ResNet keys -> ``backbone.*``."""
        return pt.resnet2d_to_prefixed(state_dict, "backbone.")


@register_model(family="frame", modality="rgb", cpu_friendly=True)
def frame_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    apex_index: int | None = None,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> FrameClassifier:
    """Apex-frame baseline on a tiny 2D ResNet (widths 16-128)."""
    return FrameClassifier(arch="resnet_tiny", num_classes=num_classes, num_frames=num_frames,
                           input_size=input_size, apex_index=apex_index, drop_rate=drop_rate, attention=attention,
                           pool=pool, pool_keep=pool_keep)


@register_model(family="frame", modality="rgb")
def frame_r18(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    apex_index: int | None = None,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> FrameClassifier:
    """Apex-frame baseline on ResNet-18, 224x224."""
    return FrameClassifier(arch="resnet18", num_classes=num_classes, num_frames=num_frames,
                           input_size=input_size, apex_index=apex_index, drop_rate=drop_rate, attention=attention,
                           pool=pool, pool_keep=pool_keep)
