"""Spotting every micro-expression in a long video, streaming (``microexp spot``).

A long recording is read once, in order, a chunk at a time (:class:`~microexp.data.video.FrameStream`), and
never held whole:

1. **Face crop.** One face box from OpenCV's detector on frames of the first two seconds
   (:func:`~microexp.data.face.stable_face_box`, the face crop of training and prediction); every frame is
   cropped with it and resized to ``crop_size`` px as it is decoded. Subjects of ME recordings sit facing
   the camera; a box drawn once keeps the crops aligned for the motion signal (a subject who leaves the box
   is not followed). Without a face (or with ``face_crop=False``) the frames are used whole.
2. **Sliding windows** of ``window_s`` seconds (1.2 s), every ``window_s / 2``: longer than two micro-
   expressions (at most 0.5 s) plus their neutral margins, so every micro-expression lies whole, with
   neutral frames either side, inside some window. In each, the region-wise motion of
   :mod:`~microexp.inference.region_spotting` against the window's first frame (aligned, high-passed, per
   region z-scored on the window's own noise floor, blinks discounted; the regions are placed once, on the
   first window) gives a face curve in noise units, smoothed over 10 ms.
3. **Intervals.** Repeatedly the window's highest remaining peak: if it reaches ``threshold`` noise units,
   onset and offset are walked out to the noise floor (``floor`` units); an interval that reaches the
   window's first or last frame is not whole in this window (or the window began inside an expression,
   whose return to neutral then looks like motion) and is left to the window that holds it whole; one
   longer than ``max_duration_s`` is a head movement or a macro-expression, not a micro-expression. Its score
   is the peak in noise units.
4. **Across windows** an interval found twice (overlapping windows) is kept once, the higher score winning
   over any interval it overlaps; an interval is final once no later window can overlap it.

Memory is the current window (``window_s`` seconds of ``crop_size`` px crops), one decoded chunk and the
few intervals still open, whatever the video's length. Each frame is aligned and differenced in two windows.

``recognise``: a callable ``(crops, numbers, onset, apex, offset) -> (label, probabilities)`` run on each
interval as it is found, with the window's crops (spot-then-recognise); ``microexp spot --recognise CKPT``
passes a :class:`~microexp.inference.predictor.ClipPredictor`'s :meth:`predict_frames`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from microexp.data.face import DEFAULT_MARGIN, FaceBox, NoFaceError, crop_frames, stable_face_box
from microexp.inference.region_spotting import BLINK_PAD, FaceRegions, face_curve, face_regions, region_signals
from microexp.inference.spotting import default_sigma, smooth

__all__ = ["LongSpotter", "SpotSettings", "SpottedInterval", "spot_window"]

Recogniser = Callable[[np.ndarray, Sequence[int], int, int, int], tuple[str | None, dict[str, float]]]


@dataclass(frozen=True)
class SpotSettings:
    """How :class:`LongSpotter` spots (module docstring)."""

    window_s: float = 1.2
    threshold: float = 8.0
    floor: float = 2.0
    edge_fraction: float = 0.2
    max_duration_s: float = 0.5
    size: int = 96
    crop_size: int = 128
    face_crop: bool = True
    face_margin: float = DEFAULT_MARGIN
    face_probe_s: float = 2.0

    def check(self) -> None:
        """ValueError (one line, naming the setting) for a bad value."""
        if not (math.isfinite(self.window_s) and 0.2 <= self.window_s <= 30):
            raise ValueError(f"window {self.window_s!r} s: expected 0.2..30 seconds")
        if not (math.isfinite(self.max_duration_s) and 0 < self.max_duration_s < self.window_s):
            raise ValueError(f"max duration {self.max_duration_s!r} s: expected more than 0 and less than the window "
                             f"({self.window_s:g} s)")
        if not (math.isfinite(self.threshold) and math.isfinite(self.floor) and 0 <= self.floor < self.threshold):
            raise ValueError(f"threshold {self.threshold!r} and floor {self.floor!r}: expected 0 <= floor < threshold "
                             "(noise units)")
        if not 32 <= self.size <= 512 or not 32 <= self.crop_size <= 1024:
            raise ValueError(f"size {self.size} / crop size {self.crop_size}: expected 32..512 / 32..1024 px")


@dataclass
class SpottedInterval:
    """One spotted interval (frame numbers of the video) and its evidence."""

    onset: int
    apex: int
    offset: int
    score: float  # the face curve's peak, in noise units
    confidence: dict[str, float] = field(default_factory=dict)
    emotion: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)

    def overlaps(self, other: "SpottedInterval") -> bool:
        return self.onset <= other.offset and other.onset <= self.offset

    def to_row(self, video: str, fps: float | None) -> dict[str, Any]:
        row: dict[str, Any] = {"video": video, "onset": self.onset, "apex": self.apex, "offset": self.offset,
                               "score": round(self.score, 3),
                               "seconds": None if not fps else round((self.onset - 1) / fps, 3),
                               "duration_ms": None if not fps else round(1000 * (self.offset - self.onset) / fps, 1),
                               "apex_confidence": round(self.confidence.get("apex", 0.0), 3),
                               "onset_confidence": round(self.confidence.get("onset", 0.0), 3),
                               "offset_confidence": round(self.confidence.get("offset", 0.0), 3)}
        if self.emotion is not None:
            row["emotion"] = self.emotion
            row["probability"] = round(self.probabilities.get(self.emotion, 0.0), 4)
        return row


def spot_window(curve: np.ndarray, *, fps: float, settings: SpotSettings,
                blinks: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int, int, float]]:
    """``(onset, apex, offset, score)`` index tuples of the whole intervals in one window's smoothed face curve
    (module docstring, step 3). Peaks are taken highest first; each one's onset and offset are walked out to
    ``floor`` noise units above the curve's lowest value on that side (the signal against the window's first
    frame drifts up slowly, so each side has its own base), and its score is its height above the higher
    base (its prominence). A peak inside a blink (``blinks``: index ranges, widened by
    :data:`~microexp.inference.region_spotting.BLINK_PAD`) is not an interval: the eyes and brows are already
    discounted there, and what is left is the blink's spill into the nose and mouth regions."""
    t = len(curve)
    free = np.ones(t, bool)
    max_frames = settings.max_duration_s * fps
    lowest = float(curve.min()) if t else 0.0
    found = []
    while free.any():
        candidates = np.flatnonzero(free)
        top = int(candidates[np.argmax(curve[candidates])])
        peak = float(curve[top])
        if peak - lowest < settings.threshold:
            break
        # each side's base: the lowest point between the peak and the nearest interval already taken
        left_end = top
        while left_end > 0 and free[left_end - 1]:
            left_end -= 1
        right_end = top
        while right_end < t - 1 and free[right_end + 1]:
            right_end += 1
        reach = int(np.ceil(max_frames))  # a base is looked for no further than a micro-expression lasts
        left_end, right_end = max(left_end, top - reach), min(right_end, top + reach)
        left_base = float(curve[left_end:top + 1].min())
        right_base = float(curve[top:right_end + 1].min())
        left_stop = left_base + max(settings.floor, settings.edge_fraction * (peak - left_base))
        right_stop = right_base + max(settings.floor, settings.edge_fraction * (peak - right_base))
        lo = top
        while lo > left_end and curve[lo] > left_stop:
            lo -= 1
        hi = top
        while hi < right_end and curve[hi] > right_stop:
            hi += 1
        free[lo:hi + 1] = False
        score = peak - max(left_base, right_base)
        whole = 0 < lo and hi < t - 1 and curve[lo] <= left_stop and curve[hi] <= right_stop
        in_blink = any(a - BLINK_PAD <= top <= b + BLINK_PAD for a, b in blinks)
        if whole and not in_blink and score >= settings.threshold and hi - lo <= max_frames:
            found.append((lo, top, hi, score))
    return found


class LongSpotter:
    """Streaming spotter of one video (module docstring): :meth:`feed` chunks, then :meth:`finish`.

    Args:
        fps: the video's frame rate (a frame folder's must be given).
        settings: :class:`SpotSettings`.
        recognise: optional classifier of each interval (module docstring).
        on_curve: called with ``(numbers, values)`` of the face curve, each frame once, in order (for a curve file).
    """

    def __init__(self, fps: float, settings: SpotSettings | None = None, *, recognise: Recogniser | None = None,
                 on_curve: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
        self.settings = settings or SpotSettings()
        self.settings.check()
        if not (fps and math.isfinite(fps) and fps > 0):
            raise ValueError(f"frame rate {fps!r}: expected a number > 0")
        self.fps = float(fps)
        self.window = max(8, int(round(self.settings.window_s * fps)))
        self.hop = max(1, self.window // 2)
        self.sigma = default_sigma(fps)
        self.recognise = recognise
        self.on_curve = on_curve
        self.box: FaceBox | None = None
        self.regions: FaceRegions | None = None
        self.frames_seen = 0
        self.windows = 0
        self.blinks = 0
        self._probe: list[tuple[np.ndarray, np.ndarray]] = []  # raw chunks kept until the face box is drawn
        self._probed = not self.settings.face_crop
        self._crops: deque[np.ndarray] = deque()
        self._numbers: deque[int] = deque()
        self._pending: list[SpottedInterval] = []
        self._curve_next = -(2**62)  # the first frame number whose curve value is not reported yet
        self._last_curve: tuple[list[int], np.ndarray] = ([], np.zeros(0))

    @property
    def open_intervals(self) -> int:
        """Intervals found but not final yet (a later window may still replace them)."""
        return len(self._pending)

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, numbers: np.ndarray, frames: np.ndarray) -> list[SpottedInterval]:
        """Add a chunk of decoded frames; returns the intervals that became final."""
        self.frames_seen += len(numbers)
        if not self._probed:
            self._probe.append((numbers, frames))
            if sum(len(n) for n, _ in self._probe) < self.settings.face_probe_s * self.fps:
                return []
            return self._release_probe()
        self._add(numbers, frames)
        return self._run_windows(final=False)

    def finish(self) -> list[SpottedInterval]:
        """The video has ended: the last windows and every interval still open."""
        out = self._release_probe() if not self._probed else []
        out += self._run_windows(final=True)
        out += sorted(self._pending, key=lambda i: i.onset)
        self._pending = []
        return out

    def _release_probe(self) -> list[SpottedInterval]:
        chunks, self._probe, self._probed = self._probe, [], True
        if not chunks:
            return []
        frames = np.concatenate([f for _, f in chunks])
        positions = np.linspace(0, len(frames) - 1, num=min(5, len(frames))).round().astype(int)
        try:
            self.box, _ = stable_face_box(frames[positions], margin=self.settings.face_margin)
        except NoFaceError:
            self.box = None
        out: list[SpottedInterval] = []
        for numbers, chunk in chunks:
            self._add(numbers, chunk)
            out += self._run_windows(final=False)
        return out

    def _add(self, numbers: np.ndarray, frames: np.ndarray) -> None:
        side = self.settings.crop_size
        crops = crop_frames(frames, self.box) if self.box is not None else frames
        for number, crop in zip(numbers, crops):
            self._crops.append(cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=cv2.INTER_AREA))
            self._numbers.append(int(number))

    # -- windows -------------------------------------------------------------------------------------

    def _run_windows(self, *, final: bool) -> list[SpottedInterval]:
        out: list[SpottedInterval] = []
        while len(self._crops) >= self.window or (final and len(self._crops) > self.hop):
            n = min(self.window, len(self._crops))
            crops = np.stack([self._crops[i] for i in range(n)])
            numbers = [self._numbers[i] for i in range(n)]
            self._spot(crops, numbers)
            out += self._finalise(before=numbers[self.hop] if n == self.window else None)
            for _ in range(min(self.hop, n)):
                self._crops.popleft()
                self._numbers.popleft()
            if n < self.window:
                break
        if final:
            self._report_curve(len(self._last_curve[0]))  # the last window's frames not yet reported
        return out

    def _report_curve(self, stop: int) -> None:
        """Report the last window's curve up to index ``stop``, from the first frame not reported yet."""
        numbers, curve = self._last_curve
        if self.on_curve is None or not numbers:
            return
        start = int(np.searchsorted(numbers, self._curve_next))
        if start < stop:
            self.on_curve(np.asarray(numbers[start:stop]), curve[start:stop])
            self._curve_next = numbers[stop - 1] + 1

    def _spot(self, crops: np.ndarray, numbers: list[int]) -> None:
        self.windows += 1
        if self.regions is None:
            self.regions = face_regions(crops[0], self.settings.size)
        signals, _ = region_signals(crops, reference=0, size=self.settings.size, regions=self.regions)
        for values in signals.values():
            values[0] = values[1]  # the reference's own 0 is no frame's motion: not a base for the walks
        raw, blinks = face_curve(signals, fps=self.fps)
        self.blinks += len(blinks)
        curve = smooth(raw, self.sigma)
        self._last_curve = (numbers, curve)
        self._report_curve(min(self.hop, len(numbers)))  # each frame once: a window reports its first hop
        for lo, top, hi, score in spot_window(curve, fps=self.fps, settings=self.settings, blinks=blinks):
            found = SpottedInterval(numbers[lo], numbers[top], numbers[hi], score,
                                    _confidence(curve, lo, top, hi, self.sigma, self.settings.floor))
            self._merge(found, crops, numbers)

    def _merge(self, found: SpottedInterval, crops: np.ndarray, numbers: list[int]) -> None:
        rivals = [p for p in self._pending if p.overlaps(found)]
        if any(r.score >= found.score for r in rivals):
            return
        if self.recognise is not None:
            found.emotion, found.probabilities = self.recognise(crops, numbers, found.onset, found.apex, found.offset)
        self._pending = [p for p in self._pending if p not in rivals] + [found]

    def _finalise(self, *, before: int | None) -> list[SpottedInterval]:
        """Intervals no later window can overlap: those ending before the next window's first frame."""
        if before is None:
            return []
        done = sorted((p for p in self._pending if p.offset < before), key=lambda i: i.onset)
        self._pending = [p for p in self._pending if p.offset >= before]
        return done


def _confidence(curve: np.ndarray, lo: int, top: int, hi: int, sigma: float, floor: float) -> dict[str, float]:
    """As :func:`~microexp.inference.region_spotting.spot_regions`'s: how much the apex stands out in its
    window, and how cleanly the motion starts and ends at the floor."""
    peak = float(curve[top])
    outside = np.concatenate([curve[:lo], curve[hi + 1:]])
    apex = float(np.clip(1 - (outside.max() / peak if outside.size and peak > 0 else 0), 0, 1))
    width = max(2, int(round(3 * sigma)))
    before, after = curve[max(0, lo - width):lo], curve[hi + 1:hi + 1 + width]
    return {"apex": apex, "onset": float((before <= floor).mean()) if before.size else 0.0,
            "offset": float((after <= floor).mean()) if after.size else 0.0}


def spot_stream(chunks: Iterable[tuple[np.ndarray, np.ndarray]], fps: float, settings: SpotSettings | None = None,
                **kwargs: Any) -> Iterator[SpottedInterval]:
    """Every interval of a stream of ``(numbers, frames)`` chunks, in order, as each becomes final."""
    spotter = LongSpotter(fps, settings, **kwargs)
    for numbers, frames in chunks:
        yield from spotter.feed(numbers, frames)
    yield from spotter.finish()
