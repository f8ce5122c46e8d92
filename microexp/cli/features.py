"""``microexp extract-features --checkpoint CKPT TABLE --out FEATURES``: pooled features of every clip, resumable."""

from __future__ import annotations

import argparse
import sys

HELP = "extract pooled features of every clip of a clip table with a checkpoint (batched, resumable)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract-features",
        help=HELP,
        description="Run every clip of TABLE through the checkpoint's evaluation preprocessing (no augmentation) "
        "and the model's pooled features (forward_head(forward_features(x), pre_logits=True)); write FEATURES/"
        "features.npy (float32, N x D), index.csv (clip, subject, dataset, emotion, label: the checkpoint's class "
        "index through its class map, -1 outside its classes), failures.csv and features.json. Shards of "
        "--shard-size clips are written atomically: an interrupted run resumes with the same command; a resume "
        "with another checkpoint, table or settings is refused. A clip that cannot be read is reported and "
        "listed; the others are still extracted (exit code 2 when any failed).",
    )
    parser.add_argument("table", metavar="TABLE", help="annotation file (our CSV or an official sheet)")
    parser.add_argument("--checkpoint", required=True, help="a model.pt from microexp train (not an export)")
    parser.add_argument("--out", required=True, metavar="FEATURES", help="output folder (resumed when unfinished)")
    parser.add_argument("--format", default="auto", help="annotation format (default auto)")
    parser.add_argument("--root", default=None, help="folder the clip paths are relative to (default: the table's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model call (default 8)")
    parser.add_argument("--shard-size", type=int, default=256,
                        help="clips per shard, the unit of resuming (default 256; a resume needs the same)")
    parser.add_argument("--face-crop", action="store_true",
                        help="detect and crop the face first (default off: the clips are read as training read them)")
    parser.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"), help="video decoder")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="compute at most N new shards, then stop (run again to continue)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.inference.features import describe, extract_features

    result = extract_features(args.checkpoint, args.table, args.out, format=args.format, root=args.root,
                              device=args.device, batch_size=args.batch_size, shard_size=args.shard_size,
                              face_crop=args.face_crop, backend=args.backend,
                              progress=False if args.no_progress else None, max_shards=args.max_shards)
    print(describe(result))
    for clip, reason in result.failures:
        print(f"microexp extract-features: error: {clip}: {reason}", file=sys.stderr)
    if result.failures:
        total = result.num_clips + len(result.failures)
        print(f"microexp extract-features: {len(result.failures)} of {total} clip(s) failed", file=sys.stderr)
        return 2
    return 0
