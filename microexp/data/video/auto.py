"""Picking the reader: :func:`open_video`, and the ``"auto"`` backend.

``"auto"`` reads a frame folder with :class:`FolderReader`; a Motion JPEG AVI file (``microexp pack --mode
mjpeg``, recognised from its first bytes) with PyAV, which reads it 1.6-4x faster than decord; any other
video file with decord, falling back to PyAV when decord is not installed (no wheel for ARM Linux or
macOS: then PyAV reads everything, without a warning) or cannot open or decode the file (a warning, once
per process). ``"torchcodec"`` is never chosen by ``"auto"``; it is selected by name and needs the
system FFmpeg libraries (see :mod:`.torchcodec_reader`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from microexp.data.video.base import VideoReader, _VideoFileReader
from microexp.data.video.decord_reader import DecordReader
from microexp.data.video.folder import FolderReader
from microexp.data.video.pyav_reader import PyAVReader
from microexp.data.video.torchcodec_reader import TorchCodecReader, require_torchcodec
from microexp.errors import ConfigError, VideoReadError

# The package's logger, so records keep the name they had before the package was split.
logger = logging.getLogger(__package__)

#: Values accepted by ``open_video(backend=...)``.
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav", "folder", "torchcodec")

_SNIFF_BYTES = 16384  # an AVI's header list (hdrl) with the stream header comes first


def is_mjpeg_avi(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an AVI file whose first video stream is Motion JPEG (from its header bytes).

    Reads at most the first 16 KiB; False for anything else or an unreadable file (the reader then
    reports the error).
    """
    try:
        with open(path, "rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError:
        return False
    if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return False
    at = head.find(b"strh")  # 'strh', chunk size, fccType 'vids', fccHandler (the codec)
    while at >= 0 and head[at + 8:at + 12] != b"vids":
        at = head.find(b"strh", at + 4)
    return at >= 0 and head[at + 12:at + 16].upper() == b"MJPG"


def _decord_importable() -> bool:
    """Whether decord can be imported (it has wheels for x86_64 Linux and 64-bit Windows only)."""
    from microexp.data.video.decord_reader import _import_decord

    try:
        _import_decord()
    except ImportError:
        return False
    return True


class _FallbackWarning:
    """Warn once per process that decord failed and PyAV took over (later fallbacks log at debug level).

    A forked DataLoader worker inherits the flag, so a process that already warned does not warn again
    from each worker.
    """

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, path: Path, reason: str) -> None:
        if self.warned:
            logger.debug("%s: read with PyAV (decord failed: %s)", path, reason)
            return
        self.warned = True
        reason = reason.removeprefix(f"{path}: ")
        logger.warning("%s: decord failed (%s); reading it with PyAV, which is slower. Later fallbacks "
                       "are not reported by this process (each DataLoader worker is a process of its own).", path, reason)


_warn_fallback = _FallbackWarning()


class _AutoReader(VideoReader):
    """decord, falling back to PyAV when decord is missing, cannot open or cannot decode the file;
    PyAV from the start for a Motion JPEG AVI (see the module docstring).

    Lazy like the readers it wraps: nothing is opened before first use. :attr:`backend` says which
    reader is in use (opening the file to decide).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, first_frame: int = 0, num_threads: int = 1
    ) -> None:
        self._reader: _VideoFileReader = DecordReader(
            path, first_frame=first_frame, num_threads=num_threads
        )
        super().__init__(path)
        self._resolved = False

    def _resolve(self) -> _VideoFileReader:
        if not self._resolved and is_mjpeg_avi(self.path):
            self._fall_back("Motion JPEG AVI")
            self._reader._open()
            self._resolved = True
        elif not self._resolved and not _decord_importable():
            self._fall_back("decord is not installed")
            self._reader._open()
            self._resolved = True
        if not self._resolved:
            try:
                self._reader._open()
            except VideoReadError as exc:
                self._fall_back(str(exc))
                self._reader._open()  # raises when PyAV cannot open it either
                _warn_fallback(self.path, str(exc))
            self._resolved = True
        return self._reader

    def _fall_back(self, reason: str) -> None:
        logger.debug("using PyAV: %s", reason)
        old = self._reader
        self._reader = PyAVReader(old.path, first_frame=old.first_frame, num_threads=old.num_threads)
        self._numbers = None
        self._position_of = None

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self._resolve().backend

    @property
    def fps(self) -> float | None:
        return self._resolve().fps

    def _frame_numbers(self) -> list[int]:
        return self._resolve()._get_numbers()

    def _get_position_of(self) -> dict[int, int]:
        return self._resolve()._get_position_of()

    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        reader = self._resolve()
        frames = None
        if reader.backend == "decord":
            try:
                frames = reader._read_sorted(positions)
            except VideoReadError as exc:
                reason = str(exc)
            else:
                if frames.ndim == 4 and frames.shape[0] == len(positions) and frames.shape[-1] == 3:
                    return frames
                reason = f"{self.path}: decord returned frames of shape {frames.shape}"
            length = len(reader)
            self._fall_back(reason)
            if len(self._reader) != length:
                raise VideoReadError(
                    f"{self.path}: decord and PyAV disagree on the frame count "
                    f"({length} vs {len(self._reader)})"
                )
            reader = self._reader
            frames = reader._read_sorted(positions)
            _warn_fallback(self.path, reason)
            return frames
        return reader._read_sorted(positions)

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        return f"open_video({str(self.path)!r}, backend='auto')"


def open_video(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    first_frame: int = 0,
    num_threads: int = 1,
) -> VideoReader:
    """Open a clip: a video file or a frame folder.

    Nothing is decoded (or opened) until first use; see the module docstring on DataLoader workers.

    Args:
        path: video file, or folder of numbered frame images.
        backend: one of :data:`BACKENDS`. ``"auto"``: a folder is read by :class:`FolderReader`, a
            file by decord, falling back to PyAV when decord is missing or cannot open/decode it (a
            Motion JPEG AVI by PyAV; see the module docstring). ``"torchcodec"`` needs torchcodec and
            the system FFmpeg libraries.
        first_frame: frame number of a video's position 0 (frame folders number their frames by
            file name and ignore it).
        num_threads: decoder threads for video files.

    Returns:
        A :class:`VideoReader`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: unknown ``backend``, or ``"torchcodec"`` when it cannot decode here (the message
            says how to install it).
        VideoReadError: ``backend`` does not fit the path (a folder for a video backend or the
            reverse); unreadable files raise on first use.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"video backend {backend!r} is not one of {', '.join(BACKENDS)}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video or frame folder not found: {p}")
    if backend == "folder" or (backend == "auto" and p.is_dir()):
        return FolderReader(p)
    if backend == "decord":
        return DecordReader(p, first_frame=first_frame, num_threads=num_threads)
    if backend == "pyav":
        return PyAVReader(p, first_frame=first_frame, num_threads=num_threads)
    if backend == "torchcodec":
        reader = TorchCodecReader(p, first_frame=first_frame, num_threads=num_threads)
        require_torchcodec()
        return reader
    return _AutoReader(p, first_frame=first_frame, num_threads=num_threads)
