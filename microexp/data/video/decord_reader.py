"""The decord video-file reader (fast random access)."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from microexp.data.video.base import _one_line, _VideoFileReader
from microexp.errors import VideoReadError


def _import_decord() -> Any:
    """Import decord, importing OpenCV first when it is installed.

    decord loads its library with ``RTLD_GLOBAL``, which exports its bundled zlib 1.2.3; an OpenCV
    imported afterwards binds libpng to that zlib and can no longer decode PNG files
    ("libpng error: bad parameters to zlib"). OpenCV imported first keeps its own zlib.
    """
    if "decord" not in sys.modules and "cv2" not in sys.modules:
        try:
            import cv2  # noqa: F401
        except ImportError:
            pass
    import decord

    return decord


class DecordReader(_VideoFileReader):
    """Video file reader on ``decord.VideoReader`` (not ``AVReader``: works on files without audio).

    Lazy: the constructor does not import or open decord; the file is opened on first use
    (``len``, ``frame_numbers``, ``fps``, ``get_frames``). A reader created in a DataLoader's main
    process therefore does not hang its forked workers; each process opens its own decord handle.

    Args:
        path: video file.
        first_frame: frame number of position 0.
        num_threads: decoder threads (decord's ``num_threads``; 0 = one per core). The default 1 suits
            DataLoader workers, which already decode in parallel.
    """

    backend = "decord"

    def __init__(
        self, path: str | os.PathLike[str], *, first_frame: int = 0, num_threads: int = 1
    ) -> None:
        super().__init__(path, first_frame=first_frame, num_threads=num_threads)
        self._fps: float | None = None

    def _open(self) -> Any:
        vr = self._handle.current()
        if vr is not None:
            return vr
        try:
            decord = _import_decord()
        except ImportError as exc:
            raise VideoReadError(f"{self.path}: decord is not installed ({exc})") from exc
        try:
            vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=self.num_threads)
            length = len(vr)
            fps = float(vr.get_avg_fps())
        except Exception as exc:  # decord raises DECORDError/RuntimeError with multi-line logs
            raise VideoReadError(
                f"{self.path}: decord cannot open the video ({_one_line(exc)})"
            ) from exc
        if length <= 0:
            raise VideoReadError(f"{self.path}: the video has no frames")
        if self._length is not None and length != self._length:
            raise VideoReadError(
                f"{self.path}: frame count changed from {self._length} to {length} (file replaced?)"
            )
        self._length = length
        self._fps = fps if np.isfinite(fps) and fps > 0 else None
        self._handle.set(vr)
        return vr

    @property
    def fps(self) -> float | None:
        self._open()
        return self._fps

    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        vr = self._open()
        try:
            return vr.get_batch(positions).asnumpy()
        except Exception as exc:
            raise VideoReadError(
                f"{self.path}: decord cannot decode frame positions "
                f"{positions[0]}..{positions[-1]} ({_one_line(exc)})"
            ) from exc

    def close(self) -> None:
        self._handle.release()  # decord has no close(); dropping the last reference frees it
