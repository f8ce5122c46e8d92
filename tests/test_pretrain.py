"""`microexp pretrain`: masked-video pretraining runs, resume, fine-tuning, and the test-subject guard."""

import json

import pandas as pd
import pytest
import torch

import microexp.engine.pretrain as pretrain
from microexp.checkpoint import load_checkpoint
from microexp.cli import main
from microexp.config import PRETRAIN_RECORD
from microexp.engine.pretrain_record import RECORD_NAME
from microexp.models import create_model
from microexp.synth import generate_dataset

TINY = {"model.name": "timesformer_tiny", "model.kwargs": "{patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}",
        "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform", "data.num_workers": 0,
        "cv.folds": 2, "train.epochs": 1, "train.batch_size": 4, "seed": 3,
        "pretrain.epochs": 2, "pretrain.warmup_epochs": 1, "pretrain.batch_size": 4, "pretrain.decoder_dim": 16,
        "pretrain.decoder_depth": 1,
        "pretrain.decoder_heads": 2, "pretrain.mask_ratio": 0.75}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=20, subjects=4, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


@pytest.fixture(scope="module")
def pool(labelled, tmp_path_factory):
    """The same clips as other people's: new subject ids, no emotion (an unlabeled table)."""
    table = pd.read_csv(labelled)
    table["subject"] = table["subject"] + 100
    table["clip"] = "pool_" + table["clip"].astype(str)
    table["emotion"] = ""
    table["path"] = [str((labelled.parent / p).resolve()) for p in table["path"]]
    path = tmp_path_factory.mktemp("pool") / "annotations.csv"
    table.to_csv(path, index=False)
    return path


def _args(command, out, annotations, **extra):
    values = {**TINY, "data.annotations": str(annotations), **extra}
    args = [command, "--out", str(out), "--no-progress"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_the_record_name_is_the_one_config_accepts():
    assert PRETRAIN_RECORD == RECORD_NAME


def test_pretraining_writes_an_encoder_that_train_fine_tunes(labelled, pool, tmp_path):
    out = tmp_path / "pre"
    assert main(_args("pretrain", out, labelled, **{"pretrain.annotations": str(pool)})) == 0
    payload = load_checkpoint(out / "encoder.pt")
    record = payload["extra"]["pretrain"]
    assert record["mask_ratio"] == 0.75 and record["clips"] == len(pd.read_csv(pool))
    assert sorted(s for _, s in record["subjects"]) == sorted(pd.read_csv(pool)["subject"].unique())
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [0, 1] and log["loss"].notna().all()
    assert json.loads((out / RECORD_NAME).read_text())["units"]["pool"]["clips"] == len(pd.read_csv(pool))

    # model.pretrained=FOLDER: every fold starts from these weights (the classifier stays fresh)
    model = create_model("timesformer_tiny", num_classes=7, num_frames=4, input_size=32, patch_size=8, depth=1,
                         embed_dim=32, num_heads=2, pretrained=str(out / "encoder.pt"))
    for key in ("blocks.0.attn.in_proj_weight", "patch_embed.proj.weight", "pos_embed"):
        assert torch.equal(model.state_dict()[key], payload["state_dict"][key])
    run = tmp_path / "run"
    assert main(_args("train", run, labelled, **{"model.pretrained": str(out)})) == 0
    fold = load_checkpoint(run / "fold_00" / "model.pt")
    assert fold["extra"]["pretrained"] == str(out / "encoder.pt")
    assert not (run / "pretrain_overlap.json").exists()  # new subjects: nothing to record


def test_foreign_weights_carry_no_record_and_train_as_before(labelled, tmp_path):
    """A torchvision/timm-style state dict (no microexp format, no pretraining record) passes the check."""
    foreign = tmp_path / "vit_like.pth"
    model = create_model("timesformer_tiny", num_classes=7, num_frames=4, input_size=32, patch_size=8, depth=1,
                         embed_dim=32, num_heads=2)
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, foreign)
    run = tmp_path / "run"
    assert main(_args("train", run, labelled, **{"model.pretrained": str(foreign)})) == 0
    assert load_checkpoint(run / "fold_00" / "model.pt")["extra"]["pretrained"] == str(foreign)


def test_killed_pretraining_resumes_to_the_same_encoder(labelled, tmp_path, monkeypatch):
    extra = {"pretrain.epochs": 3}
    assert main(_args("pretrain", tmp_path / "straight", labelled, **extra)) == 0
    real, calls = pretrain.pretrain_one_epoch, []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(kwargs["description"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain_one_epoch", killed_in_second_epoch)
    assert main(_args("pretrain", tmp_path / "resumed", labelled, **extra)) == 130
    assert not (tmp_path / "resumed" / "encoder.pt").exists()
    assert pd.read_csv(tmp_path / "resumed" / "log.csv")["epoch"].tolist() == [0]
    monkeypatch.setattr(pretrain, "pretrain_one_epoch", real)
    assert main(_args("pretrain", tmp_path / "resumed", labelled, **extra)) == 0
    straight = load_checkpoint(tmp_path / "straight" / "encoder.pt")["state_dict"]
    resumed = load_checkpoint(tmp_path / "resumed" / "encoder.pt")["state_dict"]
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # masks, batches and dropout replayed
    assert pd.read_csv(tmp_path / "resumed" / "log.csv")["epoch"].tolist() == [0, 1, 2]


def test_an_encoder_pretrained_on_a_folds_test_subjects_is_refused_by_default(labelled, tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(_args("pretrain", out, labelled)) == 0  # on the labelled table itself, every subject
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(_args("train", run, labelled, **{"model.pretrained": str(out)})) == 2
    error = capsys.readouterr().err.strip()
    assert "was pretrained on clips of" in error and "pretrain.allow_test_subjects" in error
    assert len(error.splitlines()) == 1 and not run.exists()  # refused before the run directory is touched

    assert main(_args("train", run, labelled, **{"model.pretrained": str(out),
                                                 "pretrain.allow_test_subjects": "true"})) == 0
    overlap = json.loads((run / "pretrain_overlap.json").read_text())
    folds = json.loads((run / "folds.json").read_text())
    assert overlap["test_subjects_seen_in_pretraining"] == {str(f["fold"]): sorted(f["test_subjects"]) for f in folds}
    assert "allow_test_subjects: true" in (run / "config.yaml").read_text()


def test_per_fold_pretraining_keeps_each_folds_test_subjects_out(labelled, tmp_path, monkeypatch):
    seen = []
    real_dataset = pretrain.build_dataset

    def spy(config, table, spec, *, train):
        seen.append(set(table["subject"]))
        return real_dataset(config, table, spec, train=train)

    monkeypatch.setattr(pretrain, "build_dataset", spy)
    out = tmp_path / "pre"
    assert main(_args("pretrain", out, labelled) + ["--per-fold"]) == 0
    monkeypatch.setattr(pretrain, "build_dataset", real_dataset)
    run = tmp_path / "run"
    assert main(_args("train", run, labelled, **{"model.pretrained": str(out)})) == 0  # no overlap: accepted
    folds = json.loads((run / "folds.json").read_text())
    assert len(seen) == len(folds) == 2
    everyone = set(pd.read_csv(labelled)["subject"])
    for fold, subjects in zip(folds, seen):
        assert subjects == everyone - set(fold["test_subjects"])  # the same folds as train's, test subjects out
        fold_model = load_checkpoint(run / f"fold_{fold['fold']:02d}" / "model.pt")
        assert fold_model["extra"]["pretrained"] == str(out / f"fold_{fold['fold']:02d}" / "encoder.pt")
        encoder = load_checkpoint(out / f"fold_{fold['fold']:02d}" / "encoder.pt")["extra"]["pretrain"]
        assert not {s for _, s in encoder["subjects"]} & set(fold["test_subjects"])
    assert not (run / "pretrain_overlap.json").exists()


def test_a_model_without_masked_pretraining_is_a_one_line_error(labelled, tmp_path, capsys):
    assert main(_args("pretrain", tmp_path / "pre", labelled, **{"model.name": "tsm_tiny", "model.kwargs": "{}"})) == 2
    error = capsys.readouterr().err.strip()
    assert "tsm_tiny" in error and "timesformer_" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "pre").exists()
    assert main(_args("pretrain", tmp_path / "pre", labelled, **{"pretrain.mask_ratio": 1.0})) == 2
    assert "pretrain.mask_ratio=1.0" in capsys.readouterr().err
    assert main(_args("pretrain", tmp_path / "pre", labelled, **{"pretrain.target_pool": 3})) == 2
    error = capsys.readouterr().err.strip()
    assert "pretrain.target_pool: expected a divisor of the patch side 8, got 3" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "pre").exists()
