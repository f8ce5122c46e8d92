"""Inference on users' clips: face crop, apex spotting, prediction, export and latency.

The face crop itself lives in :mod:`microexp.data.face` (``microexp pack --face-crop`` uses it too).

- :mod:`~microexp.inference.predictor`: :class:`ClipPredictor` (``from_checkpoint``, ``predict``, ``predict_many``)
- :mod:`~microexp.inference.spotting`: onset/apex/offset from a motion signal
- :mod:`~microexp.inference.export`: TorchScript / ONNX export and the exported-model runner
- :mod:`~microexp.inference.latency`: ``measure_latency`` / ``measure_throughput``

This package consumes checkpoints (``microexp.engine.checkpoint``) and never imports ``microexp.cli``.
"""

from microexp.inference.predictor import ClipFailure, ClipInput, ClipPredictor, Prediction

__all__ = ["ClipFailure", "ClipInput", "ClipPredictor", "Prediction"]
