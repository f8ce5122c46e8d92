"""The ``microexp`` command: one argparse parser with a sub-command per module.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. This package is the
only place that parses arguments or configures logging. User errors (``MicroexpError``,
``FileNotFoundError``) become one line on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from microexp.errors import MicroexpError

#: sub-command name -> module implementing it, in the order ``--help`` lists them
COMMANDS = {
    "synth": "microexp.cli.synth",
    "inspect": "microexp.cli.inspect",
    "pack": "microexp.cli.pack",
    "models": "microexp.cli.models",
    "flow": "microexp.cli.flow",
    "train": "microexp.cli.train",
    "evaluate": "microexp.cli.evaluate",
    "predict": "microexp.cli.predict",
    "export": "microexp.cli.export",
    "sweep": "microexp.cli.sweep",
    "benchmark": "microexp.cli.benchmark",
}

USER_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="microexp",
        description="Micro-expression video recognition: data, models, protocols and studies.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    """Send library logs to stderr at a level chosen by -v/-q."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``microexp`` command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except (MicroexpError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"microexp {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"microexp {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__
