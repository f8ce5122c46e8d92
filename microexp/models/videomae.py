"""VideoMAE: a plain ViT with joint space-time attention over tubelet tokens.

VideoMAE (Tong et al., NeurIPS 2022) and VideoMAE V2 (Wang et al., CVPR 2023) cut a clip into
``tubelet_size x patch_size x patch_size`` tubes (one ``Conv3d`` with kernel = stride), add a fixed
sine-cosine position table over the flattened token index and run standard pre-norm ViT blocks in which
every token attends to every other token of the clip. There is no class token: the classifier reads the
mean of the tokens through ``fc_norm``. Module names follow the official ``modeling_finetune.py``
(``patch_embed.proj``, ``blocks.i.attn.qkv`` without bias plus ``q_bias``/``v_bias`` (the key bias is
zero), ``norm``, ``fc_norm``), so the official checkpoints load; only the classifier is ``head.fc`` here
(the official ``head`` is mapped, see :meth:`VideoMAE.convert_pretrained_state_dict`).

Tokens are time-major: token ``n = t * Hp * Wp + i * Wp + j`` is tube ``t`` of patch row ``i``, column
``j`` (the ``Conv3d`` output flattened). ``forward_features`` returns ``(B, N, D)`` (no class token);
``token_grid``, ``patch_shape`` and ``forward_visible`` are the masked-encoder interface used by
:mod:`.masked_video`.

Where this differs from the official code, on purpose:

- a learnable ``pos_embed`` is trained (the official code adds it ``.detach()``-ed, so it never learns);
- with ``use_mean_pooling=False`` the classifier reads the mean of the ``norm``-ed tokens (the official
  code reads token 0, a patch token, as there is no class token);
- the MLP's dropout (``drop_rate``) is also applied after the GELU (:class:`~.layers.Mlp`; the official
  MLP drops after ``fc2`` only); recipes use ``drop_rate = 0``, where both are identical.

``videomae_s`` and ``videomae_b`` are ViT-S/16 and ViT-B/16 at 16 x 224 x 224 (``tubelet 2``: 8 x 14 x 14
= 1568 tokens); ``videomae_tiny`` is 4 blocks x 128 wide with 8 px patches for CPU.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import pretrained as pt
from ._base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, VideoClassifier
from ._registry import register_model
from .layers import ClassifierHead, DropPath, Mlp

log = logging.getLogger(__name__)

__all__ = [
    "VideoMAE",
    "VideoMAEAttention",
    "VideoMAEBlock",
    "TubeletEmbed",
    "get_sinusoid_encoding_table",
    "infer_pos_embed_grid",
    "resize_pos_embed_3d",
    "videomae_tiny",
    "videomae_s",
    "videomae_b",
]

#: key prefixes of the pretraining-only parts of an official VideoMAE / V2 pretraining checkpoint
_PRETRAIN_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token", "decoder_pos_embed")
#: token grid of the official 16-frame, 224 px clips (tubelet 2, patch 16): 1568 positions
_OFFICIAL_GRID = (8, 14, 14)


def get_sinusoid_encoding_table(num_positions: int, dim: int) -> torch.Tensor:
    """The official VideoMAE position table ``(1, num_positions, dim)`` (float32).

    ``table[0, n, j] = sin(n / 10000 ** (2 * (j // 2) / dim))`` for even ``j``, ``cos(...)`` for odd ``j``
    (Vaswani et al. 2017), computed in float64 as the official numpy code, over the flattened token index.
    """
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2.0 * torch.div(torch.arange(dim, dtype=torch.float64), 2, rounding_mode="floor") / dim
    angles = position / torch.pow(10000.0, exponent)[None]
    even = (torch.arange(dim) % 2 == 0)[None]
    return torch.where(even, torch.sin(angles), torch.cos(angles)).float()[None]


class TubeletEmbed(nn.Module):
    """Non-overlapping tubes: ``(B, C, T, H, W)`` -> tokens ``(B, T/t * H/p * W/p, D)``, time-major."""

    def __init__(self, *, in_channels: int, dim: int, tubelet_size: int, patch_size: int) -> None:
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEAttention(nn.Module):
    """Multi-head self-attention with the official parameters: ``qkv`` (no bias), ``q_bias``, ``v_bias``.

    The bias of ``qkv`` is ``cat(q_bias, 0, v_bias)``: a key bias would add ``q . b_k`` to every logit of a
    query alike, which softmax ignores. Attention is ``softmax(q k^T / sqrt(d_head)) v`` through
    ``F.scaled_dot_product_attention``. Shapes: ``(B, N, D)`` -> ``(B, N, D)``.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d_head)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class VideoMAEBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` on ``(B, N, D)``."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VideoMAEAttention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                      proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def infer_pos_embed_grid(length: int, target: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(T', S, S)`` token grid of a flattened position embedding of ``length`` positions.

    A length alone is ambiguous (1568 = 8 x 14 x 14 = 2 x 28 x 28 = 32 x 7 x 7), so the first rule that
    fits wins:

    1. ``length`` equals the target's token count: the target grid itself;
    2. 1568: the official 16-frame 224 px grid ``(8, 14, 14)``;
    3. the target's ``T'`` with a square spatial grid (only the resolution differs);
    4. ``T' = 8`` (16-frame clips, tubelet 2) with a square spatial grid;
    5. the target's spatial grid (only the clip length differs);
    6. any ``T'`` giving a square spatial grid of side >= 2, the one nearest the target's ``T'``.

    Raises:
        PretrainedError: no rule fits.
    """
    t_new, h_new, w_new = target
    if length == t_new * h_new * w_new:
        return target
    if length == math.prod(_OFFICIAL_GRID):
        return _OFFICIAL_GRID
    for t in (t_new, 8):
        if length % t == 0 and _is_square(length // t):
            side = math.isqrt(length // t)
            return t, side, side
    if h_new == w_new and length % (h_new * w_new) == 0:
        return length // (h_new * w_new), h_new, w_new
    options = [t for t in range(1, length + 1) if length % t == 0 and _is_square(length // t) and length // t >= 4]
    if options:
        t = min(options, key=lambda c: (abs(c - t_new), c))
        side = math.isqrt(length // t)
        return t, side, side
    raise pt.PretrainedError(
        f"pos_embed: cannot infer the token grid of {length} positions (expected T' x S x S with a square "
        f"spatial grid, e.g. 8 x 14 x 14 = 1568); this model's grid is {t_new} x {h_new} x {w_new}"
    )


def resize_pos_embed_3d(pos: torch.Tensor, *, source: tuple[int, int, int],
                        target: tuple[int, int, int]) -> torch.Tensor:
    """Resize a time-major ``(1, T*H*W, D)`` position embedding from grid ``source`` to ``target``.

    Bicubic over ``(H, W)`` per temporal slot, linear over ``T`` per spatial position (trilinear with the
    spatial size unchanged), ``align_corners=False`` as the official fine-tuning code. Unchanged when the
    grids are equal.
    """
    if tuple(source) == tuple(target):
        return pos
    (t0, h0, w0), (t1, h1, w1) = source, target
    d = pos.shape[-1]
    grid = pos.reshape(t0, h0, w0, d).permute(0, 3, 1, 2).float()  # (T, D, H, W)
    if (h0, w0) != (h1, w1):
        grid = F.interpolate(grid, size=(h1, w1), mode="bicubic", align_corners=False)
    grid = grid.permute(1, 0, 2, 3)[None]  # (1, D, T, H, W)
    if t0 != t1:
        grid = F.interpolate(grid, size=(t1, h1, w1), mode="trilinear", align_corners=False)
    return grid[0].permute(1, 2, 3, 0).reshape(1, t1 * h1 * w1, d).to(pos.dtype)


class VideoMAE(VideoClassifier):
    """VideoMAE / VideoMAE V2 ViT with joint space-time attention over tubelet tokens.

    Args:
        num_classes: classifier outputs (0: ``forward`` returns pooled features).
        num_frames: ``T`` (fixed: position table); a multiple of ``tubelet_size``.
        input_size: ``H = W`` (fixed); a multiple of ``patch_size``.
        in_channels: 3 (RGB; the only value accepted, kept for the official signature).
        tubelet_size: frames per token ``t``.
        patch_size: square patch side ``p``.
        embed_dim: token width ``D``.
        depth: blocks.
        num_heads: attention heads (divides ``embed_dim``).
        mlp_ratio: MLP hidden width / ``D``.
        qkv_bias: learn ``q_bias`` and ``v_bias`` (the official ViTs do).
        drop_rate: dropout after the position embedding, the attention projection and in the MLPs.
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linearly increasing to this value over the blocks.
        head_drop_rate: dropout before the classifier (official ``fc_drop_rate`` / V2 ``head_drop_rate``).
        use_mean_pooling: ``norm`` is ``Identity`` and ``fc_norm`` a LayerNorm of the token mean (official
            default); False: ``norm`` a LayerNorm of every token, ``fc_norm`` ``Identity``.
        learnable_pos_embed: a learnt ``pos_embed`` parameter ``(1, N, D)`` instead of the fixed sinusoid
            table (a non-persistent buffer: not in the state dict).
        init_scale: the classifier's initial weights are ``normal(std=0.02) * init_scale`` (official: 0.001).
        mean, std: input normalisation (VideoMAE uses ImageNet's).

    Shapes: ``(B, 3, T, H, W)`` -> tokens ``(B, N, D)``, ``N = (T/t)(H/p)(W/p)`` -> ``(B, num_classes)``.
    """

    fixed_frames = True
    fixed_size = True

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int,
        input_size: int,
        in_channels: int = 3,
        tubelet_size: int = 2,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
        use_mean_pooling: bool = True,
        learnable_pos_embed: bool = False,
        init_scale: float = 0.001,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        for key, value in (("num_frames", num_frames), ("input_size", input_size), ("tubelet_size", tubelet_size),
                           ("patch_size", patch_size), ("embed_dim", embed_dim), ("depth", depth),
                           ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}: expected an int >= 1, got {value!r}")
        if in_channels != 3:
            raise ValueError(f"in_channels: VideoMAE reads RGB clips, expected 3, got {in_channels!r}")
        if input_size % patch_size:
            raise ValueError(f"input_size: {input_size} is not a multiple of patch_size={patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames: {num_frames} is not a multiple of tubelet_size={tubelet_size}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim={embed_dim}")
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.use_mean_pooling = use_mean_pooling
        self.learnable_pos_embed = learnable_pos_embed
        self.init_scale = init_scale
        self._grid = (num_frames // tubelet_size, input_size // patch_size, input_size // patch_size)
        num_tokens = math.prod(self._grid)

        self.patch_embed = TubeletEmbed(in_channels=in_channels, dim=embed_dim, tubelet_size=tubelet_size,
                                        patch_size=patch_size)
        self.pos_embed: torch.Tensor
        if learnable_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        else:
            self.register_buffer("pos_embed", get_sinusoid_encoding_table(num_tokens, embed_dim), persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            VideoMAEBlock(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=rate)
            for rate in rates
        )
        self.norm: nn.Module = nn.Identity() if use_mean_pooling else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm: nn.Module = nn.LayerNorm(embed_dim, eps=1e-6) if use_mean_pooling else nn.Identity()
        self.num_features = embed_dim
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=embed_dim, num_classes=num_classes, pool="avg",
                                   drop_rate=head_drop_rate)
        self._init_weights()
        self.spec = ModelSpec(
            family="transformer", modality="rgb", num_frames=num_frames, input_size=input_size,
            in_channels=in_channels, mean=tuple(mean), std=tuple(std),
        )

    # ----------------------------------------------------------------------------------------- building
    def _init_weights(self) -> None:
        # Official: trunc_normal_(std=0.02) on Linear weights (bounds +-2 absolute, i.e. +-100 std: the same
        # distribution as normal_(std=0.02), which is faster on CPU), zero biases, LayerNorm 1/0 (PyTorch's
        # default), the Conv3d patch embedding PyTorch's default, q/v biases zero.
        if self.learnable_pos_embed:
            nn.init.normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.head.fc:
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._init_head()

    def _init_head(self) -> None:
        fc = self.head.fc
        if isinstance(fc, nn.Linear):
            with torch.no_grad():
                nn.init.normal_(fc.weight, std=0.02)
                fc.weight.mul_(self.init_scale)
                nn.init.zeros_(fc.bias)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)
        self._init_head()

    # ----------------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> tube tokens plus position embedding ``(B, N, D)``."""
        self.check_input(x)
        tokens = self.patch_embed(x)
        return tokens + self.pos_embed.to(tokens.dtype)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> tokens ``(B, N, D)``, time-major, after ``norm`` (``Identity`` when
        ``use_mean_pooling``: then the tokens are the last block's output, ``fc_norm`` follows the pooling)."""
        return self.norm(self._blocks(self._embed(x)))

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, N, D)`` -> mean over tokens -> ``fc_norm`` -> dropout -> classifier."""
        return self.head(self.fc_norm(x.mean(dim=1)), pre_logits=pre_logits)

    # ------------------------------------------------------------------------- masked-encoder interface
    def token_grid(self) -> tuple[int, int, int]:
        """``(T', Hp, Wp) = (T/t, H/p, W/p)``: the token grid at the model's input."""
        return self._grid

    def patch_shape(self) -> tuple[int, int, int]:
        """Pixels per token ``(t, p, p)``: one tube."""
        return self.tubelet_size, self.patch_size, self.patch_size

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the tokens of the kept spatial positions (tube masking: the same positions in every
        temporal slot), as the official pretraining encoder (``x[~mask]`` after adding the position table).

        Args:
            x: ``(B, 3, T, H, W)`` clip.
            keep: ``(B, K)`` integer indices into the ``Hp * Wp`` spatial positions (row-major) that stay
                visible; sorted indices give exactly the official token order.

        Returns:
            ``(B, T' * K, D)`` normalised tokens, time-major (slot 0's ``K`` positions first). The final
            LayerNorm is ``norm`` when the model has one (``use_mean_pooling=False``, as the official
            pretraining encoder), else ``fc_norm`` applied per token: the decoder then reads normalised tokens
            either way, and what pretraining teaches that LayerNorm lands in the module fine-tuning uses, as
            :meth:`convert_pretrained_state_dict` maps an official encoder's ``norm`` onto ``fc_norm``.

        Raises:
            ValueError: ``keep`` is not ``(B, K)`` integer indices in ``[0, Hp * Wp)`` with ``1 <= K``.
        """
        slots, rows, cols = self._grid
        positions = rows * cols
        name = self.spec.name or type(self).__name__
        if keep.ndim != 2 or keep.shape[0] != x.shape[0] or not 1 <= keep.shape[1] <= positions:
            raise ValueError(f"{name}.forward_visible: keep must be (B, K) with B = {x.shape[0]} and "
                             f"1 <= K <= {positions}, got shape {tuple(keep.shape)}")
        if keep.dtype.is_floating_point or keep.dtype == torch.bool:
            raise ValueError(f"{name}.forward_visible: keep must hold integer indices, got {keep.dtype}")
        if int(keep.min()) < 0 or int(keep.max()) >= positions:
            raise ValueError(f"{name}.forward_visible: keep indices must lie in [0, {positions}), got "
                             f"[{int(keep.min())}, {int(keep.max())}]")
        tokens = self._embed(x)  # (B, N, D)
        b, _, d = tokens.shape
        tokens = tokens.reshape(b, slots, positions, d)
        index = keep.long()[:, None, :, None].expand(b, slots, keep.shape[1], d)
        visible = torch.gather(tokens, 2, index).reshape(b, slots * keep.shape[1], d)
        final = self.norm if isinstance(self.norm, nn.LayerNorm) else self.fc_norm
        return final(self._blocks(visible))

    # ---------------------------------------------------------------------------------- pretrained weights
    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official VideoMAE / VideoMAE V2 (pretraining or fine-tuned), timm image ViT or own keys -> ours.

        - ``encoder.`` and ``backbone.`` prefixes are stripped (as the official fine-tuning does); the
          pretraining-only ``decoder.*``, ``encoder_to_decoder.*``, ``mask_token``, ``decoder_pos_embed``
          are dropped.
        - ``head.*`` -> ``head.fc.*`` (the classifier, which the loader then replaces).
        - One final LayerNorm goes to the one this model has: with ``use_mean_pooling`` an encoder's ``norm``
          becomes ``fc_norm`` when the file has no ``fc_norm`` (the official fine-tuning drops it and starts
          ``fc_norm`` at 1/0; we keep the gain and bias the pretrained tokens were trained to be read
          through: a choice, not measured here); without mean pooling a fine-tuned ``fc_norm`` becomes ``norm``.
        - ``pos_embed``: resized to this model's grid (:func:`infer_pos_embed_grid`,
          :func:`resize_pos_embed_3d`) when this model's is learnable; dropped with a warning when it uses
          the fixed table. A learnable model loading a VideoMAE file without one (the official files: their
          table is not saved) starts from the sinusoid table, i.e. from what the fixed model computes.
        - ``patch_embed.proj.weight`` of another tubelet depth (a 2D image ViT's ``(D, 3, p, p)``, or tubelet
          1 vs 2) is summed over time and spread evenly over ``tubelet_size`` frames (I3D inflation: a still
          clip gives the source's response).
        - timm image ViT: ``attn.qkv.bias`` is split into ``q_bias`` and ``v_bias`` (its key part is dropped,
          exactly: softmax ignores it); ``cls_token`` is dropped, as is its ``pos_embed`` entry.

        Raises:
            PretrainedError: layer-scale (``gamma_1``/``gamma_2``) or cosine-attention (``attn.scale``)
                weights, which this model does not have (loading the rest would give another network), or
                a ``pos_embed`` whose grid cannot be inferred.
        """
        sd: dict[str, torch.Tensor] = {}
        dropped = 0
        for key, value in state_dict.items():
            for prefix in ("backbone.", "encoder."):
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            if key.startswith(_PRETRAIN_ONLY):
                dropped += 1
                continue
            if key.startswith("head.") and not key.startswith("head.fc."):
                key = "head.fc." + key[len("head."):]
            sd[key] = value
        if dropped:
            log.info("videomae: %d pretraining-only keys (decoder, encoder_to_decoder, mask_token) dropped", dropped)
        for key in sd:
            if re.search(r"(^|\.)gamma_[12]$", key) or re.search(r"\.attn\.scale$", key):
                raise pt.PretrainedError(
                    f"pretrained key {key!r}: layer scale (gamma_1/gamma_2, official init_values > 0) or cosine "
                    "attention (attn.scale, V2 cos_attn) is not part of this VideoMAE; its other weights alone "
                    "would not be the same network"
                )

        image_vit = "cls_token" in sd
        sd.pop("cls_token", None)
        dim = self.num_features
        for key in [k for k in sd if k.endswith(".attn.qkv.bias")]:
            bias = sd.pop(key)
            stem = key[: -len("qkv.bias")]
            if bias.shape == (3 * dim,):
                sd.setdefault(stem + "q_bias", bias[:dim])
                sd.setdefault(stem + "v_bias", bias[2 * dim:])
            else:
                sd[key] = bias  # another width: reported as unexpected

        def has(prefix: str) -> bool:
            return any(k.startswith(prefix) for k in sd)

        if self.use_mean_pooling and has("norm.") and not has("fc_norm."):
            sd = pt.rename_prefixes(sd, {"norm.": "fc_norm."})
        elif not self.use_mean_pooling and has("fc_norm.") and not has("norm."):
            sd = pt.rename_prefixes(sd, {"fc_norm.": "norm."})

        weight = sd.get("patch_embed.proj.weight")
        if weight is not None:
            if weight.ndim == 4:
                sd["patch_embed.proj.weight"] = pt.inflate_conv_weight(weight, self.tubelet_size)
            elif weight.ndim == 5 and weight.shape[2] != self.tubelet_size:
                sd["patch_embed.proj.weight"] = pt.inflate_conv_weight(weight.sum(2), self.tubelet_size)

        pos = sd.pop("pos_embed", None)
        if pos is not None:
            if image_vit and pos.ndim == 3:
                pos = pos[:, 1:]  # the class token's entry
            if not self.learnable_pos_embed:
                log.warning("videomae: the file's pos_embed %s is dropped: this model uses the fixed sinusoid "
                            "table (learnable_pos_embed=False)", tuple(pos.shape))
            elif pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != dim:
                sd["pos_embed"] = pos  # another width: reported as a shape mismatch
            else:
                if image_vit:
                    side = math.isqrt(pos.shape[1])
                    if side * side != pos.shape[1]:
                        raise pt.PretrainedError(f"pos_embed: an image ViT's {pos.shape[1]} patch positions are "
                                                 "not a square grid")
                    source = (1, side, side)
                else:
                    source = infer_pos_embed_grid(pos.shape[1], self._grid)
                if source != self._grid:
                    log.info("videomae: pos_embed resized from grid %s to %s", source, self._grid)
                sd["pos_embed"] = resize_pos_embed_3d(pos, source=source, target=self._grid)
        elif self.learnable_pos_embed and (has("blocks.") or has("patch_embed.")):
            log.info("videomae: the file has no pos_embed; the learnable one starts from the sinusoid table")
            sd["pos_embed"] = get_sinusoid_encoding_table(math.prod(self._grid), dim)
        return sd


@register_model(family="transformer", modality="rgb", cpu_friendly=True)
def videomae_tiny(
    *,
    num_classes: int,
    num_frames: int = 8,
    input_size: int = 64,
    patch_size: int = 8,
    tubelet_size: int = 2,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    head_drop_rate: float = 0.0,
    use_mean_pooling: bool = True,
    learnable_pos_embed: bool = False,
    init_scale: float = 0.001,
) -> VideoMAE:
    """VideoMAE, joint space-time attention over 2x8x8 tubes, 4 blocks x 128 wide (8x64x64)."""
    return VideoMAE(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                    tubelet_size=tubelet_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                    drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                    head_drop_rate=head_drop_rate, use_mean_pooling=use_mean_pooling,
                    learnable_pos_embed=learnable_pos_embed, init_scale=init_scale)


@register_model(family="transformer", modality="rgb")
def videomae_s(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    head_drop_rate: float = 0.0,
    use_mean_pooling: bool = True,
    learnable_pos_embed: bool = False,
    init_scale: float = 0.001,
) -> VideoMAE:
    """VideoMAE ViT-S/16 (Tong et al. 2022; V2 distilled ViT-S), joint space-time attention, 16x224x224."""
    return VideoMAE(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                    tubelet_size=tubelet_size, embed_dim=384, depth=12, num_heads=6, drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, head_drop_rate=head_drop_rate,
                    use_mean_pooling=use_mean_pooling, learnable_pos_embed=learnable_pos_embed,
                    init_scale=init_scale)


@register_model(family="transformer", modality="rgb")
def videomae_b(
    *,
    num_classes: int,
    num_frames: int = 16,
    input_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    head_drop_rate: float = 0.0,
    use_mean_pooling: bool = True,
    learnable_pos_embed: bool = False,
    init_scale: float = 0.001,
) -> VideoMAE:
    """VideoMAE ViT-B/16 (Tong et al. 2022; V2 distilled ViT-B), joint space-time attention, 16x224x224."""
    return VideoMAE(num_classes=num_classes, num_frames=num_frames, input_size=input_size, patch_size=patch_size,
                    tubelet_size=tubelet_size, embed_dim=768, depth=12, num_heads=12, drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, head_drop_rate=head_drop_rate,
                    use_mean_pooling=use_mean_pooling, learnable_pos_embed=learnable_pos_embed,
                    init_scale=init_scale)
