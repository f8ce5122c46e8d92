"""Prediction latency for one clip, through ``microexp.inference.latency`` when it is installed.

The predictor lives in :mod:`microexp.inference` (the predict issue); it is imported lazily, and when it
is not there (or its interface differs) the section is recorded as skipped with the reason instead of
failing the whole benchmark.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from microexp.benchmark.report import Figure, Section

logger = logging.getLogger(__name__)

__all__ = ["measure_latency"]


def _checkpoint(work: Path, annotations: Path) -> Path:
    """An (untrained) ``flow_tiny`` checkpoint carrying the demo recipe's data config: latency does not
    depend on the weights."""
    from microexp.data.class_maps import get_class_map
    from microexp.checkpoint import save_checkpoint
    from microexp.models import create_model

    classes = list(get_class_map("dfme7").classes)
    model = create_model("flow_tiny", num_classes=len(classes))
    data = {"num_frames": 8, "sampling": "onset_apex", "stride": 1, "reference_fps": None, "size": 112,
            "grayscale": False, "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    return save_checkpoint(work / "latency_model.pt", model=model, class_names=classes, data=data, epoch=0, fold=0)


def measure_latency(work: Path, annotations: Path, *, repeats: int, device: str) -> Section:
    """p50/p95 seconds per stage of predicting one clip (``measure_latency``), and clips/s in batches."""
    name = f"latency_{device}"
    try:
        from microexp.inference.latency import measure_latency as inference_latency
    except ImportError as exc:
        return Section(name, skipped=f"microexp.inference.latency is not available ({exc})")
    import pandas as pd

    table = pd.read_csv(annotations)
    clips = [str((annotations.parent / p).resolve()) if not Path(p).is_absolute() else p for p in table["path"]]
    checkpoint = _checkpoint(work, annotations)
    section = Section(name, details={"model": "flow_tiny (untrained)", "clip": Path(clips[0]).name,
                                     "repeats": repeats})
    try:
        stages: dict[str, Any] = inference_latency(checkpoint, clips[0], repeats=repeats, face_crop=True,
                                                   device=device)
    except Exception as exc:  # a latency failure is reported in the JSON; the other sections still count
        section.skipped = f"measure_latency failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return section
    section.details["stages"] = stages
    for stage, value in _flatten(stages).items():
        section.figures.append(Figure(stage, (float(value),), "s"))
    try:
        from microexp.inference.latency import measure_throughput

        rate = measure_throughput(checkpoint, clips[:16], 8, device=device)
        section.figures.append(Figure("batch8.clips_per_s", (float(rate),), "clips/s"))
        section.details["throughput_failed_clips"] = int(getattr(rate, "failed", 0))
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
