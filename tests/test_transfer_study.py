"""The cross-dataset transfer study: a quick run on the two small datasets it generates, whose cells' protocols
(within-dataset k-fold, cross A->B and B->A, k-fold over A+B), table and report files are checked."""

import json
from pathlib import Path

import pandas as pd
import pytest

from microexp.cli import main
from microexp.data.annotations.composite import SUBJECT_OFFSET
from microexp.errors import ConfigError
from microexp.studies import StudyOptions, transfer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "study"
    args = ["study", "dfme_transfer", "--quick", "--out", str(out), "--recipes-dir", str(RECIPES), "--no-progress",
            "--device", "cpu", "--set", "data.num_workers=0", "--set", f"data.cache_dir={out.parent / 'cache'}",
            "--set", "data.num_frames=2"]
    assert main(args) == 0
    return out


def _offsets(subjects):
    return {int(s) // SUBJECT_OFFSET for s in subjects}


def test_cross_cells_train_on_one_dataset_and_test_on_the_other(quick_study):
    for train, test, train_offset, test_offset in (("easy", "hard", 1, 2), ("hard", "easy", 2, 1)):
        run = quick_study / "cells" / f"cross_{train}_to_{test}_s0"
        (fold,) = json.loads((run / "folds.json").read_text())
        assert _offsets(fold["train_subjects"] + fold["val_subjects"]) == {train_offset}
        assert _offsets(fold["test_subjects"]) == {test_offset}
        predictions = pd.read_csv(run / "predictions.csv")
        assert set(predictions["dataset"]) == {test}
        assert len(predictions) == transfer.QUICK_SYNTH["clips"]  # every clip of the test dataset, once
        assert json.loads((run / "metrics.json").read_text())["protocol"] == "cross"


def test_within_cells_are_kfold_on_one_dataset_and_the_composite_kfold_scores_each(quick_study):
    for name in ("easy", "hard"):
        run = quick_study / "cells" / f"within_{name}_s0"
        folds = json.loads((run / "folds.json").read_text())
        assert len(folds) == 2  # --quick: cv.folds=2
        tested = [s for f in folds for s in f["test_subjects"]]
        assert len(tested) == len(set(tested)) == transfer.QUICK_SYNTH["subjects"]
        assert "per_dataset" not in json.loads((run / "metrics.json").read_text())
    both = quick_study / "cells" / "kfold_easy+hard_s0"
    folds = json.loads((both / "folds.json").read_text())
    assert _offsets(s for f in folds for s in f["test_subjects"]) == {1, 2}
    metrics = json.loads((both / "metrics.json").read_text())
    assert set(metrics["per_dataset"]) == {"easy", "hard"}
    assert {d["clips"] for d in metrics["per_dataset"].values()} == {transfer.QUICK_SYNTH["clips"]}


def test_transfer_table_has_every_train_test_pair_and_the_report_files(quick_study):
    table = pd.read_csv(quick_study / "transfer.csv")
    pairs = list(zip(table["train_on"], table["test_on"], table["protocol"]))
    assert pairs == [("easy", "easy", "kfold"), ("hard", "hard", "kfold"), ("easy", "hard", "cross"),
                     ("hard", "easy", "cross"), ("easy+hard", "easy+hard", "kfold"), ("easy+hard", "easy", "kfold"),
                     ("easy+hard", "hard", "kfold")]
    by = table.set_index(["train_on", "test_on"])
    metrics = json.loads((quick_study / "cells" / "cross_easy_to_hard_s0" / "metrics.json").read_text())
    assert by.loc[("easy", "hard"), "pooled_uf1_mean"] == pytest.approx(metrics["pooled"]["uf1"])
    assert by.loc[("easy", "hard"), "delta_within_uf1"] == pytest.approx(
        by.loc[("easy", "hard"), "pooled_uf1_mean"] - by.loc[("hard", "hard"), "pooled_uf1_mean"])
    assert pd.isna(by.loc[("easy", "hard"), "fold_mean_uf1_mean"])  # one fold: no fold spread
    assert by.loc[("easy", "easy"), "folds"] == 2 and not pd.isna(by.loc[("easy", "easy"), "fold_std_uf1_mean"])
    both = json.loads((quick_study / "cells" / "kfold_easy+hard_s0" / "metrics.json").read_text())
    hard = both["per_dataset"]["hard"]["pooled"]["uf1"]
    assert by.loc[("easy+hard", "hard"), "pooled_uf1_mean"] == pytest.approx(hard)
    markdown = (quick_study / "transfer.md").read_text()
    assert "Smoke test" in markdown and "| train on | test on | protocol |" in markdown
    assert (quick_study / "transfer.png").stat().st_size > 0 and (quick_study / "summary.md").is_file()
    for name in ("easy", "hard"):
        assert (quick_study / "data" / name / "synth.json").is_file()


def test_datasets_of_other_settings_and_data_are_refused(quick_study, tmp_path):
    with pytest.raises(ConfigError, match="another --quick"):  # the quick datasets are not the full study's
        transfer.transfer_study(StudyOptions(out=quick_study), RECIPES)
    with pytest.raises(FileNotFoundError, match="--data missing.csv"):
        transfer.transfer_study(StudyOptions(out=tmp_path, data=Path("missing.csv")), RECIPES)
    (tmp_path / "mine.csv").write_text("clip\n")
    with pytest.raises(ConfigError, match="generates its own two synthetic datasets"):
        transfer.transfer_study(StudyOptions(out=tmp_path, data=tmp_path / "mine.csv"), RECIPES)
