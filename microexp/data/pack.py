"""Pack frame-folder datasets into one seekable video file per clip.

A DFME/CASME II style dataset is hundreds of thousands of small image files; reading 16 frames of a
clip means 16 file opens and image decodes. :func:`pack_table` re-encodes every clip of a clip table
into one video file (Motion JPEG, :func:`microexp.data.video.write_mjpeg`, or H.264,
:func:`microexp.data.video.write_video`) and writes a new clip table in our CSV format pointing at them:

- ``OUT/clips/<source path relative to the dataset folder>.avi`` (``.mp4`` for the H.264 modes; the
  dataset's own layout, e.g. ``clips/sub01/EP02_01f.avi``). Rows that share a source (CAS(ME)^3 clips
  cut from one folder) share the packed file.
- ``OUT/annotations.csv`` with paths relative to ``OUT``, ``first_frame`` = the folder's first frame
  number (so onset/apex/offset keep the sheet's numbering), fps from the table, and the source
  ``dataset`` name. An estimated apex is written blank, so reading the CSV estimates and flags it again.

Modes (measurements behind the defaults: ``microexp benchmark --sections loading`` and
docs/loading.md):

- ``mjpeg`` (default): intra-only Motion JPEG in AVI, every frame one JPEG image at ``quality`` (default
  95, OpenCV's libjpeg, 4:2:0): the bytes of a JPEG folder at that quality, in one file, 1/8 of the
  lossless size. It loads as fast as a JPEG folder (1.7x a PNG folder at 128x128, 3.5x at 480x640; 7x
  lossless H.264 read with PyAV, 15x with decord); ``open_video``'s ``"auto"`` reads it with PyAV, which
  decodes it 1.6x (idle machine) to 4-10x (busy machine) faster than decord. Lossy: PSNR about 41 dB at
  95 on noisy synthetic 480x640 faces; datasets recorded as JPEG frames (CASME II, DFME) lose a little
  more at each re-encoding, so keep the quality high.
- ``lossless``: RGB H.264 at qp 0 (``libx264rgb``, tune ``fastdecode``), intra-only
  (``gop=1``). Frames decode bit-exactly with decord and PyAV. About the size of a PNG folder: the
  point is one seekable file per clip, not disk space. Longer GOPs save 20-25% but make random
  access 2-7x slower, because every lossless frame is expensive to decode; ``fastdecode`` (CAVLC)
  makes it 3.5-5.5x faster than plain CABAC for 8-10% more bytes.
- ``near-lossless``: 4:4:4 H.264 at crf 12, ``gop=16``: 40-75x smaller than lossless, PSNR about
  38-39 dB; decoding is cheap, so the longer GOP costs little access time (at most 15 extra frames
  per seek).

Face crop (``face_crop=True``, ``microexp pack --face-crop``): for raw, uncropped footage such as the 2024
DFME release. Each clip gets one square box from Haar detections on 5 frames spread over it
(:func:`microexp.data.face.stable_face_box`, the same box logic as ``microexp predict``), and every frame is
cut with that one box, so the crop never moves and cannot add motion of its own. The box is stored in the
packed file's tag and listed in ``OUT/face_boxes.csv``. A clip with no face on any probe frame is cut with
the median box of the same subject's other clips (``face_fallback="subject"``, the default: a subject is
filmed in one set-up; ``OUT/face_boxes.csv`` marks such boxes ``origin=subject``); when the subject has no
detected box either, or with ``face_fallback="none"``, the clip fails with one message and the others are
still packed.

Frame numbers missing inside a folder (``img1..img99, img101..``) are filled with the previous frame so
the numbering stays valid; each filled clip is logged as a warning.

Packing is resumable: every packed file carries a tag with the settings, frame count and first frame
number; a file whose tag matches is skipped, anything else is re-packed. Files are written under a
temporary name and renamed when complete and read back (:func:`microexp.fileio.atomic_path`), so an
interrupted run leaves no half-written clip behind.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microexp.data.cache import cache_key, clip_fingerprint
from microexp.data.face import (DEFAULT_MARGIN, FaceBox, NoFaceError, clamp_box, median_box, probe_positions,
                                stable_face_box)
from microexp.data.video import DEFAULT_JPEG_QUALITY, open_video, write_mjpeg, write_video
from microexp.errors import ConfigError, MicroexpError, VideoReadError
from microexp.fileio import atomic_path
from microexp.workers import worker_context

logger = logging.getLogger(__name__)

__all__ = [
    "PACK_MODES",
    "CONTAINERS",
    "DEFAULT_GOP",
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_CRF",
    "CSV_COLUMNS",
    "FACE_BOXES_CSV",
    "FACE_FALLBACKS",
    "FACE_BOX_COLUMNS",
    "PackSettings",
    "PackedClip",
    "PackResult",
    "PackInfo",
    "pack_info",
    "pack_clip",
    "pack_table",
    "packed_path",
]

#: ``mode`` values of :class:`PackSettings` (the first is the default).
PACK_MODES = ("mjpeg", "lossless", "near-lossless")
#: Default keyframe interval per mode. Lossless: intra-only; gop 16 would save 25% of the size but
#: reading 16 sorted random frames of a 300-frame 480x640 clip takes 3.4x longer with decord (1.02 s
#: vs 0.30 s). Near-lossless: gop 16 is 5x smaller than intra-only for 1.2-1.6x the access time.
DEFAULT_GOP: dict[str, int] = {"mjpeg": 1, "lossless": 1, "near-lossless": 16}
#: Containers per mode; the first is the default. Motion JPEG goes in AVI, which ``open_video``'s
#: ``"auto"`` recognises from its header and reads with PyAV.
CONTAINERS: dict[str, tuple[str, ...]] = {"mjpeg": ("avi",), "lossless": ("mp4", "mkv"),
                                          "near-lossless": ("mp4", "mkv")}
#: Constant rate factor of ``near-lossless`` mode.
DEFAULT_CRF = 12.0
#: Columns of the packed ``annotations.csv`` (our CSV format).
CSV_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "fps", "emotion", "aus",
               "action_descriptors", "first_frame", "dataset")
#: ``OUT/face_boxes.csv``, written by ``face_crop`` packing: per packed file (``path`` as in annotations.csv,
#: mirroring the source's layout) its box in source pixels.
FACE_BOXES_CSV = "face_boxes.csv"
FACE_BOX_COLUMNS = ("path", "x", "y", "w", "h", "origin")
#: ``face_fallback`` values: for a clip without a detected face, use its subject's median box, or fail.
FACE_FALLBACKS = ("subject", "none")
_TAG = "microexp-pack/1"
_BOX_TAG = " face_box="  # the box follows the settings in a packed file's tag
_CHUNK = 32  # frames decoded at a time while packing


@dataclass(frozen=True)
class PackSettings:
    """How clips are encoded.

    Args:
        mode: one of :data:`PACK_MODES` (see the module docstring).
        gop: keyframe interval (1 = intra-only); None = the mode's :data:`DEFAULT_GOP`. ``mjpeg`` is
            always intra-only.
        crf: constant rate factor for ``near-lossless`` (default :data:`DEFAULT_CRF`).
        quality: JPEG quality 1..100 for ``mjpeg`` (default :data:`DEFAULT_JPEG_QUALITY`).
        container: one of the mode's :data:`CONTAINERS`; None = the mode's first.
        preset: x264 preset (H.264 modes).
        face_crop: cut every clip to one stable square face box (see the module docstring).
        face_margin: enlargement of the detected face box (side x (1 + margin)).
        face_fallback: for a clip without a detected face, ``"subject"`` (the median box of the same subject's
            other clips) or ``"none"`` (the clip fails); see :data:`FACE_FALLBACKS`.
    """

    mode: str = PACK_MODES[0]
    gop: int | None = None
    crf: float | None = None
    container: str | None = None
    preset: str = "medium"
    face_crop: bool = False
    face_margin: float = DEFAULT_MARGIN
    face_fallback: str = "subject"
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PACK_MODES:
            raise ConfigError(f"pack mode {self.mode!r} is not one of {', '.join(PACK_MODES)}")
        if self.gop is not None and self.gop < 1:
            raise ConfigError(f"pack gop must be >= 1, got {self.gop}")
        if self.crf is not None and self.mode != "near-lossless":
            raise ConfigError(f"pack crf applies to mode 'near-lossless' only, not {self.mode!r}")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ConfigError(f"pack crf must be in 0..51, got {self.crf}")
        if self.mode == "mjpeg" and self.gop not in (None, 1):
            raise ConfigError(f"pack gop={self.gop}: mode 'mjpeg' is intra-only (every frame a keyframe, gop 1)")
        if self.quality is not None and self.mode != "mjpeg":
            raise ConfigError(f"pack JPEG quality applies to mode 'mjpeg' only, not {self.mode!r}")
        if self.quality is not None and (isinstance(self.quality, bool) or not isinstance(self.quality, int)
                                         or not 1 <= self.quality <= 100):
            raise ConfigError(f"pack JPEG quality must be an integer in 1..100, got {self.quality!r}")
        if self.container is not None and self.container not in CONTAINERS[self.mode]:
            raise ConfigError(f"pack container {self.container!r} does not fit mode {self.mode!r}; "
                              f"expected one of {', '.join(CONTAINERS[self.mode])}")
        if isinstance(self.face_margin, bool) or not isinstance(self.face_margin, (int, float)) or not (
                math.isfinite(self.face_margin) and self.face_margin >= 0):
            raise ConfigError(f"--face-margin must be a finite number >= 0, got {self.face_margin!r}")
        if self.face_fallback not in FACE_FALLBACKS:
            raise ConfigError(f"--face-fallback {self.face_fallback!r} is not one of {', '.join(FACE_FALLBACKS)}")

    @property
    def keyframe_interval(self) -> int:
        """``gop``, or the mode's default."""
        return DEFAULT_GOP[self.mode] if self.gop is None else self.gop

    @property
    def rate_factor(self) -> float | None:
        """``crf`` for near-lossless (default :data:`DEFAULT_CRF`); None for the other modes."""
        if self.mode != "near-lossless":
            return None
        return DEFAULT_CRF if self.crf is None else self.crf

    @property
    def jpeg_quality(self) -> int | None:
        """``quality`` for mjpeg (default :data:`DEFAULT_JPEG_QUALITY`); None for the H.264 modes."""
        if self.mode != "mjpeg":
            return None
        return DEFAULT_JPEG_QUALITY if self.quality is None else self.quality

    @property
    def file_container(self) -> str:
        """``container``, or the mode's default (the packed files' suffix)."""
        return CONTAINERS[self.mode][0] if self.container is None else self.container

    def tag(self, frames: int, first_frame: int, source: str = "") -> str:
        """The tag stored in a packed file; a file is up to date when its tag equals this one.

        ``key=value`` fields after ``microexp-pack/1`` (read back by :func:`pack_info`): mode, gop, crf
        (near-lossless) or quality (mjpeg), face_margin (face crop), preset (H.264), frames, first_frame,
        source; a face-cropped file appends its box.
        """
        crf = "" if self.rate_factor is None else f" crf={self.rate_factor:g}"
        quality = "" if self.jpeg_quality is None else f" quality={self.jpeg_quality}"
        face = f" face_margin={self.face_margin:g}" if self.face_crop else ""
        preset = "" if self.mode == "mjpeg" else f" preset={self.preset}"
        return (f"{_TAG} mode={self.mode} gop={self.keyframe_interval}{crf}{quality}{face}{preset} "
                f"frames={frames} first_frame={first_frame} source={source}")


@dataclass(frozen=True)
class PackedClip:
    """One packed source: where it went and how it is numbered."""

    source: str
    dest: str
    first_frame: int
    frames: int
    filled: int = 0  # missing frame numbers filled with the previous frame
    skipped: bool = False  # already packed with the same settings
    face_box: FaceBox | None = None  # the crop box in source pixels (face_crop packing)
    face_box_origin: str | None = None  # "detected", or "subject" (the subject's median box)


@dataclass
class PackResult:
    """Outcome of :func:`pack_table`."""

    table: pd.DataFrame  # packed clip table (columns CSV_COLUMNS), rows of clips packed or skipped
    csv_path: Path | None
    packed: list[PackedClip] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source path -> error message

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.packed)


def _read_tag(path: Path) -> tuple[str | None, int]:
    """(pack tag, frame count) of a packed file; (None, 0) when unreadable.

    The count comes from the header, or (Matroska, whose header has none) from counting the packets;
    Matroska also stores the tag as ``COMMENT``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            tag = next((v for k, v in container.metadata.items() if k.lower() == "comment"), None)
            if not container.streams.video:
                return tag, 0
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            if frames == 0:
                frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            return tag, frames
    except Exception:  # unreadable or not ours: re-pack
        return None, 0


@dataclass(frozen=True)
class PackInfo:
    """What a packed file's tag says about it (:func:`pack_info`)."""

    mode: str  # one of PACK_MODES
    gop: int
    frames: int
    first_frame: int
    crf: float | None = None  # near-lossless
    quality: int | None = None  # mjpeg
    face_box: FaceBox | None = None
    fields: dict[str, str] = field(default_factory=dict)  # every key=value of the tag, as text


def pack_info(path: str | os.PathLike[str]) -> PackInfo | None:
    """How ``path`` was packed, from its tag; None for a file ``microexp pack`` did not write.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed file not found: {path}")
    stored, _ = _read_tag(path)
    settings, box, _ = _split_tag(stored)
    if settings is None or not settings.startswith(_TAG + " "):
        return None
    fields = dict(item.partition("=")[::2] for item in settings[len(_TAG) + 1:].split(" ") if "=" in item)
    try:
        return PackInfo(mode=fields["mode"], gop=int(fields["gop"]), frames=int(fields["frames"]),
                        first_frame=int(fields["first_frame"]),
                        crf=float(fields["crf"]) if "crf" in fields else None,
                        quality=int(fields["quality"]) if "quality" in fields else None,
                        face_box=box, fields=fields)
    except (KeyError, ValueError):
        return None


def _box_tag(box: FaceBox, origin: str) -> str:
    return f"{_BOX_TAG}{box.x},{box.y},{box.w},{box.h}" + ("" if origin == "detected" else f":{origin}")


def _split_tag(stored: str | None) -> tuple[str | None, FaceBox | None, str | None]:
    """(settings part, face box, its origin) of a stored tag; box and origin are None when absent or
    unreadable (then the settings part is the whole tag, which matches no settings: the clip is re-packed)."""
    if stored is None:
        return None, None, None
    settings, _, text = stored.partition(_BOX_TAG)
    if not text:
        return settings, None, None
    coords, _, origin = text.partition(":")
    try:
        return settings, FaceBox(*(int(v) for v in coords.split(","))), origin or "detected"
    except (TypeError, ValueError):
        return stored, None, None


def _source_digest(source: str | os.PathLike[str]) -> str:
    """Short hash of the source's file sizes and mtimes (not its path: a moved dataset is not
    re-packed), so that re-exported frames are packed again."""
    fingerprint = clip_fingerprint(source)
    fingerprint.pop("path", None)
    return cache_key(fingerprint)[:16]


def _source_frames(reader: Any) -> tuple[list[int], int]:
    """Frame numbers of a source and how many numbers inside its range are missing."""
    numbers = reader.frame_numbers
    return numbers, (numbers[-1] - numbers[0] + 1) - len(numbers)


def _filled_frames(reader: Any, numbers: list[int], box: FaceBox | None = None) -> Iterator[np.ndarray]:
    """Frames numbers[0]..numbers[-1], cut to ``box`` if given; a missing number repeats the previous frame."""
    position = 0
    previous: np.ndarray | None = None
    for start in range(0, len(numbers), _CHUNK):
        try:
            chunk = reader.get_frames(range(start, min(start + _CHUNK, len(numbers))))
        except OSError as exc:  # a frame image gone since listing: the source's error, not the output's
            raise VideoReadError(str(exc)) from exc
        if box is not None:
            chunk = np.ascontiguousarray(chunk[:, box.y:box.y + box.h, box.x:box.x + box.w])
        for frame in chunk:
            number = numbers[position]
            if previous is not None:
                for _ in range(numbers[position - 1] + 1, number):
                    yield previous
            yield frame
            previous = frame
            position += 1


def pack_clip(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    fps: float,
    settings: PackSettings = PackSettings(),
    first_frame: int = 0,
    threads: int | None = None,
    face_box: FaceBox | None = None,
) -> PackedClip:
    """Encode one clip (frame folder or video) to ``dest``; skip it when ``dest`` is up to date.

    Args:
        source: frame folder or video file.
        dest: output video file (its folder is created).
        fps: frame rate stored in the file.
        settings: encoding settings.
        first_frame: frame number of a video source's first frame (frame folders number their frames
            by file name).
        threads: encoder threads (None = x264's default).
        face_box: with ``settings.face_crop``, cut with this box (the subject fallback, clamped inside the
            frame) instead of detecting one.

    Returns:
        :class:`PackedClip` with the first frame number and frame count of the packed file.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        VideoReadError: the source cannot be read.
        NoFaceError: ``settings.face_crop`` and no face on any of the probe frames.
    """
    dest = Path(dest)
    with open_video(source, first_frame=first_frame) as reader:
        numbers, missing = _source_frames(reader)
        frames, first = numbers[-1] - numbers[0] + 1, numbers[0]
        tag = settings.tag(frames, first, _source_digest(source))
        if dest.is_file():
            stored, stored_frames = _read_tag(dest)
            stored_settings, stored_box, origin = _split_tag(stored)
            if (stored_settings, stored_frames) == (tag, frames) and (stored_box is not None or not settings.face_crop):
                return PackedClip(str(source), str(dest), first, frames, missing, skipped=True, face_box=stored_box,
                                  face_box_origin=origin)
        box = origin = None
        if settings.face_crop:
            if face_box is None:
                probes = reader.get_frames(probe_positions(len(numbers)))
                box, origin = stable_face_box(probes, margin=settings.face_margin)[0], "detected"
            else:
                try:
                    box, origin = clamp_box(face_box, reader.get_frames([0]).shape[1:3]), "subject"
                except ValueError as exc:
                    raise MicroexpError(f"{source}: {exc}") from None
            tag += _box_tag(box, origin)
        if missing:
            logger.warning("%s: filling %d missing frame number(s) in %d..%d with the previous frame",
                           source, missing, numbers[0], numbers[-1])
        with atomic_path(dest) as tmp:  # renamed over dest only once it reads back complete
            if settings.mode == "mjpeg":
                written = write_mjpeg(tmp, _filled_frames(reader, numbers, box), fps=fps,
                                      quality=settings.jpeg_quality or DEFAULT_JPEG_QUALITY,
                                      metadata={"comment": tag})
            else:
                written = write_video(
                    tmp, _filled_frames(reader, numbers, box), fps=fps,
                    lossless=settings.mode == "lossless", gop=settings.keyframe_interval,
                    crf=settings.rate_factor,
                    preset=settings.preset, metadata={"comment": tag}, threads=threads,
                )
            if written != frames or _read_tag(tmp) != (tag, frames):
                raise MicroexpError(f"{dest}: packed file does not read back ({written} of {frames} frames)")
    return PackedClip(str(source), str(dest), first, frames, missing, face_box=box, face_box_origin=origin)


def packed_path(source: str | os.PathLike[str], base: str | os.PathLike[str], container: str = "mp4") -> Path:
    """Where a source is packed, relative to ``OUT/clips``: its path relative to ``base`` + ``.<container>``."""
    rel = Path(os.path.relpath(source, base))
    if rel.suffix.lower() in (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"):
        rel = rel.with_suffix("")
    return rel.with_name(f"{rel.name}.{container}")


def _pack_job(args: tuple[str, str, float, int, PackSettings, int | None]) -> PackedClip:
    source, dest, fps, first_frame, settings, threads = args
    return pack_clip(source, dest, fps=fps, settings=settings, first_frame=first_frame, threads=threads)


def _subject_fallback(
    no_face: list[str], subject_of: dict[str, object], done: dict[str, PackedClip],
    jobs: dict[str, tuple[str, str, float, int, PackSettings, int | None]],
) -> Iterator[tuple[str, PackedClip | BaseException]]:
    """Pack each clip without a detected face with the median detected box of its subject's other clips."""
    for source in no_face:
        subject = subject_of[source]
        boxes = [p.face_box for s, p in done.items()
                 if subject_of[s] == subject and p.face_box is not None and p.face_box_origin == "detected"]
        if not boxes:
            yield source, NoFaceError(f"no face found on the probe frames, nor on any other clip of subject {subject}")
            continue
        _, dest, fps, first_frame, settings, threads = jobs[source]
        try:
            packed = pack_clip(source, dest, fps=fps, settings=settings, first_frame=first_frame, threads=threads,
                               face_box=median_box(boxes))  # pack_clip clamps it to this clip's frame
        except (MicroexpError, OSError, ValueError) as exc:
            yield source, exc
            continue
        logger.warning("%s: no face found; cut with the median box of %d other clip(s) of subject %s",
                       source, len(boxes), subject)
        yield source, packed


def pack_table(
    table: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    settings: PackSettings = PackSettings(),
    source_root: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
    write_csv: bool = True,
    on_packed: Callable[[PackedClip], None] | None = None,
) -> PackResult:
    """Pack every clip of a clip table into ``out_dir`` and write ``out_dir/annotations.csv``.

    Args:
        table: clip table (columns of :data:`microexp.data.annotations.COLUMNS`; at least subject,
            clip, path, onset, apex, offset, fps, emotion, aus). Rows with an empty path are skipped
            with a warning.
        out_dir: output folder (created).
        settings: encoding settings.
        source_root: the dataset's folder; packed files mirror the sources' paths below it
            (default, or when a source lies outside it: the sources' deepest common folder).
        workers: parallel encoding processes (1 = in this process).
        progress: tqdm progress bar; None = only on a terminal.
        write_csv: write ``annotations.csv`` (only clips packed now or before are listed) and, with
            ``settings.face_crop``, ``face_boxes.csv`` (columns :data:`FACE_BOX_COLUMNS`).
        on_packed: called with each :class:`PackedClip` as it finishes.

    Returns:
        :class:`PackResult`; clips that failed are listed in ``failed`` and left out of the table.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    if workers < 1:
        raise ConfigError(f"pack workers must be >= 1, got {workers}")
    rows = table[table["path"].astype(str) != ""]
    if len(rows) < len(table):
        for clip in table.loc[table["path"].astype(str) == "", "clip"]:
            logger.warning("clip %s: no clip path, not packed", clip)
    sources = list(dict.fromkeys(str(Path(p).absolute()) for p in rows["path"]))
    if not sources:
        raise MicroexpError("no clips to pack (every row lacks a clip path)")
    base = os.path.commonpath([str(Path(s).parent) for s in sources])
    if source_root is not None:
        root = str(Path(source_root).absolute())
        if all(os.path.commonpath([root, s]) == root and s != root for s in sources):
            base = root
            rels = [Path(os.path.relpath(s, root)) for s in sources]
            if all(len(r.parts) > 1 and r.parts[0] == "clips" for r in rels):
                base = os.path.join(root, "clips")  # our own layout (e.g. synth output): no clips/clips/
    dests: dict[str, Path] = {}
    used: set[Path] = set()
    for s in sources:
        rel = packed_path(s, base, settings.file_container)
        k, candidate = 1, rel
        while candidate in used:  # 'x.avi' and 'x.mov' side by side
            k += 1
            candidate = rel.with_name(f"{rel.stem}-{k}{rel.suffix}")
        used.add(candidate)
        dests[s] = candidate
    fps_of: dict[str, float] = {}
    first_of: dict[str, int] = {}
    for p, f, first in zip(rows["path"], rows["fps"], _first_frames(rows)):
        s = str(Path(p).absolute())
        fps_of.setdefault(s, float(f))
        first_of.setdefault(s, first)
        if (fps_of[s], first_of[s]) != (float(f), first):
            raise MicroexpError(f"{p}: rows sharing this clip source disagree on fps or first_frame "
                                f"({fps_of[s]:g}/{first_of[s]} vs {float(f):g}/{first})")
    threads = None if workers == 1 else max(1, (os.cpu_count() or 1) // workers)
    jobs = [(s, str(clips_dir / dests[s]), fps_of[s], first_of[s], settings, threads) for s in sources]

    subject_of: dict[str, object] = {}
    for p, subject in zip(rows["path"], rows["subject"]):
        subject_of.setdefault(str(Path(p).absolute()), subject)

    result = PackResult(table=pd.DataFrame(columns=list(CSV_COLUMNS)), csv_path=None)
    done: dict[str, PackedClip] = {}
    no_face: list[str] = []
    fallback = settings.face_crop and settings.face_fallback == "subject"
    bar = tqdm(total=len(jobs), unit="clip", desc="pack", disable=None if progress is None else not progress)

    def finish(source: str, outcome: PackedClip | BaseException, count: bool = True) -> None:
        if fallback and count and isinstance(outcome, NoFaceError):
            no_face.append(source)  # tried again with the subject's box once every clip is done
        elif isinstance(outcome, (MicroexpError, OSError, ValueError)):
            message = " ".join(str(outcome).split())
            logger.error("%s: not packed: %s", source, message)
            result.failed[source] = message
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            done[source] = outcome
            result.packed.append(outcome)
            if on_packed is not None:
                on_packed(outcome)
        if count:
            bar.update(1)

    try:
        if workers == 1:
            for job in jobs:
                try:
                    outcome: PackedClip | BaseException = _pack_job(job)
                except (MicroexpError, OSError, ValueError) as exc:
                    outcome = exc
                finish(job[0], outcome)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
                futures = {pool.submit(_pack_job, job): job[0] for job in jobs}
                for future in as_completed(futures):
                    exc = future.exception()
                    finish(futures[future], exc if exc is not None else future.result())
        for source, outcome in _subject_fallback(sorted(no_face), subject_of, done, {j[0]: j for j in jobs}):
            finish(source, outcome, count=False)
    finally:
        bar.close()

    result.table = _packed_table(rows, done, out_dir)
    if write_csv:
        out_dir.mkdir(parents=True, exist_ok=True)
        result.csv_path = out_dir / "annotations.csv"
        _write_csv_atomic(result.table, result.csv_path)
        if settings.face_crop:
            _write_csv_atomic(_face_box_table(done, out_dir), out_dir / FACE_BOXES_CSV)
        else:  # re-packed without crops: boxes of an earlier --face-crop run no longer describe the files
            (out_dir / FACE_BOXES_CSV).unlink(missing_ok=True)
    return result


def _write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _face_box_table(done: dict[str, PackedClip], out_dir: Path) -> pd.DataFrame:
    records = [
        {"path": Path(os.path.relpath(p.dest, out_dir)).as_posix(), **p.face_box._asdict(), "origin": p.face_box_origin}
        for p in done.values() if p.face_box is not None
    ]
    return pd.DataFrame(records, columns=list(FACE_BOX_COLUMNS)).sort_values("path", ignore_index=True)


def _first_frames(rows: pd.DataFrame) -> list[int]:
    if "first_frame" not in rows:
        return [0] * len(rows)
    return [0 if pd.isna(v) else int(v) for v in rows["first_frame"]]


def _packed_table(rows: pd.DataFrame, done: dict[str, PackedClip], out_dir: Path) -> pd.DataFrame:
    records = []
    for row in rows.itertuples(index=False):
        packed = done.get(str(Path(row.path).absolute()))
        if packed is None:
            continue
        estimated = bool(getattr(row, "apex_estimated", False))
        records.append({
            "subject": int(row.subject),
            "clip": str(row.clip),
            "path": Path(os.path.relpath(packed.dest, out_dir)).as_posix(),
            "onset": int(row.onset),
            "apex": "" if estimated else int(row.apex),
            "offset": int(row.offset),
            "fps": float(row.fps),
            "emotion": str(row.emotion),
            "aus": "" if pd.isna(row.aus) else str(row.aus),
            "action_descriptors": _text(getattr(row, "action_descriptors", "")),
            "first_frame": packed.first_frame,
            "dataset": str(getattr(row, "dataset", "microexp") or "microexp"),
        })
    return pd.DataFrame(records, columns=list(CSV_COLUMNS))


def _text(value: object) -> str:
    """A table cell as text: '' for a missing value (pandas reads blank cells as NaN)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)
