"""Frame readers for micro-expression clips: video files (decord, PyAV) and frame folders.

One small interface, :class:`VideoReader`, with three implementations:

- :class:`DecordReader` reads video files with ``decord.VideoReader`` (fast random access).
- :class:`PyAVReader` reads video files with PyAV; the fallback when decord is missing or cannot open
  a file, and selectable on its own (``backend="pyav"``).
- :class:`FolderReader` reads folders of numbered frame images (``img12.jpg``, ``006_00012.jpg``,
  ``00012.png``); frames are ordered by the last number in the file name, never lexically.

Use :func:`open_video`, which picks the reader from the path (a directory is a frame folder) and the
``backend`` argument::

    with open_video("sub01/EP02_01f.mp4", first_frame=1) as reader:
        frames = reader.get_frames_by_number([1, 46, 80])   # (3, H, W, 3) uint8 RGB

Positions are ``0 .. len(reader) - 1`` in presentation order. Frame *numbers* are the clip's own
numbering as annotation sheets use it: for a video, ``first_frame + position``; for a folder, the
numbers in the file names.

Readers are lazy and fork-safe: constructing one only checks that the path exists; the file is opened
on first use. A reader also remembers the process that opened it, and a forked child (a DataLoader
worker) opens its own handle instead of touching the parent's. This matters for decord: a
``decord.VideoReader`` opened before ``fork()`` hangs when used in the child, and aborts the child when
it is freed there, so the parent's handle is kept (never used, never freed) in the child. Readers
pickle without their open handle, so ``spawn`` workers work too. A reader is not thread-safe.

:func:`write_video` writes frames to an H.264 file. The default (``lossless=True``) is RGB H.264 at
qp 0 (``libx264rgb``), which stores the RGB frames exactly: decord and PyAV both decode it to frames
identical to the input. ``lossless=False`` writes compact 4:2:0 H.264 at a constant rate factor.
"""

from __future__ import annotations

import abc
import bisect
import logging
import operator
import os
import re
import sys
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from microexp.errors import ConfigError, VideoReadError

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "IMAGE_EXTENSIONS",
    "VideoReader",
    "DecordReader",
    "PyAVReader",
    "FolderReader",
    "open_video",
    "write_video",
    "frame_number_from_name",
    "check_clip",
    "check_image_file",
]

#: Values accepted by ``open_video(backend=...)``.
BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav", "folder")

#: File extensions (lower case) of frame images that :class:`FolderReader` reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_NUMBER_RE = re.compile(r"\d+")
_DECORD_LOG_PREFIX_RE = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


def frame_number_from_name(name: str) -> int | None:
    """Return the frame number in an image file name: the last run of digits in its stem.

    ``"img46.jpg"`` -> 46, ``"006_00012.jpg"`` -> 12, ``"reg_image7.bmp"`` -> 7, ``"face.png"`` and
    non-image names -> None.
    """
    path = Path(name)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    numbers = _NUMBER_RE.findall(path.stem)
    return int(numbers[-1]) if numbers else None


def _one_line(exc: BaseException) -> str:
    """A one-line description of a backend exception (decord messages carry log prefixes)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = _DECORD_LOG_PREFIX_RE.sub("", line)
    return line or type(exc).__name__


# ----------------------------------------------------------------------------------------------
# The interface
# ----------------------------------------------------------------------------------------------


class VideoReader(abc.ABC):
    """Random access to the frames of one clip.

    Subclasses implement :meth:`_frame_numbers` (called once, lazily) and :meth:`_read_sorted`.
    Every reader is a context manager; :meth:`close` releases the file handle (the reader reopens
    on next use).

    Attributes:
        path: the clip's video file or frame folder.
        backend: ``"decord"``, ``"pyav"`` or ``"folder"``.
    """

    backend: str = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video or frame folder not found: {self.path}")
        self._numbers: list[int] | None = None
        self._position_of: dict[int, int] | None = None

    # -- the public interface ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._get_numbers())

    @property
    def frame_numbers(self) -> list[int]:
        """The frame number of every position, in presentation order (a copy)."""
        return list(self._get_numbers())

    @property
    @abc.abstractmethod
    def fps(self) -> float | None:
        """Frames per second from the file's metadata; None when unknown (frame folders)."""

    def get_frames(self, positions: Iterable[int]) -> np.ndarray:
        """Decode the frames at ``positions`` (0-based, any order, repeats allowed).

        Args:
            positions: integer positions ``0 .. len(self) - 1``.

        Returns:
            ``(T, H, W, 3)`` uint8 RGB, C-contiguous, frames in the order of ``positions``.

        Raises:
            VideoReadError: a position is out of range, or the file cannot be decoded.
        """
        wanted = [self._check_position(p) for p in positions]
        if not wanted:
            first = self._read_sorted([0])
            return np.empty((0,) + first.shape[1:], dtype=np.uint8)
        unique = sorted(set(wanted))
        frames = self._read_sorted(unique)
        if frames.ndim != 4 or frames.shape[0] != len(unique) or frames.shape[-1] != 3:
            raise VideoReadError(
                f"{self.path}: {self.backend} returned frames of shape {frames.shape}, "
                f"expected ({len(unique)}, H, W, 3)"
            )
        if unique != wanted:
            index = {p: i for i, p in enumerate(unique)}
            frames = frames[[index[p] for p in wanted]]
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def get_frames_by_number(self, numbers: Iterable[int]) -> np.ndarray:
        """Decode frames by their frame numbers (see :attr:`frame_numbers`).

        Returns:
            ``(T, H, W, 3)`` uint8 RGB, in the order of ``numbers``.

        Raises:
            VideoReadError: a number is not a frame of this clip.
        """
        position_of = self._get_position_of()
        positions = []
        for number in numbers:
            n = operator.index(number)
            pos = position_of.get(n)
            if pos is None:
                nums = self._get_numbers()
                raise VideoReadError(
                    f"{self.path}: frame number {n} not in the clip "
                    f"(frames {nums[0]}..{nums[-1]}, {len(nums)} frames)"
                )
            positions.append(pos)
        return self.get_frames(positions)

    def close(self) -> None:
        """Release the open file handle, if any (the reader reopens on next use)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- for subclasses ------------------------------------------------------------------------

    @abc.abstractmethod
    def _frame_numbers(self) -> list[int]:
        """Open the clip if needed and return its frame numbers (non-empty, strictly increasing)."""

    @abc.abstractmethod
    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        """Decode frames at sorted, unique, valid positions -> ``(T, H, W, 3)`` uint8."""

    def _get_numbers(self) -> list[int]:
        if self._numbers is None:
            numbers = self._frame_numbers()
            if not numbers:
                raise VideoReadError(f"{self.path}: the clip has no frames")
            self._numbers = numbers
        return self._numbers

    def _get_position_of(self) -> dict[int, int]:
        if self._position_of is None:
            self._position_of = {n: i for i, n in enumerate(self._get_numbers())}
        return self._position_of

    def _check_position(self, position: int) -> int:
        p = operator.index(position)
        n = len(self._get_numbers())
        if not 0 <= p < n:
            raise VideoReadError(f"{self.path}: frame position {p} out of range 0..{n - 1}")
        return p


class _ForkSafeHandle:
    """Holds a per-process library handle (decord reader, PyAV container).

    ``get()`` opens the handle on first use in each process. A handle inherited through ``fork()`` is
    moved to ``_inherited`` and never used or freed in the child: decord's decoder threads do not
    survive a fork, and freeing the handle in the child aborts it.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self.pid: int | None = None
        self._inherited: list[Any] = []

    def current(self) -> Any:
        """The handle if it was opened in this process, else None."""
        if self.handle is not None and self.pid != os.getpid():
            self._inherited.append(self.handle)
            self.handle = None
            self.pid = None
        return self.handle

    def set(self, handle: Any) -> None:
        self.handle = handle
        self.pid = os.getpid()

    def release(self) -> Any:
        """Forget the handle; returns it when it belongs to this process (for closing)."""
        handle = self.current()
        self.handle = None
        self.pid = None
        return handle


class _VideoFileReader(VideoReader):
    """Shared parts of the video-file readers: numbering from ``first_frame``, lazy handle, pickling."""

    def __init__(
        self, path: str | os.PathLike[str], *, first_frame: int = 0, num_threads: int = 1
    ) -> None:
        super().__init__(path)
        if self.path.is_dir():
            raise VideoReadError(
                f"{self.path}: is a frame folder; backend {self.backend!r} reads video files "
                f"(use backend 'auto' or 'folder')"
            )
        self.first_frame = operator.index(first_frame)
        self.num_threads = operator.index(num_threads)
        self._handle = _ForkSafeHandle()
        self._length: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = _ForkSafeHandle()
        return state

    def _frame_numbers(self) -> list[int]:
        self._open()
        assert self._length is not None  # set by _open
        return list(range(self.first_frame, self.first_frame + self._length))

    def _get_position_of(self) -> dict[int, int]:
        return _RangeIndex(self.first_frame, len(self._get_numbers()))  # type: ignore[return-value]

    @abc.abstractmethod
    def _open(self) -> Any:
        """Return this process's open handle, opening the file (and setting ``_length``) if needed."""


class _RangeIndex:
    """``dict.get``-compatible map from frame number to position for contiguous numbering."""

    def __init__(self, first: int, length: int) -> None:
        self.first = first
        self.length = length

    def get(self, number: int, default: int | None = None) -> int | None:
        pos = number - self.first
        return pos if 0 <= pos < self.length else default


# ----------------------------------------------------------------------------------------------
# decord
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# PyAV
# ----------------------------------------------------------------------------------------------


class PyAVReader(_VideoFileReader):
    """Video file reader on PyAV: the fallback for files decord cannot open, and selectable.

    On first use it demuxes the file once (no decoding) to index every frame's timestamp and the
    keyframes. Reading sorted positions decodes forward; it seeks only when the next wanted frame is
    behind the decoder or a keyframe lies between the decoder and that frame, so a batch of frames
    costs at most one sequential decode from the keyframe before each wanted frame. Files whose
    packets lack timestamps are decoded sequentially from the start.

    Args:
        path: video file.
        first_frame: frame number of position 0.
        num_threads: codec threads (0 = FFmpeg's automatic choice).
    """

    backend = "pyav"

    def __init__(
        self, path: str | os.PathLike[str], *, first_frame: int = 0, num_threads: int = 1
    ) -> None:
        super().__init__(path, first_frame=first_frame, num_threads=num_threads)
        self._fps: float | None = None
        self._pts: list[int] | None = None  # presentation timestamp of each position, or None
        self._keyframes: list[int] = []  # sorted positions of keyframes

    def _open(self) -> Any:
        container = self._handle.current()
        if container is not None:
            return container
        import av

        try:
            container = av.open(str(self.path))
        except Exception as exc:  # av.error.* (some subclass FileNotFoundError/EOFError)
            raise VideoReadError(f"{self.path}: PyAV cannot open the video ({_one_line(exc)})") from exc
        try:
            if not container.streams.video:
                raise VideoReadError(f"{self.path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.num_threads
            if self._length is None:
                self._index(container, stream)
            self._handle.set(container)
        except BaseException:
            container.close()
            raise
        return container

    def _index(self, container: Any, stream: Any) -> None:
        """Demux once: frame count, presentation timestamps and keyframe positions."""
        entries: list[tuple[int | None, bool]] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # the flush packet at the end
                if getattr(packet, "is_discard", False):
                    continue
                entries.append((packet.pts, bool(packet.is_keyframe)))
        except Exception as exc:
            raise VideoReadError(f"{self.path}: corrupt video ({_one_line(exc)})") from exc
        declared = int(stream.frames or 0)
        if not entries:
            raise VideoReadError(f"{self.path}: the video has no frames")
        if declared > len(entries):
            raise VideoReadError(
                f"{self.path}: truncated video (header declares {declared} frames, "
                f"{len(entries)} found)"
            )
        self._length = len(entries)
        rate = stream.average_rate or stream.guessed_rate
        self._fps = float(rate) if rate else None
        if all(pts is not None for pts, _ in entries):
            order = sorted(range(len(entries)), key=lambda i: entries[i][0])  # type: ignore[arg-type,return-value]
            self._pts = [entries[i][0] for i in order]  # type: ignore[misc]
            if len(set(self._pts)) != len(self._pts):
                self._pts = None
            else:
                self._keyframes = [pos for pos, i in enumerate(order) if entries[i][1]]
        if self._pts is None or not self._keyframes or self._keyframes[0] != 0:
            self._pts = None
            self._keyframes = [0]

    @property
    def fps(self) -> float | None:
        self._open()
        return self._fps

    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        container = self._open()
        stream = container.streams.video[0]
        try:
            if self._pts is None:
                return self._read_sequential(container, stream, positions)
            return self._read_seeking(container, stream, positions)
        except VideoReadError:
            raise
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise VideoReadError(f"{self.path}: corrupt video ({_one_line(exc)})") from exc

    def _read_seeking(self, container: Any, stream: Any, positions: list[int]) -> np.ndarray:
        assert self._pts is not None
        pts_to_pos = {pts: pos for pos, pts in enumerate(self._pts)}
        out: list[np.ndarray] = []
        frames: Iterator[Any] | None = None
        next_pos = 0  # position of the next frame `frames` yields
        for want in positions:
            key = self._keyframes[bisect.bisect_right(self._keyframes, want) - 1]
            if frames is None or want < next_pos or key > next_pos:
                container.seek(self._pts[key], stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                next_pos = key
            for frame in frames:
                pos = pts_to_pos.get(frame.pts)
                if pos is None or pos < next_pos:
                    continue  # a frame before the seek target (leading frames of an open GOP)
                next_pos = pos + 1
                if pos == want:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
                if pos > want:
                    raise VideoReadError(f"{self.path}: frame position {want} could not be decoded")
            else:
                raise VideoReadError(
                    f"{self.path}: frame position {want} could not be decoded (stream ended early)"
                )
        return np.stack(out)

    def _read_sequential(self, container: Any, stream: Any, positions: list[int]) -> np.ndarray:
        container.seek(0)
        wanted = set(positions)
        out: list[np.ndarray] = []
        for pos, frame in enumerate(container.decode(stream)):
            if pos in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
                if pos == positions[-1]:
                    break
        if len(out) != len(positions):
            raise VideoReadError(
                f"{self.path}: frame position {positions[len(out)]} could not be decoded "
                f"(stream ended early)"
            )
        return np.stack(out)

    def close(self) -> None:
        container = self._handle.release()
        if container is not None:
            container.close()


# ----------------------------------------------------------------------------------------------
# auto: decord with fallback to PyAV
# ----------------------------------------------------------------------------------------------


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
    """decord, falling back to PyAV when decord is missing, cannot open or cannot decode the file.

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


# ----------------------------------------------------------------------------------------------
# frame folders
# ----------------------------------------------------------------------------------------------


class FolderReader(VideoReader):
    """Reader for a folder of numbered frame images (png, jpg, bmp, tif, webp).

    Frames are ordered by the last number in the file name (``img9.jpg`` before ``img10.jpg``), never
    lexically, and those numbers are the frame numbers. Files with other extensions, and images
    without a number in their name, are ignored (the latter with a warning). Two images with the same
    number are an error. Grayscale and palette images become 3-channel RGB.

    Args:
        path: the folder.
        image_backend: ``"pil"`` (Pillow) or ``"cv2"`` (OpenCV, often faster for PNG).
        fps: frames per second to report (folders carry none); None by default.
    """

    backend = "folder"

    def __init__(
        self, path: str | os.PathLike[str], *, image_backend: str = "pil", fps: float | None = None
    ) -> None:
        super().__init__(path)
        if not self.path.is_dir():
            raise VideoReadError(
                f"{self.path}: is a file; backend 'folder' reads frame folders "
                f"(use backend 'auto', 'decord' or 'pyav')"
            )
        if image_backend not in ("pil", "cv2"):
            raise ConfigError(f"image_backend {image_backend!r} is not one of 'pil', 'cv2'")
        self.image_backend = image_backend
        self._fps = fps
        self._files: list[Path] | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def files(self) -> list[Path]:
        """The frame image files in frame-number order."""
        self._get_numbers()
        assert self._files is not None
        return list(self._files)

    def _frame_numbers(self) -> list[int]:
        by_number: dict[int, Path] = {}
        unnumbered: list[str] = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.lower().endswith(IMAGE_EXTENSIONS) or not entry.is_file():
                    continue
                number = frame_number_from_name(entry.name)
                if number is None:
                    unnumbered.append(entry.name)
                    continue
                if number in by_number:
                    other = by_number[number].name
                    first, second = sorted([other, entry.name])
                    raise VideoReadError(
                        f"{self.path}: two frame images with number {number}: {first}, {second}"
                    )
                by_number[number] = Path(entry.path)
        if unnumbered:
            logger.warning(
                "%s: ignoring %d image(s) without a frame number in the name (e.g. %s)",
                self.path, len(unnumbered), sorted(unnumbered)[0],
            )
        if not by_number:
            raise VideoReadError(
                f"{self.path}: no numbered frame images ({', '.join(IMAGE_EXTENSIONS)}) in the folder"
            )
        numbers = sorted(by_number)
        self._files = [by_number[n] for n in numbers]
        return numbers

    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        self._get_numbers()
        assert self._files is not None
        frames = []
        for pos in positions:
            file = self._files[pos]
            frame = self._load(file)
            if frames and frame.shape != frames[0].shape:
                raise VideoReadError(
                    f"{file}: frame size {frame.shape[1]}x{frame.shape[0]} differs from "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]} of {self._files[positions[0]].name}"
                )
            frames.append(frame)
        return np.stack(frames)

    def _load(self, file: Path) -> np.ndarray:
        try:
            if self.image_backend == "cv2":
                import cv2

                data = np.fromfile(file, dtype=np.uint8)
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
                if image is None:
                    raise ValueError("OpenCV cannot decode the image")
                return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            from PIL import Image

            with Image.open(file) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f"frame image not found: {file}") from None
        except Exception as exc:
            raise VideoReadError(f"{file}: cannot decode the frame image ({_one_line(exc)})") from exc


# ----------------------------------------------------------------------------------------------
# open / write
# ----------------------------------------------------------------------------------------------


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
            file by decord, falling back to PyAV when decord is missing or cannot open/decode it.
        first_frame: frame number of a video's position 0 (frame folders number their frames by
            file name and ignore it).
        num_threads: decoder threads for video files.

    Returns:
        A :class:`VideoReader`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: unknown ``backend``.
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
    return _AutoReader(p, first_frame=first_frame, num_threads=num_threads)


# ----------------------------------------------------------------------------------------------
# checks: will a clip be readable?
# ----------------------------------------------------------------------------------------------

_PNG_END = b"IEND\xaeB`\x82"
_TAIL_BYTES = 1024


def check_image_file(file: str | os.PathLike[str]) -> tuple[int, int]:
    """Check that an image file has a readable header and, where the format says how it ends, its end.

    Cheap (nothing is decoded): Pillow reads the header (format, size), then PNG must end with its
    ``IEND`` chunk, JPEG with an end-of-image marker in its last kilobyte, BMP and WebP must be as long
    as their headers declare. A file truncated while copying or extracting fails here.

    Returns:
        ``(width, height)``.

    Raises:
        VideoReadError: names the file and what is wrong.
        FileNotFoundError, PermissionError: the file cannot be opened.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(file)
    with open(path, "rb") as f:  # FileNotFoundError, PermissionError as they are
        try:
            with Image.open(f) as image:
                fmt, size = image.format, image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:  # bad header
            raise VideoReadError(f"{path}: not a readable image ({_one_line(exc)})") from exc
        f.seek(0)
        head = f.read(12)
        length = f.seek(0, os.SEEK_END)
        f.seek(max(0, length - _TAIL_BYTES))
        tail = f.read()
    declared = None
    if fmt == "BMP" and head[:2] == b"BM":
        declared = int.from_bytes(head[2:6], "little")
    elif fmt == "WEBP" and head[:4] == b"RIFF":
        declared = int.from_bytes(head[4:8], "little") + 8
    if fmt == "PNG" and not tail.endswith(_PNG_END):
        raise VideoReadError(f"{path}: truncated PNG (no IEND chunk at the end; {length} bytes)")
    if fmt in ("JPEG", "MPO") and b"\xff\xd9" not in tail:
        raise VideoReadError(f"{path}: truncated JPEG (no end-of-image marker; {length} bytes)")
    if declared is not None and length < declared:
        raise VideoReadError(f"{path}: truncated {fmt} ({length} of {declared} bytes)")
    return size


def check_clip(
    path: str | os.PathLike[str],
    *,
    onset: int,
    offset: int,
    first_frame: int = 0,
    backend: str = "auto",
) -> None:
    """Check that the frames ``onset..offset`` of a clip will be readable, without decoding them all.

    A video file is opened as training opens it (``backend``; decord with the PyAV fallback by default):
    its header, its frame count against the annotated frames, and the onset and offset frames are
    decoded (a truncated file fails there). For a frame folder every frame file ``onset..offset`` must
    exist, have a readable image header and its end (see :func:`check_image_file`), and share the
    first one's size.

    Raises:
        VideoReadError: why the clip will fail, naming the file.
        FileNotFoundError, PermissionError: the clip or a frame file cannot be opened.
    """
    onset, offset = operator.index(onset), operator.index(offset)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video or frame folder not found: {p}")
    if p.is_dir():
        reader = FolderReader(p)
        numbers = reader.frame_numbers
        wanted = [i for i, n in enumerate(numbers) if onset <= n <= offset]
        if len(wanted) != offset - onset + 1:
            have = set(numbers)
            missing = [n for n in range(onset, offset + 1) if n not in have]
            raise VideoReadError(f"{p}: no frame image for frame(s) {_shown(missing)} "
                                 f"(the folder has {numbers[0]}..{numbers[-1]})")
        files = reader.files
        first_size = None
        for i in wanted:
            size = check_image_file(files[i])
            if first_size is None:
                first_size = size
            elif size != first_size:
                raise VideoReadError(f"{files[i]}: frame size {size[0]}x{size[1]} differs from "
                                     f"{first_size[0]}x{first_size[1]} of {files[wanted[0]].name}")
        return
    with open_video(p, backend=backend, first_frame=first_frame) as reader:
        count = len(reader)
        last = first_frame + count - 1
        outside = [n for n in (onset, offset) if not first_frame <= n <= last]
        if outside:
            raise VideoReadError(f"{p}: the video has {count} frames (numbers {first_frame}..{last}); "
                                 f"the annotated frames {onset}..{offset} are not all in it")
        reader.get_frames_by_number(sorted({onset, offset}))


def _shown(numbers: list[int], limit: int = 5) -> str:
    return ", ".join(map(str, numbers[:limit])) + (", ..." if len(numbers) > limit else "")


def _as_fraction(fps: Fraction | float | int) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else Fraction(fps)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _iter_frames(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
        raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got shape {frames.shape}")
    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frame.dtype}")
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"each frame must be (H, W, 3) RGB or (H, W) gray, got {frame.shape}")
        yield np.ascontiguousarray(frame)


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: Fraction | float | int,
    lossless: bool = True,
    gop: int | None = 1,
    crf: float | None = None,
    preset: str = "medium",
    tune: str | None = "auto",
    chroma: str = "444",
    metadata: dict[str, str] | None = None,
    threads: int | None = None,
) -> int:
    """Encode RGB frames to an H.264 video file (mp4, mkv or mov, from the suffix) with PyAV.

    ``lossless=True``: RGB H.264 at qp 0 (``libx264rgb``, stored as planar GBR). decord and PyAV
    decode it to exactly the input frames. ``lossless=False``: YUV H.264 (``libx264``) at constant
    rate factor ``crf`` (default 12), 4:4:4 unless ``chroma="420"``: 40-75x smaller, PSNR about 38 dB on
    textured test clips (x264 smooths sensor noise away); 4:2:0 is no smaller at this rate and loses
    colour detail (about 32 dB).
    B-frames are off, so decoding order equals presentation order.

    Args:
        path: output file; its parent folder must exist. Overwritten if present.
        frames: ``(T, H, W, 3)`` uint8 RGB array, ``(T, H, W)`` gray, or an iterable of such frames.
        fps: frame rate; a :class:`fractions.Fraction` for rates like 30000/1001 (a float is turned
            into the nearest fraction with denominator <= 1001).
        lossless: see above.
        gop: keyframe interval; 1 = every frame is a keyframe (fastest random access), None = the
            encoder's default (250).
        crf: constant rate factor for ``lossless=False`` (0..51, lower is better).
        preset: x264 preset (speed/size trade-off).
        tune: x264 tune. ``"auto"``: ``"fastdecode"`` when lossless (CAVLC instead of CABAC:
            random access 4-5x faster, files ~10% larger), none otherwise (fastdecode also turns off
            the deblocking filter, which costs quality in lossy mode). None: no tune.
        chroma: ``"444"`` or ``"420"`` chroma sampling for ``lossless=False`` (4:2:0 needs even
            sides; odd sizes fall back to 4:4:4).
        metadata: container tags to store (e.g. ``{"comment": ...}``).
        threads: encoder threads (None = x264's default, about 1.5 per core).

    Returns:
        The number of frames written.

    Raises:
        ValueError: bad frames (not uint8 RGB/gray, sizes differ, none at all) or arguments.
    """
    import av

    rate = _as_fraction(fps)
    if lossless and crf is not None:
        raise ValueError("crf applies to lossless=False only")
    if gop is not None and gop < 1:
        raise ValueError(f"gop must be >= 1 or None, got {gop}")
    if chroma not in ("444", "420"):
        raise ValueError(f"chroma must be '444' or '420', got {chroma!r}")
    options = {"preset": preset, "bf": "0"}
    if tune == "auto":
        tune = "fastdecode" if lossless else None
    if tune is not None:
        options["tune"] = tune
    if threads is not None:
        options["threads"] = str(threads)
    if gop is not None:
        options["g"] = str(gop)
        options["keyint_min"] = str(gop)
    if lossless:
        codec, options["qp"] = "libx264rgb", "0"
    else:
        codec, options["crf"] = "libx264", str(12 if crf is None else crf)

    path = Path(path)
    count = 0
    it = _iter_frames(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = first.shape[:2]
    if lossless:
        pix_fmt = "rgb24"
    else:
        even = height % 2 == 0 and width % 2 == 0
        pix_fmt = "yuv420p" if chroma == "420" and even else "yuv444p"
    with av.open(str(path), mode="w") as container:
        if metadata:
            for key, value in metadata.items():
                container.metadata[key] = value
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        for frame in _chain(first, it):
            if frame.shape[:2] != (height, width):
                raise ValueError(
                    f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"frame 0 is {width}x{height}"
                )
            vframe = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vframe.pts = count
            for packet in stream.encode(vframe):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest

