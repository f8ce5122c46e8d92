"""What a study is, and running one: options -> cells -> grid -> tables, plots and a summary.

A :class:`Study` is a list of cells plus a ``report`` that turns the finished cells into tables and plots.
:func:`run_study` resolves the data (the synthetic benchmark by default, generated when missing), applies
the shared options (``--quick``, ``--device``, ``--set``), runs the grid with resume, writes the report and
``OUT/study.json`` (command, machine, wall time, cells) and ``OUT/summary.md`` (the tables with the
command that produced them).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microexp.errors import ConfigError
from microexp.fileio import write_json, write_text
from microexp.studies.grid import Cell, CellResult, run_grid
from microexp.studies.options import DEFAULT_DATA, DEFAULT_SYNTH, QUICK_OVERRIDES, SMOKE_TEST, StudyOptions
from microexp.studies.tables import format_duration

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_DATA", "QUICK_OVERRIDES", "SMOKE_TEST", "Report", "Study", "StudyOptions", "resolve_data", "run_study",
           "machine_summary"]
# DEFAULT_DATA ... StudyOptions live in .options (the CLI's --help reads them without importing pandas)


@dataclass
class Report:
    """What a study's report wrote: the Markdown of its tables, and the files."""

    markdown: str
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A study: its cells and how to report them.

    Args:
        name: e.g. ``dfme_models``.
        title: a one-line description used as the summary heading.
        cells: the experiments.
        report: ``(results, out_dir) -> Report`` writing tables and plots.
        notes: sentences printed under the tables (protocol, what is compared with what).
        data: what the cells train on when the study brings its own datasets (each cell sets
            ``data.annotations``; e.g. the noise study's generated datasets); None: ``--data`` or the benchmark.
    """

    name: str
    title: str
    cells: list[Cell]
    report: Callable[[list[CellResult], Path], Report]
    notes: list[str] = field(default_factory=list)
    data: str | None = None


def resolve_data(data: Path | None, *, progress: bool | None = None) -> Path:
    """The clip table to study: ``data``, or the synthetic benchmark (generated when missing).

    Raises:
        FileNotFoundError: ``data`` was given and does not exist.
    """
    if data is not None:
        if not Path(data).exists():
            raise FileNotFoundError(f"--data {data}: no such file or folder")
        return Path(data)
    if DEFAULT_DATA.exists():
        logger.info("data: the synthetic benchmark %s", DEFAULT_DATA)
        return DEFAULT_DATA
    from microexp.synth import generate_dataset

    logger.warning("data: %s is missing; generating the synthetic benchmark there (microexp synth %s --clips %d "
                   "--subjects %d --seed %d), this takes a few minutes", DEFAULT_DATA, DEFAULT_DATA.parent,
                   DEFAULT_SYNTH["clips"], DEFAULT_SYNTH["subjects"], DEFAULT_SYNTH["seed"])
    generate_dataset(DEFAULT_DATA.parent, progress=progress, **DEFAULT_SYNTH)
    return DEFAULT_DATA


def base_overrides(options: StudyOptions, data: Path) -> list[str]:
    """Overrides applied to every cell, in order: quick settings, data, device, then the user's ``--set``."""
    overrides = list(QUICK_OVERRIDES) if options.quick else []
    overrides += [f"data.annotations={data}", f"data.format={options.format}"]
    if options.root is not None:
        overrides.append(f"data.root={options.root}")
    if options.device is not None:
        overrides.append(f"device={options.device}")
    return overrides + list(options.overrides)


def machine_summary() -> dict[str, Any]:
    """CPU count, platform and library versions (for the record of a measured table)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    summary = {"cpu_count": os.cpu_count(), "usable_cpus": usable, "torch_threads": torch.get_num_threads(),
               "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "python": platform.python_version(), "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    return summary


def select_cells(study: Study, patterns: Sequence[str]) -> Study:
    """``study`` with only the cells whose names match one of ``patterns`` (shell-style); all when empty.

    Raises:
        ConfigError: a pattern matches no cell (the message lists some of the names).
    """
    if not patterns:
        return study
    names = [c.name for c in study.cells]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            raise ConfigError(f"--cells {pattern!r}: no cell of {study.name} matches; its cells are {shown}")
    kept = [c for c in study.cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    return dataclasses.replace(study, cells=kept)


def run_study(study: Study, options: StudyOptions, *, launcher: Callable[[list[Any], Any], Any] | None = None) -> Report:
    """Run (or resume) every cell of ``study`` and write its report into ``options.out``.

    ``options.folds`` runs a shard of every cell; ``launcher`` runs every pending fold as its own process
    (see :func:`microexp.studies.grid.run_grid`). Raises ``IncompleteGrid`` while other shards still run.
    """
    start = time.perf_counter()
    study = select_cells(study, options.cells)
    if study.data is None:
        data: Path | str = resolve_data(options.data, progress=options.progress)
        overrides = base_overrides(options, Path(data))
    else:  # the cells name their own datasets
        data = study.data
        overrides = [o for o in base_overrides(options, Path(".")) if not o.startswith("data.annotations=")]
    axis_keys = {o.partition("=")[0] for c in study.cells for o in c.overrides} | {"seed"}
    clashes = sorted({o.partition("=")[0] for o in options.overrides} & axis_keys)
    if clashes:
        logger.warning("--set %s: the study sets these keys per cell, so these overrides have no effect",
                       ", ".join(clashes))
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("%s: %d cells into %s%s", study.name, len(study.cells), out,
                " (--quick: a smoke test, its numbers are not results)" if options.quick else "")
    results = run_grid(study.cells, out, base_overrides=overrides, resume=options.resume, progress=options.progress,
                       only_folds=options.folds, launcher=launcher)
    report = study.report(results, out)
    if options.quick:  # every table says so, not only the summary
        banner = f"> {SMOKE_TEST}\n\n"
        report.markdown = banner + report.markdown
        for path in report.files:
            if path.suffix == ".md" and path.is_file():
                write_text(path, banner + path.read_text(encoding="utf-8"))
    wall = time.perf_counter() - start
    computed = sum(r.wall_seconds or 0.0 for r in results if not r.resumed)
    machine = machine_summary()
    record = {
        "study": study.name, "title": study.title, "command": options.command, "quick": options.quick,
        "smoke_test": options.quick,
        **({"note": "--quick smoke test: checks the study end to end; its numbers are not results"}
           if options.quick else {}),
        "data": str(data), "base_overrides": overrides, "wall_seconds": round(wall, 1),
        "cells_computed": sum(not r.resumed for r in results), "cells_resumed": sum(r.resumed for r in results),
        "cells_wall_seconds": round(computed, 1), "machine": machine,
        "cells": [{"name": r.cell.name, "axes": dict(r.cell.axes), "seed": r.cell.seed, "resumed": r.resumed,
                   "wall_seconds": r.wall_seconds, "train_seconds": r.train_seconds} for r in results],
        "files": [str(p) for p in report.files],
    }
    write_json(out / "study.json", record)
    resumed = sum(r.resumed for r in results)
    title = f"{study.title} (smoke test)" if options.quick else study.title
    lines = [f"# {title}", "", f"Command: `{options.command}`", "",
             f"Data: `{data}`. Machine: {machine['usable_cpus']} usable CPU core(s) of {machine['cpu_count']}, "
             f"load average {machine['load_average_1min']} at the end, torch {machine['torch']}, "
             f"{machine['cuda'] or 'no GPU'}. Wall time: {format_duration(wall)}"
             + (f" ({resumed} of {len(results)} cells kept from an earlier run)" if resumed else "") + ".", "",
             report.markdown.rstrip(), ""]
    lines += [f"- {note}" for note in study.notes]
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    report.files.append(out / "summary.md")
    logger.info("%s finished in %s: %s", study.name, format_duration(wall), out / "summary.md")
    return report

