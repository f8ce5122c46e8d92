"""``microexp inspect``: summarise a clip table or official sheet and list every validation problem."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import numpy as np

from microexp.data.annotations import FORMATS, load_clip_table
from microexp.data.sampling import STRATEGIES, sample_indices


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise an annotation file: clips, subjects, classes, fps, problems",
        description="Read a clip table or an official annotation sheet, validate it and print a summary.",
    )
    parser.add_argument("annotations", help="clip table CSV, official sheet (xlsx) or, for SMIC, the HS folder")
    parser.add_argument("--format", default="auto", choices=list(FORMATS), help="annotation format (default: auto)")
    parser.add_argument("--root", default=None, help="folder the clip paths are relative to")
    parser.add_argument(
        "--annotations-only", action="store_true", help="do not check that frame files or videos exist"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--sample", type=int, default=0, metavar="K", help="also print sampled indices for K clips")
    parser.add_argument("--strategy", default="uniform", choices=list(STRATEGIES), help="sampling strategy")
    parser.add_argument("--frames", type=int, default=8, metavar="T", help="frames per sampled sequence")
    parser.add_argument("--stride", type=int, default=1, help="frame stride for dense/apex_centered sampling")
    return parser


def run(args: argparse.Namespace) -> int:
    result = load_clip_table(
        args.annotations, format=args.format, root=args.root, check_files=not args.annotations_only
    )
    summary = summarise(result.table, result.problems)
    if args.sample > 0:
        summary["samples"] = sample_rows(result.table, args.sample, args.strategy, args.frames, args.stride)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(format_summary(args.annotations, summary))
    return 0


def summarise(table: Any, problems: list) -> dict[str, Any]:
    """The JSON-ready summary: clips, subjects, classes, fps and problems."""
    fps_counts = Counter(float(v) for v in table["fps"]) if len(table) else Counter()
    return {
        "clips": int(len(table)),
        "subjects": int(table["subject"].nunique()) if len(table) else 0,
        "classes": {str(k): int(v) for k, v in table["emotion"].value_counts().sort_index().items()},
        "fps": {_fps_key(k): int(v) for k, v in sorted(fps_counts.items())},
        "problems": [_problem_dict(p) for p in problems],
    }


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
        lines.append(f"classes ({len(counts)}, imbalance ratio {counts.max() / max(counts.min(), 1):.1f}):")
        for name, count in summary["classes"].items():
            lines.append(f"  {name:<{width}}  {count:>6}  {100 * count / max(summary['clips'], 1):5.1f}%")
    if summary["fps"]:
        lines.append("fps: " + ", ".join(f"{fps} ({count})" for fps, count in summary["fps"].items()))
    problems = summary["problems"]
    errors = sum(p["severity"] == "error" for p in problems)
    lines.append(f"problems: {errors} errors, {len(problems) - errors} warnings")
    for p in problems:
        lines.append(f"  {p['severity']}: {p['text']}")
    for sample in summary.get("samples", []):
        lines.append(f"sample {sample['clip']}: {sample['indices']}")
    return "\n".join(lines)


def _fps_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _problem_dict(problem: Any) -> dict[str, Any]:
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
