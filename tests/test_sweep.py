"""microexp sweep on tiny synthetic data: objective, real studies, resume, workers, nesting integrity."""

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.trial import TrialState

from microexp.cli import main
from microexp.config import load_config
from microexp.data.dataset import MicroExpressionDataset
from microexp.synth import generate_dataset
from microexp.engine.experiment import build_folds, load_experiment_data
from microexp.errors import ConfigError
from microexp.sweep import SweepObjective, SweepSettings, open_storage, parse_space, run_worker, study_name
from microexp.sweep.finalize import finalize

pytestmark = pytest.mark.filterwarnings("ignore:classes .* have no training samples")

SPACE = {"train.sampler": ["none", "class_balanced"],
         "loss.name": ["ce", "focal"],
         "loss.gamma": {"type": "float", "low": 0.5, "high": 3.0, "when": {"loss.name": ["focal"]}},
         "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


@pytest.fixture()
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return path


def _overrides(annotations, **extra):
    values = {"data.annotations": str(annotations), "cv.folds": 2, "train.epochs": 1, "data.size": 32,
              "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny", "data.num_workers": 0,
              "train.batch_size": 4, "seed": 5, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def _base_raw(annotations, **extra):
    return load_config(None, _overrides(annotations, **extra)).to_dict()


def _sweep(annotations, space, out, *args, extra=None):
    argv = ["sweep", "--space", str(space), "--study", "tiny", "--out", str(out), "--no-progress", *map(str, args)]
    for item in _overrides(annotations, **(extra or {})):
        argv += ["--set", item]
    return main(argv)


def _trials(out):
    return pd.read_csv(Path(out) / "trials.csv")


def test_objective_with_a_fixed_trial_scores_inner_validation(tiny_data):
    base_raw = _base_raw(tiny_data)
    data = load_experiment_data(load_config(None, _overrides(tiny_data)))
    fold = build_folds(load_config(None, _overrides(tiny_data)), data.table)[0]
    objective = SweepObjective(base_raw=base_raw, space=parse_space(SPACE), data=data, fold=fold, metric="uar")
    trial = optuna.trial.FixedTrial({"train.sampler": "class_balanced", "loss.name": "focal", "loss.gamma": 1.5,
                                     "train.lr": 0.005})
    value = objective(trial)
    assert 0.0 <= value <= 1.0 and trial.user_attrs["inner_scores"] == [value]
    config = trial.user_attrs["config"]
    assert config["loss"]["gamma"] == 1.5 and config["train"]["sampler"] == "class_balanced"
    assert config["train"]["epochs"] == 1 and config["data"]["size"] == 32  # base recipe + --set kept
    # inner validation subjects come from the outer fold's training subjects only
    (inner,) = objective.inner
    assert set(inner.val_subjects) < set(fold.train_subjects) and not set(inner.val_subjects) & set(inner.train_subjects)


def test_sqlite_study_resumes_finalizes_and_best_yaml_trains(tiny_data, space_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert _sweep(tiny_data, space_file, out, "--trials", 2, "--outer-folds", 0, "--no-finalize") == 0
    printed = capsys.readouterr().out
    assert "fold 0: 2/2 finished" in printed and "final step" not in printed
    trials = _trials(out)
    assert trials["number"].tolist() == [0, 1] and set(trials["fold"]) == {0}
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"} and "loss.gamma" in trials.columns
    assert (out / "study.db").exists() and (out / "best.yaml").exists() and (out / "fold_00" / "best.yaml").exists()
    assert (out / "plots" / "history_fold00.png").stat().st_size > 0
    assert (out / "plots" / "sampling_x_imbalance.png").stat().st_size > 0
    assert not (out / "final").exists()

    # the same command with more trials resumes the same study: numbers continue, 3 in total
    assert _sweep(tiny_data, space_file, out, "--trials", 3, "--outer-folds", 0) == 0
    printed = capsys.readouterr().out
    trials = _trials(out)
    assert trials["number"].tolist() == [0, 1, 2]
    storage = open_storage(f"sqlite:///{out}/study.db", heartbeat=False)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == [study_name("tiny", 0)]

    # every fold study had its trials: the final step ran, labelled, on outer fold 0 only
    assert "nested test metrics (pooled and fold mean), outer folds 0 of 2 only (partial" in printed
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["estimate"] == "nested test metrics (pooled and fold mean)"
    assert metrics["outer_folds"] == [0] and metrics["all_outer_folds"] is False
    predictions = pd.read_csv(out / "final" / "predictions.csv")
    fold0 = json.loads((out / "final" / "folds.json").read_text())[0]
    assert set(predictions["subject"]) == set(fold0["test_subjects"])

    # nothing more to do: a rerun adds no trial
    assert _sweep(tiny_data, space_file, out, "--trials", 3, "--outer-folds", 0, "--no-finalize") == 0
    assert len(_trials(out)) == 3

    # best.yaml is a full recipe that microexp train accepts unchanged
    best = load_config(out / "best.yaml")
    assert best.loss.name in ("ce", "focal") and best.train.epochs == 1
    assert main(["train", "--config", str(out / "best.yaml"), "--out", str(tmp_path / "train"), "--no-progress"]) == 0
    assert (tmp_path / "train" / "metrics.json").exists()
    assert load_config(tmp_path / "train" / "config.yaml") == best


def test_the_search_never_reads_a_test_fold_clip(tiny_data, tmp_path, monkeypatch):
    read = []
    real_getitem = MicroExpressionDataset.__getitem__

    def spy(self, index):
        position = index[1] if isinstance(index, tuple) else index  # training loaders pass (epoch, index)
        read.append(self.table.iloc[position]["subject"])
        return real_getitem(self, index)

    monkeypatch.setattr(MicroExpressionDataset, "__getitem__", spy)
    config = load_config(None, _overrides(tiny_data))
    data = load_experiment_data(config)
    folds = build_folds(config, data.table)
    settings = SweepSettings(study="spy", storage=f"sqlite:///{tmp_path}/s.db", out_dir=tmp_path, trials=1,
                             inner_folds=2, pruner="none")
    space = parse_space(SPACE)
    for fold in folds:
        read.clear()
        run_worker(settings.__class__(**{**settings.__dict__, "outer_folds": (fold.fold,)}), config.to_dict(), space)
        assert read, "the spy saw no clip: it would prove nothing"
        assert not set(read) & set(fold.test_subjects)
        assert set(read) == set(fold.train_subjects) | set(fold.val_subjects)  # both inner folds ran
    # positive control: the final step does read the test subjects, once the search is over
    read.clear()
    finalize(settings.__class__(**{**settings.__dict__, "outer_folds": (0,)}), config.to_dict())
    assert set(read) & set(folds[0].test_subjects)


def test_pruned_and_invalid_trials_carry_their_reason(tiny_data, tmp_path):
    config = load_config(None, _overrides(tiny_data))
    data = load_experiment_data(config)
    fold = build_folds(config, data.table)[0]
    space = parse_space({"data.num_frames": [4, 0]})  # 0 frames is not a valid recipe
    objective = SweepObjective(base_raw=config.to_dict(), space=space, data=data, fold=fold)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.enqueue_trial({"data.num_frames": 4})
    study.enqueue_trial({"data.num_frames": 0})
    study.optimize(objective, n_trials=2)
    valid, invalid = study.trials
    assert valid.state == invalid.state == TrialState.PRUNED
    assert valid.user_attrs["prune_reason"].startswith("pruned at step 0 (inner fold 0, epoch 1/1): val_uf1=")
    assert valid.intermediate_values.keys() == {0}
    assert invalid.user_attrs["prune_reason"].startswith("invalid config:")
    assert "data.num_frames=0" in invalid.user_attrs["prune_reason"]


def test_two_workers_share_a_journal_storage_without_duplicates(tiny_data, space_file, tmp_path):
    out = tmp_path / "sweep"
    journal = f"journal://{tmp_path}/journal.log"
    assert _sweep(tiny_data, space_file, out, "--trials", 3, "--workers", 2, "--outer-folds", 1,
                  "--storage", journal, "--no-finalize", "--sampler", "random") == 0
    storage = open_storage(journal)
    study = optuna.load_study(study_name=study_name("tiny", 1), storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    numbers = [t.number for t in study.trials]
    assert len(finished) == 3 and len(numbers) == len(set(numbers))
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert sorted(t.number for t in finished) + sorted(t.number for t in surplus) == sorted(numbers)
    assert len(_trials(out)) == 3


def _add(study, params, state, value=None, base_raw=None):
    """A finished trial as a worker would have stored it (its full recipe in user_attrs when COMPLETE)."""
    from microexp.sweep import trial_config

    attrs = {} if value is None else {"config": trial_config(base_raw or {}, params).to_dict()}
    distributions = {"train.sampler": optuna.distributions.CategoricalDistribution(["none", "class_balanced"]),
                     "loss.name": optuna.distributions.CategoricalDistribution(["ce", "focal"]),
                     "train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, state=state, value=value,
                                              user_attrs=attrs))


def test_retry_failed_runs_the_retried_trials_up_to_exactly_n(tiny_data, space_file, tmp_path):
    out = tmp_path / "sweep"
    assert _sweep(tiny_data, space_file, out, "--trials", 0, "--outer-folds", 0, "--no-finalize") == 0  # the study
    study = optuna.load_study(study_name=study_name("tiny", 0), storage=open_storage(f"sqlite:///{out}/study.db"))
    _add(study, {"train.sampler": "none", "loss.name": "ce", "train.lr": 0.005}, TrialState.COMPLETE, 0.5,
         base_raw=_base_raw(tiny_data))
    _add(study, {"train.sampler": "class_balanced", "loss.name": "ce", "train.lr": 0.002}, TrialState.FAIL)
    _add(study, {"train.sampler": "none", "loss.name": "ce", "train.lr": 0.008}, TrialState.FAIL)
    # 1 COMPLETE + 2 re-enqueued (WAITING) fill the 3 slots, but the 2 must still run
    assert _sweep(tiny_data, space_file, out, "--trials", 3, "--outer-folds", 0, "--retry-failed", "--no-finalize") == 0
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    retried = {t.user_attrs.get("retry_of"): t for t in finished if t.user_attrs.get("retry_of") is not None}
    assert set(retried) == {1, 2}
    assert retried[1].params["train.lr"] == 0.002 and retried[2].params["train.lr"] == 0.008
    assert not [t for t in trials if t.user_attrs.get("surplus")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="device=cuda must fail every trial")
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: spawns (~12 s)
def test_failing_workers_exit_2_after_writing_the_report(tiny_data, space_file, tmp_path, capsys, workers):
    out = tmp_path / "sweep"
    code = _sweep(tiny_data, space_file, out, "--trials", 2, "--outer-folds", 0, "--max-failures", 1,
                  "--workers", workers, extra={"device": "cuda"})  # every trial fails: no CUDA here
    assert code == 2
    err = capsys.readouterr().err
    assert ("sweep-worker-0" in err) if workers == 2 else ("1 trials failed in a row" in err)
    trials = _trials(out)  # the report was still written
    assert len(trials) >= 1 and set(trials["state"]) == {"FAIL"} and "no CUDA" in trials["fail_reason"].iloc[0]
    assert not (out / "final").exists()


def test_finalize_checks_that_the_studies_were_made_for_this_recipe(tiny_data, tmp_path):
    from microexp.config import build_config
    from microexp.sweep import open_fold_study

    base_raw = _base_raw(tiny_data)
    config = load_config(None, _overrides(tiny_data))
    folds = build_folds(config, load_experiment_data(config).table)
    storage_url = f"sqlite:///{tmp_path}/s.db"
    settings = SweepSettings(study="other", storage=storage_url, out_dir=tmp_path, trials=1, outer_folds=(0,))
    other = build_config({**base_raw, "train": {**base_raw["train"], "lr": 0.02}})
    study = open_fold_study(open_storage(storage_url), settings, folds[0], base=other, space=parse_space(SPACE))
    _add(study, {"train.sampler": "none", "loss.name": "ce", "train.lr": 0.005}, TrialState.COMPLETE, 0.5)
    with pytest.raises(ConfigError, match=r"another base recipe .*train.lr: study has 0.02, now"):
        finalize(settings, base_raw)
    assert not (tmp_path / "final").exists()
    optuna.create_study(storage=storage_url, study_name=study_name("bare", 0))  # not made by microexp sweep
    with pytest.raises(ConfigError, match="not made by microexp sweep"):
        finalize(SweepSettings(**{**settings.__dict__, "study": "bare"}), base_raw)


@pytest.mark.slow
def test_the_final_step_in_shards_and_through_the_local_launcher_gives_the_same_nested_metrics(
        tiny_data, space_file, tmp_path, capsys):
    import shutil

    searched = tmp_path / "searched"
    assert _sweep(tiny_data, space_file, searched, "--trials", 1, "--no-finalize") == 0
    sharded, launched = tmp_path / "sharded", tmp_path / "launched"
    shutil.copytree(searched, sharded)
    shutil.copytree(searched, launched)
    capsys.readouterr()
    # one shard: no nested metrics yet, and it says which outer fold is missing
    assert _sweep(tiny_data, space_file, sharded, "--finalize", "--folds", 1) == 0
    assert "outer fold(s) 0 are not finalized yet" in capsys.readouterr().out
    assert not (sharded / "final" / "metrics.json").exists()
    assert (sharded / "final" / "fold_01" / "predictions.csv").exists()
    # the other shard finishes last and writes the nested test metrics over both outer folds
    assert _sweep(tiny_data, space_file, sharded, "--finalize", "--folds", 0) == 0
    metrics = json.loads((sharded / "final" / "metrics.json").read_text())
    assert metrics["outer_folds"] == [0, 1] and metrics["all_outer_folds"] is True
    # each outer fold finalized in its own process gives the same numbers
    assert _sweep(tiny_data, space_file, launched, "--finalize", "--launcher", "local", "--workers", 2) == 0
    assert sorted(p.name for p in (launched / "final" / "logs").iterdir()) == ["fold_00.log", "fold_01.log"]
    again = json.loads((launched / "final" / "metrics.json").read_text())
    assert again["pooled"] == metrics["pooled"] and again["selected_trials"] == metrics["selected_trials"]
