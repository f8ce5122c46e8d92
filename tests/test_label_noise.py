"""microexp.label_noise: EAC erasing/CAM consistency, template re-labelling, SCN-style confidence weighting
and uncertainty-feature mixing, each checked on tiny hand-built tensors against hand values or an independent
reference written from the definition."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from microexp import label_noise as ln
from microexp.errors import ConfigError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clips(b: int = 6, c: int = 3, t: int = 4, h: int = 16, w: int = 20) -> torch.Tensor:
    """Clips with no zero value, so erased pixels are exactly the zeros of the output."""
    x = torch.randn(b, c, t, h, w, generator=_gen(123))
    return x.sign() * (x.abs() + 0.1)


# --------------------------------------------------------------------------- random erasing


def test_random_erase_one_box_same_over_all_frames_and_channels():
    videos = _clips()
    out = ln.random_erase_clips(videos, generator=_gen(0))
    assert out.shape == videos.shape
    for b in range(videos.shape[0]):
        erased = out[b] != videos[b]  # (C, T, H, W)
        assert bool((out[b][erased] == 0).all()), "erased values must be 0"
        frame = erased[0, 0]
        assert bool((erased == frame).all()), "the box must be the same in every channel and frame"
        rows, cols = frame.any(1), frame.any(0)
        assert bool((frame == rows[:, None] & cols[None, :]).all()), "the erased region must be a box"
        r, c = rows.nonzero().squeeze(1), cols.nonzero().squeeze(1)
        assert r.numel() > 0 and c.numel() > 0, "every clip gets a box with p=1"
        assert r.max() - r.min() + 1 == r.numel() and c.max() - c.min() + 1 == c.numel()  # contiguous
        area = frame.sum().item() / frame.numel()
        assert 0.01 <= area <= 0.3  # scale (0.02, 0.25) up to the rounding of h and w


def test_random_erase_leaves_input_unchanged_and_is_reproducible():
    videos = _clips()
    before = videos.clone()
    a = ln.random_erase_clips(videos, generator=_gen(7))
    assert torch.equal(videos, before)
    b = ln.random_erase_clips(videos, generator=_gen(7))
    assert torch.equal(a, b)
    c = ln.random_erase_clips(videos, generator=_gen(8))
    assert not torch.equal(a, c)


def test_random_erase_probability_and_options():
    videos = _clips()
    assert torch.equal(ln.random_erase_clips(videos, generator=_gen(0), p=0.0), videos)
    half = ln.random_erase_clips(_clips(b=40), generator=_gen(0), p=0.5)
    erased = (half == 0).flatten(1).any(1).sum().item()
    assert 8 <= erased <= 32
    # a scale fixed at 0.25 with a square ratio gives a 8x8 box on a 16x16 frame
    fixed = ln.random_erase_clips(_clips(h=16, w=16), generator=_gen(1), scale=(0.25, 0.25), ratio=(1, 1))
    assert bool(((fixed == 0).flatten(1).sum(1) == 3 * 4 * 64).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=(0.3, 0.1)), "scale"),
        (dict(scale=(0.0, 0.1)), r"scale\[0\]"),
        (dict(scale=(0.1, 1.5)), r"scale\[1\]"),
        (dict(ratio=(0.0, 1.0)), r"ratio\[0\]"),
        (dict(ratio=0.5), "ratio"),
        (dict(p=1.5), "p must be in"),
        (dict(generator=0), "generator"),
    ],
)
def test_random_erase_rejects_bad_options(kwargs, match):
    kwargs = {"generator": _gen(0), **kwargs}
    with pytest.raises(ConfigError, match=match):
        ln.random_erase_clips(_clips(b=1), **kwargs)


def test_random_erase_rejects_a_frame_batch():
    with pytest.raises(ValueError, match=r"videos must have shape \(B, C, T, H, W\)"):
        ln.random_erase_clips(torch.zeros(2, 3, 8, 8), generator=_gen(0))


# --------------------------------------------------------------------------- CAMs and EAC loss


@pytest.mark.parametrize("spatial", [(2, 3, 5), (3, 5)])
def test_cams_against_einsum_and_pooled_logits(spatial):
    g = _gen(1)
    features = torch.randn(2, 6, *spatial, generator=g)
    fc = torch.nn.Linear(6, 4)
    cams = ln.class_activation_maps(features, fc.weight)
    letters = "thw"[-len(spatial):]
    ref = torch.einsum(f"bd{letters},kd->bk{letters}", features, fc.weight)
    assert cams.shape == (2, 4, *spatial)
    torch.testing.assert_close(cams, ref)
    # spatial mean of the maps + bias = the classifier on average-pooled features
    logits = fc(features.flatten(2).mean(-1))
    torch.testing.assert_close(cams.flatten(2).mean(-1) + fc.bias, logits)


def test_cams_reject_mismatched_weight():
    with pytest.raises(ValueError, match=r"weight must have shape \(K, 6\)"):
        ln.class_activation_maps(torch.zeros(1, 6, 3, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="features"):
        ln.class_activation_maps(torch.zeros(1, 6), torch.zeros(4, 6))


def test_eac_loss_hand_value():
    cams = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # (1, 1, 1, 3)
    flipped = torch.tensor([[[[0.0, 2.0, 5.0]]]])
    # flipped back: [5, 2, 0]; squared errors (1-5)^2, 0, (3-0)^2 -> mean 25 / 3
    assert ln.eac_consistency_loss(cams, flipped).item() == pytest.approx(25.0 / 3.0)


def test_eac_loss_zero_for_flip_consistent_maps_positive_otherwise():
    g = _gen(2)
    cams = torch.randn(2, 3, 2, 4, 5, generator=g)
    assert ln.eac_consistency_loss(cams, cams.flip(-1)).item() == 0.0
    symmetric = cams + cams.flip(-1)
    assert ln.eac_consistency_loss(symmetric, symmetric).item() == 0.0
    assert ln.eac_consistency_loss(cams, cams).item() > 0.0
    # a per-position classifier commutes with the flip: features straight from the clip give loss 0
    clip = torch.randn(2, 6, 2, 4, 5, generator=g)
    weight = torch.randn(3, 6, generator=g)
    a = ln.class_activation_maps(clip, weight)
    b = ln.class_activation_maps(clip.flip(-1), weight)
    assert ln.eac_consistency_loss(a, b).item() == pytest.approx(0.0, abs=1e-12)


def test_eac_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="cams_of_flipped"):
        ln.eac_consistency_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))


# --------------------------------------------------------------------------- templates and re-labelling


def _probs(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_class_templates_ignore_unconfident_clips_and_classes_without_confident_clips():
    features = torch.tensor([[3.0, 4.0], [2.0, 0.0], [-5.0, 0.0], [0.0, 9.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 0, 1, 2])
    probabilities = _probs(
        (0.9, 0.05, 0.05),  # confident class 0
        (0.7, 0.2, 0.1),  # confident class 0
        (0.3, 0.6, 0.1),  # class 0 but unconfident: ignored
        (0.5, 0.4, 0.1),  # class 1 but unconfident: class 1 has no template
        (0.0, 0.2, 0.8),  # confident class 2
    )
    templates, has = ln.class_templates(
        features, labels, probabilities, num_classes=3, min_confidence=0.6
    )
    assert has.tolist() == [True, False, True]
    torch.testing.assert_close(templates[0], torch.tensor([(0.6 + 1.0) / 2, 0.8 / 2]))
    torch.testing.assert_close(templates[1], torch.zeros(2))
    torch.testing.assert_close(templates[2], torch.tensor([0.0, -1.0]))


def test_class_templates_validate():
    f, y, p = torch.zeros(2, 3), torch.tensor([0, 1]), torch.full((2, 2), 0.5)
    with pytest.raises(ConfigError, match="min_confidence"):
        ln.class_templates(f, y, p, num_classes=2, min_confidence=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        ln.class_templates(f, y, p, num_classes=3, min_confidence=0.5)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\)"):
        ln.class_templates(f, torch.tensor([0, 2]), p, num_classes=2, min_confidence=0.5)


# Templates: class 0 at (1, 0), class 1 at (0, 1), class 2 none.
_TEMPLATES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
_HAS = torch.tensor([True, True, False])
_FEATURES = torch.tensor([[0.1, 1.0], [0.1, 1.0], [0.9, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
_LABELS = torch.tensor([0, 0, 0, 1, 0, 2])
_PROBS = _probs(
    (0.05, 0.9, 0.05),  # a: near T1, confidently predicted 1 -> relabelled to 1
    (0.4, 0.5, 0.1),  # b: same features, prediction below min_confidence -> kept
    (0.05, 0.9, 0.05),  # c: only a little closer to T1 (d 0.257 vs 0.331): ratio 1 yes, ratio 2 no
    (0.05, 0.9, 0.05),  # d: prediction equals the label -> kept
    (0.02, 0.03, 0.95),  # e: predicted class 2 has no template -> kept
    (0.95, 0.03, 0.02),  # f: own label 2 has no template -> kept
)


@pytest.mark.parametrize("ratio, expected", [(2.0, [1, 0, 0, 1, 0, 2]), (1.0, [1, 0, 1, 1, 0, 2])])
def test_relabel_changes_exactly_the_clips_the_rule_names(ratio, expected):
    new = ln.relabel(
        _FEATURES, _LABELS, _PROBS, _TEMPLATES, _HAS, min_confidence=0.6, distance_ratio=ratio
    )
    assert new.dtype == torch.long
    assert new.tolist() == expected
    assert _LABELS.tolist() == [0, 0, 0, 1, 0, 2]  # input untouched


@pytest.mark.parametrize("ratio", [1e9, math.inf])
def test_relabel_huge_ratio_keeps_labels(ratio):
    new = ln.relabel(
        _FEATURES, _LABELS, _PROBS, _TEMPLATES, _HAS, min_confidence=0.6, distance_ratio=ratio
    )
    assert torch.equal(new, _LABELS)


def test_relabel_matches_a_loop_reference_and_never_relabels_below_min_confidence():
    g = _gen(5)
    n, k, d = 60, 4, 3
    features = torch.randn(n, d, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    probabilities = torch.softmax(3 * torch.randn(n, k, generator=g), dim=1)
    templates, has = ln.class_templates(
        features, labels, probabilities, num_classes=k, min_confidence=0.5
    )
    has[3] = False
    new = ln.relabel(
        features, labels, probabilities, templates, has, min_confidence=0.7, distance_ratio=1.5
    )

    def dist(x, t):
        return 1.0 - float(x @ t) / (float(x.norm()) * float(t.norm()))

    expected = []
    for x, y, p in zip(features, labels.tolist(), probabilities):
        c = int(p.argmax())
        ok = c != y and float(p[c]) >= 0.7 and bool(has[c]) and bool(has[y])
        expected.append(c if ok and 1.5 * dist(x, templates[c]) < dist(x, templates[y]) else y)
    assert new.tolist() == expected
    changed = new != labels
    assert changed.any(), "the random case should change some labels"
    assert bool((probabilities.max(1).values[changed] >= 0.7).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(distance_ratio=0.5), "distance_ratio must be >= 1"),
        (dict(distance_ratio=math.nan), "distance_ratio"),
        (dict(distance_ratio="2"), "distance_ratio must be a number"),
        (dict(min_confidence=-0.1), "min_confidence"),
    ],
)
def test_relabel_rejects_bad_options(kwargs, match):
    kwargs = {"min_confidence": 0.6, "distance_ratio": 2.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ln.relabel(_FEATURES, _LABELS, _PROBS, _TEMPLATES, _HAS, **kwargs)


def test_relabel_rejects_bad_templates():
    with pytest.raises(ValueError, match="templates"):
        ln.relabel(_FEATURES, _LABELS, _PROBS, _TEMPLATES[:2], _HAS, min_confidence=0.6, distance_ratio=2)
    with pytest.raises(ValueError, match="has_template"):
        ln.relabel(
            _FEATURES, _LABELS, _PROBS, _TEMPLATES, _HAS.long(), min_confidence=0.6, distance_ratio=2
        )


# --------------------------------------------------------------------------- confidence weighting


def test_confidence_weighting_forward_is_sigmoid_of_linear():
    torch.manual_seed(0)
    module = ln.ConfidenceWeighting(in_features=5)
    x = torch.randn(4, 5)
    alpha = module(x)
    assert alpha.shape == (4,)
    torch.testing.assert_close(alpha, torch.sigmoid(x @ module.fc.weight[0] + module.fc.bias[0]))
    assert bool(((alpha > 0) & (alpha < 1)).all())
    with pytest.raises(ValueError, match=r"features must have shape \(B, 5\)"):
        module(torch.randn(4, 6))


@pytest.mark.parametrize("margin, expected_reg", [(0.15, 0.0), (0.6, 0.6 - (2.2 / 3 - 0.3))])
def test_confidence_weighted_loss_against_reference(margin, expected_reg):
    logits = torch.tensor(
        [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, -2.0], [0.0, -0.5, 2.5]]
    )
    targets = torch.tensor([0, 2, 1, 0, 2])
    alpha = torch.tensor([0.9, 0.2, 0.8, 0.5, 0.4], requires_grad=True)
    cls, reg = ln.confidence_weighted_loss(
        logits, targets, alpha, loss_fn=F.cross_entropy, beta=0.7, margin=margin
    )
    # reference from SCN's formula: -1/N sum log softmax(alpha_i z_i)[y_i]
    ref = 0.0
    for z, y, a in zip(logits.tolist(), targets.tolist(), alpha.tolist()):
        scaled = [a * v for v in z]
        ref -= scaled[y] - math.log(sum(math.exp(v) for v in scaled))
    assert cls.item() == pytest.approx(ref / 5, rel=1e-6)
    # M = floor(0.7 * 5) = 3: high = mean(0.9, 0.8, 0.5), low = mean(0.4, 0.2)
    assert reg.item() == pytest.approx(expected_reg, abs=1e-6)
    (cls + reg).backward()
    assert alpha.grad is not None and bool(alpha.grad.ne(0).any())


def test_confidence_weighted_loss_passes_scaled_logits_and_module_options():
    seen = {}

    def spy(z, y):
        seen["z"] = z
        return z.sum()

    logits, targets = torch.ones(4, 2), torch.tensor([0, 1, 0, 1])
    alpha = torch.tensor([0.25, 0.5, 0.75, 1.0])
    module = ln.ConfidenceWeighting(in_features=3, beta=0.5, margin=0.9)
    cls, reg = module.loss(logits, targets, alpha, loss_fn=spy)
    torch.testing.assert_close(seen["z"], alpha[:, None].expand(4, 2))
    assert cls.item() == pytest.approx(5.0)
    # M = 2: high mean 0.875, low mean 0.375, margin 0.9 -> 0.4
    assert reg.item() == pytest.approx(0.4)
    one = ln.confidence_weighted_loss(
        logits[:1], targets[:1], alpha[:1], loss_fn=F.cross_entropy, beta=0.7, margin=0.15
    )
    assert one[1].item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=1.0), "beta"),
        (dict(beta=0.0), "beta"),
        (dict(margin=-0.1), "margin"),
        (dict(in_features=0), "in_features"),
    ],
)
def test_confidence_weighting_rejects_bad_options(kwargs, match):
    kwargs = {"in_features": 4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ln.ConfidenceWeighting(**kwargs)


# --------------------------------------------------------------------------- feature mixing


def _batch(b: int = 10, d: int = 4):
    g = _gen(9)
    return torch.randn(b, d, generator=g), torch.randint(0, 3, (b,), generator=g), torch.rand(b, generator=g)


def test_feature_mix_mixes_only_the_most_uncertain_fraction():
    features, targets, uncertainty = _batch()
    out = ln.uncertainty_feature_mix(
        features, targets, uncertainty, fraction=0.3, alpha=1.0, generator=_gen(0)
    )
    chosen = set(uncertainty.argsort(descending=True)[:3].tolist())
    assert set(out.mixed.nonzero().squeeze(1).tolist()) == chosen
    assert bool(((out.lam >= 0) & (out.lam <= 1)).all())
    for i in range(10):
        if i not in chosen:
            assert out.lam[i].item() == 1.0
            assert torch.equal(out.features[i], features[i]) and out.targets_b[i] == targets[i]
            continue
        lam = out.lam[i]
        rest = (out.features[i] - lam * features[i]) / (1 - lam)  # = the partner's feature
        partner = [j for j in range(10) if torch.allclose(rest, features[j], atol=1e-5)]
        assert len(partner) == 1 and partner[0] != i
        assert out.targets_b[i] == targets[partner[0]]
    assert torch.equal(out.targets_a, targets)


def test_feature_mix_reproducible_and_seed_dependent():
    features, targets, uncertainty = _batch()
    kw = dict(fraction=0.5, alpha=0.4)
    a = ln.uncertainty_feature_mix(features, targets, uncertainty, generator=_gen(3), **kw)
    b = ln.uncertainty_feature_mix(features, targets, uncertainty, generator=_gen(3), **kw)
    c = ln.uncertainty_feature_mix(features, targets, uncertainty, generator=_gen(4), **kw)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a.lam, c.lam)


def test_feature_mix_edge_cases_and_gradient():
    features, targets, uncertainty = _batch()
    none = ln.uncertainty_feature_mix(
        features, targets, uncertainty, fraction=0.0, alpha=1.0, generator=_gen(0)
    )
    assert torch.equal(none.features, features) and not none.mixed.any() and bool((none.lam == 1).all())
    single = ln.uncertainty_feature_mix(
        features[:1], targets[:1], uncertainty[:1], fraction=1.0, alpha=1.0, generator=_gen(0)
    )
    assert torch.equal(single.features, features[:1]) and single.lam.item() == 1.0
    x = features.clone().requires_grad_(True)
    out = ln.uncertainty_feature_mix(x, targets, uncertainty, fraction=1.0, alpha=2.0, generator=_gen(0))
    assert bool(out.mixed.all())
    out.features.sum().backward()
    assert x.grad is not None
    many = ln.uncertainty_feature_mix(
        torch.randn(400, 2), torch.zeros(400, dtype=torch.long), torch.rand(400), fraction=1.0, alpha=2.0,
        generator=_gen(1),
    )
    assert many.lam.mean().item() == pytest.approx(0.5, abs=0.05)  # Beta(2, 2) has mean 1/2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fraction=1.5), "fraction"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=math.inf), "alpha"),
        (dict(generator=None), "generator"),
    ],
)
def test_feature_mix_rejects_bad_options(kwargs, match):
    features, targets, uncertainty = _batch()
    kwargs = {"fraction": 0.5, "alpha": 1.0, "generator": _gen(0), **kwargs}
    with pytest.raises(ConfigError, match=match):
        ln.uncertainty_feature_mix(features, targets, uncertainty, **kwargs)


def test_mixed_loss_against_hand_combination():
    features, targets, uncertainty = _batch()
    mixed = ln.uncertainty_feature_mix(
        features, targets, uncertainty, fraction=0.5, alpha=1.0, generator=_gen(2)
    )
    logits = torch.randn(10, 3, generator=_gen(6))
    per = lambda z, y: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    loss = ln.mixed_loss(logits, mixed, per)
    ref = sum(
        lam * F.cross_entropy(logits[i : i + 1], mixed.targets_a[i : i + 1])
        + (1 - lam) * F.cross_entropy(logits[i : i + 1], mixed.targets_b[i : i + 1])
        for i, lam in enumerate(mixed.lam.tolist())
    ) / 10
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction='none'"):
        ln.mixed_loss(logits, mixed, F.cross_entropy)


# --------------------------------------------------------------------------- layering


def test_label_noise_imports_only_torch_torchvision_numpy_and_errors():
    tree = ast.parse(Path(ln.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            roots.add(node.module)
    internal = {m for m in roots if m.split(".")[0] == "microexp"}
    assert internal == {"microexp.errors"}
    external = {m.split(".")[0] for m in roots} - {"microexp", "__future__"}
    assert external <= {"torch", "torchvision", "numpy", "math", "collections", "typing"}


def test_feature_mix_partner_is_never_the_clip_itself():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1])
    for seed in range(5):
        out = ln.uncertainty_feature_mix(
            features, targets, torch.tensor([0.5, 0.2]), fraction=1.0, alpha=1.0, generator=_gen(seed)
        )
        lam = out.lam
        expected = torch.stack([lam[0] * features[0] + (1 - lam[0]) * features[1],
                                lam[1] * features[1] + (1 - lam[1]) * features[0]])
        torch.testing.assert_close(out.features, expected)
        assert out.targets_b.tolist() == [1, 0]
