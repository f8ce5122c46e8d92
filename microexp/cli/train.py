"""``microexp train``: a cross-validation experiment from a recipe, and the results table it prints.

:func:`format_results` is shared with ``microexp evaluate`` and ``microexp sweep``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.config import load_config, valid_keys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train and test a model under a subject-independent protocol",
        description="Run a cross-validation experiment (fresh model per fold, test subjects evaluated once) and "
        "write config.yaml, folds.json, predictions.csv, metrics.json and plots into --out. Re-running the same "
        "command resumes an interrupted run. The checks (clip table, folds, data.num_frames, device, writable "
        "folders) run before --out is touched, and --out is locked while a run trains into it. --final then trains "
        "one model on every subject for deployment (RUN/final/model.pt).",
        epilog="config keys: " + ", ".join(valid_keys()),
    )
    parser.add_argument("--config", default=None, help="recipe YAML (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (the INFO log lines stay; -q hides them)")
    final = parser.add_mutually_exclusive_group()
    final.add_argument("--final", action="store_true",
                       help="after the cross-validation folds, train one model on every subject with the recipe's "
                       "fixed schedule (last epoch) and write RUN/final/model.pt (resumable)")
    final.add_argument("--final-only", action="store_true",
                       help="train only the final all-subjects model, no cross-validation (for a recipe whose "
                       "protocol results you already have); RUN/final/model.pt")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.experiment import FINAL_DIR, run_experiment

    config = load_config(args.config, args.overrides)
    metrics = run_experiment(config, args.out, progress=False if args.no_progress else None,
                             final=args.final or args.final_only, cross_validation=not args.final_only,
                             recipe=args.config)
    if metrics is not None:
        print(format_results(metrics))
    if args.final or args.final_only:
        print(f"final model (all subjects): {Path(args.out) / FINAL_DIR / 'model.pt'}")
    print(f"outputs: {Path(args.out)}")
    return 0


def format_results(metrics: dict) -> str:
    """The results table: pooled (then each source dataset's share, for mixed tables), fold mean ± std, recall."""
    keys = ("acc", "uf1", "uar")
    rows = [("pooled (all folds)", metrics["pooled"])]
    rows += [(f"  {name} (pooled, {values['clips']} clips)", values["pooled"])
             for name, values in metrics.get("per_dataset", {}).items()]
    rows += [("fold mean", metrics["fold_mean"]), ("fold std (ddof=0)", metrics["fold_std"])]
    width = max(22, *(len(label) + 2 for label, _ in rows))
    lines = [f"protocol {metrics['protocol']}, {metrics['num_folds']} folds, {metrics['num_samples']} test clips",
             f"{'':<{width}}{'ACC':>8}{'UF1':>8}{'UAR':>8}"]
    lines += [f"{label:<{width}}" + "".join(f"{values[k]:>8.3f}" for k in keys) for label, values in rows]
    lines.append("per-class recall (pooled):")
    for name, values in metrics["per_class"].items():
        recall = values["recall"]
        lines.append(f"  {name:<14}{'n/a' if recall is None else format(recall, '.3f'):>8}")
    return "\n".join(lines)
