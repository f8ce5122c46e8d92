"""Models for micro-expression recognition behind one registry (timm-style).

>>> from microexp.models import create_model, list_models
>>> model = create_model("tsm_tiny", num_classes=7)
>>> model.spec.num_frames, model.spec.input_size, model.spec.modality
(8, 112, 'rgb')

Every model takes one float tensor ``(B, C, T, H, W)`` (see :mod:`microexp.models._base` for the
channel convention of each modality) and exposes ``spec``, ``num_classes``, ``num_features``,
``forward_features``, ``forward_head`` and ``reset_classifier``. ``create_model(spec.name, **spec.kwargs)``
rebuilds a model whose state dict was saved.

Families, one module each: :mod:`.cnn3d` (R3D, X3D), :mod:`.two_stream` (RGB + optical flow),
:mod:`.tsm` (temporal shift), :mod:`.transformer` (TimeSformer, on RGB or flow), :mod:`.videomae` (VideoMAE,
joint space-time attention), :mod:`.tv_video` (torchvision's MViT and Video Swin), :mod:`.frame` (apex-frame
baseline), :mod:`.apex_flow` (STSTNet, Off-ApexNet, HTNet on one onset->apex flow). :mod:`.masked_video` is
the masked-video pretraining autoencoder around a transformer. :mod:`.pooling` holds the attention pooling
heads the CNN families (``pool="attentive_patch"`` or ``"cross_attention"``) and TimeSformer
(``pool="attentive_token"``) can use instead of average or class-token pooling.
"""

from ._base import FAMILIES, MODALITIES, ModelSpec, VideoClassifier
from ._registry import (
    ModelInfo,
    count_params,
    create_model,
    get_model_spec,
    list_models,
    model_info,
    register_model,
)
from .pretrained import PretrainedLoadResult, load_pretrained

# importing the family modules registers their models
from . import apex_flow, cnn3d, frame, transformer, tsm, tv_video, two_stream, videomae  # noqa: E402,F401  isort:skip

__all__ = [
    "FAMILIES",
    "MODALITIES",
    "ModelInfo",
    "ModelSpec",
    "PretrainedLoadResult",
    "VideoClassifier",
    "count_params",
    "create_model",
    "get_model_spec",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
]
