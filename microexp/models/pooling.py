"""Attention pooling heads: what turns a backbone's feature map (or tokens) into one ``(B, D)`` vector.

- :class:`AttentivePatchPool` (APViT's attentive patch pooling, Xue et al. 2022, "Vision Transformer with
  Attentive Pooling for Robust Facial Expression Recognition"): parameter-free; each spatio-temporal position
  of a CNN map ``(B, D, *grid)`` is scored by the L1 norm of its feature vector, the top ``k`` are averaged.
- :class:`AttentiveTokenPool` (APViT's attentive token pooling, adapted): parameter-free; the patch tokens of
  ``(B, 1 + N, D)`` are scored by the class token's softmax attention to them, the top ``k`` are averaged.
- :class:`CrossAttentionPool` (DAN's multi-head cross attention, Wen et al. 2021, "Distract Your Attention:
  Multi-head Cross Attention Network for Facial Expression Recognition"): ``num_heads`` spatial-then-channel
  attention heads on ``(B, D, *grid)``, fused into ``(B, D)``; :func:`partition_loss`
  is DAN's loss that keeps the heads apart.

The maths is in the private pure functions; the modules are thin shells. A pool's ``k`` is ``keep``: a float
in ``(0, 1]`` (a fraction of the positions, at least one) or an int ``>= 1`` (a count).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "POOLS",
    "AttentivePatchPool",
    "AttentiveTokenPool",
    "CrossAttentionPool",
    "CNN_POOLS",
    "check_keep",
    "check_pool",
    "keep_count",
    "partition_loss",
]

#: ``keep`` when none is given: APViT keeps 160 of 196 CNN patches (about 0.8) and, in each of its last 4
#: blocks, 0.9 of the tokens (0.9 ** 4, about 0.66, of them reach the classifier).
DEFAULT_PATCH_KEEP = 0.8
DEFAULT_TOKEN_KEEP = 0.66
#: every pool name a :class:`~microexp.models.layers.ClassifierHead` knows, with what it reads
POOLS = {
    "avg": "(B, D, ...) feature map: mean over every position",
    "token": "(B, 1 + N, D) tokens: the class token",
    "attentive_patch": "(B, D, ...) feature map: mean of the top-k positions by feature L1 norm (APViT)",
    "attentive_token": "(B, 1 + N, D) tokens: mean of the top-k patch tokens by class-token attention (APViT)",
    "cross_attention": "(B, D, ...) feature map: DAN's multi-head spatial + channel attention, fused",
}

#: the ``pool`` choices of the CNN families (feature maps ``(B, D, ...)``)
CNN_POOLS = ("avg", "attentive_patch", "cross_attention")
_KEEP_POOLS = ("attentive_patch", "attentive_token")


def check_pool(pool: str, allowed: tuple[str, ...], keep: float | int | None = None) -> str:
    """``pool`` unchanged if it is one of ``allowed`` and ``keep`` (``pool_keep``) fits it; else ValueError.

    ``keep`` is for the attentive pools only: ``None`` (their default) or see :func:`check_keep`.
    """
    if pool not in allowed:
        raise ValueError(f"pool: expected one of {allowed}, got {pool!r}")
    if keep is not None:
        if pool not in _KEEP_POOLS:
            raise ValueError(f"pool_keep: only used with pool in {_KEEP_POOLS}; leave it None for pool={pool!r}")
        check_keep(keep)
    return pool


def check_keep(keep: float | int, *, name: str = "pool_keep") -> float | int:
    """``keep`` unchanged if it is a fraction in ``(0, 1]`` (float) or a count ``>= 1`` (int); else ValueError."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise ValueError(f"{name}: expected a fraction in (0, 1] or a count >= 1, got {keep!r}")
    if isinstance(keep, int):
        if keep < 1:
            raise ValueError(f"{name}: expected a count >= 1 (int) or a fraction in (0, 1] (float), got {keep!r}")
    elif not (0.0 < keep <= 1.0):
        raise ValueError(f"{name}: expected a fraction in (0, 1] (float) or a count >= 1 (int), got {keep!r}")
    return keep


def keep_count(keep: float | int, positions: int) -> int:
    """``k`` for ``positions`` candidates: ``max(int(positions * keep), 1)`` for a fraction (as APViT), the
    count itself for an int; ValueError when a count exceeds ``positions``."""
    if isinstance(keep, int):
        if keep > positions:
            raise ValueError(f"pool_keep: {keep} positions asked for but the feature map has only {positions}")
        return keep
    return max(int(positions * keep), 1)


def _top_k_mean(values: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` rows of ``values (B, N, D)`` with the highest ``scores (B, N)`` -> ``(B, D)``.

    Gradients flow through the selected values only (the selection itself is not differentiable).
    """
    index = scores.topk(k, dim=1).indices  # (B, k)
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1])).mean(1)


def _patch_scores(x: torch.Tensor) -> torch.Tensor:
    """``(B, D, N)`` -> ``(B, N)``: the L1 norm of each position's feature (APViT's ``SUM_ABS_1``)."""
    return x.abs().sum(1)


def _token_scores(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + N, D)`` -> ``(B, N)``: ``softmax_j(<cls, x_j> / sqrt(D))`` over the patch tokens ``j``."""
    cls, patches = tokens[:, :1], tokens[:, 1:]
    logits = (patches @ cls.transpose(1, 2)).squeeze(-1) / math.sqrt(tokens.shape[-1])
    return logits.softmax(-1)


class AttentivePatchPool(nn.Module):
    """APViT attentive patch pooling as a head: average the ``k`` strongest positions of a CNN map.

    Args:
        keep: ``k`` as a fraction of the positions (float in ``(0, 1]``) or a count (int ``>= 1``).

    Shapes: ``(B, D, *grid)`` (e.g. ``(B, D, T, H, W)`` or ``(B, D, H, W)``) -> ``(B, D)``; the
    ``T*H*W`` positions are ranked together (spatio-temporal top-k).

    APViT scores each patch of its IR-50 map by the sum of absolute values over channels and keeps the top
    160 of 196 as the ViT's input tokens; here there is no ViT after it, so the kept positions are averaged.
    With ``keep=1.0`` this is global average pooling.
    """

    def __init__(self, *, keep: float | int = DEFAULT_PATCH_KEEP) -> None:
        super().__init__()
        self.keep = check_keep(keep)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, *grid)`` -> ``(B, prod(grid))`` position scores (flattened in ``grid`` order)."""
        return _patch_scores(x.flatten(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, D, N)
        k = keep_count(self.keep, flat.shape[2])
        return _top_k_mean(flat.transpose(1, 2), _patch_scores(flat), k)

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


class AttentiveTokenPool(nn.Module):
    """APViT attentive token pooling as a head: average the ``k`` patch tokens the class token attends to most.

    Args:
        keep: ``k`` as a fraction of the patch tokens (float in ``(0, 1]``) or a count (int ``>= 1``).

    Shapes: tokens ``(B, 1 + N, D)``, class token first -> ``(B, D)``.

    APViT drops tokens inside its last blocks by the class token's attention in that block (summed over
    heads) and classifies from the class token. This head is parameter-free and reads only the final
    normalised tokens: the score of patch token ``j`` is the class token's single-head dot-product attention
    ``softmax_j(<cls, x_j> / sqrt(D))`` on those tokens (no query/key projections, not a block's weights),
    so ``forward_head`` stays a function of ``forward_features`` alone and the blocks keep their fused
    attention kernels. The class token itself is not part of the average.
    """

    def __init__(self, *, keep: float | int = DEFAULT_TOKEN_KEEP) -> None:
        super().__init__()
        self.keep = check_keep(keep)

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N, D)`` -> ``(B, N)`` attention of the class token to each patch token (sums to 1)."""
        return _token_scores(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[1] < 2:
            raise ValueError(f"AttentiveTokenPool: expected tokens (B, 1 + N, D) with N >= 1, "
                             f"got {tuple(tokens.shape)}")
        k = keep_count(self.keep, tokens.shape[1] - 1)
        return _top_k_mean(tokens[:, 1:], _token_scores(tokens), k)

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


def _frame_conv(in_channels: int, out_channels: int, kernel: tuple[int, int]) -> nn.Sequential:
    """A per-frame ``(1, kh, kw)`` 3D convolution (same padding) and BatchNorm."""
    pad = (0, kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, (1, *kernel), padding=pad), nn.BatchNorm3d(out_channels))


class _SpatialAttention(nn.Module):
    """DAN's spatial attention unit on ``(B, D, T, H, W)``, per frame: a 1x1 conv to ``hidden``, then 3x3, 1x3
    and 3x1 convs to ``width`` summed, ReLU, summed over channels -> a ``(B, 1, T, H, W)`` map that scales ``x``.

    DAN (ResNet-18, ``D = 512``) has ``hidden = 256``, ``width = 512``; here ``hidden = min(D / 2, 256)`` and
    ``width = min(D, 512)``, the same for ``D <= 512`` and bounded for ResNet-50's 2048 channels (the convs
    only make the one-channel map, so their width is free).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden, width = max(min(channels // 2, 256), 1), min(channels, 512)
        self.reduce = _frame_conv(channels, hidden, (1, 1))
        self.square = _frame_conv(hidden, width, (3, 3))
        self.wide = _frame_conv(hidden, width, (1, 3))
        self.tall = _frame_conv(hidden, width, (3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        attention = F.relu(self.square(h) + self.wide(h) + self.tall(h)).sum(1, keepdim=True)
        return x * attention


class _ChannelAttention(nn.Module):
    """DAN's channel attention unit: global average pool ``(B, D, ...) -> (B, D)``, an MLP with a ``D/16``
    bottleneck and a sigmoid, which scales the pooled vector."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(-1)
        return pooled * torch.sigmoid(self.mlp(pooled))


def partition_loss(heads: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """DAN's partition loss on the per-head features ``(B, K, D)``: ``log(1 + K / mean variance)``.

    The variance is across the ``K`` heads, per sample and channel, averaged over both (as DAN's released
    code; the paper's form averages ``log(1 + K / var)`` per channel, which is unbounded where a channel's
    heads agree exactly). Small when the heads attend to different things. 0 for a single head.
    """
    k = heads.shape[1]
    if k < 2:
        return heads.new_zeros(())
    return torch.log1p(k / (heads.var(dim=1).mean() + eps))


class CrossAttentionPool(nn.Module):
    """DAN's multi-head cross attention network (MAN) and attention fusion as a pooling head.

    Args:
        channels: feature channels ``D``.
        num_heads: attention heads ``K`` (4 in DAN).

    Shapes: ``(B, D, T, H, W)`` (or ``(B, D, H, W)``, read as ``T = 1``) -> ``(B, D)``.

    Each head is a spatial attention unit (1x1 reduce, then 3x3 + 1x3 + 3x1 convs, ReLU, summed over channels
    into one map that scales the features) followed by a channel attention unit (global average pool, MLP,
    sigmoid). The ``K`` head vectors ``(B, K, D)`` are fused as DAN's attention fusion does: a log-softmax
    across heads, summed over heads (:meth:`fuse`). The module keeps no state between calls: to add DAN's
    partition loss (the trainer does not), compute ``heads = pool.heads(x)``, use ``pool.fuse(heads)`` as the
    pooled features and add ``weight * partition_loss(heads)`` to the loss.

    Departures from DAN (2D images): the spatial convs are per frame (``(1, k, k)`` 3D kernels) and the
    channel attention pools over time too; the channel MLP has no BatchNorm (it would refuse a batch of one
    in training) and the classifier after the fusion has no BatchNorm either.
    """

    def __init__(self, *, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads: expected an int >= 1, got {num_heads!r}")
        self.num_heads = num_heads
        self.spatial = nn.ModuleList(_SpatialAttention(channels) for _ in range(num_heads))
        self.channel = nn.ModuleList(_ChannelAttention(channels) for _ in range(num_heads))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, T, H, W)`` or ``(B, D, H, W)`` -> per-head attended vectors ``(B, K, D)``."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"CrossAttentionPool: expected (B, D, T, H, W) or (B, D, H, W), got {tuple(x.shape)}")
        return torch.stack([ca(sa(x)) for sa, ca in zip(self.spatial, self.channel, strict=True)], dim=1)

    @staticmethod
    def fuse(heads: torch.Tensor) -> torch.Tensor:
        """DAN's attention fusion: ``(B, K, D)`` -> ``(B, D)``, log-softmax across heads summed over them
        (one head passes through)."""
        if heads.shape[1] == 1:
            return heads[:, 0]
        return F.log_softmax(heads, dim=1).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.heads(x))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"
