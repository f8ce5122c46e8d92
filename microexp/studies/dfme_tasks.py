"""Studies of what else a model learns from: action units (:func:`au_study`) and uncertain labels
(:func:`noise_study`).

* :func:`au_study`: emotion only, + an AU head, + the AU graph, for one recipe over several seeds; pooled
  UF1/UAR and mean AU F1 (pooled and fold mean).
* :func:`noise_study`: synthetic datasets whose annotated labels are flipped at several rates
  (``microexp synth --label-noise``), each trained with no method and with each uncertain-label method;
  UF1/UAR scored against the *true* labels of ``ground_truth.csv`` (and against the annotated ones), and
  the precision of re-labelling.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from microexp.studies.dfme import _chance, _one_recipe, _seeds
from microexp.studies.grid import Cell, CellResult
from microexp.studies.study import Report, Study, StudyOptions
from microexp.studies.tables import (
    aggregate_over_seeds, bar_chart, format_duration, format_mean_std, markdown_table, results_frame, write_csv,
    write_table,
)

logger = logging.getLogger(__name__)

__all__ = ["AU_VARIANTS", "STUDIES", "au_study"]

#: the AU study's cells: label -> overrides
AU_VARIANTS: dict[str, tuple[str, ...]] = {
    "emotion only": ("data.aus=false",),
    "+ AU head": ("data.aus=true", "model.au_head=linear"),
    "+ AU graph": ("data.aus=true", "model.au_head=graph"),
}


def au_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Emotion only vs + AU head vs + AU graph (:data:`AU_VARIANTS`), for one recipe, 3 seeds by default."""
    recipe = _one_recipe(options, recipes_dir)
    cells = [Cell(name=f"{_slug(label)}_s{seed}", recipe=recipe, overrides=overrides, seed=seed,
                  axes={"variant": label})
             for label, overrides in AU_VARIANTS.items() for seed in _seeds(options, 3, 1)]
    notes = [
        f"One model (`{recipe.name}`); the AU variants add `data.aus=true` and `model.au_head` (linear or graph); "
        "everything else, folds included, is the same per seed.",
        "Each fold learns the AUs seen at least `data.au_min_count` times among its training clips; the graph's "
        "co-occurrence comes from those clips too.",
        "Mean AU F1: per-AU F1 (AU detected at probability >= 0.5) averaged over the AUs present; pooled over all "
        "folds' test clips, and fold mean. Emotion-only runs have no AU head, so no AU F1.",
        "Each seed also reshuffles the subject folds; mean ± std over seeds (ddof 1).",
    ]
    return Study(name="dfme_au", title=f"AU multi-task study ({recipe.stem})", cells=cells, report=_au_report,
                 notes=notes)


def _au_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    order = {label: i for i, label in enumerate(AU_VARIANTS)}
    table = aggregate_over_seeds(frame, ["variant"])
    table = table.sort_values("variant", key=lambda s: s.map(order)).reset_index(drop=True)
    columns = [
        ("variant", lambda r: r["variant"]),
        ("seeds", lambda r: str(r["seeds"])),
        *[(f"pooled {k.upper()}", lambda r, k=k: format_mean_std(r[f"pooled_{k}_mean"], r[f"pooled_{k}_std"]))
          for k in ("uf1", "uar", "acc")],
        ("fold-mean UF1", lambda r: format_mean_std(r["fold_mean_uf1_mean"], r["fold_std_uf1_mean"])),
        ("mean AU F1 (pooled)", lambda r: _maybe(r, "pooled_au_f1")),
        ("mean AU F1 (fold mean)", lambda r: _maybe(r, "fold_mean_au_f1")),
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["l"] + ["r"] * 8)
    files = list(write_table(table, markdown, out, "au"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    series = {"UF1": (table["pooled_uf1_mean"], table["pooled_uf1_std"]),
              "UAR": (table["pooled_uar_mean"], table["pooled_uar_std"])}
    if "pooled_au_f1_mean" in table:
        series["mean AU F1"] = (table["pooled_au_f1_mean"], table["pooled_au_f1_std"])
    files.append(bar_chart(out / "au.png", list(table["variant"]), series, ylabel="pooled score",
                           title="AU multi-task (error bars: std over seeds)", chance=_chance(results)))
    return Report(markdown=markdown, files=files)


def _maybe(row: pd.Series, key: str) -> str:
    mean = row.get(f"{key}_mean", float("nan"))
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    return format_mean_std(mean, row.get(f"{key}_std"))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


#: study name -> builder ``(options, recipes_dir) -> Study``
STUDIES = {"dfme_au": au_study}
