"""A grid of experiment cells, each one cross-validation run, resumable cell by cell.

A study (the DFME model, sampling and imbalance studies) is a list of :class:`Cell` s: a recipe plus
``--set``-style overrides that fix the study's axes (a model, a sampling strategy, a loss, a seed).
:func:`run_grid` runs each cell with :func:`microexp.engine.experiment.run_experiment` into its own
directory ``OUT/cells/<cell name>/`` and returns one :class:`CellResult` per cell.

Resuming: a cell whose ``metrics.json`` exists is finished and is read back instead of recomputed
(``resume=True``); an unfinished cell is re-entered, and ``run_experiment`` keeps its finished folds and
continues its interrupted fold from the last completed epoch. Without ``resume``, a study directory that
already holds cells is refused rather than silently mixed with or overwritten by a new run.

Each finished cell also gets ``cell.json``: its axes, overrides, seed, the number of trainable
parameters of the trained model, the summed training-epoch time (from the folds' ``log.csv``) and the
cell's wall time when it ran in this process.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from microexp.config import ExperimentConfig, load_config
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import write_json

logger = logging.getLogger(__name__)

__all__ = ["Cell", "CellResult", "IncompleteGrid", "cell_config", "run_grid", "read_cell", "train_seconds",
           "trained_parameters"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


@dataclass(frozen=True)
class Cell:
    """One experiment of a study.

    Args:
        name: directory name under ``OUT/cells`` (letters, digits, ``_.=+-``), unique in the study.
        recipe: the YAML recipe the cell starts from.
        overrides: ``key.sub=value`` overrides that set the cell's axes, applied last.
        axes: the axis values shown in tables, e.g. ``{"strategy": "tsn", "frames": 8}`` (plain types).
        seed: the experiment seed (also reshuffles the folds); applied as ``seed=<seed>``.
    """

    name: str
    recipe: Path
    overrides: tuple[str, ...] = ()
    axes: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"cell name {self.name!r}: use letters, digits and _.=+- only")


@dataclass(frozen=True)
class CellResult:
    """A finished cell: its metrics (``metrics.json``) and what it cost."""

    cell: Cell
    run_dir: Path
    metrics: dict[str, Any]
    num_params: int
    train_seconds: float
    wall_seconds: float | None  # None when the cell finished in an earlier process (resumed)
    resumed: bool


def cell_config(cell: Cell, base_overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The cell's resolved config: recipe, then ``base_overrides``, then the seed and the cell's axes.

    Raises:
        FileNotFoundError: the recipe does not exist.
        ConfigError: an override names an unknown key or a bad value.
    """
    return load_config(cell.recipe, [*base_overrides, f"seed={cell.seed}", *cell.overrides])


def train_seconds(run_dir: Path) -> float:
    """Training time of a run: the sum of the ``seconds`` of every epoch of every fold (``log.csv``)."""
    total = 0.0
    for log in sorted(run_dir.glob("fold_*/log.csv")):
        frame = pd.read_csv(log)
        if "seconds" in frame:
            total += float(frame["seconds"].sum())
    return total


def trained_parameters(run_dir: Path) -> int:
    """Trainable parameters of the model a run trained (rebuilt from its first fold's ``model.pt``)."""
    from microexp.checkpoint import load_checkpoint, model_from_checkpoint
    from microexp.models import count_params

    checkpoints = sorted(run_dir.glob("fold_*/model.pt"))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no fold_*/model.pt (is it a finished run?)")
    return count_params(model_from_checkpoint(load_checkpoint(checkpoints[0]), source=str(checkpoints[0])))


def read_cell(cell: Cell, run_dir: Path) -> CellResult:
    """The result of a finished cell from its directory (``metrics.json``, ``cell.json``, logs)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    record_path = run_dir / "cell.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    num_params = record.get("num_params")
    if num_params is None:
        num_params = trained_parameters(run_dir)
    return CellResult(cell=cell, run_dir=run_dir, metrics=metrics, num_params=int(num_params),
                      train_seconds=float(record.get("train_seconds", train_seconds(run_dir))),
                      wall_seconds=record.get("wall_seconds"), resumed=True)


class IncompleteGrid(MicroexpError):
    """Some cells have folds that other shards are still running: no table yet (not a failure)."""


def run_grid(
    cells: Sequence[Cell],
    out_dir: str | Path,
    *,
    base_overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool | None = None,
    run: Callable[..., dict[str, Any] | None] | None = None,
    only_folds: Sequence[int] | None = None,
    launcher: Callable[[list[Any], Any], Any] | None = None,
) -> list[CellResult]:
    """Run every cell (each a cross-validation experiment) into ``out_dir/cells/<name>``.

    Args:
        cells: the study's cells (unique names).
        out_dir: the study directory.
        base_overrides: overrides applied to every cell before its own (data, device, quick settings).
        resume: keep finished cells (``metrics.json`` present) and continue unfinished ones.
        progress: a progress bar over cells; None = only on a terminal. Fold and epoch bars stay off.
        run: the experiment runner (default :func:`microexp.engine.experiment.run_experiment`).
        only_folds: a shard: run only these folds of every cell (other processes run the others into the
            same study directory; finished cells are kept as with ``resume``).
        launcher: ``launcher(units, slurm)`` runs :class:`microexp.launch.Unit` s (every pending fold of
            every cell, each its own ``microexp train`` process) and returns when they are done.

    Returns:
        One :class:`CellResult` per cell, in order.

    Raises:
        ConfigError: duplicate cell names, a bad override, or ``out_dir`` already holds cells and
            ``resume`` is False (and this is no shard).
        IncompleteGrid: some cell still lacks folds that other shards run.
    """
    if run is None:
        from microexp.engine.experiment import run_experiment as run
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"duplicate cell name(s): {', '.join(duplicates)}")
    cells_dir = Path(out_dir) / "cells"
    shard = only_folds is not None or launcher is not None
    resume = resume or shard  # shards share the study directory: each keeps what the others finished
    if not resume and cells_dir.is_dir() and any(cells_dir.iterdir()):
        raise ConfigError(f"{cells_dir} already holds cells of an earlier run: pass --resume to continue it, "
                          "or choose another --out")
    configs = [cell_config(c, base_overrides) for c in cells]  # every config validated before any training
    launched = (_launch_cells(cells, configs, cells_dir, only_folds=only_folds, launcher=launcher)
                if launcher is not None else set())
    results: dict[str, CellResult] = {}
    waiting: list[tuple[Cell, ExperimentConfig]] = []
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=None if progress is None else not progress)
    try:
        for index, (cell, config) in enumerate(zip(cells, configs), start=1):
            run_dir = cells_dir / cell.name
            bar.set_postfix_str(cell.name)
            if cell.name not in launched and (run_dir / "metrics.json").exists():
                _check_same_config(config, run_dir)
                result = read_cell(cell, run_dir)
                logger.info("cell %d/%d %s: already finished, kept (%s)", index, len(cells), cell.name,
                            _scores(result.metrics))
            else:
                start = time.perf_counter()
                if launcher is not None:
                    from microexp.engine.experiment import merge_run

                    metrics = merge_run(run_dir)
                else:
                    metrics = run(config, run_dir, progress=False,
                                  **({"only_folds": only_folds} if only_folds is not None else {}))
                if metrics is None:  # folds of other shards still missing
                    waiting.append((cell, config))
                    bar.update()
                    continue
                wall = None if launcher is not None else time.perf_counter() - start
                result = _finished(cell, run_dir, metrics, wall, resumed=False)
                logger.info("cell %d/%d %s: %s, train %.1f s%s", index, len(cells), cell.name, _scores(metrics),
                            result.train_seconds, "" if wall is None else f", wall {wall:.1f} s")
            results[cell.name] = result
            bar.update()
    finally:
        bar.close()
    _collect_waiting(waiting, cells_dir, results)
    return [results[c.name] for c in cells]


def _launch_cells(cells: Sequence[Cell], configs: Sequence[ExperimentConfig], cells_dir: Path, *,
                  only_folds: Sequence[int] | None, launcher: Callable[[list[Any], Any], Any]) -> set[str]:
    """Write every unfinished cell's config.yaml and folds.json, then launch all their pending folds at once;
    returns the names of the cells launched."""
    from microexp.engine.experiment import prepare_shards
    from microexp.launch import fold_units

    units: list[Any] = []
    launched = set()
    for cell, config in zip(cells, configs):
        run_dir = cells_dir / cell.name
        if (run_dir / "metrics.json").exists():
            continue
        pending, _ = prepare_shards(config, run_dir, only_folds=only_folds)
        units += fold_units(run_dir, pending, prefix=f"{cell.name}/")
        launched.add(cell.name)
    logger.info("launching %d fold(s) of %d cell(s)", len(units), len(launched))
    launcher(units, configs[0].slurm if configs else None)
    return launched


def _collect_waiting(waiting: list[tuple[Cell, ExperimentConfig]], cells_dir: Path,
                     results: dict[str, CellResult]) -> None:
    """Cells other shards may have finished meanwhile are merged; if some still miss folds, IncompleteGrid."""
    from microexp.engine.experiment import fold_status, merge_run
    from microexp.splits import format_fold_selection

    still = []
    for cell, _ in waiting:
        run_dir = cells_dir / cell.name
        metrics = merge_run(run_dir) if (run_dir / "folds.json").exists() else None
        if metrics is None:
            missing = fold_status(run_dir)[1] if (run_dir / "folds.json").exists() else []
            still.append(f"{cell.name} (folds {format_fold_selection(missing)})" if missing else cell.name)
        else:
            results[cell.name] = _finished(cell, run_dir, metrics, None, resumed=False)
    if still:
        raise IncompleteGrid(f"{len(still)} cell(s) still miss folds that other shards run: {', '.join(still[:5])}"
                             f"{' ...' if len(still) > 5 else ''}; the tables are written by the shard that finishes "
                             "last (or rerun this command with --resume once they are done)")


def _finished(cell: Cell, run_dir: Path, metrics: dict[str, Any], wall: float | None, *, resumed: bool) -> CellResult:
    """A cell whose last fold finished now (``wall`` None when its folds ran in other processes)."""
    result = CellResult(cell=cell, run_dir=run_dir, metrics=metrics, num_params=trained_parameters(run_dir),
                        train_seconds=train_seconds(run_dir), wall_seconds=wall, resumed=resumed)
    _write_record(result)
    return result


def _check_same_config(config: ExperimentConfig, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if saved.exists() and load_config(saved) != config:
        raise ConfigError(f"{run_dir} was finished with a different config.yaml (other --data, --set or --quick?); "
                          "use the same options to resume, or another --out")


def _scores(metrics: Mapping[str, Any]) -> str:
    pooled = metrics.get("pooled", {})
    return " ".join(f"{k.upper()} {pooled[k]:.3f}" for k in ("acc", "uf1", "uar") if k in pooled)


def _write_record(result: CellResult) -> None:
    record = {
        "name": result.cell.name,
        "recipe": str(result.cell.recipe),
        "seed": result.cell.seed,
        "axes": dict(result.cell.axes),
        "overrides": list(result.cell.overrides),
        "num_params": result.num_params,
        "train_seconds": round(result.train_seconds, 3),
        "wall_seconds": round(result.wall_seconds or 0.0, 3),
    }
    write_json(result.run_dir / "cell.json", record)
