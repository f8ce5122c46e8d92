"""The ``microexp`` command: one argparse parser with a sub-command per module.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. This package is the
only place that parses arguments or configures logging. User errors (``MicroexpError``, which includes
``microexp.fileio.OutputError``, and ``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``,
``PermissionError``) become one line on stderr and exit code 2, also when a DataLoader worker raised
them; anything else is a bug and keeps its traceback.

Start-up is lazy: the top-level parser lists the commands from :data:`COMMANDS` (a static table of
module and one-line help), and only the module of the command being run is imported, so
``microexp --help`` or ``microexp inspect ...`` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NamedTuple, Sequence

from microexp.errors import MicroexpError, user_message


class Command(NamedTuple):
    """Where a sub-command lives and the one line ``microexp --help`` shows for it."""

    module: str
    help: str


#: sub-command name -> (module implementing it, its one-line help), in the order ``--help`` lists them.
#: The help must equal the ``help=`` the module's ``add_parser`` passes (``tests/test_cli_startup.py`` checks).
COMMANDS: dict[str, Command] = {
    "synth": Command("microexp.cli.synth",
                     "generate the synthetic DFME-style benchmark (faces, AU micro-expressions, 200/300/500 fps)"),
    "inspect": Command("microexp.cli.inspect",
                       "summarise an annotation file: clips, subjects, classes, fps, problems"),
    "pack": Command("microexp.cli.pack",
                    "re-encode a frame-folder dataset as one seekable video per clip (Motion JPEG or H.264) plus a "
                    "new annotations.csv"),
    "models": Command("microexp.cli.models",
                      "list the registered models (family, modality, frames, size, parameters)"),
    "flow": Command("microexp.cli.flow", "precompute the optical-flow cache of a dataset"),
    "cache": Command("microexp.cli.cache",
                     "show (info) or free (prune) a preprocessed-clip cache folder (data.cache_dir)"),
    "pretrain": Command("microexp.cli.pretrain",
                        "masked-video pretraining of a transformer on unlabeled clips (VideoMAE-style tube masking)"),
    "train": Command("microexp.cli.train", "train and test a model under a subject-independent protocol"),
    "evaluate": Command("microexp.cli.evaluate",
                        "recompute metrics.json and plots of a run from its predictions.csv"),
    "audit": Command("microexp.cli.audit",
                     "leakage audit: the honest estimate beside the oracle one that picks each fold's epoch on test subjects"),
    "predict": Command("microexp.cli.predict", "predict the emotion of clips with a trained checkpoint"),
    "export": Command("microexp.cli.export", "export a checkpoint to TorchScript or ONNX"),
    "spot": Command("microexp.cli.spot", "find every micro-expression interval in long videos (sliding windows; "
                    "--recognise classifies each)"),
    "spot-eval": Command("microexp.cli.spot_eval", "score spotted intervals against ground truth as MEGC does "
                         "(IoU matching, precision/recall/F1, STRS)"),
    "ensemble": Command("microexp.cli.ensemble",
                        "average (or weigh, on validation subjects) the per-fold test probabilities of runs that "
                        "share their folds"),
    "extract-features": Command("microexp.cli.features", "extract pooled features of every clip of a clip table "
                                "with a checkpoint (batched, resumable)"),
    "probe": Command("microexp.cli.probe", "linear-probe evaluation (logistic regression) of extracted features "
                     "under a subject-independent protocol"),
    "sweep": Command("microexp.cli.sweep",
                     "hyperparameter study (Optuna), nested per outer fold, with a final nested test"),
    "study": Command("microexp.cli.study",
                     "run or resume a DFME study (model families, sampling, imbalance, AUs, label noise, leaderboard, "
                     "transfer) and print its table"),
    "benchmark": Command("microexp.cli.benchmark",
                         "measure key-frame loading, pipeline balance, flow cache, training throughput and latency"),
}

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130

#: user errors: printed as one line, exit code :data:`USER_ERROR_EXIT`
USER_ERRORS = (MicroexpError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

EPILOG = f"""\
Run `microexp COMMAND --help` for a command's options.

exit codes:
  0    success
  1    `inspect` found errors in the annotations (warnings alone exit 0)
  {USER_ERROR_EXIT}    user error, reported as one line on stderr: a bad argument, a missing or
       unreadable file, an invalid config, an output that cannot be written
  {INTERRUPTED_EXIT}  interrupted (Ctrl-C)
"""


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser.

    Args:
        commands: the sub-commands whose modules are imported and whose full parsers are built; the
            others are listed with their one-line help only (``--help`` needs nothing more). ``None``
            builds every command (importing every command module).
    """
    parser = argparse.ArgumentParser(
        prog="microexp",
        description="Micro-expression video recognition: data, models, protocols and studies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    full = set(COMMANDS if commands is None else commands)
    for name, command in COMMANDS.items():
        if name in full:
            module = importlib.import_module(command.module)
            sub = module.add_parser(subparsers)
            sub.set_defaults(_run=module.run)
        else:  # listed only; main() builds it for real when it is the command being run
            sub = subparsers.add_parser(name, help=command.help, add_help=False)
            sub.add_argument("_unparsed", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sub.set_defaults(_run=None)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: the first argument that is not an option; None if none is known.

    The top-level options (``-v``, ``-q``, ``-h``) take no value, so the first non-option is the command.
    """
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def configure_logging(verbose: int, quiet: bool, *, timestamps: bool = False) -> None:
    """Send library logs to stderr at a level chosen by -v/-q; ``timestamps`` prefixes each line with the time
    (``microexp study``, whose cells run for hours)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    if timestamps:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                            stream=sys.stderr, force=True)
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``microexp`` command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(argv)
    args = build_parser([command] if command else []).parse_args(argv)
    if args._run is None:  # the command was not where chosen_command looked: build it and parse again
        args = build_parser([args.command]).parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        print(f"microexp {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"microexp {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT


def _one_line(exc: BaseException) -> str:
    """``FILE: reason`` for an OS error, else the message on one line; a DataLoader worker's re-raise is
    unwrapped to the worker's original message (:func:`microexp.errors.user_message`)."""
    return user_message(exc)
