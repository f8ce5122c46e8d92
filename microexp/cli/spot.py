"""``microexp spot VIDEO... --out DIR``: every micro-expression interval of long videos (spot-then-recognise)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

HELP = "find every micro-expression interval in long videos (sliding windows; --recognise classifies each)"
COLUMNS = ["video", "onset", "apex", "offset", "score", "seconds", "duration_ms", "apex_confidence",
           "onset_confidence", "offset_confidence"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from microexp.inference.long_spotting import SpotSettings

    d = SpotSettings()
    parser = subparsers.add_parser(
        "spot",
        help=HELP,
        description="Spot every micro-expression in long recordings (minutes, 30-500 fps): the video is decoded "
        "once, in order, and never held whole; the face is found in its first seconds and cropped; windows of "
        f"{d.window_s:g} s every {d.window_s / 2:g} s give region-wise motion (brows, eyes, nose, mouth) against "
        "the window's first frame, in noise units, blinks discounted; a peak at least --threshold noise units "
        "above its surroundings, returning to the noise floor on both sides within --max-duration, is an "
        "interval. Writes DIR/intervals.csv (video, onset, apex, offset, score, ...; the PRED of `microexp "
        "spot-eval`), DIR/intervals.json, DIR/spot.json (settings, per-video counts and speed), "
        "DIR/curves/VIDEO.csv (the motion curve of every frame) and DIR/plots/VIDEO.png. A video already done "
        "with the same settings is skipped on a rerun. With --recognise CKPT each interval is also classified "
        "(emotion, probability). Exit code 2 when a video failed; the others are still spotted.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video file or folder of numbered frames")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--recognise", "--recognize", dest="recognise", default=None, metavar="CKPT",
                        help="classify each interval with this checkpoint (microexp train's model.pt or an export)")
    parser.add_argument("--threshold", type=float, default=d.threshold,
                        help=f"peak height above its surroundings, in noise units (default: {d.threshold:g}); "
                        "lower finds more, and more false intervals")
    parser.add_argument("--floor", type=float, default=d.floor,
                        help=f"noise units at which onset and offset are placed (default: {d.floor:g})")
    parser.add_argument("--max-duration", type=float, default=d.max_duration_s, metavar="SECONDS",
                        help=f"longest onset-to-offset interval kept (default: {d.max_duration_s:g}; longer motion is "
                        "a head movement or a macro-expression)")
    parser.add_argument("--window", type=float, default=d.window_s, metavar="SECONDS",
                        help=f"sliding-window length, more than twice --max-duration (default: {d.window_s:g})")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate (default: the video's; required for frame folders)")
    parser.add_argument("--first-frame", type=int, default=None,
                        help="number of a video's first frame (default: the number it records, else 0)")
    parser.add_argument("--no-face-crop", action="store_true", help="the videos are already face crops")
    parser.add_argument("--face-margin", type=float, default=None, help="enlargement of the detected face box")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for --recognise (default cpu)")
    parser.add_argument("--no-plot", action="store_true", help="no DIR/plots/VIDEO.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from microexp.data.face import DEFAULT_MARGIN
    from microexp.errors import ConfigError
    from microexp.inference.long_spotting import SpotSettings

    settings = SpotSettings(window_s=args.window, threshold=args.threshold, floor=args.floor,
                            max_duration_s=args.max_duration, face_crop=not args.no_face_crop,
                            face_margin=DEFAULT_MARGIN if args.face_margin is None else args.face_margin)
    try:
        settings.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.max_duration * 2 >= args.window:
        raise ConfigError(f"--window {args.window:g} s must be more than twice --max-duration ({args.max_duration:g} "
                          "s): every interval must fit whole, with neutral frames either side, in some window")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise ConfigError(f"--fps {args.fps:g}: expected a frame rate > 0")
    return settings


def _names(videos: list[str]) -> dict[str, Path]:
    from microexp.errors import ConfigError

    names: dict[str, Path] = {}
    for raw in videos:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"{raw}: no such video file or frame folder")
        name = path.stem if path.is_file() else path.name
        if name in names:
            raise ConfigError(f"{raw} and {names[name]} are both named {name!r} in the outputs; spot them into "
                              "separate --out folders")
        names[name] = path
    return names


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from microexp.fileio import check_writable, write_json, write_text

    settings = _settings(args)
    videos = _names(args.videos)
    out = Path(args.out)
    check_writable(out)
    key = {"settings": asdict(settings), "fps": args.fps, "first_frame": args.first_frame,
           "recognise": _digest(args.recognise) if args.recognise else None}
    predictor = None
    if args.recognise:
        from microexp.inference.predictor import ClipPredictor

        predictor = ClipPredictor.from_checkpoint(args.recognise, device=args.device, face_crop=False)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, path in videos.items():
        done = out / "videos" / f"{name}.json"
        previous = _read_json(done)
        if previous is not None and previous.get("key") == key and previous.get("path") == str(path):
            results[name] = previous
            print(f"{name}: done before with these settings ({len(previous['intervals'])} intervals), skipped")
            continue
        try:
            results[name] = _spot_video(name, path, out, settings, args, predictor)
        except (OSError, ValueError) as exc:  # VideoReadError, PredictionError, ConfigError, OutputError
            from microexp.fileio import OutputError

            if isinstance(exc, OutputError):
                raise
            failures.append(f"{path}: {' '.join(str(exc).split())}")
            continue
        results[name]["key"] = key
        write_json(done, results[name])
    rows = [row for name in videos if name in results for row in results[name]["intervals"]]
    columns = COLUMNS + (["emotion", "probability"] if predictor is not None else [])
    write_text(out / "intervals.csv", _csv(rows, columns))
    write_json(out / "intervals.json", {name: results[name]["intervals"] for name in videos if name in results})
    write_json(out / "spot.json", {"settings": asdict(settings), "recognise": args.recognise,
                                   "videos": {n: {k: v for k, v in r.items() if k not in ("intervals", "key")}
                                              for n, r in results.items()},
                                   "failures": failures})
    _print_summary(results, out)
    for failure in failures:
        print(f"microexp spot: error: {failure}", file=sys.stderr)
    if failures:
        print(f"microexp spot: {len(failures)} of {len(videos)} video(s) failed", file=sys.stderr)
        return 2
    return 0


def _spot_video(name: str, path: Path, out: Path, settings: Any, args: argparse.Namespace,
                predictor: Any) -> dict[str, Any]:
    from tqdm import tqdm

    from microexp.data.video import FrameStream
    from microexp.errors import ConfigError
    from microexp.fileio import atomic_open
    from microexp.inference.long_spotting import LongSpotter

    stream = FrameStream(path, first_frame=args.first_frame, fps=args.fps)
    fps = stream.fps
    if not fps:
        raise ConfigError("no frame rate (a frame folder records none): give --fps")
    if stream.numbering_guessed:
        print(f"{name}: the video records no first frame number: frames count from 0 (--first-frame sets it)",
              file=sys.stderr)
    recognise = None if predictor is None else predictor.recogniser(fps, name)

    started = time.perf_counter()
    intervals = []
    with atomic_open(out / "curves" / f"{name}.csv", newline="") as curve_file:
        curve_file.write("frame,motion\n")

        def on_curve(numbers: Any, values: Any) -> None:
            curve_file.write("".join(f"{int(n)},{v:.3f}\n" for n, v in zip(numbers, values)))

        spotter = LongSpotter(fps, settings, recognise=recognise, on_curve=on_curve)
        with tqdm(total=stream.total, unit="frame", desc=f"spot {name}", disable=True if args.no_progress else None,
                  dynamic_ncols=True) as bar:
            for numbers, frames in stream:
                intervals += spotter.feed(numbers, frames)
                bar.update(len(numbers))
                bar.set_postfix(intervals=len(intervals) + spotter.open_intervals, refresh=False)
            intervals += spotter.finish()
    elapsed = time.perf_counter() - started
    rows = [i.to_row(name, fps) for i in intervals]
    if not args.no_plot:
        from microexp.inference.spot_plot import plot_spotting

        plot_spotting(out / "curves" / f"{name}.csv", rows, out / "plots" / f"{name}.png", title=f"{name} ({path})")
    box = spotter.box
    if box is None and settings.face_crop:
        print(f"{name}: no face found in the first {settings.face_probe_s:g} s: spotted on whole frames "
              "(--no-face-crop for videos that are face crops)", file=sys.stderr)
    return {"path": str(path), "fps": fps, "frames": spotter.frames_seen,
            "seconds": round(spotter.frames_seen / fps, 3), "windows": spotter.windows, "blinks": spotter.blinks,
            "face_box": None if box is None else box.as_list(),
            "face": "cropped" if box is not None else ("not cropped (--no-face-crop)" if not settings.face_crop
                                                       else "no face found: whole frames used"),
            "elapsed_s": round(elapsed, 2), "frames_per_s": round(spotter.frames_seen / max(elapsed, 1e-9), 1),
            "intervals": rows}


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _print_summary(results: dict[str, dict[str, Any]], out: Path) -> None:
    print(f"{'video':<28} {'frames':>8} {'seconds':>8} {'intervals':>9} {'blinks':>6} {'frames/s':>9}")
    for name, r in results.items():
        print(f"{name[:28]:<28} {r['frames']:>8} {r['seconds']:>8.1f} {len(r['intervals']):>9} {r['blinks']:>6} "
              f"{r['frames_per_s']:>9.1f}")
    none = [n for n, r in results.items() if not r["intervals"]]
    if none:
        print(f"no interval in {', '.join(none)}: no motion rose --threshold noise units above its surroundings and "
              "fell back within --max-duration (a face without micro-expressions, or ones too weak to tell from noise)")
    print(f"intervals: {out / 'intervals.csv'} (score them with `microexp spot-eval {out / 'intervals.csv'} GT.csv`)")
