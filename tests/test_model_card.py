"""The model card written beside an export: the run's honest metrics, failure modes and out-of-scope uses."""

import json
import shutil

import pytest

from microexp.checkpoint import load_checkpoint
from microexp.cli import main
from microexp.inference.model_card import OUT_OF_SCOPE, model_card, run_directory_of
from microexp.synth import generate_dataset


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    generate_dataset(root / "data", clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    values = {"data.annotations": str(root / "data" / "annotations.csv"), "cv.folds": 2, "train.epochs": 1,
              "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny",
              "data.num_workers": 0, "train.batch_size": 4, "seed": 5, "data.aus": "true", "data.au_min_count": 2}
    args = ["train", "--out", str(root / "run"), "--no-progress"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    return root / "run"


def test_export_writes_a_card_with_the_runs_cross_validation_metrics(tiny_run, tmp_path, capsys):
    out = tmp_path / "m.ts"
    assert main(["export", "--checkpoint", str(tiny_run / "fold_00" / "model.pt"), "--format", "torchscript",
                 "--out", str(out)]) == 0
    assert "model card" in capsys.readouterr().out
    card = (tmp_path / "m.ts.model_card.md").read_text()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    pooled = metrics["pooled"]
    assert f"| {pooled['acc']:.3f} | {pooled['uf1']:.3f} | {pooled['uar']:.3f} |" in card
    assert f"{metrics['fold_mean']['uf1']:.3f} ± {metrics['fold_std']['uf1']:.3f}" in card
    assert "fold 0's model" in card and "synthetic benchmark" in card
    assert f"mean AU F1 pooled {metrics['aus']['pooled']['mean_f1']:.3f}" in card
    for name, values in metrics["per_class"].items():  # every class's recall, and the weak ones named
        if values["recall"] is not None:
            assert f"{name} {values['recall']:.3f}" in card
    weak = [n for n, v in metrics["per_class"].items() if v["recall"] is not None and v["recall"] < 0.5]
    assert not weak or f"less than half the time in the cross-validation: {', '.join(weak)}" in card
    for use in OUT_OF_SCOPE:
        assert f"- {use}" in card


def test_a_checkpoint_outside_its_run_says_it_has_no_measured_performance(tiny_run, tmp_path):
    loose = tmp_path / "model.pt"
    shutil.copy(tiny_run / "fold_00" / "model.pt", loose)
    assert run_directory_of(loose) is None and run_directory_of(tiny_run / "fold_01" / "model.pt") == tiny_run
    card = model_card(loose, load_checkpoint(loose))
    assert "no measured performance to report" in card and "| pooled" not in card
    assert "Out of scope" in card
