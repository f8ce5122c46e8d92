"""``microexp predict``: emotion of raw clips (video files, frame folders, folders of clips, clip tables)."""

from __future__ import annotations

import argparse
import csv
import errno
import io
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

#: file extensions treated as videos when a folder of clips is walked
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict the emotion of clips with a trained checkpoint",
        description="Predict the micro-expression of each CLIP: a video file, a folder of numbered frames, a "
        "folder of such clips (walked), or a clip-table CSV (its onset/apex/offset, first_frame and fps are used; "
        "its emotion column gives a 'true' column and accuracy/UF1). Onset/apex/offset not given are spotted from "
        "the face's motion, and flagged as estimated per phase. Nothing is written except the requested output "
        "(and face crops with --save-crops). Exit code 2 when any clip failed; the others are still predicted.",
    )
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="video file, frame folder, folder of clips or clip-table CSV")
    parser.add_argument("--checkpoint", required=True,
                        help="a model.pt from microexp train (RUN/final/model.pt, or a fold's), or a microexp export")
    parser.add_argument("--onset", type=int, default=None, help="onset frame number (spotted when omitted)")
    parser.add_argument("--apex", type=int, default=None, help="apex frame number (spotted when omitted)")
    parser.add_argument("--offset", type=int, default=None, help="offset frame number (spotted when omitted)")
    parser.add_argument("--first-frame", type=int, default=None,
                        help="frame number of a video's first frame (default: the number the video records, as "
                        "microexp pack writes it, else 0 with a warning; frame folders use their file names)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the clips, > 0 (default: the video's; frame folders have none, so give it "
                        "when the checkpoint samples at a reference_fps)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of per-clip results")
    out.add_argument("--csv", default=None, metavar="FILE",
                     help="write one CSV row per clip to FILE ('-': stdout); the path written is printed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model call (default 8)")
    parser.add_argument("--no-face-crop", action="store_true", help="clips are already face crops: no face detection")
    parser.add_argument("--face-margin", type=float, default=None, help="enlargement of the detected face box (default 0.55)")
    parser.add_argument("--spotting", choices=("motion", "regions"), default="regions",
                        help="how phases not given are spotted: the region-wise, blink-robust method (eyes, brows, "
                        "nose, mouth; blinks discounted; the default) or the whole-face motion signal of earlier "
                        "releases (motion)")
    parser.add_argument("--save-crops", default=None, metavar="DIR",
                        help="save the sampled face crops as PNG under DIR, one folder per clip named after its full "
                        "path or table name (sub01/EP01 -> sub01__EP01)")
    parser.add_argument("--motion-curve", action="store_true", help="include the motion curve in JSON/CSV output")
    parser.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"), help="video decoder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.errors import ConfigError
    from microexp.fileio import dumps_json
    from microexp.inference.predictor import ClipPredictor

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise ConfigError(f"--fps {args.fps:g}: expected a frame rate > 0")
    if args.csv and args.csv != "-":
        check_writable(args.csv)  # before any clip is predicted
    if args.save_crops:
        check_writable(args.save_crops, folder=True)
    options: dict[str, Any] = {"face_crop": not args.no_face_crop, "backend": args.backend}
    if args.face_margin is not None:
        options["face_margin"] = args.face_margin
    options["spotting"] = args.spotting
    predictor = ClipPredictor.from_checkpoint(args.checkpoint, device=args.device, **options)
    items, failures = collect_clips(args.clips, onset=args.onset, apex=args.apex, offset=args.offset,
                                    first_frame=args.first_frame, fps=args.fps,
                                    class_map=predictor.data.get("class_map"), class_names=predictor.class_names)
    result = predictor.predict_many(items, batch_size=args.batch_size, progress=False if args.no_progress else None,
                                    save_crops=args.save_crops)
    failures += result.failures
    rows = [p.to_dict(motion_curve=args.motion_curve) for p in result.predictions]
    summary = label_summary(result.predictions, predictor.class_names)
    if summary:
        summary += seen_subjects_note(items, {p.clip for p in result.predictions}, predictor.seen_subjects)
    if args.json:
        print(dumps_json(rows))
    elif args.csv:
        write_csv(rows, predictor.class_names, args.csv)
        if args.csv != "-":
            print(f"wrote {len(rows)} row(s) to {args.csv}")
    else:
        print(format_table(result.predictions))
    if summary:
        print(summary, file=sys.stderr if args.json or args.csv == "-" else sys.stdout)
    for failure in failures:
        print(f"microexp predict: error: {failure}", file=sys.stderr)
    if failures:
        total = len(result.predictions) + len(failures)
        print(f"microexp predict: {len(failures)} of {total} clip(s) failed", file=sys.stderr)
        return 2
    return 0


def collect_clips(paths: Sequence[str], *, onset: int | None = None, apex: int | None = None,
                  offset: int | None = None, first_frame: int | None = None, fps: float | None = None,
                  class_map: str | None = None, class_names: Sequence[str] | None = None) -> tuple[list, list]:
    """Expand CLIP arguments into :class:`ClipInput` rows, and failures for those that hold no clip.

    Clip tables give each row's phases, first_frame (when the table has the column), fps and, when
    ``class_names`` is given, the true class (through ``class_map``, the checkpoint's, when known).
    """
    from microexp.data.video import IMAGE_EXTENSIONS
    from microexp.inference.predictor import ClipFailure, ClipInput

    items: list[ClipInput] = []
    failures: list[ClipFailure] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            failures.append(ClipFailure(raw, "no such file or folder"))
        elif path.is_file() and path.suffix.lower() == ".csv":
            items += _table_clips(path, class_map=class_map, class_names=class_names)
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


def _table_clips(path: Path, *, class_map: str | None = None, class_names: Sequence[str] | None = None) -> list:
    from microexp.data.annotations import load_clip_table
    from microexp.inference.predictor import ClipInput

    table = load_clip_table(path, check_files=False, require_emotion=False).resolve(strict=False)
    has_first_frame = _csv_has_column(path, "firstframe")
    truth = true_classes(table, class_map, class_names) if class_names is not None else {}
    return [ClipInput(str(row["path"]), int(row["onset"]), int(row["apex"]), int(row["offset"]),
                      int(row["first_frame"]) if has_first_frame else None,
                      float(row["fps"]) if row["fps"] == row["fps"] else None, str(row["clip"]),
                      apex_estimated=bool(row.get("apex_estimated", False)), true=truth.get(str(row["clip"])),
                      subject=int(row["subject"]), flow_path=row.get("flow_path") or None)
            for row in table.to_dict("records")]


def _csv_has_column(path: Path, normalised: str) -> bool:
    """Whether a CSV's header has a column whose normalised name (see annotations) is ``normalised``."""
    from microexp.data.annotations import normalise_column_name

    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return any(normalise_column_name(h) == normalised for h in header)


def true_classes(table: Any, class_map: str | None, class_names: Sequence[str]) -> dict[str, str]:
    """clip -> true class name of a clip table's labelled rows, as the checkpoint names its classes.

    With the checkpoint's class map (``data.class_map``, written by ``microexp train``) the emotions are
    mapped as in training (clips the map drops get no true class); without one, an emotion counts when it
    is one of the class names (ignoring case). Empty when the table has no usable labels.
    """
    from microexp.data.class_maps import IDENTITY, apply_class_map, get_class_map
    from microexp.errors import MicroexpError

    if "emotion" not in table or not table["emotion"].astype(str).str.strip().any():
        return {}
    if not class_names:  # a model that detects AUs alone predicts no emotion to compare with
        return {}
    if class_map and class_map != IDENTITY:  # identity classes are emotion names: matched by name below
        try:
            cm = get_class_map(class_map)
        except (MicroexpError, KeyError, ValueError) as exc:
            logger.warning("true classes not given: the checkpoint's class map %r is unknown here (%s)", class_map, exc)
            return {}
        if list(cm.classes) != list(class_names):
            logger.warning("true classes not given: class map %r has classes %s, the checkpoint %s", class_map,
                           list(cm.classes), list(class_names))
            return {}
        labelled = apply_class_map(table, cm, log=False).table
        return {str(c): cm.classes[int(label)] for c, label in zip(labelled["clip"], labelled["label"])}
    names = {n.lower(): n for n in class_names}
    return {str(c): names[str(e).strip().lower()] for c, e in zip(table["clip"], table["emotion"])
            if str(e).strip().lower() in names}


def seen_subjects_note(items: Sequence[Any], predicted: set, seen: frozenset) -> str:
    """A warning for the label summary when labelled clips come from subjects the model trained on.

    A final model (``train --final``) has seen every subject of its clip table, a fold model its fold's
    training and validation subjects: accuracy on those clips is a training score, not a held-out result.
    """
    labelled = [i for i in items if i.true is not None and (i.name or i.path) in predicted]
    held_in = [i for i in labelled if i.subject is not None and i.subject in seen]
    if not held_in:
        return ""
    return (f"; WARNING: {len(held_in)} of these {len(labelled)} clips are from subjects the model was trained "
            "on (per its checkpoint): a training score, not a held-out result")


def label_summary(predictions: Sequence[Any], class_names: Sequence[str]) -> str | None:
    """Accuracy, UF1 and UAR over the predicted clips with a true class (None when none has one)."""
    from microexp.metrics import compute_metrics

    known = [p for p in predictions if p.true is not None and p.label is not None]  # (none for AU detection alone)
    if not known:
        return None
    index = {c: i for i, c in enumerate(class_names)}
    m = compute_metrics([index[p.true] for p in known], [index[p.label] for p in known], num_classes=len(class_names))
    unlabelled = len(predictions) - len(known)
    rest = f"; {unlabelled} predicted clip(s) without a true class left out" if unlabelled else ""
    return (f"accuracy {m.acc:.3f}, UF1 {m.uf1:.3f}, UAR {m.uar:.3f} over {len(known)} labelled clip(s) "
            f"(true classes from the clip table's emotion column){rest}")


def check_writable(target: str | os.PathLike[str], *, folder: bool = False) -> None:
    """Refuse, before predicting anything, an output path that cannot be written (one line naming it).

    Args:
        target: the output file (``folder=False``) or the output folder (``folder=True``, e.g. --save-crops).

    Raises:
        OutputError: a file path that is a folder (or a folder path that is a file), a parent that is a
            file, or a folder that is read-only / not writable.
    """
    from microexp.fileio import output_error

    path = Path(target)
    kept = "nothing was predicted"
    if not folder and path.is_dir():
        raise output_error(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)), kept=kept)
    if folder and path.exists() and not path.is_dir():
        raise output_error(path, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), kept=kept)
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise output_error(path, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), kept=kept)
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        code = errno.EROFS if read_only else errno.EACCES
        raise output_error(path, OSError(code, os.strerror(code)), kept=kept)


def write_csv(rows: list[dict[str, Any]], class_names: Sequence[str], target: str) -> None:
    """One row per clip: the JSON fields flattened (``prob_<class>``, ``onset_estimated`` etc. per phase,
    ``true`` when known, face box as ``x y w h``), written atomically (``'-'``: stdout).

    Raises:
        OutputError: ``target`` cannot be written (one line naming it and the cause).
    """
    from microexp.fileio import json_safe, write_text

    columns = ["clip", "label", *(["true"] if any("true" in r for r in rows) else []),
               *(f"prob_{c}" for c in class_names), "onset", "apex", "offset",
               "onset_estimated", "apex_estimated", "offset_estimated", "face_box", "model", "checkpoint"]
    au_names = list(rows[0]["aus"]["probabilities"]) if rows and "aus" in rows[0] else []
    if au_names:
        columns += ["aus_detected", *(f"au_prob_{name}" for name in au_names)]
    if rows and "motion_curve" in rows[0]:
        columns.append("motion_curve")
    flat = []
    for row in rows:
        record = {k: v for k, v in json_safe(row).items()
                  if k not in ("probabilities", "face_box", "motion_curve", "estimated", "aus")}
        record.update({f"prob_{c}": p for c, p in json_safe(row["probabilities"]).items()})
        record.update({f"{k}_estimated": v for k, v in row["estimated"].items()})
        record["face_box"] = "" if row["face_box"] is None else " ".join(str(v) for v in row["face_box"])
        if "aus" in row:
            record["aus_detected"] = "+".join(row["aus"]["detected"])
            record.update({f"au_prob_{k}": v for k, v in json_safe(row["aus"]["probabilities"]).items()})
        if "motion_curve" in row:
            record["motion_curve"] = " ".join(str(v) for v in row["motion_curve"] or [])
        flat.append(record)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    if target == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        write_text(target, buffer.getvalue(), kept="the previous file is kept" if Path(target).exists() else None)


def format_table(predictions: list) -> str:
    """A readable table: clip, label, its probability, phases (* = spotted) and face box."""
    if not predictions:
        return "no clip predicted"
    width = min(48, max(4, *(len(p.clip) for p in predictions)))
    with_aus = any(p.au_probabilities for p in predictions)
    lines = [f"{'clip':<{width}}  {'label':<12}{'prob':>6}  {'onset':>6}{'apex':>6}{'offset':>7}  face box"
             + ("  AUs detected" if with_aus else "")]
    for p in predictions:
        clip = p.clip if len(p.clip) <= width else "..." + p.clip[-(width - 3):]
        star = lambda name: "*" if name in p.estimated_fields else " "  # noqa: E731
        box = "-" if p.face_box is None else "x".join(str(v) for v in p.face_box)
        label, prob = (p.label, f"{p.probabilities[p.label]:>6.3f}") if p.label is not None else ("-", f"{'-':>6}")
        lines.append(f"{clip:<{width}}  {label:<12}{prob}  {p.onset:>5}{star('onset')}"
                     f"{p.apex:>5}{star('apex')}{p.offset:>6}{star('offset')}  {box}"
                     + (f"  {'+'.join(p.detected_aus) or 'none'}" if with_aus else ""))
    if any(p.estimated for p in predictions):
        lines.append("* estimated: spotted from the motion signal (or an estimated apex in the clip table)")
    return "\n".join(lines)
