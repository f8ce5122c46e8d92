"""``microexp spot-eval PRED GT``: MEGC spotting metrics (IoU >= 0.5 matching, precision/recall/F1, STRS)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "score spotted intervals against ground truth as MEGC does (IoU matching, precision/recall/F1, STRS)"
REQUIRED = ("video", "onset", "offset")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "spot-eval",
        help=HELP,
        description="Score spotted micro-expression intervals (PRED) against the true ones (GT). Both are CSV "
        "files with one interval per row: video, onset, offset (inclusive frame numbers), and optionally apex, "
        "score (spotted: higher first when matching) and emotion. A spotted interval is a true positive when its "
        "temporal IoU with a ground-truth interval of the same video is at least --iou (0.5, as MEGC); each "
        "interval is matched at most once. Prints precision, recall and F1 overall (TP, FP, FN summed over "
        "videos) and per video; when both files have emotions, also the analysis UF1 over the true positives "
        "and STRS = spotting F1 x analysis UF1 (MEGC 2023's spot-then-recognise score).",
    )
    parser.add_argument("predictions", metavar="PRED", help="spotted intervals (CSV), e.g. microexp spot's output")
    parser.add_argument("truth", metavar="GT", help="ground-truth intervals (CSV)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a true positive needs (default: 0.5)")
    parser.add_argument("--out", help="also write the scores as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    return parser


def read_intervals(path: str | Path, *, what: str) -> dict[str, list[Any]]:
    """Video -> its intervals, from a CSV with video, onset, offset[, score][, emotion] (one line per error)."""
    import pandas as pd

    from microexp.errors import ConfigError
    from microexp.spotting_metrics import Interval

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        frame = pd.read_csv(path, dtype={"video": str, "emotion": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV ({' '.join(str(exc).split())[:160]})") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; expected video, onset, offset "
                          "[, apex, score, emotion]")
    out: dict[str, list[Any]] = {}
    for row, record in enumerate(frame.to_dict("records"), start=2):
        try:
            onset, offset = int(record["onset"]), int(record["offset"])
            score = float(record["score"]) if "score" in record and pd.notna(record["score"]) else 1.0
            emotion = record.get("emotion")
            interval = Interval(onset, offset, score, str(emotion) if isinstance(emotion, str) and emotion else None)
        except (TypeError, ValueError) as exc:
            reason = str(exc) if "offset before onset" in str(exc) else "onset and offset must be frame numbers"
            raise ConfigError(f"{path} line {row}: {reason} (onset={record['onset']!r}, "
                              f"offset={record['offset']!r})") from exc
        if not isinstance(record["video"], str) or not record["video"]:
            raise ConfigError(f"{path} line {row}: empty video name")
        out.setdefault(record["video"], []).append(interval)
    return out


def run(args: argparse.Namespace) -> int:
    from microexp.errors import ConfigError
    from microexp.fileio import dumps_json, write_json
    from microexp.spotting_metrics import spot_then_recognise, spotting_scores

    if not 0 < args.iou <= 1:
        raise ConfigError(f"--iou {args.iou}: expected a number in (0, 1]")
    spotted = read_intervals(args.predictions, what="PRED")
    truth = read_intervals(args.truth, what="GT")
    overall, per_video, _ = spotting_scores(spotted, truth, threshold=args.iou)
    result: dict[str, Any] = {"iou_threshold": args.iou, "overall": overall.to_dict(),
                              "per_video": {v: s.to_dict() for v, s in per_video.items()}}
    emotions = all(i.emotion for v in spotted.values() for i in v) and all(i.emotion for v in truth.values() for i in v)
    if emotions and spotted and truth:
        str_scores = spot_then_recognise(spotted, truth, threshold=args.iou)
        result.update(analysis_uf1=str_scores["analysis_uf1"], analysed_intervals=str_scores["analysed_intervals"],
                      strs=str_scores["strs"])
    if args.out:
        write_json(args.out, result)
    if args.json:
        print(dumps_json(result))
        return 0
    print(f"{'video':<32} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'F1':>6}")
    for video, s in [*per_video.items(), ("overall (summed over videos)", overall)]:
        print(f"{video[:32]:<32} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f}")
    if "strs" in result:
        print(f"analysis UF1 over {result['analysed_intervals']} true positives: {result['analysis_uf1']:.3f}; "
              f"STRS = F1 x UF1 = {result['strs']:.3f}")
    else:
        print("STRS: not computed (both files need an emotion for every interval)")
    return 0
