"""``microexp evaluate RUN_DIR``: recompute metrics.json and plots of a run from its predictions.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.cli.train import format_results
from microexp.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="recompute metrics.json and plots of a run from its predictions.csv",
        description="Recompute metrics.json (pooled and fold-mean, labelled; pooled per source dataset when "
        "predictions.csv's dataset column names more than one) and the plots from RUN_DIR/predictions.csv, without "
        "retraining. predictions.csv is first checked against RUN_DIR/folds.json (every "
        "test clip of every fold present exactly once); nothing is written when it does not match. While fold "
        "shards are still running, it merges the complete folds into metrics_partial.json (labelled partial, "
        "naming the missing folds) and leaves metrics.json alone.",
    )
    parser.add_argument("run_dir", help="a directory written by microexp train")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.experiment import fold_status, merge_run, read_run_predictions, shared_files, write_metrics
    from microexp.engine.results import PARTIAL_METRICS, write_partial_metrics
    from microexp.fileio import dumps_json
    from microexp.splits import format_fold_selection

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (is it a directory written by microexp train?)")
    config = load_config(run_dir / "config.yaml")
    if (run_dir / "folds.json").is_file() and any(run_dir.glob("fold_*/predictions.csv")):
        with shared_files(run_dir):  # a shard finishing meanwhile merges before or after, never in between
            folds, missing = fold_status(run_dir)
            metrics = write_partial_metrics(run_dir, folds, missing, protocol=config.cv.protocol) if missing else None
        if missing:  # shards still running (or failed): the complete folds only, never as metrics.json
            print(dumps_json(metrics) if args.json else
                  f"PARTIAL: folds {format_fold_selection(metrics['folds_complete'])} of {len(folds)} are complete; "
                  f"missing {format_fold_selection(missing)} (not counted below; metrics.json is written when every "
                  f"fold is done)\n" + format_results(metrics))
            print(f"partial metrics: {run_dir / PARTIAL_METRICS}")
            return 0
        if not (run_dir / "predictions.csv").is_file():  # every shard done, none merged (e.g. a --no-wait launch)
            merge_run(run_dir)
    predictions, classes = read_run_predictions(run_dir)
    metrics = write_metrics(run_dir, predictions, classes, protocol=config.cv.protocol)
    print(dumps_json(metrics) if args.json else format_results(metrics))
    return 0
