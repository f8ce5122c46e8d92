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
* :mod:`microexp.sweep.finalize` then retrains each fold's best configuration on the fold's training
  subjects and tests it once on its test subjects: the *nested test metrics*.

Trials report the inner validation metric after every epoch (step ``inner_fold * epochs + epoch``) so a
pruner (median, successive halving) can stop them; the reason is kept in ``trial.user_attrs``.
Several workers (processes, machines) share a study through its storage; a trial only runs when fewer
than ``trials`` non-failed trials precede it, so the studies end with exactly ``trials`` finished
(COMPLETE or PRUNED) trials each, however many workers race for the last slot. Enqueued (WAITING) trials
-- ``--retry-failed`` and heartbeat retries of dead workers' trials -- hold a slot and are run by the
next worker to ask (Optuna hands out WAITING trials first).

One concern per module:

- :mod:`.space`: search-space files (config keys -> Optuna distributions);
- :mod:`.objective`: the objective of one outer fold's study (a callable holding the data) and its inner
  splits;
- :mod:`.studies`: the settings, and creating, checking and loading the per-fold studies (sampler, pruner,
  trial slots, retries);
- :mod:`.worker`: one worker's loop over the fold studies, and the launch of N worker processes with a
  progress bar;
- :mod:`.storage`: storage URLs (SQLite, PostgreSQL, journal files);
- :mod:`.report`: ``trials.csv``, ``best.yaml`` and plots from the studies, and the per-fold status;
- :mod:`.finalize`: the final nested test of each fold's best configuration.

The names below are imported on first use, so ``import microexp.sweep`` (or its light modules
``space`` and ``storage``) imports neither torch nor Optuna. The final step is
:func:`microexp.sweep.finalize.finalize` (not a package-level name: ``microexp.sweep.finalize`` is its
module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchSpace": "microexp.sweep.space",
    "ParamSpec": "microexp.sweep.space",
    "load_space": "microexp.sweep.space",
    "parse_space": "microexp.sweep.space",
    "SweepObjective": "microexp.sweep.objective",
    "inner_splits": "microexp.sweep.objective",
    "trial_config": "microexp.sweep.objective",
    "SweepError": "microexp.sweep.studies",
    "SweepSettings": "microexp.sweep.studies",
    "check_study": "microexp.sweep.studies",
    "fold_studies": "microexp.sweep.studies",
    "open_fold_study": "microexp.sweep.studies",
    "prepare_studies": "microexp.sweep.studies",
    "study_name": "microexp.sweep.studies",
    "trial_target": "microexp.sweep.studies",
    "TrialRecord": "microexp.sweep.worker",
    "WorkerResult": "microexp.sweep.worker",
    "run_worker": "microexp.sweep.worker",
    "run_workers": "microexp.sweep.worker",
    "default_storage_url": "microexp.sweep.storage",
    "open_storage": "microexp.sweep.storage",
    "redact_url": "microexp.sweep.storage",
    "BestTrial": "microexp.sweep.report",
    "SweepReport": "microexp.sweep.report",
    "write_report": "microexp.sweep.report",
    "FinalResult": "microexp.sweep.finalize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'microexp.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
