"""microexp: micro-expression video recognition on DFME-style data.

The curated public API (imported on first use, so ``import microexp`` stays cheap):

- clip tables: ``load_clip_table``, ``apply_class_map``, ``get_class_map``
- frames: ``open_video``, ``write_video``, ``sample_indices``, ``SamplingSpec``, ``TransformSpec``,
  ``MicroExpressionDataset``, ``FlowSpec``, ``compute_flow``
- the synthetic benchmark: ``generate_dataset``, ``render_clip``
- models: ``create_model``, ``list_models``
- inference: ``ClipPredictor`` (``from_checkpoint(path).predict(clip)``)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_clip_table": "microexp.data.annotations",
    "apply_class_map": "microexp.data.class_maps",
    "get_class_map": "microexp.data.class_maps",
    "open_video": "microexp.data.video",
    "write_video": "microexp.data.video",
    "sample_indices": "microexp.data.sampling",
    "SamplingSpec": "microexp.data.sampling",
    "TransformSpec": "microexp.data.transforms",
    "MicroExpressionDataset": "microexp.data.dataset",
    "FlowSpec": "microexp.data.flow",
    "compute_flow": "microexp.data.flow",
    "generate_dataset": "microexp.synth",
    "render_clip": "microexp.synth",
    "create_model": "microexp.models",
    "list_models": "microexp.models",
    "ClipPredictor": "microexp.inference.predictor",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'microexp' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
