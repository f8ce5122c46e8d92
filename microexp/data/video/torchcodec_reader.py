"""The optional torchcodec video-file reader (``backend="torchcodec"``).

torchcodec (PyTorch's video decoder, ``pip install torchcodec``; pick the release that pairs with your
torch, 0.17 for torch 2.14) links against the system's FFmpeg 4-9 shared libraries, which its wheel does
not ship. Install them first: Debian/Ubuntu ``apt install ffmpeg`` (or only the libraries:
``libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8`` on
Debian 12), Fedora ``dnf install ffmpeg-free``, macOS ``brew install ffmpeg``, conda
``conda install -c conda-forge 'ffmpeg<8'``. It is selected only by name, never by ``"auto"``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from microexp.data.video.base import _one_line, _VideoFileReader
from microexp.errors import ConfigError, VideoReadError

#: How to get a working torchcodec, for error messages (one line).
INSTALL_HINT = ("pip install torchcodec (the release paired with your torch) and the system FFmpeg libraries "
                "(Debian/Ubuntu: apt install ffmpeg; macOS: brew install ffmpeg)")


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode video in this process, or None when it can.

    Importing torchcodec does not fail without FFmpeg: it records whether its FFmpeg-linked core loaded
    (``torchcodec.ffmpeg_major_version`` is None when it did not), which is what this checks.
    """
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError as exc:
        return f"torchcodec is not installed ({exc})"
    except Exception as exc:  # a torch/torchcodec version mismatch raises OSError/RuntimeError on import
        return f"torchcodec does not import ({_one_line(exc)})"
    if getattr(torchcodec, "ffmpeg_major_version", None) is None:
        return "torchcodec cannot load the FFmpeg libraries (none of FFmpeg 4-9 found)"
    return None


def require_torchcodec() -> None:
    """Raise a one-line :class:`ConfigError` naming the install steps unless torchcodec can decode."""
    problem = torchcodec_problem()
    if problem is not None:
        raise ConfigError(f"video backend 'torchcodec': {problem}; {INSTALL_HINT}")


class TorchCodecReader(_VideoFileReader):
    """Video file reader on ``torchcodec.decoders.VideoDecoder`` (``get_frames_at``).

    Lazy and fork-safe like the other readers: the decoder is created on first use in each process.
    ``seek_mode="exact"`` scans the file once on open for an exact frame index, as PyAV's reader does.

    Args:
        path: video file.
        first_frame: frame number of position 0.
        num_threads: FFmpeg decoder threads (0 = one per core).
    """

    backend = "torchcodec"

    def __init__(
        self, path: str | os.PathLike[str], *, first_frame: int = 0, num_threads: int = 1
    ) -> None:
        super().__init__(path, first_frame=first_frame, num_threads=num_threads)
        self._fps: float | None = None

    def _open(self) -> Any:
        decoder = self._handle.current()
        if decoder is not None:
            return decoder
        require_torchcodec()
        from torchcodec.decoders import VideoDecoder

        try:
            decoder = VideoDecoder(str(self.path), dimension_order="NHWC", seek_mode="exact",
                                   num_ffmpeg_threads=self.num_threads)
            length = len(decoder)
            fps = decoder.metadata.average_fps
        except Exception as exc:
            raise VideoReadError(f"{self.path}: torchcodec cannot open the video ({_one_line(exc)})") from exc
        if length <= 0:
            raise VideoReadError(f"{self.path}: the video has no frames")
        if self._length is not None and length != self._length:
            raise VideoReadError(f"{self.path}: frame count changed from {self._length} to {length} (file replaced?)")
        self._length = length
        self._fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        self._handle.set(decoder)
        return decoder

    @property
    def fps(self) -> float | None:
        self._open()
        return self._fps

    def _read_sorted(self, positions: list[int]) -> np.ndarray:
        decoder = self._open()
        try:
            return decoder.get_frames_at(indices=positions).data.numpy()
        except Exception as exc:
            raise VideoReadError(
                f"{self.path}: torchcodec cannot decode frame positions {positions[0]}..{positions[-1]} "
                f"({_one_line(exc)})"
            ) from exc

    def close(self) -> None:
        self._handle.release()  # the decoder frees its FFmpeg context when the last reference goes
