"""``microexp pretrain``: masked-video pretraining of a recipe's transformer on unlabeled clips."""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pretrain",
        help="masked-video pretraining of a transformer on unlabeled clips (VideoMAE-style tube masking)",
        description="Pretrain the recipe's transformer (model.name: timesformer_* or videomae_*) by reconstructing "
        "hidden tubes of its input clips, through the recipe's own preprocessing (data.*). The clips come from "
        "pretrain.annotations (labels ignored; blank emotions allowed), or from data.annotations. Writes "
        "OUT/encoder.pt (or OUT/fold_XX/encoder.pt with --per-fold), which `microexp train` fine-tunes with "
        "--set model.pretrained=OUT. Re-running the same command resumes after the last completed epoch.",
        epilog="pretrain keys: pretrain.annotations, pretrain.format, pretrain.root, pretrain.mask_ratio, "
        "pretrain.target (pixels|difference), pretrain.target_pool, pretrain.decoder_dim, pretrain.decoder_depth, "
        "pretrain.decoder_heads, "
        "pretrain.epochs, pretrain.batch_size, pretrain.lr, pretrain.weight_decay, pretrain.warmup_epochs, "
        "pretrain.allow_test_subjects (read by train)",
    )
    parser.add_argument("--config", default=None, help="recipe YAML (the same one `microexp train` fine-tunes with)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set pretrain.epochs=5 (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--per-fold", action="store_true",
                        help="one encoder per outer fold of the recipe's cv protocol, each pretrained without that "
                        "fold's test subjects (the safe way to pretrain on the labelled table itself)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (the INFO log lines stay)")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.pretrain import run_pretrain

    from microexp.cli.launching import distributed_session

    config = load_config(args.config, args.overrides)
    with distributed_session(config.device) as ctx:  # torchrun: each encoder data-parallel over the ranks
        paths = run_pretrain(config, args.out, per_fold=args.per_fold, progress=False if args.no_progress else None,
                             recipe=args.config, ctx=ctx)
    if not ctx.is_main:
        return 0
    for path in paths:
        print(f"encoder: {path}")
    print(f"fine-tune with: microexp train --config {args.config or 'RECIPE'} --set model.pretrained={Path(args.out)} "
          "--out RUN")
    return 0
