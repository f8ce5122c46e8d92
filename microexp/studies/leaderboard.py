"""The DFME leaderboard: every registered model under one protocol, ranked in one table (issue 18, item 5).

Cells: every model of :func:`microexp.models.list_models` (or those ``--models`` names, or the CPU-friendly ones
with ``--cpu-friendly`` and under ``--quick``) x frame sizes (``--sizes``, default 112) x balance handling
(:data:`BALANCE`: none vs class-balanced sampling) x seeds. Each model runs the recipe of its modality
(:func:`model_recipe`): its own synthetic-benchmark recipe where one exists, else the recipe of its family and
modality with ``model.name`` replaced. The pretraining column says what the weights started from: scratch,
unless ``--set model.pretrained=...`` supplies weights (none can be downloaded here).

The table (:func:`_leaderboard_report`): one row per model x size x balance, ranked by pooled UF1 (ties: pooled
UAR), with trainable parameters, training throughput (:func:`training_clips_per_second`), fold-mean UF1 and UAR
± fold std, and pooled UF1 and UAR; ``leaderboard.png`` (UF1 bars in rank order) and ``leaderboard_params.png``
(pooled UF1 against parameters).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from microexp.errors import ConfigError
from microexp.studies.dfme import _chance, _seeds
from microexp.studies.grid import Cell, CellResult
from microexp.studies.study import Report, Study, StudyOptions
from microexp.studies.tables import (
    aggregate_over_seeds,
    bar_chart,
    format_count,
    format_duration,
    format_mean_std,
    markdown_table,
    results_frame,
    scatter_chart,
    write_csv,
    write_table,
)

logger = logging.getLogger(__name__)

__all__ = ["BALANCE", "DEFAULT_SIZES", "FALLBACK_RECIPES", "STUDIES", "Entry", "leaderboard_study", "model_recipe",
           "rank_rows", "select_models", "training_clips_per_second"]

#: the balance axis: label -> overrides. ``class_balanced`` sampling with cross-entropy is the best setting of the
#: earlier imbalance study (recipes/README.md, "Imbalance"), which ran on the same synthetic benchmark and folds:
#: both settings are shown for every model, so the choice does not rank one model above another.
BALANCE: dict[str, tuple[str, ...]] = {
    "none": ("train.sampler=none", "loss.name=ce"),
    "class_balanced": ("train.sampler=class_balanced", "loss.name=ce"),
}
#: frame sides of the main ranking (``--sizes`` replaces them); ``--quick`` uses its own 32 px
DEFAULT_SIZES = (112,)
QUICK_SIZE = 32
#: the recipe a model without its own synthetic-benchmark recipe runs, by (family, modality), with model.name set.
#: None of these recipes sets model.kwargs, so every model they take keeps its own defaults.
FALLBACK_RECIPES: dict[tuple[str, str], str] = {
    ("two_stream", "flow"): "flow-tiny_flow-8f_synth_5fold.yaml",
    ("two_stream", "rgb+flow"): "flow-tiny_flow-8f_synth_5fold.yaml",
    ("3dcnn", "rgb"): "r3d-tiny_rgb-8f_synth_5fold.yaml",
    ("tsm", "rgb"): "tsm-tiny_rgb-8f_synth_5fold.yaml",
    ("transformer", "rgb"): "mvit-tiny_rgb-8f_synth_5fold.yaml",
    ("transformer", "flow"): "flow-tiny_flow-8f_synth_5fold.yaml",
    ("frame", "rgb"): "frame-tiny_rgb-8f_synth_5fold.yaml",
    ("apex_flow", "apex_flow"): "flow-tiny_flow-8f_synth_5fold.yaml",
}
#: apex-flow models read one onset->apex flow image at their own 28 px, whatever the size axis says; Farneback
#: flow (TV-L1 needs opencv-contrib) computed at 128 px as in the MEGC recipes
APEX_FLOW_SIZE = 28
APEX_FLOW_OVERRIDES = ("data.num_frames=1", f"data.size={APEX_FLOW_SIZE}", "data.apex_flow_method=farneback",
                       "data.apex_flow_size=128")
#: the recipe files that may be a model's own (``model.name`` read from each)
OWN_RECIPE_GLOB = "*_synth_*.yaml"


@dataclass(frozen=True)
class Entry:
    """A model of the leaderboard and how it runs.

    Args:
        model: registered name.
        family: registry family.
        modality: registry modality (``rgb``, ``flow``, ``rgb+flow``, ``apex_flow``).
        recipe: the recipe its cells start from.
        overrides: what the cells add to the recipe besides the axes (``model.name`` for a family recipe).
        own_recipe: True when ``recipe`` is the model's own.
    """

    model: str
    family: str
    modality: str
    recipe: Path
    overrides: tuple[str, ...]
    own_recipe: bool


def select_models(patterns: Sequence[str], *, cpu_friendly: bool) -> list[str]:
    """Registered models matching any of ``patterns`` (shell-style; all when empty), in registry order.

    Raises:
        ConfigError: a pattern matches no registered model, or nothing is left.
    """
    from microexp.models import list_models

    names = list_models()
    if patterns:
        for pattern in patterns:
            if not list_models(pattern):
                raise ConfigError(f"--models {pattern!r}: no registered model matches (see `microexp models`)")
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if cpu_friendly:
        friendly = set(list_models(cpu_friendly=True))
        names = [n for n in names if n in friendly]
    if not names:
        raise ConfigError(f"--models {' '.join(patterns) or '*'}: no CPU-friendly model among them (drop "
                          "--cpu-friendly)")
    return names


def _own_recipes(recipes_dir: Path) -> dict[str, Path]:
    """model name -> its own synthetic-benchmark recipe (the first such file in name order)."""
    import yaml

    own: dict[str, Path] = {}
    for path in sorted(Path(recipes_dir).glob(OWN_RECIPE_GLOB)):
        model = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model") or {}).get("name")
        if isinstance(model, str):
            own.setdefault(model, path)
    return own


def model_recipe(model: str, recipes_dir: Path, own: dict[str, Path] | None = None) -> Entry:
    """How ``model`` runs on the synthetic benchmark: its own recipe, else its family's (see module docstring).

    Raises:
        FileNotFoundError: the fallback recipe is missing from ``recipes_dir``.
        ConfigError: no fallback is known for the model's family and modality.
    """
    from microexp.models import model_info

    info = model_info(model)
    own = _own_recipes(recipes_dir) if own is None else own
    extra = APEX_FLOW_OVERRIDES if info.modality == "apex_flow" else ()
    if model in own:
        return Entry(model, info.family, info.modality, own[model], extra, True)
    name = FALLBACK_RECIPES.get((info.family, info.modality))
    if name is None:
        raise ConfigError(f"model {model} ({info.family}, {info.modality}): no recipe of its own in {recipes_dir} and "
                          f"no fallback for that family and modality; known: {sorted(FALLBACK_RECIPES)}")
    recipe = Path(recipes_dir) / name
    if not recipe.is_file():
        raise FileNotFoundError(f"model {model}: fallback recipe not found: {recipe}")
    return Entry(model, info.family, info.modality, recipe, (f"model.name={model}", *extra), False)


def _pretraining(options: StudyOptions) -> str:
    """``scratch``, or ``weights: PATH`` when ``--set model.pretrained=PATH`` supplies them."""
    value = None
    for item in options.overrides:
        key, _, given = item.partition("=")
        if key.strip() == "model.pretrained":
            value = given.strip()
    return "scratch" if value in (None, "", "null", "None", "~") else f"weights: {value}"


def leaderboard_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Every selected model x size x balance x seed (module docstring); one seed by default."""
    if options.recipes:
        raise ConfigError("--recipe: dfme_leaderboard picks each model's recipe itself (its own synthetic recipe or "
                          "its family's); use --models to choose models and --set to change settings")
    cpu_only = options.cpu_friendly or (options.quick and not options.models)
    models = select_models(options.models, cpu_friendly=cpu_only)
    if options.quick and not options.sizes:
        sizes: tuple[int, ...] = (QUICK_SIZE,)
    else:
        sizes = tuple(options.sizes) or DEFAULT_SIZES
    own = _own_recipes(recipes_dir)
    pretraining = _pretraining(options)
    cells, entries = [], []
    for model in models:
        entry = model_recipe(model, recipes_dir, own)
        entries.append(entry)
        model_sizes = (APEX_FLOW_SIZE,) if entry.modality == "apex_flow" else sizes
        for size in model_sizes:
            size_override = () if entry.modality == "apex_flow" else (f"data.size={size}",)
            for balance, balance_overrides in BALANCE.items():
                for seed in _seeds(options, 1, 1):
                    cells.append(Cell(
                        name=f"{model}_{size}px_{balance}_s{seed}", recipe=entry.recipe, seed=seed,
                        overrides=(*entry.overrides, *size_override, *balance_overrides),
                        axes={"model": model, "family": entry.family, "modality": entry.modality, "size": size,
                              "balance": balance, "pretraining": pretraining, "recipe": entry.recipe.name}))
    derived = [f"`{e.model}` ({e.recipe.name})" for e in entries if not e.own_recipe]
    notes = [
        "One protocol: the same data, subject folds (same seed), frame size and balance setting for every model; each "
        "model keeps its recipe's schedule (epochs, learning rate, input preprocessing). Models with a synthetic-"
        "benchmark recipe of their own run it; the others run their family's recipe with `model.name` replaced"
        + (f": {', '.join(derived)}." if derived else "."),
        f"Frame size: `data.size` of {', '.join(str(s) for s in sizes)} px for every clip model; apex-flow models "
        f"read one {APEX_FLOW_SIZE} px onset->apex flow image (Farneback) whatever the size.",
        "Balance: none = `train.sampler=none loss.name=ce`; class_balanced = `train.sampler=class_balanced "
        "loss.name=ce`, the best setting of the earlier imbalance study (recipes/README.md), which ran on the same "
        "synthetic benchmark and folds (on a real dataset, take it from another dataset or an inner split); both "
        "settings are shown for every model.",
        f"Pretraining: {pretraining}. No weights can be downloaded here, so the axis is scratch unless "
        "`--set model.pretrained=PATH` supplies them (use it with `--models` to pick the model they fit). Masked-video "
        "pretraining (`microexp pretrain`, transformer models) is not run by this study: pretrain first, then pass its "
        "folder as `model.pretrained`.",
        "Ranked by pooled UF1 (all folds' test predictions concatenated, then one metric; mean over seeds), ties by "
        "pooled UAR. UF1/UAR ± std: the mean and the standard deviation (ddof 0) of the per-fold scores (averaged "
        "over seeds). Pooled: ± std over seeds (ddof 1) when there are several.",
        "Params: trainable parameters of the trained model (first fold's checkpoint, at this dataset's classes). "
        "Clips/s: training throughput, the training clips each fold's epochs drew (training subjects' clips x "
        "epochs) over the summed epoch time of log.csv (data loading included; a lone last clip of an epoch may be "
        "dropped, so it can be over by one clip per epoch).",
    ]
    if options.quick:
        notes.append(f"--quick: the CPU-friendly models only (unless --models), at {QUICK_SIZE} px.")
    return Study(name="dfme_leaderboard", title="DFME leaderboard: every registered model under one protocol",
                 cells=cells, report=_leaderboard_report, notes=notes)


def training_clips_per_second(run_dir: Path) -> float:
    """Training clips per second of a k-fold/LOSO run (every clip tested once, so predictions.csv counts them).

    For each fold: (clips of its ``train_subjects``) x (epochs in its ``log.csv``); summed over folds and divided
    by the summed epoch ``seconds``. NaN when a fold's training subjects are not all among the tested clips (a
    cross-dataset run) or no time was logged.
    """
    folds = json.loads((run_dir / "folds.json").read_text(encoding="utf-8"))
    predictions = pd.read_csv(run_dir / "predictions.csv")
    per_subject = predictions.groupby("subject").size().to_dict()
    clips = seconds = 0.0
    for fold in folds:
        log_path = run_dir / f"fold_{int(fold['fold']):02d}" / "log.csv"
        if not log_path.is_file():
            return float("nan")
        log = pd.read_csv(log_path)
        subjects = [int(s) for s in fold["train_subjects"]]
        if any(s not in per_subject for s in subjects):
            return float("nan")
        clips += sum(per_subject[s] for s in subjects) * len(log)
        seconds += float(log["seconds"].sum())
    return clips / seconds if seconds > 0 else float("nan")


#: the leaderboard's axes (one table row per combination)
AXES = ["model", "family", "modality", "size", "balance", "pretraining", "recipe"]


def rank_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by pooled UF1 (mean over seeds), then pooled UAR, both descending, with a ``rank`` column
    (1 = best; rows equal on both share the smaller rank)."""
    ordered = table.sort_values(["pooled_uf1_mean", "pooled_uar_mean"], ascending=False, kind="mergesort",
                                na_position="last").reset_index(drop=True)
    ranks, previous = [], None
    for i, (uf1, uar) in enumerate(zip(ordered["pooled_uf1_mean"], ordered["pooled_uar_mean"]), start=1):
        key = (round(float(uf1), 12), round(float(uar), 12))
        ranks.append(ranks[-1] if key == previous else i)
        previous = key
    ordered.insert(0, "rank", ranks)
    return ordered


def _leaderboard_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    frame["clips_per_second"] = [training_clips_per_second(r.run_dir) for r in results]
    table = aggregate_over_seeds(frame, AXES)
    speed = frame.groupby(AXES, sort=False, dropna=False)["clips_per_second"].mean()
    table["clips_per_second_mean"] = [speed.get(tuple(row[a] for a in AXES), np.nan) for _, row in table.iterrows()]
    table = rank_rows(table)
    columns = [
        ("rank", lambda r: str(r["rank"])),
        ("model", lambda r: f"`{r['model']}`"),
        ("family", lambda r: r["family"]),
        ("size", lambda r: f"{r['size']} px"),
        ("balance", lambda r: r["balance"]),
        ("pretraining", lambda r: r["pretraining"]),
        ("params", lambda r: format_count(r["num_params_mean"])),
        ("train clips/s", lambda r: format_mean_std(r["clips_per_second_mean"], None, digits=1)),
        ("UF1 (fold mean ± std)", lambda r: format_mean_std(r["fold_mean_uf1_mean"], r["fold_std_uf1_mean"])),
        ("UAR (fold mean ± std)", lambda r: format_mean_std(r["fold_mean_uar_mean"], r["fold_std_uar_mean"])),
        ("pooled UF1", lambda r: format_mean_std(r["pooled_uf1_mean"], r["pooled_uf1_std"])),
        ("pooled UAR", lambda r: format_mean_std(r["pooled_uar_mean"], r["pooled_uar_std"])),
        ("seeds", lambda r: str(r["seeds"])),
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["r", "l", "l", "r", "l", "l"] + ["r"] * 8)
    markdown += "\nRanked by pooled UF1 (mean over seeds), ties by pooled UAR.\n"
    files = list(write_table(table, markdown, out, "leaderboard"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    labels = [_label(row) for _, row in table.iterrows()]
    series = {"UF1, fold mean (± fold std)": (table["fold_mean_uf1_mean"], table["fold_std_uf1_mean"]),
              "UF1, pooled (± seed std)": (table["pooled_uf1_mean"], table["pooled_uf1_std"])}
    chance = _chance(results)
    files.append(bar_chart(out / "leaderboard.png", labels, series, ylabel="UF1",
                           title="Leaderboard, in rank order (pooled UF1)", chance=chance))
    files.append(scatter_chart(out / "leaderboard_params.png", table["num_params_mean"], table["pooled_uf1_mean"],
                               labels, xlabel="trainable parameters (log scale)", ylabel="pooled UF1",
                               title="Pooled UF1 against model size", chance=chance))
    return Report(markdown=markdown, files=files)


def _label(row: pd.Series) -> str:
    return f"{row['rank']}. {row['model']} {row['size']}px {row['balance']}"


#: study name -> builder ``(options, recipes_dir) -> Study``
STUDIES = {"dfme_leaderboard": leaderboard_study}
