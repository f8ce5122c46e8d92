"""torchvision's video transformers: MViT (v1 and v2) and Video Swin, behind the microexp interface.

The backbones are torchvision's own modules, held as ``net``: :class:`torchvision.models.video.MViT`
(Fan et al., ICCV 2021; Li et al., CVPR 2022) and :class:`torchvision.models.video.SwinTransformer3d`
(Liu et al., CVPR 2022). torchvision's classifier is removed (``net.head`` is an ``nn.Identity``) and
replaced by our :class:`~microexp.models.layers.ClassifierHead` as ``head`` (``head.fc``). Nothing is
downloaded: the builders never receive torchvision's ``weights=`` enums; torchvision's weight files
(``mvit_v2_s-ae3be167.pth``, ``swin3d_t-7615ae03.pth``...) load from a local path given as
``model.pretrained`` (:meth:`MViT.convert_pretrained_state_dict`, :meth:`VideoSwin.convert_pretrained_state_dict`).

=================  ==========================================================================================
model              configuration
=================  ==========================================================================================
``mvit_v2_s``      torchvision ``mvit_v2_s``: MViTv2-S, 16 blocks, 16x224, Kinetics-400 stats (0.45, 0.225)
``mvit_v1_b``      torchvision ``mvit_v1_b``: MViT-B 16x4, 16 blocks, 16x224
``mvit_base``      the ``mvit_v1_b`` configuration under the name of the earlier pytorchvideo-built MViT-B
``mvit_tiny``      4 MViTv2 blocks (relative positions, residual pooling), widths 48-192, two pooling stages,
                   8x112 (CPU)
``swin3d_t``       torchvision ``swin3d_t``: Video Swin-T, 32x224 (the clip length of torchvision's
                   evaluation), ImageNet stats (as torchvision's ``Swin3D_T_Weights`` transforms)
``swin3d_tiny``    Video Swin with embed dim 32, depths (2, 2, 2, 2), 8x112 (CPU)
=================  ==========================================================================================

MViT needs ``T == spec.num_frames`` and ``H == W == spec.input_size`` (its positional tables are built for
the grid), with ``T`` even and ``H`` a multiple of 4 (the patch embedding's stride). Video Swin accepts any
``T, H, W`` (inputs are padded to the patch size, windows shrink to small grids).

Feature layouts: MViT ``forward_features`` returns torchvision's normalised tokens ``(B, 1 + T'H'W', D)``,
class token first (``T' = T/2``, ``H' = H/4`` before pooling stages); Video Swin returns the normalised
last-stage feature map ``(B, D, T', H', W')`` (channels first, as the 3D CNNs; torchvision permutes to this
layout before its average pool).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video import mvit as tv_mvit
from torchvision.models.video import swin_transformer as tv_swin

from . import pretrained as pt
from ._base import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, ModelSpec, VideoClassifier
from ._registry import register_model
from .layers import ClassifierHead

log = logging.getLogger(__name__)

__all__ = ["MViT", "VideoSwin", "mvit_block_setting", "mvit_tiny", "mvit_v2_s", "mvit_v1_b", "mvit_base",
           "swin3d_tiny", "swin3d_t"]

#: the stride of torchvision's MViT patch embedding (``patch_embed_stride``), ``(T, H, W)``
MVIT_PATCH_STRIDE = (2, 4, 4)


def mvit_block_setting(
    *,
    num_heads: Sequence[int],
    input_channels: Sequence[int],
    output_channels: Sequence[int],
    kernel_q: Sequence[Sequence[int]],
    kernel_kv: Sequence[Sequence[int]],
    stride_q: Sequence[Sequence[int]],
    stride_kv: Sequence[Sequence[int]],
) -> list[tv_mvit.MSBlockConfig]:
    """torchvision's per-block ``MSBlockConfig`` list from per-block columns (as torchvision's builders)."""
    columns = (num_heads, input_channels, output_channels, kernel_q, kernel_kv, stride_q, stride_kv)
    if len({len(c) for c in columns}) != 1 or not num_heads:
        raise ValueError(f"mvit_block_setting: expected equally long, non-empty columns, got lengths "
                         f"{[len(c) for c in columns]}")
    return [
        tv_mvit.MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=list(kq),
                              kernel_kv=list(kkv), stride_q=list(sq), stride_kv=list(skv))
        for h, i, o, kq, kkv, sq, skv in zip(*columns)
    ]


def _mvit_b16(version: int) -> list[tv_mvit.MSBlockConfig]:
    """The 16 blocks of torchvision's ``mvit_v1_b`` (``version=1``) or ``mvit_v2_s`` (``version=2``).

    Both pool the queries at blocks 1, 3 and 14 (stride ``(1, 2, 2)``) and the keys/values to the same
    coarse grid (strides 8, 4, 4, 2..., 1, 1). v1 widens the block before a pooling block and pools only
    there; v2 widens inside the pooling block (``proj_after_attn``) and runs a stride-1 query pooling
    convolution in every block.
    """
    pool = {1, 3, 14}
    k3, none = [3, 3, 3], []
    return mvit_block_setting(
        num_heads=[1, 2, 2] + [4] * 11 + [8, 8],
        input_channels=([96, 192, 192] + [384] * 11 + [768] * 2) if version == 1 else
                       ([96, 96, 192, 192] + [384] * 11 + [768]),
        output_channels=([192] * 2 + [384] * 11 + [768] * 3) if version == 1 else
                        ([96, 192, 192] + [384] * 11 + [768] * 2),
        kernel_q=[k3 if (i in pool or version == 2) else none for i in range(16)],
        kernel_kv=[k3] * 16,
        stride_q=[[1, 2, 2] if i in pool else ([1, 1, 1] if version == 2 else none) for i in range(16)],
        stride_kv=[[1, 8, 8], [1, 4, 4], [1, 4, 4]] + [[1, 2, 2]] * 11 + [[1, 1, 1]] * 2,
    )


def _mvit_tiny_blocks() -> list[tv_mvit.MSBlockConfig]:
    """4 MViTv2 blocks: 48 wide, then 96 and 192 at the two query-pooling blocks (1 and 3); keys/values
    pooled to the same coarse grid (strides 4, 2, 2, 1), 1-2-2-4 heads."""
    k3 = [3, 3, 3]
    return mvit_block_setting(
        num_heads=[1, 2, 2, 4], input_channels=[48, 48, 96, 96], output_channels=[48, 96, 96, 192],
        kernel_q=[k3] * 4, kernel_kv=[k3] * 4,
        stride_q=[[1, 1, 1], [1, 2, 2], [1, 1, 1], [1, 2, 2]],
        stride_kv=[[1, 4, 4], [1, 2, 2], [1, 2, 2], [1, 1, 1]],
    )


def _resize_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``(L, D)`` -> ``(rows, D)`` by linear interpolation along ``L`` (what torchvision's MViT does at run
    time when a relative-position table does not fit the grid)."""
    resized = F.interpolate(table.t()[None].float(), size=rows, mode="linear")
    return resized[0].t().to(table.dtype)


class MViT(VideoClassifier):
    """torchvision's Multiscale Vision Transformer (``net``) with a class-token classifier (``head``).

    Args:
        num_classes: classifier outputs (0: ``forward`` returns the pooled features).
        num_frames: ``T`` (fixed; even).
        input_size: ``H = W`` (fixed; a multiple of 4).
        block_setting: torchvision ``MSBlockConfig`` per block (see :func:`mvit_block_setting`).
        residual_pool, residual_with_cls_embed, rel_pos_embed, proj_after_attn: torchvision's MViT switches
            (MViTv2: residual pooling, relative positions, projection after attention; v1: absolute
            positional tables).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        mean, std: input normalisation recorded in the spec.

    Shapes: ``(B, 3, T, H, W)`` -> tokens ``(B, 1 + T/2 * H'W', D)`` -> ``(B, num_classes)``.
    """

    fixed_frames = True
    fixed_size = True

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        block_setting: Sequence[tv_mvit.MSBlockConfig],
        residual_pool: bool,
        residual_with_cls_embed: bool,
        rel_pos_embed: bool,
        proj_after_attn: bool,
        drop_rate: float = 0.5,
        drop_path_rate: float = 0.0,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        st, ss = MVIT_PATCH_STRIDE[0], MVIT_PATCH_STRIDE[1]
        if not isinstance(num_frames, int) or num_frames < st or num_frames % st:
            raise ValueError(f"MViT: num_frames={num_frames!r}: expected a positive multiple of {st} "
                             f"(the patch embedding's temporal stride)")
        if not isinstance(input_size, int) or input_size < ss or input_size % ss:
            raise ValueError(f"MViT: input_size={input_size!r}: expected a positive multiple of {ss} "
                             f"(the patch embedding's spatial stride)")
        if len(block_setting) < 2:  # torchvision divides the stochastic depth by (blocks - 1)
            raise ValueError(f"MViT: block_setting: expected at least 2 blocks, got {len(block_setting)}")
        self.net = tv_mvit.MViT(
            spatial_size=(input_size, input_size), temporal_size=num_frames, block_setting=list(block_setting),
            residual_pool=residual_pool, residual_with_cls_embed=residual_with_cls_embed,
            rel_pos_embed=rel_pos_embed, proj_after_attn=proj_after_attn, dropout=0.0,
            stochastic_depth_prob=drop_path_rate, num_classes=1, patch_embed_stride=MVIT_PATCH_STRIDE,
        )
        self.net.head = nn.Identity()  # torchvision's (dropout, linear); ours is self.head
        self.num_features = block_setting[-1].output_channels
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, pool="token",
                                   drop_rate=drop_rate)
        self.spec = ModelSpec(family="transformer", modality="rgb", num_frames=num_frames, input_size=input_size,
                              in_channels=3, mean=tuple(mean), std=tuple(std))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> normalised tokens ``(B, 1 + N', D)``, class token first (torchvision's
        ``MViT.forward`` up to its class-token selection)."""
        self.check_input(x)
        net = self.net
        x = net.conv_proj(x).flatten(2).transpose(1, 2)
        x = net.pos_encoding(x)
        thw = (net.pos_encoding.temporal_size,) + tuple(net.pos_encoding.spatial_size)
        for block in net.blocks:
            x, thw = block(x, thw)
        return net.norm(x)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Class token -> dropout -> classifier."""
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision MViT keys -> ``net.*``; its classifier ``head.1`` -> ``head.fc`` (then dropped).

        Tables that depend on the input grid are resized to this model's: the relative-position tables
        ``rel_pos_h/w/t`` (v2) linearly along their length, as torchvision itself does at run time, and the
        absolute ``pos_encoding.spatial_pos`` (v1) bicubically on its square grid, ``temporal_pos`` linearly.
        A microexp checkpoint of this model (keys ``net.*``) passes unchanged.
        """
        if any(k.startswith("net.") for k in state_dict):
            return dict(state_dict)
        out: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            if key.startswith("head.1."):
                out["head.fc." + key[len("head.1."):]] = value
            else:
                out["net." + key] = value
        own = self.state_dict()
        resized = []
        for key, value in out.items():
            target = own.get(key)
            if target is None or target.shape == value.shape or value.ndim != 2 or value.shape[1] != target.shape[1]:
                continue
            leaf = key.rsplit(".", 1)[-1]
            if leaf in ("rel_pos_h", "rel_pos_w", "rel_pos_t", "temporal_pos"):
                out[key] = _resize_rows(value, target.shape[0])
            elif leaf == "spatial_pos":
                out[key] = pt.resize_pos_embed(value[None], num_prefix=0, new_len=target.shape[0])[0]
            else:
                continue
            resized.append(key)
        if resized:
            shown = ", ".join(resized[:4]) + (" ..." if len(resized) > 4 else "")
            log.info("MViT: resized %d positional tables to the %dx%d input: %s", len(resized), self.spec.num_frames,
                     self.spec.input_size, shown)
        return out


class VideoSwin(VideoClassifier):
    """torchvision's Video Swin Transformer (``net``, ``SwinTransformer3d``) with an average-pooling classifier.

    Args:
        num_classes: classifier outputs (0: ``forward`` returns the pooled features).
        num_frames: ``T`` the model is trained on (any ``T`` is accepted at run time).
        input_size: ``H = W`` the model is trained on (any size is accepted at run time).
        patch_size: ``(t, h, w)`` of the patch embedding (inputs are zero-padded to a multiple).
        embed_dim: width of the first stage (doubled at each of the following stages).
        depths: blocks per stage.
        num_heads: attention heads per stage (each divides its stage's width).
        window_size: ``(t, h, w)`` attention window (shrunk to the grid where the grid is smaller).
        mlp_ratio: MLP hidden width / stage width.
        drop_rate: dropout before the classifier.
        attn_drop_rate: dropout of the attention weights.
        drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        mean, std: input normalisation recorded in the spec.

    Shapes: ``(B, 3, T, H, W)`` -> features ``(B, D, T', H', W')`` -> ``(B, num_classes)``, with
    ``D = embed_dim * 2**(stages - 1)``, ``T' = ceil(T / t)`` and ``H' = ceil(H / h / 2**(stages - 1))``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        patch_size: Sequence[int],
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: Sequence[int],
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        for name, value in (("num_frames", num_frames), ("input_size", input_size), ("embed_dim", embed_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VideoSwin: {name}={value!r}: expected a positive int")
        for name, value in (("patch_size", patch_size), ("window_size", window_size)):
            if len(value) != 3 or any(not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"VideoSwin: {name}={list(value)!r}: expected 3 positive ints (t, h, w)")
        if not depths or len(depths) != len(num_heads) or sum(depths) < 2:
            raise ValueError(f"VideoSwin: depths={list(depths)!r}, num_heads={list(num_heads)!r}: expected one "
                             "entry per stage in each, and at least 2 blocks in all")
        for stage, heads in enumerate(num_heads):
            width = embed_dim * 2 ** stage
            if heads < 1 or width % heads:
                raise ValueError(f"VideoSwin: num_heads[{stage}]={heads} does not divide the stage width {width} "
                                 f"(embed_dim={embed_dim} * 2**{stage})")
        self.net = tv_swin.SwinTransformer3d(
            patch_size=list(patch_size), embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
            window_size=list(window_size), mlp_ratio=mlp_ratio, dropout=0.0, attention_dropout=attn_drop_rate,
            stochastic_depth_prob=drop_path_rate, num_classes=1,
        )
        self.net.head = nn.Identity()  # torchvision's linear classifier; ours is self.head
        self.num_features = self.net.num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=self.num_features, num_classes=num_classes, pool="avg",
                                   drop_rate=drop_rate)
        self.spec = ModelSpec(family="transformer", modality="rgb", num_frames=num_frames, input_size=input_size,
                              in_channels=3, mean=tuple(mean), std=tuple(std))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> normalised last-stage map ``(B, D, T', H', W')`` (torchvision's
        ``SwinTransformer3d.forward`` up to its average pool)."""
        self.check_input(x)
        net = self.net
        x = net.features(net.pos_drop(net.patch_embed(x)))  # (B, T', H', W', D)
        return net.norm(x).permute(0, 4, 1, 2, 3)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Average over ``T', H', W'`` -> dropout -> classifier."""
        return self.head(x, pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ``SwinTransformer3d`` keys -> ``net.*``; its classifier ``head`` -> ``head.fc`` (then
        dropped). A microexp checkpoint of this model (keys ``net.*``) passes unchanged. The relative
        position bias tables depend on ``window_size`` only, so they load at any input size."""
        if any(k.startswith("net.") for k in state_dict):
            return dict(state_dict)
        return {("head.fc." + key[len("head."):] if key.startswith("head.") else "net." + key): value
                for key, value in state_dict.items()}


# ------------------------------------------------------------------------------------------------- MViT
@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def mvit_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.1,
) -> MViT:
    """MViTv2 (torchvision), 4 blocks, widths 48-192, two pooling stages, 8x112."""
    return MViT(num_classes=num_classes, num_frames=num_frames, input_size=input_size,
                block_setting=_mvit_tiny_blocks(), residual_pool=True, residual_with_cls_embed=False,
                rel_pos_embed=True, proj_after_attn=True, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def mvit_v2_s(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.2,
) -> MViT:
    """MViTv2-S (Li et al. 2022), torchvision mvit_v2_s, 16x224x224."""
    return MViT(num_classes=num_classes, num_frames=num_frames, input_size=input_size, block_setting=_mvit_b16(2),
                residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                drop_rate=drop_rate, drop_path_rate=drop_path_rate)


def _mvit_v1_b(*, num_classes: int, num_frames: int, input_size: int, drop_rate: float,
               drop_path_rate: float) -> MViT:
    return MViT(num_classes=num_classes, num_frames=num_frames, input_size=input_size, block_setting=_mvit_b16(1),
                residual_pool=False, residual_with_cls_embed=False, rel_pos_embed=False, proj_after_attn=False,
                drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def mvit_v1_b(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.2,
) -> MViT:
    """MViT-B 16x4 (Fan et al. 2021), torchvision mvit_v1_b, 16x224x224."""
    return _mvit_v1_b(num_classes=num_classes, num_frames=num_frames, input_size=input_size, drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def mvit_base(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.2,
) -> MViT:
    """MViT-B 16x4, the mvit_v1_b configuration (torchvision) under its earlier name."""
    return _mvit_v1_b(num_classes=num_classes, num_frames=num_frames, input_size=input_size, drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate)


# ------------------------------------------------------------------------------------------- Video Swin
@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def swin3d_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 112,
    embed_dim: int = 32,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> VideoSwin:
    """Video Swin (torchvision), embed dim 32, depths 2-2-2-2, 1-2-4-8 heads, 8x112."""
    return VideoSwin(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=(2, 4, 4),
                     embed_dim=embed_dim, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=(8, 7, 7),
                     drop_rate=drop_rate, drop_path_rate=drop_path_rate)


@register_model(family="transformer", modality="rgb")
def swin3d_t(
    *,
    num_classes: int,
    num_frames: int = 32,
    input_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
) -> VideoSwin:
    """Video Swin-T (Liu et al. 2022), torchvision swin3d_t, 32x224x224."""
    return VideoSwin(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=(2, 4, 4),
                     embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=(8, 7, 7),
                     drop_rate=drop_rate, drop_path_rate=drop_path_rate)
