"""``microexp probe FEATURES --protocol loso|kfold|lodo --out DIR``: linear-probe evaluation of pooled features."""

from __future__ import annotations

import argparse

HELP = "linear-probe evaluation (logistic regression) of extracted features under a subject-independent protocol"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "probe",
        help=HELP,
        description="Fit StandardScaler + logistic regression on each fold's training clips of FEATURES (a folder "
        "of microexp extract-features) and predict its test clips once; folds are subject-independent (clips "
        "grouped by dataset and subject; loso, kfold or lodo). Writes DIR/predictions.csv and DIR/metrics.json "
        "(pooled and fold mean ± std of UF1, UAR and ACC, labelled; per dataset when there are several) and "
        "prints a short table. A class absent from a fold's training clips cannot be predicted there; its test "
        "clips count as errors and are listed in metrics.json (missing_classes).",
    )
    parser.add_argument("features", metavar="FEATURES", help="the --out folder of microexp extract-features")
    parser.add_argument("--protocol", default="loso", help="loso, kfold or lodo (default loso)")
    parser.add_argument("--folds", type=int, default=10, help="k of kfold (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-fold split and the classifier (default 0)")
    parser.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength (default 1.0)")
    parser.add_argument("--class-weight", default="balanced", help="balanced or none (default balanced)")
    parser.add_argument("--labels", default="checkpoint",
                        help="checkpoint (index.csv's label: the checkpoint's classes) or emotion (the emotion "
                        "names as classes); default checkpoint")
    parser.add_argument("--max-iter", type=int, default=1000, help="lbfgs iterations (default 1000)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for predictions.csv and metrics.json")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.probe import format_probe, probe, write_probe
    from microexp.errors import ConfigError
    from microexp.fileio import check_writable, dumps_json
    from microexp.inference.features import load_features

    if args.max_iter < 1:
        raise ConfigError(f"--max-iter {args.max_iter}: expected an integer >= 1")
    features = load_features(args.features)  # a bad folder is reported before --out is created
    check_writable(args.out)  # before fitting anything
    result = probe(features, protocol=args.protocol, folds=args.folds, seed=args.seed, C=args.C,
                   class_weight=args.class_weight, labels=args.labels, max_iter=args.max_iter)
    predictions, metrics = write_probe(result, args.out)
    print(dumps_json(result.metrics) if args.json else format_probe(result))
    if not args.json:
        print(f"wrote {predictions} and {metrics}")
    return 0
