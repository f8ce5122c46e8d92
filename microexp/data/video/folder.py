"""The frame-folder reader: folders of numbered frame images, ordered by the number in the name."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from microexp.data.video.base import VideoReader, _one_line
from microexp.errors import ConfigError, VideoReadError

# The package's logger, so records keep the name they had before the package was split.
logger = logging.getLogger(__package__)

#: File extensions (lower case) of frame images that :class:`FolderReader` reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_NUMBER_RE = re.compile(r"\d+")


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
