"""Nested hyperparameter studies with Optuna: one study per outer fold, scored on inner validation subjects.

The search is nested per outer fold, so the number that a sweep reports as a test result is honest:

* the outer folds come from the recipe's ``cv`` section (:func:`microexp.engine.experiment.build_folds`);
* for outer fold ``f`` there is one study ``{study}-fold{f:02d}``; its objective (:class:`SweepObjective`)
  holds only the clips of fold ``f``'s training subjects (its ``train`` and ``val`` roles) -- the test
  subjects' clips are removed from the table before the objective exists, so no trial can read them;
* a trial trains on inner training subjects and is scored (``--metric``: UF1, UAR or ACC) on inner
  validation subjects carved from fold ``f``'s training subjects by the subject-grouped splitter
  (``inner_folds=1``: the first split of a 4-fold, i.e. a quarter of the subjects; ``k > 1``: the mean
  over an inner k-fold);
* :mod:`microexp.engine.sweep_finalize` then retrains each fold's best configuration on the fold's
  training subjects and tests it once on its test subjects: the *nested test metrics*.

Trials report the inner validation metric after every epoch (step ``inner_fold * epochs + epoch``) so a
pruner (median, successive halving) can stop them; the reason is kept in ``trial.user_attrs``.
Several workers (processes, machines) share a study through its storage; a trial only runs when fewer
than ``trials`` non-failed trials precede it, so the studies end with exactly ``trials`` finished
(COMPLETE or PRUNED) trials each, however many workers race for the last slot. Enqueued (WAITING) trials
-- ``--retry-failed`` and heartbeat retries of dead workers' trials -- hold a slot and are run by the
next worker to ask (Optuna hands out WAITING trials first).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from microexp.config import ExperimentConfig, build_config
from microexp.engine.experiment import ExperimentData, build_folds, load_experiment_data, run_fold
from microexp.engine.sweep_space import SearchSpace, apply_params, flatten
from microexp.engine.sweep_storage import default_storage_url, open_storage, redact_url
from microexp.engine.trainer import select_device
from microexp.errors import ConfigError, MicroexpError
from microexp.metrics import compute_metrics
from microexp.splits import Fold, kfold_subject_splits

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS", "PRUNERS", "SAMPLERS", "SweepError", "SweepObjective", "SweepSettings", "TrialRecord",
    "WorkerResult", "build_pruner", "build_sampler", "fail_running", "fold_studies", "inner_splits",
    "check_study", "open_fold_study", "prepare_studies", "retry_failed", "run_worker", "select_folds",
    "study_name", "trial_config", "trial_record", "trial_target",
]

METRICS = ("uf1", "uar", "acc")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
#: a single inner validation split holds out 1/INNER_HOLDOUT of the training subjects
INNER_HOLDOUT = 4
#: states that occupy one of a fold study's ``trials`` slots
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: states of trials that are finished or being run (a WAITING trial still needs a worker to run it)
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ATTR = "microexp"


class SweepError(MicroexpError):
    """A sweep cannot go on (e.g. every trial fails); the message says why and what to do."""


class _SurplusTrial(Exception):
    """This trial was asked after another worker filled the study's last slot; it is not run."""


@dataclass(frozen=True)
class SweepSettings:
    """What to search and where to keep it (everything but the recipe and the space).

    Attributes:
        study: study name prefix; fold ``f``'s study is ``{study}-fold{f:02d}``.
        storage: Optuna storage URL (see :func:`microexp.engine.sweep_storage.open_storage`).
        out_dir: the sweep directory (``best.yaml``, ``trials.csv``, plots, ``final/``).
        trials: finished (COMPLETE + PRUNED) trials wanted per outer fold.
        metric: the objective, ``uf1``, ``uar`` or ``acc`` on inner validation subjects (maximised).
        sampler: ``tpe``, ``random`` or ``grid`` (categorical-only spaces).
        pruner: ``median``, ``halving`` or ``none``.
        seed: sampler seed (the recipe's ``seed`` still seeds training).
        inner_folds: 1 = one inner validation split, k > 1 = mean over an inner k-fold.
        outer_folds: search only these outer folds (None = all).
        timeout: seconds after which a worker starts no new trial (> 0; None = no limit).
        max_failures: a worker stops after this many failed trials in a row (>= 1).
    """

    study: str
    storage: str
    out_dir: Path
    trials: int
    metric: str = "uf1"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    inner_folds: int = 1
    outer_folds: tuple[int, ...] | None = None
    timeout: float | None = None
    max_failures: int = 5

    def __post_init__(self) -> None:
        choices = {"--metric": (self.metric, METRICS), "--sampler": (self.sampler, SAMPLERS),
                   "--pruner": (self.pruner, PRUNERS)}
        for flag, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
        if self.trials < 0:
            raise ConfigError(f"--trials {self.trials}: expected an integer >= 0")
        if self.inner_folds < 1:
            raise ConfigError(f"--inner-folds {self.inner_folds}: expected an integer >= 1")
        if self.max_failures < 1:
            raise ConfigError(f"--max-failures {self.max_failures}: expected an integer >= 1")
        if self.timeout is not None and not self.timeout > 0:  # also rejects nan
            raise ConfigError(f"--timeout {self.timeout}: expected a number of seconds > 0")
        if not self.study or "/" in self.study:
            raise ConfigError(f"--study {self.study!r}: expected a non-empty name without '/'")


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


def study_name(study: str, fold: int) -> str:
    """``{study}-fold{fold:02d}``"""
    return f"{study}-fold{fold:02d}"


def trial_target(settings: SweepSettings, space: SearchSpace) -> int:
    """Trials wanted per fold study; a grid has at most as many points as its product of choices."""
    if settings.sampler == "grid":
        size = math.prod(len(v) for v in space.grid().values())
        if settings.trials > size:
            logger.info("grid of %d points: %d trials per fold, not %d", size, size, settings.trials)
        return min(settings.trials, size)
    return settings.trials


def select_folds(folds: Sequence[Fold], outer: Sequence[int] | None) -> list[Fold]:
    """The outer folds to search (all when ``outer`` is None)."""
    if outer is None:
        return list(folds)
    numbers = [f.fold for f in folds]
    unknown = [f for f in outer if f not in numbers]
    if unknown:
        raise ConfigError(f"--outer-folds {','.join(map(str, outer))}: fold(s) {unknown} do not exist; the recipe's "
                          f"protocol has folds {numbers[0]}..{numbers[-1]}")
    return [f for f in folds if f.fold in set(outer)]


def inner_splits(table: Any, fold: Fold, *, k: int, seed: int, stratify: bool) -> list[Fold]:
    """Inner train/validation splits of an outer fold's training subjects (``train`` + ``val`` roles).

    Each inner fold is returned as a :class:`Fold` whose ``val_subjects`` and ``test_subjects`` are both
    the inner validation subjects: ``run_fold`` scores them every epoch (intermediate values) and once at
    the end (the selected model's trial value). The outer fold's test subjects appear in none of them.

    Args:
        table: the clip table (``subject`` and ``label`` columns).
        fold: the outer fold.
        k: 1 = one split holding out 1/4 of the subjects (1/n with n < 4 subjects); k > 1 = a
            subject-grouped k-fold.
        seed: split seed (fixed for the whole study, so every trial sees the same inner splits).
        stratify: stratify the inner folds by class (as ``cv.stratify``).
    """
    pool = set(fold.train_subjects) | set(fold.val_subjects)
    inner_table = table[table["subject"].isin(pool)]
    present = inner_table["subject"].nunique()
    if present < 2 or (k > 1 and present < k):
        raise ConfigError(f"outer fold {fold.fold} has {present} training subject(s) with clips; "
                          f"{'--inner-folds ' + str(k) if k > 1 else 'an inner validation split'} needs at least "
                          f"{max(k, 2)}")
    splits = kfold_subject_splits(inner_table["subject"].to_numpy(), inner_table["label"].to_numpy(),
                                  k=min(INNER_HOLDOUT, present) if k == 1 else k, seed=seed, stratify=stratify)
    chosen = splits[:1] if k == 1 else splits
    return [Fold(fold=s.fold, train_subjects=s.train_subjects, val_subjects=s.test_subjects,
                 test_subjects=s.test_subjects) for s in chosen]


def trial_config(base_raw: Mapping[str, Any], params: Mapping[str, Any], *, source: str = "trial") -> ExperimentConfig:
    """Base recipe (after ``--set``) plus a trial's parameters, validated like a recipe.

    Raises:
        ConfigError: the combination is not a valid recipe, or the model rejects its arguments.
    """
    # build_config checks the model name and arguments too (on the meta device: no weights are built)
    return build_config(apply_params(base_raw, params), source=source)


class SweepObjective:
    """The Optuna objective of one outer fold's study (a callable holding the data, per Optuna's examples).

    Args:
        base_raw: the base recipe mapping with ``--set`` overrides applied.
        space: the search space.
        data: the whole labelled clip table; the objective keeps only the outer fold's training subjects.
        fold: the outer fold.
        metric: ``uf1``, ``uar`` or ``acc`` (inner validation, maximised).
        inner_folds: see :func:`inner_splits`.
        work_dir: where trials' temporary run folders go (removed after each inner fold).
        progress: per-epoch progress bars.
    """

    def __init__(self, *, base_raw: Mapping[str, Any], space: SearchSpace, data: ExperimentData, fold: Fold,
                 metric: str = "uf1", inner_folds: int = 1, work_dir: str | Path | None = None,
                 progress: bool | None = False) -> None:
        if metric not in METRICS:
            raise ConfigError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
        self.base_raw = dict(base_raw)
        base = build_config(base_raw, source="base recipe")
        self.base_values = flatten(base.to_dict())
        self.space = space
        self.fold = fold
        self.metric = metric
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.progress = progress
        allowed = set(fold.train_subjects) | set(fold.val_subjects)
        # the outer test subjects' clips are gone before any trial exists: the search cannot read them
        table = data.table[data.table["subject"].isin(allowed)].reset_index(drop=True)
        self.data = ExperimentData(table=table, class_names=list(data.class_names))
        self.inner = inner_splits(table, fold, k=inner_folds, seed=base.seed * 1000 + fold.fold,
                                  stratify=base.cv.stratify)

    def __call__(self, trial: Any) -> float:
        params = self.space.suggest(trial, self.base_values)
        try:
            config = trial_config(self.base_raw, params, source=f"fold {self.fold.fold} trial {trial.number}")
        except ConfigError as exc:
            reason = f"invalid config: {_one_line(exc)}"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason) from None
        trial.set_user_attr("config", config.to_dict())
        device = select_device(config.device)
        scores = []
        for inner in self.inner:
            if self.work_dir is not None:
                self.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"fold{self.fold.fold:02d}-trial{trial.number:04d}-", dir=self.work_dir))
            try:
                frame = run_fold(config, self.data, inner, work / f"inner_{inner.fold:02d}", device=device,
                                 progress=self.progress,
                                 on_epoch=functools.partial(self._report, trial, inner.fold, config.train.epochs))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            metrics = compute_metrics(frame["label"].to_numpy(), frame["pred"].to_numpy(),
                                      num_classes=len(self.data.class_names))
            scores.append(float(getattr(metrics, self.metric)))
        trial.set_user_attr("inner_scores", scores)
        return float(np.mean(scores))

    def _report(self, trial: Any, inner_fold: int, epochs: int, epoch: int, record: Mapping[str, Any]) -> None:
        value = float(record[f"val_{self.metric}"])
        step = inner_fold * epochs + epoch
        trial.report(value, step)
        if trial.should_prune():
            reason = (f"pruned at step {step} (inner fold {inner_fold}, epoch {epoch + 1}/{epochs}): "
                      f"val_{self.metric}={value:.4f}")
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)


def build_sampler(name: str, *, seed: int, space: SearchSpace, trials: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name.

    TPE starts with ``min(10, max(3, trials // 3))`` random trials (Optuna's 10 would leave a small sweep
    purely random).
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise ConfigError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")


def build_pruner(name: str) -> optuna.pruners.BasePruner:
    """``median`` (after 3 finished trials, never at the first step), ``halving`` or ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: expected one of {', '.join(PRUNERS)}")


def study_attrs(settings: SweepSettings, base: ExperimentConfig, space: SearchSpace, fold: Fold) -> dict[str, Any]:
    """What a fold study is a search of; a resumed study must match it."""
    attrs = {"base_config": base.to_dict(), "space": space.to_dict(), "metric": settings.metric,
             "inner_folds": settings.inner_folds, "outer_fold": fold.to_dict()}
    return json.loads(json.dumps(attrs))


def open_fold_study(storage: Any, settings: SweepSettings, fold: Fold, *, base: ExperimentConfig,
                    space: SearchSpace, sampler: optuna.samplers.BaseSampler | None = None,
                    pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create or load (``load_if_exists``) fold ``fold``'s study and check it searches the same thing."""
    name = study_name(settings.study, fold.fold)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if study.user_attrs.get(ATTR) is None:
        study.set_user_attr(ATTR, study_attrs(settings, base, space, fold))
        return study
    check_study(study, settings, fold, base=base, space=space)
    return study


def check_study(study: optuna.Study, settings: SweepSettings, fold: Fold, *, base: ExperimentConfig,
                space: SearchSpace | None) -> None:
    """Check that an existing fold study searched ``base``/``space``/``--metric``/``--inner-folds`` on ``fold``.

    Args:
        space: the search space, or None to skip that comparison (e.g. finalizing, which uses each best
            trial's full recipe and needs no space).

    Raises:
        ConfigError: the study was made with other settings (or not by microexp sweep).
    """
    name = study_name(settings.study, fold.fold)
    where = redact_url(settings.storage)
    found = study.user_attrs.get(ATTR)
    if found is None:
        raise ConfigError(f"study {name!r} in {where} was not made by microexp sweep (no {ATTR!r} attribute); "
                          "choose another --study")
    expected = study_attrs(settings, base, space if space is not None else SearchSpace(()), fold)
    for key, label in (("base_config", "base recipe (--config/--set)"), ("space", "search space (--space)"),
                       ("metric", "--metric"), ("inner_folds", "--inner-folds"),
                       ("outer_fold", "outer fold subjects (data or cv section)")):
        if key == "space" and space is None:
            continue
        if found.get(key) != expected[key]:
            detail = _first_difference(found.get(key), expected[key])
            raise ConfigError(f"study {name!r} in {where} was made with another {label}{detail}; resume "
                              "with the same settings or choose a new --study")


def prepare_studies(settings: SweepSettings, base_raw: Mapping[str, Any], space: SearchSpace, *,
                    retry: bool = False, fail_stale: bool = False) -> tuple[ExperimentData, list[Fold], dict[int, optuna.Study]]:
    """Load the data, build the outer folds and create (or check) every selected fold study.

    Run once before workers start, so that workers only load existing studies.

    Args:
        retry: enqueue the parameters of failed trials again (``--retry-failed``).
        fail_stale: mark RUNNING trials FAIL first (``--fail-running``; only when no worker is alive).
    """
    base = build_config(base_raw, source="base recipe")
    if settings.sampler == "grid":
        space.grid()  # raises for a space with ranges, before any data is read
    data = load_experiment_data(base)
    folds = select_folds(build_folds(base, data.table), settings.outer_folds)
    # only the default storage (inside --out) may create its folder; a --storage path must exist
    storage = open_storage(settings.storage, create_folder=settings.storage == default_storage_url(settings.out_dir))
    target = trial_target(settings, space)
    studies = {}
    for fold in folds:
        study = open_fold_study(storage, settings, fold, base=base, space=space)
        if fail_stale:
            fail_running(study, storage)
        elif isinstance(storage, optuna.storages.RDBStorage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # heartbeat older than the grace period: worker gone
        if retry:
            retry_failed(study, target)
        studies[fold.fold] = study
    return data, folds, studies


def fold_studies(settings: SweepSettings, folds: Sequence[int]) -> dict[int, optuna.Study]:
    """Load existing fold studies (read-only use: reports, finalize)."""
    storage = open_storage(settings.storage, heartbeat=False)
    return {f: optuna.load_study(study_name=study_name(settings.study, f), storage=storage) for f in folds}


def counted(study: optuna.Study) -> int:
    """Trials occupying a slot: COMPLETE, PRUNED, RUNNING and WAITING (enqueued)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def has_work(study: optuna.Study, target: int) -> bool:
    """True while trials are to be run: fewer than ``target`` finished or running, or enqueued ones waiting.

    WAITING trials (``--retry-failed``, heartbeat retries) hold a slot but still need a worker; counting
    them as done would leave them unrun forever. A WAITING trial asked when the study is already full is
    turned away by the admission check (marked surplus), so the study never overshoots ``target``.
    """
    states = [t.state for t in study.get_trials(deepcopy=False, states=(*ACTIVE, TrialState.WAITING))]
    return sum(s != TrialState.WAITING for s in states) < target or TrialState.WAITING in states


def retry_failed(study: optuna.Study, target: int) -> list[int]:
    """Enqueue failed trials' parameters again, as many as there are free slots; returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried |= {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    free = target - counted(study)
    enqueued = []
    for t in trials:
        if free <= 0:
            break
        if t.state == TrialState.FAIL and not t.user_attrs.get("surplus") and t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            enqueued.append(t.number)
            free -= 1
    if enqueued:
        logger.info("%s: re-enqueued failed trial(s) %s", study.study_name, enqueued)
    return enqueued


def fail_running(study: optuna.Study, storage: Any) -> list[int]:
    """Mark RUNNING trials FAIL (their workers are gone); returns their numbers."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, "fail_reason", "marked failed by --fail-running (worker gone)")
        storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    if stale:
        logger.info("%s: marked RUNNING trial(s) %s failed", study.study_name, [t.number for t in stale])
    return [t.number for t in stale]


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


def trial_record(fold: int, trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The printable record of a finished trial."""
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
    if trial.user_attrs.get("retry_of") is not None:
        reason = (reason + "; " if reason else "") + f"retry of trial {trial.user_attrs['retry_of']}"
    return TrialRecord(fold=fold, number=trial.number, state=trial.state.name, value=trial.value,
                       params=dict(trial.params), duration_s=duration, reason=reason)


def _run_one(study: optuna.Study, objective: SweepObjective, fold: int, target: int) -> TrialRecord | None:
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
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {_one_line(exc)}")
            raise

    study.optimize(admitted_objective, n_trials=1, catch=(Exception,), callbacks=[lambda s, t: done.append(t)])
    if not done or done[-1].user_attrs.get("surplus"):
        return None
    return trial_record(fold, done[-1])


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # absent, or another worker's trial is using it
        pass


def _first_difference(found: Any, expected: Any, prefix: str = "") -> str:
    if isinstance(found, dict) and isinstance(expected, dict):
        for key in sorted(set(found) | set(expected)):
            if found.get(key) != expected.get(key):
                return _first_difference(found.get(key), expected.get(key), f"{prefix}{key}.")
    return f" ({prefix.rstrip('.') or 'value'}: study has {found!r}, now {expected!r})"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _one_line(exc: BaseException) -> str:
    from microexp.errors import user_message

    return user_message(exc)
