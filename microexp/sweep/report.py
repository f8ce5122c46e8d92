"""What a sweep writes from its studies: ``trials.csv``, ``best.yaml`` (overall and per fold) and plots.

Everything here reads the fold studies only; it can be rerun at any time (``microexp sweep`` does so
after its workers stop), also while other workers are still adding trials. Figures are built with
matplotlib's object API (no pyplot, no global backend switch) in Optuna's ``ggplot`` look, and written
atomically through :mod:`microexp.fileio`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState

from microexp.fileio import atomic_path, write_text
from microexp.sweep.space import SearchSpace
from microexp.sweep.studies import SweepSettings, fold_studies, trial_target

logger = logging.getLogger(__name__)

__all__ = ["BestTrial", "FoldStatus", "SweepReport", "best_trials", "heatmap_table", "history_figure",
           "importance_figure", "plot_heatmap", "plot_sweep", "trials_frame", "write_best", "write_report",
           "write_trials_csv"]

#: the keys whose values label the heat map's rows (sampling) and columns (imbalance handling)
SAMPLING_KEY = "data.sampling"
IMBALANCE_KEYS = ("train.sampler", "loss.name")
#: the look of Optuna's matplotlib plots, applied to these figures only (a style context, not a global switch)
STYLE = "ggplot"
#: history and importance plots: size in inches and resolution
PLOT_SIZE = (7, 4.5)
DPI = 100


@dataclass(frozen=True)
class BestTrial:
    """The best COMPLETE trial of one fold study by inner validation value."""

    fold: int
    number: int
    value: float
    params: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class FoldStatus:
    """Where one fold study stands: its trials by state (surplus records left out) and its best trial."""

    fold: int
    complete: int
    pruned: int
    failed: int
    running: int
    best: BestTrial | None

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED trials: those that fill the study's ``trials`` slots for good."""
        return self.complete + self.pruned


@dataclass(frozen=True)
class SweepReport:
    """What :func:`write_report` wrote and found.

    Attributes:
        out_dir: the sweep directory.
        target: finished trials wanted per fold study (``--trials``, capped by a grid's size).
        folds: one status per fold study, by fold number.
        overall: the best trial over all fold studies (``best.yaml``), None before any COMPLETE trial.
    """

    out_dir: Path
    target: int
    folds: tuple[FoldStatus, ...]
    overall: BestTrial | None

    @property
    def ready(self) -> bool:
        """True when every fold study has ``target`` finished trials and a COMPLETE one to finalize."""
        return all(f.finished >= self.target and f.best is not None for f in self.folds)

    @property
    def unfinished(self) -> int:
        """Fold studies short of ``target`` finished trials."""
        return sum(1 for f in self.folds if f.finished < self.target)


def write_report(settings: SweepSettings, space: SearchSpace, folds: Sequence[int]) -> SweepReport:
    """``trials.csv``, ``best.yaml`` (overall and per fold) and ``plots/`` from the fold studies ``folds``.

    Returns:
        where each fold study stands (for the summary the command prints and its decision to finalize).
    """
    out = Path(settings.out_dir)
    studies = fold_studies(settings, folds)
    write_trials_csv(out, studies)
    best = best_trials(studies)
    overall = write_best(out, best, study=settings.study, metric=settings.metric)
    plot_sweep(out, studies, space, metric=settings.metric)
    target = trial_target(settings, space)
    statuses = []
    for fold, study in sorted(studies.items()):
        states = [t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
        statuses.append(FoldStatus(fold=fold, complete=states.count(TrialState.COMPLETE),
                                   pruned=states.count(TrialState.PRUNED), failed=states.count(TrialState.FAIL),
                                   running=states.count(TrialState.RUNNING), best=best.get(fold)))
    return SweepReport(out_dir=out, target=target, folds=tuple(statuses), overall=overall)


def trials_frame(studies: Mapping[int, optuna.Study]) -> pd.DataFrame:
    """All trials of all fold studies, one row each.

    Columns: ``fold, number, state, value, duration_s, prune_reason, fail_reason, retry_of`` and one
    column per searched key (empty where a conditional key was inactive). Surplus records (asked by a
    worker after another filled the study's last slot, never run) are left out.
    """
    rows = []
    for fold, study in sorted(studies.items()):
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("surplus"):
                continue
            rows.append({"fold": fold, "number": t.number, "state": t.state.name, "value": t.value,
                         "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 3),
                         "prune_reason": t.user_attrs.get("prune_reason", ""),
                         "fail_reason": t.user_attrs.get("fail_reason", ""),
                         "retry_of": t.user_attrs.get("retry_of"), **t.params})
    columns = ["fold", "number", "state", "value", "duration_s", "prune_reason", "fail_reason", "retry_of"]
    frame = pd.DataFrame(rows)
    return frame if not frame.empty else pd.DataFrame(columns=columns)


def write_trials_csv(out: Path, studies: Mapping[int, optuna.Study]) -> Path:
    """``out/trials.csv`` from :func:`trials_frame`."""
    path = Path(out) / "trials.csv"
    with atomic_path(path) as tmp:
        trials_frame(studies).to_csv(tmp, index=False)
    return path


def best_trials(studies: Mapping[int, optuna.Study]) -> dict[int, BestTrial]:
    """The best COMPLETE trial of each fold study that has one."""
    best = {}
    for fold, study in sorted(studies.items()):
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        if not complete:
            continue
        top = max(complete, key=lambda t: (t.value, -t.number))
        best[fold] = BestTrial(fold=fold, number=top.number, value=float(top.value), params=dict(top.params),
                               config=top.user_attrs["config"])
    return best


def write_best(out: Path, best: Mapping[int, BestTrial], *, study: str, metric: str) -> BestTrial | None:
    """``out/fold_XX/best.yaml`` for each fold and ``out/best.yaml`` for the best trial over all folds.

    Each file is a full recipe that ``microexp train --config`` accepts unchanged; its header says which
    trial it is and that its inner validation value is not an estimate of test performance.
    """
    out = Path(out)
    for fold, trial in best.items():
        _write_recipe(out / f"fold_{fold:02d}" / "best.yaml", trial, study=study, metric=metric, scope=f"fold {fold}'s study")
    if not best:
        return None
    overall = max(best.values(), key=lambda t: (t.value, -t.fold))
    _write_recipe(out / "best.yaml", overall, study=study, metric=metric, scope="all fold studies")
    return overall


def plot_sweep(out: Path, studies: Mapping[int, optuna.Study], space: SearchSpace, *, metric: str) -> list[Path]:
    """Optimisation history and parameter importances per fold study, and the sampling x imbalance heat map.

    Plots that cannot be drawn yet (too few completed trials, a single parameter) are skipped with a
    logged note.
    """
    import matplotlib.style

    plots = Path(out) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.style.context(STYLE):
        for fold, study in sorted(studies.items()):
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not complete:
                logger.info("fold %d: no completed trial yet; no plots", fold)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's importance evaluators may be marked experimental
                fig = history_figure(study, target_name=f"inner {metric}")
                written.append(_save(fig, plots / f"history_fold{fold:02d}.png"))
                common = optuna.search_space.intersection_search_space(complete)
                if len(complete) >= 2 and len(common) > 1:
                    try:
                        fig = importance_figure(study, target_name=f"inner {metric}")
                        written.append(_save(fig, plots / f"importance_fold{fold:02d}.png"))
                    except (RuntimeError, ValueError) as exc:
                        logger.info("fold %d: parameter importances skipped (%s)", fold, exc)
                else:
                    logger.info("fold %d: parameter importances need >= 2 completed trials sharing > 1 parameter "
                                "(have %d trials, %d shared parameters); skipped", fold, len(complete), len(common))
        if SAMPLING_KEY in space.keys or any(k in space.keys for k in IMBALANCE_KEYS):
            path = plot_heatmap(plots / "sampling_x_imbalance.png", studies, metric=metric)
            if path is not None:
                written.append(path)
    return written


def history_figure(study: optuna.Study, *, target_name: str) -> Figure:
    """Objective value of every COMPLETE trial by trial number, and the best value so far (maximised).

    The figure of ``optuna.visualization.matplotlib.plot_optimization_history``, drawn without pyplot.
    """
    from matplotlib import colormaps

    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    values = np.array([t.value if t.state == TrialState.COMPLETE else np.nan for t in trials], dtype=float)
    best = np.maximum.accumulate(np.where(np.isnan(values), -np.inf, values))
    best[np.isinf(best)] = np.nan  # no completed trial yet: no best value to draw
    complete = ~np.isnan(values)
    cmap = colormaps["tab10"]
    fig = Figure(tight_layout=True)
    ax = fig.subplots()
    ax.set_title("Optimization History Plot")
    ax.set_xlabel("Trial")
    ax.set_ylabel(target_name)
    ax.scatter(np.asarray(numbers)[complete], values[complete], color=cmap(0), alpha=1, label=target_name)
    ax.plot(numbers, best, color=cmap(3), alpha=0.5, label="Best Value")
    ax.legend(bbox_to_anchor=(1.05, 1.0), loc="upper left")
    return fig


def importance_figure(study: optuna.Study, *, target_name: str) -> Figure:
    """Horizontal bars of :func:`optuna.importance.get_param_importances` (the most important on top).

    The figure of ``optuna.visualization.matplotlib.plot_param_importances``, drawn without pyplot.

    Raises:
        RuntimeError, ValueError: the importances cannot be computed (as Optuna raises them).
    """
    from matplotlib import colormaps

    importances = optuna.importance.get_param_importances(study)
    names = list(reversed(list(importances)))
    values = [importances[name] for name in names]
    labels = [f"{v:.2f}" if v >= 0.01 else "<0.01" for v in values]
    fig = Figure()
    ax = fig.subplots()
    ax.set_title("Hyperparameter Importances", loc="left")
    ax.set_xlabel("Hyperparameter Importance")
    ax.set_ylabel("Hyperparameter")
    position = np.arange(len(names))
    if values:
        ax.barh(position, values, height=0.8, align="center", label=target_name, color=colormaps["tab20c"](0))
        for index, (value, label) in enumerate(zip(values, labels)):
            text = ax.text(value, index, label, va="center")
            # widen the axis when a label runs past its right end
            right = text.get_window_extent().transformed(ax.transData.inverted()).xmax
            if right > ax.get_xlim()[1]:
                ax.set_xlim(xmax=1.05 * right)
        ax.set_yticks(position, names)
    ax.legend(loc="best")
    return fig


def heatmap_table(studies: Mapping[int, optuna.Study]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean objective and trial count per (sampling strategy, sampler + loss) over COMPLETE trials."""
    rows = []
    for study in studies.values():
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            config = t.user_attrs.get("config")
            if config is None or t.value is None:
                continue
            rows.append({"sampling": config["data"]["sampling"],
                         "imbalance": f"{config['train']['sampler']} + {config['loss']['name']}", "value": t.value})
    frame = pd.DataFrame(rows, columns=["sampling", "imbalance", "value"])
    mean = frame.pivot_table(index="sampling", columns="imbalance", values="value", aggfunc="mean")
    count = frame.pivot_table(index="sampling", columns="imbalance", values="value", aggfunc="count")
    return mean, count


def plot_heatmap(path: Path, studies: Mapping[int, optuna.Study], *, metric: str) -> Path | None:
    """Heat map of the mean inner objective per data.sampling x (train.sampler + loss.name) cell."""
    mean, count = heatmap_table(studies)
    if mean.empty:
        logger.info("no completed trial yet; heat map skipped")
        return None
    values = mean.to_numpy(dtype=float)
    fig = Figure(figsize=(3.0 + 1.0 * values.shape[1], 3.0 + 0.5 * values.shape[0]))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}\nn={int(count.iat[i, j])}", ha="center", va="center",
                        color="black" if values[i, j] > middle else "white", fontsize=7)
    ax.set_xticks(range(values.shape[1]), mean.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]), mean.index, fontsize=8)
    ax.set_xlabel("imbalance strategy (train.sampler + loss.name)", fontsize=9)
    ax.set_ylabel("data.sampling", fontsize=9)
    ax.set_title(f"mean inner validation {metric}, completed trials of all fold studies", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def _write_recipe(path: Path, trial: BestTrial, *, study: str, metric: str, scope: str) -> None:
    params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    header = (
        f"# microexp sweep {study}: the best trial of {scope} by inner validation {metric}\n"
        f"# fold {trial.fold} trial {trial.number}: inner validation {metric} = {trial.value:.4f} "
        f"(subjects carved from fold {trial.fold}'s training subjects)\n"
        f"# searched: {params}\n"
        "# The inner value is the best of many trials and therefore optimistic. The honest estimate of what\n"
        "# the search procedure achieves is the nested test metrics in final/metrics.json (each outer fold's\n"
        "# best configuration, retrained and tested once), not a number for this exact configuration.\n"
    )
    write_text(path, header + yaml.safe_dump(trial.config, sort_keys=False))


def _save(fig: Figure, path: Path) -> Path:
    fig.set_size_inches(*PLOT_SIZE)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def _save_figure(fig: Figure, path: Path) -> None:
    """``fig.savefig(path)`` atomically (the temporary name keeps ``.png``)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
