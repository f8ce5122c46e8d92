"""The leakage audit: train still tests each clip once; the audit's oracle is the test-selected maximum.

One tiny mixed table (two source datasets, 3 classes) is trained by ``microexp train`` and audited by
``microexp audit`` once per module, with a spy on every item a Dataset yields.
"""

import contextlib
import io
import json
import shutil
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

import microexp.engine.audit as audit
import microexp.engine.experiment as experiment
from microexp.cli import main
from microexp.data.dataset import MicroExpressionDataset
from microexp.synth import generate_dataset

EPOCHS = 4

# two subjects per fold: a fold may lack a class in training, which the loss reports; expected here
pytestmark = pytest.mark.filterwarnings("ignore:classes .* have no training samples")


def _mixed_table(folder):
    """The synthetic table relabelled as two source datasets under the MEGC composite's 3-class map."""
    generate_dataset(folder, clips=24, subjects=4, size=32, fmt="frames", seed=3, workers=1, progress=False)
    path = folder / "annotations.csv"
    table = pd.read_csv(path)
    casme2 = table["subject"] % 2 == 0
    table["dataset"] = np.where(casme2, "casme2", "samm")
    # CASME II's sheet has no anger, contempt, fear or sadness in the 3-class map: keep every clip labelled
    table.loc[casme2 & table["emotion"].isin(["anger", "contempt", "fear", "sadness"]), "emotion"] = "disgust"
    table.to_csv(path, index=False)
    return path


def _settings(annotations, **extra):
    values = {"data.annotations": str(annotations), "data.class_map": "megc3", "cv.folds": 2,
              "train.epochs": EPOCHS, "train.lr": 0.02, "train.sampler": "class_balanced", "data.size": 32,
              "data.num_frames": 4, "data.sampling": "apex_centered", "model.name": "frame_tiny",
              "data.num_workers": 0, "train.batch_size": 4, "seed": 5,
              # the item spy below sees what each Dataset yields: per-item loading (the in-memory path's own
              # integrity test is in test_in_memory.py)
              "data.in_memory": "off", **extra}
    args = []
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


@contextlib.contextmanager
def _item_spy():
    """Record ``(train, clip, subjects of its Dataset)`` for every item any Dataset yields."""
    items = []
    real = MicroExpressionDataset.__getitem__

    def spy(self, index):
        item = real(self, index)
        items.append((self.train, str(item["clip"]), frozenset(int(s) for s in self.table["subject"])))
        return item

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MicroExpressionDataset, "__getitem__", spy)
        yield items


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    annotations = _mixed_table(root / "data")
    with _item_spy() as train_items:
        assert main(["-q", "train", "--out", str(root / "train"), "--no-progress", *_settings(annotations)]) == 0
    stdout = io.StringIO()
    with _item_spy() as audit_items, contextlib.redirect_stdout(stdout):
        assert main(["-q", "audit", "--out", str(root / "audit"), "--no-progress", *_settings(annotations)]) == 0
    return SimpleNamespace(root=root, annotations=annotations, train=root / "train", audit=root / "audit",
                           train_items=train_items, audit_items=audit_items, stdout=stdout.getvalue(),
                           report=json.loads((root / "audit" / "audit.json").read_text()))


def test_train_evaluates_every_test_clip_exactly_once(runs):
    folds = json.loads((runs.train / "folds.json").read_text())
    table = pd.read_csv(runs.annotations)
    evaluated = Counter(clip for train, clip, _ in runs.train_items if not train)
    for fold in folds:
        test_clips = set(table.loc[table["subject"].isin(fold["test_subjects"]), "clip"])
        assert test_clips and {clip: evaluated[clip] for clip in test_clips} == dict.fromkeys(test_clips, 1)
    # every training Dataset holds exactly one fold's training subjects
    training_sets = {subjects for train, _, subjects in runs.train_items if train}
    assert training_sets == {frozenset(f["train_subjects"]) for f in folds}
    # the spy can see more: the audit loads each test clip once per epoch for itself, plus train's one pass
    audited = Counter(clip for train, clip, _ in runs.audit_items if not train)
    assert set(audited.values()) == {EPOCHS + 1}


def test_audit_trains_exactly_what_train_trains(runs):
    honest = pd.read_csv(runs.audit / "honest_predictions.csv")
    pd.testing.assert_frame_equal(honest, pd.read_csv(runs.train / "predictions.csv"))
    metrics = json.loads((runs.train / "metrics.json").read_text())
    assert runs.report["honest"]["pooled"] == pytest.approx(metrics["pooled"])
    # the audit's last-epoch pass on last.pt reproduces the predictions run_fold made with the trained model
    for fold in runs.report["per_fold"]:
        rows = pd.read_csv(runs.audit / f"fold_{fold['fold']:02d}" / "epoch_predictions.csv")
        assert sorted(rows["epoch"].unique()) == list(range(EPOCHS))
        last = rows[rows["epoch"] == fold["honest_epoch"]].set_index("clip")["pred"]
        mine = honest[honest["fold"] == fold["fold"]].set_index("clip")["pred"]
        pd.testing.assert_series_equal(last.sort_index(), mine.sort_index())


def _by_hand(rows):
    labels, preds = rows["label"].to_numpy(), rows["pred"].to_numpy()
    return {"acc": float((labels == preds).mean()), "uf1": f1_score(labels, preds, average="macro"),
            "uar": balanced_accuracy_score(labels, preds)}


def test_oracle_is_the_pooled_best_test_epoch_of_each_fold_and_never_below_honest(runs):
    report = runs.report
    chosen = []
    for fold in report["per_fold"]:
        rows = pd.read_csv(runs.audit / f"fold_{fold['fold']:02d}" / "epoch_predictions.csv")
        accs = [float((g["label"] == g["pred"]).mean()) for _, g in rows.groupby("epoch", sort=True)]
        assert fold["oracle_epoch"] == int(np.argmax(accs))  # the first of the best
        assert [e["acc"] for e in fold["epochs"]] == pytest.approx(accs)
        chosen.append(rows[rows["epoch"] == fold["oracle_epoch"]])
    oracle = pd.concat(chosen)
    assert report["oracle"]["pooled"] == pytest.approx(_by_hand(oracle))
    honest = report["honest"]["pooled"]
    assert report["oracle"]["pooled"]["acc"] >= honest["acc"]
    assert report["gap"] == pytest.approx({k: report["oracle"]["pooled"][k] - honest[k] for k in honest})
    # this run is one where they differ: some fold's best test epoch is not its last
    assert report["gap"]["acc"] > 0 and any(f["oracle_epoch"] != f["honest_epoch"] for f in report["per_fold"])
    saved = pd.read_csv(runs.audit / "oracle_predictions.csv")
    assert sorted(saved["clip"]) == sorted(oracle["clip"])


def test_per_dataset_figures_are_the_pooled_predictions_of_each_dataset(runs):
    datasets = pd.read_csv(runs.annotations).set_index("clip")["dataset"]
    per_dataset = runs.report["per_dataset"]
    assert sorted(per_dataset) == ["casme2", "samm"]
    honest = pd.read_csv(runs.audit / "honest_predictions.csv")
    oracle = pd.read_csv(runs.audit / "oracle_predictions.csv")
    for name, values in per_dataset.items():
        assert values["num_samples"] == int((honest["clip"].map(datasets) == name).sum())
        assert values["honest"] == pytest.approx(_by_hand(honest[honest["clip"].map(datasets) == name]))
        assert values["oracle"] == pytest.approx(_by_hand(oracle[oracle["clip"].map(datasets) == name]))
    assert sum(v["num_samples"] for v in per_dataset.values()) == runs.report["num_samples"]


def test_outputs_say_the_oracle_is_not_a_valid_estimate(runs):
    markdown = (runs.audit / "audit.md").read_text()
    for text in (runs.stdout, markdown, runs.report["warning"]):
        assert "NOT a valid estimate" in text and "is the one to report" in text
    assert "oracle (NOT valid)" in runs.stdout and "honest (report this)" in runs.stdout
    assert "casme2 (" in runs.stdout and "samm (" in runs.stdout
    assert "NOT a valid estimate" in runs.report["oracle"]["description"]
    json.loads((runs.audit / "audit.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_audit_refuses_a_train_run_directory_and_writes_nothing_there(runs, capsys):
    before = {p.relative_to(runs.train): p.stat().st_mtime_ns for p in runs.train.rglob("*")}
    assert main(["audit", "--out", str(runs.train), "--no-progress", *_settings(runs.annotations)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a microexp train run" in err and str(runs.train) in err
    assert {p.relative_to(runs.train): p.stat().st_mtime_ns for p in runs.train.rglob("*")} == before


def test_a_complete_audit_reports_again_by_another_metric_without_training(runs, tmp_path, monkeypatch):
    copy = tmp_path / "audit"
    shutil.copytree(runs.audit, copy)
    monkeypatch.setattr(experiment, "run_fold", lambda *a, **k: pytest.fail("a complete fold was retrained"))
    report = audit.run_audit(_config(runs.annotations), copy, oracle_metric="uf1", progress=False)
    for fold, before in zip(report["per_fold"], runs.report["per_fold"]):
        assert fold["epochs"] == before["epochs"]
        uf1 = [e["uf1"] for e in fold["epochs"]]
        assert fold["oracle_epoch"] == int(np.argmax(uf1)) and fold["oracle"]["uf1"] == max(uf1)
    assert report["oracle_metric"] == "uf1" and report["honest"] == runs.report["honest"]


def _config(annotations, **extra):
    from microexp.config import load_config

    args = _settings(annotations, **extra)
    return load_config(None, args[1::2])


def test_resumed_audit_equals_an_uninterrupted_one(runs, tmp_path, monkeypatch):
    real = audit._EpochScorer.on_epoch
    calls = []

    def killed_before_scoring_second_epoch(self, epoch):
        calls.append(epoch)
        if len(calls) == 2:  # last.pt of epoch 2 is saved, its test pass is not
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(audit._EpochScorer, "on_epoch", killed_before_scoring_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        audit.run_audit(_config(runs.annotations), tmp_path / "audit", progress=False)
    assert pd.read_csv(tmp_path / "audit" / "fold_00" / "epoch_predictions.csv")["epoch"].unique().tolist() == [0]
    monkeypatch.setattr(audit._EpochScorer, "on_epoch", real)
    report = audit.run_audit(_config(runs.annotations), tmp_path / "audit", progress=False)
    assert report["per_fold"] == runs.report["per_fold"] and report["oracle"] == runs.report["oracle"]
    for fold in ("fold_00", "fold_01"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "audit" / fold / "epoch_predictions.csv"),
                                      pd.read_csv(runs.audit / fold / "epoch_predictions.csv"))


def test_resuming_with_another_config_is_refused(runs, tmp_path):
    shutil.copytree(runs.audit, tmp_path / "audit")
    with pytest.raises(audit.ConfigError, match="different config.yaml.*train.epochs"):
        audit.run_audit(_config(runs.annotations, **{"train.epochs": 2}), tmp_path / "audit", progress=False)


def test_summary_of_hand_made_predictions():
    # fold 0: epoch 1 is best on the test subjects (3/4), the honest last epoch 2 gets 1/4; fold 1: a tie
    # between epochs 0 and 1 goes to the earlier one
    def rows(epoch, labels, preds, clips):
        return pd.DataFrame({"epoch": epoch, "clip": clips, "label": labels, "pred": preds})

    fold0_clips, fold1_clips = ["a", "b", "c", "d"], ["e", "f"]
    per_epoch = {
        0: pd.concat([rows(0, [0, 1, 2, 0], [0, 0, 0, 0], fold0_clips),
                      rows(1, [0, 1, 2, 0], [0, 1, 2, 1], fold0_clips),
                      rows(2, [0, 1, 2, 0], [1, 1, 0, 1], fold0_clips)]),
        1: pd.concat([rows(0, [1, 2], [1, 0], fold1_clips), rows(1, [1, 2], [0, 2], fold1_clips)]),
    }
    honest = pd.concat([per_epoch[0][per_epoch[0]["epoch"] == 2].assign(fold=0),
                        per_epoch[1][per_epoch[1]["epoch"] == 1].assign(fold=1)])
    datasets = {"a": "casme2", "b": "casme2", "c": "samm", "d": "samm", "e": "samm", "f": "casme2"}
    report = audit.summarise_audit(honest, per_epoch, {0: 2, 1: 1}, class_names=["n", "p", "s"], datasets=datasets)
    assert [f["oracle_epoch"] for f in report["per_fold"]] == [1, 0]
    assert report["honest"]["pooled"]["acc"] == pytest.approx(2 / 6)   # b; f
    assert report["oracle"]["pooled"]["acc"] == pytest.approx(4 / 6)   # a, b, c; e
    assert report["gap"]["acc"] == pytest.approx(2 / 6)
    assert report["per_dataset"]["casme2"]["num_samples"] == 3
    assert report["per_dataset"]["casme2"]["honest"]["acc"] == pytest.approx(2 / 3)  # a wrong, b right, f right
    assert report["per_dataset"]["samm"]["oracle"]["acc"] == pytest.approx(2 / 3)   # c, e right; d wrong
    assert "per_dataset" not in audit.summarise_audit(honest, per_epoch, {0: 2, 1: 1}, class_names=["n", "p", "s"],
                                                      datasets=dict.fromkeys(datasets, "samm"))
    from microexp.cli.audit import ORACLE_METRICS  # spelled in the CLI so that --help needs no torch

    assert ORACLE_METRICS == audit.ORACLE_METRICS
    with pytest.raises(ValueError, match="expected one of acc, uf1, uar"):
        audit.oracle_epoch(per_epoch[0], num_classes=3, metric="f1")


def test_with_inner_validation_the_honest_epoch_is_the_validation_choice(runs, tmp_path):
    config = _config(runs.annotations, **{"train.model_selection": "val", "cv.val_fraction": 0.4})
    report = audit.run_audit(config, tmp_path / "audit", progress=False)
    honest = pd.read_csv(tmp_path / "audit" / "honest_predictions.csv")
    for fold in report["per_fold"]:
        fold_dir = tmp_path / "audit" / f"fold_{fold['fold']:02d}"
        log = pd.read_csv(fold_dir / "log.csv")
        assert fold["honest_epoch"] == int(log["val_uf1"].to_numpy().argmax())  # selection_metric uf1, first best
        rows = pd.read_csv(fold_dir / "epoch_predictions.csv")
        chosen = rows[rows["epoch"] == fold["honest_epoch"]].set_index("clip")["pred"].sort_index()
        mine = honest[honest["fold"] == fold["fold"]].set_index("clip")["pred"].sort_index()
        pd.testing.assert_series_equal(chosen, mine)
