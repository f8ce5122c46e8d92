"""``microexp sweep``: nested Optuna studies over a recipe (one study per outer fold), then a final test.

Parses the arguments, sets up logging (also that of spawned worker processes, through the workers'
initializer) and prints; the search itself is :mod:`microexp.sweep`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from pathlib import Path
from typing import Any

from microexp.cli.launching import add_shard_arguments, check_shard_arguments, launch, slurm_overrides
from microexp.config import load_config, valid_keys
from microexp.errors import ConfigError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep",
        help="hyperparameter study (Optuna), nested per outer fold, with a final nested test",
        description="Search the keys of a space file with Optuna, nested per outer fold: fold f's study "
        "({study}-foldNN) trains on fold f's training subjects and scores on inner validation subjects carved "
        "from them; fold f's test subjects never reach its search. When every fold study has --trials finished "
        "trials, each fold's best configuration is retrained and tested once: the nested test metrics "
        "(DIR/final/). Writes DIR/best.yaml, DIR/fold_XX/best.yaml, DIR/trials.csv and DIR/plots/. Rerunning "
        "the same command resumes; several processes or machines may run it against one storage.",
        epilog="config keys: " + ", ".join(valid_keys()),
    )
    parser.add_argument("--config", default=None, help="base recipe YAML (defaults when omitted)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base recipe key before the search space applies (repeatable)")
    parser.add_argument("--space", required=True, help="search-space YAML (see recipes/sweeps/)")
    parser.add_argument("--trials", type=int, default=None,
                        help="finished trials wanted per outer fold study (COMPLETE + PRUNED); may be omitted "
                        "with --finalize to only finalize")
    parser.add_argument("--study", required=True, help="study name; fold f's study is NAME-foldNN")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: sqlite:///PATH (default DIR/study.db; PATH's folder must exist), "
                        "postgresql+psycopg2://USER@HOST:PORT/DB (psycopg2; a bare postgresql:// needs psycopg 3: "
                        "pip install 'psycopg[binary]'), or journal:///PATH.log")
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts")
    parser.add_argument("--metric", default="uf1", choices=("uf1", "uar", "acc"),
                        help="objective on inner validation subjects (default uf1)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random", "grid"),
                        help="seeded sampler (grid: categorical-only spaces) (default tpe)")
    parser.add_argument("--pruner", default="median", choices=("median", "halving", "none"),
                        help="pruner of trials by per-epoch inner values (default median)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--inner-folds", type=int, default=1,
                        help="1: one inner validation split (1/4 of the training subjects); k > 1: inner k-fold mean")
    parser.add_argument("--outer-folds", default=None, metavar="F,F,...",
                        help="search only these outer folds (a quick look: the final step then covers only them)")
    parser.add_argument("--finalize", action="store_true",
                        help="run the final step even if some fold studies are short of --trials")
    parser.add_argument("--no-finalize", action="store_true", help="never run the final step")
    parser.add_argument("--retry-failed", action="store_true",
                        help="enqueue the parameters of failed trials again (into free slots)")
    parser.add_argument("--fail-running", action="store_true",
                        help="mark RUNNING trials failed first (only when no worker is alive, e.g. after a crash "
                        "with journal storage; RDB storages detect dead workers by heartbeat)")
    parser.add_argument("--max-failures", type=int, default=5, help="a worker stops after this many failures in a row")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_shard_arguments(parser, cpu_workers=False,
                        folds_help="the final step: retrain only these outer folds (e.g. 0,3-5; "
                        "other processes may finalize the others at once; the nested test metrics are written by the "
                        "one that finishes last). With --launcher, each pending outer fold is finalized in its own "
                        "process (local: --gpus/--per-gpu, or --workers CPU processes)")
    return parser


def run(args: argparse.Namespace) -> int:
    from microexp.sweep.space import load_space
    from microexp.sweep.storage import default_storage_url
    from microexp.sweep.studies import SweepError, SweepSettings, prepare_studies
    from microexp.sweep.worker import run_workers

    if args.finalize and args.no_finalize:
        raise ConfigError("--finalize and --no-finalize exclude each other")
    if args.trials is None and not args.finalize:
        raise ConfigError("--trials N is required (or --finalize alone to finalize existing studies)")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected an integer >= 1")
    check_shard_arguments(args)
    if (args.folds is not None or args.launcher) and args.no_finalize:
        raise ConfigError("--folds and --launcher shard the final step: they exclude --no-finalize")
    if args.launcher == "local" and not args.gpus:
        args.launch_workers = args.workers  # the final step's CPU processes: the sweep's own --workers
    out = Path(args.out)
    base_raw = load_config(args.config, args.overrides).to_dict()  # --slurm-* stay out: the studies record this
    space = load_space(args.space)
    settings = SweepSettings(study=args.study, storage=args.storage or default_storage_url(out), out_dir=out,
                             trials=args.trials or 0, metric=args.metric, sampler=args.sampler, pruner=args.pruner,
                             seed=args.seed, inner_folds=args.inner_folds, outer_folds=_parse_folds(args.outer_folds),
                             timeout=args.timeout, max_failures=args.max_failures)
    _quiet_logs(epoch_logs=bool(args.verbose))
    _, folds, studies = prepare_studies(settings, base_raw, space, retry=args.retry_failed,
                                        fail_stale=args.fail_running)
    progress = False if args.no_progress else None
    started = time.monotonic()
    numbers = [f.fold for f in folds]
    failed: list[str] = []
    if settings.trials > 0:
        initializer = functools.partial(_worker_logging, verbosity=logging.getLogger().level,
                                        epoch_logs=bool(args.verbose))
        try:
            failed = run_workers(settings, base_raw, space, workers=args.workers, studies=studies, progress=progress,
                                 initializer=initializer)
        except SweepError:
            # e.g. --max-failures reached: still write trials.csv/best.yaml of what ran, no final step, then fail
            _report(settings, base_raw, space, numbers, finalize=False, no_finalize=True, progress=progress,
                    seconds=time.monotonic() - started)
            raise
    if failed:
        _report(settings, base_raw, space, numbers, finalize=False, no_finalize=True, progress=progress,
                seconds=time.monotonic() - started)
        raise SweepError(f"worker(s) {', '.join(failed)} stopped with an error (see above); the studies keep their "
                         "trials and the final step was not run; fix the cause and rerun the same command")
    return _report(settings, base_raw, space, numbers, finalize=args.finalize,
                   no_finalize=args.no_finalize, progress=progress, seconds=time.monotonic() - started, args=args)


def _report(settings: Any, base_raw: dict, space: Any, folds: list[int], *, finalize: bool, no_finalize: bool,
            progress: bool | None, seconds: float, args: argparse.Namespace | None = None) -> int:
    """Write the sweep's outputs, print where each fold study stands, and run the final step when due."""
    from microexp.cli.train import format_results
    from microexp.sweep.finalize import ESTIMATE_LABEL
    from microexp.sweep.finalize import finalize as run_final
    from microexp.sweep.report import write_report

    report = write_report(settings, space, folds)
    metric = settings.metric
    print(f"sweep {settings.study}: {settings.trials} trials per outer fold, {len(folds)} fold(s), "
          f"objective inner validation {metric} ({time.strftime('%H:%M:%S', time.gmtime(seconds))} wall)")
    for status in report.folds:
        best = status.best
        top = f", best inner {metric} {best.value:.4f} (trial {best.number})" if best is not None else ""
        print(f"  fold {status.fold}: {status.finished}/{report.target} finished ({status.complete} complete, "
              f"{status.pruned} pruned, {status.failed} failed, {status.running} running){top}")
    overall = report.overall
    if overall is not None:
        print(f"best.yaml: fold {overall.fold} trial {overall.number}, inner validation {metric} "
              f"{overall.value:.4f} (the best of many trials: optimistic; the honest estimate is the nested test "
              "metrics)")
    print(f"outputs: {report.out_dir} (trials.csv, best.yaml, fold_XX/best.yaml, plots/)")
    if no_finalize or not (finalize or report.ready):
        if not no_finalize:
            print("final step not run yet: some fold studies are short of --trials (rerun to continue, or --finalize)")
        return 0
    if report.unfinished:
        print(f"note: {report.unfinished} fold study(ies) are short of --trials; finalizing with the trials they have")
    only = None
    if args is not None and args.folds is not None:
        from microexp.splits import parse_fold_selection

        only = parse_fold_selection(args.folds)
    if args is not None and args.launcher:
        units = _final_units(args, settings, only if only is not None else folds)
        slurm = load_config(args.config, [*args.overrides, *slurm_overrides(args)]).slurm
        launch(units, args, slurm=slurm, folder=Path(settings.out_dir) / "final" / "submitit",
               name=f"microexp-{settings.study}-final")
        only = []  # the units have finalized every fold: this process only merges
    result = run_final(settings, base_raw, space=space, progress=progress, only_folds=only)
    if result.metrics is None:
        print(f"final step: outer fold(s) {','.join(map(str, result.missing))} are not finalized yet (other shards); "
              "the nested test metrics are written by the shard that finishes last")
        return 0
    scope = "all outer folds" if result.complete else (
        f"outer folds {','.join(map(str, result.folds))} of {result.total_folds} only (partial: not a full "
        "cross-validation estimate)")
    print(f"{ESTIMATE_LABEL}, {scope}:")
    print(format_results(result.metrics))
    print(f"final: {result.out_dir}")
    return 0


def _final_units(args: argparse.Namespace, settings: Any, folds: list[int]) -> list[Any]:
    """One ``microexp sweep ... --finalize --folds F`` per outer fold (no new trials), for a launcher."""
    from microexp.launch import Unit

    base = ["sweep", "--space", str(args.space), "--study", settings.study, "--storage", settings.storage,
            "--out", str(settings.out_dir), "--metric", settings.metric, "--inner-folds", str(settings.inner_folds),
            "--finalize", "--no-progress"]
    base += ["--config", str(args.config)] if args.config else []
    base += [part for item in args.overrides for part in ("--set", item)]
    base += ["--outer-folds", args.outer_folds] if args.outer_folds else []
    # no device override: the fold studies record the base recipe whole (device included), and a recipe's
    # device auto finds the one GPU CUDA_VISIBLE_DEVICES leaves visible
    logs = Path(settings.out_dir) / "final" / "logs"
    return [Unit(f"final fold_{f:02d}", tuple(base + ["--folds", str(f)]), logs / f"fold_{f:02d}.log") for f in folds]


def _worker_logging(index: int, *, verbosity: int, epoch_logs: bool) -> None:
    """Logging of a spawned worker process (its ``initializer``): this command's level, lines tagged by worker."""
    logging.basicConfig(level=verbosity or logging.INFO, format=f"%(levelname)s worker {index}: %(message)s", force=True)
    _quiet_logs(epoch_logs=epoch_logs)


def _quiet_logs(*, epoch_logs: bool) -> None:
    """Optuna's per-trial lines off (microexp logs one line per trial); per-epoch lines only with -v."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not epoch_logs:  # per-epoch lines of every trial drown the one line per trial; -v brings them back
        logging.getLogger("microexp.engine.experiment").setLevel(logging.WARNING)


def _parse_folds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        folds = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ConfigError(f"--outer-folds {text!r}: expected comma-separated fold numbers, e.g. 0,2") from None
    if not folds:
        raise ConfigError(f"--outer-folds {text!r}: expected at least one fold number")
    return folds
