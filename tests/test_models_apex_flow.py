"""The apex-flow family (one onset->apex flow, input (B, 3, 1, H, W)): STSTNet, Off-ApexNet, HTNet.

Shapes and exact parameter counts from the layer definitions; T != 1 refused; the STSTNet authors' key
layout loads through ``create_model(pretrained=...)`` and gives the logits of a forward written here from
the paper's definition; HTNet's region crops (default, custom and per-sample centres, borders); each model
fits a tiny batch and passes gradients."""

from __future__ import annotations

import math

import pytest
import torch

from microexp.models import count_params, create_model, load_pretrained, model_info
from microexp.models._registry import check_model_arguments
from microexp.models.apex_flow import DEFAULT_REGION_CENTRES, ststnet_feature_side

NAMES = ("ststnet", "off_apexnet", "htnet")


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _flow(batch: int = 2, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 1, size, size, generator=torch.Generator().manual_seed(seed))


# -- shapes, parameter counts, the family's contract ---------------------------------------------------------


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def test_registered_in_their_family():
    for name in NAMES:
        info = model_info(name)
        assert (info.family, info.modality, info.cpu_friendly) == ("apex_flow", "apex_flow", True)
        spec = create_model(name, num_classes=3).spec
        assert (spec.num_frames, spec.input_size, spec.in_channels, spec.flow_channels) == (1, 28, 3, 3)
        assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)


def test_ststnet_parameter_count_and_names():
    model = create_model("ststnet", num_classes=3)
    by_layer = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    assert {k: v for k, v in by_layer.items() if v} == {
        "conv1": _conv(3, 3, 3), "conv2": _conv(3, 5, 3), "conv3": _conv(3, 8, 3),
        "bn1": 6, "bn2": 10, "bn3": 16, "fc": _linear(5 * 5 * 16, 3),
    }
    assert count_params(model) == 84 + 140 + 224 + 32 + 1203 == 1683
    assert count_params(create_model("ststnet", num_classes=7)) == 1683 - 1203 + _linear(400, 7) == 3287


def test_off_apexnet_and_htnet_parameter_counts():
    stream = _conv(1, 6, 5) + _conv(6, 16, 5)
    off = 2 * stream + _linear(2 * 16 * 7 * 7, 1024) + _linear(1024, 1024) + _linear(1024, 7)
    assert count_params(create_model("off_apexnet", num_classes=7)) == off == 2_668_575

    dim, ff, tokens = 64, 128, 7 * 7
    block = _linear(dim, 3 * dim) + _linear(dim, dim) + _linear(dim, ff) + _linear(ff, dim) + 2 * 2 * dim
    aggregate = _conv(dim, dim, 3) + 2 * dim
    ht = _conv(3, dim, 2) + 4 * tokens * dim + 6 * block + 2 * aggregate + 2 * dim + _linear(dim, 7)
    assert count_params(create_model("htnet", num_classes=7)) == ht == 288_903


@pytest.mark.parametrize("name, features", [
    ("ststnet", (2, 16, 10, 10)), ("off_apexnet", (2, 2 * 16 * 7 * 7)), ("htnet", (2, 16, 64)),
])
def test_shapes(name, features):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    x = _flow()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert tuple(feats.shape) == features
        assert model(x).shape == (2, 3)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert create_model(name, num_classes=0)(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_other_input_sizes(name):
    model = create_model(name, num_classes=4, input_size=64).eval()
    with torch.no_grad():
        assert model(_flow(size=64)).shape == (2, 4)
    if model.fixed_size:  # the first FC layer follows input_size
        with pytest.raises(ValueError, match="H = W = 64"):
            model(_flow(size=28))


def test_ststnet_fc_follows_input_size():
    assert ststnet_feature_side(28) == 5
    for size in (8, 28, 32, 64, 112):
        model = create_model("ststnet", num_classes=3, input_size=size).eval()
        side = ststnet_feature_side(size)
        assert model.fc.in_features == model.num_features == 16 * side * side
        with torch.no_grad():
            assert model.forward_features(_flow(size=size)).shape[-1] // 2 == side


@pytest.mark.parametrize("name", NAMES)
def test_num_frames_other_than_one_is_refused(name):
    for frames in (0, 2, 8):
        with pytest.raises(ValueError, match=rf"{name}: num_frames: expected 1 .*got {frames}"):
            create_model(name, num_classes=3, num_frames=frames)
    with pytest.raises(ValueError, match="num_frames: expected 1"):  # what the recipe check runs (meta device)
        check_model_arguments(name, num_frames=8, input_size=28)
    assert check_model_arguments(name, num_frames=1, input_size=28).family == "apex_flow"
    with pytest.raises(ValueError, match="input_size: expected an int >= 8"):
        create_model(name, num_classes=3, input_size=4)
    model = create_model(name, num_classes=3)
    with pytest.raises(ValueError, match="T = 1"):
        model(torch.zeros(1, 3, 2, 28, 28))
    with pytest.raises(ValueError, match=r"expected input \(B, 3, T, H, W\)"):
        model(torch.zeros(1, 2, 1, 28, 28))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).train()
    x = _flow(batch=4).requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key
    per_channel = x.grad.abs().sum(dim=(0, 2, 3, 4))
    if name == "off_apexnet":  # u and v streams only: the strain channel is not read
        assert per_channel[0] > 0 and per_channel[1] > 0 and per_channel[2] == 0
    else:
        assert (per_channel > 0).all()


# -- STSTNet: the authors' weights ---------------------------------------------------------------------------

#: the state-dict layout of the authors' public STSTNet code (torch.save(model.state_dict()))
AUTHORS_KEYS = [
    f"{layer}.{part}"
    for layer, parts in [
        ("conv1", ("weight", "bias")), ("conv2", ("weight", "bias")), ("conv3", ("weight", "bias")),
        ("bn1", ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        ("bn2", ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        ("bn3", ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        ("fc", ("weight", "bias")),
    ]
    for part in parts
]


def _authors_state_dict(num_classes: int = 3) -> dict[str, torch.Tensor]:
    """A state dict in the authors' key layout, with values that are not any initialisation's."""
    g = torch.Generator().manual_seed(7)
    sd: dict[str, torch.Tensor] = {}
    for i, width in ((1, 3), (2, 5), (3, 8)):
        sd[f"conv{i}.weight"] = torch.randn(width, 3, 3, 3, generator=g) * 0.3
        sd[f"conv{i}.bias"] = torch.randn(width, generator=g) * 0.1
        sd[f"bn{i}.weight"] = 1 + 0.2 * torch.randn(width, generator=g)
        sd[f"bn{i}.bias"] = 0.1 * torch.randn(width, generator=g)
        sd[f"bn{i}.running_mean"] = torch.rand(width, generator=g)
        sd[f"bn{i}.running_var"] = 0.5 + torch.rand(width, generator=g)
        sd[f"bn{i}.num_batches_tracked"] = torch.tensor(1234)
    sd["fc.weight"] = torch.randn(num_classes, 400, generator=g) * 0.05
    sd["fc.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return sd


def _ststnet_reference(image: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """The paper's network in plain functional ops, eval mode: ``(B, 3, 28, 28)`` -> ``(B, classes)``."""
    F = torch.nn.functional
    streams = []
    for i in (1, 2, 3):
        y = F.relu(F.conv2d(image, sd[f"conv{i}.weight"], sd[f"conv{i}.bias"], padding=2))
        shape = (1, -1, 1, 1)  # batch norm with the running statistics, written out
        y = (y - sd[f"bn{i}.running_mean"].view(shape)) / torch.sqrt(sd[f"bn{i}.running_var"].view(shape) + 1e-5)
        y = y * sd[f"bn{i}.weight"].view(shape) + sd[f"bn{i}.bias"].view(shape)
        streams.append(F.max_pool2d(y, kernel_size=3, stride=3, padding=1))  # dropout: identity in eval
    y = F.avg_pool2d(torch.cat(streams, dim=1), kernel_size=2, stride=2)
    assert y.shape[1:] == (16, 5, 5)
    return y.flatten(1) @ sd["fc.weight"].T + sd["fc.bias"]


def test_ststnet_state_dict_has_the_authors_layout():
    assert list(create_model("ststnet", num_classes=3).state_dict()) == AUTHORS_KEYS


def test_ststnet_loads_the_authors_weights_with_their_classifier(tmp_path):
    sd = _authors_state_dict()
    path = tmp_path / "subject_01.pth"
    torch.save(sd, path)
    model = create_model("ststnet", num_classes=3, num_frames=1, input_size=28, pretrained=path).eval()
    own = model.state_dict()
    for key in AUTHORS_KEYS:
        assert torch.equal(own[key], sd[key]), key

    fresh = create_model("ststnet", num_classes=3)
    result = load_pretrained(fresh, path)
    assert (result.missing, result.unexpected, result.mismatched, result.classifier) == ([], [], [], [])
    assert sorted(result.loaded) == sorted(AUTHORS_KEYS)

    image = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(3)) * 255  # bgr255 values
    with torch.no_grad():
        logits = model(image.unsqueeze(2))
    torch.testing.assert_close(logits, _ststnet_reference(image, sd), rtol=1e-5, atol=1e-4)


def test_ststnet_with_other_classes_keeps_a_fresh_classifier(tmp_path):
    sd = _authors_state_dict(num_classes=3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": sd}, path)
    model = create_model("ststnet", num_classes=5)
    before = model.fc.weight.detach().clone()
    result = load_pretrained(model, path)
    assert sorted(result.mismatched) == ["fc.bias", "fc.weight"] and result.unexpected == []
    assert torch.equal(model.fc.weight, before) and model.fc.weight.shape == (5, 400)
    assert torch.equal(model.conv3.weight, sd["conv3.weight"])
    assert torch.equal(model.bn2.running_var, sd["bn2.running_var"])


@pytest.mark.parametrize("name", ["off_apexnet", "htnet"])
def test_other_models_reload_their_own_weights_with_a_fresh_classifier(name, tmp_path):
    torch.manual_seed(0)
    source = create_model(name, num_classes=3)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    target = create_model(name, num_classes=3)
    result = load_pretrained(target, path)
    assert result.missing == [] and result.unexpected == [] and sorted(result.classifier) == [
        "head.fc.bias", "head.fc.weight"]
    assert not torch.equal(target.head.fc.weight, source.head.fc.weight)


# -- HTNet regions -------------------------------------------------------------------------------------------


def test_htnet_default_regions_are_exact_pixel_windows_at_28():
    model = create_model("htnet", num_classes=3)
    image = _flow(batch=2)[:, :, 0]
    regions = model.crop_regions(image)
    assert regions.shape == (2, 4, 3, 14, 14)
    windows = [(3, 1), (3, 13), (14, 3), (14, 11)]  # (top row, left column) of each 14x14 region
    for r, (top, left) in enumerate(windows):
        torch.testing.assert_close(regions[:, r], image[:, :, top:top + 14, left:left + 14], rtol=0, atol=1e-5)
    assert [tuple(round(v * 28) for v in c) for c in DEFAULT_REGION_CENTRES] == [(8, 10), (20, 10), (10, 21), (18, 21)]


def test_htnet_custom_centres_and_borders():
    centres = [[0.5, 0.5], [0.0, 0.0], [1.0, 0.25], [0.25, 1.0]]
    model = create_model("htnet", num_classes=3, region_centres=centres)
    assert model.spec.kwargs["region_centres"] == centres
    rebuilt = create_model("htnet", **model.spec.kwargs)
    torch.testing.assert_close(rebuilt.region_centres, model.region_centres)
    image = _flow(batch=1)[:, :, 0]
    regions = model.crop_regions(image)
    torch.testing.assert_close(regions[:, 0], image[:, :, 7:21, 7:21], rtol=0, atol=1e-5)
    # a corner centre: the half outside the face repeats the border, the rest is the face's corner
    corner = regions[0, 1]
    torch.testing.assert_close(corner[:, 7:, 7:], image[0, :, :7, :7], rtol=0, atol=1e-5)
    torch.testing.assert_close(corner[:, :8, :8], image[0, :, :1, :1].expand(3, 8, 8), rtol=0, atol=1e-5)
    with torch.no_grad():
        assert torch.isfinite(model(image.unsqueeze(2))).all()


def test_htnet_bad_arguments():
    for centres, match in (([[0.5, 0.5]] * 3, "four"), ([[0.5, 1.5]] * 4, "fractions in"), ([[0.5]] * 4, "pairs")):
        with pytest.raises(ValueError, match=match):
            create_model("htnet", num_classes=3, region_centres=centres)
    with pytest.raises(ValueError, match="region_size: 15 is not a multiple of patch_size=2"):
        create_model("htnet", num_classes=3, region_size=15)
    with pytest.raises(ValueError, match="num_heads: 3 does not divide dim=64"):
        create_model("htnet", num_classes=3, num_heads=3)
    with pytest.raises(ValueError, match="face_depth: expected an int >= 0"):
        create_model("htnet", num_classes=3, face_depth=-1)
    shallow = create_model("htnet", num_classes=3, region_depth=1, pair_depth=0, face_depth=1)
    assert (len(shallow.region_blocks), len(shallow.pair_blocks), len(shallow.face_blocks)) == (1, 0, 1)
    assert shallow(_flow()).shape == (2, 3)
    with pytest.raises(ValueError, match=r"region_fraction: expected a number in \(0, 1\]"):
        create_model("htnet", num_classes=3, region_fraction=0.0)


def test_htnet_per_sample_centres():
    torch.manual_seed(0)
    model = create_model("htnet", num_classes=3).eval()
    x = _flow(batch=2)
    default = model.region_centres.expand(2, 4, 2).clone()
    moved = default.clone()
    moved[1] += torch.tensor([0.1, -0.05])
    with torch.no_grad():
        torch.testing.assert_close(model(x, region_centres=default), model(x))
        out = model(x, region_centres=moved)
        torch.testing.assert_close(out[0], model(x[:1])[0])  # sample 0 kept the default centres
        assert not torch.allclose(out[1], model(x[1:])[0])
        regions = model.crop_regions(x[:, :, 0], moved)
    # sample 1's left eye moved 2.8 px right and 1.4 px up: its samples fall between pixels 3.8 + k
    # (columns 3 and 4: weights 0.2, 0.8) and 1.6 + k (rows 1 and 2: weights 0.4, 0.6)
    flow = x[1, :, 0]
    columns = lambda rows: 0.2 * flow[:, rows, 3:17] + 0.8 * flow[:, rows, 4:18]  # noqa: E731
    expected = 0.4 * columns(slice(1, 15)) + 0.6 * columns(slice(2, 16))
    torch.testing.assert_close(regions[1, 0], expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"region_centres: expected a tensor of shape \(2, 4, 2\)"):
        model(x, region_centres=default[:, :3])


# -- learning ------------------------------------------------------------------------------------------------


def _tiny_labelled_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """12 flows around 0.5 (min-max scaled), 3 classes moving different parts of the face: u up around
    the eyes, v up around the lips, u down around the lips (all readable by u and v alone)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(12) % 3
    x = 0.5 + 0.1 * torch.randn(12, 3, 28, 28, generator=g)
    x[labels == 0, 0, 3:17] += 0.3
    x[labels == 1, 1, 14:] += 0.3
    x[labels == 2, 0, 14:] -= 0.3
    return x.unsqueeze(2), labels


@pytest.mark.parametrize("name, lr", [("ststnet", 1e-2), ("off_apexnet", 1e-3), ("htnet", 1e-3)])
def test_fits_a_tiny_batch(name, lr):
    """30 Adam steps on the batch: the loss (eval mode, before and after) falls clearly, all clips right."""
    torch.manual_seed(0)
    x, labels = _tiny_labelled_batch()
    model = create_model(name, num_classes=3)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(x), labels).item()

    first = eval_loss()
    model.train()
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimiser.step()
    last = eval_loss()
    assert math.isfinite(last) and last < 0.3 * first, (first, last)
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == labels).all()


@pytest.mark.parametrize("name", ["ststnet", "off_apexnet", "htnet"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_apex_flow_models_export(name, fmt, tmp_path):
    """export_checkpoint checks the exported model against the eager one; htnet's region grid must trace."""
    from microexp.checkpoint import save_checkpoint
    from microexp.data.pipeline import ClipPipeline
    from microexp.data.transforms import TransformSpec
    from microexp.inference.export import export_checkpoint

    model = create_model(name, num_classes=3, num_frames=1, input_size=28)
    pipeline = ClipPipeline(modality="apex_flow", transform=TransformSpec(size=28))
    save_checkpoint(tmp_path / "m.pt", model=model, class_names=["negative", "positive", "surprise"],
                    data={"pipeline": pipeline.to_dict(), "class_map": "megc3"}, epoch=0, fold=None)
    exported = export_checkpoint(tmp_path / "m.pt", fmt=fmt, out=tmp_path / f"m.{fmt}")
    assert exported.input_shape == (1, 3, 1, 28, 28)
