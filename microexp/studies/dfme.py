"""The three DFME studies as cell lists and reports: model families, key-frame sampling, imbalance.

* :func:`models_study`: every model family under one protocol (the families' recipes share data, folds
  and seed), one table of ACC, UF1 and UAR (pooled and fold mean ± std), parameters and training time.
* :func:`sampling_study`: every strategy of :data:`microexp.data.sampling.STRATEGIES` at 8 and 16
  frames, with and without frame-rate normalisation (``data.reference_fps``), for one model.
* :func:`imbalance_study`: every sampler of :data:`microexp.data.samplers.SAMPLERS` (with cross-entropy)
  and every loss of :data:`microexp.losses.LOSSES` (with plain shuffling): one axis at a time against
  ``ce`` + ``none``, over several seeds, with per-class recall.

Recipes are files; a study only adds ``--set`` overrides for its axes and the seed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from microexp.errors import ConfigError
from microexp.studies.grid import Cell, CellResult
from microexp.studies.study import Report, Study, StudyOptions
from microexp.studies.tables import (
    aggregate_over_seeds,
    bar_chart,
    format_count,
    format_duration,
    format_mean_std,
    heatmap,
    markdown_table,
    recall_columns,
    results_frame,
    write_csv,
    write_table,
)

logger = logging.getLogger(__name__)

__all__ = ["FAMILIES", "FPS_SCALED", "REFERENCE_FPS", "SCHEDULES", "STUDIES", "Family", "imbalance_study",
           "models_study", "sampling_study"]


@dataclass(frozen=True)
class Family:
    """A model family of the DFME study and its CPU recipe."""

    key: str
    label: str
    recipe: str
    model: str


#: The families compared by :func:`models_study`, with the synthetic-benchmark recipe of each.
FAMILIES: tuple[Family, ...] = (
    Family("two_stream", "two-stream (temporal stream)", "flow-tiny_flow-8f_synth_5fold.yaml", "flow_tiny"),
    Family("3dcnn", "3D CNN", "r3d-tiny_rgb-8f_synth_5fold.yaml", "r3d_tiny"),
    Family("tsm", "TSM", "tsm-tiny_rgb-8f_synth_5fold.yaml", "tsm_tiny"),
    Family("transformer", "video transformer", "timesformer-tiny_rgb-8f_synth_5fold.yaml", "timesformer_tiny"),
    Family("transformer_flow", "video transformer (flow)", "timesformer-flow-tiny_flow-8f_synth_5fold.yaml",
           "timesformer_flow_tiny"),
    Family("frame", "single-frame baseline", "frame-tiny_rgb-8f_synth_5fold.yaml", "frame_tiny"),
)
#: The recipe a family without its own recipe file is derived from (``model.name`` replaced).
FALLBACK_RECIPE = "tsm-tiny_rgb-8f_synth_5fold.yaml"
#: The one model of the sampling and imbalance studies (the ``make demo`` recipe).
DEFAULT_RECIPE = "flow-tiny_flow-8f_synth_5fold.yaml"
#: Frame counts of the sampling study.
FRAME_COUNTS = (8, 16)
#: ``data.reference_fps`` of the fps-normalised cells: DFME's lowest rate (Part C, 200 fps).
REFERENCE_FPS = 200
#: Strategies whose frame step scales with fps / reference_fps; every other strategy spans the annotated
#: phases at any frame rate, so normalising it would repeat the un-normalised cell.
FPS_SCALED = ("dense", "apex_centered")


def _seeds(options: StudyOptions, default: int, quick_default: int) -> list[int]:
    count = options.seeds if options.seeds is not None else (quick_default if options.quick else default)
    if count < 1:
        raise ConfigError(f"--seeds {count}: expected at least 1")
    return list(range(count))


def _one_recipe(options: StudyOptions, recipes_dir: Path) -> Path:
    if len(options.recipes) > 1:
        raise ConfigError(f"--recipe given {len(options.recipes)} times; this study takes one recipe")
    recipe = Path(options.recipes[0]) if options.recipes else recipes_dir / DEFAULT_RECIPE
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe not found: {recipe}")
    return recipe


def _chance(results: Sequence[CellResult]) -> float | None:
    classes = results[0].metrics.get("classes") if results else None
    return 1.0 / len(classes) if classes else None


# ----------------------------------------------------------------------------------------------------
# model families


def models_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Every family of :data:`FAMILIES` under the same protocol.

    ``--recipe FAMILY=PATH`` replaces a family's recipe (e.g. the GPU-sized DFME recipes). A family whose
    recipe file does not exist is derived from :data:`FALLBACK_RECIPE` with ``model.name`` set, and says so.
    """
    chosen: dict[str, Path] = {}
    keys = [f.key for f in FAMILIES]
    for item in options.recipes:
        key, sep, path = item.partition("=")
        if not sep or key not in keys:
            raise ConfigError(f"--recipe {item!r}: expected FAMILY=PATH with FAMILY one of {', '.join(keys)}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--recipe {item}: recipe not found: {path}")
        chosen[key] = Path(path)
    cells = []
    notes = []
    for family in FAMILIES:
        recipe = chosen.get(family.key, recipes_dir / family.recipe)
        overrides: tuple[str, ...] = ()
        if not recipe.is_file():
            fallback = recipes_dir / FALLBACK_RECIPE
            if not fallback.is_file():
                raise FileNotFoundError(f"recipe not found: {recipe} (nor the fallback {fallback})")
            logger.warning("%s: recipe %s not found; using %s with model.name=%s", family.label, recipe.name,
                           fallback.name, family.model)
            notes.append(f"{family.label}: no recipe `{recipe.name}` yet; ran `{fallback.name}` with "
                         f"`model.name={family.model}`.")
            recipe, overrides = fallback, (f"model.name={family.model}",)
        for seed in _seeds(options, 1, 1):
            cells.append(Cell(name=f"{family.key}_s{seed}", recipe=recipe, overrides=overrides, seed=seed,
                              axes={"family": family.label, "recipe": recipe.name}))
    notes += [
        "Every family runs its own recipe with the same data, protocol, folds (same seed) and quick/--set options.",
        "Pooled: all folds' test predictions concatenated, then one metric; fold mean ± std (ddof 0) over folds. "
        "With several seeds, pooled shows mean ± std over seeds (ddof 1) and fold mean ± std is averaged over seeds.",
        "Train time: the summed time of all training epochs of all folds (log.csv); wall: the whole cell "
        "(training, testing, checkpoints, plots).",
    ]
    return Study(name="dfme_models", title="DFME model families under one protocol", cells=cells,
                 report=_models_report, notes=notes)


def _models_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    frame["model"] = [_model_name(r) for r in results]
    table = aggregate_over_seeds(frame, ["family", "model", "recipe"])
    columns = [
        ("family", lambda r: r["family"]),
        ("model", lambda r: f"`{r['model']}`"),
        *[(f"pooled {k.upper()}", lambda r, k=k: format_mean_std(r[f"pooled_{k}_mean"], r[f"pooled_{k}_std"]))
          for k in ("acc", "uf1", "uar")],
        *[(f"fold-mean {k.upper()} ± std", lambda r, k=k: format_mean_std(r[f"fold_mean_{k}_mean"],
                                                                         r[f"fold_std_{k}_mean"]))
          for k in ("acc", "uf1", "uar")],
        ("params", lambda r: format_count(r["num_params_mean"])),
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
        ("wall", lambda r: format_duration(r["wall_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["l", "l"] + ["r"] * 9)
    files = list(write_table(table, markdown, out, "models"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    categories = list(table["model"])
    series = {k.upper(): (table[f"pooled_{k}_mean"], table[f"pooled_{k}_std"]) for k in ("acc", "uf1", "uar")}
    files.append(bar_chart(out / "models.png", categories, series, ylabel="pooled score",
                           title="Model families (pooled over folds; error bars: std over seeds)",
                           chance=_chance(results)))
    _warn_if_folds_differ(results)
    return Report(markdown=markdown, files=files)


def _model_name(result: CellResult) -> str:
    import yaml

    config = yaml.safe_load((result.run_dir / "config.yaml").read_text(encoding="utf-8"))
    return str(config["model"]["name"])


def _warn_if_folds_differ(results: Sequence[CellResult]) -> None:
    by_seed: dict[int, str] = {}
    for result in results:
        folds = (result.run_dir / "folds.json").read_text(encoding="utf-8")
        if by_seed.setdefault(result.cell.seed, folds) != folds:
            logger.warning("%s: its folds differ from the other families' of seed %d (different cv settings in "
                           "its recipe?): the comparison is not under one protocol", result.cell.name,
                           result.cell.seed)


# ----------------------------------------------------------------------------------------------------
# key-frame sampling


def sampling_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Every sampling strategy x frame counts 8 and 16 x fps normalisation (where it changes anything).

    ``--quick`` runs 8 frames only (9 cells instead of 18).
    """
    from microexp.data.sampling import STRATEGIES

    recipe = _one_recipe(options, recipes_dir)
    cells = []
    counts = FRAME_COUNTS[:1] if options.quick else FRAME_COUNTS  # quick: 8 frames only
    for strategy in STRATEGIES:
        for frames in counts:
            for normalised in ((False, True) if strategy in FPS_SCALED else (False,)):
                for seed in _seeds(options, 1, 1):
                    fps = REFERENCE_FPS if normalised else None
                    cells.append(Cell(
                        name=f"{strategy}_{frames}f_{'fps' + str(fps) if fps else 'raw'}_s{seed}", recipe=recipe,
                        overrides=(f"data.sampling={strategy}", f"data.num_frames={frames}",
                                   f"data.reference_fps={'null' if fps is None else fps}"),
                        seed=seed,
                        axes={"strategy": strategy, "frames": frames,
                              "fps_normalised": "yes" if normalised else ("no" if strategy in FPS_SCALED else "n/a")},
                    ))
    notes = [
        f"One model (`{recipe.name}`); only `data.sampling`, `data.num_frames` and `data.reference_fps` change.",
        f"fps-normalised = `data.reference_fps={REFERENCE_FPS}`: the frame step of {' and '.join(FPS_SCALED)} is "
        "scaled by clip fps / 200 so that 200, 300 and 500 fps clips cover the same time. The other strategies "
        "span the annotated phases at any frame rate (n/a: normalising them changes nothing, so it is not rerun).",
        "Pooled: all folds' test predictions concatenated, then one metric; fold mean ± std (ddof 0) over folds.",
    ]
    if options.quick:
        notes.append("--quick: 8 frames only (the full study adds 16).")
    return Study(name="dfme_sampling", title=f"Key-frame sampling study ({recipe.stem})", cells=cells,
                 report=_sampling_report, notes=notes)


def _sampling_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    table = aggregate_over_seeds(frame, ["strategy", "frames", "fps_normalised"])
    columns = [
        ("strategy", lambda r: f"`{r['strategy']}`"),
        ("frames", lambda r: str(r["frames"])),
        ("fps-normalised", lambda r: r["fps_normalised"]),
        *[(f"pooled {k.upper()}", lambda r, k=k: format_mean_std(r[f"pooled_{k}_mean"], r[f"pooled_{k}_std"]))
          for k in ("uf1", "uar", "acc")],
        ("fold-mean UF1 ± std", lambda r: format_mean_std(r["fold_mean_uf1_mean"], r["fold_std_uf1_mean"])),
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["l", "r", "l", "r", "r", "r", "r", "r"])
    files = list(write_table(table, markdown, out, "sampling"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    strategies = list(dict.fromkeys(table["strategy"]))
    series = {}
    for frames in sorted(set(table["frames"])):
        for normalised in (False, True):
            rows = table[(table["frames"] == frames) & ((table["fps_normalised"] == "yes") == normalised)]
            if rows.empty:
                continue
            by_strategy = rows.set_index("strategy")
            values = [by_strategy["pooled_uf1_mean"].get(s, np.nan) for s in strategies]
            errors = [by_strategy["pooled_uf1_std"].get(s, np.nan) for s in strategies]
            series[f"{frames} frames" + (f", fps/{REFERENCE_FPS}" if normalised else "")] = (values, errors)
    files.append(bar_chart(out / "sampling.png", strategies, series, ylabel="pooled UF1",
                           title="Key-frame sampling (pooled UF1)", chance=_chance(results)))
    return Report(markdown=markdown, files=files)


# ----------------------------------------------------------------------------------------------------
# imbalance


BASELINE = ("none", "ce")
#: the imbalance study's staged and combined settings, beyond one sampler or one loss: (varied, sampler label,
#: loss label, overrides). cRT (Kang et al. 2020): the last 3 of the recipe's epochs retrain the classifier alone on
#: class-balanced sampling, after plain or progressive sampling; the ResNet+CBAM recipe (Fan et al. 2022):
#: class-weighted cross-entropy, CBAM attention in the backbone and mixing of the most uncertain clips' features.
SCHEDULES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("schedule", "none -> cRT", "ce", ("train.sampler=none", "loss.name=ce", "train.classifier_epochs=3")),
    ("schedule", "progressive -> cRT", "ce",
     ("train.sampler=progressive", "loss.name=ce", "train.classifier_epochs=3")),
    ("combination", "none", "weighted_ce + CBAM + feature mixing",
     ("train.sampler=none", "loss.name=weighted_ce", "model.kwargs.attention=cbam", "noisy_labels.mix_fraction=0.3")),
)


def imbalance_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Every sampler (with ``ce``) and every loss (with sampler ``none``), each against ``none`` + ``ce``."""
    from microexp.data.samplers import SAMPLERS
    from microexp.losses import LOSSES

    recipe = _one_recipe(options, recipes_dir)
    pairs = [BASELINE] + [(s, "ce") for s in SAMPLERS if s != "none"] + [("none", loss) for loss in LOSSES
                                                                        if loss != "ce"]
    cells = [
        Cell(name=f"{sampler}+{loss}_s{seed}", recipe=recipe,
             overrides=(f"train.sampler={sampler}", f"loss.name={loss}"), seed=seed,
             axes={"varied": "baseline" if (sampler, loss) == BASELINE else ("sampler" if loss == "ce" else "loss"),
                   "sampler": sampler, "loss": loss})
        for sampler, loss in pairs
        for seed in _seeds(options, 3, 1)
    ]
    def staged(overrides: tuple[str, ...]) -> tuple[str, ...]:  # --quick trains 2 epochs: the last one is cRT's
        return tuple("train.classifier_epochs=1" if options.quick and o.startswith("train.classifier_epochs=") else o
                     for o in overrides)

    cells += [Cell(name=f"{_slug(sampler)}+{_slug(loss)}_s{seed}", recipe=recipe, overrides=staged(overrides),
                   seed=seed, axes={"varied": varied, "sampler": sampler, "loss": loss})
              for varied, sampler, loss, overrides in SCHEDULES for seed in _seeds(options, 3, 1)]
    notes = [
        f"One model (`{recipe.name}`); one axis at a time: each sampler with cross-entropy, each loss with plain "
        "shuffling (sampler `none`), against the baseline `none` + `ce`; then two staged schedules (cRT: the last 3 "
        "epochs retrain the classifier alone on class-balanced sampling, after plain or progressive sampling) and "
        "one combination (class-weighted CE + CBAM attention + uncertainty-feature mixing, after Fan et al. 2022).",
        "Each seed also reshuffles the subject folds; mean ± std over seeds (ddof 1). Per-class recall: pooled "
        "over folds, mean over seeds (the std is in imbalance.csv).",
    ]
    if options.quick and options.seeds is None:
        notes.append("--quick: one seed, so no spread (the full study runs 3; --seeds N sets it).")
    return Study(name="dfme_imbalance", title=f"Imbalance study: samplers and losses ({recipe.stem})", cells=cells,
                 report=_imbalance_report, notes=notes)


def _imbalance_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    table = aggregate_over_seeds(frame, ["varied", "sampler", "loss"])
    recalls = recall_columns(frame)
    columns = [
        ("sampler", lambda r: f"`{r['sampler']}`"),
        ("loss", lambda r: f"`{r['loss']}`"),
        ("seeds", lambda r: str(r["seeds"])),
        *[(f"pooled {k.upper()}", lambda r, k=k: format_mean_std(r[f"pooled_{k}_mean"], r[f"pooled_{k}_std"]))
          for k in ("uar", "uf1", "acc")],
        *[(c[len("recall_"):], lambda r, c=c: format_mean_std(r[f"{c}_mean"], None, digits=2)) for c in recalls],
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["l", "l"] + ["r"] * (5 + len(recalls)))
    markdown += f"\nTest clips per class (pooled over folds): {class_counts_line(results)}.\n"
    files = list(write_table(table, markdown, out, "imbalance"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    labels = [f"{s}+{loss}" for s, loss in zip(table["sampler"], table["loss"])]
    series = {k.upper(): (table[f"pooled_{k}_mean"], table[f"pooled_{k}_std"]) for k in ("uar", "uf1")}
    files.append(bar_chart(out / "imbalance.png", labels, series, ylabel="pooled score",
                           title="Samplers and losses (error bars: std over seeds)", chance=_chance(results)))
    if recalls:
        matrix = table[[f"{c}_mean" for c in recalls]].to_numpy(dtype=float)
        files.append(heatmap(out / "imbalance_recall.png", matrix, labels, [c[len("recall_"):] for c in recalls],
                             title="Per-class recall (pooled, mean over seeds)"))
    return Report(markdown=markdown, files=files)


def _slug(label: str) -> str:
    """A cell-name part of a label: ``'+ AU head'`` -> ``'au_head'``."""
    return re.sub(r"_+", "_", "".join(c if c.isalnum() else "_" for c in label.lower())).strip("_")


#: study name -> builder ``(options, recipes_dir) -> Study``
STUDIES = {"dfme_models": models_study, "dfme_sampling": sampling_study, "dfme_imbalance": imbalance_study}


def class_counts_line(results: Sequence[CellResult]) -> str:
    """``happiness 120, ...``: test clips per class of the first cell (every cell tests every clip once)."""
    matrix = pd.DataFrame(results[0].metrics["confusion_matrix"]) if results else pd.DataFrame()
    names = results[0].metrics.get("classes", []) if results else []
    return ", ".join(f"{n} {int(c)}" for n, c in zip(names, matrix.sum(axis=1)))
