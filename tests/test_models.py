"""Every registered model: forward on a tiny input of its modality, backward, checkpoint round trip;
plus the registry, the shared interface and the ``microexp models`` command."""

from __future__ import annotations

import json

import pytest
import torch

from microexp.models import (
    FAMILIES,
    MODALITIES,
    ModelSpec,
    VideoClassifier,
    count_params,
    create_model,
    get_model_spec,
    list_models,
    model_info,
)
from microexp.models._registry import model_arguments
from microexp.models.pooling import CNN_POOLS
from microexp.models.transformer import TOKEN_POOLS

ALL_MODELS = list_models()
CPU_MODELS = list_models(cpu_friendly=True)
STANDARD_MODELS = list_models(cpu_friendly=False)
#: small enough for every architecture (/32 downsampling, 16 px patches, MViT pooling) and fast on 2 cores
TINY = dict(num_frames=4, input_size=64)
#: apex-flow models read one 28 px flow (T = 1)
APEX_TINY = dict(num_frames=1, input_size=28)
NUM_CLASSES = 5


def tiny_kwargs(name):
    return APEX_TINY if model_info(name).modality == "apex_flow" else TINY


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def tiny_input(spec: ModelSpec, *, batch: int = 2, device: str | torch.device = "cpu") -> torch.Tensor:
    """A ``(B, C, T, H, W)`` input of the model's modality (RGB then flow channels)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, spec.in_channels, spec.num_frames, spec.input_size, spec.input_size, generator=g)
    return x.to(device)


def _model_params(names, slow):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def _pool_variants():
    """``(name, pool)`` for every non-default pooling head of every model with a ``pool`` argument."""
    out = []
    for name in ALL_MODELS:
        default = model_arguments(name).get("pool")
        if default is None:
            continue
        choices = TOKEN_POOLS if model_info(name).family == "transformer" else CNN_POOLS
        assert default in choices, (name, default)
        for pool in choices:
            if pool != default:
                marks = [pytest.mark.slow] if name in STANDARD_MODELS else []
                out.append(pytest.param(name, pool, marks=marks, id=f"{name}-{pool}"))
    return out


POOL_VARIANTS = _pool_variants()


def test_registry_lists_all_families():
    assert len(ALL_MODELS) >= 10
    families = {model_info(n).family for n in ALL_MODELS}
    assert families == set(FAMILIES)
    for family in FAMILIES:  # each family has a CPU-friendly member
        assert list_models(family=family, cpu_friendly=True), family
    assert {model_info(n).modality for n in ALL_MODELS} == set(MODALITIES)
    assert list_models("tsm_*") == ["tsm_r18", "tsm_r50", "tsm_tiny"]


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match="tsm_r18") as info:
        create_model("tsm_r19", num_classes=7)
    assert "unknown model 'tsm_r19'" in str(info.value)


def test_unknown_or_bad_argument_is_a_value_error():
    with pytest.raises(ValueError, match="did you mean 'fold_div'"):
        create_model("tsm_tiny", num_classes=7, fold_dv=4)
    with pytest.raises(ValueError, match="plain value"):
        create_model("tsm_tiny", num_classes=7, attention=object())
    with pytest.raises(ValueError, match="fusion"):
        create_model("two_stream_tiny", num_classes=7, fusion="sum")
    with pytest.raises(ValueError, match="fusion_weight"):
        create_model("two_stream_tiny", num_classes=7, fusion_weight=1.5)
    with pytest.raises(ValueError, match="apex_index"):
        create_model("frame_tiny", num_classes=7, num_frames=4, apex_index=4)


@pytest.mark.parametrize("name", _model_params(ALL_MODELS, slow=set(STANDARD_MODELS)))
def test_model_contract(name, tmp_path):
    """Forward (B, num_classes), finite, backward reaches every parameter, exact checkpoint round trip."""
    _check_contract(name, tmp_path)


@pytest.mark.parametrize(("name", "pool"), POOL_VARIANTS)
def test_model_contract_with_each_pooling_head(name, pool, tmp_path):
    """The same contract for every pooling head option (attentive patch/token, DAN cross attention)."""
    model = _check_contract(name, tmp_path, pool=pool)
    assert model.head.pool == {"mean": "avg"}.get(pool, pool)


def test_pool_variants_cover_the_families():
    covered = {(model_info(p.values[0]).family, p.values[1]) for p in POOL_VARIANTS}
    for family in ("3dcnn", "tsm", "frame", "two_stream"):
        assert {(family, "attentive_patch"), (family, "cross_attention")} <= covered, family
    assert {("transformer", "attentive_token"), ("transformer", "mean")} <= covered
    assert {"r3d_tiny", "r3d_18", "tsm_tiny", "tsm_r18", "tsm_r50", "timesformer_tiny"} <= {
        p.values[0] for p in POOL_VARIANTS}


def _check_contract(name, tmp_path, **extra):
    torch.manual_seed(0)
    tiny = tiny_kwargs(name)
    model = create_model(name, num_classes=NUM_CLASSES, **tiny, **extra)
    spec, info = model.spec, model_info(name)
    assert all(spec.kwargs[k] == v for k, v in extra.items())
    assert isinstance(model, VideoClassifier)
    assert (spec.name, spec.family, spec.modality) == (name, info.family, info.modality)
    assert (spec.num_frames, spec.input_size) == (tiny["num_frames"], tiny["input_size"])
    assert spec.kwargs["num_classes"] == model.num_classes == NUM_CLASSES
    expected_channels = {"rgb": 3, "flow": spec.flow_channels, "rgb+flow": 3 + spec.flow_channels,
                         "apex_flow": spec.flow_channels}[spec.modality]
    assert spec.in_channels == expected_channels == len(spec.mean) == len(spec.std)

    x = tiny_input(spec)
    model.train()
    out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    no_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad():
        expected = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, model.num_features)

    path = tmp_path / "ckpt.pt"
    torch.save({"model_name": spec.name, "model_kwargs": dict(spec.kwargs), "spec": spec.to_dict(),
                "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    rebuilt = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    assert ModelSpec.from_dict(ckpt["spec"]) == rebuilt.spec == spec
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)

    model.reset_classifier(3)
    assert model.num_classes == 3 and model.spec.kwargs["num_classes"] == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    return model


@pytest.mark.parametrize("name", STANDARD_MODELS)
def test_standard_model_shapes_at_default_size(name):
    """Standard configurations at their published input size, shapes only (meta device, no compute)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=NUM_CLASSES)
    x = torch.empty(2, model.spec.in_channels, model.spec.num_frames, model.spec.input_size,
                    model.spec.input_size, device="meta")
    with torch.no_grad():
        assert model.eval()(x).shape == (2, NUM_CLASSES)


def test_get_model_spec_matches_model():
    for name in ("tsm_tiny", "two_stream_tiny", "frame_tiny"):
        assert get_model_spec(name, num_classes=7) == create_model(name, num_classes=7).spec
    spec = get_model_spec("two_stream_r18", flow_channels=3)
    assert (spec.in_channels, spec.flow_channels, spec.modality) == (6, 3, "rgb+flow")
    assert spec.mean[3:] == (0.0, 0.0, 0.0) and spec.std[3:] == (1.0, 1.0, 1.0)


def test_spec_is_plain_and_rebuilds():
    model = create_model("two_stream_tiny", num_classes=7, fusion="feature", flow_channels=3)
    data = model.spec.to_dict()
    assert json.loads(json.dumps(data)) == data
    again = create_model(data["name"], **data["kwargs"])
    assert again.spec == model.spec


def test_wrong_input_shape_is_a_clear_error():
    model = create_model("tsm_tiny", num_classes=7, **TINY)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, T, H, W\)"):
        model(torch.zeros(1, 2, 4, 64, 64))
    with pytest.raises(ValueError, match="T = 4"):
        model(torch.zeros(1, 3, 5, 64, 64))
    vit = create_model("timesformer_tiny", num_classes=7, **TINY)
    with pytest.raises(ValueError, match="H = W = 64"):
        vit(torch.zeros(1, 3, 4, 32, 32))


def test_frame_model_reads_only_the_apex_frame():
    torch.manual_seed(0)
    model = create_model("frame_tiny", num_classes=7, num_frames=5).eval()
    assert model.spec.apex_index == 2
    x = torch.randn(1, 3, 5, 64, 64)
    y = x.clone()
    y[:, :, [0, 1, 3, 4]] = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(y))
        y[:, :, 2] += 1
        assert not torch.equal(model(x), model(y))
    last = create_model("frame_tiny", num_classes=7, num_frames=5, apex_index=4)
    assert last.spec.apex_index == 4 and last.spec.kwargs["apex_index"] == 4


def test_two_stream_fusions():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 64, 64)
    fixed = create_model("two_stream_tiny", num_classes=7, fusion_weight=0.7, **TINY).eval()
    with torch.no_grad():
        feats = fixed.forward_features(x)
        assert feats.spatial.shape[:3] == (2, 128, 4) and feats.temporal.shape[:2] == (2, 128)
        s, t = fixed.forward_streams(feats)
        torch.testing.assert_close(fixed(x), 0.7 * s + 0.3 * t)
    learnt = create_model("two_stream_tiny", num_classes=7, **TINY)
    assert learnt.fusion.weight.item() == pytest.approx(0.5)
    learnt(x).sum().backward()
    assert learnt.fusion.logit.grad is not None
    feature = create_model("two_stream_tiny", num_classes=7, fusion="feature", **TINY)
    assert feature(x).shape == (2, 7) and feature.classifier_prefixes() == ("head.fc.",)


def test_two_stream_flow_channels_are_split_from_rgb():
    """Changing only the flow channels changes only the temporal stream's features."""
    torch.manual_seed(0)
    model = create_model("two_stream_tiny", num_classes=7, flow_channels=3, **TINY).eval()
    x = torch.randn(1, 6, 4, 64, 64)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(y)
    assert torch.equal(a.spatial, b.spatial) and not torch.equal(a.temporal, b.temporal)


def test_cbam_attention_option():
    for name in ("tsm_tiny", "r3d_tiny", "frame_tiny", "two_stream_tiny"):
        plain = create_model(name, num_classes=7, **TINY)
        cbam = create_model(name, num_classes=7, attention="cbam", **TINY)
        assert 0 < count_params(cbam) - count_params(plain) < 0.1 * count_params(plain)
        assert cbam(tiny_input(cbam.spec, batch=1)).shape == (1, 7)


def test_num_classes_zero_returns_features():
    model = create_model("r3d_tiny", num_classes=0, **TINY)
    assert model(tiny_input(model.spec)).shape == (2, model.num_features)


def _run_cli(argv, capsys):
    from microexp.cli import models as cli_models

    parser = __import__("argparse").ArgumentParser(prog="microexp")
    sub = parser.add_subparsers(dest="command")
    cli_models.add_parser(sub)
    args = parser.parse_args(argv)
    assert cli_models.run(args) == 0
    return capsys.readouterr().out


def test_cli_models_json(capsys):
    rows = json.loads(_run_cli(["models", "--json", "--cpu"], capsys))
    assert [r["name"] for r in rows] == CPU_MODELS
    for row in rows:
        assert {"name", "family", "modality", "params"} <= set(row)
        assert row["family"] in FAMILIES and row["modality"] in MODALITIES
    tsm = next(r for r in rows if r["name"] == "tsm_tiny")
    assert tsm["params"] == count_params(create_model("tsm_tiny", num_classes=7))


def test_cli_models_table(capsys):
    out = _run_cli(["models", "--family", "tsm"], capsys)
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["name", "family", "modality", "input", "params", "cpu"]
    assert [line.split()[0] for line in lines[2:]] == ["tsm_r18", "tsm_r50", "tsm_tiny"]
    assert "23.52M" in out and "yes" in lines[-1]


@pytest.mark.slow
def test_cli_models_json_lists_every_model(capsys):
    rows = json.loads(_run_cli(["models", "--json"], capsys))
    assert [r["name"] for r in rows] == ALL_MODELS
