"""Streaming a whole video in order, a chunk of frames at a time, in memory bounded by the chunk.

The readers (:func:`~microexp.data.video.open_video`) are built for random access into clips: PyAV's indexes
every frame's timestamp first and decord keeps its own index, and reading consecutive chunks through them
re-seeks to a keyframe per chunk. A long recording (minutes at 200 fps, for spotting) is read once from start
to end instead: :class:`FrameStream` decodes a video file sequentially with PyAV, and reads a frame folder's
images in number order, ``chunk`` frames at a time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from microexp.data.video.base import _one_line
from microexp.errors import VideoReadError

__all__ = ["FrameStream", "recorded_first_frame"]

_FIRST_FRAME_TAG = re.compile(r"(?:^|\s)first_frame=(-?\d+)(?:\s|$)")


def recorded_first_frame(path: str | os.PathLike[str]) -> int | None:
    """The first frame number a video file records in its comment tag (``first_frame=N``, as written by
    ``microexp pack`` and ``microexp synth``); None when it records none or cannot be read (the reader reports
    unreadable files)."""
    try:
        import av

        with av.open(str(path)) as container:
            comment = container.metadata.get("comment") or ""
    except Exception:  # noqa: BLE001 - a probe only: the video reader opens the file next and names any error
        return None
    match = _FIRST_FRAME_TAG.search(comment)
    return int(match.group(1)) if match else None


class FrameStream:
    """The frames of a video file or a frame folder, in order, ``chunk`` at a time.

    Args:
        path: a video file or a folder of numbered frame images.
        first_frame: number of a video's first frame (None: the number its comment tag records, else 0 and
            ``numbering_guessed``); folders number frames by file name.
        fps: frame rate (None: the video's; a folder has none).
        chunk: frames per chunk.

    Iterating yields ``(numbers, frames)``: ``(n,)`` int64 frame numbers and ``(n, H, W, 3)`` uint8 RGB.
    """

    def __init__(self, path: str | os.PathLike[str], *, first_frame: int | None = None, fps: float | None = None,
                 chunk: int = 64) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such video file or frame folder")
        if chunk < 1:
            raise ValueError(f"chunk={chunk}: expected at least 1")
        self.chunk = chunk
        self.numbering_guessed = False
        self._folder = self.path.is_dir()
        if self._folder:
            from microexp.data.video.folder import FolderReader

            self._reader = FolderReader(self.path, image_backend="cv2", fps=fps)
            numbers = self._reader.frame_numbers
            if not numbers:
                raise VideoReadError(f"{self.path}: no numbered frame images")
            self.first_frame = numbers[0]
            self.total: int | None = len(numbers)
            self.fps = fps
            self.size: tuple[int, int] | None = None
            return
        recorded = recorded_first_frame(self.path) if first_frame is None else None
        self.numbering_guessed = first_frame is None and recorded is None
        self.first_frame = first_frame if first_frame is not None else (recorded if recorded is not None else 0)
        import av

        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"{self.path}: the file has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = fps if fps is not None else (float(rate) if rate else None)
                total = int(stream.frames or 0)
                if not total and stream.duration and stream.time_base and self.fps:
                    total = int(round(float(stream.duration * stream.time_base) * self.fps))
                self.total = total or None
                self.size = (int(stream.width), int(stream.height))
        except VideoReadError:
            raise
        except Exception as exc:  # av.error.*
            raise VideoReadError(f"{self.path}: PyAV cannot open the video ({_one_line(exc)})") from exc

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._folder:
            numbers = self._reader.frame_numbers
            for i in range(0, len(numbers), self.chunk):
                positions = list(range(i, min(i + self.chunk, len(numbers))))
                yield np.asarray(numbers[positions[0]:positions[-1] + 1], np.int64), self._reader.get_frames(positions)
            return
        yield from self._decode()

    def _decode(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import av

        position = 0
        batch: list[np.ndarray] = []
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    batch.append(frame.to_ndarray(format="rgb24"))
                    if len(batch) == self.chunk:
                        numbers = np.arange(position, position + len(batch), dtype=np.int64) + self.first_frame
                        yield numbers, np.stack(batch)
                        position += len(batch)
                        batch = []
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise VideoReadError(f"{self.path}: corrupt video after {position + len(batch)} frames "
                                 f"({_one_line(exc)})") from exc
        if batch:
            yield np.arange(position, position + len(batch), dtype=np.int64) + self.first_frame, np.stack(batch)
        elif position == 0:
            raise VideoReadError(f"{self.path}: the video has no frames")
