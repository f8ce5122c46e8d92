"""Face detection for raw footage and one stable square crop box per clip.

The detector is OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``), which
ships inside the ``opencv-contrib-python-headless`` wheel (``cv2.data.haarcascades``): nothing is
downloaded at run time. A micro-expression is a motion of a few pixels, so the crop must not move
between frames: :func:`stable_face_box` detects on a few frames spread over the clip, takes the
median centre and size of the boxes found (robust to a missed or spurious detection), enlarges it by a
margin, makes it square and clamps it to the frame; :func:`crop_frames` then cuts every frame with that
one box. The same box logic serves ``microexp predict`` (raw clips) and ``microexp pack --face-crop``
(raw datasets, cropped once before training), so a model sees the same framing in both.

Haar boxes span roughly brows to chin; the default margin of 0.55 (side x 1.55) gives the framing of
the toolkit's synthetic face crops (where the cascade's box is about 0.63 of the crop side), i.e. the
whole face with a little background, as in the cropped releases of CASME II, SAMM and DFME.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from microexp.errors import MicroexpError

__all__ = ["CASCADE", "DEFAULT_MARGIN", "FACE_PROBES", "FaceBox", "NoFaceError", "crop_frames", "detect_faces",
           "clamp_box", "median_box", "probe_positions", "stable_face_box"]

#: the bundled cascade file used by :func:`detect_faces`
CASCADE = "haarcascade_frontalface_default.xml"
#: relative enlargement of the detected box (side x (1 + margin)); see the module docstring
DEFAULT_MARGIN = 0.55
#: frames searched for a face, spread evenly over the clip
FACE_PROBES = 5

_THREAD_STATE = threading.local()


class NoFaceError(MicroexpError, ValueError):
    """No face was found in the frames searched."""


class FaceBox(NamedTuple):
    """A box in pixels: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [int(self.x), int(self.y), int(self.w), int(self.h)]


def _cascade() -> cv2.CascadeClassifier:
    """One classifier per thread (OpenCV cascades are not safe to share between threads)."""
    cascade = getattr(_THREAD_STATE, "cascade", None)
    if cascade is None:
        path = Path(cv2.data.haarcascades) / CASCADE
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise MicroexpError(f"{path}: OpenCV cannot load its bundled face cascade (is opencv-contrib installed?)")
        _THREAD_STATE.cascade = cascade
    return cascade


def detect_faces(frame: np.ndarray, *, min_fraction: float = 0.1) -> list[FaceBox]:
    """All faces the cascade finds in one frame, largest first.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` grey.
        min_fraction: smallest face side accepted, as a fraction of the frame's short side (at least 24 px).

    Returns:
        Boxes sorted by area, largest first (empty when none).
    """
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else np.asarray(frame, np.uint8)
    side = max(24, int(min_fraction * min(grey.shape[:2])))
    # no histogram equalisation: on a face in front of a flat background it suppresses the face's contrast
    found = _cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    boxes = [FaceBox(*(int(v) for v in box)) for box in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


def probe_positions(frame_count: int, probes: int = FACE_PROBES) -> list[int]:
    """Frames to search for a face: up to ``probes`` spread evenly over a clip, first and last included.

    Args:
        frame_count: frames in the clip.
        probes: how many positions at most (fewer when the clip is shorter).

    Returns:
        Sorted, distinct 0-based positions.
    """
    if frame_count < 1 or probes < 1:
        raise ValueError(f"frame_count={frame_count}, probes={probes}: expected at least one of each")
    return sorted({int(round(p)) for p in np.linspace(0, frame_count - 1, probes)})


def stable_face_box(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    frame_size: tuple[int, int] | None = None,
) -> tuple[FaceBox, int]:
    """One square crop box for a whole clip from detections on a few of its frames.

    Args:
        frames: the frames to search (e.g. 5 spread over the clip), each ``(H, W, 3)`` uint8.
        margin: enlargement of the median box: side ``x (1 + margin)`` about its centre.
        frame_size: ``(H, W)`` of the clip's frames (default: those of ``frames``).

    Returns:
        ``(box, found)``: the square box clamped inside the frame, and on how many frames a face was found.

    Raises:
        NoFaceError: no face on any of the frames.
    """
    if margin < 0:
        raise ValueError(f"face margin={margin}: expected a value >= 0")
    boxes = [faces[0] for faces in (detect_faces(f) for f in frames) if faces]
    if not boxes:
        raise NoFaceError(f"no face found on the {len(frames)} frame(s) searched")
    height, width = frame_size or np.asarray(frames[0]).shape[:2]
    cx, cy, side = _median_square(boxes)
    return _square(cx, cy, int(round(min(side * (1 + margin), height, width))), (height, width)), len(boxes)


def median_box(boxes: Sequence[FaceBox], frame_size: tuple[int, int] | None = None) -> FaceBox:
    """The median square of several boxes (median centre and side), clamped inside ``frame_size = (H, W)``
    when given.

    Used when a clip has no detectable face but other clips of the same subject, filmed in the same set-up,
    do: their median box stands in for it.

    Raises:
        ValueError: no boxes, or the median side does not fit the frame.
    """
    if not boxes:
        raise ValueError("median_box needs at least one box")
    cx, cy, side = _median_square(boxes)
    return _square(cx, cy, int(round(side)), frame_size)


def clamp_box(box: FaceBox, frame_size: tuple[int, int]) -> FaceBox:
    """``box`` (square) moved inside ``frame_size = (H, W)``; ValueError when it is larger than the frame."""
    return _square(box.x + box.w / 2, box.y + box.h / 2, box.w, frame_size)


def _median_square(boxes: Sequence[FaceBox]) -> tuple[float, float, float]:
    """Median centre and median side (of each box's longer side) of ``boxes``."""
    arr = np.array([[b.x + b.w / 2, b.y + b.h / 2, max(b.w, b.h)] for b in boxes], dtype=np.float64)
    cx, cy, side = np.median(arr, axis=0)
    return float(cx), float(cy), float(side)


def _square(cx: float, cy: float, side: int, frame_size: tuple[int, int] | None) -> FaceBox:
    """The ``side`` px square centred on (cx, cy), shifted (not shrunk) inside the frame when one is given."""
    x, y = int(round(cx - side / 2)), int(round(cy - side / 2))
    if frame_size is not None:
        height, width = frame_size
        if side > min(height, width):
            raise ValueError(f"a {side} px face box does not fit {width}x{height} frames")
        x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
    return FaceBox(x, y, side, side)


def crop_frames(frames: np.ndarray, box: FaceBox | None) -> np.ndarray:
    """Cut ``box`` out of every frame ``(T, H, W, 3)``; ``None`` returns the frames unchanged."""
    if box is None:
        return frames
    return np.ascontiguousarray(frames[:, box.y:box.y + box.h, box.x:box.x + box.w])
