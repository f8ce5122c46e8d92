"""Launchers: run the units of a run or a study (one ``microexp`` command line each) on many processes.

A :class:`Unit` is one shard, e.g. ``microexp train --config RUN/config.yaml --out RUN --folds 3``; the
engine makes fold shards safe to run at once into one run directory (per-fold locks, atomic writes, the
pooled metrics written by whichever shard finishes last). The launchers only start the command lines:

* :func:`microexp.launch.local.run_local`: worker processes on this machine, each pinned to a GPU with
  ``CUDA_VISIBLE_DEVICES`` (K per GPU), or CPU workers splitting the cores;
* :func:`microexp.launch.slurm.run_submitit`: one Slurm job-array task per unit through submitit
  (``cluster="local"`` runs them on this machine, as the tests do); a preempted or timed-out task is
  requeued and its fold resumes from its last completed epoch.

Neither imports the CLI: a unit runs as ``python -m microexp ARGV`` in its own process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from microexp.errors import MicroexpError

__all__ = ["LAUNCHERS", "Unit", "UnitResult", "LaunchError", "command", "failures", "fold_units"]

LAUNCHERS = ("local", "submitit")


@dataclass(frozen=True)
class Unit:
    """One shard: ``name`` for messages (``fold_03``, ``cells/tsn/fold_03``), the ``microexp`` arguments,
    and the file its output goes to."""

    name: str
    argv: tuple[str, ...]
    log: Path


@dataclass(frozen=True)
class UnitResult:
    """How a unit ended: its exit code (None when it never ran), wall seconds, and its log's last line."""

    unit: Unit
    returncode: int | None
    seconds: float
    last_line: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class LaunchError(MicroexpError, RuntimeError):
    """A unit failed; the message names it, its exit code, its log and the log's last line."""


def command(unit: Unit) -> list[str]:
    """The process a unit runs: this Python's ``-m microexp`` with the unit's arguments."""
    return [sys.executable, "-m", "microexp", *unit.argv]


def last_line(path: Path) -> str:
    """The last non-empty line of a log (the error a failed unit printed), or ''."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 4096))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def failures(results: list[UnitResult]) -> str:
    """One line naming every failed unit with its exit code, log and last line ('' when none failed)."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return ""
    parts = [f"{r.unit.name} (exit {r.returncode}; {r.unit.log}: {r.last_line or 'no output'})" for r in failed[:3]]
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {len(results)} unit(s) failed: " + "; ".join(parts) + more


def fold_units(out: Path, folds: Sequence[int], *, final: bool = False, gpus: bool = False,
               prefix: str = "") -> list[Unit]:
    """One unit per pending fold of the run directory ``out`` (``microexp train --config OUT/config.yaml
    --out OUT --folds F``), plus the final model's (``--final-only``) when ``final``.

    ``gpus``: each unit sees one GPU (``CUDA_VISIBLE_DEVICES``), so its device is ``cuda`` whatever the
    recipe's ``cuda:N`` said (the device cannot change results).
    """
    base = ["train", "--config", str(out / "config.yaml"), "--out", str(out), "--no-progress"]
    device = ["--set", "device=cuda"] if gpus else []
    units = [Unit(f"{prefix}fold_{f:02d}", tuple(base + ["--folds", str(f)] + device),
                  out / "logs" / f"fold_{f:02d}.log") for f in folds]
    if final:
        units.append(Unit(f"{prefix}final", tuple(base + ["--final-only"] + device), out / "logs" / "final.log"))
    return units
