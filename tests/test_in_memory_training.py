"""The in-memory mode inside ``microexp train``: one store for every fold, training and validation batches
drawn only from their own subjects, test clips evaluated once through the per-item path, the same results
with or without resuming, and ``on`` refused before the run directory exists where it cannot apply."""

import json

import pandas as pd
import pytest

import microexp.data.in_memory as in_memory
import microexp.engine.experiment as experiment
from microexp.cli import main
from microexp.synth import generate_dataset

SETTINGS = {"cv.folds": 2, "cv.val_fraction": 0.3, "train.epochs": 2, "data.size": 32, "data.num_frames": 4,
            "data.sampling": "apex_centered", "model.name": "frame_tiny", "model.kwargs.apex_index": "null",
            "data.num_workers": 0, "train.batch_size": 4, "seed": 5, "train.model_selection": "val"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=20, subjects=6, size=32, fmt="frames", seed=7, workers=1, progress=False)
    return out / "annotations.csv"


def _train(annotations, out, **extra):
    args = ["-q", "train", "--out", str(out), "--no-progress", "--set", f"data.annotations={annotations}"]
    for key, value in {**SETTINGS, **extra}.items():
        if value is not None:  # None: leave the key out
            args += ["--set", f"{key}={value}"]
    return main(args)


def test_batches_come_only_from_their_own_subjects_and_the_store_is_built_once(tiny_data, tmp_path, monkeypatch):
    events = []  # in order: ("batch", train, subjects) from the store, ("test", fold, clips) from evaluate
    real_batch = in_memory.InMemoryClips.batch
    real_evaluate = experiment.evaluate

    def batch_spy(self, positions, *, train=False, generator=None):
        out = real_batch(self, positions, train=train, generator=generator)
        events.append(("batch", train, {int(s) for s in out["subject"]}))
        return out

    def evaluate_spy(model, loader, **kwargs):
        description = kwargs.get("description", "")
        if description.endswith(" test"):
            events.append(("test", int(description.split()[1]), sorted(loader.dataset.table["clip"])))
        return real_evaluate(model, loader, **kwargs)

    builds = []
    real_build = in_memory.InMemoryClips.build.__func__

    def build_spy(cls, dataset, **kwargs):
        builds.append(len(dataset))
        return real_build(cls, dataset, **kwargs)

    monkeypatch.setattr(in_memory.InMemoryClips, "build", classmethod(build_spy))
    monkeypatch.setattr(in_memory.InMemoryClips, "batch", batch_spy)
    monkeypatch.setattr(experiment, "evaluate", evaluate_spy)
    monkeypatch.setattr(in_memory._LAST, "store", None)  # no store left by another test of this process
    run = tmp_path / "run"
    assert _train(tiny_data, run, **{"data.in_memory": "on"}) == 0
    assert builds == [20]  # one store of the whole table, shared by both folds
    folds = {f["fold"]: f for f in json.loads((run / "folds.json").read_text())}
    table = pd.read_csv(tiny_data)
    # folds run one after the other: the batches before a fold's test pass are that fold's
    batches, tested = [], []
    for event in events:
        if event[0] == "batch":
            batches.append(event)
            continue
        fold = folds[event[1]]
        train, val = set(fold["train_subjects"]), set(fold["val_subjects"])
        assert batches and all((subjects <= train) if is_train else (subjects <= val)
                               for _, is_train, subjects in batches)
        assert any(is_train for _, is_train, _ in batches) and any(not t for _, t, _ in batches)
        # each test clip of the fold went through the per-item test loader, once
        assert event[2] == sorted(table.loc[table["subject"].isin(fold["test_subjects"]), "clip"])
        tested.append(event[1])
        batches = []
    assert sorted(tested) == sorted(folds)


def test_in_memory_runs_resume_to_the_same_predictions(tiny_data, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert _train(tiny_data, whole, **{"data.in_memory": "on"}) == 0
    assert _train(tiny_data, resumed, **{"data.in_memory": "on", "train.epochs": 2}) == 0
    (resumed / "fold_01" / "predictions.csv").unlink()
    (resumed / "fold_01" / "model.pt").unlink()
    (resumed / "metrics.json").unlink()
    assert _train(tiny_data, resumed, **{"data.in_memory": "on"}) == 0
    assert (whole / "predictions.csv").read_text() == (resumed / "predictions.csv").read_text()


def test_on_for_tsn_rgb_is_refused_before_the_run_directory_exists(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_data, run, **{"data.in_memory": "on", "data.sampling": "tsn", "model.name": "r3d_tiny",
                                        "model.kwargs.apex_index": None}) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tsn" in err
    assert not run.exists()
