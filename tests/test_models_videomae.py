"""VideoMAE: official parameter counts, official checkpoint layouts (pretraining and fine-tuned) loaded and
checked against a functional forward written here from the official ``modeling_finetune.py`` /
``modeling_pretrain.py``, position-embedding resizing, and the masked-encoder interface."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import microexp.models.videomae  # noqa: F401  registers videomae_* (also imported by the registry)
from microexp.models import count_params, create_model, load_pretrained
from microexp.models.pretrained import PretrainedError
from microexp.models.videomae import VideoMAE, infer_pos_embed_grid

#: a tiny VideoMAE: 4 frames of 32 px, 2x8x8 tubes -> grid (2, 4, 4), 32 tokens of width 32
DIM, DEPTH, HEADS, PATCH, TUBELET = 32, 2, 4, 8, 2
TINY = dict(num_frames=4, input_size=32, patch_size=PATCH, tubelet_size=TUBELET, embed_dim=DIM, depth=DEPTH,
            num_heads=HEADS, drop_path_rate=0.0)
GRID = (2, 4, 4)
DEC = 16  # decoder width of the pretraining checkpoint


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _tiny(**kwargs) -> VideoMAE:
    return create_model("videomae_tiny", **{"num_classes": 5, **TINY, **kwargs}).eval()


# ------------------------------------------------------------------------------------ official reference
def official_table(n_position: int, d_hid: int) -> torch.Tensor:
    """``get_sinusoid_encoding_table`` of the official code, verbatim in numpy."""
    def angles(position):
        return [position / np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)]

    table = np.array([angles(pos_i) for pos_i in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float).unsqueeze(0)


def _block_keys(g: torch.Generator, prefix: str, dim: int) -> dict[str, torch.Tensor]:
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std  # noqa: E731
    return {
        prefix + "norm1.weight": 1 + r(dim, std=0.1), prefix + "norm1.bias": r(dim, std=0.1),
        prefix + "attn.qkv.weight": r(3 * dim, dim), prefix + "attn.q_bias": r(dim), prefix + "attn.v_bias": r(dim),
        prefix + "attn.proj.weight": r(dim, dim), prefix + "attn.proj.bias": r(dim),
        prefix + "norm2.weight": 1 + r(dim, std=0.1), prefix + "norm2.bias": r(dim, std=0.1),
        prefix + "mlp.fc1.weight": r(4 * dim, dim), prefix + "mlp.fc1.bias": r(4 * dim),
        prefix + "mlp.fc2.weight": r(dim, 4 * dim), prefix + "mlp.fc2.bias": r(dim),
    }


def official_pretrain_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of ``PretrainVisionTransformer.state_dict()`` (modeling_pretrain.py): the encoder under
    ``encoder.`` (its ``norm`` a LayerNorm, no head), a decoder, ``encoder_to_decoder``, ``mask_token``."""
    g = torch.Generator().manual_seed(seed)
    sd = {"encoder.patch_embed.proj.weight": torch.randn(DIM, 3, TUBELET, PATCH, PATCH, generator=g) * 0.05,
          "encoder.patch_embed.proj.bias": torch.randn(DIM, generator=g) * 0.1}
    for i in range(DEPTH):
        sd.update(_block_keys(g, f"encoder.blocks.{i}.", DIM))
    sd["encoder.norm.weight"] = 1 + 0.1 * torch.randn(DIM, generator=g)
    sd["encoder.norm.bias"] = 0.1 * torch.randn(DIM, generator=g)
    sd.update(_block_keys(g, "decoder.blocks.0.", DEC))
    sd.update({"decoder.norm.weight": torch.ones(DEC), "decoder.norm.bias": torch.zeros(DEC),
               "decoder.head.weight": torch.randn(3 * TUBELET * PATCH * PATCH, DEC, generator=g),
               "decoder.head.bias": torch.zeros(3 * TUBELET * PATCH * PATCH),
               "encoder_to_decoder.weight": torch.randn(DEC, DIM, generator=g), "mask_token": torch.zeros(1, 1, DEC)})
    return sd


def official_finetuned_state(seed: int = 1, classes: int = 400) -> dict[str, torch.Tensor]:
    """Keys of a fine-tuned ``VisionTransformer`` (modeling_finetune.py, use_mean_pooling): no prefix,
    ``fc_norm`` (``norm`` is Identity), ``head``."""
    sd = {k[len("encoder."):]: v for k, v in official_pretrain_state(seed).items() if k.startswith("encoder.")}
    sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    g = torch.Generator().manual_seed(seed + 100)
    sd["head.weight"] = torch.randn(classes, DIM, generator=g) * 0.1
    sd["head.bias"] = torch.randn(classes, generator=g) * 0.1
    return sd


def _ln(x, sd, prefix):
    return F.layer_norm(x, (x.shape[-1],), sd[prefix + "weight"].double(), sd[prefix + "bias"].double(), eps=1e-6)


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, prefix: str = "",
                     mask: torch.Tensor | None = None, final_norm: str | None = "norm") -> torch.Tensor:
    """The official encoder in float64: tubelet Conv3d, + sinusoid table, ``x[~mask]`` (pretraining),
    blocks with ``qkv`` bias ``cat(q_bias, zeros, v_bias)``, ``softmax(q * scale @ k^T) @ v``, exact GELU MLP,
    then the final LayerNorm named ``final_norm`` (None: no norm)."""
    p = {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}
    x = F.conv3d(x.double(), p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)
    b, n, c = x.shape
    x = x + official_table(n, c).double()
    if mask is not None:
        x = x[~mask].reshape(b, -1, c)
    n = x.shape[1]
    head_dim = c // HEADS
    for i in range(DEPTH):
        q = f"blocks.{i}."
        h = _ln(x, p, q + "norm1.")
        bias = torch.cat((p[q + "attn.q_bias"], torch.zeros_like(p[q + "attn.v_bias"]), p[q + "attn.v_bias"]))
        qkv = F.linear(h, p[q + "attn.qkv.weight"], bias).reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * head_dim ** -0.5) @ qkv[1].transpose(-2, -1)).softmax(dim=-1)
        h = (attn @ qkv[2]).transpose(1, 2).reshape(b, n, -1)
        x = x + F.linear(h, p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
        h = F.gelu(F.linear(_ln(x, p, q + "norm2."), p[q + "mlp.fc1.weight"], p[q + "mlp.fc1.bias"]))
        x = x + F.linear(h, p[q + "mlp.fc2.weight"], p[q + "mlp.fc2.bias"])
    return _ln(x, p, final_norm + ".") if final_norm else x


def _clip(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _save(obj, tmp_path, name="weights.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ----------------------------------------------------------------------------------------------- tests
def _vit_encoder_params(d: int, depth: int, patch: int, tubelet: int) -> int:
    """By hand from the official modules: Conv3d patch embedding (with bias), per block norm1, qkv (no bias),
    q_bias, v_bias, proj, norm2, fc1, fc2 (hidden 4D), and the final fc_norm; no class token, no learnt
    position embedding."""
    patch_embed = 3 * tubelet * patch * patch * d + d
    block = 2 * d + 3 * d * d + 2 * d + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return patch_embed + depth * block + 2 * d


@pytest.mark.parametrize("name, dim, expected", [("videomae_s", 384, 21_879_936), ("videomae_b", 768, 86_227_200)])
def test_parameter_counts_are_the_official_vits(name, dim, expected):
    with torch.device("meta"):
        model = create_model(name, num_classes=0)
        with_head = create_model(name, num_classes=400)
    assert _vit_encoder_params(dim, 12, 16, 2) == expected  # ViT-S 21.9 M, ViT-B 86.2 M (papers: 22 M / 87 M)
    assert count_params(model) == expected
    assert count_params(with_head) == expected + 400 * dim + 400
    assert model.token_grid() == (8, 14, 14) and model.patch_shape() == (2, 16, 16)
    assert model.spec.mean == (0.485, 0.456, 0.406) and model.spec.std == (0.229, 0.224, 0.225)
    x = torch.empty(2, 3, 16, 224, 224, device="meta")
    assert model.forward_features(x).shape == (2, 1568, dim)
    assert with_head(x).shape == (2, 400)


def test_state_dict_names_are_the_official_ones():
    keys = set(_tiny(use_mean_pooling=False).state_dict())
    official = {k[len("encoder."):] for k in official_pretrain_state() if k.startswith("encoder.")}
    assert keys - {"head.fc.weight", "head.fc.bias"} == official
    assert "pos_embed" not in keys  # the fixed table is a non-persistent buffer
    pooled = set(_tiny(learnable_pos_embed=True).state_dict())
    assert {"fc_norm.weight", "fc_norm.bias", "pos_embed"} <= pooled and "norm.weight" not in pooled


def test_official_pretraining_checkpoint_loads_and_matches_the_official_forward(tmp_path):
    sd = official_pretrain_state()
    path = _save({"model": sd}, tmp_path)  # the official container
    model = _tiny(use_mean_pooling=False)
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == [] and result.classifier == []
    assert len(result.loaded) == len([k for k in sd if k.startswith("encoder.")])
    x = _clip()
    with torch.no_grad():
        ours = model.forward_features(x)
    reference = official_forward(sd, x, prefix="encoder.")
    assert ours.shape == (2, 32, DIM)
    torch.testing.assert_close(ours.double(), reference, atol=1e-5, rtol=0)
    assert reference.std() > 0.5  # the check compares real activations, not near-zero ones


def test_mean_pooling_model_reads_the_encoder_norm_as_fc_norm(tmp_path):
    sd = official_pretrain_state()
    path = _save({"model": sd}, tmp_path)
    model = create_model("videomae_tiny", num_classes=5, pretrained=path, **TINY).eval()  # model.pretrained path
    assert torch.equal(model.fc_norm.weight, sd["encoder.norm.weight"])
    assert isinstance(model.norm, torch.nn.Identity)
    x = _clip(1)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    tokens = official_forward(sd, x, prefix="encoder.", final_norm=None)
    expected = F.layer_norm(tokens.mean(1), (DIM,), sd["encoder.norm.weight"].double(),
                            sd["encoder.norm.bias"].double(), eps=1e-6)
    torch.testing.assert_close(pooled.double(), expected, atol=1e-5, rtol=0)


def test_official_finetuned_checkpoint_loads_and_its_classifier_is_replaced(tmp_path):
    sd = official_finetuned_state()
    path = _save({"module": sd}, tmp_path)  # VideoMAE V2's container
    model = _tiny(num_classes=7)
    fresh = model.head.fc.weight.detach().clone()
    result = load_pretrained(model, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert sorted(result.classifier) == ["head.fc.bias", "head.fc.weight"]
    assert torch.equal(model.head.fc.weight, fresh)  # the classifier stays freshly initialised
    assert fresh.abs().max() < 1e-3  # official init: normal(0.02) * init_scale 0.001
    assert torch.equal(model.fc_norm.bias, sd["fc_norm.bias"])

    same = _tiny(num_classes=400)
    load_pretrained(same, path, keep_classifier=True)  # the official head maps onto head.fc
    x = _clip(2)
    with torch.no_grad():
        logits = same(x)
    tokens = official_forward(sd, x, final_norm=None)
    expected = F.linear(_ln(tokens.mean(1), {k: v.double() for k, v in sd.items()}, "fc_norm."),
                        sd["head.weight"].double(), sd["head.bias"].double())
    torch.testing.assert_close(logits.double(), expected, atol=1e-5, rtol=0)


def test_unsupported_official_variants_are_refused(tmp_path):
    sd = official_finetuned_state()
    sd["blocks.0.gamma_1"] = torch.ones(DIM)
    with pytest.raises(PretrainedError, match="blocks.0.gamma_1.*layer scale"):
        load_pretrained(_tiny(), _save(sd, tmp_path))


def _with_pos(sd: dict[str, torch.Tensor], grid: tuple[int, int, int], seed: int = 3) -> torch.Tensor:
    pos = torch.randn(1, math.prod(grid), DIM, generator=torch.Generator().manual_seed(seed))
    sd["pos_embed"] = pos
    return pos


def test_learnable_pos_embed_loads_as_is_on_the_same_grid(tmp_path):
    sd = official_finetuned_state()
    pos = _with_pos(sd, GRID)
    model = _tiny(learnable_pos_embed=True)
    assert load_pretrained(model, _save(sd, tmp_path)).missing == []
    assert torch.equal(model.pos_embed, pos)


def test_learnable_pos_embed_is_resized_bicubically_in_space(tmp_path):
    sd = official_finetuned_state()
    pos = _with_pos(sd, (2, 6, 6))  # a 48 px, 4-frame source
    model = _tiny(learnable_pos_embed=True)
    load_pretrained(model, _save(sd, tmp_path))
    per_slot = pos.reshape(2, 6, 6, DIM).permute(0, 3, 1, 2)  # (T, D, H, W)
    expected = F.interpolate(per_slot, size=(4, 4), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 32, DIM)
    assert model.pos_embed.shape == (1, 32, DIM)
    torch.testing.assert_close(model.pos_embed.detach(), expected)


def test_learnable_pos_embed_is_resized_linearly_in_time(tmp_path):
    sd = official_finetuned_state()
    pos = _with_pos(sd, (4, 4, 4))  # an 8-frame source, same resolution
    model = _tiny(learnable_pos_embed=True)
    load_pretrained(model, _save(sd, tmp_path))
    per_position = pos.reshape(4, 16, DIM).permute(1, 2, 0)  # (S, D, T)
    expected = F.interpolate(per_position, size=2, mode="linear", align_corners=False)
    expected = expected.permute(2, 0, 1).reshape(1, 32, DIM)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    assert not torch.allclose(expected, pos.reshape(4, 16, DIM)[:2].reshape(1, 32, DIM))  # really interpolated


def test_pos_embed_grid_inference():
    assert infer_pos_embed_grid(1568, (2, 4, 4)) == (8, 14, 14)  # the official 16x224 grid, not 2 x 28 x 28
    assert infer_pos_embed_grid(1568, (8, 14, 14)) == (8, 14, 14)
    assert infer_pos_embed_grid(2 * 36, (2, 4, 4)) == (2, 6, 6)
    assert infer_pos_embed_grid(8 * 49, (4, 14, 14)) == (8, 7, 7)
    assert infer_pos_embed_grid(4 * 16, (2, 4, 4)) == (4, 4, 4)
    with pytest.raises(PretrainedError, match="cannot infer the token grid of 7 positions"):
        infer_pos_embed_grid(7, (2, 4, 4))


def test_fixed_table_model_drops_a_file_pos_embed(tmp_path, caplog):
    sd = official_finetuned_state()
    _with_pos(sd, GRID)
    model = _tiny()
    with caplog.at_level(logging.WARNING, logger="microexp.models.videomae"):
        result = load_pretrained(model, _save(sd, tmp_path))
    assert "pos_embed" not in result.unexpected and "pos_embed (1, 32, 32) is dropped" in caplog.text
    torch.testing.assert_close(model.pos_embed, official_table(32, DIM))


def test_learnable_model_starts_from_the_table_when_the_file_has_none(tmp_path):
    model = _tiny(learnable_pos_embed=True)
    result = load_pretrained(model, _save({"model": official_pretrain_state()}, tmp_path))
    assert "pos_embed" in result.loaded and result.missing == []
    torch.testing.assert_close(model.pos_embed.detach(), official_table(32, DIM))


def test_image_vit_weights_are_inflated_and_their_qkv_bias_split(tmp_path):
    g = torch.Generator().manual_seed(5)
    sd = {k: v for k, v in official_finetuned_state().items() if not k.endswith(("q_bias", "v_bias"))}
    sd["patch_embed.proj.weight"] = torch.randn(DIM, 3, PATCH, PATCH, generator=g) * 0.05
    sd["cls_token"] = torch.randn(1, 1, DIM, generator=g)
    sd["pos_embed"] = torch.randn(1, 1 + 16, DIM, generator=g)
    for i in range(DEPTH):
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.randn(3 * DIM, generator=g) * 0.3
    model = _tiny(learnable_pos_embed=True)
    result = load_pretrained(model, _save(sd, tmp_path))
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    torch.testing.assert_close(model.patch_embed.proj.weight.sum(2), sd["patch_embed.proj.weight"])
    assert torch.equal(model.pos_embed[:, :16], sd["pos_embed"][:, 1:])  # both temporal slots
    assert torch.equal(model.pos_embed[:, 16:], sd["pos_embed"][:, 1:])
    # dropping the key bias is exact: attention with the full qkv bias gives the same output
    attn = model.blocks[1].attn
    tokens = torch.randn(2, 32, DIM, generator=g)
    b, n = 2, 32
    qkv = F.linear(tokens, sd["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
    full = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(-1) @ v
    expected = F.linear(full.transpose(1, 2).reshape(b, n, DIM), sd["blocks.1.attn.proj.weight"],
                        sd["blocks.1.attn.proj.bias"])
    with torch.no_grad():
        torch.testing.assert_close(attn(tokens), expected, atol=1e-5, rtol=0)


def test_forward_visible_with_every_position_is_forward_features():
    torch.manual_seed(0)
    x = _clip(3)
    every = torch.arange(16).expand(2, 16)
    with torch.no_grad():
        plain = _tiny(use_mean_pooling=False)
        torch.testing.assert_close(plain.forward_visible(x, every), plain.forward_features(x))
        pooled = _tiny()
        torch.testing.assert_close(pooled.forward_visible(x, every), pooled.fc_norm(pooled.forward_features(x)))


def test_forward_visible_is_the_official_masked_encoder(tmp_path):
    sd = official_pretrain_state()
    model = _tiny(use_mean_pooling=False)
    load_pretrained(model, _save({"model": sd}, tmp_path))
    keep = torch.tensor([[0, 5, 10, 15, 3], [1, 2, 7, 8, 12]])
    hidden = torch.ones(2, 16, dtype=torch.bool).scatter_(1, keep, False)
    mask = hidden.repeat(1, 2)  # tube masking: the same positions hidden in both temporal slots
    x = _clip(4)
    with torch.no_grad():
        ours = model.forward_visible(x, keep.sort(dim=1).values)
    assert ours.shape == (2, 2 * 5, DIM)
    torch.testing.assert_close(ours.double(), official_forward(sd, x, prefix="encoder.", mask=mask), atol=1e-5, rtol=0)


def test_forward_visible_never_sees_hidden_pixels():
    torch.manual_seed(0)
    model = _tiny()
    x = _clip(5)
    keep = torch.tensor([[0, 6, 9], [1, 6, 14]])
    with torch.no_grad():
        tokens = model.forward_visible(x, keep)
        changed = x.clone()
        changed[:, :, :, 24:32, 0:8] += 5.0  # position 12 (row 3, column 0), every frame: hidden in both clips
        changed[1, :, :, 0:8, 0:8] -= 3.0  # position 0: hidden in clip 1 only
        assert torch.equal(model.forward_visible(changed, keep), tokens)
        changed[0, :, 3, 0:8, 0:8] += 1.0  # position 0, last frame: visible in clip 0
        again = model.forward_visible(changed, keep)
    assert not torch.allclose(again[0], tokens[0], atol=1e-3) and torch.equal(again[1], tokens[1])


def test_forward_visible_rejects_bad_indices():
    model = _tiny()
    x = _clip(0, batch=1)
    with pytest.raises(ValueError, match=r"keep indices must lie in \[0, 16\), got \[0, 16\]"):
        model.forward_visible(x, torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match="keep must be \\(B, K\\) with B = 1"):
        model.forward_visible(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer indices"):
        model.forward_visible(x, torch.tensor([[0.0, 1.0]]))


def test_drop_in_tiny_trains_and_round_trips():
    torch.manual_seed(0)
    model = create_model("videomae_tiny", num_classes=7)
    spec = model.spec
    assert (spec.family, spec.modality, spec.num_frames, spec.input_size) == ("transformer", "rgb", 8, 64)
    assert model.token_grid() == (4, 8, 8) and model.patch_shape() == (2, 8, 8)
    x = torch.randn(2, 3, 8, 64, 64)
    model.train()
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    assert not [k for k, p in model.named_parameters() if p.grad is None]
    model.eval()
    rebuilt = create_model(spec.name, **spec.kwargs).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(ValueError, match="T = 8"):
        model(torch.zeros(1, 3, 6, 64, 64))


def test_bad_arguments_name_their_values():
    with pytest.raises(ValueError, match="input_size: 60 is not a multiple of patch_size=8"):
        create_model("videomae_tiny", num_classes=7, input_size=60)
    with pytest.raises(ValueError, match="num_frames: 5 is not a multiple of tubelet_size=2"):
        create_model("videomae_tiny", num_classes=7, num_frames=5)
    with pytest.raises(ValueError, match="in_channels: .*expected 3, got 2"):
        VideoMAE(num_classes=7, num_frames=4, input_size=32, in_channels=2, patch_size=8, embed_dim=32, depth=1,
                 num_heads=4)
    with pytest.raises(ValueError, match="num_heads: 5 does not divide embed_dim=128"):
        create_model("videomae_tiny", num_classes=7, num_heads=5)


def test_masked_video_pretraining_step_and_fine_tuning_from_its_encoder(tmp_path):
    from microexp.models.masked_video import MaskedVideoAutoencoder

    torch.manual_seed(0)
    encoder = create_model("videomae_tiny", num_classes=0, **TINY)
    model = MaskedVideoAutoencoder(encoder, mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    out = model(_clip(6), generator=torch.Generator().manual_seed(0))
    assert out.prediction.shape == (2, 2, 16, 3 * TUBELET * PATCH * PATCH) and out.hidden.sum() == 2 * 12
    out.loss.backward()
    assert encoder.fc_norm.weight.grad is not None and encoder.blocks[0].attn.q_bias.grad is not None
    path = _save({"state_dict": encoder.state_dict()}, tmp_path)
    finetune = _tiny(num_classes=7)
    result = load_pretrained(finetune, path)
    assert result.missing == [] and result.unexpected == [] and result.mismatched == []
    assert torch.equal(finetune.blocks[1].mlp.fc2.weight, encoder.blocks[1].mlp.fc2.weight)
