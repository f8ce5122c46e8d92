"""``microexp train --final``: one model on every subject after the folds, resumable, self-describing."""

import json

import pandas as pd
import pytest
import torch

import microexp.engine.experiment as experiment
from microexp.cli import main
from microexp.synth import generate_dataset
from microexp.checkpoint import load_checkpoint, model_from_checkpoint

BASE = {"cv.folds": 2, "train.epochs": 2, "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform",
        "model.name": "tsm_tiny", "data.num_workers": 0, "train.batch_size": 4, "seed": 5,
        "model.kwargs": "{drop_rate: 0.3}"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=16, subjects=4, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _train(annotations, out, *flags, **extra):
    args = ["train", "--out", str(out), "--no-progress", *flags]
    for key, value in {"data.annotations": str(annotations), **BASE, **extra}.items():
        args += ["--set", f"{key}={value}"]
    return main(args)


def test_final_trains_every_subject_after_the_folds(tiny_data, tmp_path, capsys, monkeypatch):
    trained_on = []
    real_train = experiment.train_one_epoch

    def spy(model, loader, **kwargs):
        trained_on.append((kwargs["description"], set(loader.dataset.table["subject"])))
        return real_train(model, loader, **kwargs)

    monkeypatch.setattr(experiment, "train_one_epoch", spy)
    run = tmp_path / "run"
    recipe = {"cv.val_fraction": 0.34, "train.model_selection": "val", "train.epochs": 1}
    assert _train(tiny_data, run, "--final", **recipe) == 0
    captured = capsys.readouterr()
    target = run / "final" / "model.pt"
    assert f"final model (all subjects): {target}" in captured.out
    assert "fixed schedule" in captured.err and "train.model_selection=val" in captured.err
    assert (run / "metrics.json").exists() and len(pd.read_csv(run / "predictions.csv")) == 16  # CV as usual
    all_subjects = set(pd.read_csv(tiny_data)["subject"])
    finals = [subjects for description, subjects in trained_on if description.startswith("final ")]
    assert finals == [all_subjects]  # on everyone, the fixed schedule (train.epochs=1)
    assert [d for d, _ in trained_on][-1] == "final epoch 1/1"  # after the folds
    payload = load_checkpoint(target)
    extra = payload["extra"]
    assert extra["final"] is True and extra["selection"] == "last" and extra["recipe_model_selection"] == "val"
    assert extra["subjects"] == sorted(all_subjects) and extra["clips"] == 16
    assert payload["fold"] is None and payload["epoch"] == 0
    assert payload["class_names"] and payload["data"]["pipeline"]["sampling"]["num_frames"] == 4
    model_from_checkpoint(payload)  # self-describing: rebuilds without the recipe
    assert not (run / "final" / "best.pt").exists()
    folds = json.loads((run / "folds.json").read_text())
    for fold in folds["folds"] if isinstance(folds, dict) else folds:  # fold models record whom they saw
        fold_extra = load_checkpoint(run / f"fold_{fold['fold']:02d}" / "model.pt")["extra"]
        assert fold_extra["train_subjects"] == sorted(fold["train_subjects"])
        assert fold_extra["val_subjects"] == sorted(fold["val_subjects"])
    assert pd.read_csv(run / "final" / "log.csv")["epoch"].tolist() == [0]

    # a rerun keeps the folds and the final model
    trained_on.clear()
    assert _train(tiny_data, run, "--final", **recipe) == 0
    assert trained_on == [] and "kept" in capsys.readouterr().err


def test_final_model_killed_mid_training_resumes_to_identical_weights(tiny_data, tmp_path, monkeypatch, capsys):
    assert _train(tiny_data, tmp_path / "straight", "--final-only") == 0
    assert "final model (all subjects)" in capsys.readouterr().out
    assert not (tmp_path / "straight" / "folds.json").exists() and not (tmp_path / "straight" / "metrics.json").exists()
    real_train = experiment.train_one_epoch
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(kwargs["description"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_one_epoch", killed_in_second_epoch)
    resumed = tmp_path / "resumed"
    assert _train(tiny_data, resumed, "--final-only") == 130
    assert (resumed / "final" / "last.pt").exists() and not (resumed / "final" / "model.pt").exists()
    monkeypatch.setattr(experiment, "train_one_epoch", real_train)
    assert _train(tiny_data, resumed, "--final-only") == 0
    assert "final: resuming after epoch 1" in capsys.readouterr().err
    a = load_checkpoint(tmp_path / "straight" / "final" / "model.pt")["state_dict"]
    b = load_checkpoint(resumed / "final" / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(resumed / "final" / "log.csv")["epoch"].tolist() == [0, 1]


def test_final_and_final_only_are_exclusive(tiny_data, tmp_path):
    with pytest.raises(SystemExit):
        _train(tiny_data, tmp_path / "run", "--final", "--final-only")
