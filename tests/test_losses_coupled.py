"""The coupled focal + LDAM loss with its regulation term (``focal_ldam``) against a per-sample reference
written from the definition in its docstring, in plain Python floats."""

from __future__ import annotations

import math

import pytest
import torch

from microexp.errors import ConfigError
from microexp.losses import FocalLDAMLoss, LDAMLoss, build_loss, loss_options

COUNTS = [50, 20, 5, 1]
C = len(COUNTS)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = (2.0 * torch.randn(12, C, generator=g, dtype=torch.float64)).float()
    targets = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3, 2, 0, 1, 0])
    return logits, targets


def ref_margins(counts: list[int], max_m: float) -> list[float]:
    return [max_m * (min(counts) / n) ** 0.25 for n in counts]


def ref_cb_weights(counts: list[int], beta: float) -> list[float]:
    w = [(1 - beta) / (1 - beta**n) for n in counts]
    return [x * len(w) / sum(w) for x in w]


def ref_softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ref_focal_ldam(
    logits: torch.Tensor,
    targets: torch.Tensor,
    counts: list[int],
    *,
    gamma: float,
    reg_weight: float,
    max_m: float = 0.5,
    s: float = 1.0,
    weights: list[float] | None = None,
) -> float:
    """The docstring's formula, one sample at a time."""
    m = ref_margins(counts, max_m)
    num = den = 0.0
    probs = []
    for z, y in zip(logits.tolist(), targets.tolist()):
        adjusted = [s * (v - (m[y] if k == y else 0.0)) for k, v in enumerate(z)]
        q = ref_softmax(adjusted)[y]
        w = 1.0 if weights is None else weights[y]
        num += w * -((1.0 - q) ** gamma) * math.log(q)
        den += w
        probs.append(ref_softmax([s * v for v in z]))
    pbar = [sum(p[c] for p in probs) / len(probs) for c in range(len(counts))]
    kl = sum((1 / len(counts)) * math.log((1 / len(counts)) / pc) for pc in pbar)
    return num / den + reg_weight * kl


@pytest.mark.parametrize(
    ("gamma", "reg_weight", "max_m", "s"),
    [(2.0, 0.1, 0.5, 1.0), (1.0, 0.0, 0.3, 1.0), (0.0, 0.5, 0.5, 2.0), (3.0, 1.0, 1.0, 1.0)],
)
def test_matches_per_sample_reference(gamma, reg_weight, max_m, s, batch) -> None:
    logits, targets = batch
    loss_fn = build_loss("focal_ldam", COUNTS, gamma=gamma, reg_weight=reg_weight, max_m=max_m, s=s)
    ref = ref_focal_ldam(logits, targets, COUNTS, gamma=gamma, reg_weight=reg_weight, max_m=max_m, s=s)
    loss = loss_fn(logits, targets)
    assert loss.ndim == 0
    assert math.isclose(float(loss), ref, rel_tol=1e-5)


def test_drw_weighted_mean_and_switch(batch) -> None:
    logits, targets = batch
    loss_fn = build_loss("focal_ldam", COUNTS, gamma=2.0, reg_weight=0.2, drw_epoch=2, beta=0.99)
    loss_fn.set_epoch(1)
    plain = ref_focal_ldam(logits, targets, COUNTS, gamma=2.0, reg_weight=0.2)
    assert math.isclose(float(loss_fn(logits, targets)), plain, rel_tol=1e-5)
    loss_fn.set_epoch(2)
    weighted = ref_focal_ldam(
        logits, targets, COUNTS, gamma=2.0, reg_weight=0.2, weights=ref_cb_weights(COUNTS, 0.99)
    )
    assert math.isclose(float(loss_fn(logits, targets)), weighted, rel_tol=1e-5)
    assert not math.isclose(plain, weighted, rel_tol=1e-3)


def test_reduction_is_the_mean_of_the_per_sample_terms(batch) -> None:
    """Without DRW and regulation the loss of a batch is the mean of its single-sample losses."""
    logits, targets = batch
    loss_fn = build_loss("focal_ldam", COUNTS, gamma=2.0, reg_weight=0.0)
    singles = torch.stack([loss_fn(logits[i : i + 1], targets[i : i + 1]) for i in range(len(targets))])
    assert torch.allclose(loss_fn(logits, targets), singles.mean(), atol=1e-6)
    doubled = loss_fn(torch.cat([logits, logits]), torch.cat([targets, targets]))
    assert torch.allclose(doubled, loss_fn(logits, targets), atol=1e-6)  # a mean, not a sum


@pytest.mark.parametrize("drw_epoch", [None, 0])
@pytest.mark.parametrize("s", [1.0, 30.0])
def test_gamma0_reg0_is_ldam_exactly(drw_epoch, s, batch) -> None:
    logits, targets = batch
    opts = {"max_m": 0.4, "s": s, "drw_epoch": drw_epoch, "beta": 0.99}
    coupled = build_loss("focal_ldam", COUNTS, gamma=0.0, reg_weight=0.0, **opts)
    ldam = build_loss("ldam", COUNTS, **opts)
    assert isinstance(coupled, FocalLDAMLoss) and isinstance(ldam, LDAMLoss)
    for epoch in (0, 3):
        coupled.set_epoch(epoch)
        ldam.set_epoch(epoch)
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        la, lb = coupled(a, targets), ldam(b, targets)
        assert torch.allclose(la, lb, rtol=1e-6, atol=1e-6)
        la.backward()
        lb.backward()
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_focusing_and_regulation_change_the_loss(batch) -> None:
    logits, targets = batch
    base = build_loss("focal_ldam", COUNTS, gamma=0.0, reg_weight=0.0)(logits, targets)
    focused = build_loss("focal_ldam", COUNTS, gamma=2.0, reg_weight=0.0)(logits, targets)
    regulated = build_loss("focal_ldam", COUNTS, gamma=0.0, reg_weight=1.0)(logits, targets)
    assert focused < base  # (1 - q)^gamma < 1 down-weights every sample
    assert regulated > base  # KL(u || pbar) > 0 for a non-uniform batch mean


def test_regulation_is_zero_for_a_uniform_batch_mean_and_positive_otherwise() -> None:
    loss_fn = build_loss("focal_ldam", COUNTS, reg_weight=1.0)
    assert isinstance(loss_fn, FocalLDAMLoss)
    # two samples whose softmaxes average to uniform: each a permutation of the other's
    z = torch.tensor([[2.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 2.0]])
    assert abs(float(loss_fn.regulation(z))) < 1e-6
    assert abs(float(loss_fn.regulation(torch.zeros(3, C)))) < 1e-6
    collapsed = torch.tensor([[5.0, 0.0, 0.0, 0.0]] * 4)
    p = ref_softmax([5.0, 0.0, 0.0, 0.0])
    ref = sum(0.25 * math.log(0.25 / pc) for pc in p)
    assert math.isclose(float(loss_fn.regulation(collapsed)), ref, rel_tol=1e-5) and ref > 1.0
    # a constant added to every logit of a sample changes no probability, so not the term either
    assert float(loss_fn.regulation(collapsed + 7.0)) == pytest.approx(ref, rel=1e-5)


def test_gradient_is_finite_and_nonzero_even_for_confident_logits(batch) -> None:
    logits, targets = batch
    loss_fn = build_loss("focal_ldam", COUNTS, gamma=2.0, reg_weight=0.5, drw_epoch=0)
    for scale in (1.0, 50.0):  # 50: softmax saturates, q -> 0 or 1
        z = (scale * logits).clone().requires_grad_(True)
        loss = loss_fn(z, targets)
        assert torch.isfinite(loss)
        loss.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_build_loss_by_name_with_class_counts() -> None:
    loss_fn = build_loss("focal_ldam", [100, 10, 1], gamma=1.5, reg_weight=0.3, max_m=0.8, s=2.0)
    assert isinstance(loss_fn, FocalLDAMLoss)
    assert loss_fn.num_classes == 3 and loss_fn.gamma == 1.5
    assert loss_fn.reg_weight == 0.3 and loss_fn.s == 2.0
    assert torch.allclose(loss_fn.margins, torch.tensor(ref_margins([100, 10, 1], 0.8)))
    assert float(loss_fn.margins.max()) == pytest.approx(0.8)  # the rarest class gets max_m
    assert set(loss_options("focal_ldam")) == {"gamma", "reg_weight", "max_m", "s", "drw_epoch", "beta"}
    with pytest.raises(ConfigError, match=r"3 classes.*\(2, 4\)"):
        loss_fn(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_defaults_and_buffers_in_state_dict() -> None:
    loss_fn = build_loss("focal_ldam", COUNTS, drw_epoch=1)
    assert loss_fn.gamma == 2.0 and loss_fn.reg_weight == 0.1 and loss_fn.s == 1.0
    assert {"margins", "drw_weight"} <= set(loss_fn.state_dict())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("gamma", -1.0),
        ("reg_weight", -0.1),
        ("reg_weight", float("nan")),
        ("reg_weight", "0.1"),
        ("reg_weight", True),
        ("max_m", 0.0),
        ("s", -1.0),
        ("drw_epoch", -2),
        ("drw_epoch", 1.5),
        ("beta", 1.0),
    ],
)
def test_bad_options_raise_config_error_naming_them(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option) as err:
        build_loss("focal_ldam", COUNTS, **{option: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"label_smoothing.*allowed.*reg_weight"):
        build_loss("focal_ldam", COUNTS, label_smoothing=0.1)


def test_bad_class_counts_are_named() -> None:
    with pytest.raises(ConfigError, match="class_counts"):
        build_loss("focal_ldam", [10])
