"""Inference on users' clips: face crop, apex spotting, prediction, export and latency.

The face crop itself lives in :mod:`microexp.data.face` (``microexp pack --face-crop`` uses it too).

- :mod:`~microexp.inference.predictor`: :class:`ClipPredictor` (``from_checkpoint``, ``predict``, ``predict_many``)
- :mod:`~microexp.inference.spotting`: onset/apex/offset from a motion signal
- :mod:`~microexp.inference.export`: TorchScript / ONNX export and the exported-model runner
- :mod:`~microexp.inference.latency`: ``measure_latency`` / ``measure_throughput``

This package consumes checkpoints (``microexp.checkpoint``) and never imports ``microexp.cli``.
The names below are imported on first use (PEP 562), so importing a torch-free module such as
:mod:`~microexp.inference.spotting` does not import torch through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClipFailure": "microexp.inference.predictor",
    "ClipInput": "microexp.inference.predictor",
    "ClipPredictor": "microexp.inference.predictor",
    "Prediction": "microexp.inference.predictor",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'microexp.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
