"""How a clip becomes a model input: one serialisable spec and one function, for training and prediction.

:class:`ClipPipeline` is the whole preprocessing choice (key-frame sampling, size, crop, flip,
grayscale, frame differences, modality, optical flow, normalisation). The engine builds it once from a
recipe (:meth:`ClipPipeline.for_model`), the Dataset runs it, checkpoints and exports store
:meth:`~ClipPipeline.to_dict`, and the predictor, export and benchmark rebuild it with
:meth:`~ClipPipeline.from_dict`; so a data setting added here reaches every path, and training and
inference cannot drift apart.

:func:`clip_to_input` is the one path from decoded frames to the ``(C, T, H, W)`` tensor: interpolate
the sampled times, then the RGB transform and frame differences and/or the optical-flow channels.
Decoding and resizing stay with the caller (the Dataset reads through its cache, the predictor crops
faces first); both give it frames resized by :func:`~microexp.data.transforms.resize_frames`.

Training-mode randomness: sampling draws (:meth:`ClipPipeline.times`), random crops and flips for RGB
models. Flow models sample deterministically and augment with a horizontal flip only, which negates
dx: flow is cached per set of sampled frames, and a random crop would rescale the displacements.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from microexp.data.apex_flow import (
    ApexFlowSpec, apex_flow_pixels, encode_flow, flip_encoded, flow_file_input, resize_flow,
)
from microexp.data.flow import DEFAULT_FLOW_METHOD, FlowSpec
from microexp.data.sampling import SamplingSpec, interpolate_frames
from microexp.data.transforms import (
    FRAME_DIFFERENCES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformSpec,
    build_video_transform,
    difference_frames,
    frames_to_video,
)
from microexp.errors import ConfigError

__all__ = ["FLOW_SEQUENCE_MODALITIES", "MODALITIES", "PIPELINE_VERSION", "ClipPipeline", "clip_to_input",
           "encoded_apex_input", "read_flow_file_input"]

#: what a model reads: RGB frames, optical-flow channels, RGB then flow (the two-stream input), or one
#: onset->apex flow with optical strain ``(3, 1, H, W)`` (STSTNet, Off-ApexNet, HTNet)
MODALITIES = ("rgb", "flow", "rgb+flow", "apex_flow")
#: modalities whose channels are a flow sequence (dx, dy[, strain]) of the sampled frames
FLOW_SEQUENCE_MODALITIES = ("flow", "rgb+flow")
#: version of :meth:`ClipPipeline.to_dict`'s layout (2 added ``apex``; version 1 dicts still load)
PIPELINE_VERSION = 2


@dataclass(frozen=True)
class ClipPipeline:
    """Everything that decides a clip's model input.

    Args:
        sampling: which frames (or fractional times) are taken from onset..offset.
        transform: size, training crop and flip, grayscale and normalisation of the RGB channels.
        modality: one of :data:`MODALITIES` (a model's ``spec.modality``).
        frame_difference: 'none', 'first' or 'previous': the RGB channels show each normalised frame
            minus the first sampled frame or the previous one.
        flow: how the flow channels are computed; required by ``flow`` and ``rgb+flow`` (default
            ``FlowSpec()``), None otherwise.
        apex: how the one onset->apex flow of ``apex_flow`` is made and encoded (default
            ``ApexFlowSpec()``; see :mod:`microexp.data.apex_flow`), None otherwise. Its frames are the
            onset and the apex (``sampling`` is then ``onset_apex`` with 2 frames), read at
            ``apex.compute_size``; the input is ``(3, 1, size, size)``.
    """

    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    transform: TransformSpec = field(default_factory=TransformSpec)
    modality: str = "rgb"
    frame_difference: str = "none"
    flow: FlowSpec | None = None
    apex: ApexFlowSpec | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality={self.modality!r}: expected one of {', '.join(MODALITIES)}")
        if self.frame_difference not in FRAME_DIFFERENCES:
            raise ConfigError(f"frame_difference={self.frame_difference!r}: expected one of "
                              f"{', '.join(FRAME_DIFFERENCES)}")
        if self.modality in FLOW_SEQUENCE_MODALITIES and self.flow is None:
            object.__setattr__(self, "flow", FlowSpec())
        elif self.modality not in FLOW_SEQUENCE_MODALITIES and self.flow is not None:
            object.__setattr__(self, "flow", None)  # no flow sequence for this model, whatever was passed
        if self.modality == "apex_flow":
            if self.apex is None:
                object.__setattr__(self, "apex", ApexFlowSpec())
            # the onset and the apex frame, whatever sampling was asked for
            object.__setattr__(self, "sampling", SamplingSpec("onset_apex", num_frames=2))
        elif self.apex is not None:
            object.__setattr__(self, "apex", None)
        # tuples, so the spec hashes (the built transform is cached per spec) and compares by value
        t = self.transform
        if not (isinstance(t.mean, tuple) and isinstance(t.std, tuple)):
            object.__setattr__(self, "transform", TransformSpec(
                size=t.size, crop_scale=t.crop_scale, flip=t.flip, grayscale=t.grayscale,
                mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std)))

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def for_model(
        cls,
        spec: Any,
        *,
        num_frames: int,
        sampling: str = "uniform",
        stride: int = 1,
        reference_fps: float | None = None,
        size: int,
        crop_scale: float = 0.85,
        flip: bool = True,
        grayscale: bool = False,
        frame_difference: str = "none",
        flow_method: str = DEFAULT_FLOW_METHOD,
        apex_flow: ApexFlowSpec | None = None,
        modality: str | None = None,
    ) -> "ClipPipeline":
        """The pipeline of a recipe's ``data`` settings for a model with ``spec`` (a ``ModelSpec``).

        The model decides the modality, the normalisation of its RGB channels (its ``mean``/``std``;
        ImageNet's for flow-only models, which have none) and whether flow carries a strain channel.
        ``apex_flow`` (default ``ApexFlowSpec(method=flow_method)``) is used by ``apex_flow`` inputs only.
        ``modality`` overrides the model's (``data.modality``: ``apex_flow`` for a 3-channel one-frame model).
        """
        modality = modality or spec.modality
        rgb = modality in ("rgb", "rgb+flow")
        mean = tuple(float(v) for v in spec.mean[:3]) if rgb else IMAGENET_MEAN
        std = tuple(float(v) for v in spec.std[:3]) if rgb else IMAGENET_STD
        flow = (FlowSpec(method=flow_method, strain=spec.flow_channels == 3)
                if modality in FLOW_SEQUENCE_MODALITIES else None)
        apex = (apex_flow or ApexFlowSpec(method=flow_method)) if modality == "apex_flow" else None
        return cls(
            sampling=SamplingSpec(sampling, num_frames=num_frames, stride=stride, reference_fps=reference_fps),
            transform=TransformSpec(size=size, crop_scale=crop_scale, flip=flip, grayscale=grayscale,
                                    mean=mean, std=std),
            modality=modality, frame_difference=frame_difference, flow=flow, apex=apex,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints load with ``weights_only=True``); :meth:`from_dict` inverts it."""
        s, t, f, a = self.sampling, self.transform, self.flow, self.apex
        return {
            "version": PIPELINE_VERSION,
            "sampling": {"strategy": s.strategy, "num_frames": s.num_frames, "stride": s.stride,
                         "reference_fps": s.reference_fps},
            "transform": {"size": t.size, "crop_scale": t.crop_scale, "flip": t.flip, "grayscale": t.grayscale,
                          "mean": list(t.mean), "std": list(t.std)},
            "modality": self.modality,
            "frame_difference": self.frame_difference,
            "flow": None if f is None else {"method": f.method, "reference": f.reference, "strain": f.strain},
            "apex": None if a is None else {"method": a.method, "compute_size": a.compute_size, "encoding": a.encoding},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipPipeline":
        """The pipeline :meth:`to_dict` wrote; a ConfigError names a missing or unknown key."""
        version = data.get("version")
        if version not in (1, PIPELINE_VERSION):
            raise ConfigError(f"preprocessing pipeline version {version!r}: this microexp reads versions 1 to "
                              f"{PIPELINE_VERSION}; upgrade microexp to use this checkpoint")
        expected = {"version", "sampling", "transform", "modality", "frame_difference", "flow"}
        if version >= 2:
            expected.add("apex")
        keys = set(data)
        if keys != expected:
            raise ConfigError(f"preprocessing pipeline: keys {sorted(keys)}: expected {sorted(expected)}")
        try:
            transform = dict(data["transform"])
            transform["mean"] = tuple(transform["mean"])
            transform["std"] = tuple(transform["std"])
            return cls(
                sampling=SamplingSpec(**data["sampling"]),
                transform=TransformSpec(**transform),
                modality=data["modality"], frame_difference=data["frame_difference"],
                flow=None if data["flow"] is None else FlowSpec(**data["flow"]),
                apex=None if data.get("apex") is None else ApexFlowSpec(**data["apex"]),
            )
        except TypeError as exc:  # an unknown or missing field of one part
            raise ConfigError(f"preprocessing pipeline: {exc}") from None

    @classmethod
    def from_checkpoint_data(cls, data: Mapping[str, Any], spec: Any) -> "ClipPipeline":
        """The pipeline of a checkpoint's or export's ``data`` dict.

        ``data["pipeline"]`` since the pipeline existed; older files hold the recipe's data keys (their
        defaults then were those of :meth:`for_model`, with uniform sampling), and a file without any
        falls back to the model's own ``num_frames``/``input_size``.
        """
        if "pipeline" in data:
            return cls.from_dict(data["pipeline"])
        legacy = ("num_frames", "sampling", "stride", "reference_fps", "size", "grayscale", "frame_difference",
                  "flow_method")
        settings = {k: data[k] for k in legacy if data.get(k) is not None}
        settings.setdefault("num_frames", spec.num_frames)
        settings.setdefault("size", spec.input_size)
        return cls.for_model(spec, **settings)

    # -- what it does --------------------------------------------------------------------------------

    @property
    def flow_channels(self) -> int:
        if self.apex is not None:
            return 3
        return 0 if self.flow is None else self.flow.channels

    @property
    def channels(self) -> int:
        """C of the model input: 3 RGB, the flow channels, or both."""
        return (3 if self.modality in ("rgb", "rgb+flow") else 0) + self.flow_channels

    @property
    def frame_size(self) -> int:
        """Side of the square frames this pipeline is given (the Dataset caches frames at this size)."""
        return self.apex.compute_size if self.apex is not None else self.transform.size

    def input_shape(self) -> tuple[int, int, int, int]:
        """``(C, T, H, W)`` of one clip's model input."""
        frames = 1 if self.apex is not None else self.sampling.num_frames
        return (self.channels, frames, self.transform.size, self.transform.size)

    @property
    def reads_motion(self) -> str | None:
        """What in this input needs at least 2 frames (optical flow, frame differences), or None."""
        if self.flow is not None or self.apex is not None:
            return "optical flow"
        if self.frame_difference != "none":
            return f"frame differences ({self.frame_difference})"
        return None

    def times(self, onset: int, apex: int, offset: int, *, fps: float | None = None, train: bool = False,
              rng: np.random.Generator | None = None) -> np.ndarray:
        """The sampled times of a clip; random draws only when training an RGB model (flow samples fixed)."""
        moving = self.flow is not None or self.apex is not None
        return self.sampling.times(onset, apex, offset, fps=fps, train=train and not moving, rng=rng)


def clip_to_input(
    pipeline: ClipPipeline,
    frames: np.ndarray,
    times: np.ndarray,
    *,
    numbers: list[int],
    train: bool = False,
    rng: np.random.Generator | None = None,
    flow_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> torch.Tensor:
    """A clip's model input from its decoded frames.

    Args:
        pipeline: the preprocessing spec.
        frames: uint8 ``(N, S, S, 3)``: the frames with the sorted frame numbers ``numbers``
            (``frames_needed(times)``), resized to a square by ``resize_frames``.
        times: the sampled times (``pipeline.times``), fractional for interpolating strategies.
        numbers: frame numbers of ``frames``.
        train: training mode (random crop and flip for RGB models, flip for flow models); needs ``rng``.
        rng: the item's own generator: crops and flips depend on it alone (not on torch's global
            generator, a DataLoader worker or where a resumed run restarted).
        flow_of: computes flow ``(T, S, S, C)`` of the sampled frames (the Dataset passes its cache);
            default ``pipeline.flow.compute`` (:func:`~microexp.data.flow.clip_flow` with its settings).
            For ``apex_flow``: the ``(S, S, 3)`` u, v, strain flow in pixels of the two frames (onset,
            apex); default :func:`~microexp.data.apex_flow.apex_flow_pixels`.

    Returns:
        float32 ``(C, T, size, size)``: normalised RGB (or its frame differences), flow channels
        (dx, dy[, strain]) in pixels, or RGB then flow; ``(3, 1, size, size)`` for ``apex_flow``.
    """
    sampled = interpolate_frames(frames, times, numbers=numbers)
    random = train and rng is not None
    if pipeline.apex is not None:
        flow = flow_of(sampled) if flow_of is not None else apex_flow_pixels(sampled[0], sampled[-1], pipeline.apex.method)
        return encoded_apex_input(pipeline, resize_flow(flow, pipeline.transform.size), rng if random else None)
    if pipeline.flow is None:
        return _rgb(pipeline, sampled, rng if random else None, train=random)
    sampled = np.ascontiguousarray(sampled)
    flows = (flow_of or pipeline.flow.compute)(sampled)
    if random and pipeline.transform.flip and bool(rng.random() < 0.5):
        # mirror the frames and the flow field; horizontal displacements change sign
        sampled = np.ascontiguousarray(sampled[:, :, ::-1])
        flows = flows[:, :, ::-1].copy()
        flows[..., 0] *= -1
    flow_tensor = torch.from_numpy(np.ascontiguousarray(flows, dtype=np.float32)).permute(3, 0, 1, 2)
    if pipeline.modality == "flow":
        return flow_tensor.contiguous()
    return torch.cat([_rgb(pipeline, sampled, None, train=False), flow_tensor])


def read_flow_file_input(pipeline: ClipPipeline, path: str) -> np.ndarray:
    """A ``flow_path`` file as this ``apex_flow`` pipeline's model sees it, before any training flip:
    ``(size, size, 3)`` float32 in ``apex.encoding`` (then :func:`encoded_apex_input` with ``encoded=True``)."""
    assert pipeline.apex is not None
    return flow_file_input(path, size=pipeline.transform.size, encoding=pipeline.apex.encoding)


def encoded_apex_input(pipeline: ClipPipeline, encoded_or_pixels: np.ndarray, rng: np.random.Generator | None, *,
                       encoded: bool = False) -> torch.Tensor:
    """An apex flow ``(size, size, 3)`` (in pixels, or already ``encoded``) -> the ``(3, 1, size, size)`` input.

    With ``rng`` (training) and ``transform.flip``, a horizontal flip with probability 1/2.
    """
    assert pipeline.apex is not None
    encoding = pipeline.apex.encoding
    flow = encoded_or_pixels if encoded else encode_flow(encoded_or_pixels, encoding)
    if rng is not None and pipeline.transform.flip and bool(rng.random() < 0.5):
        flow = flip_encoded(flow, encoding)
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1).unsqueeze(1).contiguous()


def _rgb(pipeline: ClipPipeline, frames: np.ndarray, rng: np.random.Generator | None, *, train: bool) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised float (3, T, H, W).

    v2's random transforms draw from torch's global generator; with ``rng`` they draw from a fork of it
    seeded by the item's own generator.
    """
    transform = _video_transform(pipeline.transform, train)
    if rng is None:
        video = transform(frames_to_video(frames))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            video = transform(frames_to_video(frames))
    video = difference_frames(video.as_subclass(torch.Tensor), pipeline.frame_difference, time_dim=0)
    return video.permute(1, 0, 2, 3).contiguous()


@functools.lru_cache(maxsize=32)
def _video_transform(spec: TransformSpec, train: bool) -> Callable[[Any], Any]:
    """The v2 pipeline of ``spec`` (stateless: its random draws come from torch's generator), built once."""
    return build_video_transform(spec, train=train)
