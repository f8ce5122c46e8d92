"""Composite tables from several annotation files, and the cross-dataset protocols that read them:
leave-one-dataset-out (``cv.protocol=lodo``) and train-on-A-test-on-B (``cv.protocol=cross``).
Tiny synthetic data (two generator seeds as two "datasets"), CPU."""

import json

import numpy as np
import pandas as pd
import pytest

from microexp.cli import main
from microexp.config import ConfigError, annotation_sources, build_config, load_config
from microexp.data.annotations.composite import SUBJECT_OFFSET, TablePart, compose_tables
from microexp.splits import cross_dataset_split
from microexp.synth import generate_dataset

BASE = {"train.epochs": 1, "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform",
        "model.name": "tsm_tiny", "data.num_workers": 0, "train.batch_size": 4, "seed": 5}


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    for name, preset, seed in (("easy", "easy", 1), ("hard", "hard", 2)):
        generate_dataset(root / name, preset=preset, clips=12, subjects=3, size=32, fmt="frames", seed=seed,
                         workers=1, progress=False)
    return root


def _composite(root):
    return (f"data.annotations=[{{path: {root / 'easy' / 'annotations.csv'}, dataset: easy}}, "
            f"{{path: {root / 'hard' / 'annotations.csv'}, dataset: hard}}]")


def _train(out, *overrides):
    args = ["train", "--out", str(out), "--no-progress"]
    for item in [*(f"{k}={v}" for k, v in BASE.items()), *overrides]:
        args += ["--set", item]
    return main(args)


def _table(subjects, clips, dataset="microexp"):
    return pd.DataFrame({"subject": subjects, "clip": clips, "dataset": dataset, "label": 0})


# ------------------------------------------------------------------------------------------- the composite


def test_composite_moves_each_part_into_its_own_subject_range_and_prefixes_clips():
    a = _table([1, 2], ["c1", "c2"], dataset="casme2")
    b = _table([1, 3], ["c1", "c9"], dataset="samm")
    table = compose_tables([TablePart("a", a), TablePart("b", b)])
    assert table["subject"].tolist() == [SUBJECT_OFFSET + 1, SUBJECT_OFFSET + 2, 2 * SUBJECT_OFFSET + 1,
                                         2 * SUBJECT_OFFSET + 3]
    assert table["clip"].tolist() == ["casme2/c1", "casme2/c2", "samm/c1", "samm/c9"]
    assert table["clip"].is_unique  # the same clip id in two sheets no longer collides
    renamed = compose_tables([TablePart("a", a, "first"), TablePart("b", a, "second")])
    assert renamed["dataset"].tolist() == ["first"] * 2 + ["second"] * 2


@pytest.mark.parametrize("parts, message", [
    ([TablePart("a", _table([1], ["c"])), TablePart("b", _table([2], ["d"]))], "also the name of a"),
    ([TablePart("a", _table([SUBJECT_OFFSET], ["c"]))], "outside 0.."),
    ([TablePart("a", _table([1], ["c"], dataset=""))], "no dataset name"),
    ([TablePart("a", _table([], []))], "no clip left"),
])
def test_composite_refusals_name_the_entry(parts, message):
    with pytest.raises(ConfigError, match=message):
        compose_tables(parts)


def test_annotation_sources_of_a_path_and_of_a_list():
    single = build_config({"data": {"annotations": "a.csv", "format": "casme2", "root": "/clips"}})
    (source,) = annotation_sources(single.data)
    assert (source.path, source.format, source.root, source.dataset) == ("a.csv", "casme2", "/clips", None)
    composite = build_config({"data": {"annotations": [{"path": "a.csv", "dataset": "A"},
                                                       {"path": "b.xlsx", "format": "samm", "root": "/s"}]}})
    assert [(s.path, s.format, s.root, s.dataset) for s in annotation_sources(composite.data)] == [
        ("a.csv", "auto", None, "A"), ("b.xlsx", "samm", "/s", None)]


@pytest.mark.parametrize("data, message", [
    ({"annotations": []}, "non-empty list"),
    ({"annotations": [{"path": "a.csv", "size": 3}]}, r"data.annotations\[0\]: unknown key"),
    ({"annotations": [{"format": "samm"}]}, r"data.annotations\[0\].path"),
    ({"annotations": [{"path": "a.csv", "format": "nope"}]}, r"\[0\].format='nope'"),
    ({"annotations": [{"path": "a", "dataset": "A"}, {"path": "b", "dataset": "A"}]}, r"\[1\].dataset='A'"),
    ({"annotations": [{"path": "a"}], "format": "samm"}, "give each entry its own format"),
    ({"annotations": 3}, "expected a string or a list"),
])
def test_bad_composite_entries_are_refused_before_anything_runs(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"data": data})


@pytest.mark.parametrize("cv, message", [
    ({"protocol": "cross", "test_datasets": ["b"]}, "needs cv.train_datasets"),
    ({"protocol": "cross", "train_datasets": ["a"]}, "needs cv.test_datasets"),
    ({"protocol": "cross", "train_datasets": ["a"], "test_datasets": ["a", "b"]}, "in both"),
    ({"protocol": "kfold", "train_datasets": ["a"]}, "apply to cv.protocol=cross"),
])
def test_bad_cross_protocols_are_refused(cv, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"cv": cv})


# ------------------------------------------------------------------------------------------------ the split


def test_cross_split_trains_on_one_dataset_and_tests_on_the_other_only():
    datasets = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 2)
    subjects = np.array([1, 1, 2, 3, 11, 12, 12, 21, 22])
    fold = cross_dataset_split(datasets, subjects, train=["a"], test=["b"], val_fraction=0.34, seed=0)
    assert set(fold.train_subjects) | set(fold.val_subjects) == {1, 2, 3}
    assert len(fold.val_subjects) == 1
    assert fold.test_subjects == (11, 12)
    assert not set(fold.test_subjects) & (set(fold.train_subjects) | set(fold.val_subjects))
    with pytest.raises(ConfigError, match="not in the table; it has a, b, c"):
        cross_dataset_split(datasets, subjects, train=["a"], test=["casme2"])
    with pytest.raises(ConfigError, match="occurs in datasets"):
        cross_dataset_split(datasets, np.array([1, 1, 2, 3, 3, 12, 12, 21, 22]), train=["a"], test=["b"])


# ------------------------------------------------------------------------------------------------ end to end


def test_lodo_over_a_composite_recipe_tests_each_dataset_once(two_datasets, tmp_path):
    run = tmp_path / "lodo"
    assert _train(run, _composite(two_datasets), "cv.protocol=lodo") == 0
    folds = json.loads((run / "folds.json").read_text())
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(folds) == 2
    for fold in folds:  # each fold tests every subject of one dataset and trains on the other's alone
        tested = predictions[predictions["fold"] == fold["fold"]]
        assert tested["dataset"].nunique() == 1
        offset = (tested["subject"] // SUBJECT_OFFSET).iloc[0]
        assert {s // SUBJECT_OFFSET for s in fold["train_subjects"] + fold["val_subjects"]} == {3 - offset}
    assert set(predictions["dataset"]) == {"easy", "hard"}
    assert predictions["clip"].str.match(r"^(easy|hard)/").all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["per_dataset"]) == {"easy", "hard"}


def test_cross_trains_on_a_and_tests_on_b(two_datasets, tmp_path):
    run = tmp_path / "cross"
    assert _train(run, _composite(two_datasets), "cv.protocol=cross", "cv.train_datasets=[easy]",
                  "cv.test_datasets=[hard]", "cv.val_fraction=0.34", "train.model_selection=val") == 0
    (fold,) = json.loads((run / "folds.json").read_text())
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["dataset"]) == {"hard"} and len(predictions) == 12
    assert all(s // SUBJECT_OFFSET == 1 for s in fold["train_subjects"] + fold["val_subjects"])
    assert all(s // SUBJECT_OFFSET == 2 for s in fold["test_subjects"])
    saved = load_config(run / "config.yaml")
    assert saved.cv.train_datasets == ["easy"] and len(saved.data.annotations) == 2


def test_cross_with_an_unknown_dataset_is_one_line(two_datasets, tmp_path, capsys):
    run = tmp_path / "bad"
    code = _train(run, _composite(two_datasets), "cv.protocol=cross", "cv.train_datasets=[easy]",
                  "cv.test_datasets=[casme2]")
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert code == 2 and len(err) == 1 and "casme2" in err[0] and "easy, hard" in err[0]
    assert not (run / "fold_00").exists()


# ------------------------------------------------------------------------------------------ source identity


def test_composite_clips_keep_their_sheets_dataset_and_subject():
    from microexp.engine.pretrain_record import subject_keys

    a = _table([1, 2], ["c1", "c2"], dataset="casme2")
    table = compose_tables([TablePart("a", a, "casme2_first"), TablePart("b", _table([1], ["c1"], "samm"))])
    assert table["source_dataset"].tolist() == ["casme2", "casme2", "samm"]
    assert table["source_subject"].tolist() == [1, 2, 1]
    # the pretraining check and the per-fold pools match a subject across the composite and its own sheet
    assert subject_keys(table, [SUBJECT_OFFSET + 2]) == subject_keys(a, [2]) == {("casme2", 2)}


def test_class_maps_read_each_sheets_own_dataset_under_a_renamed_entry(two_datasets, tmp_path):
    """megc3 maps per dataset (casme2, samm, ...): entries renamed `first` and `second` still map as casme2."""
    from microexp.engine.experiment import load_experiment_data

    sheet = pd.read_csv(two_datasets / "easy" / "annotations.csv")
    sheet["path"] = [str(two_datasets / "easy" / p) for p in sheet["path"]]
    sheet["dataset"] = "casme2"
    sheet["emotion"] = ["happiness", "disgust", "surprise", "fear"] * (len(sheet) // 4)
    sheet.to_csv(tmp_path / "casme2.csv", index=False)
    entry = {"path": str(tmp_path / "casme2.csv"), "format": "microexp"}
    config = build_config({"data": {"annotations": [{**entry, "dataset": "first"}, {**entry, "dataset": "second"}],
                                    "class_map": "megc3"}})
    data = load_experiment_data(config)
    assert data.class_names == ["negative", "positive", "surprise"]
    assert sorted(data.table["dataset"].unique()) == ["first", "second"]
    assert len(data.table) == 2 * 9  # CASME II's fear is left out of megc3, as for the sheet alone
    names = [data.class_names[i] for i in data.table["label"][:3]]
    assert names == ["positive", "negative", "surprise"]


def test_cross_identity_classes_come_from_the_training_datasets(two_datasets):
    from microexp.engine.experiment import load_experiment_data

    easy = pd.read_csv(two_datasets / "easy" / "annotations.csv")
    config = build_config({"data": {"annotations": [
        {"path": str(two_datasets / "easy" / "annotations.csv"), "dataset": "easy"},
        {"path": str(two_datasets / "hard" / "annotations.csv"), "dataset": "hard"}], "class_map": "identity"},
        "cv": {"protocol": "cross", "train_datasets": ["easy"], "test_datasets": ["hard"]}})
    assert set(load_experiment_data(config).class_names) == set(easy["emotion"])
