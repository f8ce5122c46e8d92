"""Fold shards and launchers: ``train --folds`` shards merge to the metrics of one process, two shard
processes writing one run directory at once leave it valid, overlapping shards are refused naming the
holder, ``evaluate`` merges what is complete, the local launcher's CPU workers and submitit's local
executor (no Slurm needed) run every fold, and a 2-fold study runs through submitit. Tiny data, CPU."""

import contextlib
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from microexp.cli import main
from microexp.errors import ConfigError
from microexp.splits import format_fold_selection, parse_fold_selection
from microexp.synth import generate_dataset

BASE = {"cv.folds": 3, "train.epochs": 1, "data.size": 32, "data.num_frames": 4, "data.sampling": "apex_centered",
        "model.name": "frame_tiny", "data.num_workers": 0, "train.batch_size": 4, "seed": 3, "deterministic": True,
        "model.kwargs.apex_index": None}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=18, subjects=6, size=32, fmt="frames", seed=4, workers=1, progress=False)
    return out / "annotations.csv"


def _args(annotations, out, *flags):
    args = ["train", "--out", str(out), "--no-progress", *flags, "--set", f"data.annotations={annotations}"]
    for key, value in BASE.items():
        args += ["--set", f"{key}={'null' if value is None else value}"]
    return args


def _train(annotations, out, *flags):
    return main(["-q", *_args(annotations, out, *flags)])


@contextlib.contextmanager
def _unit_held_elsewhere(run, unit):
    """Another process holding the lock of ``unit`` (``fold_XX`` or ``final``) of ``run``; yields it."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from microexp.engine.experiment import hold_unit
        with hold_unit(Path({str(run)!r}), {unit!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _pooled(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["pooled"], metrics["fold_mean"], metrics["num_samples"]


@pytest.fixture(scope="module")
def one_process(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    assert _train(tiny_data, run) == 0
    return run


def test_fold_selection_parses_ranges_and_refuses_nonsense():
    assert parse_fold_selection("0,3-5") == [0, 3, 4, 5]
    assert parse_fold_selection(" 2 , 1,1") == [1, 2]
    assert format_fold_selection([5, 0, 3, 4]) == "0,3-5"
    for bad in ("a", "3-1", "-2", "", "1,,2"):
        with pytest.raises(ConfigError, match="not a fold number or a range"):
            parse_fold_selection(bad)


def test_shards_run_one_after_another_merge_to_the_metrics_of_one_process(tiny_data, one_process, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_data, run, "--folds", "0,2") == 0
    assert not (run / "metrics.json").exists() and not (run / "predictions.csv").exists()
    assert "waiting for fold(s) 1" in capsys.readouterr().out
    # evaluate merges what is complete, labelled partial, and never as metrics.json
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "PARTIAL: folds 0,2 of 3" in out and "pooled (complete folds)" in out
    partial = json.loads((run / "metrics_partial.json").read_text())
    assert partial["complete"] is False and partial["folds_missing"] == [1] and partial["folds_complete"] == [0, 2]
    assert not (run / "metrics.json").exists()
    assert _train(tiny_data, run, "--folds", "1") == 0
    assert _pooled(run) == _pooled(one_process)
    assert not (run / "metrics_partial.json").exists()  # outdated once every fold is merged
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions.csv"), pd.read_csv(one_process / "predictions.csv"))


def test_an_unknown_fold_is_one_line_naming_the_folds_the_protocol_has(tiny_data, tmp_path, capsys):
    assert _train(tiny_data, tmp_path / "run", "--folds", "1,7") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold(s) 7 do not exist" in err and "folds 0-2" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.slow
def test_two_shard_processes_at_once_leave_one_valid_run(tiny_data, one_process, tmp_path):
    run = tmp_path / "run"
    shards = [subprocess.Popen([sys.executable, "-m", "microexp", "-q", *_args(tiny_data, run, "--folds", folds)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folds in ("0,1", "2")]
    outputs = [shard.communicate(timeout=300) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], outputs
    assert _pooled(run) == _pooled(one_process)
    # every file is whole: folds.json, config.yaml and the pooled predictions read back and agree
    assert main(["evaluate", str(run)]) == 0
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    assert sorted(p.name for p in (run / "locks").iterdir()) == ["fold_00.lock", "fold_01.lock", "fold_02.lock"]


def test_a_shard_whose_fold_another_process_trains_is_refused_naming_it(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with _unit_held_elsewhere(run, "fold_01") as holder:
        assert _train(tiny_data, run, "--folds", "1-2") == 2
        err = capsys.readouterr().err
        assert "fold_01 of run directory" in err and f"pid {holder.pid}" in err
        assert not (run / "fold_02" / "predictions.csv").exists()  # refused before training anything
        assert _train(tiny_data, run, "--folds", "2") == 0  # another fold of the same run is free


@pytest.mark.slow
def test_the_local_launcher_runs_every_fold_and_the_final_model_in_cpu_workers(tiny_data, one_process, tmp_path,
                                                                               capsys):
    run = tmp_path / "run"
    assert _train(tiny_data, run, "--launcher", "local", "--workers", "2", "--final") == 0
    assert _pooled(run) == _pooled(one_process)
    assert (run / "final" / "model.pt").exists()
    logs = sorted(p.name for p in (run / "logs").iterdir())
    assert logs == ["final.log", "fold_00.log", "fold_01.log", "fold_02.log"]
    # a rerun has nothing pending and only merges
    assert _train(tiny_data, run, "--launcher", "local", "--workers", "2") == 0
    assert "pooled (all folds)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_unit_is_named_with_its_log_and_the_others_finish(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "fold_01").mkdir(parents=True)
    (run / "fold_01" / "last.pt").write_bytes(b"not a checkpoint")  # fold 1's resume point is broken
    assert _train(tiny_data, run, "--launcher", "local", "--workers", "2") == 2
    err = capsys.readouterr().err
    assert "1 of 3 unit(s) failed: fold_01 (exit 2;" in err and str(run / "logs" / "fold_01.log") in err
    assert (run / "fold_00" / "predictions.csv").exists() and (run / "fold_02" / "predictions.csv").exists()


def test_launcher_options_without_their_launcher_are_refused(tiny_data, tmp_path, capsys):
    assert _train(tiny_data, tmp_path / "a", "--gpus", "0") == 2
    assert "--gpus: only with --launcher local" in capsys.readouterr().err
    assert _train(tiny_data, tmp_path / "b", "--launcher", "local", "--slurm-partition", "gpu") == 2
    assert "--slurm-partition: only with --launcher submitit" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_executor_runs_the_folds_as_a_job_array(tiny_data, one_process, tmp_path):
    pytest.importorskip("submitit")
    run = tmp_path / "run"
    assert _train(tiny_data, run, "--launcher", "submitit", "--slurm-cluster", "local", "--slurm-time", "5") == 0
    assert _pooled(run) == _pooled(one_process)
    assert list((run / "submitit").glob("*_result.pkl"))
    assert yaml.safe_load((run / "config.yaml").read_text())["slurm"]["time_min"] == 5


def test_a_requeued_task_resumes_its_fold(tiny_data, tmp_path):
    """What submitit calls on preemption or timeout: the task's checkpoint() resubmits the same command."""
    pytest.importorskip("submitit")
    import submitit

    from microexp.launch import fold_units
    from microexp.launch.slurm import UnitTask

    task = UnitTask(fold_units(tmp_path, [1])[0])
    delayed = task.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function.unit == task.unit and "--folds" in task.unit.argv


@pytest.mark.slow
def test_a_two_fold_study_runs_through_submitits_local_executor(tiny_data, tmp_path):
    pytest.importorskip("submitit")
    from microexp.config import SlurmConfig
    from microexp.launch.slurm import run_submitit
    from microexp.studies.grid import Cell, run_grid

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  name: frame_tiny\n  kwargs: {apex_index: null}\n")
    cells = [Cell(name=f"lr{lr}", recipe=recipe, overrides=(f"train.lr={lr}",), axes={"lr": lr}) for lr in (1e-3, 1e-2)]
    overrides = [f"data.annotations={tiny_data}", *(f"{k}={'null' if v is None else v}" for k, v in BASE.items()
                                                     if k != "seed"), "cv.folds=2"]
    seen = []

    def launcher(units, slurm):
        seen.extend(u.name for u in units)
        results = run_submitit(units, folder=tmp_path / "submitit", slurm=slurm or SlurmConfig(), cluster="local",
                               poll_seconds=0.5)
        assert all(r.ok for r in results), [r.last_line for r in results]

    results = run_grid(cells, tmp_path / "study", base_overrides=overrides, launcher=launcher)
    assert sorted(seen) == ["lr0.001/fold_00", "lr0.001/fold_01", "lr0.01/fold_00", "lr0.01/fold_01"]
    assert [r.cell.name for r in results] == ["lr0.001", "lr0.01"]
    assert all(r.metrics["num_folds"] == 2 and r.metrics["num_samples"] == 18 for r in results)
    assert all((r.run_dir / "cell.json").exists() and not r.resumed for r in results)


def test_a_shard_with_final_trains_its_folds_while_another_process_trains_the_final_model(tiny_data, tmp_path,
                                                                                           capsys):
    run = tmp_path / "run"
    run.mkdir()
    with _unit_held_elsewhere(run, "final") as holder:
        assert main([*_args(tiny_data, run, "--folds", "0", "--final")]) == 0
        assert (run / "fold_00" / "predictions.csv").exists() and not (run / "final" / "model.pt").exists()
        err = capsys.readouterr().err
        assert "final model not trained here" in err and f"pid {holder.pid}" in err
