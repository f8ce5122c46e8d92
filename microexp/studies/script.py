"""The front end of the ``recipes/dfme_*.py`` study scripts: one argument parser for all three.

This is the one module of :mod:`microexp.studies` that parses arguments and configures logging (the
scripts are command-line front ends, like :mod:`microexp.cli`); the study functions themselves take
typed :class:`~microexp.studies.study.StudyOptions`. User errors print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from microexp.errors import MicroexpError
from microexp.studies.dfme import STUDIES
from microexp.studies.study import DEFAULT_DATA, QUICK_OVERRIDES, StudyOptions, run_study

USER_ERROR_EXIT = 2

_RECIPE_HELP = {
    "dfme_models": "FAMILY=PATH: replace a family's recipe (two_stream, 3dcnn, tsm, transformer, frame); repeatable",
    "dfme_sampling": "the model's recipe (default: the flow-tiny recipe)",
    "dfme_imbalance": "the model's recipe (default: the flow-tiny recipe)",
}
_SEEDS_DEFAULT = {"dfme_models": "1", "dfme_sampling": "1", "dfme_imbalance": "3, or 1 with --quick"}


def build_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The shared options of a study script."""
    parser = argparse.ArgumentParser(
        prog=f"recipes/{name}.py", description=description,
        epilog="Outputs in --out: cells/<cell>/ (one microexp train run each), the table as .md and .csv, "
        "cells.csv, plots, summary.md and study.json. Run from the repository root.",
    )
    parser.add_argument("--data", type=Path, default=None,
                        help=f"clip table or official annotation sheet (default: the synthetic benchmark {DEFAULT_DATA}, "
                        "generated when missing)")
    parser.add_argument("--format", default="auto", help="annotation format of --data (default: auto)")
    parser.add_argument("--root", default=None, help="dataset folder for official sheets (data.root)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the recipe's)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: a CPU-sized run that checks the study end to end ({' '.join(QUICK_OVERRIDES)}, "
                        "fewer cells or seeds); its outputs are labelled as such and its numbers are not results")
    parser.add_argument("--out", type=Path, default=Path("runs/studies") / name,
                        help=f"study directory (default: runs/studies/{name})")
    parser.add_argument("--resume", action="store_true",
                        help="keep finished cells and continue unfinished ones (the same options are required)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every cell, e.g. --set train.epochs=20 (repeatable)")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"number of seeds 0..N-1 per cell (default: {_SEEDS_DEFAULT[name]})")
    parser.add_argument("--recipe", dest="recipes", action="append", default=[], help=_RECIPE_HELP[name])
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar over cells (shown only on a terminal anyway)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


def main(name: str, argv: Sequence[str] | None = None, *, recipes_dir: str | Path | None = None) -> int:
    """Parse ``argv``, run study ``name`` and print its table; returns the exit code.

    Args:
        name: a key of :data:`microexp.studies.dfme.STUDIES`.
        argv: the arguments (default ``sys.argv[1:]``).
        recipes_dir: the folder holding the recipes (default: ``recipes/`` of the working directory).
    """
    build = STUDIES[name]
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(name, (build.__doc__ or name).strip().splitlines()[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    if not args.quiet:  # one line per finished cell is the study's log; per-epoch lines would drown it
        logging.getLogger("microexp.engine").setLevel(logging.WARNING)
    options = StudyOptions(out=args.out, data=args.data, format=args.format, root=args.root, device=args.device,
                           quick=args.quick, resume=args.resume, overrides=tuple(args.overrides), seeds=args.seeds,
                           recipes=tuple(args.recipes), progress=args.progress, command=shlex.join(["python", f"recipes/{name}.py", *argv]))
    try:
        study = build(options, Path(recipes_dir) if recipes_dir is not None else Path("recipes"))
        report = run_study(study, options)
    except (MicroexpError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    print(report.markdown)
    print(f"outputs: {options.out}" + os.linesep + "".join(f"  {p}{os.linesep}" for p in report.files), end="")
    if options.quick:
        print(f"{name}: this was a smoke test (--quick: {' '.join(QUICK_OVERRIDES)}): it checks the study end to "
              "end; its numbers are not results. Run without --quick for the study.")
    return 0
