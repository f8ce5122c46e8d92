"""Latency and throughput of clip prediction, per stage (for ``microexp benchmark`` and the README).

Stages are those :class:`~microexp.inference.predictor.ClipPredictor` times for every clip
(:data:`~microexp.inference.predictor.STAGES`): ``decode`` (opening and decoding frames), ``face_crop``
(face detection and cropping), ``spotting`` (motion signal and onset/apex/offset, only when they are not
given), ``flow`` (optical flow, flow and two-stream models), ``transform`` (resize, sampling,
normalisation), ``model`` (the forward pass) and ``total``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from microexp.inference.predictor import STAGES, ClipInput, ClipPredictor, PredictionError

logger = logging.getLogger(__name__)

__all__ = ["Throughput", "measure_latency", "measure_throughput"]


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


@dataclass(frozen=True)
class Throughput:
    """Batch-prediction throughput; ``float(result)`` is :attr:`clips_per_s`.

    Attributes:
        clips_per_s: successfully predicted clips per second of wall time (failed clips are not counted,
            though the time spent on them is).
        predicted: clips predicted.
        failed: clips that failed (see :attr:`failures`).
        seconds: wall time of ``predict_many``.
        failures: the failures, one line each.
    """

    clips_per_s: float
    predicted: int
    failed: int
    seconds: float
    failures: tuple[str, ...] = ()

    def __float__(self) -> float:
        return self.clips_per_s


def measure_throughput(
    checkpoint: str | Path,
    clips: Sequence[str | Path | ClipInput],
    batch_size: int,
    *,
    face_crop: bool = True,
    device: str = "cpu",
) -> Throughput:
    """Throughput of batch prediction (``predict_many``) over ``clips``, on ``device``.

    Only successful predictions count; failed clips are logged and reported in the result.

    Raises:
        PredictionError: no clip could be predicted (the first failure is named).
    """
    predictor = ClipPredictor.from_checkpoint(checkpoint, device=device, face_crop=face_crop)
    start = time.perf_counter()
    result = predictor.predict_many(clips, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    failures = tuple(str(f) for f in result.failures)
    if failures:
        logger.warning("throughput: %d of %d clip(s) failed and are not counted (first: %s)", len(failures),
                       len(failures) + len(result.predictions), failures[0])
    if not result.predictions:
        raise PredictionError(f"throughput: none of the {len(failures)} clip(s) could be predicted"
                              + (f" (first: {failures[0]})" if failures else ""))
    return Throughput(len(result.predictions) / seconds, len(result.predictions), len(failures), seconds, failures)
