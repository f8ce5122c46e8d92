"""Masked-video pretraining (VideoMAE, Tong et al. 2022): tube masking, a light decoder, the loss.

A clip's token grid is ``(T', Hp, Wp)``; tube masking hides the same ``mask_ratio`` of the ``Hp * Wp``
spatial positions in every temporal slot, so a hidden patch cannot be copied from its neighbour in time
(frames of a micro-expression clip are nearly identical). The encoder (any model with the masked-encoder
interface: ``token_grid()``, ``patch_shape()``, ``forward_visible(x, keep)``; TimeSformer and VideoMAE
have it) sees the visible tokens only; a narrow decoder of joint space-time attention fills in learnt
mask tokens and predicts the pixels of every hidden patch.

Targets (``target``):

- ``pixels``: the patch's values of the model input, normalised per patch (mean 0, std 1 over the
  patch's values; VideoMAE's ``norm_pix_loss``), so flat face regions do not dominate the loss;
- ``difference``: the change of each frame from the previous one (frame 0 against itself: zero), also
  normalised per patch: micro-expressions are motion, and a model that must reconstruct it learns motion.

``target_pool`` > 1 averages each frame's target over ``k x k`` pixel blocks before the patches are cut (a
patch then holds ``(p/k)^2`` values): where the expression moves less than the sensor noise per pixel (sub-pixel
motion, as in micro-expressions), per-pixel targets are mostly noise, which no encoder can predict.

The loss is the mean squared error over the hidden patches only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .videomae import get_sinusoid_encoding_table

__all__ = ["MaskedVideoAutoencoder", "MaskedOutput", "TARGETS", "tube_mask", "patchify",
           "check_masked_encoder"]

TARGETS = ("pixels", "difference")
_INTERFACE = ("token_grid", "patch_shape", "forward_visible")


class MaskedOutput(NamedTuple):
    """One pretraining step's output."""

    loss: torch.Tensor  #: scalar, MSE over hidden patches
    prediction: torch.Tensor  #: ``(B, T', S, P)`` predicted patch values at every position
    target: torch.Tensor  #: ``(B, T', S, P)`` target patch values
    hidden: torch.Tensor  #: ``(B, S)`` bool, True where the position was hidden


def check_masked_encoder(model: nn.Module) -> None:
    """``TypeError`` unless ``model`` has the masked-encoder interface."""
    missing = [name for name in _INTERFACE if not callable(getattr(model, name, None))]
    if missing:
        name = getattr(getattr(model, "spec", None), "name", "") or type(model).__name__
        raise TypeError(f"{name}: masked-video pretraining needs a transformer with {', '.join(_INTERFACE)}; "
                        f"this model lacks {', '.join(missing)} (use timesformer_* or videomae_*)")


def tube_mask(batch: int, positions: int, *, mask_ratio: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random tube masks.

    Returns:
        ``keep`` ``(B, K)`` sorted indices of the visible positions, ``K = max(1, round(S * (1 - ratio)))``,
        and ``hidden`` ``(B, S)`` bool.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio: expected 0 < ratio < 1, got {mask_ratio}")
    visible = max(1, int(round(positions * (1.0 - mask_ratio))))
    noise = torch.rand(batch, positions, generator=generator).to(device)
    keep = noise.argsort(dim=1)[:, :visible].sort(dim=1).values
    hidden = torch.ones(batch, positions, dtype=torch.bool, device=device)
    hidden.scatter_(1, keep, False)
    return keep, hidden


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, T/t, (H/p)*(W/p), t*p*p*C)``, positions row-major as the encoders' tokens."""
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, T', Hp, Wp, pt, ph, pw, C
    return x.reshape(b, t // pt, (h // ph) * (w // pw), pt * ph * pw * c)


def _normalise_patches(target: torch.Tensor) -> torch.Tensor:
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True, unbiased=True)
    return (target - mean) / (var + 1e-6).sqrt()


class MaskedVideoAutoencoder(nn.Module):
    """An encoder with the masked-encoder interface plus a light decoder.

    Args:
        encoder: e.g. ``create_model("timesformer_tiny", num_classes=0)``; its ``state_dict`` is what
            fine-tuning loads (``model.pretrained``).
        mask_ratio: share of spatial positions hidden in every temporal slot (VideoMAE: 0.9).
        decoder_dim: decoder width.
        decoder_depth: decoder blocks (joint space-time attention over all tokens).
        decoder_heads: decoder attention heads (divides ``decoder_dim``).
        target: one of :data:`TARGETS`.
        target_pool: side of the pixel blocks each target frame is averaged over (1: every pixel); divides
            the patch side.

    Shapes: ``forward((B, C, T, H, W))`` -> :class:`MaskedOutput`.
    """

    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.9, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_heads: int = 4, target: str = "pixels", target_pool: int = 1) -> None:
        super().__init__()
        check_masked_encoder(encoder)
        if target not in TARGETS:
            raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_heads: {decoder_heads} does not divide decoder_dim={decoder_dim}")
        tube_mask(1, 4, mask_ratio=mask_ratio)  # validates the ratio now, not at the first step
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.target = target
        grid = tuple(encoder.token_grid())
        patch = tuple(encoder.patch_shape())
        if target_pool < 1 or patch[1] % target_pool or patch[2] % target_pool:
            raise ValueError(f"target_pool: expected a divisor of the patch side {patch[1]}, got {target_pool}")
        self.grid, self.patch, self.target_pool = grid, patch, target_pool
        target_patch = (patch[0], patch[1] // target_pool, patch[2] // target_pool)
        self.target_patch = target_patch
        channels = encoder.spec.in_channels
        self.encoder_to_decoder = nn.Linear(encoder.num_features, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, decoder_dim))
        positions = grid[0] * grid[1] * grid[2]
        self.register_buffer("decoder_pos_embed", get_sinusoid_encoding_table(positions, decoder_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(decoder_dim, decoder_heads, dim_feedforward=4 * decoder_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_head = nn.Linear(decoder_dim, math.prod(target_patch) * channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> per-patch-normalised targets ``(B, T', S, P)``."""
        if self.target == "difference":
            x = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)
        if self.target_pool > 1:
            k = self.target_pool
            x = F.avg_pool3d(x, kernel_size=(1, k, k))
        return _normalise_patches(patchify(x, self.target_patch))

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> MaskedOutput:
        b = x.shape[0]
        slots, rows, cols = self.grid
        positions = rows * cols
        keep, hidden = tube_mask(b, positions, mask_ratio=self.mask_ratio, generator=generator, device=x.device)
        visible = self.encoder_to_decoder(self.encoder.forward_visible(x, keep))  # (B, T'*K, Dd)
        d = visible.shape[-1]
        tokens = self.mask_token.expand(b, slots, positions, d).clone()
        index = keep[:, None, :, None].expand(b, slots, keep.shape[1], d)
        tokens = tokens.scatter(2, index, visible.reshape(b, slots, keep.shape[1], d))
        tokens = tokens.reshape(b, slots * positions, d) + self.decoder_pos_embed
        decoded = self.decoder_head(self.decoder_norm(self.decoder(tokens)))
        prediction = decoded.reshape(b, slots, positions, -1)
        target = self.targets(x)
        error = ((prediction - target) ** 2).mean(dim=-1)  # (B, T', S)
        weight = hidden[:, None, :].expand_as(error).float()
        loss = (error * weight).sum() / weight.sum()
        return MaskedOutput(loss=loss, prediction=prediction, target=target, hidden=hidden)
