"""The per-fold Optuna studies of a sweep: settings, creating/loading and checking them, their trial slots.

Fold ``f``'s study is ``{study}-fold{f:02d}``; it records what it is a search of (base recipe, space,
metric, inner folds, outer fold subjects) in a user attribute, and a resumed study must match it. Every
study has ``trials`` slots: COMPLETE, PRUNED, RUNNING and WAITING (enqueued) trials occupy one each, so
the studies end with exactly ``trials`` finished trials however many workers race for the last slot.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from microexp.config import ExperimentConfig, build_config
from microexp.engine.experiment import ExperimentData, build_folds, load_experiment_data
from microexp.errors import ConfigError, MicroexpError
from microexp.splits import Fold
from microexp.sweep.objective import METRICS
from microexp.sweep.space import SearchSpace
from microexp.sweep.storage import default_storage_url, open_storage, redact_url

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVE", "ATTR", "COUNTED", "FINISHED", "PRUNERS", "SAMPLERS", "SweepError", "SweepSettings",
    "build_pruner", "build_sampler", "check_study", "counted", "fail_running", "fold_studies", "has_work",
    "open_fold_study", "prepare_studies", "retry_failed", "select_folds", "study_attrs", "study_name",
    "trial_target",
]

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
#: states that occupy one of a fold study's ``trials`` slots
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: states of trials that are finished or being run (a WAITING trial still needs a worker to run it)
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ATTR = "microexp"


class SweepError(MicroexpError):
    """A sweep cannot go on (e.g. every trial fails); the message says why and what to do."""


@dataclass(frozen=True)
class SweepSettings:
    """What to search and where to keep it (everything but the recipe and the space).

    Attributes:
        study: study name prefix; fold ``f``'s study is ``{study}-fold{f:02d}``.
        storage: Optuna storage URL (see :func:`microexp.sweep.storage.open_storage`).
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


def _first_difference(found: Any, expected: Any, prefix: str = "") -> str:
    if isinstance(found, dict) and isinstance(expected, dict):
        for key in sorted(set(found) | set(expected)):
            if found.get(key) != expected.get(key):
                return _first_difference(found.get(key), expected.get(key), f"{prefix}{key}.")
    return f" ({prefix.rstrip('.') or 'value'}: study has {found!r}, now {expected!r})"
