"""Moved to the package :mod:`microexp.sweep` (``objective``, ``studies``, ``worker``: one concern each).

This alias keeps ``from microexp.engine.sweep import ...`` working for one release; import from
:mod:`microexp.sweep` (or its modules) instead.
"""

from microexp.sweep.objective import INNER_HOLDOUT, METRICS, SweepObjective, inner_splits, trial_config
from microexp.sweep.studies import (
    ACTIVE, ATTR, COUNTED, FINISHED, PRUNERS, SAMPLERS, SweepError, SweepSettings, build_pruner, build_sampler,
    check_study, counted, fail_running, fold_studies, has_work, open_fold_study, prepare_studies, retry_failed,
    select_folds, study_attrs, study_name, trial_target,
)
from microexp.sweep.worker import TrialRecord, WorkerResult, run_worker, trial_record

__all__ = [
    "ACTIVE", "ATTR", "COUNTED", "FINISHED", "INNER_HOLDOUT", "METRICS", "PRUNERS", "SAMPLERS", "SweepError",
    "SweepObjective", "SweepSettings", "TrialRecord", "WorkerResult", "build_pruner", "build_sampler",
    "check_study", "counted", "fail_running", "fold_studies", "has_work", "inner_splits", "open_fold_study",
    "prepare_studies", "retry_failed", "run_worker", "select_folds", "study_attrs", "study_name",
    "trial_config", "trial_record", "trial_target",
]
