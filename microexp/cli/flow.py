"""``microexp flow``: precompute the optical-flow cache of a dataset, or (``--apex``) write shareable apex flows."""

from __future__ import annotations

import argparse

from microexp.data.annotations import FORMATS, load_clip_table
from microexp.data.cache import ClipCache
from microexp.data.flow import FLOW_METHODS, REFERENCES, FlowPrecomputeSummary, precompute_flow
from microexp.data.sampling import STRATEGIES, SamplingSpec
from microexp.data.video import BACKENDS
from microexp.errors import ConfigError

#: failed clips listed in the summary (the rest are counted)
_SHOWN_FAILURES = 20


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "flow",
        help="precompute the optical-flow cache of a dataset",
        description=(
            "Sample each clip's frames (deterministic, evaluation mode), resize them and compute their "
            "optical flow into the cache folder. Clips already cached are skipped, so an interrupted run "
            "resumes where it stopped. With --apex --out DIR: compute each clip's onset->apex flow (u, v, "
            "strain) and write it as DIR/flows/CLIP.npy (float, pixels) and DIR/flows/CLIP.png (8-bit, "
            "R, G, B = u, v, strain min-max scaled per image: the MEGC composite convention), plus "
            "DIR/annotations.csv and DIR/annotations_npy.csv pointing at them (flow_path column, no frame "
            "paths: shareable without the frames). Exits 1 when some clips failed."
        ),
    )
    parser.add_argument("annotations", help="clip table CSV or official annotation sheet")
    parser.add_argument("--format", default="auto", choices=list(FORMATS), help="annotation format (default: auto)")
    parser.add_argument("--root", default=None, help="folder the clip paths are relative to")
    parser.add_argument("--cache-dir", default=None, help="cache folder (shared with training); required without --apex")
    parser.add_argument("--apex", action="store_true",
                        help="write one onset->apex flow per clip as files under --out (see above)")
    parser.add_argument("--out", default=None, metavar="DIR", help="with --apex: the output folder")
    parser.add_argument("--compute-size", type=int, default=128, metavar="PX",
                        help="with --apex: frame side the flow is computed on (default: 128)")
    parser.add_argument("--method", default="tvl1", choices=list(FLOW_METHODS), help="flow estimator (default: tvl1)")
    parser.add_argument("--strategy", default="uniform", choices=list(STRATEGIES), help="sampling strategy")
    parser.add_argument("--frames", type=int, default=8, metavar="T", help="frames per clip (default: 8)")
    parser.add_argument("--stride", type=int, default=1, help="frame stride for dense/apex_centered sampling")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="frame side before the flow (default: 112); with --apex the side of the written "
                             "flows (default: 28)")
    parser.add_argument("--reference", default="onset", choices=list(REFERENCES),
                        help="flow of each frame relative to the first sampled frame, or to the previous one")
    parser.add_argument("--strain", action="store_true", help="add optical strain as a third channel")
    parser.add_argument("--backend", default="auto", choices=[b for b in BACKENDS if b != "folder"],
                        help="video backend for video files (frame folders are read as folders)")
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="processes (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.apex:
        return _run_apex(args)
    if args.cache_dir is None:
        raise ConfigError("--cache-dir is required (or --apex --out DIR to write apex flow files)")
    if args.out is not None:
        raise ConfigError("--out is used with --apex only; the flow cache goes to --cache-dir")
    args.size = 112 if args.size is None else args.size
    result = load_clip_table(args.annotations, format=args.format, root=args.root)
    table = result.resolve()  # logs one warning per clip dropped for annotation errors
    sampling = SamplingSpec(strategy=args.strategy, num_frames=args.frames, stride=args.stride)
    summary = precompute_flow(
        table,
        cache=ClipCache(args.cache_dir),
        sampling=sampling,
        method=args.method,
        reference=args.reference,
        strain=args.strain,
        size=args.size,
        backend=args.backend,
        workers=args.workers,
        progress=False if args.no_progress else None,
    )
    print(format_summary(summary, method=args.method))
    if len(table) < len(result.table):
        print(f"  {len(result.table) - len(table)} clip(s) skipped for annotation errors (see the warnings above)")
    return 1 if summary.failed else 0


def _run_apex(args: argparse.Namespace) -> int:
    from microexp.data.apex_flow_export import export_apex_flows

    if args.out is None:
        raise ConfigError("--apex needs --out DIR: the folder the flow files and their clip tables are written to")
    result = load_clip_table(args.annotations, format=args.format, root=args.root)
    table = result.resolve()
    summary = export_apex_flows(table, args.out, method=args.method, compute_size=args.compute_size,
                                size=28 if args.size is None else args.size, backend=args.backend,
                                workers=args.workers, progress=False if args.no_progress else None)
    print(f"apex flow ({args.method}): {summary.total} clips: {summary.written} written, {summary.kept} kept from an "
          f"earlier run, {len(summary.failed)} failed in {summary.seconds:.1f} s")
    for clip, reason in summary.failed[:_SHOWN_FAILURES]:
        print(f"  failed {clip}: {reason}")
    if len(summary.failed) > _SHOWN_FAILURES:
        print(f"  ... and {len(summary.failed) - _SHOWN_FAILURES} more")
    if len(table) < len(result.table):
        print(f"  {len(result.table) - len(table)} clip(s) skipped for annotation errors (see the warnings above)")
    print("  tables: " + ", ".join(str(p) for p in summary.tables))
    return 1 if summary.failed else 0


def format_summary(summary: FlowPrecomputeSummary, *, method: str) -> str:
    """A few lines: clips computed, already cached, failed (with reasons) and the time taken."""
    lines = [
        f"flow ({method}): {summary.total} clips: {summary.computed} computed, {summary.cached} already cached, "
        f"{len(summary.failed)} failed in {summary.seconds:.1f} s"
    ]
    for clip, reason in summary.failed[:_SHOWN_FAILURES]:
        lines.append(f"  failed {clip}: {reason}")
    if len(summary.failed) > _SHOWN_FAILURES:
        lines.append(f"  ... and {len(summary.failed) - _SHOWN_FAILURES} more")
    return "\n".join(lines)
