"""The reader interface every clip reader implements, and the parts the video-file readers share.

:class:`VideoReader` is the small interface (``len``, :attr:`~VideoReader.frame_numbers`, ``fps``,
:meth:`~VideoReader.get_frames`, :meth:`~VideoReader.get_frames_by_number`, ``close``). Video-file
readers (decord, PyAV) build on :class:`_VideoFileReader`: numbering from ``first_frame``, a lazy
per-process handle (:class:`_ForkSafeHandle`, see the package docstring on fork safety) and pickling
without that handle.
"""

from __future__ import annotations

import abc
import operator
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from microexp.errors import VideoReadError

_DECORD_LOG_PREFIX_RE = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


def _one_line(exc: BaseException) -> str:
    """A one-line description of a backend exception (decord messages carry log prefixes)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = _DECORD_LOG_PREFIX_RE.sub("", line)
    return line or type(exc).__name__



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
