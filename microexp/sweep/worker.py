"""Sweep workers: one worker's loop over the fold studies, and the launch of N worker processes.

A worker (:func:`run_worker`) runs trials of every selected fold study until each has its ``trials``
slots taken, or its timeout. Several workers (processes on this machine, or other machines) may run
against one storage at once; a trial asked after another worker filled a study's last slot is marked
surplus and not run. :func:`run_workers` runs ``N`` of them on this machine (spawned processes, see
:func:`microexp.workers.worker_context`) behind one progress bar of finished trials.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import optuna

from microexp.config import build_config
from microexp.engine.experiment import build_folds, load_experiment_data
from microexp.errors import MicroexpError, user_message
from microexp.sweep.objective import SweepObjective
from microexp.sweep.space import SearchSpace
from microexp.sweep.storage import open_storage
from microexp.sweep.studies import (
    COUNTED,
    FINISHED,
    SweepError,
    SweepSettings,
    build_pruner,
    build_sampler,
    has_work,
    open_fold_study,
    select_folds,
    trial_target,
)
from microexp.workers import worker_context

logger = logging.getLogger(__name__)

__all__ = ["TrialRecord", "WorkerResult", "run_worker", "run_workers", "trial_record"]

#: seconds between two looks at the studies while worker processes run
POLL_SECONDS = 2.0


class _SurplusTrial(Exception):
    """This trial was asked after another worker filled the study's last slot; it is not run."""


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial, as printed and written to ``trials.csv``."""

    fold: int
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    duration_s: float | None
    reason: str = ""

    def line(self, metric: str) -> str:
        """``fold 0 trial 3 COMPLETE uf1=0.412 12.3s {params}``"""
        value = "" if self.value is None else f" {metric}={self.value:.4f}"
        duration = "" if self.duration_s is None else f" {self.duration_s:.1f}s"
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        reason = f" ({self.reason})" if self.reason else ""
        return f"fold {self.fold} trial {self.number} {self.state}{value}{duration} [{params}]{reason}"


@dataclass
class WorkerResult:
    """What one worker did."""

    trials: list[TrialRecord] = field(default_factory=list)
    timed_out: bool = False


def run_worker(settings: SweepSettings, base_raw: Mapping[str, Any], space: SearchSpace, *, worker: int = 0,
               on_trial: Callable[[TrialRecord], None] | None = None, progress: bool | None = False) -> WorkerResult:
    """Run trials of every selected fold study until each has ``trials`` slots taken, or the timeout.

    Several workers (processes or machines) may run this at once against one storage.

    Args:
        worker: this worker's index (mixed into the sampler seed so workers do not draw alike).
        on_trial: called with every trial this worker finished (after it is logged).
        progress: per-epoch progress bars inside trials.
    """
    base = build_config(base_raw, source="base recipe")
    data = load_experiment_data(base)
    folds = select_folds(build_folds(base, data.table), settings.outer_folds)
    storage = open_storage(settings.storage)
    target = trial_target(settings, space)
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    result = WorkerResult()
    work_dir = Path(settings.out_dir) / "work"
    for fold in folds:
        probe = open_fold_study(storage, settings, fold, base=base, space=space)
        if not has_work(probe, target):
            continue
        seed = int(np.random.SeedSequence([settings.seed, fold.fold, worker, len(probe.trials)]).generate_state(1)[0])
        study = open_fold_study(storage, settings, fold, base=base, space=space,
                                sampler=build_sampler(settings.sampler, seed=seed, space=space, trials=target),
                                pruner=build_pruner(settings.pruner))
        objective = SweepObjective(base_raw=base_raw, space=space, data=data, fold=fold, metric=settings.metric,
                                   inner_folds=settings.inner_folds, work_dir=work_dir, progress=progress)
        failures = 0
        while has_work(study, target):
            if deadline is not None and time.monotonic() >= deadline:
                logger.info("worker %d: --timeout reached; no new trial started", worker)
                result.timed_out = True
                return result
            record = _run_one(study, objective, fold.fold, target)
            if record is None:  # surplus: another worker took the last slot
                continue
            logger.info("%s", record.line(settings.metric))
            result.trials.append(record)
            if on_trial is not None:
                on_trial(record)
            failures = failures + 1 if record.state == "FAIL" else 0
            if failures >= settings.max_failures:
                raise SweepError(f"fold {fold.fold}: {failures} trials failed in a row (last: {record.reason}); "
                                 "fix the cause, then rerun the same command (add --retry-failed to rerun their "
                                 "parameters)")
    _remove_if_empty(work_dir)
    return result


def run_workers(settings: SweepSettings, base_raw: Mapping[str, Any], space: SearchSpace, *, workers: int,
                studies: Mapping[int, optuna.Study], progress: bool | None = None,
                initializer: Callable[[int], None] | None = None) -> list[str]:
    """Run ``workers`` workers on this machine behind one progress bar of finished trials.

    With one worker the search runs in this process and its errors (``SweepError``) propagate; with more,
    each is a spawned process and a failing one does not stop the others.

    Args:
        studies: the fold studies (from :func:`~microexp.sweep.studies.prepare_studies`); the bar counts
            their finished trials.
        progress: the bar: None = shown when stderr is a terminal, False = off.
        initializer: called first in each worker process with its index (e.g. to set up its logging,
            which only the command line configures); must be picklable (a module-level function or a
            ``functools.partial`` of one).

    Returns:
        the names of worker processes that stopped with an error (empty: all fine).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    target = trial_target(settings, space)
    finished = lambda: sum(len(s.get_trials(deepcopy=False, states=FINISHED)) for s in studies.values())  # noqa: E731
    total = target * len(studies)
    with tqdm(total=total, initial=min(total, finished()), desc="trials", unit="trial", disable=True if progress is False else None,
              dynamic_ncols=True) as bar, logging_redirect_tqdm():
        if workers == 1:
            run_worker(settings, base_raw, space, worker=0, on_trial=lambda record: _refresh(bar, finished()))
            return []
        context = worker_context()
        processes = [context.Process(target=_worker_main, args=(settings, base_raw, space, index, workers, initializer),
                                     name=f"sweep-worker-{index}") for index in range(workers)]
        for process in processes:
            process.start()
        try:
            while any(p.is_alive() for p in processes):
                time.sleep(POLL_SECONDS)
                _refresh(bar, finished())
        except KeyboardInterrupt:
            for process in processes:
                process.terminate()
            raise
        for process in processes:
            process.join()
        _refresh(bar, finished())
    return [p.name for p in processes if p.exitcode not in (0, None)]


def trial_record(fold: int, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The printable record of a finished trial."""
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
    if trial.user_attrs.get("retry_of") is not None:
        reason = (reason + "; " if reason else "") + f"retry of trial {trial.user_attrs['retry_of']}"
    return TrialRecord(fold=fold, number=trial.number, state=trial.state.name, value=trial.value,
                       params=dict(trial.params), duration_s=duration, reason=reason)


def _worker_main(settings: SweepSettings, base_raw: Mapping[str, Any], space: SearchSpace, index: int, workers: int,
                 initializer: Callable[[int], None] | None) -> None:
    """Entry point of a worker process (spawned): the initializer, CPU threads, then the worker loop."""
    import torch

    if initializer is not None:
        initializer(index)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        run_worker(settings, base_raw, space, worker=index)
    except MicroexpError as exc:
        # the process's last word, one line like the command line's user errors; the exit code tells the parent
        print(f"microexp sweep worker {index}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _run_one(study: optuna.Study, objective: Callable[[optuna.Trial], float], fold: int,
             target: int) -> TrialRecord | None:
    """One trial through ``study.optimize`` (heartbeat, stale-trial handling, catch) with an admission check."""
    done: list[optuna.trial.FrozenTrial] = []

    def admitted_objective(trial: optuna.Trial) -> float:
        before = [t for t in study.get_trials(deepcopy=False, states=COUNTED) if t.number < trial.number]
        if len(before) >= target:
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial(f"fold study already has {target} trials; not run")
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {user_message(exc)}")
            raise

    study.optimize(admitted_objective, n_trials=1, catch=(Exception,), callbacks=[lambda s, t: done.append(t)])
    if not done or done[-1].user_attrs.get("surplus"):
        return None
    return trial_record(fold, done[-1])


def _refresh(bar: Any, value: int) -> None:
    bar.n = min(bar.total, value)
    bar.refresh()


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # absent, or another worker's trial is using it
        pass


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
