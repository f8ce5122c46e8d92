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
        "test clip of every fold present exactly once); nothing is written when it does not match.",
    )
    parser.add_argument("run_dir", help="a directory written by microexp train")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.experiment import read_run_predictions, write_metrics
    from microexp.fileio import dumps_json

    run_dir = Path(args.run_dir)
    predictions, classes = read_run_predictions(run_dir)
    config = load_config(run_dir / "config.yaml")
    metrics = write_metrics(run_dir, predictions, classes, protocol=config.cv.protocol)
    print(dumps_json(metrics) if args.json else format_results(metrics))
    return 0
