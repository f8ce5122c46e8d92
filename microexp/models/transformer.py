"""Video transformer family: TimeSformer (divided space-time attention) and MViT.

TimeSformer (Bertasius, Wang & Torresani, ICML 2021) is implemented here with ``nn.MultiheadAttention``:
frames are cut into ``patch_size`` patches, a class token and spatial position embeddings are added
per frame and a temporal embedding per frame index; each block applies temporal attention (each patch
attends to the same patch position in the other frames, through a zero-initialised ``temporal_fc``),
then spatial attention (patches of one frame plus the class token, whose per-frame outputs are averaged),
then an MLP. ``timesformer_base`` is the paper's ViT-B/16 configuration (8x224x224); ``timesformer_tiny``
a 4-block, 128-wide one for CPU. Parameter names follow the official code and timm's ViT (``attn.qkv``
maps to ``attn.in_proj_weight``), so ImageNet ViT weights load (see :mod:`.pretrained`).

MViT (Fan et al., ICCV 2021) is built by ``pytorchvideo.models.vision_transformers
.create_multiscale_vision_transformers``: ``mvit_base`` is MViT-B 16x4 (16x224x224), ``mvit_tiny`` a 4-block
version for CPU.

Both need ``T == spec.num_frames`` and ``H == W == spec.input_size`` (learnt position embeddings).
``forward_features`` returns the normalised tokens ``(B, 1 + N, D)``, class token first.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from . import pretrained as pt
from ._base import KINETICS_MEAN, KINETICS_STD, ModelSpec, VideoClassifier, import_pytorchvideo
from ._registry import register_model
from .layers import ClassifierHead, DropPath, Mlp

__all__ = ["TimeSformer", "DividedSpaceTimeBlock", "MViT", "timesformer_tiny", "timesformer_base", "mvit_tiny",
           "mvit_base"]


class DividedSpaceTimeBlock(nn.Module):
    """One TimeSformer block on tokens ``(B, 1 + T*N, D)`` (class token, then frame-major patches)."""

    def __init__(
        self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_drop, batch_first=True)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_drop, batch_first=True)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, _, d = x.shape
        cls, patches = x[:, :1], x[:, 1:]
        n = patches.shape[1] // num_frames
        # temporal attention: (B*N, T, D), each spatial position across frames
        xt = patches.reshape(b, num_frames, n, d).transpose(1, 2).reshape(b * n, num_frames, d)
        h = self.temporal_norm1(xt)
        h = self.temporal_attn(h, h, h, need_weights=False)[0]
        xt = xt + self.drop_path(self.temporal_fc(h))
        patches = xt.reshape(b, n, num_frames, d).transpose(1, 2).reshape(b, num_frames * n, d)
        # spatial attention: (B*T, 1 + N, D), the class token joins every frame
        xs = torch.cat([cls.expand(b, num_frames, d).reshape(b * num_frames, 1, d),
                        patches.reshape(b * num_frames, n, d)], dim=1)
        h = self.norm1(xs)
        h = self.attn(h, h, h, need_weights=False)[0]
        cls_res = h[:, 0].reshape(b, num_frames, d).mean(1, keepdim=True)
        res = torch.cat([cls_res, h[:, 1:].reshape(b, num_frames * n, d)], dim=1)
        x = torch.cat([cls, patches], dim=1) + self.drop_path(res)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Per-frame non-overlapping patches: ``(B*T, C, H, W)`` -> ``(B*T, N, D)``."""

    def __init__(self, *, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimeSformer(VideoClassifier):
    """TimeSformer with divided space-time attention.

    Args:
        num_classes: classifier outputs.
        num_frames: ``T`` (fixed: temporal embedding).
        input_size: ``H = W`` (fixed: spatial embedding); a multiple of ``patch_size``.
        patch_size: square patch side.
        embed_dim: token width ``D``.
        depth: blocks.
        num_heads: attention heads (divides ``embed_dim``).
        mlp_ratio: MLP hidden width / ``D``.
        drop_rate: dropout after embeddings, in MLPs and before the classifier.
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linearly increasing to this value over the blocks.

    Shapes: ``(B, 3, T, H, W)`` -> tokens ``(B, 1 + T*(H/p)*(W/p), D)`` -> ``(B, num_classes)``.
    """

    fixed_frames = True
    fixed_size = True

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size: {input_size} is not a multiple of patch_size={patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim={embed_dim}")
        num_patches = (input_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(in_channels=3, dim=embed_dim, patch_size=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, drop=drop_rate,
                                  attn_drop=attn_drop_rate, drop_path=rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=embed_dim, num_classes=num_classes, pool="token", drop_rate=drop_rate)
        self._init_weights()
        self.spec = ModelSpec(
            family="transformer", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std),
        )

    def _init_weights(self) -> None:
        # The reference init is trunc_normal_(std=0.02) with bounds +-2 (absolute), i.e. +-100 std: the same
        # distribution as normal_(std=0.02), which is several times faster on CPU for ViT-B's 121 M weights.
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.head.fc:
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)
        for i, block in enumerate(self.blocks):  # as the official code: later blocks start as pure ViT blocks
            if i > 0:
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> normalised tokens ``(B, 1 + T*N, D)``."""
        self.check_input(x)
        b, c, t, h, w = x.shape
        patches = self.patch_embed(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, N, D)
        n, d = patches.shape[1], patches.shape[2]
        patches = patches + self.pos_embed[:, 1:]
        patches = patches.reshape(b, t, n, d) + self.time_embed[:, :, None]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, d)
        x = self.pos_drop(torch.cat([cls, patches.reshape(b, t * n, d)], dim=1))
        for block in self.blocks:
            x = block(x, t)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Class token -> dropout -> classifier."""
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """timm ViT or official TimeSformer keys -> this model's keys.

        ``attn.qkv``/``attn.proj`` become ``nn.MultiheadAttention``'s ``in_proj_*``/``out_proj``; from an
        image ViT the temporal attention and norm copy the spatial ones (as the official code does);
        position and time embeddings are resized to this model's grid and frame count; ``head`` ->
        ``head.fc``.
        """
        sd = pt.strip_common_prefix(state_dict, "model.")
        out: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            key = re.sub(r"\.(temporal_attn|attn)\.qkv\.", r".\1.in_proj_", key)
            key = re.sub(r"\.(temporal_attn|attn)\.proj\.", r".\1.out_proj.", key)
            if key.startswith("head.") and not key.startswith("head.fc."):
                key = "head.fc." + key[len("head."):]
            out[key] = value
        for key in list(out):  # image ViT: no temporal weights; start from the spatial ones
            m = re.match(r"^(blocks\.\d+)\.(attn|norm1)\.(.*)$", key)
            if m:
                target = f"{m.group(1)}.{'temporal_attn' if m.group(2) == 'attn' else 'temporal_norm1'}.{m.group(3)}"
                out.setdefault(target, out[key])
        if "pos_embed" in out and out["pos_embed"].shape != self.pos_embed.shape:
            out["pos_embed"] = pt.resize_pos_embed(out["pos_embed"], num_prefix=1, new_len=self.pos_embed.shape[1] - 1)
        if "time_embed" in out and out["time_embed"].shape != self.time_embed.shape:
            out["time_embed"] = pt.resize_pos_embed(out["time_embed"], num_prefix=0, new_len=self.time_embed.shape[1])
        return out


class MViT(VideoClassifier):
    """Multiscale Vision Transformer from pytorchvideo (``net``) with a class-token classifier (``head``).

    The pytorchvideo builder's arguments are passed through (lists of lists as in its docs).
    Shapes: ``(B, 3, T, H, W)`` -> tokens ``(B, 1 + N', D')`` -> ``(B, num_classes)``.
    """

    fixed_frames = True
    fixed_size = True

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        depth: int,
        embed_dim: int,
        num_heads: int,
        embed_dim_mul: Sequence[Sequence[float]],
        atten_head_mul: Sequence[Sequence[float]],
        pool_q_stride_size: Sequence[Sequence[int]],
        pool_kv_stride_adaptive: Sequence[int],
        pool_kvq_kernel: Sequence[int],
        patch_kernel: Sequence[int] = (3, 7, 7),
        patch_stride: Sequence[int] = (2, 4, 4),
        patch_padding: Sequence[int] = (1, 3, 3),
        drop_rate: float = 0.5,
        drop_path_rate: float = 0.2,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        builder = import_pytorchvideo("vision_transformers").create_multiscale_vision_transformers
        self.net = builder(
            spatial_size=input_size,
            temporal_size=num_frames,
            depth=depth,
            patch_embed_dim=embed_dim,
            num_heads=num_heads,
            conv_patch_embed_kernel=tuple(patch_kernel),
            conv_patch_embed_stride=tuple(patch_stride),
            conv_patch_embed_padding=tuple(patch_padding),
            droppath_rate_block=drop_path_rate,
            embed_dim_mul=[list(v) for v in embed_dim_mul],
            atten_head_mul=[list(v) for v in atten_head_mul],
            pool_q_stride_size=[list(v) for v in pool_q_stride_size],
            pool_kv_stride_adaptive=list(pool_kv_stride_adaptive),
            pool_kvq_kernel=list(pool_kvq_kernel),
            head=None,
        )
        self.num_features = self.net.norm_embed.normalized_shape[0]
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, pool="token",
                                   drop_rate=drop_rate)
        self.spec = ModelSpec(
            family="transformer", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=3, mean=tuple(mean), std=tuple(std),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> normalised tokens ``(B, 1 + N', D')``."""
        self.check_input(x)
        return self.net(x)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """pytorchvideo MViT keys -> ``net.*``; its ``head.proj`` -> ``head.fc``."""
        if any(k.startswith("net.") for k in state_dict):
            return state_dict
        return {("head.fc." + k[len("head.proj."):] if k.startswith("head.proj.") else "net." + k): v
                for k, v in state_dict.items()}


@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def timesformer_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    patch_size: int = 16,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> TimeSformer:
    """TimeSformer, divided space-time attention, 4 blocks x 128 wide."""
    return TimeSformer(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                       embed_dim=embed_dim, depth=depth, num_heads=num_heads, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def timesformer_base(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    patch_size: int = 16,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> TimeSformer:
    """TimeSformer-Base (Bertasius et al. 2021), ViT-B/16, divided space-time attention, 8x224x224."""
    return TimeSformer(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                       embed_dim=768, depth=12, num_heads=12, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def mvit_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.1,
) -> MViT:
    """MViT via pytorchvideo, 4 blocks, width 48-192, two pooling stages."""
    return MViT(
        num_classes=num_classes, num_frames=num_frames, input_size=input_size, depth=4, embed_dim=48, num_heads=1,
        embed_dim_mul=[[1, 2.0], [3, 2.0]], atten_head_mul=[[1, 2.0], [3, 2.0]],
        pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2]], pool_kv_stride_adaptive=[1, 4, 4],
        pool_kvq_kernel=[3, 3, 3], drop_rate=drop_rate, drop_path_rate=drop_path_rate,
    )


@register_model(family="transformer", modality="rgb")
def mvit_base(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.2,
) -> MViT:
    """MViT-B 16x4 (Fan et al. 2021) via pytorchvideo, 16x224x224."""
    return MViT(
        num_classes=num_classes, num_frames=num_frames, input_size=input_size, depth=16, embed_dim=96, num_heads=1,
        embed_dim_mul=[[1, 2.0], [3, 2.0], [14, 2.0]], atten_head_mul=[[1, 2.0], [3, 2.0], [14, 2.0]],
        pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2], [14, 1, 2, 2]], pool_kv_stride_adaptive=[1, 8, 8],
        pool_kvq_kernel=[3, 3, 3], drop_rate=drop_rate, drop_path_rate=drop_path_rate,
    )
