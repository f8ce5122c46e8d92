"""End-to-end cross-validation on tiny synthetic data: outputs, integrity, resume, reproducibility."""

import json

import pandas as pd
import pytest

import microexp.engine.experiment as experiment
from microexp.cli import main
from microexp.config import load_config
from microexp.synth import generate_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _overrides(annotations, **extra):
    values = {"data.annotations": str(annotations), "cv.folds": 2, "train.epochs": 1, "data.size": 32,
              "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny", "data.num_workers": 0,
              "train.batch_size": 4, "seed": 5, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def _train(annotations, out, **extra):
    args = ["train", "--out", str(out), "--no-progress"]
    for item in _overrides(annotations, **extra):
        args += ["--set", item]
    return main(args)


def test_two_fold_run_writes_every_output(tiny_data, tmp_path, capsys):
    assert _train(tiny_data, tmp_path / "run", **{"cv.val_fraction": 0.34, "train.model_selection": "val"}) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert "pooled (all folds)" in out and "fold mean" in out
    folds = json.loads((run / "folds.json").read_text())
    assert [f["fold"] for f in folds] == [0, 1]
    for fold in folds:
        assert not set(fold["test_subjects"]) & (set(fold["train_subjects"]) | set(fold["val_subjects"]))
    predictions = pd.read_csv(run / "predictions.csv")
    table = pd.read_csv(tiny_data)
    assert sorted(predictions["clip"]) == sorted(table["clip"])  # every clip tested exactly once
    prob_columns = [c for c in predictions.columns if c.startswith("prob_")]
    assert len(prob_columns) == 7 and (predictions[prob_columns].sum(axis=1) - 1).abs().max() < 1e-4
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"protocol", "classes", "pooled", "fold_mean", "fold_std", "per_class", "confusion_matrix"} <= set(metrics)
    assert metrics["protocol"] == "kfold" and set(metrics["pooled"]) == {"acc", "uf1", "uar"}
    for name in ("confusion_matrix.png", "per_class_recall.png", "training_curves.png", "config.yaml"):
        assert (run / name).stat().st_size > 0
    assert load_config(run / "config.yaml").cv.folds == 2

    # evaluate recomputes the same metrics from predictions.csv alone
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_test_subjects_are_evaluated_once_per_fold_after_training(tiny_data, tmp_path, monkeypatch):
    events = []
    real_train, real_evaluate = experiment.train_one_epoch, experiment.evaluate

    def train_spy(*args, **kwargs):
        events.append(("train", kwargs["description"]))
        return real_train(*args, **kwargs)

    def evaluate_spy(model, loader, **kwargs):
        events.append(("eval", kwargs.get("description", ""), set(loader.dataset.table["subject"])))
        return real_evaluate(model, loader, **kwargs)

    monkeypatch.setattr(experiment, "train_one_epoch", train_spy)
    monkeypatch.setattr(experiment, "evaluate", evaluate_spy)
    assert _train(tiny_data, tmp_path / "run", **{"train.epochs": 2, "cv.val_fraction": 0.34,
                                                  "train.model_selection": "val"}) == 0
    folds = json.loads((tmp_path / "run" / "folds.json").read_text())
    for fold in folds:
        test = set(fold["test_subjects"])
        mine = f"fold {fold['fold']} "
        touching = [i for i, e in enumerate(events) if e[0] == "eval" and e[1].startswith(mine) and e[2] & test]
        assert len(touching) == 1 and events[touching[0]][2] == test  # once, and nothing else mixed in
        trains = [i for i, e in enumerate(events) if e[0] == "train" and e[1].startswith(mine)]
        vals = [e for e in events if e[0] == "eval" and e[1] == f"fold {fold['fold']} val"]
        # one per epoch, then the selected model's val_predictions.csv (what ensembles weigh on)
        assert len(vals) == 3 and all(not (e[2] & test) for e in vals)
        assert (tmp_path / "run" / f"fold_{fold['fold']:02d}" / "val_predictions.csv").is_file()
        assert len(trains) == 2 and max(trains) < touching[0]


def test_same_seed_same_metrics(tiny_data, tmp_path):
    assert _train(tiny_data, tmp_path / "a") == 0
    assert _train(tiny_data, tmp_path / "b") == 0
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")
    b = pd.read_csv(tmp_path / "b" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b)


def test_interrupted_run_resumes_without_retraining_finished_work(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_run_fold = experiment.run_fold
    calls = []

    def crash_in_second_fold(config, data, fold, fold_dir, **kwargs):
        calls.append(fold.fold)
        if fold.fold == 1:
            raise KeyboardInterrupt
        return real_run_fold(config, data, fold, fold_dir, **kwargs)

    monkeypatch.setattr(experiment, "run_fold", crash_in_second_fold)
    assert _train(tiny_data, run) == 130
    assert (run / "fold_00" / "predictions.csv").exists() and not (run / "predictions.csv").exists()
    monkeypatch.setattr(experiment, "run_fold", lambda *a, **k: calls.append(a[2].fold) or real_run_fold(*a, **k))
    calls.clear()
    assert _train(tiny_data, run) == 0
    assert calls == [1]  # fold 0 was kept
    assert len(pd.read_csv(run / "predictions.csv")) == len(pd.read_csv(tiny_data))


def test_resume_continues_from_the_last_completed_epoch(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert _train(tiny_data, run, **{"train.epochs": 2}) == 0
    log = pd.read_csv(run / "fold_00" / "log.csv")
    assert log["epoch"].tolist() == [0, 1]
    # forget that fold 0 finished, as if killed after its second epoch: only the test pass is redone
    (run / "fold_00" / "predictions.csv").unlink()
    (run / "predictions.csv").unlink()
    assert _train(tiny_data, run, **{"train.epochs": 2}) == 0
    assert pd.read_csv(run / "fold_00" / "log.csv")["epoch"].tolist() == [0, 1]


def test_fold_killed_mid_training_resumes_to_identical_predictions(tiny_data, tmp_path, monkeypatch):
    extra = {"train.epochs": 3, "cv.folds": 2, "model.kwargs": "{drop_rate: 0.3}"}
    assert _train(tiny_data, tmp_path / "straight", **extra) == 0
    real_train = experiment.train_one_epoch
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(kwargs["description"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_one_epoch", killed_in_second_epoch)
    assert _train(tiny_data, tmp_path / "resumed", **extra) == 130
    monkeypatch.setattr(experiment, "train_one_epoch", real_train)
    assert _train(tiny_data, tmp_path / "resumed", **extra) == 0
    straight = pd.read_csv(tmp_path / "straight" / "predictions.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "predictions.csv")
    pd.testing.assert_frame_equal(straight, resumed)  # sampler draws and dropout masks replayed exactly


def test_worker_count_does_not_change_results(tiny_data, tmp_path):
    assert _train(tiny_data, tmp_path / "inline", **{"train.epochs": 2}) == 0
    assert _train(tiny_data, tmp_path / "workers", **{"train.epochs": 2, "data.num_workers": 2}) == 0
    inline = pd.read_csv(tmp_path / "inline" / "predictions.csv")
    workers = pd.read_csv(tmp_path / "workers" / "predictions.csv")
    pd.testing.assert_frame_equal(inline, workers)


def test_config_change_in_an_existing_run_dir_is_refused(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_data, run) == 0
    assert _train(tiny_data, run, **{"train.lr": 0.5}) == 2
    assert "different config.yaml" in capsys.readouterr().err


def test_fixed_split_protocol_tests_exactly_the_listed_subjects(tiny_data, tmp_path):
    subjects = sorted(pd.read_csv(tiny_data)["subject"].unique())
    test_subjects = [int(s) for s in subjects[:2]]
    assert _train(tiny_data, tmp_path / "run", **{"cv.protocol": "split",
                                                  "cv.test_subjects": f"[{test_subjects[0]}, {test_subjects[1]}]"}) == 0
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert sorted(predictions["subject"].unique()) == test_subjects
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["protocol"] == "split"
