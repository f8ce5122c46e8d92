"""``microexp pack``: convert a frame-folder dataset into one seekable video file per clip."""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.data.annotations import FORMATS, load_clip_table
from microexp.data.face import DEFAULT_MARGIN
from microexp.data.pack import (CONTAINERS, DEFAULT_CRF, DEFAULT_GOP, DEFAULT_JPEG_QUALITY, FACE_FALLBACKS, PACK_MODES,
                                PackSettings, pack_table)
from microexp.errors import ConfigError


def _gop(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer JPEG quality in 1..100, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pack",
        help="re-encode a frame-folder dataset as one seekable video per clip (Motion JPEG or H.264) plus a new "
             "annotations.csv",
        description=(
            "Read a clip table or official annotation sheet, encode every clip's frames into one "
            "video under OUT/clips/ and write OUT/annotations.csv (our CSV format, paths relative to "
            "OUT, first_frame keeping the sheet's frame numbers). Clips already packed with the same "
            "settings are skipped, so an interrupted run can simply be started again."
        ),
    )
    parser.add_argument("annotations", help="clip table CSV, official sheet (xlsx) or, for SMIC, the HS folder")
    parser.add_argument("--format", default="auto", choices=list(FORMATS), help="annotation format (default: auto)")
    parser.add_argument(
        "--root", default=None,
        help="folder the clip paths are relative to (default: the annotation file's folder); "
             "OUT/clips/ mirrors the layout below it",
    )
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--mode", default=PACK_MODES[0], choices=list(PACK_MODES),
        help=f"mjpeg: every frame one JPEG image at --quality (default {DEFAULT_JPEG_QUALITY}) in an AVI file, "
             "loads as fast as a JPEG folder, 1.7-3.5x a PNG folder (default); lossless: RGB H.264 at qp 0, "
             "frames decode exactly, 7-15x slower to read than mjpeg; near-lossless: 4:4:4 H.264 "
             f"at --crf (default {DEFAULT_CRF:g}), 40-75x smaller than lossless",
    )
    parser.add_argument(
        "--quality", type=_quality, default=None, metavar="Q",
        help=f"JPEG quality 1..100 for --mode mjpeg (default {DEFAULT_JPEG_QUALITY}, the IJG scale of cv2.imwrite)",
    )
    parser.add_argument(
        "--gop", type=_gop, default=None, metavar="N",
        help="keyframe interval; 1 = every frame a keyframe, fastest random access (default: "
             + ", ".join(f"{v} for {k}" for k, v in DEFAULT_GOP.items()) + ")",
    )
    parser.add_argument("--crf", type=float, default=None, help="constant rate factor for --mode near-lossless")
    parser.add_argument(
        "--container", default=None, choices=sorted({c for cs in CONTAINERS.values() for c in cs}),
        help="output container (default: " + ", ".join(f"{cs[0]} for {m}" for m, cs in CONTAINERS.items()) + ")",
    )
    parser.add_argument("--preset", default="medium", help="x264 preset of the H.264 modes (default medium)")
    parser.add_argument(
        "--face-crop", action="store_true",
        help="cut each clip to one fixed square face box (Haar detections on 5 frames; for raw, uncropped footage "
             "such as the 2024 DFME release); boxes are listed in OUT/face_boxes.csv",
    )
    parser.add_argument(
        "--face-margin", type=float, default=None, metavar="M",
        help=f"with --face-crop: enlargement of the detected face box, side x (1 + M) (default {DEFAULT_MARGIN:g})",
    )
    parser.add_argument(
        "--face-fallback", default=None, choices=list(FACE_FALLBACKS),
        help="with --face-crop, a clip without a detected face: subject = cut with the median box of the same "
             "subject's other clips (default), none = leave the clip out",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="parallel encoding processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--strict", action="store_true", help="stop on any annotation error instead of skipping rows")
    return parser


def run(args: argparse.Namespace) -> int:
    for option, value in (("--face-margin", args.face_margin), ("--face-fallback", args.face_fallback)):
        if value is not None and not args.face_crop:
            raise ConfigError(f"{option} applies only with --face-crop")
    settings = PackSettings(mode=args.mode, gop=args.gop, crf=args.crf, quality=getattr(args, "quality", None),
                            container=args.container,
                            preset=args.preset, face_crop=args.face_crop,
                            face_margin=DEFAULT_MARGIN if args.face_margin is None else args.face_margin,
                            face_fallback=args.face_fallback or "subject")
    annotations = Path(args.annotations)
    if annotations.is_file() and (Path(args.out) / "annotations.csv").resolve() == annotations.resolve():
        raise ConfigError(f"--out {args.out}: would overwrite the input {annotations}; choose another folder")
    table = load_clip_table(args.annotations, format=args.format, root=args.root, check_files=True)
    clips = table.resolve(strict=args.strict)
    source_root = args.root if args.root is not None else (
        annotations if annotations.is_dir() else annotations.parent)
    result = pack_table(
        clips, args.out, settings=settings, source_root=source_root, workers=args.workers,
        progress=False if args.no_progress else None,
    )
    packed = len(result.packed) - result.skipped
    filled = sum(1 for p in result.packed if p.filled)
    borrowed = sum(1 for p in result.packed if p.face_box_origin == "subject")
    print(
        f"packed {packed} clip file(s), {result.skipped} already up to date, {len(result.failed)} failed; "
        f"{len(result.table)} clips in {result.csv_path}"
        + (f" ({filled} file(s) had missing frame numbers filled)" if filled else "")
        + (f"; face boxes in {Path(args.out) / 'face_boxes.csv'}" if args.face_crop else "")
        + (f" ({borrowed} clip(s) without a detected face cut with their subject's median box)" if borrowed else "")
    )
    for source, message in result.failed.items():
        print(f"failed: {source}: {message}")
    return 1 if result.failed else 0
