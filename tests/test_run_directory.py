"""The run directory of ``microexp train``: nothing touched before the checks pass, one lock per run, resume
refusals that name the keys, atomic outputs, one log row per epoch, evaluate checked against folds.json,
file-system errors in one line, lodo folds, loader workers and progress lines. Tiny synthetic data, CPU."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import microexp.engine.experiment as experiment
import microexp.engine.results as results
from microexp.cli import main
from microexp.config import ExperimentConfig, load_config
from microexp.synth import generate_dataset

BASE = {"cv.folds": 2, "train.epochs": 1, "data.size": 32, "data.num_frames": 4, "data.sampling": "uniform",
        "model.name": "tsm_tiny", "data.num_workers": 0, "train.batch_size": 4, "seed": 5}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=16, subjects=4, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _args(annotations, out, *flags, **extra):
    values = {"data.annotations": str(annotations), **BASE, **extra}
    args = ["train", "--out", str(out), "--no-progress", *flags]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def _train(annotations, out, *flags, quiet=False, **extra):
    return main((["-q"] if quiet else []) + _args(annotations, out, *flags, **extra))


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert _train(tiny_data, run, quiet=True) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy




def _one_line(err):
    """The one error line of a failed command (log lines and warnings aside)."""
    lines = [line for line in err.strip().splitlines() if line.startswith("microexp ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------ item 1


def test_a_failed_start_leaves_the_run_directory_untouched(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    spans = pd.read_csv(tiny_data).eval("offset - onset + 1")
    assert _train(tiny_data, run, **{"data.num_frames": int(spans.max()) + 1}) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"data.num_frames <= {int(spans.max())}" in line and "longest clip" in line
    assert not run.exists()  # not even an empty folder
    assert _train(tmp_path / "missing.csv", run) == 2
    assert not run.exists()


def test_a_run_directory_from_a_start_that_never_trained_is_reused(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  lr: 0.5\n")  # what an earlier failed start left behind
    assert _train(tiny_data, run, quiet=True, **{"cv.protocol": "split", "cv.test_subjects": "[1]"}) == 0
    assert load_config(run / "config.yaml").train.lr == ExperimentConfig().train.lr


# ------------------------------------------------------------------------------------------------ item 2


def test_a_refused_resume_names_the_keys_that_differ(tiny_data, run_copy, capsys):
    assert _train(tiny_data, run_copy, **{"train.lr": 0.5, "data.size": 48}) == 2
    line = _one_line(capsys.readouterr().err)
    assert "train.lr: 0.001 -> 0.5" in line and "data.size: 32 -> 48" in line and "different config.yaml" in line


def test_result_neutral_keys_may_change_on_resume(tiny_data, run_copy, capsys):
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert _train(tiny_data, run_copy, **{"data.num_workers": 1, "device": "cpu"}) == 0
    err = capsys.readouterr().err
    assert "data.num_workers: 0 -> 1" in err and "device: 'auto' -> 'cpu'" in err
    assert load_config(run_copy / "config.yaml").data.num_workers == 0  # the record of how the run started
    assert json.loads((run_copy / "metrics.json").read_text()) == metrics


# ------------------------------------------------------------------------------------------------ item 3


def test_a_kill_between_log_row_and_checkpoint_leaves_one_row_per_epoch(tiny_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_save = experiment.save_checkpoint
    saves = []

    def killed_before_second_last_pt(path, **kwargs):
        if path.name == "last.pt":
            saves.append(path)
            if len(saves) == 2:  # fold 0, epoch 2: its log.csv row is already written
                raise KeyboardInterrupt
        return real_save(path, **kwargs)

    monkeypatch.setattr(experiment, "save_checkpoint", killed_before_second_last_pt)
    assert _train(tiny_data, run, **{"train.epochs": 2}) == 130
    assert pd.read_csv(run / "fold_00" / "log.csv")["epoch"].tolist() == [0, 1]
    monkeypatch.setattr(experiment, "save_checkpoint", real_save)
    assert _train(tiny_data, run, **{"train.epochs": 2}) == 0
    for fold in ("fold_00", "fold_01"):
        assert pd.read_csv(run / fold / "log.csv")["epoch"].tolist() == [0, 1]
    # progress lines (item 10): fold k/K, each epoch's time and the run's ETA, on stderr by default
    err = capsys.readouterr().err
    assert "fold 1/2 (fold_00)" in err and "fold 2/2 (fold_01)" in err
    assert "fold 2/2 epoch 2/2:" in err and "ETA of the run" in err and " s; ETA" in err


def test_progress_lines_are_hidden_by_quiet(tiny_data, run_copy, capsys):
    (run_copy / "fold_01" / "predictions.csv").unlink()
    assert _train(tiny_data, run_copy, quiet=True) == 0
    assert "ETA" not in capsys.readouterr().err


def test_outputs_are_replaced_atomically(tmp_path, monkeypatch):
    target = tmp_path / "predictions.csv"
    target.write_text("clip,pred\nold,1\n")
    real_to_csv = pd.DataFrame.to_csv

    def killed_mid_write(self, path, **kwargs):
        with open(path, "w") as handle:
            handle.write("clip,pr")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        experiment.write_csv(pd.DataFrame({"clip": ["new"], "pred": [2]}), target)
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    assert target.read_text() == "clip,pred\nold,1\n" and sorted(os.listdir(tmp_path)) == ["predictions.csv"]


def test_metrics_json_is_strict_json(tmp_path, monkeypatch):
    monkeypatch.setattr("microexp.engine.plots.plot_run", lambda out, metrics: None)
    frame = pd.DataFrame({"label": [0, 1], "pred": [0, 1], "fold": [0, 1]})
    monkeypatch.setattr(results, "cross_validation_summary",
                        lambda *a, **k: {"num_folds": 2, "fold_std": {"uf1": float("nan")}})
    results.write_metrics(tmp_path, frame, ["a", "b"], protocol="kfold")
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["fold_std"]["uf1"] is None


# ------------------------------------------------------------------------------------------------ item 4


def test_evaluate_refuses_an_empty_predictions_file(run_copy, capsys):
    metrics = (run_copy / "metrics.json").read_bytes()
    (run_copy / "predictions.csv").write_text("")
    assert main(["evaluate", str(run_copy)]) == 2
    assert "empty file" in _one_line(capsys.readouterr().err)
    assert (run_copy / "metrics.json").read_bytes() == metrics


def test_evaluate_refuses_a_truncated_predictions_file(run_copy, capsys):
    metrics = (run_copy / "metrics.json").read_bytes()
    lines = (run_copy / "predictions.csv").read_text().splitlines()
    (run_copy / "predictions.csv").write_text("\n".join(lines[:4]) + "\n")  # header + 3 of 16 clips, fold 0 only
    assert main(["evaluate", str(run_copy)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "fold 1 has no predictions" in line and "nothing was written" in line
    assert (run_copy / "metrics.json").read_bytes() == metrics
    # cut mid-line: the last row has empty values
    (run_copy / "predictions.csv").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:12] + "\n")
    assert main(["evaluate", str(run_copy)]) == 2
    assert f"line(s) {len(lines)}" in _one_line(capsys.readouterr().err)
    assert (run_copy / "metrics.json").read_bytes() == metrics


def test_evaluate_names_missing_and_duplicated_clips(run_copy, capsys):
    frame = pd.read_csv(run_copy / "predictions.csv")
    fold0 = frame[frame["fold"] == 0]
    dropped = fold0.iloc[0]["clip"]
    broken = pd.concat([frame[frame["clip"] != dropped], frame.iloc[[-1]]], ignore_index=True)
    broken.to_csv(run_copy / "predictions.csv", index=False)
    assert main(["evaluate", str(run_copy)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert dropped in line and frame.iloc[-1]["clip"] in line and "more than once" in line
    # the intact file still evaluates, to the metrics train wrote
    frame.to_csv(run_copy / "predictions.csv", index=False)
    assert main(["evaluate", str(run_copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((run_copy / "metrics.json").read_text())


# ------------------------------------------------------------------------------------------------ item 5


def test_out_pointing_at_a_file_is_one_line(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert _train(tiny_data, blocker) == 2
    assert "not a directory" in _one_line(capsys.readouterr().err)
    assert _train(tiny_data, blocker / "run") == 2
    assert f"({blocker} is a file)" in _one_line(capsys.readouterr().err)
    assert blocker.read_text() == "mine"


def test_read_only_out_and_cache_dir_are_one_line_before_training(tiny_data, tmp_path, tmpfs, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(experiment, "run_fold", lambda *a, **k: pytest.fail("training started"))
    read_only = tmpfs("ro", size="4m", read_only=True)
    assert _train(tiny_data, read_only) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(read_only) in line and "read-only file system" in line
    assert _train(tiny_data, read_only / "run") == 2
    assert "read-only file system" in _one_line(capsys.readouterr().err)
    assert _train(tiny_data, tmp_path / "run", **{"data.cache_dir": str(read_only / "cache")}) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"data.cache_dir {read_only / 'cache'}" in line and "read-only file system" in line
    assert not (tmp_path / "run").exists()


def test_a_full_disk_is_one_line_saying_what_was_kept(tiny_data, tmp_path, tmpfs, capsys):
    # a fold's checkpoints take 5.1 MB (last.pt 3.8, model.pt 1.3): 7 MB hold fold 0 but not fold 1's last.pt
    small = tmpfs("small", size="7m")
    run = small / "run"
    assert _train(tiny_data, run) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {run / 'fold_01' / 'last.pt'}: disk full" in line, line
    assert "run state kept: 1/2 folds complete (0)" in line and "rerun the same command" in line, line
    # nothing half-written is left behind: every file present loads
    for path in run.rglob("*.csv"):
        pd.read_csv(path)
    json.loads((run / "folds.json").read_text())
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    # with space freed, the same command resumes and keeps fold 0
    tmpfs.remount(small, "32m")
    before = (run / "fold_00" / "predictions.csv").stat().st_mtime_ns
    assert _train(tiny_data, run) == 0
    assert (run / "fold_00" / "predictions.csv").stat().st_mtime_ns == before
    assert len(pd.read_csv(run / "predictions.csv")) == len(pd.read_csv(tiny_data))


# ------------------------------------------------------------------------------------------------ item 6


def test_a_second_train_on_a_locked_run_is_refused_naming_the_holder(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from microexp.engine.experiment import LOCK_NAME, hold_lock
            with hold_lock(Path({str(run)!r}) / LOCK_NAME, what="run"):
                print("held", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert _train(tiny_data, run) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"pid {holder.pid}" in line and "in use" in line and time.monotonic() - started < 30
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's lock died with it: a stale lock file and holder note block nothing
    assert (run / experiment.LOCK_NAME).exists()
    with experiment.hold_lock(run / experiment.LOCK_NAME, what="run"):
        info = json.loads((run / (experiment.LOCK_NAME + ".json")).read_text())
        assert info["pid"] == os.getpid() and {"host", "started"} <= set(info)


# ------------------------------------------------------------------------------------------------ item 7


def test_only_the_train_loader_keeps_persistent_workers(tiny_data, tmp_path, monkeypatch):
    seen = []
    real_train, real_evaluate = experiment.train_one_epoch, experiment.evaluate

    def train_spy(model, loader, **kwargs):
        seen.append(("train", loader.persistent_workers))
        return real_train(model, loader, **kwargs)

    def evaluate_spy(model, loader, **kwargs):
        seen.append((kwargs["description"].split()[-1], loader.persistent_workers))
        return real_evaluate(model, loader, **kwargs)

    monkeypatch.setattr(experiment, "train_one_epoch", train_spy)
    monkeypatch.setattr(experiment, "evaluate", evaluate_spy)
    assert _train(tiny_data, tmp_path / "run", quiet=True, **{
        "data.num_workers": 1, "cv.protocol": "split", "cv.test_subjects": "[1]", "cv.val_fraction": 0.34,
        "data.in_memory": "off"}) == 0  # the per-item DataLoaders (the in-memory loader has no workers)
    assert sorted(set(seen)) == [("test", False), ("train", True), ("val", False)]


# ------------------------------------------------------------------------------------------------ item 8


def test_lodo_protocol_leaves_one_dataset_out():
    table = pd.DataFrame({"subject": [1, 1, 2, 3, 3, 4, 5, 6], "label": [0, 1, 0, 1, 0, 1, 0, 1],
                          "dataset": ["casme2"] * 3 + ["samm"] * 5, "clip": [f"c{i}" for i in range(8)]})
    config = ExperimentConfig()
    config.cv.protocol = "lodo"
    folds = experiment.build_folds(config, table)
    assert [f.test_subjects for f in folds] == [(1, 2), (3, 4, 5, 6)]
    assert [f.train_subjects for f in folds] == [(3, 4, 5, 6), (1, 2)]
    table.loc[0, "dataset"] = np.nan
    with pytest.raises(experiment.ConfigError, match="dataset"):
        experiment.build_folds(config, table)


def test_lodo_is_a_recipe_protocol():
    from microexp.config import build_config

    config = build_config({"cv": {"protocol": "lodo"}})
    assert experiment.SPLITS_PROTOCOL[config.cv.protocol] == "lodo"
