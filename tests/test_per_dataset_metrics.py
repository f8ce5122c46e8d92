"""Per-dataset metrics of runs on mixed clip tables: metrics.json's ``per_dataset`` equals the metrics recomputed by
hand on each dataset's rows of the pooled predictions (via write_metrics, ``microexp evaluate`` and a tiny train)."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score

import microexp.engine.results as results
from microexp.cli import main
from microexp.cli.train import format_results
from microexp.metrics import per_dataset_metrics
from microexp.splits import Fold, save_folds
from microexp.synth import generate_dataset

CLASSES = ["negative", "positive", "surprise"]
DATASETS = ("casme2", "samm", "smic")  # subjects 1-3, 4-6, 7-9


def _mixed_predictions() -> pd.DataFrame:
    """36 clips of 9 subjects in 3 datasets, tested in 3 folds (one subject of each dataset per fold).

    casme2 never has nor predicts surprise (its F1 is undefined, left out); smic never has surprise but it is
    predicted (F1 0, counted in UF1; recall undefined, left out of UAR); samm has every class.
    """
    rng = np.random.default_rng(7)
    rows = []
    for subject in range(1, 10):
        dataset = DATASETS[(subject - 1) // 3]
        for index in range(4):
            classes = 3 if dataset == "samm" else 2
            label = int(rng.integers(classes))
            pred = int(rng.integers(3 if dataset == "smic" else classes))
            rows.append({"clip": f"{dataset}_{subject}_{index}", "subject": subject, "dataset": dataset,
                         "fold": (subject - 1) % 3, "label": label, "pred": pred})
    rows[-1]["pred"] = 2  # smic: surprise predicted at least once
    frame = pd.DataFrame(rows)
    for c, name in enumerate(CLASSES):
        frame[f"prob_{name}"] = np.where(frame["pred"] == c, 0.8, 0.1)
    return frame


def _fake_run(run, frame):
    """A run directory as evaluate reads it: config.yaml, folds.json, predictions.csv."""
    run.mkdir()
    (run / "config.yaml").write_text("cv:\n  protocol: loso\n")
    subjects = sorted(set(frame["subject"]))
    folds = []
    for f in sorted(set(frame["fold"])):
        test = sorted(set(frame.loc[frame["fold"] == f, "subject"]))
        folds.append(Fold(fold=int(f), train_subjects=tuple(s for s in subjects if s not in test),
                          test_subjects=tuple(test)))
    save_folds(folds, run / "folds.json")
    frame.to_csv(run / "predictions.csv", index=False)
    return run


def _by_hand(frame, *, num_classes=3):
    """Each dataset's ACC, UF1 (sklearn's macro F1), UAR and per-class recall, written out independently."""
    expected = {}
    for name, rows in frame.groupby("dataset"):
        labels, preds = rows["label"].to_numpy(), rows["pred"].to_numpy()
        recall = [float(np.mean(preds[labels == c] == c)) if (labels == c).any() else None
                  for c in range(num_classes)]
        expected[name] = {
            "clips": len(rows), "subjects": rows["subject"].nunique(),
            "acc": float(np.mean(labels == preds)),
            "uf1": float(f1_score(labels, preds, average="macro")),  # over classes in labels or preds
            "uar": float(np.mean([r for r in recall if r is not None])),
            "recall": recall,
        }
    return expected


def _assert_matches(per_dataset, expected, classes=CLASSES):
    assert list(per_dataset) == sorted(expected)
    for name, want in expected.items():
        got = per_dataset[name]
        assert (got["clips"], got["subjects"]) == (want["clips"], want["subjects"])
        assert got["pooled"] == pytest.approx({k: want[k] for k in ("acc", "uf1", "uar")}, abs=1e-12)
        assert [got["per_class"][c]["recall"] for c in classes] == pytest.approx(want["recall"], abs=1e-12)


def test_per_dataset_metrics_equal_those_computed_by_hand():
    frame = _mixed_predictions()
    expected = _by_hand(frame)
    got = per_dataset_metrics(frame["label"], frame["pred"], frame["dataset"], subjects=frame["subject"],
                              num_classes=3, class_names=CLASSES)
    _assert_matches(got, expected)
    # the absent-class convention: casme2's surprise neither true nor predicted is undefined, smic's predicted one 0
    assert got["casme2"]["per_class"]["surprise"] == {"recall": None, "f1": None}
    assert got["smic"]["per_class"]["surprise"] == {"recall": None, "f1": 0.0}
    assert sum(v["clips"] for v in got.values()) == len(frame)
    summed = np.sum([v["confusion_matrix"] for v in got.values()], axis=0)  # the datasets partition the rows
    assert (summed == confusion_matrix(frame["label"], frame["pred"], labels=range(3))).all()
    with pytest.raises(ValueError, match="no name at index 3"):
        per_dataset_metrics(frame["label"], frame["pred"], frame["dataset"].where(frame.index != 3),
                            subjects=frame["subject"], num_classes=3)


def test_write_metrics_and_evaluate_add_per_dataset(tmp_path, capsys):
    frame = _mixed_predictions()
    run = _fake_run(tmp_path / "run", frame)
    expected = _by_hand(frame)

    metrics = results.write_metrics(run, frame, CLASSES, protocol="loso")
    _assert_matches(metrics["per_dataset"], expected)
    assert "per_dataset" in metrics["definitions"] and "pooled" in metrics["definitions"]["per_dataset"]
    assert json.loads((run / "metrics.json").read_text()) == metrics

    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    _assert_matches(printed["per_dataset"], expected)
    assert printed == metrics and json.loads((run / "metrics.json").read_text()) == metrics

    assert main(["evaluate", str(run)]) == 0
    table = capsys.readouterr().out.splitlines()
    pooled_row = next(i for i, line in enumerate(table) if line.startswith("pooled (all folds)"))
    for offset, name in enumerate(DATASETS, start=1):
        row = table[pooled_row + offset].split()
        assert row[0] == name and f"{expected[name]['clips']} clips)" in table[pooled_row + offset]
        assert [float(v) for v in row[-3:]] == pytest.approx(
            [expected[name][k] for k in ("acc", "uf1", "uar")], abs=5e-4)
    assert table[pooled_row + len(DATASETS) + 1].startswith("fold mean")


def test_one_dataset_or_no_dataset_column_gives_no_per_dataset(tmp_path, capsys):
    frame = _mixed_predictions().assign(dataset="casme2")
    run = _fake_run(tmp_path / "single", frame)
    assert main(["evaluate", str(run), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert "per_dataset" not in single and "per_dataset" not in single["definitions"]
    assert "(pooled," not in format_results(single)

    old = _fake_run(tmp_path / "old", frame.drop(columns="dataset"))  # a run from before the column existed
    assert main(["evaluate", str(old), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == single


def test_an_empty_dataset_cell_is_one_line_naming_it(tmp_path, capsys):
    frame = _mixed_predictions()
    frame["dataset"] = frame["dataset"].astype(object)
    frame.loc[5, "dataset"] = ""
    run = _fake_run(tmp_path / "run", frame)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("microexp ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "empty dataset on line 7" in lines[0] and "predictions.csv" in lines[0]
    assert not (run / "metrics.json").exists()


def test_a_tiny_run_on_a_two_dataset_table_reports_each_dataset(tmp_path, capsys):
    generate_dataset(tmp_path / "synth", clips=12, subjects=4, size=32, fmt="frames", seed=3, workers=1,
                     progress=False)
    table = pd.read_csv(tmp_path / "synth" / "annotations.csv")
    # dfme and samm both use dfme7's emotions; subjects 1-2 are one dataset, 3-4 the other
    table["dataset"] = np.where(table["subject"] <= 2, "dfme", "samm")
    table.to_csv(tmp_path / "synth" / "mixed.csv", index=False)
    settings = {"data.annotations": tmp_path / "synth" / "mixed.csv", "cv.folds": 2, "train.epochs": 1,
                "data.size": 32, "data.num_frames": 2, "data.sampling": "uniform", "model.name": "tsm_tiny",
                "data.num_workers": 0, "train.batch_size": 4, "seed": 1}
    args = ["-q", "train", "--out", str(tmp_path / "run"), "--no-progress"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    per_dataset = metrics["per_dataset"]
    assert sorted(per_dataset) == ["dfme", "samm"]
    counts = table.groupby("dataset")["clip"].count()
    assert {n: v["clips"] for n, v in per_dataset.items()} == counts.to_dict()
    assert sum(v["clips"] for v in per_dataset.values()) == metrics["num_samples"] == len(table)
    assert all(v["subjects"] == 2 for v in per_dataset.values())
    assert f"dfme (pooled, {counts['dfme']} clips)" in printed and f"samm (pooled, {counts['samm']} clips)" in printed
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(predictions.columns[:3]) == ["clip", "subject", "dataset"]
    _assert_matches(per_dataset, _by_hand(predictions, num_classes=len(metrics["classes"])), metrics["classes"])
