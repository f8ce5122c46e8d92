"""Latency and throughput of clip prediction, per stage (for ``microexp benchmark`` and the README).

Stages are those :class:`~microexp.inference.predictor.ClipPredictor` times for every clip
(:data:`~microexp.inference.predictor.STAGES`): ``decode`` (opening and decoding frames), ``face_crop``
(face detection and cropping), ``spotting`` (motion signal and onset/apex/offset, only when they are not
given), ``flow`` (optical flow, flow and two-stream models), ``transform`` (resize, sampling,
normalisation), ``model`` (the forward pass) and ``total``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from microexp.inference.predictor import STAGES, ClipInput, ClipPredictor

__all__ = ["measure_latency", "measure_throughput"]


def measure_latency(
    checkpoint: str | Path,
    clip: str | Path | ClipInput,
    *,
    repeats: int = 10,
    face_crop: bool = True,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Per-stage latency of predicting one clip, after one warm-up run.

    Args:
        checkpoint: a microexp checkpoint or export.
        clip: a clip path, or a :class:`ClipInput` (e.g. with its onset/apex/offset: no spotting).
        repeats: timed runs.
        face_crop: detect and crop the face.
        device: 'cpu' or 'cuda'.

    Returns:
        ``{stage: {"p50": seconds, "p95": seconds}}`` for every stage in :data:`STAGES`.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected an integer >= 1")
    predictor = ClipPredictor.from_checkpoint(checkpoint, device=device, face_crop=face_crop)
    item = clip if isinstance(clip, ClipInput) else ClipInput(str(clip))
    kwargs = {"onset": item.onset, "apex": item.apex, "offset": item.offset, "first_frame": item.first_frame,
              "fps": item.fps, "name": item.name}
    predictor.predict(item.path, **kwargs)  # warm-up: lazy imports, allocator, OpenCV objects
    runs = [predictor.predict(item.path, **kwargs).timings for _ in range(repeats)]
    return {stage: {"p50": float(np.percentile([r[stage] for r in runs], 50)),
                    "p95": float(np.percentile([r[stage] for r in runs], 95))} for stage in STAGES}


def measure_throughput(
    checkpoint: str | Path,
    clips: Sequence[str | Path | ClipInput],
    batch_size: int,
    *,
    face_crop: bool = True,
    device: str = "cpu",
) -> float:
    """Clips per second of batch prediction (``predict_many``) over ``clips``, failures included."""
    predictor = ClipPredictor.from_checkpoint(checkpoint, device=device, face_crop=face_crop)
    start = time.perf_counter()
    result = predictor.predict_many(clips, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return (len(result.predictions) + len(result.failures)) / seconds
