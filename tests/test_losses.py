"""Imbalance-aware losses against independent references written from the papers' definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from microexp.errors import ConfigError
from microexp.losses import LOSSES, build_loss

COUNTS = [50, 20, 5, 1]
C = len(COUNTS)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g, dtype=torch.float64).float()
    targets = torch.tensor([0, 1, 2, 3] * 4)
    return logits, targets


def ref_log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log softmax written out: z_c - log sum_k exp z_k."""
    return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))


def ref_ce_per_sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -ref_log_softmax(z)[torch.arange(len(y)), y]


def ref_cb_weights(counts: list[int], beta: float) -> list[float]:
    w = [(1 - beta) / (1 - beta**n) for n in counts]
    return [x * len(w) / sum(w) for x in w]


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_scalar_gradient_and_set_epoch(name: str, batch) -> None:
    logits, targets = batch
    loss_fn = build_loss(name, COUNTS)
    loss_fn.set_epoch(0)
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_ce_equals_cross_entropy(batch) -> None:
    logits, targets = batch
    ref = ref_ce_per_sample(logits, targets).mean()
    assert torch.allclose(build_loss("ce", COUNTS)(logits, targets), ref, atol=1e-6)


def test_focal_gamma0_equals_cross_entropy(batch) -> None:
    logits, targets = batch
    loss = build_loss("focal", COUNTS, gamma=0)(logits, targets)
    assert torch.allclose(loss, F.cross_entropy(logits, targets), atol=1e-6)


def test_focal_matches_definition_with_alpha(batch) -> None:
    logits, targets = batch
    alpha = [0.1, 0.2, 0.3, 0.4]
    p = torch.exp(-ref_ce_per_sample(logits, targets))
    ref = torch.stack(
        [-alpha[int(y)] * (1 - p[i]) ** 2 * torch.log(p[i]) for i, y in enumerate(targets)]
    ).mean()
    loss = build_loss("focal", COUNTS, gamma=2.0, alpha=alpha)(logits, targets)
    assert torch.allclose(loss, ref, atol=1e-6)
    # focusing down-weights easy examples: focal < CE when gamma > 0
    assert build_loss("focal", COUNTS)(logits, targets) < F.cross_entropy(logits, targets)


def test_weighted_ce_is_weighted_mean_over_target_weights(batch) -> None:
    logits, targets = batch
    inv = [1 / n for n in COUNTS]
    w = [x * C / sum(inv) for x in inv]  # mean 1 over classes
    assert math.isclose(sum(w) / C, 1.0)
    per = ref_ce_per_sample(logits, targets)
    wt = torch.tensor([w[int(y)] for y in targets])
    ref = (wt * per).sum() / wt.sum()  # PyTorch's weighted mean, documented in losses.py
    loss = build_loss("weighted_ce", COUNTS)(logits, targets)
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(build_loss("weighted_ce", COUNTS).weight, torch.tensor(w))


@pytest.mark.parametrize("beta", [0.9, 0.999, 0.0])
def test_cb_ce_weights_and_value(beta: float, batch) -> None:
    logits, targets = batch
    w = ref_cb_weights(COUNTS, beta)
    loss_fn = build_loss("cb_ce", COUNTS, beta=beta)
    assert torch.allclose(loss_fn.weight, torch.tensor(w, dtype=torch.float32), atol=1e-6)
    assert math.isclose(float(loss_fn.weight.sum()), C, rel_tol=1e-6)
    per = ref_ce_per_sample(logits, targets)
    wt = torch.tensor([w[int(y)] for y in targets])
    assert torch.allclose(loss_fn(logits, targets), (wt * per).sum() / wt.sum(), atol=1e-6)


def test_cb_focal_matches_definition(batch) -> None:
    logits, targets = batch
    w = ref_cb_weights(COUNTS, 0.99)
    p = torch.exp(-ref_ce_per_sample(logits, targets))
    ref = torch.stack(
        [-w[int(y)] * (1 - p[i]) ** 1.5 * torch.log(p[i]) for i, y in enumerate(targets)]
    ).mean()
    loss = build_loss("cb_focal", COUNTS, gamma=1.5, beta=0.99)(logits, targets)
    assert torch.allclose(loss, ref, atol=1e-6)


def test_balanced_softmax_is_ce_on_prior_adjusted_logits(batch) -> None:
    logits, targets = batch
    n = sum(COUNTS)
    adjusted = logits + torch.tensor([math.log(c / n) for c in COUNTS])
    ref = ref_ce_per_sample(adjusted, targets).mean()
    assert torch.allclose(build_loss("balanced_softmax", COUNTS)(logits, targets), ref, atol=1e-6)


def test_ldam_subtracts_margin_from_target_logit_only() -> None:
    counts = [100, 10, 1]
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.3, -0.2, 0.1]])
    targets = torch.tensor([2, 0])
    raw = [n**-0.25 for n in counts]
    m = [x * 0.5 / max(raw) for x in raw]  # rarest class gets max_m = 0.5
    s = 30.0
    ref = 0.0
    for z, y in zip(logits.tolist(), targets.tolist()):
        adj = [s * (v - (m[y] if k == y else 0.0)) for k, v in enumerate(z)]
        ref += -(adj[y] - math.log(sum(math.exp(a) for a in adj)))
    ref /= len(targets)
    loss = build_loss("ldam", counts, s=s)(logits, targets)
    assert math.isclose(float(loss), ref, rel_tol=1e-5)
    assert torch.allclose(build_loss("ldam", counts).margins, torch.tensor(m))


def test_ldam_default_scale_suits_raw_logits() -> None:
    """With its default scale and vanishing margins LDAM is plain cross-entropy on raw logits (s = 30, meant
    for cosine logits in [-1, 1], multiplies them by 30)."""
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 3) * 3, torch.randint(0, 3, (16,))
    ldam = build_loss("ldam", [50, 10, 5], max_m=1e-9)
    assert torch.allclose(ldam(logits, targets), F.cross_entropy(logits, targets), atol=1e-6)


def _train_tiny(loss_fn, steps: int = 150) -> tuple[float, float, float]:
    """A tiny MLP on three imbalanced Gaussian blobs, SGD lr 0.1 momentum 0.9: (first, last loss, UAR)."""
    torch.manual_seed(0)
    counts = [200, 40, 10]
    means = torch.randn(3, 16)
    x = torch.cat([means[c] + torch.randn(n, 16) for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,))
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        pred = model(x).argmax(1)
    uar = sum(float(((pred == c) & (y == c)).sum() / (y == c).sum()) for c in range(3)) / 3
    return sum(losses[:10]) / 10, sum(losses[-10:]) / 10, uar


def test_ldam_with_its_default_scale_trains_like_cross_entropy() -> None:
    counts = [200, 40, 10]
    _, ce_last, ce_uar = _train_tiny(build_loss("ce", counts))
    first, last, uar = _train_tiny(build_loss("ldam", counts))  # the default s
    assert math.isfinite(last) and last < first / 4 and uar > 0.9 and ce_uar > 0.9
    first_30, last_30, _ = _train_tiny(build_loss("ldam", counts, s=30.0))  # the old default diverges here
    assert not last_30 < first_30


def test_ldam_drw_switches_weights_at_drw_epoch(batch) -> None:
    logits, targets = batch
    loss_fn = build_loss("ldam", COUNTS, drw_epoch=3, beta=0.99, s=1.0)
    loss_fn.set_epoch(2)
    assert loss_fn.current_weight is None
    before = loss_fn(logits, targets)
    loss_fn.set_epoch(3)
    w = torch.tensor(ref_cb_weights(COUNTS, 0.99), dtype=torch.float32)
    assert torch.allclose(loss_fn.current_weight, w, atol=1e-6)
    after = loss_fn(logits, targets)
    unweighted = build_loss("ldam", COUNTS, s=1.0)
    unweighted.set_epoch(10)
    assert unweighted.current_weight is None  # no drw_epoch: never re-weighted
    assert torch.allclose(before, unweighted(logits, targets))
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "cb_ce", "balanced_softmax"])
def test_label_smoothing_matches_torch(name: str, batch) -> None:
    logits, targets = batch
    loss_fn = build_loss(name, COUNTS, label_smoothing=0.1)
    if name == "balanced_softmax":
        n = sum(COUNTS)
        z = logits + torch.tensor([math.log(c / n) for c in COUNTS])
        ref = F.cross_entropy(z, targets, label_smoothing=0.1)
    else:
        weight = getattr(loss_fn, "weight", None)
        ref = F.cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    assert torch.allclose(loss_fn(logits, targets), ref, atol=1e-6)
    assert not torch.allclose(build_loss(name, COUNTS)(logits, targets), ref)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_label_smoothing_range(value: float) -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_loss("ce", COUNTS, label_smoothing=value)


def test_unknown_name_lists_names_and_close_match() -> None:
    with pytest.raises(ConfigError) as err:
        build_loss("focall", COUNTS)
    msg = str(err.value)
    assert "focall" in msg and "did you mean focal" in msg
    for name in LOSSES:
        assert name in msg


def test_unknown_option_names_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"label_smoothing.*allowed.*gamma"):
        build_loss("focal", COUNTS, label_smoothing=0.1)


def test_class_count_mismatch_with_logits(batch) -> None:
    logits, targets = batch
    loss_fn = build_loss("cb_ce", [10, 5, 1])
    with pytest.raises(ConfigError, match=r"3 classes.*\(16, 4\)"):
        loss_fn(logits, targets)


def test_zero_count_treated_as_one_with_warning(batch) -> None:
    logits, targets = batch
    with pytest.warns(UserWarning, match=r"classes \[2\] have no training samples"):
        a = build_loss("balanced_softmax", [50, 20, 0, 1])
    b = build_loss("balanced_softmax", [50, 20, 1, 1])
    assert torch.allclose(a(logits, targets), b(logits, targets))


@pytest.mark.parametrize(
    "counts", [[10, -1, 3], [0, 0, 0], [5], [1.5, 2, 3], "abc"], ids=str
)
def test_bad_class_counts(counts) -> None:
    with pytest.raises(ConfigError, match="class_counts"):
        build_loss("weighted_ce", counts)


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match="beta"):
        build_loss("cb_ce", COUNTS, beta=1.0)
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("focal", COUNTS, gamma=-1)
    with pytest.raises(ConfigError, match="alpha"):
        build_loss("focal", COUNTS, alpha=[1.0, 2.0])
    with pytest.raises(ConfigError, match="drw_epoch"):
        build_loss("ldam", COUNTS, drw_epoch=-2)


def test_loss_weights_are_buffers_in_state_dict() -> None:
    loss_fn = build_loss("ldam", COUNTS, drw_epoch=1)
    keys = set(loss_fn.state_dict())
    assert {"margins", "drw_weight"} <= keys


def test_non_numeric_option_is_named() -> None:
    with pytest.raises(ConfigError, match="gamma must be a number"):
        build_loss("focal", COUNTS, gamma="2")
