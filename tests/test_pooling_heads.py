"""Pooling heads (microexp.models.pooling): APViT's attentive patch and token pooling, DAN's cross attention.

Top-k selection is checked on maps whose answer is known, the defaults against models built without the
argument, and the non-default heads through a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from microexp.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from microexp.models import create_model
from microexp.models.layers import ClassifierHead
from microexp.models.pooling import (
    AttentivePatchPool,
    AttentiveTokenPool,
    CrossAttentionPool,
    check_keep,
    keep_count,
    partition_loss,
)

TINY = dict(num_frames=4, input_size=64)


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _clip(model, batch=2):
    g = torch.Generator().manual_seed(1)
    s = model.spec
    return torch.randn(batch, s.in_channels, s.num_frames, s.input_size, s.input_size, generator=g)


# ---- the pure maths --------------------------------------------------------------------------------------


def test_keep_validation_and_count():
    assert keep_count(0.5, 10) == 5 and keep_count(0.01, 10) == 1 and keep_count(1.0, 7) == 7
    assert keep_count(3, 10) == 3
    with pytest.raises(ValueError, match="only 2"):
        keep_count(3, 2)
    for bad in (0, -1, 0.0, 1.5, True, "0.5", None):
        with pytest.raises(ValueError, match="pool_keep"):
            check_keep(bad)


def test_attentive_patch_pool_averages_the_strongest_positions():
    """A (1, 2, T=2, 2, 2) map: positions scored by their L1 norm (APViT's sum of absolute values); keep 3 ->
    the mean of the three largest."""
    x = torch.zeros(1, 2, 2, 2, 2)
    strong = {(0, 0, 1): (5.0, 1.0), (1, 1, 0): (-4.0, -3.0), (1, 0, 1): (2.0, 2.5)}  # L1 6, 7, 4.5
    for (t, h, w), value in strong.items():
        x[0, :, t, h, w] = torch.tensor(value)
    x[0, :, 0, 1, 1] = torch.tensor([3.5, 0.0])  # L1 3.5 (the fourth, dropped), though its L2 beats (2, 2.5)
    pool = AttentivePatchPool(keep=3)
    expected = torch.tensor([[5.0 - 4.0 + 2.0, 1.0 - 3.0 + 2.5]]) / 3
    torch.testing.assert_close(pool(x), expected)
    top = pool.scores(x)[0].topk(3).indices.tolist()
    assert sorted(top) == sorted(t * 4 + h * 2 + w for t, h, w in strong)
    # keep everything: global average pooling
    torch.testing.assert_close(AttentivePatchPool(keep=1.0)(x), x.flatten(2).mean(-1))
    # a 2D map (frame / flow models) works the same
    assert AttentivePatchPool(keep=0.5)(torch.randn(3, 8, 4, 4)).shape == (3, 8)


def test_attentive_patch_pool_is_per_sample():
    x = torch.zeros(2, 1, 1, 1, 4)
    x[0, 0, 0, 0] = torch.tensor([9.0, 0.0, 0.0, 0.0])
    x[1, 0, 0, 0] = torch.tensor([0.0, 0.0, 0.0, -7.0])
    torch.testing.assert_close(AttentivePatchPool(keep=1)(x), torch.tensor([[9.0], [-7.0]]))


def test_attentive_token_pool_picks_the_tokens_the_class_token_attends_to():
    d = 4
    cls = torch.tensor([1.0, 0.0, 0.0, 0.0])
    patches = torch.stack([
        torch.tensor([3.0, 1.0, 0.0, 0.0]),  # <cls, x> = 3
        torch.tensor([-2.0, 5.0, 0.0, 0.0]),  # -2 (large norm, low attention)
        torch.tensor([2.0, 0.0, 1.0, 0.0]),  # 2
        torch.tensor([0.0, 0.0, 0.0, 9.0]),  # 0
    ])
    tokens = torch.cat([cls[None], patches])[None]  # (1, 5, D)
    pool = AttentiveTokenPool(keep=2)
    torch.testing.assert_close(pool(tokens), (patches[0] + patches[2])[None] / 2)
    scores = pool.scores(tokens)
    torch.testing.assert_close(scores, torch.softmax(patches @ cls / d ** 0.5, 0)[None])
    torch.testing.assert_close(scores.sum(-1), torch.ones(1))
    # the class token is never one of the averaged tokens, even where it would score highest
    torch.testing.assert_close(AttentiveTokenPool(keep=1.0)(tokens), patches.mean(0, keepdim=True))
    with pytest.raises(ValueError, match=r"\(B, 1 \+ N, D\)"):
        pool(tokens[:, :1])


def test_cross_attention_pool_shapes_fusion_and_partition_loss():
    torch.manual_seed(0)
    pool = CrossAttentionPool(channels=16, num_heads=4)
    x = torch.randn(2, 16, 3, 4, 4)
    heads = pool.heads(x)
    assert heads.shape == (2, 4, 16)
    out = pool(x)
    torch.testing.assert_close(out, torch.log_softmax(heads, dim=1).sum(1))
    assert pool(torch.randn(2, 16, 4, 4)).shape == (2, 16)  # a 2D map is read as T = 1
    # the partition loss: log(1 + K / mean variance across heads); lower when the heads differ more
    same = torch.ones(2, 4, 16)
    spread = torch.randn(2, 4, 16) * 10
    assert partition_loss(spread) < partition_loss(spread / 10) < partition_loss(same)
    torch.testing.assert_close(partition_loss(spread), torch.log1p(4 / (spread.var(dim=1).mean() + 1e-6)))
    assert partition_loss(heads[:, :1]) == 0
    loss = partition_loss(heads)
    loss.backward()
    assert pool.spatial[0].reduce[0].weight.grad is not None
    with pytest.raises(ValueError, match="num_heads"):
        CrossAttentionPool(channels=16, num_heads=0)


def test_cross_attention_spatial_attention_is_per_frame():
    """Changing frame 2 of the map changes no other frame's spatial attention (the convs are (1, k, k))."""
    torch.manual_seed(0)
    pool = CrossAttentionPool(channels=8, num_heads=2).eval()
    x = torch.randn(1, 8, 3, 5, 5)
    y = x.clone()
    y[:, :, 2] = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        a, b = pool.spatial[0](x), pool.spatial[0](y)
    assert torch.equal(a[:, :, :2], b[:, :, :2]) and not torch.equal(a[:, :, 2], b[:, :, 2])


# ---- the models ------------------------------------------------------------------------------------------


CNN_MODELS = ("r3d_tiny", "tsm_tiny", "frame_tiny", "flow_tiny")


@pytest.mark.parametrize("name", CNN_MODELS + ("timesformer_tiny",))
def test_default_pool_is_unchanged(name):
    """Same seed, with and without the argument: same state-dict keys and bit-identical outputs."""
    default = "token" if name.startswith("timesformer") else "avg"
    torch.manual_seed(0)
    plain = create_model(name, num_classes=5, **TINY).eval()
    torch.manual_seed(0)
    explicit = create_model(name, num_classes=5, pool=default, **TINY).eval()
    assert list(plain.state_dict()) == list(explicit.state_dict())
    assert not any(k.startswith("head.pooler") for k in plain.state_dict())
    assert [k for k in plain.state_dict() if k.startswith("head.")] == ["head.fc.weight", "head.fc.bias"]
    x = _clip(plain)
    with torch.no_grad():
        assert torch.equal(plain(x), explicit(x))
    assert plain.spec == explicit.spec and plain.spec.kwargs["pool"] == default
    assert plain.spec.kwargs["pool_keep"] is None


@pytest.mark.parametrize("name", CNN_MODELS)
def test_cnn_pools_shapes_and_features(name):
    for pool in ("attentive_patch", "cross_attention"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=5, pool=pool, **TINY).eval()
        x = _clip(model)
        with torch.no_grad():
            feats = model.forward_features(x)
            pooled = model.forward_head(feats, pre_logits=True)
            logits = model(x)
        assert pooled.shape == (2, model.num_features) and logits.shape == (2, 5)
        torch.testing.assert_close(logits, model.head.fc(pooled))
        assert isinstance(model.head, ClassifierHead) and model.head.pool == pool
        has_weights = any(k.startswith("head.pooler.") for k in model.state_dict())
        assert has_weights == (pool == "cross_attention")


def test_attentive_patch_head_reads_the_top_positions_of_the_model_map():
    """r3d_tiny's attentive head equals the top-k mean computed here on its own feature map."""
    torch.manual_seed(0)
    model = create_model("r3d_tiny", num_classes=5, pool="attentive_patch", pool_keep=0.25, **TINY).eval()
    x = _clip(model)
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, D, T', h, w)
        pooled = model.forward_head(feats, pre_logits=True)
    flat = feats.flatten(2)
    k = max(int(flat.shape[2] * 0.25), 1)
    for b in range(2):
        order = flat[b].abs().sum(0).argsort(descending=True)[:k]
        torch.testing.assert_close(pooled[b], flat[b][:, order].mean(1))
    assert not torch.allclose(pooled, flat.mean(-1))


def test_timesformer_attentive_token_pool():
    torch.manual_seed(0)
    model = create_model("timesformer_tiny", num_classes=5, pool="attentive_token", pool_keep=5, **TINY).eval()
    x = _clip(model)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    cls, patches = tokens[:, 0], tokens[:, 1:]
    for b in range(2):
        top = (patches[b] @ cls[b]).argsort(descending=True)[:5]
        torch.testing.assert_close(pooled[b], patches[b, top].mean(0))
    with pytest.raises(ValueError, match="only"):  # more tokens than the 4 x 16 patch tokens
        create_model("timesformer_tiny", num_classes=5, pool="attentive_token", pool_keep=65, **TINY)(x)


@pytest.mark.parametrize(("name", "pool", "keep"), [
    ("tsm_tiny", "cross_attention", None),
    ("r3d_tiny", "attentive_patch", 3),
    ("timesformer_tiny", "attentive_token", 0.5),
])
def test_checkpoint_round_trip_of_a_non_default_pool(tmp_path, name, pool, keep):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, pool=pool, pool_keep=keep, **TINY)
    x = _clip(model)
    model(x).sum().backward()  # BatchNorm statistics move; the head's weights get gradients
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.01)
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, class_names=["a", "b", "c"])
    payload = load_checkpoint(path)
    assert payload["model_kwargs"]["pool"] == pool and payload["model_kwargs"]["pool_keep"] == keep
    rebuilt = model_from_checkpoint(payload)
    model.eval(), rebuilt.eval()
    assert rebuilt.spec == model.spec
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_reset_classifier_keeps_the_pooler():
    torch.manual_seed(0)
    model = create_model("tsm_tiny", num_classes=5, pool="cross_attention", **TINY)
    pooler = model.head.pooler
    model.reset_classifier(2)
    assert model.head.pooler is pooler and model(_clip(model)).shape == (2, 2)
    model.reset_classifier(0)
    assert model(_clip(model)).shape == (2, model.num_features)


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("r3d_tiny", dict(pool="max"), r"pool: expected one of \('avg', 'attentive_patch', 'cross_attention'\), got 'max'"),
    ("tsm_tiny", dict(pool="attentive_token"), "got 'attentive_token'"),
    ("frame_tiny", dict(pool="token"), "got 'token'"),
    ("flow_tiny", dict(pool="avg", pool_keep=0.5), "pool_keep: only used with pool in"),
    ("tsm_tiny", dict(pool="cross_attention", pool_keep=4), "pool_keep: only used"),
    ("r3d_tiny", dict(pool="attentive_patch", pool_keep=1.5), r"pool_keep: expected a fraction in \(0, 1\]"),
    ("r3d_tiny", dict(pool="attentive_patch", pool_keep=0), "pool_keep: expected a count >= 1"),
    ("timesformer_tiny", dict(pool="attentive_patch"),
     r"pool: expected one of \('token', 'mean', 'attentive_token'\), got 'attentive_patch'"),
])
def test_bad_pool_values_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, num_classes=5, **TINY, **kwargs)
