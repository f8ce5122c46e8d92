"""Apex, onset and offset spotting from a per-frame motion signal.

**Motion signal** (:func:`motion_signal`). Each frame of the (face-cropped) clip is turned grey and
resized to ``size`` px, registered to the reference frame (the onset when known, else the first frame)
with an affine ECC alignment (``cv2.findTransformECC``), and high-passed (minus a Gaussian blur of
sigma 6 px). The frame's value is the mean of the largest ``top_fraction`` (2 %) of the blurred absolute
differences from the reference. Each step removes a nuisance that otherwise dominates the few-pixel,
local motion of a micro-expression: registration removes head drift (translation, roll, scale), the
high-pass removes slow illumination changes, and the top-fraction statistic keeps local motion that a
whole-frame mean would dilute in sensor noise. On the synthetic benchmark (preset ``medium``) a plain
flow-magnitude or frame-difference curve against the first frame peaks at the apex on under a third of
the clips; this one on about three quarters (the rest are mostly clips with a blink, which is real
facial motion as large as the expression; see the README for measured errors).

**Rule** (:func:`spot_phases`). The signal is smoothed with a Gaussian of ``sigma`` frames (default
10 ms of video, at least 1 frame). Then, within the search range (the whole clip, or between a given
onset/offset):

- apex = the frame where the smoothed curve is largest;
- onset = walking back from the apex, the first frame where the curve is at or below
  ``baseline + threshold * (peak - baseline)`` (threshold 0.1), the baseline being the curve's minimum between the
  range start and the apex (the start of the range when it never gets that low);
- offset = likewise walking forward from the apex, with the minimum between the apex and the range end.

Given values are kept and constrain the rest: a given onset/offset bounds the apex search, a given apex
is the peak the onset/offset are found around. When a given apex is not where the smoothed curve peaks
(an annotated apex a few frames before the motion's maximum, common on real sheets), onset and offset
are walked outwards from the given apex and from the peak of its motion hump (see :func:`_hump`), so
they bracket the whole movement instead of collapsing onto the apex.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np

__all__ = ["Phases", "difference_maps", "motion_signal", "smooth", "spot_phases", "default_sigma"]

_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
_HIGHPASS_SIGMA = 6.0
_DIFF_BLUR = 1.0


@dataclass(frozen=True)
class Phases:
    """Onset, apex and offset (frame numbers) of a clip and how they were obtained.

    Attributes:
        onset, apex, offset: frame numbers, ``onset <= apex <= offset``.
        estimated: names of the values that were spotted (empty when all three were given).
        curve: the smoothed motion signal of every frame in ``numbers`` (None when nothing was spotted).
        numbers: frame numbers of ``curve``.
    """

    onset: int
    apex: int
    offset: int
    estimated: tuple[str, ...] = ()
    curve: np.ndarray | None = field(default=None, repr=False, compare=False)
    numbers: tuple[int, ...] = field(default=(), repr=False, compare=False)


def _grey(frame: np.ndarray, size: int) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def _highpass(image: np.ndarray, lowpass: float = 0.0) -> np.ndarray:
    """Minus a blur of sigma 6 px; ``lowpass`` > 0: also blurred by that sigma first (a band-pass)."""
    sharp = cv2.GaussianBlur(image, (0, 0), lowpass) if lowpass > 0 else image
    return sharp - cv2.GaussianBlur(image, (0, 0), _HIGHPASS_SIGMA)


def motion_signal(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    reference: int = 0,
    size: int = 96,
    top_fraction: float = 0.02,
) -> np.ndarray:
    """Per-frame motion relative to ``frames[reference]`` (see the module docstring).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (or grey ``(T, H, W)``), the face crop of every frame in order.
        reference: index of the reference (neutral) frame.
        size: side of the square grey frames the signal is computed on.
        top_fraction: fraction of the largest per-pixel differences averaged per frame.

    Returns:
        ``(T,)`` float64, zero at ``reference``.
    """
    if len(frames) == 0:
        return np.zeros(0)
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction={top_fraction}: expected a value in (0, 1]")
    border = max(1, size // 16)  # warped borders are reflections, not image content
    keep = max(1, int(top_fraction * (size - 2 * border) ** 2))
    out = np.zeros(len(frames), dtype=np.float64)
    for i, diff in difference_maps(frames, reference=reference, size=size):
        values = diff[border:size - border, border:size - border].ravel()
        out[i] = float(np.partition(values, values.size - keep)[-keep:].mean())
    return out


def difference_maps(frames: Sequence[np.ndarray] | np.ndarray, *, reference: int = 0, size: int = 96,
                    lowpass: float = 0.0) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, map)`` for every frame but the reference: the blurred absolute difference of its high-passed,
    ECC-aligned grey image from the reference's (``size`` x ``size`` float32), frames after the reference first,
    then those before it (each direction aligned incrementally from the identity).

    ``lowpass`` (px, 0: none): blur both images by this sigma before differencing. Sharp edges resampled at
    another sub-pixel phase (a head a tenth of a pixel away, even once aligned) differ in their finest detail;
    a blur of 1-2 px removes that and keeps the pixel-sized motion of an expression.
    """
    ref_image = _grey(frames[reference], size)
    ref = _highpass(ref_image, lowpass)
    warp = np.eye(2, 3, dtype=np.float32)
    order = list(range(reference + 1, len(frames))) + list(range(reference - 1, -1, -1))
    for i in order:
        if i == reference - 1:  # walking backwards now: restart from the identity
            warp = np.eye(2, 3, dtype=np.float32)
        image = _grey(frames[i], size)
        try:
            _, warp = cv2.findTransformECC(ref_image, image, warp.copy(), cv2.MOTION_AFFINE, _ECC_CRITERIA, None, 5)
        except cv2.error:  # no convergence (e.g. a flat frame): keep the previous frame's alignment
            pass
        aligned = cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
        yield i, cv2.GaussianBlur(np.abs(_highpass(aligned, lowpass) - ref), (0, 0), _DIFF_BLUR)


def default_sigma(fps: float | None) -> float:
    """Smoothing width in frames: 10 ms of video (2 frames at 200 fps), at least 1 frame."""
    return max(1.0, 0.01 * fps) if fps else 2.0


def smooth(signal: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (edges repeat the end values)."""
    x = np.asarray(signal, dtype=np.float64)
    if sigma <= 0 or x.size < 2:
        return x.copy()
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _hump(curve: np.ndarray, top: int, lo: int, hi: int, threshold: float) -> tuple[int, int]:
    """The first and last index of the peak of the motion hump holding a given apex ``top``.

    A given apex need not be the curve's maximum (a face still moving, or a slightly later peak of the
    smoothed signal). The hump is the run of frames around ``top``, within ``[lo, hi]``, whose curve stays
    above ``min + threshold * (curve[top] - min)``; its maximum is the peak. Returned: the span between
    ``top`` and that peak (``(top, top)`` when ``top`` is the peak), from whose ends onset and offset are
    walked, so that they bracket both the given apex and the motion around it.
    """
    base = float(curve[lo:hi + 1].min())
    level = base + threshold * (float(curve[top]) - base)
    a = b = top
    while a > lo and curve[a - 1] > level:
        a -= 1
    while b < hi and curve[b + 1] > level:
        b += 1
    peak = a + int(np.argmax(curve[a:b + 1]))
    if curve[peak] <= curve[top]:
        return top, top
    return min(top, peak), max(top, peak)


def _stop_level(base: float, peak: float, threshold: float, level: float | None) -> float:
    """Where onset/offset walks stop: ``threshold`` of the rise above ``base``, or the absolute ``level``
    (at most half the rise)."""
    if level is None:
        return base + threshold * (peak - base)
    return min(level, base + 0.5 * (peak - base))


def spot_phases(
    signal: np.ndarray,
    numbers: Sequence[int],
    *,
    onset: int | None = None,
    apex: int | None = None,
    offset: int | None = None,
    sigma: float = 2.0,
    threshold: float = 0.1,
    level: float | None = None,
) -> Phases:
    """Fill in the phases not given from a motion signal (rule in the module docstring).

    Args:
        signal: ``(T,)`` raw motion signal of the frames ``numbers``.
        numbers: frame numbers of the signal's entries, increasing.
        onset, apex, offset: known values (frame numbers in ``numbers``), or None to spot them.
        sigma: Gaussian smoothing in frames.
        threshold: fraction of the rise above baseline at which onset and offset are placed.
        level: instead, an absolute level of the curve (a noise floor, e.g. in noise units of a z-scored
            signal) at which they are placed; capped at half the rise, so that a weak peak still gets a span.

    Returns:
        :class:`Phases` with ``curve`` the smoothed signal.
    """
    nums = [int(n) for n in numbers]
    if len(nums) != len(signal) or not nums:
        raise ValueError(f"spot_phases: {len(signal)} signal values for {len(nums)} frame numbers")
    index = {n: i for i, n in enumerate(nums)}
    curve = smooth(signal, sigma)
    lo = index[onset] if onset is not None else 0
    hi = index[offset] if offset is not None else len(nums) - 1
    if apex is not None:
        top = index[apex]
        first, last = _hump(curve, top, lo, hi, threshold)
    else:
        top = lo + int(np.argmax(curve[lo:hi + 1]))
        first = last = top
    peak = float(curve[first:last + 1].max())
    if onset is None:
        stop = _stop_level(float(curve[lo:first + 1].min()), peak, threshold, level)
        i = first
        while i > lo and curve[i] > stop:
            i -= 1
        lo = i
    if offset is None:
        stop = _stop_level(float(curve[last:hi + 1].min()), peak, threshold, level)
        i = last
        while i < hi and curve[i] > stop:
            i += 1
        hi = i
    estimated = tuple(name for name, value in (("onset", onset), ("apex", apex), ("offset", offset)) if value is None)
    return Phases(onset=nums[lo], apex=nums[top], offset=nums[hi], estimated=estimated, curve=curve,
                  numbers=tuple(nums))
