"""``microexp study NAME``: run (or resume) one of the DFME studies and print its table.

NAME is one of :data:`STUDIES` (the builders are :data:`microexp.studies.catalog.STUDIES`). The study's
log is one timestamped line per finished cell: the engine's per-epoch lines are hidden unless ``-v``.
``recipes/dfme_*.py`` are shortcuts that call this command with ``--recipes-dir`` set to their folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import shlex
import sys
from pathlib import Path

from microexp.cli.launching import add_shard_arguments, check_shard_arguments, launch, slurm_overrides
from microexp.errors import ConfigError
from microexp.studies.options import DEFAULT_DATA, QUICK_OVERRIDES, StudyOptions


#: study name -> what it compares (for ``--help``); the names are those of
#: :data:`microexp.studies.catalog.STUDIES` (``tests/test_study_cli.py`` checks).
STUDIES: dict[str, str] = {
    "dfme_models": "every model family (two-stream, 3D CNN, TSM, video transformer, single\n"
                   "frame) under one protocol",
    "dfme_sampling": "every key-frame sampling strategy at 8 and 16 frames, with and without\n"
                     "frame-rate normalisation (data.reference_fps), for one model",
    "dfme_imbalance": "every sampler (with cross-entropy) and every loss (with plain shuffling)\n"
                      "against ce + none, over 3 seeds, with per-class recall, for one model",
    "dfme_au": "emotion only vs + AU head vs + AU graph (data.aus, model.au_head), over\n"
               "3 seeds, with mean AU F1, for one model",
    "dfme_noise": "label noise 0/10/20/30 % (synthetic datasets it generates) x no method,\n"
                  "EAC, re-labelling, confidence weighting; UF1 against the true labels",
    "dfme_leaderboard": "every registered model (--models, --cpu-friendly) x frame size (--sizes)\n"
                        "x balance (none vs class-balanced sampling), ranked by pooled UF1, with\n"
                        "parameters and training clips/s",
    "dfme_transfer": "two synthetic datasets it generates (easy, hard): within each (k-fold),\n"
                     "across (train on one, test on the other) and k-fold over both, for one model",
}
#: the studies that take --models, --sizes and --cpu-friendly
LEADERBOARD_STUDIES = ("dfme_leaderboard",)
DEFAULT_RECIPES_DIR = Path("recipes")
INTERRUPTED_EXIT = 130


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    indent = "\n" + " " * 20
    names = "\n".join(f"  {name:<18}{text.replace(chr(10), indent)}" for name, text in STUDIES.items())
    parser = subparsers.add_parser(
        "study",
        help="run or resume a DFME study (model families, sampling, imbalance, AUs, label noise, leaderboard, "
        "transfer) and print its table",
        usage="%(prog)s NAME [options]",
        description="Run a grid of cross-validation experiments (one microexp train run per cell) and write its\n"
        f"tables and plots. NAME is one of:\n{names}",
        epilog="Outputs in --out: cells/<cell>/ (one microexp train run each), the table as .md and .csv,\n"
        "cells.csv, plots, summary.md and study.json. Run from the repository root (the recipes are read\n"
        "from --recipes-dir). The scripts recipes/dfme_*.py run this command, e.g.\n"
        "python recipes/dfme_models.py --quick is microexp study dfme_models --quick.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help=f"the study: {', '.join(STUDIES)}")
    parser.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="clip table or official annotation sheet (default: the synthetic benchmark "
                        f"{DEFAULT_DATA}, generated when missing)")
    parser.add_argument("--format", default="auto", help="annotation format of --data (default: auto)")
    parser.add_argument("--root", default=None, help="dataset folder for official sheets (data.root)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the recipe's)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: a CPU-sized run that checks the study end to end "
                        f"({' '.join(QUICK_OVERRIDES)}, fewer cells or seeds); its outputs are labelled as such and "
                        "its numbers are not results")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="study directory (default: runs/studies/NAME)")
    parser.add_argument("--resume", action="store_true",
                        help="keep finished cells and continue unfinished ones (the same options are required)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every cell, e.g. --set train.epochs=20 (repeatable)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="number of seeds 0..N-1 per cell (default: 1; dfme_imbalance: 3, or 1 with --quick)")
    parser.add_argument("--recipe", dest="recipes", action="append", default=[], metavar="RECIPE",
                        help="dfme_sampling, dfme_imbalance, dfme_au, dfme_noise, dfme_transfer: the model's recipe "
                        "(default: the flow-tiny recipe); dfme_models: FAMILY=PATH replaces a family's recipe "
                        "(two_stream, 3dcnn, tsm, transformer, frame), repeatable; dfme_leaderboard takes none")
    parser.add_argument("--cells", action="append", default=[], metavar="GLOB",
                        help="run only the cells whose name matches GLOB (shell-style, e.g. 'none+ce_*'; "
                        "repeatable); the tables then cover those cells")
    parser.add_argument("--models", action="append", default=[], metavar="GLOB",
                        help="dfme_leaderboard: only the registered models matching GLOB (e.g. 'tsm_*'; repeatable; "
                        "default: every model, the CPU-friendly ones with --quick; see microexp models)")
    parser.add_argument("--cpu-friendly", action="store_true",
                        help="dfme_leaderboard: only the models the registry marks CPU-friendly")
    parser.add_argument("--sizes", default=None, metavar="LIST",
                        help="dfme_leaderboard: frame sizes of the resolution axis, e.g. 64,112,160 (default: 112; "
                        "32 with --quick)")
    parser.add_argument("--recipes-dir", type=Path, default=None, metavar="DIR",
                        help=f"the folder holding the studies' recipes (default: {DEFAULT_RECIPES_DIR}/ of the working "
                        "directory)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar over cells (shown only on a terminal anyway)")
    # -q here as well as before the command: the recipes/dfme_*.py scripts always took it after
    parser.add_argument("-q", "--quiet", dest="study_quiet", action="store_true", help="only warnings and errors")
    add_shard_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    check_shard_arguments(args)
    if args.no_wait:
        raise ConfigError("--no-wait: a study waits for its cells to write its tables; use it with microexp train")
    options = study_options(args)
    configure_study_logging(verbose=args.verbose, quiet=args.quiet or args.study_quiet)
    from microexp.studies.catalog import STUDIES as BUILDERS
    from microexp.studies.grid import IncompleteGrid
    from microexp.studies.study import run_study

    def launcher(units: list, slurm: object) -> None:
        if args.gpus:  # each unit sees one GPU: cuda, whatever device the cell's recipe named
            units = [dataclasses.replace(u, argv=(*u.argv, "--set", "device=cuda")) for u in units]
        launch(units, args, slurm=slurm, folder=options.out / "submitit", name=f"microexp-{name}")

    try:
        study = BUILDERS[name](options, args.recipes_dir or DEFAULT_RECIPES_DIR)
        report = run_study(study, options, launcher=launcher if args.launcher else None)
    except KeyboardInterrupt:
        print(f"microexp study {name}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return INTERRUPTED_EXIT
    except IncompleteGrid as exc:
        print(f"microexp study {name}: this shard is done; {exc}")
        return 0
    print(report.markdown)
    print(f"outputs: {options.out}" + os.linesep + "".join(f"  {p}{os.linesep}" for p in report.files), end="")
    if options.quick:
        print(f"{name}: this was a smoke test (--quick: {' '.join(QUICK_OVERRIDES)}): it checks the study end to "
              "end; its numbers are not results. Run without --quick for the study.")
    return 0


def check_name(name: str) -> str:
    """``name`` if it is a study of :data:`STUDIES`.

    Raises:
        ConfigError: an unknown name; the message lists the valid ones (and the closest, if any).
    """
    if name in STUDIES:
        return name
    close = difflib.get_close_matches(name, STUDIES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown study {name!r}{hint}; expected one of {', '.join(STUDIES)}")


def study_options(args: argparse.Namespace) -> StudyOptions:
    """The parsed arguments as :class:`StudyOptions`, with the command line that reproduces them."""
    from microexp.splits import parse_fold_selection

    folds = getattr(args, "folds", None)
    models, sizes = tuple(getattr(args, "models", ())), parse_sizes(getattr(args, "sizes", None))
    cpu_friendly = bool(getattr(args, "cpu_friendly", False))
    if (models or sizes or cpu_friendly) and args.name not in LEADERBOARD_STUDIES:
        raise ConfigError(f"--models, --sizes and --cpu-friendly apply to {', '.join(LEADERBOARD_STUDIES)}, "
                          f"not {args.name}")
    return StudyOptions(out=args.out if args.out is not None else Path("runs/studies") / args.name,
                        data=args.data, format=args.format, root=args.root, device=args.device, quick=args.quick,
                        resume=args.resume, overrides=(*args.overrides, *slurm_overrides(args)), seeds=args.seeds,
                        folds=None if folds is None else tuple(parse_fold_selection(folds)),
                        recipes=tuple(args.recipes), progress=args.progress, command=command_line(args),
                        cells=tuple(getattr(args, "cells", ())), models=models, sizes=sizes,
                        cpu_friendly=cpu_friendly)


def parse_sizes(text: str | None) -> tuple[int, ...]:
    """``"64,112,160"`` -> ``(64, 112, 160)``; None -> ``()``.

    Raises:
        ConfigError: not a comma-separated list of integers of at least 16, or a size repeated.
    """
    if text is None:
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 16 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ConfigError(f"--sizes {text!r}: expected distinct frame sizes of at least 16 px separated by commas, "
                          "e.g. 64,112,160")
    return sizes


def command_line(args: argparse.Namespace) -> str:
    """``microexp study NAME ...`` with every option that shapes the outputs, in a fixed order.

    Written into ``study.json`` and ``summary.md``. Options at their defaults are left out, and so is a
    ``--recipes-dir`` that is the default folder (what ``recipes/dfme_*.py`` pass when run from the
    repository root), so a script and the command it stands for record the same line.
    """
    parts = ["microexp", "study", args.name]
    parts += [flag for flag, on in (("--quick", args.quick), ("--resume", args.resume),
                                    ("--cpu-friendly", getattr(args, "cpu_friendly", False))) if on]
    for flag, value in (("--data", args.data), ("--format", None if args.format == "auto" else args.format),
                        ("--root", args.root), ("--device", args.device), ("--out", args.out),
                        ("--seeds", args.seeds), ("--sizes", getattr(args, "sizes", None))):
        if value is not None:
            parts += [flag, str(value)]
    repeated = (("--recipe", args.recipes), ("--set", args.overrides), ("--cells", getattr(args, "cells", ())),
                ("--models", getattr(args, "models", ())))
    for flag, values in repeated:
        for value in values:
            parts += [flag, value]
    if args.recipes_dir is not None and Path(args.recipes_dir).resolve() != DEFAULT_RECIPES_DIR.resolve():
        parts += ["--recipes-dir", str(args.recipes_dir)]
    return shlex.join(parts)


def configure_study_logging(*, verbose: int, quiet: bool) -> None:
    """Timestamped log lines on stderr (a study runs for hours); the engine's per-epoch lines only with -v."""
    from microexp.cli import configure_logging

    configure_logging(verbose, quiet, timestamps=True)
    if not quiet and not verbose:  # one line per finished cell is the study's log; per-epoch lines would drown it
        logging.getLogger("microexp.engine").setLevel(logging.WARNING)
