"""``microexp predict``: emotion of raw clips (video files, frame folders, folders of clips, clip tables)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

#: file extensions treated as videos when a folder of clips is walked
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict the emotion of clips with a trained checkpoint",
        description="Predict the micro-expression of each CLIP: a video file, a folder of numbered frames, a "
        "folder of such clips (walked), or a clip-table CSV (its onset/apex/offset are used). Onset/apex/offset "
        "not given are spotted from the face's motion. Nothing is written except the requested output "
        "(and face crops with --save-crops). Exit code 2 when any clip failed; the others are still predicted.",
    )
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="video file, frame folder, folder of clips or clip-table CSV")
    parser.add_argument("--checkpoint", required=True, help="fold_XX/model.pt from microexp train, or a microexp export")
    parser.add_argument("--onset", type=int, default=None, help="onset frame number (spotted when omitted)")
    parser.add_argument("--apex", type=int, default=None, help="apex frame number (spotted when omitted)")
    parser.add_argument("--offset", type=int, default=None, help="offset frame number (spotted when omitted)")
    parser.add_argument("--first-frame", type=int, default=0,
                        help="frame number of a video's first frame (default 0; frame folders use their file names)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the clips (default: the video's; frame folders have none, so give it when "
                        "the checkpoint samples at a reference_fps)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of per-clip results")
    out.add_argument("--csv", default=None, metavar="FILE", help="write one CSV row per clip to FILE ('-': stdout)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model call (default 8)")
    parser.add_argument("--no-face-crop", action="store_true", help="clips are already face crops: no face detection")
    parser.add_argument("--face-margin", type=float, default=None, help="enlargement of the detected face box (default 0.55)")
    parser.add_argument("--save-crops", default=None, metavar="DIR",
                        help="save the sampled face crops as PNG under DIR, one folder per clip named after its full "
                        "path or table name (sub01/EP01 -> sub01__EP01)")
    parser.add_argument("--motion-curve", action="store_true", help="include the motion curve in JSON/CSV output")
    parser.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"), help="video decoder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.inference.predictor import ClipPredictor

    options: dict[str, Any] = {"face_crop": not args.no_face_crop, "backend": args.backend}
    if args.face_margin is not None:
        options["face_margin"] = args.face_margin
    predictor = ClipPredictor.from_checkpoint(args.checkpoint, device=args.device, **options)
    items, failures = collect_clips(args.clips, onset=args.onset, apex=args.apex, offset=args.offset,
                                    first_frame=args.first_frame, fps=args.fps)
    result = predictor.predict_many(items, batch_size=args.batch_size, progress=False if args.no_progress else None,
                                    save_crops=args.save_crops)
    failures += result.failures
    rows = [p.to_dict(motion_curve=args.motion_curve) for p in result.predictions]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        write_csv(rows, predictor.class_names, args.csv)
    else:
        print(format_table(result.predictions))
    for failure in failures:
        print(f"microexp predict: error: {failure}", file=sys.stderr)
    if failures:
        total = len(result.predictions) + len(failures)
        print(f"microexp predict: {len(failures)} of {total} clip(s) failed", file=sys.stderr)
        return 2
    return 0


def collect_clips(paths: Sequence[str], *, onset: int | None = None, apex: int | None = None,
                  offset: int | None = None, first_frame: int = 0, fps: float | None = None) -> tuple[list, list]:
    """Expand CLIP arguments into :class:`ClipInput` rows, and failures for those that hold no clip."""
    from microexp.data.video import IMAGE_EXTENSIONS
    from microexp.inference.predictor import ClipFailure, ClipInput

    items: list[ClipInput] = []
    failures: list[ClipFailure] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            failures.append(ClipFailure(raw, "no such file or folder"))
        elif path.is_file() and path.suffix.lower() == ".csv":
            items += _table_clips(path)
        elif path.is_dir() and not _has_images(path, IMAGE_EXTENSIONS):
            found = _walk_clips(path, IMAGE_EXTENSIONS)
            if not found:
                failures.append(ClipFailure(raw, "no frames: the folder holds no frame images, videos or clip folders"))
            items += [ClipInput(str(p), first_frame=first_frame, fps=fps) for p in found]
        else:
            items.append(ClipInput(str(path), onset, apex, offset, first_frame, fps))
    return items, failures


def _has_images(folder: Path, extensions: tuple[str, ...]) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(extensions) for e in entries)


def _walk_clips(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        if any(f.lower().endswith(extensions) for f in filenames):
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(VIDEO_EXTENSIONS)]
    return found


def _table_clips(path: Path) -> list:
    from microexp.data.annotations import load_clip_table
    from microexp.inference.predictor import ClipInput

    table = load_clip_table(path, check_files=False).resolve(strict=False)
    return [ClipInput(str(row["path"]), int(row["onset"]), int(row["apex"]), int(row["offset"]),
                      int(row["first_frame"]), float(row["fps"]) if row["fps"] == row["fps"] else None, str(row["clip"]))
            for row in table.to_dict("records")]


def write_csv(rows: list[dict[str, Any]], class_names: Sequence[str], target: str) -> None:
    """One row per clip: the JSON fields flattened (``prob_<class>``, face box as ``x y w h``)."""
    columns = ["clip", "label", *(f"prob_{c}" for c in class_names), "onset", "apex", "offset", "estimated",
               "face_box", "model", "checkpoint"]
    if rows and "motion_curve" in rows[0]:
        columns.append("motion_curve")
    flat = []
    for row in rows:
        record = {k: v for k, v in row.items() if k not in ("probabilities", "face_box", "motion_curve")}
        record.update({f"prob_{c}": p for c, p in row["probabilities"].items()})
        record["face_box"] = "" if row["face_box"] is None else " ".join(str(v) for v in row["face_box"])
        if "motion_curve" in row:
            record["motion_curve"] = " ".join(str(v) for v in row["motion_curve"] or [])
        flat.append(record)
    handle = sys.stdout if target == "-" else open(target, "w", newline="", encoding="utf-8")
    try:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    finally:
        if handle is not sys.stdout:
            handle.close()


def format_table(predictions: list) -> str:
    """A readable table: clip, label, its probability, phases (* = spotted) and face box."""
    if not predictions:
        return "no clip predicted"
    width = min(48, max(4, *(len(p.clip) for p in predictions)))
    lines = [f"{'clip':<{width}}  {'label':<12}{'prob':>6}  {'onset':>6}{'apex':>6}{'offset':>7}  face box"]
    for p in predictions:
        clip = p.clip if len(p.clip) <= width else "..." + p.clip[-(width - 3):]
        star = lambda name: "*" if name in p.estimated_fields else " "  # noqa: E731
        box = "-" if p.face_box is None else "x".join(str(v) for v in p.face_box)
        lines.append(f"{clip:<{width}}  {p.label:<12}{p.probabilities[p.label]:>6.3f}  {p.onset:>5}{star('onset')}"
                     f"{p.apex:>5}{star('apex')}{p.offset:>6}{star('offset')}  {box}")
    if any(p.estimated for p in predictions):
        lines.append("* spotted from the motion signal")
    return "\n".join(lines)
