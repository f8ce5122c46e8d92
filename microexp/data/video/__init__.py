"""Frame readers for micro-expression clips: video files (decord, PyAV) and frame folders.

One small interface, :class:`VideoReader`, with four implementations:

- :class:`DecordReader` reads video files with ``decord.VideoReader`` (fast random access in long-GOP
  video). Optional: decord has wheels only for x86_64 Linux and 64-bit Windows.
- :class:`PyAVReader` reads video files with PyAV; the fallback when decord is missing or cannot open
  a file, the reader ``"auto"`` picks for Motion JPEG AVI packs, and selectable (``backend="pyav"``).
- :class:`TorchCodecReader` reads video files with torchcodec (optional, ``backend="torchcodec"``; needs
  the system FFmpeg libraries, see :mod:`.torchcodec_reader`).
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

:class:`ReaderPool` keeps readers open per process for files read again and again.

:func:`write_mjpeg` writes intra-only Motion JPEG (each frame one JPEG image, OpenCV's libjpeg at a
quality 1..100). :func:`write_video` writes frames to an H.264 file. The default (``lossless=True``) is RGB H.264 at
qp 0 (``libx264rgb``), which stores the RGB frames exactly: decord and PyAV both decode it to frames
identical to the input. ``lossless=False`` writes compact 4:2:0 H.264 at a constant rate factor.

Where things live (import everything from this package; the modules are its layout, not its API):

- :mod:`.base`: the :class:`VideoReader` interface and what the video-file readers share.
- :mod:`.decord_reader`, :mod:`.pyav_reader`, :mod:`.torchcodec_reader`, :mod:`.folder`: the readers.
- :mod:`.auto`: :func:`open_video` and the ``"auto"`` backend (decord, falling back to PyAV).
- :mod:`.pool`: :class:`ReaderPool`.
- :mod:`.checks`: :func:`check_clip`, :func:`check_image_file` (will a clip be readable?).
- :mod:`.writer`: :func:`write_video`, :func:`write_mjpeg`.
- :mod:`.stream`: :class:`FrameStream` (a whole long video in order, a chunk at a time, for spotting) and
  :func:`recorded_first_frame` (the ``first_frame=N`` a file's comment tag records).

Every module logs to the ``microexp.data.video`` logger.
"""

from __future__ import annotations

from microexp.data.video.auto import BACKENDS, is_mjpeg_avi, open_video
from microexp.data.video.base import VideoReader
from microexp.data.video.checks import check_clip, check_image_file
from microexp.data.video.decord_reader import DecordReader
from microexp.data.video.folder import IMAGE_EXTENSIONS, FolderReader, frame_number_from_name
from microexp.data.video.pool import ReaderPool
from microexp.data.video.pyav_reader import PyAVReader
from microexp.data.video.stream import FrameStream, recorded_first_frame
from microexp.data.video.torchcodec_reader import TorchCodecReader, torchcodec_problem
from microexp.data.video.writer import DEFAULT_JPEG_QUALITY, write_mjpeg, write_video

__all__ = [
    "BACKENDS",
    "DEFAULT_JPEG_QUALITY",
    "IMAGE_EXTENSIONS",
    "VideoReader",
    "DecordReader",
    "PyAVReader",
    "TorchCodecReader",
    "FolderReader",
    "ReaderPool",
    "open_video",
    "is_mjpeg_avi",
    "torchcodec_problem",
    "write_video",
    "write_mjpeg",
    "frame_number_from_name",
    "check_clip",
    "check_image_file",
    "FrameStream",
    "recorded_first_frame",
]

# Not public: the once-per-process fallback warning, reached here by tests that reset its flag.
from microexp.data.video.auto import _warn_fallback  # noqa: E402,F401
