"""Checks that a clip will be readable, without decoding it all (used when validating clip tables)."""

from __future__ import annotations

import operator
import os
from pathlib import Path

from microexp.data.video.auto import open_video
from microexp.data.video.base import _one_line
from microexp.data.video.folder import FolderReader
from microexp.errors import VideoReadError

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
