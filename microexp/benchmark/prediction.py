"""The benchmark's ``latency`` section: how fast a trained model predicts one clip, and clips in batches.

A thin shell over :mod:`microexp.inference.latency` (which does the measuring): an untrained ``flow_tiny``
checkpoint with the demo recipe's data config, p50/p95 seconds per prediction stage for the first clip of the
benchmark's synthetic data, and clips/s of batch prediction over its first 16 clips. A failed measurement is
recorded in the section (skipped, with the reason) instead of failing the whole benchmark.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from microexp.benchmark.report import Figure, Section
from microexp.inference.latency import measure_latency, measure_throughput

logger = logging.getLogger(__name__)

__all__ = ["measure_prediction"]


def _checkpoint(work: Path) -> Path:
    """An (untrained) ``flow_tiny`` checkpoint carrying the demo recipe's data config: latency does not
    depend on the weights."""
    from microexp.checkpoint import save_checkpoint
    from microexp.data.class_maps import get_class_map
    from microexp.data.pipeline import ClipPipeline
    from microexp.models import create_model

    classes = list(get_class_map("dfme7").classes)
    model = create_model("flow_tiny", num_classes=len(classes))
    pipeline = ClipPipeline.for_model(model.spec, num_frames=8, sampling="onset_apex", size=112,
                                      flow_method="farneback")
    data = {"pipeline": pipeline.to_dict(), "class_map": "dfme7"}
    return save_checkpoint(work / "latency_model.pt", model=model, class_names=classes, data=data, epoch=0, fold=0)


def measure_prediction(work: Path, annotations: Path, *, repeats: int, device: str) -> Section:
    """The ``latency_{device}`` section: p50/p95 seconds per stage of predicting one clip, and clips/s in batches.

    Args:
        work: a scratch folder for the checkpoint.
        annotations: the benchmark's synthetic clip table.
        repeats: timed runs of the one-clip prediction.
        device: 'cpu' or a CUDA device.
    """
    import pandas as pd

    table = pd.read_csv(annotations)
    clips = [str((annotations.parent / p).resolve()) if not Path(p).is_absolute() else p for p in table["path"]]
    checkpoint = _checkpoint(work)
    section = Section(f"latency_{device}", details={"model": "flow_tiny (untrained)", "clip": Path(clips[0]).name,
                                                    "repeats": repeats})
    try:
        stages: dict[str, Any] = measure_latency(checkpoint, clips[0], repeats=repeats, face_crop=True, device=device)
    except Exception as exc:  # a latency failure is reported in the JSON; the other sections still count
        section.skipped = f"measure_latency failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return section
    section.details["stages"] = stages
    for stage, value in _flatten(stages).items():
        section.figures.append(Figure(stage, (float(value),), "s"))
    try:
        rate = measure_throughput(checkpoint, clips[:16], 8, device=device)
        section.figures.append(Figure("batch8.clips_per_s", (float(rate),), "clips/s"))
        section.details["throughput_failed_clips"] = rate.failed
    except Exception as exc:
        section.details["throughput_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return section


def _flatten(stages: Any, prefix: str = "") -> dict[str, float]:
    """``{"decode": {"p50": 0.01, "p95": 0.02}, ...}`` -> ``{"decode.p50": 0.01, ...}`` (numbers only)."""
    out: dict[str, float] = {}
    if isinstance(stages, dict):
        for key, value in stages.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(stages, (int, float)) and not isinstance(stages, bool):
        out[prefix.rstrip(".")] = float(stages)
    return out
