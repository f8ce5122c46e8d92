"""Open readers kept per process: :class:`ReaderPool`, for a file read again and again.

A training epoch reads each clip several times (every epoch, or several clips cut from one CAS(ME)^3
file), and each read of a video opens it again: decord and PyAV parse the container and build a frame
index (PyAV's reader demuxes the whole file) before the first frame is decoded. A :class:`ReaderPool`
keeps the last ``capacity`` readers open, keyed by path, backend, first frame and threads, and closes
the least recently used one when a new one is needed.

Safe with DataLoader workers: the pool remembers the process that filled it. In a forked child it
starts empty; the parent's readers are kept referenced there, never used or closed (a decord handle
freed in a forked child aborts it). A pickled pool (spawn workers) arrives empty. So readers are
always opened in the worker that uses them. A pool is not thread-safe.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microexp.data.video.auto import open_video
from microexp.data.video.base import VideoReader

__all__ = ["ReaderPool", "DEFAULT_POOL_SIZE"]

#: Readers a pool keeps open unless told otherwise (a decord or PyAV handle holds a few MB).
DEFAULT_POOL_SIZE = 16

_Key = tuple[str, str, int, int]


class ReaderPool:
    """The last ``capacity`` readers opened through it, kept open; closed on eviction or :meth:`close`.

    Use :meth:`get` instead of :func:`open_video` and do not close the reader yourself::

        pool = ReaderPool(capacity=16)            # e.g. an attribute of the Dataset
        frames = pool.get(path, first_frame=1).get_frames_by_number([1, 46, 80])

    A file replaced on disk (size or modification time changed) is opened again. A read that raises
    should be followed by :meth:`discard` so the next :meth:`get` opens the file afresh.

    Args:
        capacity: readers kept open (>= 1).
        opener: opens a reader, called as ``opener(path, backend=..., first_frame=..., num_threads=...)``
            (default :func:`open_video`; a module-level function, so that the pool pickles).
    """

    def __init__(self, capacity: int = DEFAULT_POOL_SIZE, *,
                 opener: Callable[..., VideoReader] = open_video) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"reader pool capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity
        self.opener = opener
        self._readers: OrderedDict[_Key, tuple[VideoReader, tuple[int, int]]] = OrderedDict()
        self._pid = os.getpid()
        self._inherited: list[Any] = []  # a forked child's copy of the parent's readers: never used or freed
        self.opened = 0  # readers opened by this process's pool (for tests and benchmarks)

    def _own(self) -> None:
        if self._pid != os.getpid():
            self._inherited.append(self._readers)
            self._readers = OrderedDict()
            self._pid = os.getpid()
            self.opened = 0

    def get(
        self, path: str | os.PathLike[str], *, backend: str = "auto", first_frame: int = 0, num_threads: int = 1
    ) -> VideoReader:
        """The pool's open reader for ``path``, opening it (see :func:`open_video`) when it has none.

        Raises:
            FileNotFoundError, ConfigError, VideoReadError: as :func:`open_video`.
        """
        self._own()
        key: _Key = (str(Path(path).absolute()), backend, int(first_frame), int(num_threads))
        stat = Path(path).stat()  # FileNotFoundError for a missing path, like open_video
        version = (stat.st_mtime_ns, stat.st_size)
        held = self._readers.get(key)
        if held is not None:
            reader, seen = held
            if seen == version:
                self._readers.move_to_end(key)
                return reader
            self._close(key)
        reader = self.opener(path, backend=backend, first_frame=first_frame, num_threads=num_threads)
        self.opened += 1
        self._readers[key] = (reader, version)
        while len(self._readers) > self.capacity:
            self._close(next(iter(self._readers)))
        return reader

    def discard(self, path: str | os.PathLike[str]) -> None:
        """Close and forget every reader of ``path`` (after a failed read)."""
        self._own()
        name = str(Path(path).absolute())
        for key in [k for k in self._readers if k[0] == name]:
            self._close(key)

    def _close(self, key: _Key) -> None:
        reader, _ = self._readers.pop(key)
        reader.close()

    def close(self) -> None:
        """Close every reader this process opened."""
        self._own()
        while self._readers:
            self._close(next(iter(self._readers)))

    def __len__(self) -> int:
        self._own()
        return len(self._readers)

    def __contains__(self, path: object) -> bool:
        self._own()
        if not isinstance(path, (str, os.PathLike)):
            return False
        name = str(Path(path).absolute())
        return any(k[0] == name for k in self._readers)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "opener": self.opener}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"], opener=state["opener"])  # type: ignore[misc]
