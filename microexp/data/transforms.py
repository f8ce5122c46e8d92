"""Video transforms built on ``torchvision.transforms.v2``.

Frames travel as ``tv_tensors.Video`` of layout ``(T, C, H, W)`` so that every random transform draws
its parameters once per clip and applies them to all frames alike (a crop that moved between frames
would be motion, and motion is the micro-expression signal). ``pytorchvideo.transforms`` is not used:
it imports a module that torchvision removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from microexp.errors import ConfigError

#: ImageNet statistics, the default for backbones that start from ImageNet weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    """What to do to a clip's frames after decoding.

    Args:
        size: output height and width in pixels (frames are square face crops).
        crop_scale: lower bound of the random-resized-crop area when training (1.0 = no random crop).
        flip: random horizontal flip when training (label-safe for DFME: contempt is unilateral on
            either side, so mirroring keeps the class).
        grayscale: convert to 3-channel grayscale (SAMM is grayscale; lets colour and grey data mix).
        mean, std: per-channel normalisation after scaling to [0, 1].
    """

    size: int = 112
    crop_scale: float = 0.85
    flip: bool = True
    grayscale: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"transform size={self.size}: expected an integer >= 8")
        if not 0.1 <= self.crop_scale <= 1.0:
            raise ConfigError(f"transform crop_scale={self.crop_scale}: expected a value in [0.1, 1.0]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"transform mean={self.mean} std={self.std}: expected 3 values each, std > 0")


def build_video_transform(spec: TransformSpec, *, train: bool) -> v2.Compose:
    """Compose the v2 pipeline for a ``tv_tensors.Video`` of uint8 ``(T, C, H, W)``.

    Returns:
        A callable mapping uint8 ``(T, C, H, W)`` to normalised float32 ``(T, C, size, size)``.
    """
    steps: list[v2.Transform] = []
    if train and spec.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(spec.size, scale=(spec.crop_scale, 1.0), ratio=(0.9, 1.1), antialias=True))
    else:
        steps += [v2.Resize(spec.size, antialias=True), v2.CenterCrop(spec.size)]
    if train and spec.flip:
        steps.append(v2.RandomHorizontalFlip())
    if spec.grayscale:
        steps.append(VideoGrayscale())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(spec.mean), std=list(spec.std))]
    return v2.Compose(steps)


class VideoGrayscale(v2.Transform):
    """3-channel grayscale for ``tv_tensors.Video``.

    ``v2.Grayscale`` has no kernel for videos and silently passes them through unchanged (torchvision
    0.29), so the image kernel is applied to the frames as a plain tensor.
    """

    def transform(self, inpt, params):  # noqa: D102 - v2.Transform hook
        if isinstance(inpt, tv_tensors.Video):
            gray = v2.functional.rgb_to_grayscale(inpt.as_subclass(torch.Tensor), num_output_channels=3)
            return tv_tensors.wrap(gray, like=inpt)
        return inpt


#: what the RGB stream shows: the frames, or their change from the first sampled frame or the previous one
FRAME_DIFFERENCES = ("none", "first", "previous")


def difference_frames(video: torch.Tensor, mode: str, *, time_dim: int = 1) -> torch.Tensor:
    """Replace normalised frames by their differences along ``time_dim`` (default: ``(C, T, H, W)``).

    A micro-expression is a small change of a face whose identity dominates every frame; differences
    cancel the identity and keep the motion. ``'first'`` subtracts the first sampled frame (the onset
    under onset-anchored sampling), so frame 0 becomes zero; ``'previous'`` gives consecutive
    differences with frame 0 set to zero. Applied after normalisation, the result is ``delta / std``.
    """
    if mode == "none":
        return video
    if mode not in FRAME_DIFFERENCES:
        raise ConfigError(f"frame_difference={mode!r}: expected one of {', '.join(FRAME_DIFFERENCES)}")
    first = video.narrow(time_dim, 0, 1)
    if mode == "first":
        return video - first
    previous = torch.cat([first, video.narrow(time_dim, 0, video.shape[time_dim] - 1)], dim=time_dim)
    return video - previous


def frames_to_video(frames: np.ndarray) -> tv_tensors.Video:
    """Wrap decoded frames ``(T, H, W, 3)`` uint8 as a ``tv_tensors.Video`` ``(T, 3, H, W)``."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    return tv_tensors.Video(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2))


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``(T, H, W, 3)`` frames so the short side is ``size``, then centre-crop a square.

    Used before caching, so the cache holds small square clips; antialiased like the v2 pipeline.
    """
    video = v2.functional.resize(frames_to_video(frames), [size], antialias=True)
    video = v2.functional.center_crop(video, [size, size])
    return np.ascontiguousarray(video.permute(0, 2, 3, 1).numpy())
