"""The maths of learning from uncertain labels: pure tensor functions and two small modules.

Four methods, each written down from its paper and kept free of any trainer (the engine wires them in):

1. **EAC** -- Zhang, Wang, Deng, "Learn From All: Erasing Attention Consistency for Noisy Label Facial
   Expression Recognition", ECCV 2022 (arXiv:2207.10299): :func:`random_erase_clips`,
   :func:`class_activation_maps`, :func:`eac_consistency_loss`.
2. **Re-labelling against class templates** -- the feature-similarity re-labelling of MTAC (Liu, Zhang,
   Kauttonen, Zhao, "Uncertain Facial Expression Recognition via Multi-task Assisted Correction", IEEE
   TMM 2023, arXiv:2212.07144), in the exact form stated at :func:`relabel`: :func:`class_templates`,
   :func:`relabel`.
3. **Per-sample confidence weighting** -- the confidence estimation and weighted regularisation of MTAC,
   which follow the Self-Cure Network (Wang, Peng, Yang, Lu, Qiao, "Suppressing Uncertainties for
   Large-Scale Facial Expression Recognition", CVPR 2020, arXiv:2002.10392); written here in SCN's exact
   form: :class:`ConfidenceWeighting`, :func:`confidence_weighted_loss`.
4. **Uncertainty-feature mixing** -- after Fan et al., "Combating Uncertainty and Class Imbalance in Facial
   Expression Recognition", 2022 (arXiv:2212.07751), who mix "uncertain features between samples", and
   Relative Uncertainty Learning (Zhang, Wang, Deng, NeurIPS 2021), which mixes pooled features of two
   samples and weights the two labels' losses. The stored text of Fan et al. does not give their mixing
   rule, so microexp defines a mixup-style version (Zhang et al., "mixup", ICLR 2018) at
   :func:`uncertainty_feature_mix`: :class:`MixedFeatures`, :func:`uncertainty_feature_mix`,
   :func:`mixed_loss`.

Layouts: clips ``(B, C, T, H, W)``; pooled features ``(B, D)``; logits and probabilities ``(B, K)``;
labels ``(B,)`` long. Random draws take an explicit CPU :class:`torch.Generator` (never the global RNG), so a
seed reproduces them on any device.

Imports only torch, torchvision, numpy and :mod:`microexp.errors` (no data, models, engine or CLI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from microexp.errors import ConfigError

__all__ = [
    "ConfidenceWeighting",
    "MixedFeatures",
    "class_activation_maps",
    "class_templates",
    "confidence_weighted_loss",
    "eac_consistency_loss",
    "mixed_loss",
    "random_erase_clips",
    "relabel",
    "uncertainty_feature_mix",
]

#: Attempts at drawing a box that fits, as in Zhong et al.'s Random Erasing and torchvision.
_ERASE_ATTEMPTS = 10


# --------------------------------------------------------------------------- validation


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def _in_range(
    name: str, value: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    v = _number(name, value)
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")
    return v


def _pair(name: str, value: object, *, lo: float, hi: float, lo_open: bool) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{name} must be a (min, max) pair of numbers, got {value!r}")
    a = _in_range(f"{name}[0]", value[0], lo, hi, lo_open=lo_open)
    b = _in_range(f"{name}[1]", value[1], lo, hi, lo_open=lo_open)
    if a > b:
        raise ConfigError(f"{name} must be (min, max) with min <= max, got {value!r}")
    return a, b


def _generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ConfigError(
            f"generator must be a CPU torch.Generator (draws are made on the CPU), got one on "
            f"{generator.device}"
        )
    return generator


def _shape_error(name: str, tensor: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_labels(
    name: str, labels: torch.Tensor, n: int, num_classes: int, *, values: bool = True
) -> None:
    """Shape and dtype of ``labels (n,)``; with ``values`` also their range (a device sync on GPU)."""
    if labels.ndim != 1 or labels.shape[0] != n:
        raise _shape_error(name, labels, f"({n},)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if values and n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def _check_table(
    features: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor
) -> tuple[int, int]:
    """Validate ``features (N, D)``, ``probabilities (N, K)``, ``labels (N,)``; return ``(N, K)``."""
    if features.ndim != 2:
        raise _shape_error("features", features, "(N, D)")
    n = features.shape[0]
    if probabilities.ndim != 2 or probabilities.shape[0] != n:
        raise _shape_error("probabilities", probabilities, f"({n}, K)")
    k = probabilities.shape[1]
    _check_labels("labels", labels, n, k)
    return n, k


# --------------------------------------------------------------------------- 1. EAC


def _erase_box(
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    scale: tuple[float, float],
    log_ratio: tuple[float, float],
) -> tuple[int, int, int, int] | None:
    """One Random Erasing box ``(i, j, h, w)`` for an ``height x width`` frame, or None.

    Zhong et al. 2020 (AAAI), as torchvision draws it: up to 10 attempts at an area
    ``U(scale) * height * width`` and an aspect ratio ``exp(U(log ratio))``, ``h = round(sqrt(area *
    ratio))``, ``w = round(sqrt(area / ratio))``; the first box with ``h < height`` and ``w < width`` gets
    a uniform top-left corner. None when no attempt fits (the clip is then left as it is, like torchvision).
    """
    area = height * width
    for _ in range(_ERASE_ATTEMPTS):
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        erase_area = area * (scale[0] + (scale[1] - scale[0]) * float(u[0]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(u[1]))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if not (h < height and w < width):
            continue
        i = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        j = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        return i, j, h, w
    return None


def random_erase_clips(
    videos: torch.Tensor,
    *,
    generator: torch.Generator,
    scale: Sequence[float] = (0.02, 0.25),
    ratio: Sequence[float] = (0.3, 3.3),
    p: float = 1.0,
) -> torch.Tensor:
    """Erase one random box per clip, the same box in every frame and channel of that clip.

    EAC erases a random box of each (normalised) training image with Random Erasing, scale
    ``(0.02, 0.25)``; its second view is the horizontal flip of the erased image (``erased.flip(-1)``).
    A micro-expression is motion, so a box that moved from frame to frame would itself be motion: here the
    box is fixed over the clip's ``T`` frames. Erased values are 0 (the mean of normalised inputs). The box
    is drawn as :func:`_erase_box` states; torchvision's ``RandomErasing.make_params`` draws from the global
    RNG, so only the erasing itself is torchvision's (:func:`torchvision.transforms.v2.functional.erase`).

    Args:
        videos: ``(B, C, T, H, W)`` clips; not modified.
        generator: CPU generator for the draws (same seed -> same boxes, on any device).
        scale: ``(min, max)`` erased fraction of the ``H x W`` frame, in ``(0, 1]``.
        ratio: ``(min, max)`` aspect ratio ``h / w`` of the box, > 0.
        p: probability that a clip is erased at all (an added option; 1.0 erases every clip that a box
            fits; EAC's torchvision default was 0.5).

    Returns:
        A new ``(B, C, T, H, W)`` tensor.
    """
    if videos.ndim != 5:
        raise _shape_error("videos", videos, "(B, C, T, H, W)")
    generator = _generator(generator)
    scale_t = _pair("scale", scale, lo=0.0, hi=1.0, lo_open=True)
    ratio_t = _pair("ratio", ratio, lo=0.0, hi=math.inf, lo_open=True)
    p = _in_range("p", p, 0.0, 1.0)
    log_ratio = (math.log(ratio_t[0]), math.log(ratio_t[1]))
    height, width = videos.shape[-2:]
    out = videos.clone()
    zero = torch.zeros((), dtype=videos.dtype, device=videos.device)
    for b in range(videos.shape[0]):
        if p < 1.0 and float(torch.rand((), generator=generator, dtype=torch.float64)) >= p:
            continue
        box = _erase_box(height, width, generator=generator, scale=scale_t, log_ratio=log_ratio)
        if box is None:
            continue
        i, j, h, w = box
        TF.erase(out[b], i=i, j=j, h=h, w=w, v=zero, inplace=True)  # (C, T, H, W): every frame
    return out


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class activation maps (Zhou et al., CVPR 2016) of unpooled features.

    ``cam[b, k, s] = sum_d weight[k, d] * features[b, d, s]`` at every position ``s`` (no bias: the bias
    adds the same constant everywhere). EAC's reference implementation takes the classifier weight
    detached (``head.fc.weight.detach()``), so the consistency loss trains the backbone only; pass the
    weight as the method wants it.

    Args:
        features: ``(B, D, *spatial)`` backbone features before pooling, spatial ``(T, h, w)`` or ``(h, w)``.
        weight: ``(K, D)`` weight of the linear classifier applied to the average-pooled features.

    Returns:
        ``(B, K, *spatial)`` maps; their spatial mean plus the bias gives the logits.
    """
    if features.ndim < 3:
        raise _shape_error("features", features, "(B, D, *spatial) with at least one spatial dim")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise _shape_error("weight", weight, f"(K, {features.shape[1]})")
    b, d, *spatial = features.shape
    cams = torch.matmul(weight.to(features.dtype), features.reshape(b, d, -1))  # (B, K, S)
    return cams.reshape(b, weight.shape[0], *spatial)


def eac_consistency_loss(cams: torch.Tensor, cams_of_flipped: torch.Tensor) -> torch.Tensor:
    """EAC's attention consistency: MSE between a clip's CAMs and the flipped-back CAMs of its flip.

    ``l_c = mean over (b, k, ..., w) of (cams[..., w] - cams_of_flipped[..., W - 1 - w])^2``, the plain mean
    over all ``B * K * (spatial)`` entries, as ``F.mse_loss`` in the reference code (which flips with an
    ``align_corners=True`` grid sample: exactly the index flip). EAC trains ``CE + lambda * l_c`` with
    ``lambda = 5`` on 7x7 maps.

    Args:
        cams: ``(B, K, ..., w)`` maps of the clips.
        cams_of_flipped: same shape, maps of the horizontally flipped clips (width is the last dim).

    Returns:
        Scalar loss.
    """
    if cams.ndim < 3:
        raise _shape_error("cams", cams, "(B, K, ..., w)")
    if cams_of_flipped.shape != cams.shape:
        raise _shape_error("cams_of_flipped", cams_of_flipped, str(tuple(cams.shape)))
    return F.mse_loss(cams, cams_of_flipped.flip(-1))


# --------------------------------------------------------------------------- 2. re-labelling


def _check_min_confidence(min_confidence: float) -> float:
    return _in_range("min_confidence", min_confidence, 0.0, 1.0)


def class_templates(
    features: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    *,
    num_classes: int,
    min_confidence: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class templates: the mean L2-normalised feature of the class's confident training clips.

    ``T_c = mean { x_i / ||x_i|| : y_i = c and p_i[y_i] >= min_confidence }``; a class with no such clip has
    no template (a zero row and ``False``). Computed without gradients (an epoch statistic).

    Args:
        features: ``(N, D)`` pooled features of training clips.
        labels: ``(N,)`` their (current) labels.
        probabilities: ``(N, K)`` the model's softmax probabilities for them.
        num_classes: ``K``.
        min_confidence: in ``[0, 1]``.

    Returns:
        ``(templates (K, D) float, has_template (K,) bool)``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an int >= 1, got {num_classes!r}")
    min_confidence = _check_min_confidence(min_confidence)
    _, k = _check_table(features, labels, probabilities)
    if k != num_classes:
        raise _shape_error("probabilities", probabilities, f"(N, {num_classes}) (num_classes)")
    with torch.no_grad():
        own = probabilities.gather(1, labels.long()[:, None]).squeeze(1)
        keep = own >= min_confidence
        unit = F.normalize(features.float(), dim=1)[keep]
        kept = labels.long()[keep]
        sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add_(0, kept, unit)
        counts = torch.bincount(kept, minlength=num_classes)
        templates = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
    return templates, counts > 0


def relabel(
    features: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    templates: torch.Tensor,
    has_template: torch.Tensor,
    *,
    min_confidence: float,
    distance_ratio: float,
) -> torch.Tensor:
    """New labels for clips whose prediction and features both point at another class.

    With ``c_i = argmax_k p_i[k]`` (the first index on ties) and the cosine distance
    ``d(x, T) = 1 - <x, T> / (||x|| ||T||)``, clip ``i`` labelled ``y_i`` becomes ``c_i`` exactly when all of

    1. ``c_i != y_i``;
    2. ``p_i[c_i] >= min_confidence``;
    3. ``has_template[c_i]`` and ``has_template[y_i]``;
    4. ``distance_ratio * d(x_i, T_{c_i}) < d(x_i, T_{y_i})`` (the clip is "much closer" to the predicted
       class's template; ``distance_ratio = inf`` never re-labels);

    every other clip keeps ``y_i``. Pure: nothing is stored. MTAC re-labels uncertain samples by prediction
    and feature similarity; this is microexp's exact form of that rule.

    Args:
        features: ``(N, D)`` pooled features.
        labels: ``(N,)`` current labels.
        probabilities: ``(N, K)`` softmax probabilities.
        templates: ``(K, D)`` from :func:`class_templates`.
        has_template: ``(K,)`` bool from :func:`class_templates`.
        min_confidence: in ``[0, 1]``.
        distance_ratio: ``>= 1`` (may be ``inf``).

    Returns:
        ``(N,)`` long labels (equal to ``labels`` where unchanged).
    """
    min_confidence = _check_min_confidence(min_confidence)
    distance_ratio = _number("distance_ratio", distance_ratio)
    if not distance_ratio >= 1.0:  # also rejects NaN
        raise ConfigError(f"distance_ratio must be >= 1 (1: simply closer), got {distance_ratio!r}")
    _, k = _check_table(features, labels, probabilities)
    if templates.ndim != 2 or templates.shape != (k, features.shape[1]):
        raise _shape_error("templates", templates, f"({k}, {features.shape[1]})")
    if has_template.shape != (k,) or has_template.dtype != torch.bool:
        raise ValueError(
            f"has_template must be a ({k},) bool tensor, got shape {tuple(has_template.shape)} "
            f"dtype {has_template.dtype}"
        )
    labels = labels.long()
    with torch.no_grad():
        p_max, pred = probabilities.max(dim=1)
        unit = F.normalize(features.float(), dim=1)
        unit_t = F.normalize(templates.float(), dim=1)
        dist = 1.0 - unit @ unit_t.T  # (N, K) cosine distances to every template
        d_pred = dist.gather(1, pred[:, None]).squeeze(1)
        d_own = dist.gather(1, labels[:, None]).squeeze(1)
        change = (
            (pred != labels)
            & (p_max >= min_confidence)
            & has_template[pred]
            & has_template[labels]
            & (distance_ratio * d_pred < d_own)
        )
    return torch.where(change, pred, labels)


# --------------------------------------------------------------------------- 3. confidence weighting


def _check_beta(beta: float) -> float:
    return _in_range("beta", beta, 0.0, 1.0, lo_open=True, hi_open=True)


def _check_margin(margin: float) -> float:
    m = _number("margin", margin)
    if not (math.isfinite(m) and m >= 0.0):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    return m


class ConfidenceWeighting(nn.Module):
    """Per-clip importance weight ``alpha_i = sigmoid(w^T x_i + b)`` (SCN's self-attention weighting).

    Args:
        in_features: ``D`` of the pooled features.
        beta: fraction of a batch in the high-importance group of the rank regularisation, in ``(0, 1)``.
        margin: rank-regularisation margin ``delta``, >= 0.

    ``forward(features (B, D)) -> alpha (B,)`` in ``(0, 1)``; :meth:`loss` applies
    :func:`confidence_weighted_loss` with this module's ``beta`` and ``margin``.
    """

    def __init__(self, *, in_features: int, beta: float = 0.7, margin: float = 0.15) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ConfigError(f"in_features must be an int >= 1, got {in_features!r}")
        self.in_features = in_features
        self.beta = _check_beta(beta)
        self.margin = _check_margin(margin)
        self.fc = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` pooled features -> ``(B,)`` weights in ``(0, 1)``."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise _shape_error("features", features, f"(B, {self.in_features})")
        return torch.sigmoid(self.fc(features)).squeeze(1)

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        alpha: torch.Tensor,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`confidence_weighted_loss` with ``beta`` and ``margin`` of this module."""
        return confidence_weighted_loss(
            logits, targets, alpha, loss_fn=loss_fn, beta=self.beta, margin=self.margin
        )


def confidence_weighted_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    beta: float,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SCN's logit-weighted loss and rank regularisation.

    * classification: ``L_cls = loss_fn(alpha[:, None] * logits, targets)`` -- each clip's logits scaled by
      its weight (with cross-entropy: SCN's logit-weighted CE; a small ``alpha`` flattens the clip's softmax
      and so its gradient);
    * regularisation: sort ``alpha`` descending, ``M = clamp(floor(beta * B), 1, B - 1)``,
      ``alpha_H`` = mean of the first ``M``, ``alpha_L`` = mean of the other ``B - M``;
      ``L_RR = max(0, margin - (alpha_H - alpha_L))``; 0 for a batch of one clip.

    SCN trains ``L_cls + L_RR`` (reference code; the paper writes a ``gamma`` blend); the caller combines.

    Args:
        logits: ``(B, K)``.
        targets: ``(B,)`` long.
        alpha: ``(B,)`` from :class:`ConfidenceWeighting`.
        loss_fn: ``(logits (B, K), targets (B,)) -> scalar``, e.g. cross-entropy.
        beta: in ``(0, 1)`` (SCN: 0.7).
        margin: >= 0 (SCN: 0.15).

    Returns:
        ``(L_cls scalar, L_RR scalar)``.
    """
    beta = _check_beta(beta)
    margin = _check_margin(margin)
    if logits.ndim != 2:
        raise _shape_error("logits", logits, "(B, K)")
    b = logits.shape[0]
    _check_labels("targets", targets, b, logits.shape[1], values=False)  # per step: no device sync
    if alpha.shape != (b,):
        raise _shape_error("alpha", alpha, f"({b},)")
    weighted = loss_fn(alpha[:, None].to(logits.dtype) * logits, targets)
    if b < 2:
        return weighted, alpha.sum() * 0.0
    m = min(max(int(math.floor(beta * b)), 1), b - 1)
    ranked = alpha.sort(descending=True).values
    reg = F.relu(margin - (ranked[:m].mean() - ranked[m:].mean()))
    return weighted, reg


# --------------------------------------------------------------------------- 4. feature mixing


class MixedFeatures(NamedTuple):
    """Result of :func:`uncertainty_feature_mix`.

    ``features (B, D)``; ``targets_a (B,)`` each clip's own label; ``targets_b (B,)`` the partner's label
    (own label where not mixed); ``lam (B,)`` float, the weight of the own feature and label (1 where not
    mixed); ``mixed (B,)`` bool, which clips were mixed (an added field).
    """

    features: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: torch.Tensor
    mixed: torch.Tensor


def uncertainty_feature_mix(
    features: torch.Tensor,
    targets: torch.Tensor,
    uncertainty: torch.Tensor,
    *,
    fraction: float,
    alpha: float,
    generator: torch.Generator,
) -> MixedFeatures:
    """Mix the pooled features of a batch's most uncertain clips with other clips of the batch.

    With ``n = floor(fraction * B)`` (0 when ``B < 2``), the ``n`` clips of highest ``uncertainty`` (ties:
    lower index first) are mixed; each such clip ``i`` draws a partner ``j != i`` uniformly from the batch
    and ``lam_i ~ Beta(alpha, alpha)``, and gets ``x'_i = lam_i x_i + (1 - lam_i) x_j`` with targets
    ``(y_i, y_j)``; every other clip is unchanged with ``lam = 1``. Partners are the original features
    (mixing does not chain). Train with :func:`mixed_loss`: ``lam l(y_i) + (1 - lam) l(y_j)``. The
    uncertainty may be, e.g., ``1 - alpha`` of :class:`ConfidenceWeighting` or the softmax entropy.

    Args:
        features: ``(B, D)`` pooled features (gradients flow through the mix).
        targets: ``(B,)`` long labels.
        uncertainty: ``(B,)``, higher = less certain (only its order is used).
        fraction: share of the batch mixed, in ``[0, 1]``.
        alpha: Beta concentration, > 0 (1: uniform ``lam``; small: ``lam`` near 0 or 1).
        generator: CPU generator for partners and ``lam`` (same seed -> same mix).

    Returns:
        :class:`MixedFeatures`.
    """
    fraction = _in_range("fraction", fraction, 0.0, 1.0)
    alpha = _number("alpha", alpha)
    if not (math.isfinite(alpha) and alpha > 0.0):
        raise ConfigError(f"alpha must be a finite number > 0 (Beta(alpha, alpha)), got {alpha!r}")
    generator = _generator(generator)
    if features.ndim != 2:
        raise _shape_error("features", features, "(B, D)")
    b = features.shape[0]
    if targets.ndim != 1 or targets.shape[0] != b:
        raise _shape_error("targets", targets, f"({b},)")
    if uncertainty.shape != (b,):
        raise _shape_error("uncertainty", uncertainty, f"({b},)")
    n = int(math.floor(fraction * b)) if b >= 2 else 0
    device = features.device
    lam = torch.ones(b, dtype=features.dtype, device=device)
    mixed = torch.zeros(b, dtype=torch.bool, device=device)
    if n == 0:
        return MixedFeatures(features, targets, targets, lam, mixed)
    order = torch.sort(uncertainty.detach().cpu(), descending=True, stable=True).indices
    chosen = order[:n]
    draw = torch.randint(0, b - 1, (n,), generator=generator)
    partners = draw + (draw >= chosen).long()  # uniform over the batch without the clip itself
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    lam_chosen = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n))
    chosen, partners = chosen.to(device), partners.to(device)
    lam = lam.index_copy(0, chosen, lam_chosen.to(device=device, dtype=features.dtype))
    mixed = mixed.index_fill(0, chosen, True)
    source = torch.arange(b, device=device).index_copy(0, chosen, partners)
    out = lam[:, None] * features + (1.0 - lam[:, None]) * features[source]
    return MixedFeatures(out, targets, targets[source], lam, mixed)


def mixed_loss(
    logits: torch.Tensor,
    mixed: MixedFeatures,
    loss_fn_per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``mean_i [lam_i l(z_i, a_i) + (1 - lam_i) l(z_i, b_i)]`` for the logits of mixed features.

    Args:
        logits: ``(B, K)`` classifier outputs for ``mixed.features``.
        mixed: from :func:`uncertainty_feature_mix`.
        loss_fn_per_sample: ``(logits (B, K), targets (B,)) -> (B,)`` per-clip losses, e.g.
            ``lambda z, y: F.cross_entropy(z, y, reduction="none")``.

    Returns:
        Scalar loss.
    """
    b = mixed.lam.shape[0]
    if logits.ndim != 2 or logits.shape[0] != b:
        raise _shape_error("logits", logits, f"({b}, K)")
    loss_a = loss_fn_per_sample(logits, mixed.targets_a)
    loss_b = loss_fn_per_sample(logits, mixed.targets_b)
    for name, loss in (("targets_a", loss_a), ("targets_b", loss_b)):
        if loss.shape != (b,):
            raise ValueError(
                f"loss_fn_per_sample must return per-clip losses of shape ({b},), got "
                f"{tuple(loss.shape)} for {name} (use reduction='none')"
            )
    lam = mixed.lam.to(loss_a.dtype)
    return (lam * loss_a + (1.0 - lam) * loss_b).mean()
