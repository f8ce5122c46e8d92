"""The PyAV video-file reader: the fallback for files decord cannot open, and selectable on its own."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from microexp.data.video.base import _one_line, _VideoFileReader
from microexp.errors import VideoReadError


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
