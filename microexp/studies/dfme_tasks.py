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

from microexp.errors import ConfigError
from microexp.metrics import compute_metrics
from microexp.studies.dfme import _chance, _one_recipe, _seeds, _slug
from microexp.studies.options import DEFAULT_SYNTH
from microexp.studies.grid import Cell, CellResult
from microexp.studies.study import Report, Study, StudyOptions
from microexp.studies.tables import (
    aggregate_over_seeds, bar_chart, format_duration, format_mean_std, markdown_table, results_frame, write_csv,
    write_table,
)

logger = logging.getLogger(__name__)

__all__ = ["AU_VARIANTS", "NOISE_METHODS", "NOISE_RATES", "STUDIES", "au_study", "noise_study",
           "scores_against_truth"]

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


# ----------------------------------------------------------------------------------------------------
# uncertain labels

#: annotated-label flip rates of the noise study (``microexp synth --label-noise``)
NOISE_RATES = (0.0, 0.1, 0.2, 0.3)
#: the noise study's methods: label -> overrides (each at its paper's default settings, chosen before any run)
NOISE_METHODS: dict[str, tuple[str, ...]] = {
    "none": (),
    "EAC": ("noisy_labels.eac_weight=5",),
    "re-labelling": ("noisy_labels.relabel=true",),
    "confidence (SCN/MTAC)": ("noisy_labels.confidence=true",),
}
#: the ``--quick`` noise study: fewer rates and methods, a small dataset
QUICK_RATES = (0.0, 0.2)
QUICK_METHODS = ("none", "re-labelling")
QUICK_SYNTH = {"clips": 40, "subjects": 8, "seed": 0, "size": 64}


def noise_dataset(out: Path, rate: float, *, quick: bool, progress: bool | None = None) -> Path:
    """The synthetic dataset with ``rate`` of its annotated labels flipped (generated when missing).

    Every rate has the same clips (the flips are drawn after the clips are planned): only the annotated
    labels differ, and ``ground_truth.csv`` keeps the true ones.
    """
    from microexp.synth import generate_dataset

    folder = out / "data" / f"noise_{round(rate * 100):02d}"
    if not (folder / "synth.json").is_file():
        settings = QUICK_SYNTH if quick else DEFAULT_SYNTH
        logger.info("noise study: generating %s (label noise %.0f%%, %d clips)", folder, rate * 100,
                    settings["clips"])
        generate_dataset(folder, label_noise=rate, progress=progress, overwrite=folder.exists(), **settings)
    return folder / "annotations.csv"


def noise_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """Label-noise rates :data:`NOISE_RATES` x methods :data:`NOISE_METHODS`, on synthetic data it generates.

    Scored against the true labels of each dataset's ``ground_truth.csv`` (the numbers that matter) and
    against the annotated ones; the re-labelling cells also report how many clips were re-labelled and the
    precision (the share given their true label).
    """
    if options.data is not None:
        raise ConfigError("--data: dfme_noise generates its own synthetic datasets (it needs their true labels, "
                          "ground_truth.csv); run it without --data")
    recipe = _one_recipe(options, recipes_dir)
    rates = QUICK_RATES if options.quick else NOISE_RATES
    methods = {k: NOISE_METHODS[k] for k in QUICK_METHODS} if options.quick else dict(NOISE_METHODS)
    if options.quick:  # two epochs: re-label after the first
        methods["re-labelling"] = (*methods["re-labelling"], "noisy_labels.relabel_warmup=1")
    cells = []
    for rate in rates:
        table = noise_dataset(Path(options.out), rate, quick=options.quick, progress=options.progress)
        for label, overrides in methods.items():
            for seed in _seeds(options, 1, 1):
                cells.append(Cell(name=f"noise{round(rate * 100):02d}_{_slug(label)}_s{seed}", recipe=recipe,
                                  overrides=(f"data.annotations={table}", *overrides), seed=seed,
                                  axes={"noise": float(rate), "method": label, "data": str(table.parent)}))
    notes = [
        f"One model (`{recipe.name}`) on synthetic datasets that differ only in their annotated labels: "
        f"{', '.join(f'{r:.0%}' for r in rates)} of the labels flipped to another emotion "
        "(`microexp synth --label-noise`; the clips are the same at every rate).",
        "UF1/UAR (true): the pooled test predictions scored against the true labels of ground_truth.csv; "
        "(annotated): against the noisy labels the run saw, as metrics.json reports them.",
        "Methods at their papers' defaults, fixed before any run: EAC weight 5 (random erasing, flip-consistent "
        "class activation maps); re-labelling after 3 warm-up epochs at confidence 0.9 and distance ratio 1.5; "
        "SCN/MTAC confidence with beta 0.7, margin 0.15.",
        "Recovered: (method − none) / (none at 0 % − none at this rate), the share of the UF1 lost to noise that "
        "the method wins back.",
        "Re-labelling precision: the share of re-labelled training clips whose new label is their true one.",
    ]
    return Study(name="dfme_noise", title=f"Label-noise study ({recipe.stem})", cells=cells, report=_noise_report,
                 notes=notes, data=f"its own synthetic datasets, {Path(options.out) / 'data'}/noise_XX (one per rate)")


def scores_against_truth(run_dir: Path, data_dir: Path) -> dict[str, float]:
    """Pooled UF1/UAR/ACC of a run's predictions against ``ground_truth.csv``'s true emotions, and the
    re-labelling count and precision of its folds (NaN without re-labels)."""
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    classes = list(metrics["classes"])
    truth = pd.read_csv(data_dir / "ground_truth.csv", dtype={"clip": str})
    true_emotion = dict(zip(truth["clip"], truth["emotion"]))
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"clip": str})
    unknown = sorted({true_emotion.get(c) for c in predictions["clip"]} - set(classes), key=str)
    if unknown:
        raise ConfigError(f"{data_dir / 'ground_truth.csv'}: true emotion(s) {unknown} are not classes of "
                          f"{run_dir} ({', '.join(classes)})")
    true = [classes.index(true_emotion[c]) for c in predictions["clip"]]
    m = compute_metrics(true, predictions["pred"].to_numpy(), num_classes=len(classes))
    logs = sorted(run_dir.glob("fold_*/relabelled.csv"))
    rows = pd.concat([pd.read_csv(p, dtype={"clip": str}) for p in logs], ignore_index=True) if logs else None
    count = 0 if rows is None else len(rows)
    precision = (float((rows["new_label"] == rows["clip"].map(true_emotion)).mean()) if count else float("nan"))
    return {"true_uf1": m.uf1, "true_uar": m.uar, "true_acc": m.acc, "relabelled": count,
            "relabel_precision": precision}


def _noise_report(results: list[CellResult], out: Path) -> Report:
    frame = results_frame(results)
    truth = pd.DataFrame([scores_against_truth(r.run_dir, Path(r.cell.axes["data"])) for r in results])
    frame = pd.concat([frame, truth], axis=1)
    rows = []
    for (rate, method), group in frame.groupby(["noise", "method"], sort=False):
        rows.append({"noise": rate, "method": method, "seeds": len(group),
                     **{f"{k}_mean": group[k].mean() for k in ("true_uf1", "true_uar", "pooled_uf1", "relabelled",
                                                                "relabel_precision", "train_seconds")},
                     "true_uf1_std": group["true_uf1"].std(ddof=1) if len(group) > 1 else float("nan")})
    table = pd.DataFrame(rows)
    clean = table[(table["noise"] == 0) & (table["method"] == "none")]["true_uf1_mean"]
    reference = float(clean.iloc[0]) if len(clean) else float("nan")
    baseline = {r["noise"]: r["true_uf1_mean"] for _, r in table.iterrows() if r["method"] == "none"}

    def recovered(row: pd.Series) -> float:
        lost = reference - baseline.get(row["noise"], float("nan"))
        if row["method"] == "none" or not lost > 0.005:  # nothing (measurable) lost: nothing to recover
            return float("nan")
        return (row["true_uf1_mean"] - baseline[row["noise"]]) / lost

    table["recovered"] = table.apply(recovered, axis=1)
    columns = [
        ("label noise", lambda r: f"{r['noise']:.0%}"),
        ("method", lambda r: r["method"]),
        ("UF1 (true)", lambda r: format_mean_std(r["true_uf1_mean"], r["true_uf1_std"])),
        ("UAR (true)", lambda r: format_mean_std(r["true_uar_mean"])),
        ("UF1 (annotated)", lambda r: format_mean_std(r["pooled_uf1_mean"])),
        ("recovered", lambda r: "–" if np.isnan(r["recovered"]) else f"{r['recovered']:+.0%}"),
        ("re-labelled", lambda r: "–" if r["relabelled_mean"] == 0 else f"{r['relabelled_mean']:.0f}"),
        ("re-label precision", lambda r: "–" if np.isnan(r["relabel_precision_mean"])
         else f"{r['relabel_precision_mean']:.2f}"),
        ("train time", lambda r: format_duration(r["train_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["r", "l"] + ["r"] * 7)
    files = list(write_table(table, markdown, out, "noise"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    rates = sorted(table["noise"].unique())
    series = {}
    for method in table["method"].unique():
        part = table[table["method"] == method].set_index("noise")
        series[method] = (pd.Series([part["true_uf1_mean"].get(r, np.nan) for r in rates]),
                          pd.Series([part["true_uf1_std"].get(r, np.nan) for r in rates]))
    files.append(bar_chart(out / "noise.png", [f"{r:.0%}" for r in rates], series, ylabel="pooled UF1 (true labels)",
                           title="Label noise: UF1 against the true labels", chance=_chance(results)))
    return Report(markdown=markdown, files=files)


#: study name -> builder ``(options, recipes_dir) -> Study``
STUDIES = {"dfme_au": au_study, "dfme_noise": noise_study}
