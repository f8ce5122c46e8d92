"""Layers shared by the model families: conv-bn-act, classifier heads, fusion, CBAM, temporal shift and
the 2D ResNet trunk (torchvision parameter names) used by TSM, the frame baseline and two-stream models."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from .pooling import (
    DEFAULT_PATCH_KEEP,
    DEFAULT_TOKEN_KEEP,
    POOLS,
    AttentivePatchPool,
    AttentiveTokenPool,
    CrossAttentionPool,
    check_pool,
)

__all__ = [
    "ConvBnAct",
    "ClassifierHead",
    "LateFusion",
    "CBAM",
    "DropPath",
    "Mlp",
    "temporal_shift",
    "TemporalShift",
    "ResNet2d",
    "RESNET2D_ARCHS",
]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return (value,) * dims if isinstance(value, int) else tuple(value)


class ConvBnAct(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> ReLU, 2D or 3D.

    Keys are ``0.weight`` (conv), ``1.*`` (BN), as in torchvision's video stems.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        dims: int = 2,
        act: bool = True,
    ) -> None:
        kernel = _tuple(kernel_size, dims)
        pad = tuple(k // 2 for k in kernel) if padding is None else _tuple(padding, dims)
        layers: list[nn.Module] = [
            _CONV[dims](in_channels, out_channels, kernel, stride=_tuple(stride, dims), padding=pad,
                        groups=groups, bias=False),
            _BN[dims](out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ClassifierHead(nn.Module):
    """Global pooling -> dropout -> linear classifier.

    Args:
        in_features: feature channels ``D``.
        num_classes: outputs (0: no linear layer, ``forward`` returns pooled features).
        pool: ``"avg"`` averages every dim after the channel dim of ``(B, D, ...)`` (a ``(B, D)`` input
            passes through); ``"token"`` takes token 0 (the class token) of ``(B, N, D)``; the attention pools
            of :mod:`.pooling` (:data:`~.pooling.POOLS`): ``"attentive_patch"`` and ``"cross_attention"`` on
            ``(B, D, ...)``, ``"attentive_token"`` on ``(B, 1 + N, D)``.
        drop_rate: dropout before the linear layer.
        keep: ``k`` of the attentive pools (fraction or count; ``None``: the pool's default).

    An attention pool lives under ``pooler`` (``cross_attention``'s weights are ``pooler.*``); ``avg`` and
    ``token`` have no ``pooler`` and their state dict is ``fc.*`` alone. :meth:`reset` replaces ``fc`` only.
    """

    def __init__(
        self, *, in_features: int, num_classes: int, pool: str = "avg", drop_rate: float = 0.0,
        keep: float | int | None = None,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"ClassifierHead.pool: expected one of {tuple(POOLS)}, got {pool!r}")
        check_pool(pool, tuple(POOLS), keep)
        self.in_features = in_features
        self.pool = pool
        if pool == "attentive_patch":
            self.pooler = AttentivePatchPool(keep=DEFAULT_PATCH_KEEP if keep is None else keep)
        elif pool == "attentive_token":
            self.pooler = AttentiveTokenPool(keep=DEFAULT_TOKEN_KEEP if keep is None else keep)
        elif pool == "cross_attention":
            self.pooler = CrossAttentionPool(channels=in_features)
        else:
            self.pooler = None
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """Replace the linear layer by a fresh one (normal std 0.01, zero bias) for ``num_classes``."""
        if num_classes > 0:
            fc = nn.Linear(self.in_features, num_classes)
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)
            self.fc = fc
        else:
            self.fc = nn.Identity()

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, ...)`` or ``(B, N, D)`` -> ``(B, D)``."""
        if self.pooler is not None:
            return self.pooler(x)
        if self.pool == "token":
            return x[:, 0]
        return x.flatten(2).mean(-1) if x.ndim > 2 else x

    def forward(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool_features(x))
        return x if pre_logits else self.fc(x)


class LateFusion(nn.Module):
    """Weighted score fusion of two streams: ``w * a + (1 - w) * b``.

    Args:
        weight: fixed ``w`` in ``[0, 1]``; ``None`` learns it as ``sigmoid(logit)``, starting at 0.5.
    """

    def __init__(self, *, weight: float | None = None) -> None:
        super().__init__()
        if weight is None:
            self.logit = nn.Parameter(torch.zeros(()))
            self.fixed: float | None = None
        else:
            if not 0.0 <= float(weight) <= 1.0:
                raise ValueError(f"fusion_weight: expected a value in [0, 1] or None (learnable), got {weight!r}")
            self.register_parameter("logit", None)
            self.fixed = float(weight)

    def reset(self) -> None:
        """Back to the initial weight (0.5 when learnable)."""
        if self.logit is not None:
            with torch.no_grad():
                self.logit.zero_()

    @property
    def weight(self) -> torch.Tensor:
        """The current weight ``w`` of the first stream (a 0-dim tensor)."""
        if self.logit is None:
            return torch.tensor(self.fixed)
        return torch.sigmoid(self.logit)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.logit is None:
            return self.fixed * a + (1.0 - self.fixed) * b
        w = torch.sigmoid(self.logit)
        return w * a + (1.0 - w) * b


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018), 2D or 3D.

    Channel attention from average- and max-pooled descriptors through a shared MLP, then spatial
    (spatio-temporal in 3D) attention from channel-wise mean and max maps. Shape-preserving on
    ``(B, C, H, W)`` or ``(B, C, T, H, W)``.
    """

    def __init__(self, *, channels: int, reduction: int = 16, spatial_kernel: int = 7, dims: int = 2) -> None:
        super().__init__()
        conv = _CONV[dims]
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            conv(channels, hidden, 1, bias=False), nn.ReLU(inplace=True), conv(hidden, channels, 1, bias=False)
        )
        kernel = (spatial_kernel,) * 2 if dims == 2 else (3, spatial_kernel, spatial_kernel)
        self.spatial = conv(2, 1, kernel, padding=tuple(k // 2 for k in kernel), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        attn = self.mlp(x.mean(dims, keepdim=True)) + self.mlp(x.amax(dims, keepdim=True))
        x = x * torch.sigmoid(attn)
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Sequential):
    """Transformer MLP: ``fc1 -> GELU -> dropout -> fc2 -> dropout`` (timm key names)."""

    def __init__(self, *, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)


def temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """Temporal shift (Lin et al., TSM, ICCV 2019) of ``(N*T, C, H, W)`` frame features.

    With ``fold = C // fold_div``: channels ``[0, fold)`` move one step back in time
    (``out[t] = x[t + 1]``), channels ``[fold, 2*fold)`` one step forward (``out[t] = x[t - 1]``), the rest
    stay; vacated positions at the clip ends are zero. Pure and differentiable.

    Args:
        x: ``(N*T, C, H, W)``, frames of a clip contiguous (clip-major).
        num_segments: ``T``.
        fold_div: ``1 / fraction`` of channels shifted in each direction.

    Returns:
        ``(N*T, C, H, W)``.
    """
    nt, c, h, w = x.shape
    if num_segments < 1 or nt % num_segments:
        raise ValueError(f"temporal_shift: first dim {nt} is not a multiple of num_segments={num_segments}")
    if fold_div < 1:
        raise ValueError(f"temporal_shift: fold_div must be >= 1, got {fold_div}")
    v = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    back = F.pad(v[:, 1:, :fold], (0, 0, 0, 0, 0, 0, 0, 1))  # out[t] = x[t + 1], zero at the last step
    fwd = F.pad(v[:, :-1, fold : 2 * fold], (0, 0, 0, 0, 0, 0, 1, 0))  # out[t] = x[t - 1], zero at t = 0
    out = torch.cat([back, fwd, v[:, :, 2 * fold :]], dim=2)
    return out.reshape(nt, c, h, w)


class TemporalShift(nn.Module):
    """``net(temporal_shift(x))``: wraps the first conv of a residual branch (TSM "residual shift").

    The wrapped module's parameters live under ``net.`` as in the official TSM code.
    """

    def __init__(self, net: nn.Module, *, num_segments: int, fold_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_segments, self.fold_div))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


RESNET2D_ARCHS = ("resnet_tiny", "resnet18", "resnet34", "resnet50")
#: resnet_tiny: torchvision BasicBlock ResNet, one block per stage, widths 16-128 (about 0.7 M parameters).
_TINY_WIDTHS = (16, 32, 64, 128)


class ResNet2d(nn.Module):
    """A 2D ResNet trunk without pooling or classifier, parameter names as in torchvision.

    ``resnet18/34/50`` are ``torchvision.models.resnet*(weights=None)`` minus ``avgpool``/``fc``, so an
    ImageNet state dict loads as is; ``resnet_tiny`` is built from the same torchvision blocks.

    Args:
        arch: one of :data:`RESNET2D_ARCHS`.
        in_channels: input channels (3 for RGB; ``flow_channels * T`` for stacked optical flow).
        attention: ``None`` or ``"cbam"`` (a CBAM module appended to each of the four stages).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, num_features, H/32, W/32)``.
    """

    def __init__(self, *, arch: str = "resnet18", in_channels: int = 3, attention: str | None = None) -> None:
        super().__init__()
        if arch not in RESNET2D_ARCHS:
            raise ValueError(f"ResNet2d.arch: expected one of {RESNET2D_ARCHS}, got {arch!r}")
        if attention not in (None, "cbam"):
            raise ValueError(f"attention: expected None or 'cbam', got {attention!r}")
        if arch == "resnet_tiny":
            net = _tiny_resnet2d(_TINY_WIDTHS)
        else:
            net = getattr(tv_resnet, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, self.conv1.out_channels, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.arch = arch
        self.in_channels = in_channels
        self.num_features = _stage_out_channels(self.layer4)
        if attention == "cbam":
            for stage in self.stages():
                stage.append(CBAM(channels=_stage_out_channels(stage), dims=2))

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def residual_blocks(self) -> list[nn.Module]:
        """Every BasicBlock/Bottleneck, in order (CBAM modules excluded)."""
        return [b for s in self.stages() for b in s if isinstance(b, (tv_resnet.BasicBlock, tv_resnet.Bottleneck))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _stage_out_channels(stage: nn.Sequential) -> int:
    block = [b for b in stage if isinstance(b, (tv_resnet.BasicBlock, tv_resnet.Bottleneck))][-1]
    return block.bn3.num_features if isinstance(block, tv_resnet.Bottleneck) else block.bn2.num_features


def _tiny_resnet2d(widths: Sequence[int]) -> nn.Module:
    """A torchvision-style BasicBlock ResNet with one block per stage and the given stage widths."""
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    inplanes = widths[0]
    for i, planes in enumerate(widths):
        stride = 1 if i == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(tv_resnet.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        setattr(net, f"layer{i + 1}", nn.Sequential(tv_resnet.BasicBlock(inplanes, planes, stride, downsample)))
        inplanes = planes
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net
