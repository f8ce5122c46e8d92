"""Video transforms: one set of random parameters per clip, exact shapes and normalisation."""

import numpy as np
import pytest
import torch

from microexp.data.transforms import TransformSpec, build_video_transform, frames_to_video, resize_frames
from microexp.errors import ConfigError


def _ramp_clip(t=4, h=40, w=48):
    """Frames whose pixel value encodes (frame, column) so a crop/flip shows in the numbers."""
    cols = np.tile(np.arange(w, dtype=np.uint8) * 5, (h, 1))
    return np.stack([np.repeat((cols + i)[..., None], 3, axis=2) for i in range(t)])


def test_eval_transform_is_deterministic_and_normalised():
    spec = TransformSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    transform = build_video_transform(spec, train=False)
    frames = _ramp_clip()
    a = transform(frames_to_video(frames))
    b = transform(frames_to_video(frames))
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_train_transform_applies_the_same_crop_and_flip_to_every_frame():
    spec = TransformSpec(size=24, crop_scale=0.5, flip=True, mean=(0, 0, 0), std=(1, 1, 1))
    transform = build_video_transform(spec, train=True)
    frames = _ramp_clip()
    torch.manual_seed(0)
    for _ in range(5):
        out = transform(frames_to_video(frames))
        # frame i = frame 0 + i/255 everywhere: only possible if all frames share crop and flip
        for i in range(1, 4):
            assert torch.allclose(out[i] - out[0], torch.full_like(out[0], i / 255), atol=2e-2)


def test_grayscale_gives_three_equal_channels():
    spec = TransformSpec(size=16, grayscale=True)
    rgb = np.random.default_rng(0).integers(0, 255, size=(2, 16, 16, 3), dtype=np.uint8)
    out = build_video_transform(spec, train=False)(frames_to_video(rgb))
    unnormalised = out * torch.tensor(spec.std)[:, None, None] + torch.tensor(spec.mean)[:, None, None]
    assert torch.allclose(unnormalised[:, 0], unnormalised[:, 1], atol=1e-5)


def test_resize_frames_short_side_and_centre_crop():
    frames = np.zeros((3, 40, 80, 3), dtype=np.uint8)
    frames[:, :, 20:60] = 200  # the central square survives the crop
    out = resize_frames(frames, 20)
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.uint8
    assert out[:, 2:-2, 2:-2].min() == 200


@pytest.mark.parametrize("kwargs", [{"size": 4}, {"crop_scale": 0.0}, {"std": (1, 0, 1)}])
def test_bad_spec_values_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        TransformSpec(**kwargs)


def test_frames_to_video_rejects_wrong_layout():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        frames_to_video(np.zeros((4, 3, 8, 8), dtype=np.uint8))
