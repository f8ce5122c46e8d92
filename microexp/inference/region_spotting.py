"""Region-wise, blink-robust phase spotting (``spotting='regions'``).

The whole-face signal of :mod:`microexp.inference.spotting` takes the largest differences anywhere in the face,
so a blink (real facial motion, often larger than a micro-expression) wins the apex on the clips that have one,
and its 10 %-of-the-peak rule stops onset and offset well above the noise on strong clips. This method keeps
the same aligned, high-passed difference maps (:func:`~microexp.inference.spotting.difference_maps`) and:

1. **Regions.** The eyes are placed on the reference frame from OpenCV's Haar frontal-face box (the eye line
   at 38 % of its height, the eyes 0.42 of its width apart), refined by the Haar eye cascade when it finds a
   pair (one each side, level, centred) within a quarter of the inter-ocular distance of those positions; the
   eye cascade alone on small faces (64-96 px) often fires on the brows or forehead. Brows, nose and mouth
   follow from the eyes and the inter-ocular distance ``d`` with the usual face proportions (brows 0.2-0.45 d
   above the eye line, nose 0.4-0.75 d below it (clear of the lower lids), mouth 0.75-1.25 d below).
   Without a face or eyes, a fixed layout of a face crop is used (eye line at 42 % of the height, ``d`` = 24 %
   of the side); ``eyes`` says which.
2. **A noise floor per region.** Each region's signal (the mean of its largest 10 % of differences) becomes a
   z-score: minus its baseline (20th percentile over the clip), over a robust noise scale (1.4826 x the median
   absolute deviation of its lower half).
3. **Blinks.** A blink is an event in which *both* eye regions rise above 3 noise units together, for at most
   0.4 s (real blinks last 0.1-0.4 s; measured to where both eyes are back below 1 noise unit or a quarter of
   the weaker eye's peak), with left and right peaks within a factor 3 of each other, while nose
   and mouth add less than half the eyes' peak over their level when it starts (not the brows: the lids
   border them; an expression already under way may keep nose and mouth moving). During a blink (widened by
   2 frames each side) the eye and brow regions are discounted (set to 0); nose and mouth still count.
4. **Phases.** The face curve is the largest region z-score per frame, Gaussian-smoothed; the apex is its
   maximum, onset and offset are walked outwards from it to where the curve falls to the noise floor
   (``floor`` noise units, default 2) instead of to a fraction of the peak.
5. **Confidence** per phase, in [0, 1]: the apex's is how much the peak stands out,
   ``1 - (largest curve value outside onset..offset) / peak``; onset's and offset's are the share of the frames
   just outside them (3 smoothing widths) that stay at the floor, i.e. how cleanly the motion starts and ends.

Nothing here is fitted to data: the proportions are those of human faces, the blink rule that of blink
physiology (duration, both eyes, eye region only), the floor a number of noise units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from microexp.inference.spotting import Phases, _grey, difference_maps, spot_phases

__all__ = ["FaceRegions", "RegionPhases", "detect_blinks", "face_curve", "face_regions", "region_signals",
           "spot_regions"]

_EYE_CASCADE = "haarcascade_eye.xml"
_DETECT_SIDE = 192  # the eye cascade finds eyes of at least ~12 px: detect on an upscaled copy
#: the fixed layout without detected eyes: eye line height and inter-ocular distance, as fractions of the side
_LAYOUT_EYE_Y, _LAYOUT_IOD = 0.42, 0.24
REGION_TOP_FRACTION = 0.10
REGION_LOWPASS = 1.5  # px at the 96-px working size: blur before differencing (spotting.difference_maps)
BLINK_LEVEL = 3.0  # noise units both eyes must exceed
BLINK_MAX_S = 0.4
BLINK_PAD = 2  # frames added to each side of a detected blink


@dataclass(frozen=True)
class FaceRegions:
    """Pixel boxes ``(x0, y0, x1, y1)`` (end-exclusive) of the regions on the ``size``-px frame, and how the
    eyes were placed (``face box + eyes``, ``face box``, ``eyes`` or ``layout``)."""

    boxes: dict[str, tuple[int, int, int, int]]
    eyes: str


@dataclass(frozen=True)
class RegionPhases:
    """The phases, a confidence per spotted phase, the blinks found (frame-number ranges) and the regions."""

    phases: Phases
    confidence: dict[str, float]
    blinks: tuple[tuple[int, int], ...]
    regions: FaceRegions
    signals: dict[str, np.ndarray] = field(repr=False, compare=False, default_factory=dict)


_cascade_cache: list[cv2.CascadeClassifier] = []


def _eye_cascade() -> cv2.CascadeClassifier:
    if not _cascade_cache:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _EYE_CASCADE)
        if cascade.empty():
            raise RuntimeError(f"OpenCV's {_EYE_CASCADE} did not load (an opencv wheel without its cascades?)")
        _cascade_cache.append(cascade)
    return _cascade_cache[0]


def _detected_eyes(grey: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Centres of a left and a right eye in ``grey``'s pixels, or None."""
    side = grey.shape[0]
    scale = _DETECT_SIDE / side
    up = cv2.resize(grey.astype(np.uint8), (_DETECT_SIDE, _DETECT_SIDE), interpolation=cv2.INTER_LINEAR)
    boxes = _eye_cascade().detectMultiScale(up, scaleFactor=1.1, minNeighbors=3, minSize=(12, 12))
    centres = [((x + w / 2) / scale, (y + h / 2) / scale, w * h) for x, y, w, h in boxes]
    upper = [c for c in centres if c[1] < 0.7 * side]
    left = [c for c in upper if c[0] < side / 2]
    right = [c for c in upper if c[0] >= side / 2]
    best = None
    for lx, ly, la in left:
        for rx, ry, ra in right:
            level = abs(ly - ry) < 0.1 * side
            centred = abs((lx + rx) / 2 - side / 2) < 0.12 * side  # a face crop is centred on the face
            if level and centred and 0.12 * side < rx - lx < 0.6 * side and (best is None or la + ra > best[0]):
                best = (la + ra, (lx, ly), (rx, ry))
    return None if best is None else (best[1], best[2])


def _face_box_eyes(grey: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Eye centres predicted from the largest Haar frontal-face box: the eye line at 38 % of the box's height,
    the eyes 0.42 of its width apart (human proportions of that detector's boxes), or None without a face."""
    from microexp.data.face import _cascade  # the bundled frontal-face cascade the face crop uses

    side = grey.shape[0]
    scale = _DETECT_SIDE / side
    up = cv2.resize(grey.astype(np.uint8), (_DETECT_SIDE, _DETECT_SIDE), interpolation=cv2.INTER_LINEAR)
    faces = _cascade().detectMultiScale(up, scaleFactor=1.1, minNeighbors=3, minSize=(_DETECT_SIDE // 4,) * 2)
    if len(faces) == 0:
        return None
    x, y, w, h = (v / scale for v in max(faces, key=lambda b: b[2] * b[3]))
    cx, ey, d = x + w / 2, y + 0.38 * h, 0.42 * w
    return (cx - d / 2, ey), (cx + d / 2, ey)


def face_regions(reference: np.ndarray, size: int = 96) -> FaceRegions:
    """The regions of a face crop (module docstring, step 1), on its ``size``-px grey copy."""
    grey = _grey(reference, size)
    predicted = _face_box_eyes(grey)
    detected = _detected_eyes(grey)
    if predicted is not None and detected is not None:
        d = predicted[1][0] - predicted[0][0]
        near = all(np.hypot(a[0] - b[0], a[1] - b[1]) < 0.25 * d for a, b in zip(detected, predicted))
        eyes, how = (detected, "face box + eyes") if near else (predicted, "face box")
    elif predicted is not None:
        eyes, how = predicted, "face box"
    else:
        eyes, how = detected, "eyes"
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
    else:
        d = _LAYOUT_IOD * size
        lx, rx = size / 2 - d / 2, size / 2 + d / 2
        ly = ry = _LAYOUT_EYE_Y * size
        how = "layout"
    d = rx - lx
    cx, ey = (lx + rx) / 2, (ly + ry) / 2

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        a, b = int(np.clip(np.floor(x0), 0, size - 1)), int(np.clip(np.floor(y0), 0, size - 1))
        return a, b, max(a + 1, int(np.clip(np.ceil(x1), 1, size))), max(b + 1, int(np.clip(np.ceil(y1), 1, size)))

    boxes = {
        "brows": box(cx - 0.8 * d, ey - 0.45 * d, cx + 0.8 * d, ey - 0.2 * d),
        "eye_left": box(lx - 0.35 * d, ly - 0.2 * d, lx + 0.35 * d, ly + 0.25 * d),
        "eye_right": box(rx - 0.35 * d, ry - 0.2 * d, rx + 0.35 * d, ry + 0.25 * d),
        "nose": box(cx - 0.35 * d, ey + 0.4 * d, cx + 0.35 * d, ey + 0.75 * d),
        "mouth": box(cx - 0.65 * d, ey + 0.75 * d, cx + 0.65 * d, ey + 1.25 * d),
    }
    return FaceRegions(boxes, how)


def region_signals(frames: Sequence[np.ndarray] | np.ndarray, *, reference: int = 0, size: int = 96,
                   regions: FaceRegions | None = None,
                   lowpass: float = REGION_LOWPASS) -> tuple[dict[str, np.ndarray], FaceRegions]:
    """Each region's per-frame motion against ``frames[reference]`` (mean of its largest 10 % of differences;
    the images band-passed with ``lowpass``, see :func:`~microexp.inference.spotting.difference_maps`)."""
    regions = regions or face_regions(frames[reference], size)
    out = {name: np.zeros(len(frames)) for name in regions.boxes}
    for i, diff in difference_maps(frames, reference=reference, size=size, lowpass=lowpass):
        for name, (x0, y0, x1, y1) in regions.boxes.items():
            values = diff[y0:y1, x0:x1].ravel()
            keep = max(1, int(REGION_TOP_FRACTION * values.size))
            out[name][i] = float(np.partition(values, values.size - keep)[-keep:].mean())
    return out, regions


def _zscore(x: np.ndarray) -> np.ndarray:
    """``(x - baseline) / noise`` (module docstring, step 2)."""
    base = float(np.percentile(x, 20))
    low = x[x <= np.median(x)]
    noise = 1.4826 * float(np.median(np.abs(low - np.median(low)))) if low.size else 0.0
    noise = max(noise, 1e-3 * max(float(np.abs(x).max()), 1e-9), 1e-9)
    return (x - base) / noise


def detect_blinks(eye_left: np.ndarray, eye_right: np.ndarray, others: np.ndarray, *, fps: float | None,
                  level: float = BLINK_LEVEL, max_seconds: float = BLINK_MAX_S) -> list[tuple[int, int]]:
    """Index ranges ``(first, last)`` of blinks in z-scored eye signals (module docstring, step 3).

    Args:
        eye_left, eye_right: ``(T,)`` z-scores of the two eye regions.
        others: ``(T,)`` the largest z-score of the regions a blink does not move (nose, mouth) per frame.
        fps: frames per second (None: 200, DFME's lowest rate).
    """
    both = np.minimum(eye_left, eye_right) > level
    max_frames = max(1, int(round(max_seconds * (fps or 200.0))))
    blinks, i, t = [], 0, len(both)
    while i < t:
        if not both[i]:
            i += 1
            continue
        j = i
        while j + 1 < t and both[j + 1]:
            j += 1
        # widen to where both eyes are back near their floor: 1 noise unit, or a quarter of the weaker eye's
        # peak (the signal against a fixed reference drifts up a little over a long stretch)
        back = max(1.0, 0.25 * min(float(eye_left[i:j + 1].max()), float(eye_right[i:j + 1].max())))
        a, b = i, j
        while a > 0 and max(eye_left[a - 1], eye_right[a - 1]) > back:
            a -= 1
        while b + 1 < t and max(eye_left[b + 1], eye_right[b + 1]) > back:
            b += 1
        peak_l, peak_r = float(eye_left[a:b + 1].max()), float(eye_right[a:b + 1].max())
        symmetric = 1 / 3 <= peak_l / max(peak_r, 1e-9) <= 3.0
        # eye only: what the other regions *add* during the event (an expression may already be moving them)
        added = float(others[a:b + 1].max()) - float(others[max(0, a - 1):a + 1].min())
        eye_only = added < 0.5 * min(peak_l, peak_r)
        if b - a + 1 <= max_frames and symmetric and eye_only:
            blinks.append((a, b))
        i = j + 1
    return blinks


def face_curve(signals: dict[str, np.ndarray], *, fps: float | None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The face's motion in noise units per frame (module docstring, steps 2-4: each region z-scored, blinks
    discounted, the largest region per frame; not smoothed) and the blinks found (index ranges)."""
    z = {name: _zscore(values) for name, values in signals.items()}
    # the lids border the brows: a blink moves the brow region's lower edge too, so "eye only" is judged
    # against the nose and mouth, and the brows are discounted with the eyes
    lower = np.maximum(z["nose"], z["mouth"])
    blinks = detect_blinks(z["eye_left"], z["eye_right"], lower, fps=fps)
    upper = np.max([z["eye_left"], z["eye_right"], z["brows"]], axis=0)
    for a, b in blinks:  # discounted: the face curve does not see the eyes and brows during a blink
        upper[max(0, a - BLINK_PAD):b + BLINK_PAD + 1] = 0.0
    return np.maximum(lower, upper), blinks


def spot_regions(frames: Sequence[np.ndarray] | np.ndarray, numbers: Sequence[int], *, onset: int | None = None,
                 apex: int | None = None, offset: int | None = None, fps: float | None = None, sigma: float = 2.0,
                 floor: float = 2.0, size: int = 96, reference: int = 0) -> RegionPhases:
    """Spot the phases not given (module docstring). ``frames[reference]`` is the neutral reference (the
    given onset's frame, else the first); ``numbers`` are the frames' numbers."""
    nums = [int(n) for n in numbers]
    if len(nums) != len(frames) or not nums:
        raise ValueError(f"spot_regions: {len(frames)} frames for {len(nums)} frame numbers")
    signals, regions = region_signals(frames, reference=reference, size=size)
    face, blinks = face_curve(signals, fps=fps)
    phases = spot_phases(face, nums, onset=onset, apex=apex, offset=offset, sigma=sigma, level=floor)
    curve = phases.curve  # the smoothed face curve spot_phases walked
    index = {n: i for i, n in enumerate(nums)}
    lo, top, hi = index[phases.onset], index[phases.apex], index[phases.offset]
    peak = float(curve[top])
    outside = np.concatenate([curve[:lo], curve[hi + 1:]])
    confidence: dict[str, float] = {}
    if "apex" in phases.estimated:
        confidence["apex"] = float(np.clip(1 - (outside.max() / peak if outside.size and peak > 0 else 0), 0, 1))
    window = max(2, int(round(3 * sigma)))
    if "onset" in phases.estimated:
        before = curve[max(0, lo - window):lo]
        confidence["onset"] = float((before <= floor).mean()) if before.size else 0.0
    if "offset" in phases.estimated:
        after = curve[hi + 1:hi + 1 + window]
        confidence["offset"] = float((after <= floor).mean()) if after.size else 0.0
    return RegionPhases(phases, confidence, tuple((nums[a], nums[b]) for a, b in blinks), regions, signals)
