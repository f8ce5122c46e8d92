"""Linear probe: a planted signal scores high, noise near chance, subject identity does not leak, lodo, CLI errors."""

import json

import numpy as np
import pandas as pd
import pytest

from microexp import cli
from microexp.engine.probe import format_probe, probe
from microexp.errors import ConfigError


def _write(folder, features, index, class_names):
    """A features folder in extract-features' format (features.npy, index.csv, features.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", np.asarray(features, np.float32))
    pd.DataFrame(index).to_csv(folder / "index.csv", index=False)
    (folder / "features.json").write_text(json.dumps({"class_names": list(class_names), "model_name": "planted"}))
    return folder


def _table(subjects=8, per_subject=12, classes=3, datasets=("d1",), seed=0):
    """Clips of each subject cycling through the classes; subject numbers restart in each dataset."""
    rows = []
    for d in datasets:
        for s in range(1, subjects + 1):
            for j in range(per_subject):
                rows.append({"clip": f"{d}_s{s}_{j}", "subject": s, "dataset": d, "label": j % classes})
    index = pd.DataFrame(rows)
    index["emotion"] = [f"class{c}" for c in index["label"]]
    return index[["clip", "subject", "dataset", "emotion", "label"]]


NAMES = ["class0", "class1", "class2"]


def test_a_planted_separable_signal_scores_high_and_noise_scores_near_chance(tmp_path):
    index = _table()
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(index), 16))
    signal = noise.copy()
    signal[np.arange(len(index)), index["label"]] += 4.0  # class c: feature c raised
    for protocol in ("loso", "kfold"):
        good = probe(_write(tmp_path / "signal", signal, index, NAMES), protocol=protocol, folds=4)
        bad = probe(_write(tmp_path / "noise", noise, index, NAMES), protocol=protocol, folds=4)
        assert good.metrics["pooled"]["uf1"] > 0.9 and good.metrics["pooled"]["uar"] > 0.9
        assert bad.metrics["pooled"]["uf1"] < 0.55 and bad.metrics["pooled"]["acc"] < 0.55  # chance is 1/3
        assert len(good.predictions) == len(index) and sorted(good.predictions["clip"]) == sorted(index["clip"])
    assert good.metrics["num_folds"] == 4 and set(good.metrics) >= {"pooled", "fold_mean", "fold_std", "per_fold"}
    assert "fold mean ± std" in format_probe(good) and "pooled" in format_probe(good)


def test_folds_never_share_subjects_so_subject_identity_cannot_leak(tmp_path):
    """Features that encode only the subject, labels random per subject: any leak would score ~1."""
    rng = np.random.default_rng(1)
    index = _table(subjects=12, per_subject=8)
    per_subject = rng.integers(0, 3, size=13)
    index["label"] = per_subject[index["subject"]]
    index["emotion"] = [f"class{c}" for c in index["label"]]
    features = np.eye(13)[index["subject"]] * 5 + rng.normal(scale=0.1, size=(len(index), 13))
    for protocol in ("loso", "kfold"):
        result = probe(_write(tmp_path / "f", features, index, NAMES), protocol=protocol, folds=4)
        assert result.metrics["pooled"]["acc"] < 0.7
        for fold in result.folds:
            assert not set(fold.train_subjects) & set(fold.test_subjects)
            tested = result.predictions[result.predictions["fold"] == fold.fold]
            assert {result.groups[g] for g in fold.test_subjects} == set(zip(tested["dataset"], tested["subject"]))
        assert result.predictions.groupby("subject")["fold"].nunique().max() == 1  # each subject tested once
    # the same features under a clip-level split would leak: the planted identity is learnable
    assert probe(_write(tmp_path / "g", features, index.assign(subject=np.arange(len(index))), NAMES),
                 protocol="kfold", folds=4).metrics["pooled"]["acc"] > 0.9


def test_lodo_tests_exactly_one_dataset_per_fold_and_reports_each_dataset(tmp_path):
    index = _table(subjects=4, datasets=("casme2", "samm", "smic"))  # subject numbers repeat across datasets
    rng = np.random.default_rng(2)
    features = rng.normal(size=(len(index), 8))
    features[np.arange(len(index)), index["label"]] += 4.0
    result = probe(_write(tmp_path / "f", features, index, NAMES), protocol="lodo")
    assert len(result.folds) == 3
    for fold in result.folds:
        tested = result.predictions[result.predictions["fold"] == fold.fold]
        [dataset] = set(tested["dataset"])
        assert len(tested) == (index["dataset"] == dataset).sum()
        assert {result.groups[g][0] for g in fold.train_subjects} == {"casme2", "samm", "smic"} - {dataset}
    assert sorted(result.metrics["per_dataset"]) == ["casme2", "samm", "smic"]
    assert result.metrics["per_dataset"]["samm"]["subjects"] == 4
    # kfold/loso group (dataset, subject): subject 1 of casme2 and of samm are two people
    assert len(probe(tmp_path / "f", protocol="loso").folds) == 12


def test_a_class_absent_from_a_training_fold_is_reported_and_clips_outside_the_classes_left_out(tmp_path):
    index = _table(subjects=4, per_subject=6, classes=2)
    index.loc[index["subject"] == 3, "label"] = 2  # class2 only in subject 3
    index.loc[0, "label"] = -1  # outside the checkpoint's classes
    rng = np.random.default_rng(3)
    features = rng.normal(size=(len(index), 4))
    result = probe(_write(tmp_path / "f", features, index, NAMES), protocol="loso")
    [missing] = result.metrics["missing_classes"]
    fold = next(f for f in result.folds if result.groups[f.test_subjects[0]][1] == 3)
    assert missing["fold"] == fold.fold and missing["test_clips_of_those_classes"] == {"class2": 6}
    assert not (result.predictions.loc[result.predictions["fold"] == fold.fold, "pred"] == 2).any()
    assert result.metrics["left_out"]["clips"] == 1 and len(result.predictions) == len(index) - 1


@pytest.fixture
def folder(tmp_path):
    index = _table(subjects=4, per_subject=3)
    return _write(tmp_path / "f", np.random.default_rng(4).normal(size=(len(index), 4)), index, NAMES)


@pytest.mark.parametrize("extra,expected", [
    (["--protocol", "bogus"], "protocol 'bogus': expected one of loso, kfold, lodo"),
    (["--protocol", "lodo"], "protocol lodo needs clips of at least 2 datasets"),
    (["--protocol", "kfold", "--folds", "10"], "k=10 folds need at least 10 subjects"),
    (["--class-weight", "heavy"], "class weight 'heavy'"),
    (["--C", "0"], "C 0.0: expected a number > 0"),
])
def test_cli_bad_options_exit_2_with_one_line(folder, tmp_path, capsys, extra, expected):
    code = cli.main(["probe", str(folder), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_cli_bad_features_folders_exit_2_with_one_line(folder, tmp_path, capsys):
    code = cli.main(["probe", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing" in err
    assert not (tmp_path / "out").exists()
    np.save(folder / "features.npy", np.zeros((5, 4), np.float32))  # index.csv has 12 rows
    code = cli.main(["probe", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "index.csv has 12 rows but features.npy 5" in err


def test_cli_writes_predictions_and_labelled_metrics(folder, tmp_path, capsys):
    assert cli.main(["probe", str(folder), "--protocol", "kfold", "--folds", "2", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "UF1" in out and "fold mean ± std" in out
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["protocol"] == "kfold" and metrics["definitions"]["pooled"].startswith("all folds")
    assert metrics["probe"]["class_weight"] == "balanced" and metrics["probe"]["folds"] == 2
    predictions = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert len(predictions) == 12 and {"clip", "fold", "label", "pred", "prob_class0"} <= set(predictions.columns)
    with pytest.raises(ConfigError, match="labels 'x'"):
        probe(folder, labels="x")
