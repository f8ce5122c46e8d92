"""Clip spotting against the synthetic ground truth: the whole-face method vs the region-wise, blink-robust one.

Clips are planned and rendered in memory (:func:`microexp.synth.plan.plan_dataset`,
:func:`~microexp.synth.render.render_clip`), so the true onset, apex and offset and whether the clip blinks
(:func:`~microexp.synth.render.clip_nuisance`) are known exactly. Both methods see the whole clip (no phase
given) and its first frame as the reference, as ``microexp predict`` does on a clip without annotations.
Errors are in frames; offset errors are signed (negative: early).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from microexp.inference.region_spotting import spot_regions
from microexp.inference.spotting import default_sigma, motion_signal, spot_phases

__all__ = ["METHODS", "format_spotting_table", "spotting_errors", "summarise_spotting"]

#: the methods compared: the whole-face top-2 % signal with the 10 %-of-peak rule, and the region method
METHODS = ("motion", "regions")


def _spot(method: str, frames: np.ndarray, fps: float) -> tuple[int, int, int]:
    numbers = list(range(1, len(frames) + 1))
    if method == "motion":
        p = spot_phases(motion_signal(frames, reference=0), numbers, sigma=default_sigma(fps))
    else:
        p = spot_regions(frames, numbers, fps=fps, sigma=default_sigma(fps)).phases
    return p.onset, p.apex, p.offset


def spotting_errors(presets: Sequence[str] = ("easy", "medium", "hard"), sizes: Sequence[int] = (64, 128), *,
                    clips: int = 40, subjects: int = 10, seed: int = 7,
                    methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """One row per (preset, size, method, clip): true and spotted phases, errors, blink, seconds."""
    from microexp.synth.plan import plan_dataset
    from microexp.synth.render import clip_nuisance, render_clip

    rows: list[dict[str, Any]] = []
    for preset in presets:
        specs = plan_dataset(preset=preset, subjects=subjects, clips=clips, seed=seed)
        for size in sizes:
            for spec in specs:
                frames = render_clip(spec, size=size).frames
                blink = clip_nuisance(spec, size).blink
                for method in methods:
                    start = time.perf_counter()
                    onset, apex, offset = _spot(method, frames, float(spec.fps))
                    rows.append({"preset": preset, "size": size, "method": method, "clip": spec.clip,
                                 "fps": spec.fps, "blink": blink is not None, "true_onset": spec.onset,
                                 "true_apex": spec.apex, "true_offset": spec.offset, "onset": onset, "apex": apex,
                                 "offset": offset, "apex_error": abs(apex - spec.apex),
                                 "onset_error": abs(onset - spec.onset), "offset_error": offset - spec.offset,
                                 "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def summarise_spotting(errors: pd.DataFrame) -> pd.DataFrame:
    """Per (preset, size, method): apex median error and share within 3 / 5 frames (all clips, with and
    without a blink), onset median error, offset median signed error, seconds per clip."""
    out = []
    for (preset, size, method), g in errors.groupby(["preset", "size", "method"], sort=False):
        blink, clean = g[g["blink"]], g[~g["blink"]]
        out.append({
            "preset": preset, "size": size, "method": method, "clips": len(g), "blink_clips": len(blink),
            "apex_median": float(g["apex_error"].median()), "apex_within_3": float((g["apex_error"] <= 3).mean()),
            "apex_within_5": float((g["apex_error"] <= 5).mean()),
            "apex_within_5_blink": float((blink["apex_error"] <= 5).mean()) if len(blink) else float("nan"),
            "apex_within_5_no_blink": float((clean["apex_error"] <= 5).mean()) if len(clean) else float("nan"),
            "onset_median": float(g["onset_error"].median()),
            "offset_median_signed": float(g["offset_error"].median()),
            "seconds_per_clip": float(g["seconds"].mean()),
        })
    return pd.DataFrame(out)


def format_spotting_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    head = ("| preset | size | method | clips (blink) | apex median | apex ≤ 3 | apex ≤ 5 | apex ≤ 5, blink | "
            "apex ≤ 5, no blink | onset median | offset median (signed) | s/clip |")
    lines = [head, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def pct(x: float) -> str:
        return "–" if np.isnan(x) else f"{x:.0%}"

    for r in summary.to_dict("records"):
        lines.append(f"| {r['preset']} | {r['size']} px | {r['method']} | {r['clips']} ({r['blink_clips']}) | "
                     f"{r['apex_median']:.1f} | {pct(r['apex_within_3'])} | {pct(r['apex_within_5'])} | "
                     f"{pct(r['apex_within_5_blink'])} | {pct(r['apex_within_5_no_blink'])} | "
                     f"{r['onset_median']:.1f} | {r['offset_median_signed']:+.1f} | {r['seconds_per_clip']:.2f} |")
    return "\n".join(lines)
