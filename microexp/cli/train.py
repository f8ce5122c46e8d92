"""``microexp train``: a cross-validation experiment from a recipe, and the results table it prints.

:func:`format_results` is shared with ``microexp evaluate`` and ``microexp sweep``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from microexp.cli.launching import (add_shard_arguments, check_shard_arguments, distributed_session, launch,
                                    slurm_overrides, under_torchrun)
from microexp.config import load_config, valid_keys
from microexp.errors import ConfigError


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
    add_shard_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.engine.experiment import FINAL_DIR, prepare_shards, run_experiment
    from microexp.splits import format_fold_selection, parse_fold_selection

    check_shard_arguments(args)
    if args.launcher and under_torchrun():
        raise ConfigError("--launcher under torchrun: torchrun already started the processes; use one or the other")
    only = parse_fold_selection(args.folds) if args.folds is not None else None
    if only is not None and args.final_only:
        raise ConfigError("--folds and --final-only exclude each other (--final-only trains no fold)")
    config = load_config(args.config, [*args.overrides, *slurm_overrides(args)])
    out = Path(args.out)
    final, cross_validation = args.final or args.final_only, not args.final_only
    if args.launcher is None:
        with distributed_session(config.device) as ctx:  # torchrun: every fold data-parallel over the ranks
            metrics = run_experiment(config, out, progress=False if args.no_progress else None, final=final,
                                     cross_validation=cross_validation, recipe=args.config, only_folds=only, ctx=ctx)
        if not ctx.is_main:
            return 0
    else:
        from microexp.engine.experiment import merge_run
        from microexp.launch import fold_units

        pending, final_pending = prepare_shards(config, out, final=final, cross_validation=cross_validation,
                                                recipe=args.config, only_folds=only)
        units = fold_units(out, pending, final=final_pending, gpus=bool(args.gpus))
        results = launch(units, args, slurm=config.slurm, folder=out / "submitit", name=f"microexp-{out.name}")
        if args.no_wait and results:
            print(f"submitted {len(results)} task(s): {', '.join(r.unit.name for r in results)} "
                  f"({results[0].last_line}); their logs go to {out / 'logs'}; when they are done run: "
                  f"microexp evaluate {out}")
            return 0
        metrics = merge_run(out) if cross_validation else None
    if metrics is not None:
        print(format_results(metrics))
    elif cross_validation:
        from microexp.engine.experiment import fold_status

        folds, missing = fold_status(out)
        print(f"folds {format_fold_selection(sorted({f.fold for f in folds} - set(missing)))} of {len(folds)} are "
              f"complete; waiting for fold(s) {format_fold_selection(missing)} (other shards): metrics.json is "
              f"written when the last one finishes, and microexp evaluate {out} merges what is complete now")
    if final:
        print(f"final model (all subjects): {out / FINAL_DIR / 'model.pt'}")
    print(f"outputs: {out}")
    return 0


def format_results(metrics: dict) -> str:
    """The results table: pooled (then each source dataset's share, for mixed tables), fold mean ± std, recall."""
    if metrics.get("task") == "au":  # AU detection alone: no emotion rows
        lines = [f"protocol {metrics['protocol']}, {metrics['num_folds']} folds, {metrics['num_samples']} test clips, "
                 f"AU detection alone{'' if metrics.get('complete', True) else ' (complete folds only)'}"]
        return "\n".join(lines + format_au_results(metrics["aus"]))
    keys = ("acc", "uf1", "uar")
    rows = [("pooled (all folds)" if metrics.get("complete", True) else "pooled (complete folds)", metrics["pooled"])]
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
    if "aus" in metrics:
        lines += format_au_results(metrics["aus"])
    return "\n".join(lines)


def format_au_results(aus: dict) -> list[str]:
    """The AU rows of the results table: mean AU F1 pooled and fold mean ± std, then each AU's F1."""
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    mean, spread = aus["fold_mean"]["mean_f1"], aus["fold_std"]["mean_f1"]
    lines = [f"action units (detected at p >= {aus['threshold']:g}): mean AU F1 pooled "
             f"{number(aus['pooled']['mean_f1'])}, fold mean {number(mean)} ± {number(spread)}",
             "per-AU F1 (pooled, clips with the AU):"]
    lines += [f"  {name:<14}{number(values['f1']):>8}{values['support']:>6}"
              for name, values in aus["pooled"]["per_au"].items()]
    return lines
