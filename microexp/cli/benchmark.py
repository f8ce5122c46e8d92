"""``microexp benchmark``: how fast loading, the input pipeline, training and prediction are on this machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from microexp.benchmark import SECTIONS

    parser = subparsers.add_parser(
        "benchmark",
        help="measure key-frame loading, pipeline balance, flow cache, training throughput and latency",
        description="Measure on this machine, in one run: key-frame loading (both pack modes, lossless H.264 and "
        "mjpeg, with decord, PyAV and torchcodec when installed, against the PNG folder and a JPEG folder; a naive "
        "PyAV decode; the preprocessed cache; 128x128 and 480x640), the data-wait fraction of the demo "
        "training run with a warm cache, the flow cache (epoch 1 vs 2), training clips/s per model family "
        "against a bare PyTorch loop, and prediction latency. Inputs are generated in a temporary folder. "
        "Reports medians over repeats and checks each against its target.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true", help="a smoke test: fewer repeats and smaller inputs (about 2 minutes); the report says so, and "
                        "targets its sizes cannot measure (pipeline balance, flow cache, throughput) are 'not "
                        "evaluated' instead of met or missed")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--device", default="auto",
                        help="auto (CPU, plus CUDA when available), cpu, or cuda/cuda:N (default: auto)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--work-dir", default=None, help="folder for the temporary inputs (default: system temp)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.benchmark import format_report, run_benchmark
    from microexp.fileio import dumps_json, write_text

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if args.out:
        _check_writable(args.out)  # before minutes of measuring, not after
    report = run_benchmark(quick=args.quick, device=args.device, sections=sections,
                           progress=False if args.no_progress else None, work_dir=args.work_dir)
    text = dumps_json(report)  # strict JSON: a figure that could not be computed (NaN) is null
    if args.out:
        write_text(args.out, text + "\n")
    print(text if args.json else format_report(report))
    if args.out and not args.json:
        print(f"report: {args.out}")
    return 0



def _check_writable(path: str) -> None:
    """Raise a one-line :class:`microexp.fileio.OutputError` now when ``path`` cannot be written."""
    from pathlib import Path

    from microexp.fileio import check_writable

    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"--out {target}: is a folder; give a file name such as {target / 'benchmark.json'}")
    check_writable(target.parent, name=target)
