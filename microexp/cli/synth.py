"""``microexp synth OUT_DIR``: generate the synthetic DFME-style micro-expression benchmark."""

from __future__ import annotations

import argparse

from microexp.errors import ConfigError
from microexp.synth import generate_dataset
from microexp.synth.long import (DEFAULT_LONG_FPS, DEFAULT_LONG_SECONDS, MAX_LONG_FPS, MIN_LONG_FPS,
                                 generate_long_dataset)
from microexp.synth.options import DEFAULT_CLIPS, DEFAULT_IMBALANCE_RATIO, DEFAULT_SUBJECTS, FORMATS, PRESETS
from microexp.synth.plan import POOL_SUBJECT_OFFSET


def _frame_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}")
    return int(width), int(height)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic DFME-style benchmark (faces, AU micro-expressions, 200/300/500 fps)",
        description=(
            "Generate a synthetic micro-expression dataset: procedurally drawn subjects, clips with one "
            "micro-expression (FACS action units as small smooth displacement fields) and realistic nuisances, "
            "DFME's 7 emotions with a long-tailed class distribution and DFME's frame rates. Writes "
            "OUT_DIR/annotations.csv, OUT_DIR/clips/, OUT_DIR/ground_truth.csv and OUT_DIR/synth.json. "
            "With --unlabeled N: a pool of N clips of new subjects for self-supervised pretraining, whose "
            "annotations.csv has no labels (see --unlabeled). With --long N: N long recordings for spotting "
            "(several micro-expressions, blinks and head movements each) and their true intervals (see --long)."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--preset", default="medium", metavar="{easy,medium,hard}",
                        help=f"difficulty: {', '.join(PRESETS)} (default: medium)")
    parser.add_argument("--subjects", type=int, default=DEFAULT_SUBJECTS,
                        help=f"number of subjects (default: {DEFAULT_SUBJECTS})")
    parser.add_argument("--clips", type=int, default=None,
                        help=f"total number of clips (default: {DEFAULT_CLIPS})")
    parser.add_argument("--unlabeled", type=int, default=None, metavar="N",
                        help=f"write an unlabeled pool of N clips instead (takes the place of --clips), for "
                             f"self-supervised pretraining: new subjects numbered from {POOL_SUBJECT_OFFSET + 1} "
                             "(sub1001...) whose faces are drawn apart from every labelled dataset's, and an "
                             "annotations.csv with blank emotion, aus, onset, apex and offset (the true ones in "
                             "ground_truth.csv); not with --label-noise or --dfme-sheet")
    parser.add_argument("--long", type=int, default=None, metavar="N",
                        help="write N long recordings instead, one subject each, for spotting: OUT_DIR/videos/"
                             "long_001.mp4..., OUT_DIR/intervals.csv (the true micro-expression intervals, for "
                             "`microexp spot-eval`) and OUT_DIR/events.csv (blinks and head movements too); takes "
                             "--seconds, --fps, --preset, --size, --seed, --workers")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"length of each --long recording in seconds (default: {DEFAULT_LONG_SECONDS:g})")
    parser.add_argument("--fps", type=int, default=None,
                        help=f"frame rate of the --long recordings, {MIN_LONG_FPS}..{MAX_LONG_FPS} "
                             f"(default: {DEFAULT_LONG_FPS}; CAS(ME)^2 is 30, SAMM long videos 200)")
    parser.add_argument("--size", type=int, default=128,
                        help="frame side in pixels, even (default: 128)")
    parser.add_argument("--format", dest="fmt", default="mp4", metavar="{mp4,frames}",
                        help=f"clip format: {' or '.join(FORMATS)} (PNG folders) (default: mp4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--imbalance-ratio", type=float, default=None,
                        help=f"largest / smallest class count, 1 = balanced (default: {DEFAULT_IMBALANCE_RATIO:g})")
    parser.add_argument("--label-noise", type=float, default=0.0,
                        help="fraction of annotated labels flipped to another emotion, in [0, 1) (default: 0)")
    parser.add_argument("--dfme-sheet", action="store_true",
                        help="also write OUT_DIR/dfme/DFME_data_coding.xlsx and DFME-style frame folders")
    parser.add_argument("--uncropped", type=_frame_size, default=None, metavar="WxH",
                        help="place each --size px face at a fixed per-subject position in WxH frames (even sides, "
                             "at least --size, at most 4096), like raw footage (crop it back with `microexp pack "
                             "--face-crop`); ground_truth.csv gets the true box")
    parser.add_argument("--workers", type=int, default=None,
                        help="rendering processes (default: min(2, CPU count)); results do not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT_DIR")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is shown only on a terminal anyway)")
    return parser


def _run_long(args: argparse.Namespace) -> int:
    given_options = (("--clips", args.clips is not None), ("--unlabeled", args.unlabeled is not None),
                     ("--dfme-sheet", args.dfme_sheet), ("--uncropped", args.uncropped is not None),
                     ("--label-noise", args.label_noise != 0.0),
                     ("--imbalance-ratio", args.imbalance_ratio is not None), ("--format", args.fmt != "mp4"))
    clip_only = [name for name, given in given_options if given]
    if clip_only:
        raise ConfigError(f"--long writes long mp4 recordings; {', '.join(clip_only)} only shape clip datasets")
    summary = generate_long_dataset(
        args.out_dir, preset=args.preset, videos=args.long,
        seconds=DEFAULT_LONG_SECONDS if args.seconds is None else args.seconds,
        fps=DEFAULT_LONG_FPS if args.fps is None else args.fps, size=args.size, seed=args.seed,
        workers=args.workers, progress=args.progress, overwrite=args.overwrite)
    print(summary.format())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.long is not None:
        return _run_long(args)
    if args.seconds is not None or args.fps is not None:
        raise ConfigError("--seconds and --fps shape --long recordings; clips take their frame rates from DFME's parts")
    unlabeled = args.unlabeled is not None
    if unlabeled and args.clips is not None:
        raise ConfigError(f"--clips {args.clips} and --unlabeled {args.unlabeled}: both give the number of clips; "
                          "pass --unlabeled N alone for an unlabeled pool")
    clips = args.unlabeled if unlabeled else (DEFAULT_CLIPS if args.clips is None else args.clips)
    summary = generate_dataset(
        args.out_dir,
        preset=args.preset,
        subjects=args.subjects,
        clips=clips,
        unlabeled=unlabeled,
        size=args.size,
        fmt=args.fmt,
        seed=args.seed,
        imbalance_ratio=args.imbalance_ratio,
        label_noise=args.label_noise,
        dfme_sheet=args.dfme_sheet,
        uncropped=args.uncropped,
        workers=args.workers,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    print(summary.format())
    return 0
