"""Long-video spotting against the synthetic ground truth, scored as MEGC does.

Each configuration (preset, frame rate, face size) writes long recordings (:mod:`microexp.synth.long`) to disk as
``microexp synth --long`` does, spots them through the same stream and spotter as ``microexp spot``
(:class:`~microexp.data.video.FrameStream`, :class:`~microexp.inference.long_spotting.LongSpotter`), and scores the
intervals with :mod:`microexp.spotting_metrics` (IoU >= 0.5, TP/FP/FN summed over videos). With a recogniser
checkpoint each spotted interval is classified too and the analysis UF1 and STRS are reported. False positives are
attributed to what they overlap most in the recording's events (a blink, a head movement, a micro-expression matched
too loosely, or nothing: noise).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from microexp.data.video import FrameStream
from microexp.inference.long_spotting import LongSpotter, SpotSettings
from microexp.spotting_metrics import Interval, interval_iou, spot_then_recognise, spotting_scores
from microexp.synth.long import generate_long_dataset, plan_long_videos

__all__ = ["LongConfig", "format_long_table", "long_spotting_benchmark"]


class LongConfig(NamedTuple):
    """One row of the benchmark."""

    preset: str
    fps: int
    size: int
    videos: int
    seconds: float


def long_spotting_benchmark(work: str | Path, configs: Sequence[LongConfig], *, seed: int = 21,
                            settings: SpotSettings | None = None, checkpoint: str | Path | None = None,
                            workers: int | None = None) -> pd.DataFrame:
    """One row per configuration: counts, precision/recall/F1, FP causes, speed (and STRS with ``checkpoint``)."""
    predictor = None
    if checkpoint is not None:
        from microexp.inference.predictor import ClipPredictor

        predictor = ClipPredictor.from_checkpoint(checkpoint, face_crop=False)
    rows = []
    for config in configs:
        root = Path(work) / f"{config.preset}_{config.fps}fps_{config.size}px"
        generate_long_dataset(root, preset=config.preset, videos=config.videos, seconds=config.seconds,
                              fps=config.fps, size=config.size, seed=seed, workers=workers, progress=False,
                              overwrite=True)
        specs = plan_long_videos(preset=config.preset, videos=config.videos, seconds=config.seconds, fps=config.fps,
                                 seed=seed)
        truth = {s.name: [Interval(e.onset, e.offset, emotion=e.emotion) for e in s.of_kind("micro-expression")]
                 for s in specs}
        spotted: dict[str, list[Interval]] = {}
        frames = 0
        started = time.perf_counter()
        for spec in specs:
            stream = FrameStream(root / "videos" / f"{spec.name}.mp4")
            recognise = None if predictor is None else predictor.recogniser(stream.fps, spec.name)
            spotter = LongSpotter(stream.fps, settings, recognise=recognise)
            found = []
            for numbers, chunk in stream:
                found += spotter.feed(numbers, chunk)
            found += spotter.finish()
            frames += spotter.frames_seen
            spotted[spec.name] = [Interval(i.onset, i.offset, i.score, i.emotion) for i in found]
        seconds = time.perf_counter() - started
        overall, _, matches = spotting_scores(spotted, truth)
        causes: Counter[str] = Counter()
        for spec in specs:
            matched = {m.spotted for m in matches[spec.name]}
            for k, interval in enumerate(spotted[spec.name]):
                if k in matched:
                    continue
                best = max(spec.events, key=lambda e: interval_iou(interval, Interval(e.onset, e.offset)))
                overlap = interval_iou(interval, Interval(best.onset, best.offset))
                causes[best.kind if overlap > 0 else "noise"] += 1
        row: dict[str, Any] = {**config._asdict(), "true": overall.tp + overall.fn, "spotted": overall.tp + overall.fp,
                               **overall.to_dict(),
                               "fp_causes": ", ".join(f"{k} {v}" for k, v in sorted(causes.items())) or "-",
                               "frames_per_s": frames / max(seconds, 1e-9), "spot_s": seconds}
        if predictor is not None:
            result = spot_then_recognise(spotted, truth)
            row.update(analysis_uf1=result["analysis_uf1"], strs=result["strs"])
        rows.append(row)
    return pd.DataFrame(rows)


def format_long_table(table: pd.DataFrame) -> str:
    """The markdown table of recipes/README.md."""
    strs = "strs" in table
    head = ("| preset | fps | face px | recordings | true MEs | spotted | TP | FP | FN | precision | recall | F1 | "
            + ("analysis UF1 | STRS | " if strs else "") + "false positives overlap | frames/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in table.itertuples():
        lines.append(f"| {r.preset} | {r.fps} | {r.size} | {r.videos} x {r.seconds:g} s | {r.true} | {r.spotted} | "
                     f"{r.tp} | {r.fp} | {r.fn} | {r.precision:.2f} | {r.recall:.2f} | {r.f1:.2f} | "
                     + (f"{r.analysis_uf1:.2f} | {r.strs:.2f} | " if strs else "")
                     + f"{r.fp_causes} | {r.frames_per_s:.0f} |")
    return "\n".join(lines)
