"""``microexp inspect``: summarise a clip table or official sheet and list every validation problem.

Exit status: 0 when there are no errors (warnings alone are fine), 1 when errors are listed, 2 when the
file cannot be read at all (a one-line message, from the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import numpy as np

from microexp.data.annotations import FORMATS, Problem, load_clip_table
from microexp.data.class_maps import IDENTITY, ClassMap, apply_class_map, get_class_map, list_class_maps
from microexp.data.sampling import STRATEGIES, sample_indices
from microexp.data.video import BACKENDS

#: the class map tried first when none is given (the recipes' default, ``data.class_map``)
DEFAULT_CLASS_MAP = "dfme7"

EPILOG = """\
exit status:
  0  no errors (warnings alone exit 0)
  1  errors were listed: clips that training would drop or fail on
  2  a user error, one line on stderr: the annotation file cannot be read, a bad option value

file checks (unless --annotations-only): every clip's frame folder must hold the frames onset..offset
or its video file must exist; then every clip is opened as training opens it (a video's header, frame
count and its onset and offset frames; each frame image's header and end) and each clip that will fail
to read is an error (--no-video-check skips this pass, which opens every file and is slow on a large
dataset; a progress bar shows it on a terminal).

classes are listed in label order: that of --class-map, else of the first built-in class map that
labels every clip (dfme7 tried first), else by emotion name."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise an annotation file: clips, subjects, classes, fps, problems",
        description="Read a clip table or an official annotation sheet, validate it and print a summary.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("annotations", help="clip table CSV, official sheet (xlsx) or, for SMIC, the HS folder")
    parser.add_argument("--format", default="auto", choices=list(FORMATS), help="annotation format (default: auto)")
    parser.add_argument("--root", default=None, help="folder the clip paths are relative to")
    parser.add_argument(
        "--annotations-only", action="store_true",
        help="no file checks at all (neither that frame files and videos exist nor that they open)",
    )
    parser.add_argument(
        "--no-video-check", action="store_true",
        help="check that frame files and videos exist, but do not open them (faster)",
    )
    parser.add_argument("--backend", default="auto", choices=[b for b in BACKENDS if b != "folder"],
                        help="video backend of the video check (default: auto, as training)")
    parser.add_argument("--class-map", default=None, metavar="NAME|FILE",
                        help="count classes through this class map (a built-in name, identity, or a YAML file; "
                             "FILE.yaml#NAME picks one of several), in its label order, and report the clips it "
                             "leaves out (default: see below)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--sample", type=int, default=0, metavar="K", help="also print sampled indices for K clips")
    parser.add_argument("--strategy", default="uniform", choices=list(STRATEGIES), help="sampling strategy")
    parser.add_argument("--frames", type=int, default=8, metavar="T", help="frames per sampled sequence")
    parser.add_argument("--stride", type=int, default=1, help="frame stride for dense/apex_centered sampling")
    return parser


def run(args: argparse.Namespace) -> int:
    # resolved before the slow file checks; identity takes its classes from the table, so after reading it
    class_map = get_class_map(args.class_map) if args.class_map not in (None, IDENTITY) else None
    result = load_clip_table(
        args.annotations, format=args.format, root=args.root, check_files=not args.annotations_only,
        check_media=not args.no_video_check, backend=args.backend,
        progress=False if args.no_progress else None,
    )
    if args.class_map == IDENTITY:
        class_map = get_class_map(IDENTITY, table=result.table)
    summary = summarise(result.table, result.problems, class_map=class_map)
    if args.sample > 0:
        summary["samples"] = sample_rows(result.table, args.sample, args.strategy, args.frames, args.stride)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(format_summary(args.annotations, summary))
    return exit_status(summary)


def exit_status(summary: dict[str, Any]) -> int:
    """1 when the summary lists errors, else 0 (warnings alone are fine)."""
    return 1 if any(p["severity"] == "error" for p in summary["problems"]) else 0


def summarise(table: Any, problems: list, *, class_map: ClassMap | None = None) -> dict[str, Any]:
    """The JSON-ready summary: clips, subjects, classes (in label order), fps and problems.

    Args:
        table: the clip table.
        problems: the problems found reading it.
        class_map: count classes through this map: every class of the map in label order (zeros
            included), and one problem per clip it leaves out. ``None``: the first built-in map that
            labels every clip orders the classes present (``dfme7`` tried first); when none does, the
            emotion names in alphabetical order.
    """
    # rows of precomputed flows have no frame rate (NaN, never equal to itself): counted together as -1
    fps_counts = Counter(float(v) for v in table["fps"].fillna(-1.0)) if len(table) else Counter()
    problems = list(problems)
    if class_map is not None:
        labelled, left_out = apply_class_map(table, class_map, log=False)
        problems += left_out
        counts = Counter(int(v) for v in labelled["label"]) if len(labelled) else Counter()
        classes = {name: counts.get(i, 0) for i, name in enumerate(class_map.classes)}
        map_name: str | None = class_map.name
    else:
        map_name, classes = _classes_in_label_order(table)
    return {
        "clips": int(len(table)),
        "subjects": int(table["subject"].nunique()) if len(table) else 0,
        "class_map": map_name,
        "classes": classes,
        "fps": {_fps_key(k): int(v) for k, v in sorted(fps_counts.items())},
        "problems": [_problem_dict(p) for p in problems],
    }


def _classes_in_label_order(table: Any) -> tuple[str | None, dict[str, int]]:
    """(map name, emotion -> count) ordered by the first built-in map labelling every clip, else by name."""
    counts = {str(k): int(v) for k, v in table["emotion"].value_counts().sort_index().items()}
    if not len(table):
        return None, counts
    pairs = set(zip(table["dataset"].astype(str), table["emotion"].astype(str)))
    names = [DEFAULT_CLASS_MAP] + [n for n in list_class_maps() if n != DEFAULT_CLASS_MAP]
    for name in names:
        cm = get_class_map(name)
        if apply_class_map(table, cm, log=False).problems:
            continue  # leaves clips out: its classes are not the emotions
        if any(cm.lookup(dataset, emotion) != emotion for dataset, emotion in pairs):
            continue  # renames emotions (e.g. megc3 on CASME II): the counts would not be per emotion
        order = {c: i for i, c in enumerate(cm.classes)}
        return name, dict(sorted(counts.items(), key=lambda kv: order[kv[0]]))
    return None, counts


def sample_rows(table: Any, count: int, strategy: str, frames: int, stride: int) -> list[dict[str, Any]]:
    """Indices chosen for the first ``count`` clips (eval mode, so deterministic)."""
    samples = []
    for row in table.head(count).itertuples(index=False):
        indices = sample_indices(strategy, int(row.onset), int(row.apex), int(row.offset), frames, stride=stride)
        samples.append({"clip": str(row.clip), "indices": [int(i) for i in indices]})
    return samples


def format_summary(source: str, summary: dict[str, Any]) -> str:
    lines = [f"{source}: {summary['clips']} clips from {summary['subjects']} subjects"]
    if summary["classes"]:
        width = max(len(name) for name in summary["classes"])
        counts = np.array(list(summary["classes"].values()))
        order = (f"label order of class map {summary['class_map']}" if summary.get("class_map")
                 else "by name; --class-map NAME gives label order")
        lines.append(f"classes ({len(counts)}, {order}; imbalance ratio "
                     f"{counts.max() / max(counts.min(), 1):.1f}):")
        for name, count in summary["classes"].items():
            lines.append(f"  {name:<{width}}  {count:>6}  {100 * count / max(summary['clips'], 1):5.1f}%")
    if summary["fps"]:
        lines.append("fps: " + ", ".join(f"{fps} ({count})" for fps, count in summary["fps"].items()))
    problems = summary["problems"]
    errors = sum(p["severity"] == "error" for p in problems)
    lines.append(f"problems: {errors} errors, {len(problems) - errors} warnings")
    for p in problems:
        lines.append(f"  {p['severity']}: {p['text']}")
    if errors:
        lines.append(f"{errors} error(s): training drops these clips or fails on them (exit status 1)")
    for sample in summary.get("samples", []):
        lines.append(f"sample {sample['clip']}: {sample['indices']}")
    return "\n".join(lines)


def _fps_key(value: float) -> str:
    if value < 0:
        return "none (precomputed flows)"
    return str(int(value)) if float(value).is_integer() else str(value)


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "severity": problem.severity,
        "file": str(problem.file),
        "row": problem.row,
        "field": problem.field,
        "value": None if problem.value is None else str(problem.value),
        "clip": problem.clip,
        "message": problem.message,
        "text": str(problem),
    }
