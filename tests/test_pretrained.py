"""Loading local weights: torchvision 2D/3D ResNets and MViT, pytorchvideo X3D, ViT-style transformers and
our own checkpoints; missing/unexpected keys reported, classifier replaced. Nothing is downloaded: the
source state dicts are made here by the libraries' own constructors (weights=None)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torchvision

from microexp.models import create_model, load_pretrained
from microexp.models.layers import ResNet2d
from microexp.models.pretrained import cross_modality_conv_weight, inflate_conv_weight


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _save(obj, tmp_path, name="weights.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _tiny_resnet2d_state(num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A torchvision-format 2D ResNet state dict (conv1, bn1, layer1-4, fc) of the tiny architecture."""
    torch.manual_seed(1)
    sd = ResNet2d(arch="resnet_tiny").state_dict()
    sd["fc.weight"] = torch.randn(num_classes, 128)
    sd["fc.bias"] = torch.randn(num_classes)
    return sd


@pytest.mark.parametrize("name", ["frame_r18", "tsm_r18"])
def test_torchvision_resnet18_into_2d_backbones(name, tmp_path):
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    path = _save(sd, tmp_path)
    model = create_model(name, num_classes=7)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    own = model.state_dict()
    assert torch.equal(own["backbone.conv1.weight"], sd["conv1.weight"])
    conv = "backbone.layer3.1.conv1.net.weight" if name.startswith("tsm") else "backbone.layer3.1.conv1.weight"
    assert torch.equal(own[conv], sd["layer3.1.conv1.weight"])
    assert model.head.fc.weight.shape == (7, 512)


def test_create_model_pretrained_argument_and_log(tmp_path, caplog):
    path = _save(_tiny_resnet2d_state(), tmp_path)
    with caplog.at_level(logging.INFO, logger="microexp.models.pretrained"):
        model = create_model("tsm_tiny", num_classes=3, pretrained=path, attention="cbam")
    assert torch.equal(model.backbone.layer2[0].conv1.net.weight, _tiny_resnet2d_state()["layer2.0.conv1.weight"])
    assert "loaded" in caplog.text and "classifier replaced" in caplog.text
    assert "keys missing" in caplog.text and "layer1.1.mlp" in caplog.text  # the CBAM modules
    assert "pretrained" not in model.spec.kwargs


def test_two_stream_cross_modality_init(tmp_path):
    sd = _tiny_resnet2d_state()
    path = _save({"state_dict": sd}, tmp_path)
    model = create_model("two_stream_tiny", num_classes=7, num_frames=4, flow_channels=3)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert torch.equal(model.spatial.conv1.weight, sd["conv1.weight"])
    assert model.temporal.conv1.weight.shape == (16, 12, 7, 7)
    expected = sd["conv1.weight"].mean(1, keepdim=True).expand(16, 12, 7, 7)
    assert torch.equal(model.temporal.conv1.weight, expected)
    assert torch.equal(model.temporal.layer4[0].conv2.weight, sd["layer4.0.conv2.weight"])
    flow = create_model("flow_tiny", num_classes=7, num_frames=4)
    assert load_pretrained(flow, path).missing == []
    assert torch.equal(flow.backbone.conv1.weight, cross_modality_conv_weight(sd["conv1.weight"], 8))


def test_torchvision_r3d_18_loads_exactly(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.video.r3d_18(weights=None).eval()
    path = _save(tv.state_dict(), tmp_path)
    model = create_model("r3d_18", num_classes=7).eval()
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        tv.fc = torch.nn.Identity()
        theirs = tv(x)
    torch.testing.assert_close(ours, theirs)


def test_resnet2d_inflated_into_r3d(tmp_path):
    sd = _tiny_resnet2d_state()
    path = _save(sd, tmp_path)
    model = create_model("r3d_tiny", num_classes=7)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert torch.equal(model.stem[0].weight, inflate_conv_weight(sd["conv1.weight"], 3))
    torch.testing.assert_close(model.stem[0].weight.sum(2), sd["conv1.weight"])
    assert torch.equal(model.layer2[0].conv1[0].weight, inflate_conv_weight(sd["layer2.0.conv1.weight"], 3))
    assert torch.equal(model.layer2[0].downsample[0].weight[:, :, 0], sd["layer2.0.downsample.0.weight"])
    assert torch.equal(model.layer3[0].conv2[1].running_var, sd["layer3.0.bn2.running_var"])


def _pytorchvideo(module: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return __import__(f"pytorchvideo.models.{module}", fromlist=["x"])


def test_pytorchvideo_x3d(tmp_path):
    torch.manual_seed(0)
    net = _pytorchvideo("x3d").create_x3d(
        input_clip_length=4, input_crop_size=64, model_num_class=400, head_activation=None
    ).eval()
    path = _save({"model_state": net.state_dict(), "epoch": 10}, tmp_path)
    model = create_model("x3d_xs", num_classes=7, num_frames=4, input_size=64).eval()
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(net.blocks[5].proj(ours), net(x), rtol=1e-4, atol=1e-5)


def test_torchvision_mvit(tmp_path):
    """A torchvision MViTv2 weight file (a plain state dict, as torchvision's ``mvit_v2_s-*.pth``) with
    mvit_tiny's blocks loads into mvit_tiny and reproduces torchvision's logits."""
    from torchvision.models.video import MViT
    from torchvision.models.video.mvit import MSBlockConfig

    import microexp.models.tv_video  # noqa: F401  registers mvit_tiny

    torch.manual_seed(0)
    k3 = [3, 3, 3]
    blocks = [MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=k3, kernel_kv=k3, stride_q=sq,
                            stride_kv=skv)
              for h, i, o, sq, skv in [(1, 48, 48, [1, 1, 1], [1, 4, 4]), (2, 48, 96, [1, 2, 2], [1, 2, 2]),
                                       (2, 96, 96, [1, 1, 1], [1, 2, 2]), (4, 96, 192, [1, 2, 2], [1, 1, 1])]]
    net = MViT(spatial_size=(64, 64), temporal_size=4, block_setting=blocks, residual_pool=True,
               residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=400).eval()
    path = _save(net.state_dict(), tmp_path, "mvit_v2_tiny.pth")
    model = create_model("mvit_tiny", num_classes=7, num_frames=4, input_size=64).eval()
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(net.head(ours), net(x), rtol=1e-4, atol=1e-5)


def _vit_state(dim: int, depth: int, grid: int, patch: int = 16, classes: int = 1000) -> dict[str, torch.Tensor]:
    """A state dict with timm ``VisionTransformer`` key names and shapes."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
          "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
          "norm.weight": r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim), "head.bias": r(classes)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim),
                   p + "attn.qkv.bias": r(3 * dim), p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": r(dim), p + "norm2.bias": r(dim), p + "mlp.fc1.weight": r(4 * dim, dim),
                   p + "mlp.fc1.bias": r(4 * dim), p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim)})
    return sd


def test_image_vit_into_timesformer(tmp_path):
    sd = _vit_state(dim=128, depth=4, grid=14)  # a 224 px ViT into a 64 px, 4-frame TimeSformer
    path = _save({"model": sd}, tmp_path)
    model = create_model("timesformer_tiny", num_classes=7, num_frames=4, input_size=64)
    result = load_pretrained(model, path)
    expected_missing = {"time_embed"} | {f"blocks.{i}.temporal_fc.{p}" for i in range(4) for p in ("weight", "bias")}
    assert set(result.missing) == expected_missing
    assert result.unexpected == [] and result.mismatched == []
    block = model.blocks[2]
    assert torch.equal(block.attn.in_proj_weight, sd["blocks.2.attn.qkv.weight"])
    assert torch.equal(block.attn.out_proj.weight, sd["blocks.2.attn.proj.weight"])
    assert torch.equal(block.temporal_attn.in_proj_bias, sd["blocks.2.attn.qkv.bias"])  # temporal starts as spatial
    assert torch.equal(block.temporal_norm1.weight, sd["blocks.2.norm1.weight"])
    assert model.pos_embed.shape == (1, 1 + 16, 128)
    assert torch.equal(model.pos_embed[:, 0], sd["pos_embed"][:, 0])
    assert model(torch.randn(1, 3, 4, 64, 64)).shape == (1, 7)


def test_timm_vit_key_names_into_timesformer(tmp_path):
    """Where timm is installed, its real ViT key names map onto TimeSformer."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    path = _save(vit.state_dict(), tmp_path)
    model = create_model("timesformer_tiny", num_classes=7, num_frames=4, input_size=64, embed_dim=192,
                         depth=12, num_heads=3)
    result = load_pretrained(model, path)
    assert not [k for k in result.missing if "temporal_fc" not in k and k != "time_embed"]
    assert result.unexpected == [] and result.mismatched == []


def test_own_checkpoint_replaces_classifier(tmp_path):
    torch.manual_seed(0)
    source = create_model("tsm_tiny", num_classes=7)
    path = _save({"model_name": "tsm_tiny", "model_kwargs": dict(source.spec.kwargs),
                  "state_dict": source.state_dict()}, tmp_path)
    model = create_model("tsm_tiny", num_classes=3, pretrained=path)
    assert torch.equal(model.backbone.layer4[0].conv2.weight, source.backbone.layer4[0].conv2.weight)
    assert model.head.fc.weight.shape == (3, 128)
    same = create_model("tsm_tiny", num_classes=7)
    result = load_pretrained(same, path)
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    assert not torch.equal(same.head.fc.weight, source.head.fc.weight)  # replaced even when shapes match
    load_pretrained(same, path, keep_classifier=True)
    assert torch.equal(same.head.fc.weight, source.head.fc.weight)


class _NotWeights:
    pass


def test_bad_sources(tmp_path):
    model = create_model("frame_tiny", num_classes=7)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no weight matches model frame_tiny"):
        load_pretrained(model, _save({"encoder.weight": torch.zeros(3)}, tmp_path, "other.pth"))
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(model, _save({"state_dict": _NotWeights()}, tmp_path, "pickle.pth"))
    with pytest.raises(ValueError, match="no state dict found"):
        load_pretrained(model, _save({"epoch": 3}, tmp_path, "empty.pth"))


class _Touch:
    """Unpickling this creates a file: proof that the pickle's code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_bad_sources_are_one_line_user_errors_with_their_cause(tmp_path):
    from microexp.errors import MicroexpError
    from microexp.models.pretrained import PretrainedError

    marker = tmp_path / "ran"
    path = _save({"state_dict": {"w": torch.zeros(1)}, "x": _Touch(marker)}, tmp_path, "unsafe.pth")
    with pytest.raises(PretrainedError, match=r"unsafe.pth: refused: .*nothing in it was executed") as info:
        create_model("frame_tiny", num_classes=7, pretrained=path)
    assert isinstance(info.value, MicroexpError) and "\n" not in str(info.value)
    assert info.value.__cause__ is not None and not marker.exists()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(_save({"w": torch.zeros(500)}, tmp_path).read_bytes()[:200])
    with pytest.raises(PretrainedError, match="truncated.pth: not a readable PyTorch checkpoint, or truncated"):
        load_pretrained(create_model("frame_tiny", num_classes=7), truncated)
    with pytest.raises(PretrainedError, match="no weight matches"):
        load_pretrained(create_model("frame_tiny", num_classes=7), _save({"x.w": torch.zeros(1)}, tmp_path, "o.pth"))
