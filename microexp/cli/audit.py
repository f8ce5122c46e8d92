"""``microexp audit``: honest versus oracle (test-selected) epoch, side by side, for a recipe.

The work is :func:`microexp.engine.audit.run_audit`; this module parses the arguments and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.config import load_config, valid_keys

#: the test scores ``--oracle-metric`` accepts (the engine's ORACLE_METRICS; spelled here so --help needs no torch)
ORACLE_METRICS = ("acc", "uf1", "uar")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "audit",
        help="leakage audit: the honest estimate beside the oracle one that picks each fold's epoch on test subjects",
        description="Train the recipe's folds with its schedule exactly as microexp train does, and after every epoch "
        "also score the fold's test subjects (for the audit only). Reports side by side the honest estimate (what "
        "train reports: last epoch, or the choice on validation subjects) and the oracle estimate (per fold the "
        "epoch with the best test score, as several public repositories keep), pooled over folds, with the gap, "
        "per dataset for mixed tables, and each fold's chosen epochs. The oracle figure is NOT a valid estimate. "
        "Writes audit.json, audit.md, honest_predictions.csv, oracle_predictions.csv and fold_XX/"
        "epoch_predictions.csv into --out, its own directory (a microexp train run directory is refused). "
        "Re-running the same command resumes an interrupted audit.",
        epilog="config keys: " + ", ".join(valid_keys()),
    )
    parser.add_argument("--config", default=None, help="recipe YAML (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--out", required=True, help="the audit's directory (not a microexp train run)")
    parser.add_argument("--oracle-metric", choices=ORACLE_METRICS, default="acc",
                        help="the test score the oracle picks each fold's epoch by (default acc, as the inflated "
                        "repositories keep)")
    parser.add_argument("--json", action="store_true", help="print audit.json instead of the table")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (the INFO log lines stay; -q hides them)")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.audit import format_audit, run_audit
    from microexp.fileio import dumps_json

    config = load_config(args.config, args.overrides)
    report = run_audit(config, args.out, oracle_metric=args.oracle_metric,
                       progress=False if args.no_progress else None, recipe=args.config)
    print(dumps_json(report) if args.json else format_audit(report))
    if not args.json:
        print(f"outputs: {Path(args.out)} (audit.json, audit.md)")
    return 0
