"""3D CNN family: R3D (3D ResNet) and X3D.

- ``r3d_18``: the 3D ResNet-18 of Tran et al. (CVPR 2018, "A closer look at spatiotemporal convolutions"),
  built to the structure of ``torchvision.models.video.r3d_18``: same modules and parameter names, so a
  torchvision Kinetics-400 state dict loads as is; a torchvision ImageNet ResNet-18 is inflated (2D -> 3D).
- ``r3d_tiny``: the same design with one block per stage and widths 16-128 for CPU training.
- ``x3d_xs`` / ``x3d_s``: X3D (Feichtenhofer, CVPR 2020) through ``pytorchvideo.models.x3d.create_x3d``
  (width factor 2.0, depth factor 2.2; XS = 4 frames, S = 13 frames, both 160 px); pytorchvideo
  state dicts load after a key mapping.

Input ``(B, 3, T, H, W)``; ``forward_features`` returns ``(B, D, T', H', W')`` before pooling.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.video import resnet as tv_video

from . import pretrained as pt
from ._base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    KINETICS_TV_MEAN,
    KINETICS_TV_STD,
    ModelSpec,
    VideoClassifier,
    import_pytorchvideo,
)
from ._registry import register_model
from .layers import CBAM, ClassifierHead, ConvBnAct
from .pooling import CNN_POOLS, check_pool

__all__ = ["ResNet3d", "X3D", "r3d_tiny", "r3d_18", "x3d_xs", "x3d_s"]


class ResNet3d(VideoClassifier):
    """3D ResNet with BasicBlocks of 3x3x3 convolutions (torchvision ``VideoResNet`` parameter names).

    Stem: conv (3, 7, 7) stride (1, 2, 2); stages 2-4 stride 2 in time and space.
    Shapes: ``(B, 3, T, H, W)`` -> features ``(B, widths[-1], T/8, H/16, W/16)`` -> ``(B, num_classes)``.

    Args:
        num_classes: classifier outputs.
        num_frames: ``T`` the model is trained on (any ``T`` is accepted at run time).
        input_size: ``H = W`` the model is trained on (any size is accepted at run time).
        layers: residual blocks per stage.
        widths: channels per stage (the stem has ``widths[0]``).
        drop_rate: dropout before the classifier.
        attention: ``None`` or ``"cbam"`` (3D CBAM after each stage).
        pool: how the head pools the ``(B, D, T', H', W')`` map, one of :data:`~.pooling.CNN_POOLS`: ``"avg"``
            (global average), ``"attentive_patch"`` (APViT top-k positions) or ``"cross_attention"`` (DAN
            heads); see :mod:`.pooling`.
        pool_keep: ``k`` of ``"attentive_patch"``, a fraction (float) or a count (int); ``None``: 0.8.
        mean, std: input normalisation recorded in the spec.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        drop_rate: float = 0.0,
        attention: str | None = None,
        pool: str = "avg",
        pool_keep: float | int | None = None,
        mean: Sequence[float] = KINETICS_TV_MEAN,
        std: Sequence[float] = KINETICS_TV_STD,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet3d: layers and widths need 4 values each, got {layers} and {widths}")
        if attention not in (None, "cbam"):
            raise ValueError(f"attention: expected None or 'cbam', got {attention!r}")
        check_pool(pool, CNN_POOLS, pool_keep)
        self.stem = ConvBnAct(
            in_channels=3, out_channels=widths[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), dims=3
        )
        inplanes = widths[0]
        for i, (blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stage = _make_stage3d(inplanes, planes, blocks, stride=1 if i == 0 else 2)
            if attention == "cbam":
                stage.append(CBAM(channels=planes, dims=3))
            setattr(self, f"layer{i + 1}", stage)
            inplanes = planes
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, drop_rate=drop_rate,
                                   pool=pool, keep=pool_keep)
        self.spec = ModelSpec(
            family="3dcnn", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, D, T/8, H/16, W/16)``."""
        self.check_input(x)
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ``r3d_18`` keys load as is (``fc`` -> ``head.fc``); a 2D ImageNet ResNet is inflated."""
        if pt.is_resnet2d_state_dict(state_dict):
            return pt.inflate_resnet2d_to_r3d(state_dict, time_kernel=3)
        return pt.rename_prefixes(state_dict, {"fc.": "head.fc."})


def _make_stage3d(inplanes: int, planes: int, blocks: int, *, stride: int) -> nn.Sequential:
    """A stage of torchvision video ``BasicBlock``s with ``Conv3DSimple`` (3x3x3) convolutions."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes)
        )
    stage = [tv_video.BasicBlock(inplanes, planes, tv_video.Conv3DSimple, stride, downsample)]
    stage += [tv_video.BasicBlock(planes, planes, tv_video.Conv3DSimple) for _ in range(1, blocks)]
    return nn.Sequential(*stage)


class X3D(VideoClassifier):
    """X3D built by ``pytorchvideo.models.x3d.create_x3d``.

    ``blocks`` are pytorchvideo's stem and four stages; ``projection`` is its ``ProjectedPool``
    (1x1x1 conv, BN, ReLU, global average pool, 1x1x1 conv to ``head_dim``, ReLU) with the fixed-size
    pool replaced by an adaptive one, so any ``T``/size runs.
    Shapes: ``(B, 3, T, H, W)`` -> features ``(B, D, T, H/32, W/32)`` -> ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        width_factor: float = 2.0,
        depth_factor: float = 2.2,
        bottleneck_factor: float = 2.25,
        head_dim: int = 2048,
        drop_rate: float = 0.5,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        net = import_pytorchvideo("x3d").create_x3d(
            input_clip_length=num_frames,
            input_crop_size=input_size,
            model_num_class=max(num_classes, 1),
            dropout_rate=0.0,
            width_factor=width_factor,
            depth_factor=depth_factor,
            bottleneck_factor=bottleneck_factor,
            head_dim_out=head_dim,
            head_activation=None,
        )
        self.blocks = nn.ModuleList(list(net.blocks)[:-1])
        projection = net.blocks[-1].pool
        projection.pool = nn.AdaptiveAvgPool3d(1)
        self.projection = projection
        self.num_features = head_dim
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=head_dim, num_classes=num_classes, drop_rate=drop_rate)
        self.spec = ModelSpec(
            family="3dcnn", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, C5, T, H/32, W/32)`` (last stage, before the projection)."""
        self.check_input(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.head(self.projection(x), pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """pytorchvideo X3D keys: ``blocks.5.pool.*`` -> ``projection.*``, ``blocks.5.proj.*`` -> ``head.fc.*``."""
        last = len(self.blocks)
        return pt.rename_prefixes(
            state_dict, {f"blocks.{last}.pool.": "projection.", f"blocks.{last}.proj.": "head.fc."}
        )


@register_model(family="3dcnn", modality="rgb", cpu_friendly=True)
def r3d_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> ResNet3d:
    """3D ResNet, one block per stage, widths 16-128."""
    return ResNet3d(
        num_classes=num_classes, num_frames=num_frames, input_size=input_size, layers=(1, 1, 1, 1),
        widths=(16, 32, 64, 128), drop_rate=drop_rate, attention=attention, pool=pool, pool_keep=pool_keep,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


@register_model(family="3dcnn", modality="rgb")
def r3d_18(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 112,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> ResNet3d:
    """R3D-18 (Tran et al. 2018), torchvision r3d_18 structure, 16x112x112."""
    return ResNet3d(
        num_classes=num_classes, num_frames=num_frames, input_size=input_size, layers=(2, 2, 2, 2),
        widths=(64, 128, 256, 512), drop_rate=drop_rate, attention=attention, pool=pool, pool_keep=pool_keep,
    )


@register_model(family="3dcnn", modality="rgb")
def x3d_xs(*, num_classes: int, num_frames: int = 4, input_size: int = 160, drop_rate: float = 0.5) -> X3D:
    """X3D-XS (Feichtenhofer 2020) via pytorchvideo, 4x160x160."""
    return X3D(num_classes=num_classes, num_frames=num_frames, input_size=input_size, drop_rate=drop_rate)


@register_model(family="3dcnn", modality="rgb")
def x3d_s(*, num_classes: int, num_frames: int = 13, input_size: int = 160, drop_rate: float = 0.5) -> X3D:
    """X3D-S (Feichtenhofer 2020) via pytorchvideo, 13x160x160."""
    return X3D(num_classes=num_classes, num_frames=num_frames, input_size=input_size, drop_rate=drop_rate)
