"""Temporal shift against a slow reference written from its definition, and its place in TSM models."""

from __future__ import annotations

import pytest
import torch

from microexp.models import create_model
from microexp.models.layers import TemporalShift
from microexp.models.tsm import temporal_shift


def reference_shift(x: torch.Tensor, num_segments: int, fold_div: int) -> torch.Tensor:
    """Explicit loops: channel c of frame t of clip n, from the definition.

    fold = C // fold_div; channels [0, fold) take the value of the NEXT frame (moved one step back in
    time), channels [fold, 2 fold) the value of the PREVIOUS frame (one step forward), the rest their own;
    where that frame does not exist, zero.
    """
    nt, c, h, w = x.shape
    t_len = num_segments
    fold = c // fold_div
    out = torch.empty_like(x)
    for n in range(nt // t_len):
        for t in range(t_len):
            for ch in range(c):
                if ch < fold:
                    src = t + 1
                elif ch < 2 * fold:
                    src = t - 1
                else:
                    src = t
                if 0 <= src < t_len:
                    out[n * t_len + t, ch] = x[n * t_len + src, ch]
                else:
                    out[n * t_len + t, ch] = 0.0
    return out


@pytest.mark.parametrize(
    "clips,segments,channels,fold_div",
    [(2, 4, 16, 8), (1, 8, 24, 8), (3, 3, 10, 4), (2, 5, 7, 2), (1, 1, 16, 8), (2, 4, 5, 8), (1, 6, 12, 3)],
)
def test_temporal_shift_matches_reference(clips, segments, channels, fold_div):
    g = torch.Generator().manual_seed(clips * 100 + segments * 10 + channels)
    x = torch.randn(clips * segments, channels, 3, 2, generator=g)
    out = temporal_shift(x, segments, fold_div)
    assert out.shape == x.shape
    assert torch.equal(out, reference_shift(x, segments, fold_div))


def test_temporal_shift_direction_on_a_ramp():
    """Frame t holds the value t: shifted-back channels read t+1, shifted-forward channels t-1."""
    t_len, c = 4, 8
    x = torch.arange(t_len, dtype=torch.float32).view(t_len, 1, 1, 1).expand(t_len, c, 1, 1).contiguous()
    out = temporal_shift(x, t_len, fold_div=4)[:, :, 0, 0]
    assert out[:, 0].tolist() == [1, 2, 3, 0]
    assert out[:, 2].tolist() == [0, 0, 1, 2]
    assert out[:, 4].tolist() == [0, 1, 2, 3]


def test_temporal_shift_gradients():
    x = torch.randn(2 * 3, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: temporal_shift(v, 3, 4), (x,))
    # the gradient of sum(out * g) is g shifted the opposite way
    g = torch.randn(6, 8, 2, 2, dtype=torch.float64)
    (temporal_shift(x, 3, 4) * g).sum().backward()
    expected = torch.zeros_like(g)
    gv, ev = g.view(2, 3, 8, 2, 2), expected.view(2, 3, 8, 2, 2)
    ev[:, 1:, :2] = gv[:, :-1, :2]
    ev[:, :-1, 2:4] = gv[:, 1:, 2:4]
    ev[:, :, 4:] = gv[:, :, 4:]
    assert torch.equal(x.grad, expected)


def test_temporal_shift_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of num_segments=4"):
        temporal_shift(torch.zeros(6, 8, 1, 1), 4)
    with pytest.raises(ValueError, match="fold_div"):
        temporal_shift(torch.zeros(4, 8, 1, 1), 4, fold_div=0)


def test_tsm_shifts_every_residual_branch():
    model = create_model("tsm_r18", num_classes=7, num_frames=4, fold_div=8)
    blocks = model.backbone.residual_blocks()
    assert len(blocks) == 8
    for block in blocks:
        assert isinstance(block.conv1, TemporalShift)
        assert (block.conv1.num_segments, block.conv1.fold_div) == (4, 8)
        assert not isinstance(block.conv2, TemporalShift)  # only the residual branch's first conv
    assert "backbone.layer1.0.conv1.net.weight" in model.state_dict()
    r50 = create_model("tsm_r50", num_classes=7)
    assert len(r50.backbone.residual_blocks()) == 16
    assert all(isinstance(b.conv1, TemporalShift) for b in r50.backbone.residual_blocks())


def test_tsm_mixes_frames_and_keeps_clips_apart():
    torch.manual_seed(0)
    model = create_model("tsm_tiny", num_classes=7, num_frames=4).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    y = x.clone()
    y[0, :, 0] = torch.randn(3, 64, 64)  # change frame 0 of clip 0 only
    with torch.no_grad():
        fx, fy = model.forward_features(x), model.forward_features(y)
    assert fx.shape[:3] == (2, model.num_features, 4)
    assert not torch.allclose(fx[0, :, 1], fy[0, :, 1])  # information moved to frame 1 through the shift
    assert torch.equal(fx[1], fy[1])  # the other clip is untouched
