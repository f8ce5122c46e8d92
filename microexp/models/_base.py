"""What every microexp model is: a :class:`ModelSpec` and the :class:`VideoClassifier` interface.

Input convention shared by all models: ``forward`` takes ONE float tensor ``(B, C, T, H, W)``.

- modality ``rgb``: ``C = 3`` RGB key frames, normalised with ``spec.mean``/``spec.std``.
- modality ``flow``: ``C = flow_channels`` (2 = dx, dy; 3 = dx, dy, optical strain). ``flow[:, :, t]`` is the
  displacement of key frame ``t`` relative to the onset frame, so ``flow[:, :, 0]`` is about zero.
- modality ``rgb+flow``: the 3 RGB channels first, then the flow channels, same ``T``.

The trainer and predictor depend on nothing but this interface: ``spec``, ``num_classes``,
``num_features``, ``forward``, ``forward_features``, ``forward_head`` and ``reset_classifier``.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

FAMILIES = ("3dcnn", "two_stream", "tsm", "transformer", "frame", "apex_flow")
MODALITIES = ("rgb", "flow", "rgb+flow", "apex_flow")

#: ImageNet statistics (torchvision 2D backbones).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Kinetics statistics of torchvision's video models (R3D-18, R(2+1)D).
KINETICS_TV_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_TV_STD = (0.22803, 0.22145, 0.216989)
#: Kinetics statistics of pytorchvideo / TimeSformer / MViT recipes.
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """The data contract of a model: what it eats and how to rebuild it.

    Attributes:
        family: one of :data:`FAMILIES`.
        modality: one of :data:`MODALITIES`.
        num_frames: key frames ``T`` per clip the model was built for.
        input_size: square frame side ``H = W`` in pixels the model was built for.
        in_channels: ``C`` of the input tensor (3 for rgb, ``flow_channels`` for flow, both for rgb+flow).
        mean: per-input-channel mean (length ``in_channels``); flow channels use 0.
        std: per-input-channel std (length ``in_channels``); flow channels use 1 (flow in pixels).
        flow_channels: flow channels consumed (0 for rgb models; 2 = dx, dy; 3 adds optical strain).
        apex_index: for the ``frame`` family, the index along ``T`` of the apex frame; else ``None``.
        name: registered model name (set by the registry).
        kwargs: the plain-typed constructor arguments; ``create_model(name, **kwargs)`` rebuilds the model.
    """

    family: str
    modality: str
    num_frames: int
    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flow_channels: int = 0
    apex_index: int | None = None
    name: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"ModelSpec.family: expected one of {FAMILIES}, got {self.family!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"ModelSpec.modality: expected one of {MODALITIES}, got {self.modality!r}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"ModelSpec.mean/std: expected {self.in_channels} values each (one per input channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples): safe for ``torch.load(weights_only=True)`` and JSON."""
        out = dataclasses.asdict(self)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        out["kwargs"] = dict(self.kwargs)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ModelSpec: unknown keys {unknown}; expected a subset of {sorted(names)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def channel_stats(modality: str, *, flow_channels: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """Per-input-channel ``(in_channels, mean, std)`` for a modality (flow channels: mean 0, std 1)."""
    flow_mean, flow_std = (0.0,) * flow_channels, (1.0,) * flow_channels
    if modality == "rgb":
        return 3, tuple(mean), tuple(std)
    if modality in ("flow", "apex_flow"):
        return flow_channels, flow_mean, flow_std
    return 3 + flow_channels, tuple(mean) + flow_mean, tuple(std) + flow_std


def import_pytorchvideo(module: str) -> Any:
    """``pytorchvideo.models.<module>``, without its import-time ``torch.jit.script`` deprecation warnings."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
            return importlib.import_module(f"pytorchvideo.models.{module}")
    except ImportError as exc:
        raise ImportError(f"this model is built by pytorchvideo, which is not importable: {exc}") from exc


def check_flow_channels(flow_channels: int) -> int:
    if flow_channels not in (2, 3):
        raise ValueError(f"flow_channels: expected 2 (dx, dy) or 3 (dx, dy, strain), got {flow_channels!r}")
    return flow_channels


class VideoClassifier(nn.Module):
    """Base class of every registered model: the common interface the trainer and predictor use.

    Subclasses set ``self.spec``, ``self.num_classes`` and ``self.num_features`` and implement
    :meth:`forward_features`, :meth:`forward_head` and :meth:`_reset_head`.
    """

    spec: ModelSpec
    num_classes: int
    num_features: int
    #: True when the model only accepts ``T == spec.num_frames`` (stacked flow, temporal embeddings).
    fixed_frames: ClassVar[bool] = False
    #: True when the model only accepts ``H == W == spec.input_size`` (positional embeddings).
    fixed_size: ClassVar[bool] = False

    def forward_features(self, x: torch.Tensor) -> Any:
        """Backbone output before pooling; the layout is family-specific (see each subclass)."""
        raise NotImplementedError

    def forward_head(self, x: Any, *, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify ``forward_features`` output.

        Returns:
            ``(B, num_classes)`` logits, or ``(B, num_features)`` pooled features when ``pre_logits``.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (0: no classifier)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
        self._reset_head(num_classes)
        self.num_classes = num_classes
        spec = getattr(self, "spec", None)
        if spec is not None:
            self.spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "num_classes": num_classes})

    def _reset_head(self, num_classes: int) -> None:
        raise NotImplementedError

    def classifier_prefixes(self) -> tuple[str, ...]:
        """State-dict key prefixes of the classifier layer(s) (replaced when loading pretrained weights)."""
        return ("head.fc.",)

    def convert_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a foreign state dict (torchvision, pytorchvideo, timm...) onto this model's keys.

        The default returns it unchanged; families override it (see :mod:`microexp.models.pretrained`).
        """
        return state_dict

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, T, H, W)`` as this model expects."""
        spec = self.spec
        name = spec.name or type(self).__name__
        if x.ndim != 5 or x.shape[1] != spec.in_channels:
            raise ValueError(
                f"{name}: expected input (B, {spec.in_channels}, T, H, W) for modality {spec.modality!r}, "
                f"got shape {tuple(x.shape)}"
            )
        if self.fixed_frames and x.shape[2] != spec.num_frames:
            raise ValueError(f"{name}: expected T = {spec.num_frames} frames, got shape {tuple(x.shape)}")
        if self.fixed_size and (x.shape[3] != spec.input_size or x.shape[4] != spec.input_size):
            raise ValueError(
                f"{name}: expected H = W = {spec.input_size}, got shape {tuple(x.shape)}"
            )
