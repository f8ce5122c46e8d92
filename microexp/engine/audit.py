"""The leakage audit: how much choosing an epoch on the test subjects inflates a cross-validation result.

Several public micro-expression repositories keep, for every held-out subject, the epoch whose *test*
accuracy was best. :func:`run_audit` measures what that does to a recipe: it trains the recipe's folds with
its schedule exactly as ``microexp train`` does (:func:`microexp.engine.experiment.run_fold`, fresh model per
fold), and after every epoch -- for the audit only -- loads that epoch's ``last.pt`` into a separate model
and scores it on the fold's test subjects. It then reports side by side:

* the **honest** estimate: the predictions ``run_fold`` returns (last epoch, or the inner-validation choice
  with ``train.model_selection=val``), pooled over folds -- what ``microexp train`` reports;
* the **oracle** estimate: per fold, the epoch with the best test score (ties: the earliest), those
  predictions pooled over folds. It is NOT a valid estimate: the test subjects chose the model.

Chosen by ``acc``, the oracle's pooled ACC is never below the honest one (the honest epoch is one of the
candidates in every fold, and pooled ACC is the clip-weighted mean of fold ACCs); its pooled UF1 and UAR
usually are higher but need not be, since per-fold choices do not maximise a pooled macro average.

The audit evaluation runs with the random-number state saved and restored, so training draws exactly the
batches and dropout masks of a ``microexp train`` run of the same recipe; ``microexp train`` itself is not
touched and still evaluates its test subjects once.

The audit writes into its own directory, marked by :data:`AUDIT_MARKER`, and refuses one that holds a
``microexp train`` run. Outputs: ``audit_run.json`` (the marker), ``config.yaml``, ``folds.json``,
``fold_XX/`` (what ``run_fold`` writes, plus ``epoch_predictions.csv``: ``epoch, clip, subject, [dataset,]
label, pred`` for every epoch), ``honest_predictions.csv``, ``oracle_predictions.csv``, ``audit.json`` and
``audit.md``. A killed audit resumes like ``train``: completed folds are kept, a fold resumes after its last
saved epoch.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from microexp.checkpoint import load_checkpoint, model_from_checkpoint
from microexp.config import ExperimentConfig
from microexp.engine.experiment import ExperimentData, build_dataset, model_spec, prepare_run, resume_folds, run_fold
from microexp.engine.precision import autocast_dtype, memory_format_for
from microexp.engine.progress import RunProgress
from microexp.engine.results import logged_epochs, write_csv
from microexp.engine.run_dir import LOCK_NAME, check_not_a_file, hold_lock, keep_config
from microexp.engine.trainer import evaluate
from microexp.errors import ConfigError
from microexp.fileio import write_json, write_text
from microexp.metrics import compute_metrics
from microexp.seed import seed_worker
from microexp.splits import Fold

__all__ = [
    "AUDIT_MARKER", "EPOCH_PREDICTIONS", "ORACLE_METRICS", "WARNING", "check_audit_dir", "format_audit",
    "oracle_epoch", "run_audit", "summarise_audit",
]

logger = logging.getLogger(__name__)

#: the file that marks a directory as an audit's (written before anything else)
AUDIT_MARKER = "audit_run.json"
#: per fold: every epoch's test predictions (``epoch, clip, subject, [dataset,] label, pred``)
EPOCH_PREDICTIONS = "epoch_predictions.csv"
#: the test scores the oracle may pick its epoch by
ORACLE_METRICS = ("acc", "uf1", "uar")
#: files only a ``microexp train`` run (or an audit) leaves in its directory
RUN_FILES = ("config.yaml", "folds.json", "metrics.json", "predictions.csv", "final")

WARNING = ("The oracle figure is NOT a valid estimate: for every fold it keeps the epoch that scored best on that "
           "fold's test subjects, so the test subjects chose the model. It only shows how much that practice "
           "inflates results. The honest figure (last epoch, or the choice made on validation subjects drawn from "
           "the training subjects) is the one to report.")

_KEYS = ("acc", "uf1", "uar")


def check_audit_dir(out: Path) -> None:
    """Refuse ``out`` when it holds a ``microexp train`` run (its files without :data:`AUDIT_MARKER`).

    Raises:
        ConfigError: one line naming the directory and the train-run files found.
    """
    if not out.is_dir() or (out / AUDIT_MARKER).exists():
        return
    found = [name for name in RUN_FILES if (out / name).exists()] + sorted(p.name for p in out.glob("fold_*"))[:1]
    if found:
        raise ConfigError(f"{out} holds a microexp train run ({', '.join(found)}), not an audit: the audit never "
                          "writes into a train run; use a new --out for it")


def run_audit(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    oracle_metric: str = "acc",
    progress: bool | None = None,
    recipe: str | Path | None = None,
) -> dict[str, Any]:
    """Train the recipe's folds as ``microexp train`` does, score every epoch on the test subjects, report.

    Args:
        config: the validated recipe.
        out_dir: the audit's own directory (created once every check has passed; resumed when it is one).
        oracle_metric: the test score the oracle picks each fold's epoch by (:data:`ORACLE_METRICS`).
        progress: tqdm bars (None: only on a terminal).
        recipe: the recipe file, recorded in ``config.yaml``.

    Returns:
        The report written to ``audit.json`` (see :func:`summarise_audit`).

    Raises:
        ConfigError: ``out_dir`` holds a ``microexp train`` run, or an audit of another config.
        RunLockedError: another process is using ``out_dir``.
        OutputError: ``out_dir`` cannot be written.
    """
    if oracle_metric not in ORACLE_METRICS:
        raise ConfigError(f"oracle metric {oracle_metric!r}: expected one of {', '.join(ORACLE_METRICS)}")
    if not config.model.emotion_head:
        raise ConfigError("model.emotion_head=false: the audit scores emotion predictions, and an AU-only model "
                          "makes none")
    out = Path(out_dir)
    check_not_a_file(out)
    check_audit_dir(out)
    data, folds, device, _ = prepare_run(config, out)  # the checks of microexp train, before out is touched
    with hold_lock(out / LOCK_NAME, what=f"audit directory {out}"):
        check_audit_dir(out)  # again, now that nobody else can be writing it
        folds = _start_audit(config, out, folds, data, recipe=recipe)
        logger.info("audit: %d clips, %d subjects, %d folds, model %s on %s; every epoch is also scored on the "
                    "test subjects, for the audit only", len(data.table), data.table["subject"].nunique(),
                    len(folds), config.model.name, device)
        tracker = RunProgress(logger)
        for fold in folds:
            fold_dir = out / f"fold_{fold.fold:02d}"
            if not (fold_dir / "predictions.csv").exists():
                tracker.plan(fold_dir.name, config.train.epochs - logged_epochs(fold_dir / "log.csv"))
        honest, per_epoch, honest_epochs = [], {}, {}
        for index, fold in enumerate(folds):
            fold_dir = out / f"fold_{fold.fold:02d}"
            label = f"fold {index + 1}/{len(folds)}"
            frame = _audit_fold(config, data, fold, fold_dir, device=device, progress=progress,
                                tracker=tracker.unit(fold_dir.name, label), label=label)
            honest.append(frame)
            per_epoch[fold.fold] = _read_epoch_predictions(fold_dir, config.train.epochs, complete=True)
            honest_epochs[fold.fold] = _honest_epoch(config, fold_dir)
        honest_frame = pd.concat(honest, ignore_index=True)
        report = summarise_audit(honest_frame, per_epoch, honest_epochs, class_names=data.class_names,
                                 oracle_metric=oracle_metric, datasets=_clip_datasets(data.table))
        run = {"protocol": config.cv.protocol, "model": config.model.name, "epochs": config.train.epochs,
               "model_selection": config.train.model_selection, "recipe": str(recipe) if recipe else None}
        report = {"kind": report.pop("kind"), "warning": report.pop("warning"), **run, **report}
        test_subjects = {fold.fold: sorted(int(s) for s in fold.test_subjects) for fold in folds}
        for item in report["per_fold"]:
            item["test_subjects"] = test_subjects[item["fold"]]
        write_csv(honest_frame, out / "honest_predictions.csv")
        write_csv(_oracle_predictions(per_epoch, report), out / "oracle_predictions.csv")
        write_json(out / "audit.json", report)
        write_text(out / "audit.md", audit_markdown(report))
    return report


# ----------------------------------------------------------------------------------------------------
# the pure part: which epoch the oracle keeps, and the report


def oracle_epoch(
    epoch_predictions: pd.DataFrame, *, num_classes: int, metric: str = "acc"
) -> tuple[int, dict[int, dict[str, float]]]:
    """The epoch whose test predictions score best on ``metric`` (ties: the earliest), and every epoch's scores.

    Args:
        epoch_predictions: one fold's ``epoch, label, pred`` rows (every epoch's test predictions).
        num_classes: the number of classes.
        metric: ``acc``, ``uf1`` or ``uar``.

    Returns:
        ``(epoch, {epoch: {acc, uf1, uar}})``.
    """
    if metric not in ORACLE_METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(ORACLE_METRICS)}")
    scores: dict[int, dict[str, float]] = {}
    for epoch, rows in epoch_predictions.groupby("epoch", sort=True):
        m = compute_metrics(rows["label"].to_numpy(), rows["pred"].to_numpy(), num_classes=num_classes)
        scores[int(epoch)] = {k: float(getattr(m, k)) for k in _KEYS}
    if not scores:
        raise ValueError("oracle_epoch: no epoch predictions")
    best = max(scores, key=lambda e: (scores[e][metric], -e))  # highest score, then the earliest epoch
    return best, scores


def summarise_audit(
    honest: pd.DataFrame,
    epoch_predictions: dict[int, pd.DataFrame],
    honest_epochs: dict[int, int],
    *,
    class_names: list[str],
    oracle_metric: str = "acc",
    datasets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The audit report: honest and oracle estimates pooled over folds, the gap, per dataset and per fold.

    Args:
        honest: the honest test predictions of every fold (``fold, clip, label, pred``), as ``run_fold`` returns.
        epoch_predictions: fold -> that fold's ``epoch, clip, label, pred`` rows for every epoch.
        honest_epochs: fold -> the epoch the honest model comes from.
        class_names: class names in label order.
        oracle_metric: the test score the oracle picks each fold's epoch by.
        datasets: clip -> source dataset; per-dataset figures are added when it names more than one.

    Returns:
        A JSON-ready dict: ``warning``, ``oracle_metric``, ``classes``, ``num_samples``, ``num_folds``,
        ``honest`` / ``oracle`` (``{description, pooled: {acc, uf1, uar}}``), ``gap`` (oracle - honest),
        ``per_dataset`` (name -> ``{num_samples, honest, oracle, gap}``; only for mixed tables) and
        ``per_fold`` (``fold, num_samples, honest_epoch, oracle_epoch, honest, oracle, epochs``).
    """
    num_classes = len(class_names)
    per_fold, oracle_parts = [], []
    for fold in sorted(epoch_predictions):
        rows = epoch_predictions[fold]
        chosen, scores = oracle_epoch(rows, num_classes=num_classes, metric=oracle_metric)
        fold_honest = honest[honest["fold"] == fold]
        per_fold.append({"fold": int(fold), "num_samples": len(fold_honest), "honest_epoch": int(honest_epochs[fold]),
                         "oracle_epoch": chosen, "honest": _scores(fold_honest, num_classes),
                         "oracle": scores[chosen],
                         "epochs": [{"epoch": e, **s} for e, s in sorted(scores.items())]})
        oracle_parts.append(rows[rows["epoch"] == chosen])
    oracle = pd.concat(oracle_parts, ignore_index=True)
    honest_pooled, oracle_pooled = _scores(honest, num_classes), _scores(oracle, num_classes)
    report: dict[str, Any] = {
        "kind": "microexp audit",
        "warning": WARNING,
        "oracle_metric": oracle_metric,
        "classes": list(class_names),
        "num_samples": len(honest),
        "num_folds": len(per_fold),
        "honest": {"description": "what microexp train reports: per fold the last epoch (or the epoch chosen on "
                                  "validation subjects drawn from the training subjects), pooled over folds; the "
                                  "figure to report", "pooled": honest_pooled},
        "oracle": {"description": f"NOT a valid estimate: per fold the epoch with the best test {oracle_metric} "
                                  "(selected on the test subjects), pooled over folds", "pooled": oracle_pooled},
        "gap": _gap(oracle_pooled, honest_pooled),
    }
    names = sorted(set((datasets or {}).values()))
    if len(names) > 1:
        report["per_dataset"] = {}
        honest_sets = honest["clip"].astype(str).map(datasets)
        oracle_sets = oracle["clip"].astype(str).map(datasets)
        for name in names:
            h = _scores(honest[honest_sets == name], num_classes)
            o = _scores(oracle[oracle_sets == name], num_classes)
            report["per_dataset"][name] = {"num_samples": int((honest_sets == name).sum()), "honest": h,
                                           "oracle": o, "gap": _gap(o, h)}
    report["per_fold"] = per_fold
    return report


def _scores(rows: pd.DataFrame, num_classes: int) -> dict[str, float]:
    if rows.empty:
        return {k: float("nan") for k in _KEYS}
    m = compute_metrics(rows["label"].to_numpy(), rows["pred"].to_numpy(), num_classes=num_classes)
    return {k: float(getattr(m, k)) for k in _KEYS}


def _gap(oracle: dict[str, float], honest: dict[str, float]) -> dict[str, float]:
    return {k: oracle[k] - honest[k] for k in _KEYS}


def _oracle_predictions(per_epoch: dict[int, pd.DataFrame], report: dict[str, Any]) -> pd.DataFrame:
    chosen = {item["fold"]: item["oracle_epoch"] for item in report["per_fold"]}
    parts = []
    for fold, rows in sorted(per_epoch.items()):
        part = rows[rows["epoch"] == chosen[fold]].copy()
        part.insert(0, "fold", fold)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------------------------------
# the report as text


def format_audit(report: dict[str, Any]) -> str:
    """The short table the CLI prints: honest, oracle, gap (pooled, then per dataset), the chosen epochs."""
    lines = [f"leakage audit: {report.get('protocol', '?')}, {report['num_folds']} folds, {report['num_samples']} "
             f"test clips, {report.get('epochs', '?')} epochs; oracle picks by test {report['oracle_metric']}",
             f"{'':<30}{'ACC':>8}{'UF1':>8}{'UAR':>8}"]
    lines += _rows("", report)
    for name, values in report.get("per_dataset", {}).items():
        lines.append(f"{name} ({values['num_samples']} clips):")
        lines += _rows("  ", values)
    lines.append("epochs (honest -> oracle) per fold: " + ", ".join(
        f"{f['fold']}: {f['honest_epoch'] + 1}->{f['oracle_epoch'] + 1}" for f in report["per_fold"]))
    lines.append("WARNING: " + report["warning"])
    return "\n".join(lines)


def _rows(indent: str, values: dict[str, Any]) -> list[str]:
    honest = values["honest"]["pooled"] if "pooled" in values["honest"] else values["honest"]
    oracle = values["oracle"]["pooled"] if "pooled" in values["oracle"] else values["oracle"]
    return [f"{indent + 'honest (report this)':<30}" + "".join(f"{_num(honest[k]):>8}" for k in _KEYS),
            f"{indent + 'oracle (NOT valid)':<30}" + "".join(f"{_num(oracle[k]):>8}" for k in _KEYS),
            f"{indent + 'gap (oracle - honest)':<30}"
            + "".join(f"{_num(values['gap'][k], sign=True):>8}" for k in _KEYS)]


def _num(value: float | None, *, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def audit_markdown(report: dict[str, Any]) -> str:
    """``audit.md``: the warning, the pooled and per-dataset tables, and every fold's chosen epochs."""
    lines = ["# Leakage audit: honest versus oracle epoch selection", "",
             f"**{report['warning']}**", "",
             f"Protocol {report.get('protocol', '?')}, model {report.get('model', '?')}, {report['num_folds']} folds, "
             f"{report['num_samples']} test clips, {report.get('epochs', '?')} epochs; honest selection: "
             f"{report.get('model_selection', '?')}; the oracle keeps per fold the epoch with the best test "
             f"{report['oracle_metric']} (ties: the earliest).", "",
             "| estimate | clips | ACC | UF1 | UAR |", "|---|---|---|---|---|"]
    groups = [("all", report["num_samples"], report["honest"]["pooled"], report["oracle"]["pooled"], report["gap"])]
    groups += [(name, v["num_samples"], v["honest"], v["oracle"], v["gap"])
               for name, v in report.get("per_dataset", {}).items()]
    for name, count, honest, oracle, gap in groups:
        prefix = "" if name == "all" else f"{name}: "
        lines.append(f"| {prefix}honest (report this) | {count} | " + " | ".join(_num(honest[k]) for k in _KEYS) + " |")
        lines.append(f"| {prefix}oracle (NOT a valid estimate) | {count} | "
                     + " | ".join(_num(oracle[k]) for k in _KEYS) + " |")
        lines.append(f"| {prefix}gap (oracle - honest) | {count} | "
                     + " | ".join(_num(gap[k], sign=True) for k in _KEYS) + " |")
    lines += ["", "Per fold (epochs counted from 1):", "",
              "| fold | test subjects | clips | honest epoch | oracle epoch | honest ACC | oracle ACC | "
              f"oracle test {report['oracle_metric'].upper()} by epoch |", "|---|---|---|---|---|---|---|---|"]
    for f in report["per_fold"]:
        by_epoch = " ".join(_num(e[report["oracle_metric"]]) for e in f["epochs"])
        subjects = ", ".join(map(str, f.get("test_subjects", []))) or "?"
        lines.append(f"| {f['fold']} | {subjects} | {f['num_samples']} | {f['honest_epoch'] + 1} | "
                     f"{f['oracle_epoch'] + 1} | {_num(f['honest']['acc'])} | {_num(f['oracle']['acc'])} | "
                     f"{by_epoch} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# the run: the directory, one fold, the per-epoch test pass


def _start_audit(config: ExperimentConfig, out: Path, folds: list[Fold], data: ExperimentData, *,
                 recipe: str | Path | None) -> list[Fold]:
    """Mark ``out`` as an audit, write or check ``config.yaml``, and return the folds (``folds.json``'s on resume)."""
    marker = out / AUDIT_MARKER
    if not marker.exists():
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json(marker, {"kind": "microexp audit", "note": "an audit directory, not a microexp train run; "
                            "see audit.md", "started": started})
    keep_config(config, out, what="an audit", recipe=recipe)
    return resume_folds(config, out, folds, data)  # folds.json, as train keeps it


def _audit_fold(config: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, *,
                device: torch.device, progress: bool | None, tracker: Any, label: str) -> pd.DataFrame:
    """One fold: ``run_fold`` as ``microexp train`` runs it, with every epoch's ``last.pt`` also scored on the
    test subjects; returns the fold's honest predictions (kept when the fold is already complete)."""
    if (fold_dir / "predictions.csv").exists():
        logger.info("%s (%s) already complete: kept", label, fold_dir.name)
        return pd.read_csv(fold_dir / "predictions.csv")
    scorer = _EpochScorer(config, data, fold, fold_dir, device=device, label=label)
    done = _saved_epochs(fold_dir / "last.pt")
    recorded = _read_epoch_predictions(fold_dir, done, complete=False)
    missing = sorted(set(range(done)) - set(recorded["epoch"]))
    if missing == [done - 1]:  # killed between saving last.pt and scoring it
        recorded = scorer.score(done - 1, recorded)
    elif missing:
        raise ConfigError(f"{fold_dir / EPOCH_PREDICTIONS}: lacks the test predictions of epoch(s) "
                          f"{', '.join(str(e + 1) for e in missing)}, which cannot be scored any more; delete "
                          f"{fold_dir} to rerun that fold")
    scorer.rows = recorded
    logger.info("%s (%s): %d training, %d validation, %d test subjects", label, fold_dir.name,
                len(fold.train_subjects), len(fold.val_subjects), len(fold.test_subjects))
    return run_fold(config, data, fold, fold_dir, device=device, progress=progress, tracker=tracker,
                    on_epoch=lambda epoch, record: scorer.on_epoch(epoch))


class _EpochScorer:
    """Scores a fold's ``last.pt`` on its test subjects after each epoch, into ``epoch_predictions.csv``.

    Its own model (created once, weights loaded from ``last.pt`` each epoch) and its own test loader: the
    model ``run_fold`` trains is never touched, and the random state is restored after each pass.
    """

    def __init__(self, config: ExperimentConfig, data: ExperimentData, fold: Fold, fold_dir: Path, *,
                 device: torch.device, label: str) -> None:
        self.config, self.fold_dir, self.device, self.fold, self.label = config, fold_dir, device, fold.fold, label
        self.num_classes = len(data.class_names)
        self.rows = pd.DataFrame()
        # built from the first last.pt scored: its arguments are the fold's (AU vocabulary and task heads included)
        self.model: torch.nn.Module | None = None
        spec = model_spec(config)
        self.test_table = data.table[data.table["subject"].isin(fold.test_subjects)]
        self.loader = torch.utils.data.DataLoader(
            build_dataset(config, self.test_table, spec, train=False), batch_size=config.train.batch_size,
            num_workers=config.data.num_workers, worker_init_fn=seed_worker, persistent_workers=False,
            pin_memory=device.type == "cuda")

    def on_epoch(self, epoch: int) -> None:
        self.rows = self.score(epoch, self.rows)

    def score(self, epoch: int, rows: pd.DataFrame) -> pd.DataFrame:
        """Score ``last.pt`` (which must hold ``epoch``) and append its predictions to ``rows``; write them."""
        payload = load_checkpoint(self.fold_dir / "last.pt")
        if int(payload["epoch"]) != epoch:
            raise RuntimeError(f"{self.fold_dir / 'last.pt'} holds epoch {payload['epoch']}, expected {epoch}")
        if self.model is None:
            with _preserved_random_state(self.device):  # building draws initial weights
                self.model = model_from_checkpoint(payload, source=str(self.fold_dir / "last.pt")).to(self.device)
        else:
            self.model.load_state_dict(payload["state_dict"])
        with _preserved_random_state(self.device):
            train = self.config.train
            predictions = evaluate(
                self.model, self.loader, device=self.device,
                dtype=autocast_dtype(self.device, amp=train.amp, amp_dtype=train.amp_dtype),
                memory_format=memory_format_for(self.model, device=self.device, channels_last=train.channels_last),
                progress=False, description=f"fold {self.fold} audit test")
        frame = pd.DataFrame({"epoch": epoch, "clip": predictions.clips, "subject": predictions.subjects,
                              "label": predictions.labels, "pred": predictions.predicted})
        if "dataset" in self.test_table.columns:
            datasets = dict(zip(self.test_table["clip"].astype(str), self.test_table["dataset"]))
            frame.insert(3, "dataset", frame["clip"].map(datasets))
        m = compute_metrics(frame["label"].to_numpy(), frame["pred"].to_numpy(), num_classes=self.num_classes)
        logger.info("%s epoch %d/%d: test acc %.3f uf1 %.3f uar %.3f (scored for the audit only)", self.label,
                    epoch + 1, self.config.train.epochs, m.acc, m.uf1, m.uar)
        rows = pd.concat([rows, frame], ignore_index=True) if len(rows) else frame
        write_csv(rows, self.fold_dir / EPOCH_PREDICTIONS)
        return rows


@contextlib.contextmanager
def _preserved_random_state(device: torch.device) -> Iterator[None]:
    """Run the block without changing Python's, NumPy's or torch's random state (a DataLoader pass draws a seed)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _saved_epochs(last: Path) -> int:
    """How many epochs ``last.pt`` holds (0 when there is none)."""
    return int(load_checkpoint(last)["epoch"]) + 1 if last.exists() else 0


def _read_epoch_predictions(fold_dir: Path, epochs: int, *, complete: bool) -> pd.DataFrame:
    """``epoch_predictions.csv``'s rows of epochs ``< epochs``; with ``complete``, every one of them must be there."""
    path = fold_dir / EPOCH_PREDICTIONS
    rows = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["epoch", "clip", "subject", "label", "pred"])
    rows = rows[rows["epoch"].astype("int64") < epochs].reset_index(drop=True)
    if complete:
        missing = sorted(set(range(epochs)) - set(rows["epoch"].astype("int64")))
        if missing:
            raise ConfigError(f"{path}: lacks the test predictions of epoch(s) "
                              f"{', '.join(str(e + 1) for e in missing)} although the fold is complete; delete "
                              f"{fold_dir} to rerun that fold")
    return rows


def _honest_epoch(config: ExperimentConfig, fold_dir: Path) -> int:
    """The epoch of the model ``run_fold`` tested: the validation choice (``best.pt``) or the last epoch."""
    best = fold_dir / "best.pt"
    if config.train.model_selection == "val" and best.exists():
        return int(load_checkpoint(best)["epoch"])
    return config.train.epochs - 1


def _clip_datasets(table: pd.DataFrame) -> dict[str, str] | None:
    if "dataset" not in table.columns:
        return None
    return {str(c): str(d) for c, d in zip(table["clip"], table["dataset"]) if pd.notna(d)}
