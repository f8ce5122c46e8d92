"""``microexp ensemble RUN_A RUN_B ... --out E``: a fold-honest ensemble of runs that share their folds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "average (or weigh, on validation subjects) the per-fold test probabilities of runs that share their folds"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ensemble",
        help=HELP,
        description="Combine finished runs (microexp train directories) into one ensemble: fold f's prediction "
        "is the mixture of every member's fold-f test probabilities, so no member has seen the clips it votes on. "
        "Runs must share their folds (same table, protocol and seed): runs whose folds, classes or test clips "
        "differ are refused. --weights val picks each fold's convex weights by the negative log-likelihood on "
        "that fold's validation subjects (runs trained with cv.val_fraction > 0); the test subjects choose "
        "nothing. Writes OUT/predictions.csv, fold_XX/predictions.csv, folds.json, metrics.json (pooled and "
        "fold mean, as a run; microexp evaluate OUT recomputes it) and ensemble.json (members, weights).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (at least two)")
    parser.add_argument("--out", required=True, help="the ensemble's folder (new, or an earlier ensemble's)")
    parser.add_argument("--weights", default="uniform", choices=("uniform", "val"),
                        help="uniform mean, or per-fold weights fitted on validation subjects (default: uniform)")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.cli.train import format_results
    from microexp.engine.ensemble import build_ensemble
    from microexp.fileio import dumps_json

    metrics = build_ensemble(args.runs, args.out, weights=args.weights)
    if args.json:
        print(dumps_json(metrics))
        return 0
    record = json.loads((Path(args.out) / "ensemble.json").read_text(encoding="utf-8"))
    for member in record["members"]:
        print(f"member {member['run']}: pooled UF1 {member['uf1']:.3f}, UAR {member['uar']:.3f}")
    print(f"ensemble of {len(record['members'])} runs ({args.weights} weights):")
    print(format_results(metrics))
    print(f"outputs: {args.out}")
    return 0
