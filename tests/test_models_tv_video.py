"""torchvision's MViT and Video Swin behind the microexp interface: forward/backward of the CPU configs,
torchvision's parameter counts and state-dict layouts for the full models (meta device, nothing allocated),
and torchvision weight files loaded through ``load_pretrained`` reproducing torchvision's own forward.
Nothing is downloaded: the reference modules are built here by torchvision's classes (no ``weights=``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import video as tvv
from torchvision.models.video.mvit import MSBlockConfig

import microexp.models.tv_video  # noqa: F401  registers mvit_* and swin3d_* (the registry imports it too)
from microexp.models import count_params, create_model, load_pretrained
from microexp.models.tv_video import MViT, VideoSwin

#: 4 frames of 64 px: MViT's grid (2, 16, 16) -> (2, 8, 8) -> (2, 4, 4); Swin's (2, 16, 16) -> ... (2, 2, 2)
TINY = dict(num_frames=4, input_size=64)


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _tiny_mvit_blocks() -> list[MSBlockConfig]:
    """mvit_tiny's architecture written out here, independently of the module under test."""
    k3 = [3, 3, 3]
    rows = [(1, 48, 48, [1, 1, 1], [1, 4, 4]), (2, 48, 96, [1, 2, 2], [1, 2, 2]),
            (2, 96, 96, [1, 1, 1], [1, 2, 2]), (4, 96, 192, [1, 2, 2], [1, 1, 1])]
    return [MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=k3, kernel_kv=k3,
                          stride_q=sq, stride_kv=skv) for h, i, o, sq, skv in rows]


def _tv_mvit(*, frames: int, size: int, v2: bool = True, num_classes: int = 400) -> nn.Module:
    """A torchvision MViT with mvit_tiny's blocks: v2 (mvit_v2_s's switches) or v1 (mvit_v1_b's)."""
    return tvv.MViT(spatial_size=(size, size), temporal_size=frames, block_setting=_tiny_mvit_blocks(),
                    residual_pool=v2, residual_with_cls_embed=False, rel_pos_embed=v2, proj_after_attn=v2,
                    num_classes=num_classes)


def _tv_swin_tiny(num_classes: int = 400) -> nn.Module:
    """A torchvision SwinTransformer3d with swin3d_tiny's configuration."""
    return tvv.SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                 window_size=[8, 7, 7], num_classes=num_classes)


def _capture(module: nn.Module) -> dict[str, torch.Tensor]:
    """Record ``module``'s output at each call under ``["out"]``."""
    seen: dict[str, torch.Tensor] = {}
    module.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    return seen


def _randomise_norms(net: nn.Module) -> None:
    """LayerNorms start at (1, 0); random affine parameters make a wrongly loaded norm visible."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


# ------------------------------------------------------------------------------------------ the CPU configs
@pytest.mark.parametrize("name, features, width", [("mvit_tiny", (2, 1 + 2 * 4 * 4, 192), 192),
                                                   ("swin3d_tiny", (2, 256, 2, 2, 2), 256)])
def test_tiny_forward_backward(name, features, width):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **TINY)
    spec = model.spec
    assert (spec.family, spec.modality, spec.in_channels, spec.num_frames, spec.input_size) == (
        "transformer", "rgb", 3, 4, 64)
    x = torch.randn(2, 3, 4, 64, 64)
    model.train()
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == features
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features) == (2, width)
        torch.testing.assert_close(model.forward_head(feats), model(x))


def test_default_configs_and_stats():
    """Frames, size and normalisation of torchvision's weights (read from its Weights enums; no download)."""
    with torch.device("meta"):
        specs = {n: create_model(n, num_classes=7).spec for n in
                 ("mvit_tiny", "mvit_v2_s", "mvit_v1_b", "mvit_base", "swin3d_tiny", "swin3d_t")}
    assert (specs["mvit_tiny"].num_frames, specs["mvit_tiny"].input_size) == (8, 112)
    assert (specs["swin3d_tiny"].num_frames, specs["swin3d_tiny"].input_size) == (8, 112)
    weights = {"mvit_v2_s": tvv.MViT_V2_S_Weights, "mvit_v1_b": tvv.MViT_V1_B_Weights,
               "mvit_base": tvv.MViT_V1_B_Weights, "swin3d_t": tvv.Swin3D_T_Weights}
    for name, enum in weights.items():
        w = enum.KINETICS400_V1
        preset = w.transforms()
        spec = specs[name]
        assert (spec.mean, spec.std) == (tuple(preset.mean), tuple(preset.std)), name
        assert spec.input_size == preset.crop_size[0] == 224, name
        if name.startswith("mvit"):  # MViT is built for its grid: torchvision's minimum is its grid
            assert (spec.num_frames, spec.input_size) == (w.meta["min_temporal_size"], w.meta["min_size"][0])


def test_mvit_needs_its_grid_and_swin_takes_any_size():
    mvit = create_model("mvit_tiny", num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match="T = 4"):
        mvit(torch.zeros(1, 3, 6, 64, 64))
    with pytest.raises(ValueError, match="H = W = 64"):
        mvit(torch.zeros(1, 3, 4, 72, 72))
    with pytest.raises(ValueError, match="num_frames=5: expected a positive multiple of 2"):
        create_model("mvit_tiny", num_classes=3, num_frames=5, input_size=64)
    with pytest.raises(ValueError, match="input_size=66: expected a positive multiple of 4"):
        create_model("mvit_tiny", num_classes=3, num_frames=4, input_size=66)
    swin = create_model("swin3d_tiny", num_classes=3, **TINY).eval()
    assert not swin.fixed_frames and not swin.fixed_size
    with torch.no_grad():  # neither a multiple of the (2, 4, 4) patches nor square
        assert swin(torch.randn(1, 3, 5, 50, 66)).shape == (1, 3)
        assert swin.forward_features(torch.randn(1, 3, 5, 50, 66)).shape == (1, 256, 3, 2, 3)
    with pytest.raises(ValueError, match=r"num_heads\[0\]=3 does not divide the stage width 32"):
        VideoSwin(num_classes=3, num_frames=4, input_size=64, patch_size=(2, 4, 4), embed_dim=32, depths=(2, 2),
                  num_heads=(3, 6), window_size=(8, 7, 7))


# ----------------------------------------------------------------- torchvision's full models, on meta
@pytest.mark.parametrize("name, builder", [("mvit_v2_s", tvv.mvit_v2_s), ("mvit_v1_b", tvv.mvit_v1_b),
                                           ("mvit_base", tvv.mvit_v1_b), ("swin3d_t", tvv.swin3d_t)])
def test_full_models_match_torchvision_layout(name, builder):
    """Same parameter count as torchvision's builder (our classifier replaces its own) and every key of a
    torchvision weight file lands on a key of ours with the same shape, and vice versa."""
    with torch.device("meta"):
        ours = create_model(name, num_classes=400)
        ref = builder(num_classes=400)  # weights=None: nothing downloaded
    assert count_params(ours) == count_params(ref)
    assert count_params(ours, trainable=False) == count_params(ref, trainable=False)
    mapped = ours.convert_pretrained_state_dict(ref.state_dict())
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    classifier = [k for k in mapped if k.startswith(ours.classifier_prefixes())]
    assert sorted(classifier) == ["head.fc.bias", "head.fc.weight"]
    assert {p.device.type for p in ours.parameters()} == {"meta"}


# ------------------------------------------------------------------- torchvision weight files, loaded
def test_swin_weight_file_reproduces_torchvision(tmp_path):
    torch.manual_seed(0)
    ref = _tv_swin_tiny()
    _randomise_norms(ref)
    path = tmp_path / "swin3d_tiny_k400.pth"
    torch.save(ref.state_dict(), path)
    model = create_model("swin3d_tiny", num_classes=7)  # built for 8x112, run at another size below
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    ref.eval(), model.eval()
    seen = _capture(ref.norm)
    x = torch.randn(2, 3, 6, 72, 72)
    with torch.no_grad():
        expected = ref(x)
        feats = model.forward_features(x)
        torch.testing.assert_close(feats, seen["out"].permute(0, 4, 1, 2, 3), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ref.head(model.forward_head(feats, pre_logits=True)), expected,
                                   rtol=1e-4, atol=1e-5)


def test_mvit_v1_weight_file_reproduces_torchvision(tmp_path):
    """The v1 switches (absolute positions, no residual pooling) as mvit_v1_b, on mvit_tiny's blocks."""
    torch.manual_seed(0)
    ref = _tv_mvit(frames=4, size=64, v2=False)
    _randomise_norms(ref)
    path = tmp_path / "mvit_v1.pth"
    torch.save(ref.state_dict(), path)
    model = MViT(num_classes=7, num_frames=4, input_size=64, block_setting=_tiny_mvit_blocks(), residual_pool=False,
                 residual_with_cls_embed=False, rel_pos_embed=False, proj_after_attn=False)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    ref.eval(), model.eval()
    seen = _capture(ref.norm)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        tokens = model.forward_features(x)
        torch.testing.assert_close(tokens, seen["out"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ref.head(model.forward_head(tokens, pre_logits=True)), expected,
                                   rtol=1e-4, atol=1e-5)

    bigger = MViT(num_classes=7, num_frames=8, input_size=96, block_setting=_tiny_mvit_blocks(), residual_pool=False,
                  residual_with_cls_embed=False, rel_pos_embed=False, proj_after_attn=False)
    result = load_pretrained(bigger, path)  # 4x64 tables (2 x 16x16) resized to 8x96 (4 x 24x24)
    assert result.missing == [] and result.mismatched == []
    assert bigger.net.pos_encoding.spatial_pos.shape == (24 * 24, 48)
    assert bigger.net.pos_encoding.temporal_pos.shape == (4, 48)


def test_mvit_v2_tables_resized_as_torchvision_interpolates(tmp_path):
    """A 4x64 MViTv2 file into mvit_tiny at 8x96: the relative-position tables are resized at load; the
    result equals a torchvision MViT built at 8x96 that keeps the file's tables and interpolates them at
    run time (what torchvision does when a table does not fit the grid)."""
    torch.manual_seed(0)
    small = _tv_mvit(frames=4, size=64)
    with torch.no_grad():
        for name, p in small.named_parameters():
            if "rel_pos" in name:
                p.copy_(torch.randn_like(p))
    path = tmp_path / "mvit_v2_4x64.pth"
    torch.save(small.state_dict(), path)
    model = create_model("mvit_tiny", num_classes=7, num_frames=8, input_size=96)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert model.net.blocks[0].attn.rel_pos_t.shape == (7, 48)  # 2 * T' - 1, T' = 4
    assert small.blocks[0].attn.rel_pos_t.shape == (3, 48)

    ref = _tv_mvit(frames=8, size=96)
    tables = {k: v for k, v in small.state_dict().items() if ".rel_pos_" in k}
    missing, unexpected = ref.load_state_dict({k: v for k, v in small.state_dict().items() if k not in tables},
                                              strict=False)
    assert sorted(missing) == sorted(tables) and unexpected == []
    for key, value in tables.items():  # the file's (smaller) tables, as they are
        block, _, name = key.rpartition(".")
        setattr(ref.get_submodule(block), name, nn.Parameter(value.clone()))
    assert ref.blocks[0].attn.rel_pos_t.shape == (3, 48)
    ref.eval(), model.eval()
    seen = _capture(ref.norm)
    x = torch.randn(1, 3, 8, 96, 96)
    with torch.no_grad():
        ref(x)
        torch.testing.assert_close(model.forward_features(x), seen["out"], rtol=1e-4, atol=1e-5)


def test_own_checkpoint_passes_unchanged(tmp_path):
    torch.manual_seed(0)
    source = create_model("mvit_tiny", num_classes=7, **TINY)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_name": "mvit_tiny", "state_dict": source.state_dict()}, path)
    target = create_model("mvit_tiny", num_classes=7, **TINY)
    result = load_pretrained(target, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    own = source.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in target.state_dict().items() if not k.startswith("head.fc."))
    assert target.convert_pretrained_state_dict(own).keys() == own.keys()
    swin = create_model("swin3d_tiny", num_classes=7, **TINY)
    assert swin.convert_pretrained_state_dict(swin.state_dict()).keys() == swin.state_dict().keys()
