"""The cross-dataset transfer study (issue 18, item 2's table) on two synthetic datasets it generates.

:data:`DATASETS` are generated under ``OUT/data/<name>/`` (same size, different presets and seeds). One recipe
(default: the flow-tiny recipe) runs as:

* ``within``: subject-independent k-fold on each dataset alone (A->A, B->B; the recipe's ``cv.folds``);
* ``cross``: ``cv.protocol=cross`` on the composite table, trained on one dataset's subjects, tested on all of the
  other's (A->B, B->A; one fold);
* ``pooled``: k-fold over the composite A+B (each fold's test subjects from both datasets), reported over both and
  per dataset (``metrics.json`` ``per_dataset``).

Leave-one-dataset-out over A+B is not run: with two datasets its two folds are the two cross cells (the same
training and test subjects).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microexp.errors import ConfigError
from microexp.studies.dfme import _one_recipe, _seeds
from microexp.studies.grid import Cell, CellResult
from microexp.studies.options import DEFAULT_SYNTH
from microexp.studies.study import Report, Study, StudyOptions
from microexp.studies.tables import format_duration, format_mean_std, heatmap, markdown_table, write_csv, write_table

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "QUICK_SYNTH", "STUDIES", "SynthDataset", "transfer_dataset", "transfer_rows",
           "transfer_study"]


@dataclass(frozen=True)
class SynthDataset:
    """One generated dataset of the study: its name (the composite's dataset name), preset and seed."""

    name: str
    preset: str
    seed: int


#: the two datasets: A (easy preset, seed 0) and B (hard preset, seed 1); sizes from DEFAULT_SYNTH or QUICK_SYNTH
DATASETS = (SynthDataset("easy", "easy", 0), SynthDataset("hard", "hard", 1))
#: ``--quick``: small datasets (clips and subjects per dataset)
QUICK_SYNTH = {"clips": 40, "subjects": 8, "size": 64}
FULL_SYNTH = {"clips": DEFAULT_SYNTH["clips"], "subjects": DEFAULT_SYNTH["subjects"], "size": 128}


def transfer_dataset(out: Path, dataset: SynthDataset, *, quick: bool, progress: bool | None = None) -> Path:
    """``OUT/data/<name>/annotations.csv``, generated when missing.

    Raises:
        ConfigError: the folder holds a dataset generated with other settings (another --quick or an older run).
    """
    from microexp.synth import generate_dataset

    folder = Path(out) / "data" / dataset.name
    settings = {**(QUICK_SYNTH if quick else FULL_SYNTH), "seed": dataset.seed}
    record = folder / "synth.json"
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        found = {"preset": saved.get("preset", {}).get("name"), **{k: saved.get(k) for k in settings}}
        wanted = {"preset": dataset.preset, **settings}
        if found != wanted:
            raise ConfigError(f"{record}: generated with {found}, this study needs {wanted} (another --quick?); "
                              "use another --out")
        return folder / "annotations.csv"
    logger.info("transfer study: generating %s (preset %s, seed %d, %d clips of %d subjects)", folder, dataset.preset,
                dataset.seed, settings["clips"], settings["subjects"])
    generate_dataset(folder, preset=dataset.preset, progress=progress, overwrite=folder.exists(), **settings)
    return folder / "annotations.csv"


def _composite(tables: dict[str, Path]) -> str:
    entries = ", ".join(f"{{path: {json.dumps(str(path))}, dataset: {name}}}" for name, path in tables.items())
    return f"data.annotations=[{entries}]"


def transfer_study(options: StudyOptions, recipes_dir: Path) -> Study:
    """within A, within B, A->B, B->A and k-fold over A+B, for one recipe (module docstring)."""
    if options.data is not None:
        if not Path(options.data).exists():
            raise FileNotFoundError(f"--data {options.data}: no such file or folder")
        raise ConfigError("--data: dfme_transfer generates its own two synthetic datasets (OUT/data/easy and "
                          "OUT/data/hard); run it without --data")
    if options.format != "auto" or options.root is not None:
        raise ConfigError("--format/--root: dfme_transfer reads the two synthetic datasets it generates; run it "
                          "without them")
    recipe = _one_recipe(options, recipes_dir)
    tables = {d.name: transfer_dataset(Path(options.out), d, quick=options.quick, progress=options.progress)
              for d in DATASETS}
    (a, path_a), (b, path_b) = tables.items()
    both = f"{a}+{b}"
    plans: list[tuple[str, str, str, str, tuple[str, ...]]] = [  # name, train on, test on, protocol, overrides
        (f"within_{a}", a, a, "kfold", (f"data.annotations={path_a}", "cv.protocol=kfold")),
        (f"within_{b}", b, b, "kfold", (f"data.annotations={path_b}", "cv.protocol=kfold")),
        (f"cross_{a}_to_{b}", a, b, "cross", (_composite(tables), "cv.protocol=cross", f"cv.train_datasets=[{a}]",
                                               f"cv.test_datasets=[{b}]")),
        (f"cross_{b}_to_{a}", b, a, "cross", (_composite(tables), "cv.protocol=cross", f"cv.train_datasets=[{b}]",
                                               f"cv.test_datasets=[{a}]")),
        (f"kfold_{a}+{b}", both, both, "kfold", (_composite(tables), "cv.protocol=kfold")),
    ]
    cells = [Cell(name=f"{name}_s{seed}", recipe=recipe, overrides=overrides, seed=seed,
                  axes={"train_on": train, "test_on": test, "protocol": protocol})
             for name, train, test, protocol, overrides in plans for seed in _seeds(options, 1, 1)]
    settings = QUICK_SYNTH if options.quick else FULL_SYNTH
    notes = [
        f"Two synthetic datasets it generates under {Path(options.out) / 'data'}: "
        + ", ".join(f"`{d.name}` (preset {d.preset}, seed {d.seed})" for d in DATASETS)
        + f", {settings['clips']} clips of {settings['subjects']} subjects each at {settings['size']} px. "
        f"One model (`{recipe.name}`), its settings unchanged except the data and the protocol.",
        "within: subject-independent k-fold on one dataset (the recipe's cv.folds). cross: `cv.protocol=cross`, one "
        "fold that trains on every subject of the first dataset and tests on every clip of the other. "
        f"{both}: k-fold over the composite table (subject folds drawn from both datasets' subjects), scored over "
        "both and per dataset (the rows testing on one dataset; their fold columns are –: the folds mix both "
        "datasets).",
        "Leave-one-dataset-out over the two is not run: its two folds are the two cross cells.",
        "UF1/UAR: pooled (all folds' test predictions concatenated, then one metric; ± std over seeds with several). "
        "Fold mean ± std (ddof 0) where there are several folds. Δ within: UF1 minus the within-dataset UF1 of the "
        "test dataset.",
        "Wall time: the whole cell (training, testing, checkpoints), when it ran in this process; the per-dataset rows "
        f"of {both} repeat their cell's.",
    ]
    return Study(name="dfme_transfer", title=f"Cross-dataset transfer study ({recipe.stem})", cells=cells,
                 report=_transfer_report, notes=notes,
                 data=f"its own synthetic datasets, {Path(options.out) / 'data'}/{{{a},{b}}}")


def transfer_rows(results: list[CellResult]) -> pd.DataFrame:
    """One row per cell (and per dataset of the composite k-fold cell): train_on, test_on, protocol, seed, folds,
    pooled_uf1/uar, fold_mean_/fold_std_uf1/uar (NaN with one fold or for a dataset's share), wall_seconds."""
    rows: list[dict[str, Any]] = []
    for result in results:
        axes, metrics = result.cell.axes, result.metrics
        folds = len(metrics.get("per_fold", [])) or 1
        base = {"train_on": axes["train_on"], "protocol": axes["protocol"], "seed": result.cell.seed, "folds": folds,
                "wall_seconds": np.nan if result.wall_seconds is None else result.wall_seconds,
                "train_seconds": result.train_seconds}
        several = folds > 1
        rows.append({**base, "test_on": axes["test_on"], "clips": int(np.sum(metrics["confusion_matrix"])),
                     **{f"pooled_{k}": metrics["pooled"][k] for k in ("uf1", "uar")},
                     **{f"fold_{s}_{k}": metrics[f"fold_{s}"][k] if several else np.nan
                        for s in ("mean", "std") for k in ("uf1", "uar")}})
        if "+" in str(axes["test_on"]):
            for name, part in metrics.get("per_dataset", {}).items():
                rows.append({**base, "test_on": name, "clips": part["clips"],
                             **{f"pooled_{k}": part["pooled"][k] for k in ("uf1", "uar")},
                             **{f"fold_{s}_{k}": np.nan for s in ("mean", "std") for k in ("uf1", "uar")}})
    return pd.DataFrame(rows)


def _transfer_report(results: list[CellResult], out: Path) -> Report:
    frame = transfer_rows(results)
    keys = ["train_on", "test_on", "protocol"]
    table_rows = []
    for key, group in frame.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key))
        row.update(seeds=len(group), folds=int(group["folds"].iloc[0]), clips=int(group["clips"].iloc[0]))
        for column in ("pooled_uf1", "pooled_uar", "fold_mean_uf1", "fold_std_uf1", "fold_mean_uar", "fold_std_uar",
                       "wall_seconds", "train_seconds"):
            row[f"{column}_mean"] = group[column].mean()
        for column in ("pooled_uf1", "pooled_uar"):
            row[f"{column}_std"] = group[column].std(ddof=1) if len(group) > 1 else np.nan
        table_rows.append(row)
    table = pd.DataFrame(table_rows)
    within = {r["test_on"]: r["pooled_uf1_mean"] for _, r in table.iterrows() if r["train_on"] == r["test_on"]}
    table["delta_within_uf1"] = [r["pooled_uf1_mean"] - within[r["test_on"]]
                                 if r["test_on"] in within and r["train_on"] != r["test_on"] else np.nan
                                 for _, r in table.iterrows()]
    columns = [
        ("train on", lambda r: r["train_on"]),
        ("test on", lambda r: r["test_on"]),
        ("protocol", lambda r: r["protocol"]),
        ("folds", lambda r: str(r["folds"])),
        ("test clips", lambda r: str(r["clips"])),
        ("pooled UF1", lambda r: format_mean_std(r["pooled_uf1_mean"], r["pooled_uf1_std"])),
        ("pooled UAR", lambda r: format_mean_std(r["pooled_uar_mean"], r["pooled_uar_std"])),
        ("UF1 (fold mean ± std)", lambda r: format_mean_std(r["fold_mean_uf1_mean"], r["fold_std_uf1_mean"])),
        ("UAR (fold mean ± std)", lambda r: format_mean_std(r["fold_mean_uar_mean"], r["fold_std_uar_mean"])),
        ("Δ within (UF1)", lambda r: "–" if np.isnan(r["delta_within_uf1"]) else f"{r['delta_within_uf1']:+.3f}"),
        ("wall", lambda r: format_duration(r["wall_seconds_mean"])),
    ]
    markdown = markdown_table(table, columns, align=["l", "l", "l"] + ["r"] * 8)
    files = list(write_table(table, markdown, out, "transfer"))
    write_csv(frame, out / "cells.csv")
    files.append(out / "cells.csv")
    trains = list(dict.fromkeys(table["train_on"]))
    tests = [t for t in dict.fromkeys(table["test_on"]) if "+" not in str(t)]
    matrix = np.full((len(trains), len(tests)), np.nan)
    for _, r in table.iterrows():
        if r["test_on"] in tests:
            matrix[trains.index(r["train_on"]), tests.index(r["test_on"])] = r["pooled_uf1_mean"]
    files.append(heatmap(out / "transfer.png", matrix, [f"train {t}" for t in trains], [f"test {t}" for t in tests],
                         title="Pooled UF1 (train x test)"))
    return Report(markdown=markdown, files=files)


#: study name -> builder ``(options, recipes_dir) -> Study``
STUDIES = {"dfme_transfer": transfer_study}
