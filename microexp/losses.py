"""Imbalance-aware classification losses, built by name.

Every loss maps ``(logits (B, C) float, targets (B,) long)`` to a scalar mean loss and exposes
``set_epoch(epoch)`` (a no-op except for LDAM with deferred re-weighting), so the trainer can call
it uniformly.

``class_counts`` must be the number of clips per class in the TRAINING fold only (never the whole
data set, which would leak the test fold's label distribution). A class with zero training clips is
counted as 1 for its weight/prior, with a :class:`UserWarning`; it cannot occur as a target of that
fold anyway, so this only keeps the weights finite.

Reductions follow the reference implementations:

* weighted cross-entropies (``weighted_ce``, ``cb_ce``, ``ldam`` with DRW) use PyTorch's weighted
  mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (``F.cross_entropy(weight=...)``);
* focal losses (``focal``, ``cb_focal``) use the plain batch mean ``mean_i alpha_{y_i} l_i`` as in
  Lin et al. 2017 and Cui et al. 2019;
* the coupled focal-LDAM loss (``focal_ldam``) reduces like ``ldam`` (so that it is exactly ``ldam`` at
  ``gamma = 0``, ``reg_weight = 0``) and adds its batch-level regulation term once.

Never imports ``microexp.data``, the engine or the CLI.
"""

from __future__ import annotations

import difflib
import inspect
import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from microexp.errors import ConfigError

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "CrossEntropyLoss",
    "FocalLDAMLoss",
    "FocalLoss",
    "ImbalanceLoss",
    "LDAMLoss",
    "build_loss",
    "class_balanced_weights",
    "distillation_loss",
    "inverse_frequency_weights",
    "ldam_margins",
]


# --------------------------------------------------------------------------- pure weight maths


def _check_counts(class_counts: Sequence[int]) -> list[int]:
    """Validate per-class counts; zero counts become 1 with a warning."""
    try:
        counts = [int(c) for c in class_counts]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"class_counts must be a sequence of ints, got {class_counts!r}") from exc
    if len(counts) < 2:
        raise ConfigError(f"class_counts needs at least 2 classes, got {counts!r}")
    if any(c != float(raw) for c, raw in zip(counts, class_counts)):
        raise ConfigError(f"class_counts must be whole numbers, got {list(class_counts)!r}")
    negative = [i for i, c in enumerate(counts) if c < 0]
    if negative:
        raise ConfigError(
            f"class_counts must be >= 0; classes {negative} are negative in {counts!r}"
        )
    if sum(counts) == 0:
        raise ConfigError(f"class_counts are all zero: {counts!r}")
    zero = [i for i, c in enumerate(counts) if c == 0]
    if zero:
        warnings.warn(
            f"classes {zero} have no training samples (class_counts={counts}); "
            "counting them as 1 for loss weights",
            UserWarning,
            stacklevel=3,
        )
        counts = [max(c, 1) for c in counts]
    return counts


def _check_beta(beta: float) -> float:
    if not 0.0 <= float(beta) < 1.0:
        raise ConfigError(f"beta must be in [0, 1), got {beta!r}")
    return float(beta)


def inverse_frequency_weights(class_counts: Sequence[int]) -> torch.Tensor:
    """Per-class weights ``1 / n_c`` normalised to mean 1 over classes.

    Args:
        class_counts: training-fold samples per class (zeros count as 1, with a warning).

    Returns:
        ``(C,)`` float tensor.
    """
    counts = torch.tensor(_check_counts(class_counts), dtype=torch.float64)
    w = 1.0 / counts
    return (w * len(w) / w.sum()).float()


def class_balanced_weights(class_counts: Sequence[int], *, beta: float = 0.999) -> torch.Tensor:
    """Class-balanced weights of Cui et al. 2019: ``(1 - beta) / (1 - beta^n_c)``, summing to ``C``.

    Args:
        class_counts: training-fold samples per class (zeros count as 1, with a warning).
        beta: in ``[0, 1)``; 0 gives equal weights, towards 1 inverse frequency.

    Returns:
        ``(C,)`` float tensor.
    """
    beta = _check_beta(beta)
    counts = torch.tensor(_check_counts(class_counts), dtype=torch.float64)
    w = (1.0 - beta) / (1.0 - beta**counts)
    return (w * len(w) / w.sum()).float()


def ldam_margins(class_counts: Sequence[int], *, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins of Cao et al. 2019: ``m_c ∝ n_c^(-1/4)`` scaled so the largest is ``max_m``.

    Args:
        class_counts: training-fold samples per class (zeros count as 1, with a warning).
        max_m: the margin of the rarest class (> 0).

    Returns:
        ``(C,)`` float tensor.
    """
    if not float(max_m) > 0.0:
        raise ConfigError(f"max_m must be > 0, got {max_m!r}")
    counts = torch.tensor(_check_counts(class_counts), dtype=torch.float64)
    m = counts**-0.25
    return (m * (max_m / m.max())).float()


# --------------------------------------------------------------------------- modules


class ImbalanceLoss(nn.Module):
    """Base of all losses here: shape checks and a no-op ``set_epoch``."""

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current (0-based) epoch; a no-op unless overridden."""

    def _check(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"{type(self).__name__} was built for {self.num_classes} classes "
                f"(len(class_counts)) but got logits of shape {tuple(logits.shape)}; "
                f"expected (B, {self.num_classes})"
            )
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ConfigError(
                f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}"
            )


class CrossEntropyLoss(ImbalanceLoss):
    """Cross-entropy, optionally class-weighted (PyTorch weighted mean) and label-smoothed.

    Args:
        num_classes: C.
        weight: optional ``(C,)`` class weights.
        label_smoothing: in ``[0, 1)``.
    """

    def __init__(
        self, *, num_classes: int, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes=num_classes)
        self.register_buffer("weight", None if weight is None else weight.float().clone())
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for ``logits (B, C)`` and ``targets (B,)``."""
        self._check(logits, targets)
        return F.cross_entropy(
            logits, targets, weight=self.weight, label_smoothing=self.label_smoothing
        )


class FocalLoss(ImbalanceLoss):
    """Focal loss ``-alpha_y (1 - p_y)^gamma log p_y``, plain mean over the batch.

    Args:
        num_classes: C.
        gamma: focusing parameter (>= 0); 0 gives (alpha-weighted) cross-entropy.
        alpha: optional ``(C,)`` class weights.
    """

    def __init__(
        self, *, num_classes: int, gamma: float = 2.0, alpha: torch.Tensor | None = None
    ) -> None:
        super().__init__(num_classes=num_classes)
        self.gamma = gamma
        self.register_buffer("alpha", None if alpha is None else alpha.float().clone())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for ``logits (B, C)`` and ``targets (B,)``."""
        self._check(logits, targets)
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()).clamp_min(0.0) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * self.alpha[targets]
        return loss.mean()


class BalancedSoftmaxLoss(ImbalanceLoss):
    """Balanced softmax (Ren et al. 2020): cross-entropy on ``logits + log(n_c / N)``.

    Args:
        num_classes: C.
        log_prior: ``(C,)`` log class priors from the training fold.
        label_smoothing: in ``[0, 1)``.
    """

    def __init__(
        self, *, num_classes: int, log_prior: torch.Tensor, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes=num_classes)
        self.register_buffer("log_prior", log_prior.float().clone())
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for ``logits (B, C)`` and ``targets (B,)``."""
        self._check(logits, targets)
        return F.cross_entropy(
            logits + self.log_prior, targets, label_smoothing=self.label_smoothing
        )


class LDAMLoss(ImbalanceLoss):
    """LDAM (Cao et al. 2019) with optional deferred re-weighting (DRW).

    Loss: ``CE(s * (z - m_y e_y), y)`` with class-balanced weights switched on from ``drw_epoch``.

    Cao et al. apply it to cosine logits (normalised features and weights, ``z`` in ``[-1, 1]``) with
    ``s = 30``. microexp's models emit raw, unbounded logits, so the default is ``s = 1``: the logits enter
    the softmax at the scale the model produced (LDAM with zero margins is then exactly cross-entropy) and
    the margins are in logit units. ``s = 30`` on raw logits multiplies the logits, hence the gradients and
    the effective learning rate, by 30 and asks for a margin of ``30 * max_m`` logits: a tiny model that
    cross-entropy trains with SGD at lr 0.1 diverges (tests/test_losses.py).

    Args:
        num_classes: C.
        margins: ``(C,)`` per-class margins (in logit units with ``s = 1``).
        s: logit scale (1 for raw logits; about 30 only for cosine-normalised logits).
        drw_weight: ``(C,)`` weights used from ``drw_epoch`` on.
        drw_epoch: first epoch with weights; ``None`` never re-weights.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        margins: torch.Tensor,
        s: float = 1.0,
        drw_weight: torch.Tensor | None = None,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes)
        self.register_buffer("margins", margins.float().clone())
        drw = None if drw_weight is None else drw_weight.float().clone()
        self.register_buffer("drw_weight", drw)
        self.s = s
        self.drw_epoch = drw_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Record the (0-based) epoch; weights apply when ``epoch >= drw_epoch``."""
        self.epoch = int(epoch)

    @property
    def current_weight(self) -> torch.Tensor | None:
        """The class weights in force this epoch (``None`` before ``drw_epoch``)."""
        if self.drw_epoch is None or self.drw_weight is None or self.epoch < self.drw_epoch:
            return None
        return self.drw_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for ``logits (B, C)`` and ``targets (B,)``."""
        self._check(logits, targets)
        one_hot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        margin = one_hot * self.margins[targets][:, None]
        return F.cross_entropy(self.s * (logits - margin), targets, weight=self.current_weight)


class FocalLDAMLoss(LDAMLoss):
    """Coupled focal + LDAM loss with a prior-regulation term (``focal_ldam``).

    With ``q_i = softmax(s * (z_i - m_{y_i} e_{y_i}))_{y_i}`` the LDAM margin-adjusted probability of the
    target (margins ``m_c = max_m * (n_min / n_c)^(1/4)``, :func:`ldam_margins`), ``w`` the DRW weights in
    force this epoch (all 1 before ``drw_epoch``), ``u`` the uniform distribution over the C classes and
    ``pbar = mean_i softmax(s * z_i)`` the batch-mean prediction on the unmodified logits::

        l_i  = -(1 - q_i)^gamma * log q_i                          (focal modulation of the LDAM term)
        L    = sum_i w_{y_i} l_i / sum_i w_{y_i}  +  reg_weight * KL(u || pbar)
        KL(u || pbar) = sum_c (1/C) log((1/C) / pbar_c) = -log C - (1/C) sum_c log pbar_c   (>= 0)

    The coupling is multiplicative: the focal factor is taken on the margin-adjusted probability, so a
    rare-class sample stays "hard" until it clears its larger margin. LMFLoss (Sadi et al. 2022,
    arXiv:2212.12741) instead adds the two losses, ``a * LDAM + b * Focal``, each on its own logits; Cao et
    al. 2019 (LDAM-DRW) give the margins, the scale and DRW. The regulation term is microexp's own choice
    (no single published definition of the facial-expression papers' term was found): it penalises the
    batch's average prediction drifting away from uniform, the classifier bias towards the majority
    classes that imbalance causes, and it is uniform because micro-expression results are reported as UAR
    / UF1, which weigh every class equally. It depends only on the logits, not on the targets or DRW
    weights, and is 0 exactly when the batch-mean prediction is uniform.

    ``gamma = 0`` and ``reg_weight = 0`` give :class:`LDAMLoss` exactly (same margins, scale, DRW, reduction).

    Args:
        num_classes: C.
        margins: ``(C,)`` per-class margins (in logit units with ``s = 1``).
        gamma: focusing parameter (>= 0).
        reg_weight: weight of the regulation term (>= 0).
        s: logit scale (see :class:`LDAMLoss`; 1 for raw logits).
        drw_weight: ``(C,)`` weights used from ``drw_epoch`` on.
        drw_epoch: first epoch with weights; ``None`` never re-weights.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        margins: torch.Tensor,
        gamma: float = 2.0,
        reg_weight: float = 0.1,
        s: float = 1.0,
        drw_weight: torch.Tensor | None = None,
        drw_epoch: int | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, margins=margins, s=s, drw_weight=drw_weight, drw_epoch=drw_epoch
        )
        self.gamma = gamma
        self.reg_weight = reg_weight

    def regulation(self, logits: torch.Tensor) -> torch.Tensor:
        """``KL(u || mean_i softmax(s * z_i))`` for ``logits (B, C)``: a scalar >= 0."""
        log_p = F.log_softmax(self.s * logits.float(), dim=1)
        log_pbar = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
        return -math.log(self.num_classes) - log_pbar.mean()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for ``logits (B, C)`` and ``targets (B,)``."""
        self._check(logits, targets)
        one_hot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        margin = one_hot * self.margins[targets][:, None]
        log_q = F.log_softmax(self.s * (logits - margin), dim=1).gather(1, targets[:, None]).squeeze(1)
        per_sample = -((1.0 - log_q.exp()).clamp_min(0.0) ** self.gamma) * log_q
        weight = self.current_weight
        if weight is None:
            loss = per_sample.mean()
        else:
            w = weight.to(per_sample.dtype)[targets]
            loss = (w * per_sample).sum() / w.sum()
        if self.reg_weight:
            loss = loss + self.reg_weight * self.regulation(logits)
        return loss


# --------------------------------------------------------------------------- builders


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _check_gamma(gamma: float) -> float:
    if not float(gamma) >= 0.0:
        raise ConfigError(f"gamma must be >= 0, got {gamma!r}")
    return float(gamma)


def _ce(counts: Sequence[int], *, label_smoothing: float = 0.0) -> ImbalanceLoss:
    c = _check_counts(counts)
    return CrossEntropyLoss(num_classes=len(c), label_smoothing=_check_smoothing(label_smoothing))


def _weighted_ce(counts: Sequence[int], *, label_smoothing: float = 0.0) -> ImbalanceLoss:
    w = inverse_frequency_weights(counts)
    return CrossEntropyLoss(
        num_classes=len(w), weight=w, label_smoothing=_check_smoothing(label_smoothing)
    )


def _cb_ce(
    counts: Sequence[int], *, beta: float = 0.999, label_smoothing: float = 0.0
) -> ImbalanceLoss:
    w = class_balanced_weights(counts, beta=beta)
    return CrossEntropyLoss(
        num_classes=len(w), weight=w, label_smoothing=_check_smoothing(label_smoothing)
    )


def _focal(
    counts: Sequence[int], *, gamma: float = 2.0, alpha: Sequence[float] | None = None
) -> ImbalanceLoss:
    c = _check_counts(counts)
    alpha_t = None
    if alpha is not None:
        alpha_t = torch.as_tensor(list(alpha), dtype=torch.float32)
        if alpha_t.shape != (len(c),) or not bool(torch.isfinite(alpha_t).all()):
            raise ConfigError(
                f"alpha must be {len(c)} finite class weights (one per class_counts entry), "
                f"got {list(alpha)!r}"
            )
    return FocalLoss(num_classes=len(c), gamma=_check_gamma(gamma), alpha=alpha_t)


def _cb_focal(counts: Sequence[int], *, gamma: float = 2.0, beta: float = 0.999) -> ImbalanceLoss:
    w = class_balanced_weights(counts, beta=beta)
    return FocalLoss(num_classes=len(w), gamma=_check_gamma(gamma), alpha=w)


def _check_ldam_options(*, s: float, drw_epoch: int | None) -> None:
    if drw_epoch is not None and (
        isinstance(drw_epoch, bool) or int(drw_epoch) != drw_epoch or drw_epoch < 0
    ):
        raise ConfigError(f"drw_epoch must be None or an int >= 0, got {drw_epoch!r}")
    if not float(s) > 0.0:
        raise ConfigError(f"s must be > 0, got {s!r}")


def _ldam(
    counts: Sequence[int],
    *,
    max_m: float = 0.5,
    s: float = 1.0,
    drw_epoch: int | None = None,
    beta: float = 0.999,
) -> ImbalanceLoss:
    _check_ldam_options(s=s, drw_epoch=drw_epoch)
    m = ldam_margins(counts, max_m=max_m)
    w = class_balanced_weights(counts, beta=beta) if drw_epoch is not None else None
    return LDAMLoss(
        num_classes=len(m),
        margins=m,
        s=float(s),
        drw_weight=w,
        drw_epoch=None if drw_epoch is None else int(drw_epoch),
    )


def _focal_ldam(
    counts: Sequence[int],
    *,
    gamma: float = 2.0,
    reg_weight: float = 0.1,
    max_m: float = 0.5,
    s: float = 1.0,
    drw_epoch: int | None = None,
    beta: float = 0.999,
) -> ImbalanceLoss:
    if isinstance(reg_weight, bool) or not isinstance(reg_weight, (int, float)):
        raise ConfigError(f"reg_weight must be a number >= 0, got {reg_weight!r}")
    if not (math.isfinite(reg_weight) and reg_weight >= 0.0):
        raise ConfigError(f"reg_weight must be a finite number >= 0, got {reg_weight!r}")
    _check_ldam_options(s=s, drw_epoch=drw_epoch)
    _check_beta(beta)  # checked even without DRW, so a bad value never waits for drw_epoch to be set
    m = ldam_margins(counts, max_m=max_m)
    w = class_balanced_weights(counts, beta=beta) if drw_epoch is not None else None
    return FocalLDAMLoss(
        num_classes=len(m),
        margins=m,
        gamma=_check_gamma(gamma),
        reg_weight=float(reg_weight),
        s=float(s),
        drw_weight=w,
        drw_epoch=None if drw_epoch is None else int(drw_epoch),
    )


def _balanced_softmax(counts: Sequence[int], *, label_smoothing: float = 0.0) -> ImbalanceLoss:
    c = torch.tensor(_check_counts(counts), dtype=torch.float64)
    log_prior = torch.log(c / c.sum())
    return BalancedSoftmaxLoss(
        num_classes=len(c), log_prior=log_prior, label_smoothing=_check_smoothing(label_smoothing)
    )


_BUILDERS: dict[str, Callable[..., ImbalanceLoss]] = {
    "ce": _ce,
    "weighted_ce": _weighted_ce,
    "focal": _focal,
    "cb_focal": _cb_focal,
    "cb_ce": _cb_ce,
    "ldam": _ldam,
    "balanced_softmax": _balanced_softmax,
    "focal_ldam": _focal_ldam,
}

#: Names accepted by :func:`build_loss`.
LOSSES: tuple[str, ...] = tuple(_BUILDERS)


def _options(builder: Callable[..., ImbalanceLoss]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def loss_options(name: str) -> list[str]:
    """The keyword options that :func:`build_loss` accepts for loss ``name``."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return _options(_BUILDERS[name])


def build_loss(name: str, class_counts: Sequence[int], **kwargs: object) -> ImbalanceLoss:
    """Build a loss by name.

    Args:
        name: one of :data:`LOSSES`.
        class_counts: samples per class in the TRAINING fold only; its length fixes C.
        **kwargs: the loss's options: ``label_smoothing`` (ce, weighted_ce, cb_ce,
            balanced_softmax), ``gamma`` (focal, cb_focal, focal_ldam), ``alpha`` (focal), ``beta``
            (cb_ce, cb_focal, the DRW weights of ldam and focal_ldam), ``max_m``, ``s``, ``drw_epoch``
            (ldam, focal_ldam), ``reg_weight`` (focal_ldam).

    Returns:
        An :class:`ImbalanceLoss` mapping ``(logits (B, C), targets (B,))`` to a scalar.

    Raises:
        ConfigError: unknown name or option, or a bad value.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(str(name), LOSSES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint} Allowed: {', '.join(LOSSES)}")
    builder = _BUILDERS[name]
    allowed = _options(builder)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"loss {name!r} got unknown option(s) {unknown}; allowed: {allowed or 'none'}"
        )
    for key in ("beta", "gamma", "max_m", "s", "label_smoothing"):
        value = kwargs.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"loss {name!r}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"loss {name!r}: {key} must be a finite number, got {kwargs[key]!r}")
    return builder(class_counts, **kwargs)


def distillation_loss(logits: torch.Tensor, soft_targets: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Hinton et al.'s distillation term: ``T^2 KL(soft_targets || softmax(logits / T))``, batch mean.

    ``soft_targets`` ``(B, C)`` are probability rows already at temperature ``T`` (the teachers' tempered
    mean, smoothed); the ``T^2`` keeps the gradient's scale comparable to the hard-label term's.
    """
    if soft_targets.shape != logits.shape:
        raise ValueError(f"soft_targets {tuple(soft_targets.shape)} must match logits {tuple(logits.shape)}")
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, soft_targets, reduction="batchmean") * temperature ** 2
