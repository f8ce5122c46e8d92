"""Two-stream family (Simonyan & Zisserman, NeurIPS 2014): an RGB spatial stream and an optical-flow
temporal stream, fused.

- spatial stream: a 2D ResNet on every RGB key frame, features averaged over frames (TSN consensus).
- temporal stream: a 2D ResNet whose first conv takes the ``T`` flow fields stacked along channels
  (``T * flow_channels`` input channels, time-major: ``[dx_0, dy_0, dx_1, dy_1, ...]``).
- fusion ``"late"``: each stream has its own classifier and the scores are mixed,
  ``w * spatial + (1 - w) * temporal``, with ``w = fusion_weight`` or, when ``None``, a learnt
  ``sigmoid(logit)`` starting at 0.5. ``"feature"``: the pooled features are concatenated and one
  classifier reads them.

Input ``(B, 3 + flow_channels, T, H, W)`` (RGB first, then flow) with ``T == spec.num_frames``.
``flow_*`` models are the temporal stream alone (modality ``flow``, input ``(B, flow_channels, T, H, W)``).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from . import pretrained as pt
from ._base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, VideoClassifier, channel_stats, check_flow_channels
from ._registry import register_model
from .layers import ClassifierHead, LateFusion, ResNet2d
from .pooling import CNN_POOLS, check_pool

__all__ = ["TwoStream", "FlowStream", "TwoStreamFeatures", "two_stream_tiny", "two_stream_r18", "flow_tiny", "flow_r18"]

FUSIONS = ("late", "feature")


class TwoStreamFeatures(NamedTuple):
    """``forward_features`` output of :class:`TwoStream`."""

    spatial: torch.Tensor  #: ``(B, D, T, H/32, W/32)`` per-frame RGB features
    temporal: torch.Tensor  #: ``(B, D, H/32, W/32)`` stacked-flow features


def stack_flow(flow: torch.Tensor) -> torch.Tensor:
    """``(B, Cf, T, H, W)`` -> ``(B, T * Cf, H, W)``, time-major (all channels of frame 0 first)."""
    b, c, t, h, w = flow.shape
    return flow.transpose(1, 2).reshape(b, t * c, h, w)


def _flow_backbone_state(state_dict: dict[str, torch.Tensor], prefix: str, in_channels: int, classifier: str):
    """torchvision 2D ResNet -> a stacked-flow stream under ``prefix`` (cross-modality ``conv1``)."""
    out = pt.resnet2d_to_prefixed(state_dict, prefix, classifier=classifier)
    key = prefix + "conv1.weight"
    if key in out and out[key].shape[1] != in_channels:
        out[key] = pt.cross_modality_conv_weight(out[key], in_channels)
    return out


class FlowStream(VideoClassifier):
    """The temporal stream alone: 2D ResNet on stacked optical flow.

    Shapes: ``(B, Cf, T, H, W)`` -> features ``(B, D, H/32, W/32)`` -> ``(B, num_classes)``.
    ``pool`` (one of :data:`~.pooling.CNN_POOLS`) and ``pool_keep`` choose the head's pooling of that map
    (see :mod:`.pooling`); the two-stream models keep average pooling.
    """

    fixed_frames = True

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        num_frames: int,
        input_size: int,
        flow_channels: int = 2,
        drop_rate: float = 0.5,
        attention: str | None = None,
        pool: str = "avg",
        pool_keep: float | int | None = None,
    ) -> None:
        super().__init__()
        check_flow_channels(flow_channels)
        check_pool(pool, CNN_POOLS, pool_keep)
        self.backbone = ResNet2d(arch=arch, in_channels=flow_channels * num_frames, attention=attention)
        self.num_features = self.backbone.num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, drop_rate=drop_rate,
                                   pool=pool, keep=pool_keep)
        in_channels, mean, std = channel_stats("flow", flow_channels=flow_channels, mean=(), std=())
        self.spec = ModelSpec(
            family="two_stream", modality="flow", num_frames=num_frames, input_size=input_size,
            in_channels=in_channels, mean=mean, std=std, flow_channels=flow_channels,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cf, T, H, W)`` -> ``(B, D, H/32, W/32)``."""
        self.check_input(x)
        return self.backbone(stack_flow(x))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision 2D ResNet -> ``backbone.*`` with a cross-modality ``conv1``."""
        return _flow_backbone_state(state_dict, "backbone.", self.backbone.in_channels, "head.fc.")


class TwoStream(VideoClassifier):
    """RGB spatial stream + stacked-flow temporal stream with late or feature fusion.

    Args:
        arch: 2D ResNet of both streams.
        num_classes: classifier outputs.
        num_frames: key frames ``T`` (fixed: the flow stack has ``T * flow_channels`` channels).
        input_size: ``H = W`` the model is trained on (any size runs).
        flow_channels: 2 (dx, dy) or 3 (with optical strain).
        fusion: ``"late"`` (score fusion) or ``"feature"`` (concatenated features, one classifier).
        fusion_weight: late fusion weight of the spatial stream in ``[0, 1]``; ``None`` learns it.
        drop_rate: dropout before the classifier(s).
        attention: ``None`` or ``"cbam"`` in both streams.

    ``forward_features`` returns :class:`TwoStreamFeatures`; ``num_features`` is ``2 * D`` (both pooled
    feature vectors concatenated, what ``forward_head(..., pre_logits=True)`` returns).
    """

    fixed_frames = True

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        num_frames: int,
        input_size: int,
        flow_channels: int = 2,
        fusion: str = "late",
        fusion_weight: float | None = None,
        drop_rate: float = 0.5,
        attention: str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        check_flow_channels(flow_channels)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, got {fusion!r}")
        if fusion == "feature" and fusion_weight is not None:
            raise ValueError("fusion_weight: only used with fusion='late'; leave it None for fusion='feature'")
        self.fusion_mode = fusion
        self.spatial = ResNet2d(arch=arch, attention=attention)
        self.temporal = ResNet2d(arch=arch, in_channels=flow_channels * num_frames, attention=attention)
        dim = self.spatial.num_features
        self.num_features = 2 * dim
        self.num_classes = num_classes
        if fusion == "late":
            self.spatial_head = ClassifierHead(in_features=dim, num_classes=num_classes, drop_rate=drop_rate)
            self.temporal_head = ClassifierHead(in_features=dim, num_classes=num_classes, drop_rate=drop_rate)
            self.fusion = LateFusion(weight=fusion_weight)
        else:
            self.head = ClassifierHead(in_features=2 * dim, num_classes=num_classes, drop_rate=drop_rate)
        in_channels, mean, std = channel_stats("rgb+flow", flow_channels=flow_channels, mean=mean, std=std)
        self.spec = ModelSpec(
            family="two_stream", modality="rgb+flow", num_frames=num_frames, input_size=input_size,
            in_channels=in_channels, mean=mean, std=std, flow_channels=flow_channels,
        )

    def forward_features(self, x: torch.Tensor) -> TwoStreamFeatures:
        """``(B, 3 + Cf, T, H, W)`` -> :class:`TwoStreamFeatures`."""
        self.check_input(x)
        rgb, flow = x[:, :3], x[:, 3:]
        b, c, t, h, w = rgb.shape
        spatial = self.spatial(rgb.transpose(1, 2).reshape(b * t, c, h, w))
        spatial = spatial.reshape(b, t, *spatial.shape[1:]).transpose(1, 2)
        return TwoStreamFeatures(spatial=spatial, temporal=self.temporal(stack_flow(flow)))

    def forward_streams(self, features: TwoStreamFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Late fusion only: the ``(B, num_classes)`` scores of the spatial and temporal streams."""
        if self.fusion_mode != "late":
            raise ValueError("forward_streams: only models with fusion='late' have per-stream scores")
        return self.spatial_head(features.spatial), self.temporal_head(features.temporal)

    def forward_head(self, x: TwoStreamFeatures, *, pre_logits: bool = False) -> torch.Tensor:
        """Fused ``(B, num_classes)`` scores, or ``(B, 2 * D)`` pooled features when ``pre_logits`` (or
        ``num_classes == 0``)."""
        if self.fusion_mode == "late" and not pre_logits and self.num_classes > 0:
            return self.fusion(*self.forward_streams(x))
        pool = (self.head if self.fusion_mode == "feature" else self.spatial_head).pool_features
        pooled = torch.cat([pool(x.spatial), pool(x.temporal)], dim=1)
        if self.fusion_mode == "late":
            return pooled
        return self.head(pooled, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        if self.fusion_mode == "late":
            self.spatial_head.reset(num_classes)
            self.temporal_head.reset(num_classes)
            self.fusion.reset()
        else:
            self.head.reset(num_classes)

    def classifier_prefixes(self) -> tuple[str, ...]:
        if self.fusion_mode == "late":  # the fusion weight belongs to the classifier: replaced with it
            return ("spatial_head.fc.", "temporal_head.fc.", "fusion.")
        return ("head.fc.",)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision 2D ResNet -> both streams (the flow stream's ``conv1`` by cross-modality averaging)."""
        if not pt.is_resnet2d_state_dict(state_dict):
            return state_dict
        classifier = self.classifier_prefixes()[0]
        spatial = pt.resnet2d_to_prefixed(state_dict, "spatial.", classifier=classifier)
        temporal = _flow_backbone_state(state_dict, "temporal.", self.temporal.in_channels, classifier)
        return {**spatial, **temporal}


@register_model(family="two_stream", modality="rgb+flow", cpu_friendly=True)
def two_stream_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    flow_channels: int = 2,
    fusion: str = "late",
    fusion_weight: float | None = None,
    drop_rate: float = 0.5,
    attention: str | None = None,
) -> TwoStream:
    """Two-stream (RGB frames + stacked flow) on tiny 2D ResNets."""
    return TwoStream(arch="resnet_tiny", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
                     flow_channels=flow_channels, fusion=fusion, fusion_weight=fusion_weight, drop_rate=drop_rate,
                     attention=attention)


@register_model(family="two_stream", modality="rgb+flow")
def two_stream_r18(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    flow_channels: int = 2,
    fusion: str = "late",
    fusion_weight: float | None = None,
    drop_rate: float = 0.5,
    attention: str | None = None,
) -> TwoStream:
    """Two-stream (Simonyan & Zisserman 2014) with ResNet-18 streams, 8x224x224."""
    return TwoStream(arch="resnet18", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
                     flow_channels=flow_channels, fusion=fusion, fusion_weight=fusion_weight, drop_rate=drop_rate,
                     attention=attention)


@register_model(family="two_stream", modality="flow", cpu_friendly=True)
def flow_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    flow_channels: int = 2,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> FlowStream:
    """Temporal stream alone: tiny 2D ResNet on stacked optical flow."""
    return FlowStream(arch="resnet_tiny", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
                      flow_channels=flow_channels, drop_rate=drop_rate, attention=attention, pool=pool,
                      pool_keep=pool_keep)


@register_model(family="two_stream", modality="flow")
def flow_r18(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    flow_channels: int = 2,
    drop_rate: float = 0.5,
    attention: str | None = None,
    pool: str = "avg",
    pool_keep: float | int | None = None,
) -> FlowStream:
    """Temporal stream alone: ResNet-18 on stacked optical flow, 8x224x224."""
    return FlowStream(arch="resnet18", num_classes=num_classes, num_frames=num_frames, input_size=input_size,
                      flow_channels=flow_channels, drop_rate=drop_rate, attention=attention, pool=pool,
                      pool_keep=pool_keep)
