"""TimeSformer's divided space-time block against a slow reference written from the paper's definition.

Bertasius, Wang & Torresani, "Is Space-Time Attention All You Need for Video Understanding?" (ICML 2021),
eq. 7-8, and the official ``divided_space_time`` block: temporal attention of each patch over the same
spatial position in all ``T`` frames (no class token), through ``temporal_fc``, with a residual; then
spatial attention of each frame's ``N`` patches plus the class token, the class token's output being the
mean over frames of its per-frame outputs; a residual; then the MLP with a residual. Tokens are
``(B, 1 + T*N, D)``: the class token, then frame-major patches (token ``1 + t*N + p`` is frame ``t``,
position ``p``), as :class:`~microexp.models.transformer.DividedSpaceTimeBlock` documents.

The reference loops over frames, positions and heads and takes q, k, v, the output projection, the layer
norms and the MLP from the block's own parameters, in float64. The structural tests run the block's own
forward with the other sub-layers switched off (their output projections zeroed) and read which input
tokens each output token depends on by perturbing each input token in turn (float64; a random direction,
since a constant shift of a token vanishes in its layer norm).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from microexp.models.transformer import DividedSpaceTimeBlock

DIM, T, N = 16, 3, 4
L = 1 + T * N  # tokens: class token + T*N patches


def _block(num_heads: int, seed: int = 0) -> DividedSpaceTimeBlock:
    """A block with every parameter random (temporal_fc too: TimeSformer zeroes it in later blocks, and the
    attention biases and layer norms, which start at 0/1), in eval mode."""
    torch.manual_seed(seed)
    block = DividedSpaceTimeBlock(dim=DIM, num_heads=num_heads, mlp_ratio=2.0)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0.0, 0.3)
        for norm in (block.temporal_norm1, block.norm1, block.norm2):
            norm.weight.add_(1.0)
    return block.eval()


# ------------------------------------------------------------------------------------------------ the reference


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm of one token ``(D,)``."""
    mean = x.mean()
    var = ((x - mean) ** 2).mean()
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def _attention(tokens: list[torch.Tensor], mha: nn.MultiheadAttention) -> list[torch.Tensor]:
    """Multi-head self-attention over a list of ``(D,)`` tokens, one query at a time, one head at a time."""
    d, heads = mha.embed_dim, mha.num_heads
    dh = d // heads
    w, bias = mha.in_proj_weight.double(), mha.in_proj_bias.double()
    q = [w[:d] @ x + bias[:d] for x in tokens]
    k = [w[d:2 * d] @ x + bias[d:2 * d] for x in tokens]
    v = [w[2 * d:] @ x + bias[2 * d:] for x in tokens]
    out = []
    for i in range(len(tokens)):
        per_head = []
        for h in range(heads):
            s = slice(h * dh, (h + 1) * dh)
            scores = [float(q[i][s] @ k[j][s]) / math.sqrt(dh) for j in range(len(tokens))]
            top = max(scores)
            weights = [math.exp(x - top) for x in scores]
            total = sum(weights)
            per_head.append(sum((wj / total) * v[j][s] for j, wj in enumerate(weights)))
        out.append(mha.out_proj.weight.double() @ torch.cat(per_head) + mha.out_proj.bias.double())
    return out


def _mlp(x: torch.Tensor, block: DividedSpaceTimeBlock) -> torch.Tensor:
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    hidden = fc1.weight.double() @ x + fc1.bias.double()
    hidden = 0.5 * hidden * (1.0 + torch.erf(hidden / math.sqrt(2.0)))  # exact GELU
    return fc2.weight.double() @ hidden + fc2.bias.double()


@torch.no_grad()
def reference_block(block: DividedSpaceTimeBlock, x: torch.Tensor, num_frames: int, *,
                    layout: str = "frame_major", cls_from: str = "mean") -> torch.Tensor:
    """One divided space-time block from the definition, per sample, in float64.

    Args:
        x: ``(B, 1 + T*N, D)``.
        layout: where patch (frame t, position p) is: ``'frame_major'`` (token ``1 + t*N + p``, the block's
            layout) or ``'position_major'`` (``1 + p*T + t``, the official code's ``(h w t)``): the latter
            exists to show that the comparison can fail.
        cls_from: the class token's spatial output: ``'mean'`` over frames (the paper) or ``'first'`` frame's
            (a wrong variant, to show the comparison can fail).
    """
    b, length, _ = x.shape
    n = (length - 1) // num_frames

    def index(t: int, p: int) -> int:
        return 1 + (t * n + p if layout == "frame_major" else p * num_frames + t)

    out = torch.empty(x.shape, dtype=torch.float64)
    for i in range(b):
        tokens = x[i].double()
        cls = tokens[0]
        # (a) temporal attention: position p of every frame, no class token; temporal_fc; residual
        after_time: dict[tuple[int, int], torch.Tensor] = {}
        for p in range(n):
            seq = [tokens[index(t, p)] for t in range(num_frames)]
            attended = _attention([_layer_norm(z, block.temporal_norm1) for z in seq], block.temporal_attn)
            fc = block.temporal_fc
            for t in range(num_frames):
                after_time[t, p] = seq[t] + fc.weight.double() @ attended[t] + fc.bias.double()
        # (b) spatial attention: the class token and frame t's N patches; class output averaged over frames
        cls_outputs = []
        after_space: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(num_frames):
            seq = [cls] + [after_time[t, p] for p in range(n)]
            attended = _attention([_layer_norm(z, block.norm1) for z in seq], block.attn)
            cls_outputs.append(attended[0])
            for p in range(n):
                after_space[t, p] = after_time[t, p] + attended[1 + p]
        cls_res = sum(cls_outputs) / num_frames if cls_from == "mean" else cls_outputs[0]
        mixed = {0: cls + cls_res} | {index(t, p): z for (t, p), z in after_space.items()}
        # MLP with residual, per token
        for j, z in mixed.items():
            out[i, j] = z + _mlp(_layer_norm(z, block.norm2), block)
    return out


# ------------------------------------------------------------------------------------------------ (1) equality


@pytest.mark.parametrize("num_heads", [2, 4])
def test_block_equals_the_reference(num_heads: int):
    block = _block(num_heads)
    torch.manual_seed(1)
    x = torch.randn(2, L, DIM)
    with torch.no_grad():
        got = block(x, T)
    want = reference_block(block, x, T)
    assert got.shape == (2, L, DIM)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    # the temporal branch matters here (random temporal_fc): without it the block would differ
    with torch.no_grad():
        block.temporal_fc.weight.zero_()
        block.temporal_fc.bias.zero_()
        assert (block(x, T).double() - want).abs().max() > 1e-2


@pytest.mark.parametrize("variant", [dict(layout="position_major"), dict(cls_from="first")])
def test_wrong_references_disagree(variant: dict[str, str]):
    """The comparison can fail: the official code's position-major layout (T and N swapped) or a class
    token read from one frame instead of the mean differ from the block by far more than the tolerance."""
    block = _block(2)
    torch.manual_seed(1)
    x = torch.randn(2, L, DIM)
    with torch.no_grad():
        got = block(x, T).double()
    assert (got - reference_block(block, x, T, **variant)).abs().max() > 1e-2


def test_reference_is_the_block_on_a_frame_count_of_one():
    """With T=1 temporal attention over one frame is a function of the token itself: both agree for N=12."""
    block = _block(4)
    torch.manual_seed(2)
    x = torch.randn(1, 1 + 12, DIM)
    with torch.no_grad():
        got = block(x, 1)
    torch.testing.assert_close(got.double(), reference_block(block, x, 1), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ (2)-(3) structure


def _only(block: DividedSpaceTimeBlock, keep: str) -> DividedSpaceTimeBlock:
    """The block with the residual branches other than ``keep`` (``'temporal'``, ``'spatial'``) switched off:
    their last projection zeroed, so the block's own forward computes that sub-layer alone (plus identity)."""
    with torch.no_grad():
        off = [block.mlp.fc2]
        off.append(block.attn.out_proj if keep == "temporal" else block.temporal_fc)
        for layer in off:
            layer.weight.zero_()
            layer.bias.zero_()
    return block


def _changed(block: DividedSpaceTimeBlock, x: torch.Tensor, j: int, scale: float = 0.5) -> torch.Tensor:
    """``(L,)`` bool: the output tokens that change when input token ``j`` of ``x`` ``(1, L, D)`` moves in a
    random direction (not a constant shift, which the token's layer norm would remove)."""
    generator = torch.Generator().manual_seed(100 + j)
    bumped = x.clone()
    bumped[0, j] += scale * torch.randn(x.shape[-1], generator=generator, dtype=x.dtype)
    with torch.no_grad():
        delta = (block(bumped, T) - block(x, T))[0].abs().amax(dim=1)
    tol = 1e-9 if x.dtype == torch.float64 else 1e-4
    return delta > tol


def _dependence(block: DividedSpaceTimeBlock) -> torch.Tensor:
    """``(L, L)`` bool: output token i depends on input token j, from one perturbation of each input token."""
    torch.manual_seed(3)
    x = torch.randn(1, L, DIM, dtype=torch.float64)
    block = block.double()
    return torch.stack([_changed(block, x, j) for j in range(L)], dim=1)


def _patch(t: int, p: int) -> int:
    return 1 + t * N + p


def test_temporal_sublayer_mixes_one_position_across_frames():
    dep = _dependence(_only(_block(2), "temporal"))
    expected = torch.zeros(L, L, dtype=torch.bool)
    expected[0, 0] = True  # the class token does not take part in temporal attention
    for p in range(N):
        for t in range(T):
            for u in range(T):
                expected[_patch(t, p), _patch(u, p)] = True
    assert torch.equal(dep, expected), (dep.int() - expected.int()).nonzero().tolist()


def test_spatial_sublayer_mixes_one_frame_and_the_class_token():
    dep = _dependence(_only(_block(2), "spatial"))
    expected = torch.zeros(L, L, dtype=torch.bool)
    expected[0, :] = True  # the class token's output: the mean over frames of its attention to each frame
    for t in range(T):
        for p in range(N):
            expected[_patch(t, p), 0] = True  # the class token joins every frame's spatial attention
            for q in range(N):
                expected[_patch(t, p), _patch(t, q)] = True
    assert torch.equal(dep, expected), (dep.int() - expected.int()).nonzero().tolist()


def test_perturbing_one_token_in_each_sublayer_float32():
    """The same facts in the default dtype: token (t=1, p=2) changes position 2 of every frame after the
    temporal sub-layer, and frame 1 plus the class token after the spatial sub-layer."""
    torch.manual_seed(4)
    x = torch.randn(1, L, DIM)
    for keep, changed in (("temporal", {_patch(t, 2) for t in range(T)}),
                          ("spatial", {0} | {_patch(1, q) for q in range(N)})):
        got = _changed(_only(_block(2), keep), x, _patch(1, 2))
        assert {int(i) for i in got.nonzero().flatten()} == changed, keep


def test_full_block_reaches_every_token():
    """One full block: the class token reaches every patch (through every frame's spatial attention), and a
    patch reaches every token (temporal, then spatial mixing)."""
    assert _dependence(_block(2)).all()
    torch.manual_seed(5)
    assert _changed(_block(4), torch.randn(1, L, DIM), 0).all()  # float32, 4 heads: the class token
