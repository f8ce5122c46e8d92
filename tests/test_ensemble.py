"""``microexp ensemble``: fold-honest mixtures of runs that share folds; refusal of runs whose folds differ;
validation-only weights. Tiny synthetic runs, CPU."""

import json

import numpy as np
import pandas as pd
import pytest

from microexp.cli import main
from microexp.engine.ensemble import build_ensemble, fit_weights
from microexp.errors import ConfigError
from microexp.synth import generate_dataset

BASE = {"cv.folds": 2, "cv.val_fraction": 0.34, "train.model_selection": "val", "train.epochs": 1,
        "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny",
        "data.num_workers": 0, "train.batch_size": 4, "seed": 5}


def _train(annotations, out, **extra):
    args = ["-q", "train", "--out", str(out), "--no-progress"]
    for key, value in {"data.annotations": str(annotations), **BASE, **extra}.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    generate_dataset(root / "data", clips=24, subjects=6, size=32, fmt="frames", seed=3, workers=1, progress=False)
    table = root / "data" / "annotations.csv"
    return {"a": _train(table, root / "a"), "b": _train(table, root / "b", **{"train.lr": 0.01}),
            "other_seed": _train(table, root / "c", seed=6)}


def test_fit_weights_prefers_the_member_that_is_right_on_validation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    right = np.full((60, 3), 0.05)
    right[np.arange(60), labels] = 0.9
    noise = rng.dirichlet(np.ones(3), size=60)
    w = fit_weights([noise, right], labels)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9


def test_ensemble_mixes_each_folds_members_and_scores_like_a_run(runs, tmp_path):
    out = tmp_path / "e"
    metrics = build_ensemble([runs["a"], runs["b"]], out)
    a, b = (pd.read_csv(runs[k] / "predictions.csv", dtype={"clip": str}).set_index("clip") for k in "ab")
    mixed = pd.read_csv(out / "predictions.csv", dtype={"clip": str}).set_index("clip")
    probs = [c for c in mixed.columns if c.startswith("prob_")]
    assert sorted(mixed.index) == sorted(a.index)
    np.testing.assert_allclose(mixed[probs].to_numpy(), (a.loc[mixed.index, probs].to_numpy()
                                                         + b.loc[mixed.index, probs].to_numpy()) / 2, atol=1e-6)
    assert (mixed["pred"] == mixed[probs].to_numpy().argmax(axis=1)).all()
    assert (mixed["fold"] == a.loc[mixed.index, "fold"]).all()  # every clip voted on by its own fold's models
    assert metrics["pooled"]["uf1"] == json.loads((out / "metrics.json").read_text())["pooled"]["uf1"]
    record = json.loads((out / "ensemble.json").read_text())
    assert record["fold_weights"] == {"0": [0.5, 0.5], "1": [0.5, 0.5]}
    assert (out / "folds.json").read_text() == (runs["a"] / "folds.json").read_text()


def test_val_weights_come_from_validation_clips_only(runs, tmp_path):
    build_ensemble([runs["a"], runs["b"]], tmp_path / "v", weights="val")
    record = json.loads((tmp_path / "v" / "ensemble.json").read_text())
    folds = json.loads((runs["a"] / "folds.json").read_text())
    for fold in folds:
        val = pd.read_csv(runs["a"] / f"fold_{fold['fold']:02d}" / "val_predictions.csv")
        assert set(val["subject"]) == set(fold["val_subjects"])  # never a test subject
        assert sum(record["fold_weights"][str(fold["fold"])]) == pytest.approx(1.0)


def test_runs_with_other_folds_are_refused(runs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="folds differ"):
        build_ensemble([runs["a"], runs["other_seed"]], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    code = main(["ensemble", str(runs["a"]), str(runs["other_seed"]), "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "folds differ" in err[0]


@pytest.mark.parametrize("case, message", [("one", "at least two runs"), ("twice", "named twice"),
                                           ("not_a_run", "no config.yaml")])
def test_bad_member_lists_are_one_line(runs, tmp_path, case, message):
    members = {"one": [runs["a"]], "twice": [runs["a"], runs["a"]], "not_a_run": [runs["a"], tmp_path]}[case]
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        build_ensemble(members, tmp_path / "e")
