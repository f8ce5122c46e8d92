"""Knowledge distillation (``loss.distill_from``): the student's soft labels come from the same-fold teachers,
on that fold's training clips only; teachers with other folds, or that saw a test subject, are refused.
Tiny synthetic runs, CPU."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from microexp.cli import main
from microexp.config import ConfigError, build_config
from microexp.engine.distill import soften
from microexp.losses import distillation_loss
from microexp.synth import generate_dataset

BASE = {"cv.folds": 2, "cv.val_fraction": 0.34, "train.model_selection": "val", "train.epochs": 1,
        "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny",
        "data.num_workers": 0, "train.batch_size": 4, "seed": 5}


def _train(annotations, out, *flags, **extra):
    args = ["-q", "train", "--out", str(out), "--no-progress", *flags]
    for key, value in {"data.annotations": str(annotations), **BASE, **extra}.items():
        args += ["--set", f"{key}={value}"]
    return main(args)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    generate_dataset(root / "data", clips=24, subjects=6, size=32, fmt="frames", seed=3, workers=1, progress=False)
    table = root / "data" / "annotations.csv"
    assert _train(table, root / "t1", **{"model.name": "r3d_tiny"}) == 0
    assert _train(table, root / "t2") == 0
    assert _train(table, root / "other_seed", seed=6) == 0
    return table, root


def test_soften_is_softmax_of_tempered_logits():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.exp(logits / 4) / np.exp(logits / 4).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soften(p, 4.0), expected, rtol=1e-9)


def test_distillation_loss_is_zero_at_the_teacher_and_scaled_by_t_squared():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    at_teacher = torch.softmax(logits / 2.0, dim=1)
    assert distillation_loss(logits, at_teacher, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[0.6, 0.2, 0.2]])
    kl = (other * (other.log() - torch.log_softmax(logits / 2.0, dim=1))).sum()
    assert distillation_loss(logits, other, temperature=2.0).item() == pytest.approx(4.0 * kl.item(), rel=1e-5)


def test_student_learns_from_training_clips_of_its_own_fold_only(teachers, tmp_path):
    table, root = teachers
    student = tmp_path / "student"
    assert _train(table, student, **{"loss.distill_from": f"[{root / 't1'}, {root / 't2'}]",
                                     "loss.distill_temperature": 2.0, "loss.distill_smoothing": 0.1}) == 0
    folds = json.loads((student / "folds.json").read_text())
    clips = pd.read_csv(table)
    for fold in folds:
        targets = pd.read_csv(student / f"fold_{fold['fold']:02d}" / "teacher_targets.csv", dtype={"clip": str})
        subjects = set(clips.set_index("clip").loc[targets["clip"], "subject"])
        assert subjects == set(fold["train_subjects"])  # no validation, no test subject
        probs = targets[[c for c in targets.columns if c.startswith("prob_")]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert probs.min() >= 0.1 / probs.shape[1] - 1e-6  # smoothed by eps / C
    assert (student / "predictions.csv").is_file()
    record = json.loads((student / "fold_00" / "teacher_targets.json").read_text())
    teachers = [str(root / name / "fold_00" / "model.pt") for name in ("t1", "t2")]
    assert [t["checkpoint"] for t in record["teachers"]] == teachers


def test_teachers_with_other_folds_are_refused_before_anything_is_written(teachers, tmp_path, capsys):
    table, root = teachers
    student = tmp_path / "bad"
    code = _train(table, student, **{"loss.distill_from": f"[{root / 'other_seed'}]"})
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "folds differ" in err[-1] and len(err) == 1
    assert not (student / "config.yaml").exists()


def test_a_teacher_model_that_saw_a_test_subject_is_refused(teachers, tmp_path):
    table, root = teachers
    import shutil

    from microexp.checkpoint import load_checkpoint, save_checkpoint, model_from_checkpoint

    leaky = tmp_path / "leaky"
    shutil.copytree(root / "t2", leaky)
    folds = json.loads((leaky / "folds.json").read_text())
    path = leaky / "fold_00" / "model.pt"
    payload = load_checkpoint(path)
    extra = dict(payload["extra"], train_subjects=sorted(payload["extra"]["train_subjects"]
                                                         + folds[0]["test_subjects"][:1]))
    save_checkpoint(path, model=model_from_checkpoint(payload), class_names=payload["class_names"],
                    data=payload["data"], extra=extra)
    student = tmp_path / "student"
    with pytest.raises(ConfigError, match="trained on test subject"):
        from microexp.config import load_config
        from microexp.engine.experiment import run_experiment

        config = load_config(None, [f"{k}={v}" for k, v in {"data.annotations": str(table), **BASE}.items()]
                             + [f"loss.distill_from=[{leaky}]"])
        run_experiment(config, student, progress=False)
    assert not (student / "config.yaml").exists()  # refused before the run started


def test_a_teacher_that_is_not_a_run_is_refused_when_the_run_starts(teachers, tmp_path, capsys):
    table, _ = teachers
    build_config({"loss": {"distill_from": ["/nonexistent/run"]}})  # a finished student's config loads anywhere
    code = _train(table, tmp_path / "s", **{"loss.distill_from": "[/nonexistent/run]"})
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no config.yaml" in err[-1] and not (tmp_path / "s" / "config.yaml").exists()
    with pytest.raises(ConfigError, match="listed twice"):
        build_config({"loss": {"distill_from": ["a", "a"]}})


def test_distillation_weight_and_temperature_ranges(teachers):
    _, root = teachers
    for key, value in (("distill_weight", 0.0), ("distill_weight", 1.5), ("distill_temperature", 0.0),
                       ("distill_smoothing", 1.0)):
        with pytest.raises(ConfigError, match=f"loss.{key}"):
            build_config({"loss": {"distill_from": [str(root / "t1")], key: value}})
