"""Video transformer family: TimeSformer (divided space-time attention).

TimeSformer (Bertasius, Wang & Torresani, ICML 2021) is implemented here with ``nn.MultiheadAttention``:
frames are cut into ``patch_size`` patches, a class token and spatial position embeddings are added
per frame and a temporal embedding per frame index; each block applies temporal attention (each patch
attends to the same patch position in the other frames, through a zero-initialised ``temporal_fc``),
then spatial attention (patches of one frame plus the class token, whose per-frame outputs are averaged),
then an MLP. ``timesformer_base`` is the paper's ViT-B/16 configuration (8x224x224); ``timesformer_tiny``
a 4-block, 128-wide one for CPU. Parameter names follow the official code and timm's ViT (``attn.qkv``
maps to ``attn.in_proj_weight``), so ImageNet ViT weights load (see :mod:`.pretrained`).

MViT and Video Swin come from torchvision (:mod:`.tv_video`), VideoMAE is in :mod:`.videomae`.

TimeSformer needs ``T == spec.num_frames`` and ``H == W == spec.input_size`` (learnt position embeddings).
``forward_features`` returns the normalised tokens ``(B, 1 + N, D)``, class token first.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from . import pretrained as pt
from ._base import KINETICS_MEAN, KINETICS_STD, ModelSpec, VideoClassifier, channel_stats, check_flow_channels
from ._registry import register_model
from .layers import ClassifierHead, DropPath, Mlp
from .pooling import check_pool

__all__ = ["TimeSformer", "DividedSpaceTimeBlock", "PatchEmbed", "STEMS", "TOKEN_POOLS", "timesformer_tiny",
           "timesformer_flow_tiny", "timesformer_base"]


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


STEMS = ("patch", "conv")
#: the ``pool`` choices of :class:`TimeSformer`
TOKEN_POOLS = ("token", "mean", "attentive_token")


class PatchEmbed(nn.Module):
    """Per-frame tokens: ``(B*T, C, H, W)`` -> ``(B*T, N, D)``, ``N = (H/p) * (W/p)``.

    ``stem="patch"``: one ``p x p`` convolution with stride ``p`` (ViT; ``proj`` takes ViT weights).
    ``stem="conv"``: ``log2(p)`` stride-2 3x3 conv-BN-GELU layers, then a 1x1 ``proj`` (Xiao et al. 2021,
    "Early convolutions help transformers see better"). The BatchNorm matters for flow input, whose
    sub-pixel values would otherwise be tiny next to the position embeddings.
    """

    def __init__(self, *, in_channels: int, dim: int, patch_size: int, stem: str = "patch") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem: expected one of {STEMS}, got {stem!r}")
        if stem == "patch":
            self.stem = nn.Identity()
            self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
            return
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size: the conv stem needs a power of two >= 2, got {patch_size}")
        layers: list[nn.Module] = []
        channels, width = in_channels, max(dim // 2 ** (patch_size.bit_length() - 1), 16)
        for _ in range(patch_size.bit_length() - 1):
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.GELU()]
            channels, width = width, min(width * 2, dim)
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class TimeSformer(VideoClassifier):
    """TimeSformer with divided space-time attention.

    Args:
        num_classes: classifier outputs.
        num_frames: ``T`` (fixed: temporal embedding).
        input_size: ``H = W`` (fixed: spatial embedding); a multiple of ``patch_size``.
        patch_size: square patch side (the token stride).
        modality: ``rgb`` (3 channels) or ``flow`` (``flow_channels`` of onset-referenced flow).
        flow_channels: 2 (dx, dy) or 3 (with strain) for ``flow``; ignored for ``rgb``.
        stem: ``patch`` (ViT's linear patch embedding) or ``conv`` (see :class:`PatchEmbed`).
        pool: what the classifier reads, one of :data:`TOKEN_POOLS`: ``token`` (the class token, as the
            paper), ``mean`` (the mean of the patch tokens, as VideoMAE fine-tunes) or ``attentive_token``
            (the mean of the top-k patch tokens by the class token's attention to them, after APViT; see
            :class:`~.pooling.AttentiveTokenPool`).
        pool_keep: ``k`` of ``attentive_token``, a fraction of the ``T*N`` patch tokens (float) or a count
            (int); ``None``: 0.66.
        embed_dim: token width ``D``.
        depth: blocks.
        num_heads: attention heads (divides ``embed_dim``).
        mlp_ratio: MLP hidden width / ``D``.
        drop_rate: dropout after embeddings, in MLPs and before the classifier.
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linearly increasing to this value over the blocks.

    Shapes: ``(B, C, T, H, W)`` -> tokens ``(B, 1 + T*(H/p)*(W/p), D)`` -> ``(B, num_classes)``.

    For masked-video pretraining (:mod:`.masked_video`) it also exposes :meth:`token_grid`,
    :meth:`patch_shape` and :meth:`forward_visible`.
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
        modality: str = "rgb",
        flow_channels: int = 0,
        stem: str = "patch",
        pool: str = "token",
        pool_keep: float | int | None = None,
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
        self.pool = check_pool(pool, TOKEN_POOLS, pool_keep)
        if modality not in ("rgb", "flow"):
            raise ValueError(f"modality: expected 'rgb' or 'flow', got {modality!r}")
        if modality == "flow":
            check_flow_channels(flow_channels)
        in_channels, mean, std = channel_stats(modality, flow_channels=flow_channels if modality == "flow" else 0,
                                               mean=tuple(mean), std=tuple(std))
        num_patches = (input_size // patch_size) ** 2
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(in_channels=in_channels, dim=embed_dim, patch_size=patch_size, stem=stem)
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
        self.head = ClassifierHead(in_features=embed_dim, num_classes=num_classes,
                                   pool={"mean": "avg"}.get(pool, pool), drop_rate=drop_rate, keep=pool_keep)
        self._init_weights()
        self.spec = ModelSpec(
            family="transformer", modality=modality, num_frames=num_frames, input_size=input_size,
            in_channels=in_channels, mean=mean, std=std, flow_channels=flow_channels if modality == "flow" else 0,
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

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> patch tokens with space and time embeddings ``(B, T, N, D)``."""
        self.check_input(x)
        b, c, t, h, w = x.shape
        patches = self.patch_embed(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, N, D)
        patches = patches + self.pos_embed[:, 1:]
        return patches.reshape(b, t, patches.shape[1], patches.shape[2]) + self.time_embed[:, :, None]

    def _encode(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, T, N, D)`` patch tokens -> normalised tokens ``(B, 1 + T*N, D)``, class token first."""
        b, t, n, d = patches.shape
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, d)
        x = self.pos_drop(torch.cat([cls, patches.reshape(b, t * n, d)], dim=1))
        for block in self.blocks:
            x = block(x, t)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> normalised tokens ``(B, 1 + T*N, D)``."""
        return self._encode(self._embed(x))

    def token_grid(self) -> tuple[int, int, int]:
        """``(T, H/p, W/p)``: the token grid at the model's input."""
        side = self.spec.input_size // self.patch_size
        return self.spec.num_frames, side, side

    def patch_shape(self) -> tuple[int, int, int]:
        """Pixels per token ``(1, p, p)``: one frame's patch."""
        return 1, self.patch_size, self.patch_size

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Tokens of the kept spatial positions only (tube masking).

        Args:
            x: ``(B, C, T, H, W)`` clip.
            keep: ``(B, K)`` indices into the ``(H/p) * (W/p)`` positions kept in every frame.

        Returns:
            ``(B, T*K, D)`` normalised tokens, time-major (frame 0's K positions first), no class token.
            Temporal attention still sees all ``T`` frames of a kept position; spatial attention sees the
            ``K`` kept patches of a frame and the class token.
        """
        patches = self._embed(x)  # (B, T, N, D)
        b, t, _, d = patches.shape
        index = keep[:, None, :, None].expand(b, t, keep.shape[1], d)
        return self._encode(torch.gather(patches, 2, index))[:, 1:]

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Class token (or the patch tokens' mean, or the top-k patch tokens' mean) -> dropout -> classifier."""
        return self.head(x[:, 1:].mean(1) if self.pool == "mean" else x, pre_logits=pre_logits)

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


@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def timesformer_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    patch_size: int = 16,
    stem: str = "patch",
    pool: str = "token",
    pool_keep: float | int | None = None,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> TimeSformer:
    """TimeSformer, divided space-time attention, 4 blocks x 128 wide."""
    return TimeSformer(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                       stem=stem, pool=pool, pool_keep=pool_keep, embed_dim=embed_dim, depth=depth,
                       num_heads=num_heads, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="flow", cpu_friendly=True)
def timesformer_flow_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    flow_channels: int = 2,
    patch_size: int = 16,
    stem: str = "conv",
    pool: str = "token",
    pool_keep: float | int | None = None,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> TimeSformer:
    """TimeSformer on the onset-referenced flow stack (the input of ``flow_tiny``), conv stem, 4 x 128."""
    return TimeSformer(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                       modality="flow", flow_channels=flow_channels, stem=stem, pool=pool, pool_keep=pool_keep,
                       embed_dim=embed_dim, depth=depth, num_heads=num_heads, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def timesformer_base(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 224,
    patch_size: int = 16,
    pool: str = "token",
    pool_keep: float | int | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> TimeSformer:
    """TimeSformer-Base (Bertasius et al. 2021), ViT-B/16, divided space-time attention, 8x224x224."""
    return TimeSformer(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                       pool=pool, pool_keep=pool_keep, embed_dim=768, depth=12, num_heads=12, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate)
