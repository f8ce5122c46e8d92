"""Search-space files, storage URLs and study bookkeeping of microexp sweep (no training here)."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from microexp.cli import main
from microexp.config import build_config, save_config
from microexp.errors import ConfigError
from microexp.splits import Fold
from microexp.sweep.finalize import _same_run
from microexp.sweep.objective import trial_config
from microexp.sweep.report import trials_frame
from microexp.sweep.space import apply_params, load_space, parse_space
from microexp.sweep.storage import open_storage
from microexp.sweep.studies import (
    SweepSettings,
    counted,
    fail_running,
    has_work,
    open_fold_study,
    retry_failed,
    trial_target,
)
from microexp.sweep.worker import _run_one

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "sweeps"


@pytest.mark.parametrize("name", ["sampling.yaml", "imbalance.yaml", "model.yaml"])
def test_shipped_spaces_load_and_every_choice_builds_a_valid_config(name):
    space = load_space(RECIPES / name)
    base = build_config({}).to_dict()
    for param in space.params:
        values = list(param.choices) if param.kind == "categorical" else [param.low, param.high]
        for value in values:
            conditions = {k: v[0] for k, v in param.when.items()}
            trial_config(base, {**conditions, param.key: value})  # raises ConfigError when invalid


def test_conditional_keys_follow_their_condition():
    space = load_space(RECIPES / "imbalance.yaml")
    base = {"loss.name": "ce"}
    focal = space.suggest(optuna.trial.FixedTrial({"train.sampler": "none", "loss.name": "focal", "loss.gamma": 1.0}), base)
    assert focal == {"train.sampler": "none", "loss.name": "focal", "loss.gamma": 1.0}
    ce = space.suggest(optuna.trial.FixedTrial({"train.sampler": "sqrt", "loss.name": "ce", "loss.label_smoothing": 0.1}),
                       base)
    assert "loss.gamma" not in ce and ce["loss.label_smoothing"] == 0.1


def test_apply_params_sets_nested_and_model_kwargs():
    raw = {"model": {"name": "tsm_tiny", "kwargs": {}}, "train": {"lr": 0.1}}
    out = apply_params(raw, {"model.kwargs.drop_rate": 0.3, "train.lr": 0.01, "loss.name": "focal"})
    assert out == {"model": {"name": "tsm_tiny", "kwargs": {"drop_rate": 0.3}}, "train": {"lr": 0.01},
                   "loss": {"name": "focal"}}
    assert raw["train"]["lr"] == 0.1 and raw["model"]["kwargs"] == {}  # the base is not changed


@pytest.mark.parametrize("text, expected", [
    ("train.lrr: {type: float, low: 0.1, high: 1}", "unknown config key 'train.lrr' (did you mean train.lr"),
    ("train.lr: {type: float, low: 1, high: 0.1}", "key 'train.lr': needs low < high"),
    ("train.lr: {type: float, low: 0, high: 1, log: true}", "key 'train.lr': log: true needs low > 0"),
    ("train.lr: {type: float, low: 0.1}", "key 'train.lr': float needs high"),
    ("train.lr: {type: real, low: 0, high: 1}", "key 'train.lr': type must be one of categorical, int, float"),
    ("train.lr: {type: float, low: 0.1, high: 1, choices: [1]}", "key 'train.lr': unknown field(s) choices"),
    ("data.stride: {type: int, low: 1.5, high: 3}", "key 'data.stride': int needs low: an integer"),
    ("data.sampling: {type: categorical, choices: []}", "categorical needs choices: a non-empty list"),
    ("data.sampling: {type: categorical, choices: [tsn, tsn]}", "repeat a value"),
    ("data.sampling: 3", "expected a list of choices or a mapping"),
    ("cv.folds: [2, 3]", "key 'cv.folds' cannot be searched"),
    ("seed: [1, 2]", "key 'seed' cannot be searched"),
    ("loss.gamma: {type: float, low: 1, high: 2, when: {loss.name: [focal]}}\nloss.name: [ce, focal]",
     "its condition on 'loss.name' needs loss.name listed before it"),
    ("loss.gamma: {type: float, low: 1, high: 2, when: {loss.nam: [focal]}}", "when refers to unknown config key"),
    ("- train.lr", "expected a non-empty mapping"),
    ("train.lr: [0.1, {a: 1}]", "must be a scalar"),
])
def test_bad_space_files_raise_one_line_errors_naming_file_and_key(tmp_path, text, expected):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_bad_space_file_is_a_one_line_cli_error(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {type: float, low: 1, high: 0.1}")
    assert main(["sweep", "--space", str(path), "--trials", "1", "--study", "s", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "microexp sweep: error:" in err[0] and "train.lr" in err[0]


def test_grid_needs_a_categorical_space_and_caps_the_trials():
    ranged = parse_space({"train.lr": {"type": "float", "low": 0.001, "high": 0.1}, "loss.name": ["ce", "focal"]})
    with pytest.raises(ConfigError, match="grid sampler needs a categorical-only space, but train.lr"):
        ranged.grid()
    grid = parse_space({"loss.name": ["ce", "focal"], "train.sampler": ["none", "sqrt", "class_balanced"]})
    settings = SweepSettings(study="s", storage="sqlite://", out_dir=Path("."), trials=50, sampler="grid")
    assert trial_target(settings, grid) == 6


def test_invalid_combination_is_a_config_error():
    base = build_config({}).to_dict()
    with pytest.raises(ConfigError, match="data.num_frames"):
        trial_config(base, {"data.num_frames": 0})
    with pytest.raises(ConfigError, match="model tsm_tiny: .*drop_ratio"):
        trial_config(base, {"model.kwargs.drop_ratio": 0.1})


def test_storage_urls(tmp_path):
    journal = open_storage(f"journal://{tmp_path}/j.log")
    assert isinstance(journal, optuna.storages.JournalStorage)
    rdb = open_storage(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(rdb, optuna.storages.RDBStorage)
    # a missing folder is created only when asked (the default storage inside --out), never for a typo
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/deeper/s.db")
    open_storage(f"sqlite:///{tmp_path}/deeper/s.db", create_folder=True)
    assert (tmp_path / "deeper").is_dir()
    for bad in ("study.db", "http://host/x", "journal://"):
        with pytest.raises(ConfigError, match="--storage"):
            open_storage(bad)


def _study(tmp_path, name="s", **settings_kwargs):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    settings = SweepSettings(study=name, storage=f"sqlite:///{tmp_path}/s.db", out_dir=tmp_path, trials=2,
                             **settings_kwargs)
    space = parse_space({"loss.name": ["ce", "focal"]})
    fold = Fold(fold=0, train_subjects=(1, 2, 3), test_subjects=(4,))
    return storage, settings, space, fold


def test_resumed_study_must_search_the_same_thing(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    open_fold_study(storage, settings, fold, base=build_config({}), space=space)  # same: fine
    with pytest.raises(ConfigError, match=r"another base recipe .*train.lr: study has 0.001, now 0.01"):
        open_fold_study(storage, settings, fold, base=build_config({"train": {"lr": 0.01}}), space=space)
    with pytest.raises(ConfigError, match="another search space"):
        open_fold_study(storage, settings, fold, base=build_config({}), space=parse_space({"loss.name": ["ce"]}))
    other = SweepSettings(study="s", storage=settings.storage, out_dir=tmp_path, trials=2, metric="uar")
    with pytest.raises(ConfigError, match="another --metric"):
        open_fold_study(storage, other, fold, base=build_config({}), space=space)


def test_retry_failed_enqueues_failed_parameters_once_into_free_slots(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    study = open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    distributions = {"loss.name": optuna.distributions.CategoricalDistribution(["ce", "focal"])}
    study.add_trial(optuna.trial.create_trial(params={"loss.name": "ce"}, distributions=distributions,
                                              state=TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(params={"loss.name": "focal"}, distributions=distributions, value=0.5))
    assert retry_failed(study, target=3) == [0]
    assert retry_failed(study, target=3) == []  # already re-enqueued
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == 0
    assert waiting[0].system_attrs["fixed_params"] == {"loss.name": "ce"}  # what the next ask() will run


def test_fail_running_marks_orphans_failed(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    study = open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    study.ask()
    assert fail_running(study, storage) == [0]
    trial = study.get_trials()[0]
    assert trial.state == TrialState.FAIL and "fail-running" in trial.user_attrs["fail_reason"]


def test_a_trial_asked_after_the_last_slot_is_taken_is_not_run(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    study = open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    study.ask()  # another worker's trial, still running, takes the only slot
    calls = []
    assert _run_one(study, lambda trial: calls.append(trial) or 1.0, 0, target=1) is None
    assert calls == []
    surplus = study.get_trials()[1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"]
    assert trials_frame({0: study})["number"].tolist() == [0]  # surplus records are left out of trials.csv


@pytest.mark.parametrize("kwargs, expected", [
    ({"max_failures": 0}, "--max-failures 0: expected an integer >= 1"),
    ({"max_failures": -2}, "--max-failures -2: expected an integer >= 1"),
    ({"timeout": 0.0}, "--timeout 0.0: expected a number of seconds > 0"),
    ({"timeout": -5.0}, "--timeout -5.0: expected a number of seconds > 0"),
    ({"timeout": float("nan")}, "--timeout nan"),
])
def test_settings_reject_bad_max_failures_and_timeout(kwargs, expected):
    with pytest.raises(ConfigError) as info:
        SweepSettings(study="s", storage="sqlite://", out_dir=Path("."), trials=1, **kwargs)
    assert expected in str(info.value) and "\n" not in str(info.value)
    SweepSettings(study="s", storage="sqlite://", out_dir=Path("."), trials=1, timeout=0.5, max_failures=1)


def test_cli_rejects_zero_max_failures(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text("loss.name: [ce, focal]")
    assert main(["sweep", "--space", str(path), "--trials", "1", "--study", "s", "--out", str(tmp_path / "o"),
                 "--max-failures", "0"]) == 2
    assert "--max-failures 0" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["postgresql://user:s3cretPW@127.0.0.1:1/db",  # nothing listens on port 1
                                 "postgress://user:s3cretPW@127.0.0.1:1/db",  # unknown scheme
                                 "postgresql://user:s3cretPW@127.0.0.1:notaport/db"])  # a URL the driver rejects
def test_storage_errors_never_show_the_password(url):
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert "s3cretPW" not in message and "user:***@127.0.0.1" in message


def test_study_mismatch_error_hides_the_storage_password(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    other = SweepSettings(study="s", storage="postgresql://user:s3cretPW@db.example/optuna", out_dir=tmp_path,
                          trials=2, metric="uar")
    with pytest.raises(ConfigError, match="another --metric") as info:
        open_fold_study(storage, other, fold, base=build_config({}), space=space)
    assert "s3cretPW" not in str(info.value) and "user:***@db.example" in str(info.value)


def test_an_enqueued_trial_in_the_last_slot_still_runs(tmp_path):
    # a dead worker's trial re-enqueued by the heartbeat (or --retry-failed) into the last free slot
    storage, settings, space, fold = _study(tmp_path)
    study = open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    study.optimize(lambda trial: space.suggest(trial, {}) and 0.5, n_trials=1)
    study.enqueue_trial({"loss.name": "focal"})
    assert counted(study) == 2 and has_work(study, 2)  # every slot taken, yet one trial waits to be run
    ran = []
    record = _run_one(study, lambda trial: ran.append(space.suggest(trial, {})) or 0.7, 0, target=2)
    assert record is not None and record.state == "COMPLETE" and ran == [{"loss.name": "focal"}]
    assert not has_work(study, 2)
    assert has_work(study, 3)  # a free slot: a new trial is wanted


def test_an_enqueued_trial_beyond_the_target_is_turned_away(tmp_path):
    storage, settings, space, fold = _study(tmp_path)
    study = open_fold_study(storage, settings, fold, base=build_config({}), space=space)
    study.optimize(lambda trial: space.suggest(trial, {}) and 0.5, n_trials=2)
    study.enqueue_trial({"loss.name": "focal"})  # e.g. --trials lowered to 2 after a retry was enqueued
    assert has_work(study, 2)
    assert _run_one(study, lambda trial: 1.0, 0, target=2) is None  # surplus: the study keeps exactly 2
    assert not has_work(study, 2)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_a_kept_final_fold_needs_the_same_config_and_subjects(tmp_path):
    config = build_config({})
    fold = Fold(fold=0, train_subjects=(1, 2), test_subjects=(3,))
    save_config(config, tmp_path / "config.yaml")
    assert not _same_run(tmp_path, config, fold)  # no fold.json: an older run, retrained
    (tmp_path / "fold.json").write_text(json.dumps(fold.to_dict()))
    assert _same_run(tmp_path, config, fold)
    assert not _same_run(tmp_path, config, Fold(fold=0, train_subjects=(1, 3), test_subjects=(2,)))
    assert not _same_run(tmp_path, build_config({"train": {"lr": 0.02}}), fold)


def test_plots_leave_the_global_backend_and_style_alone(tmp_path):
    import matplotlib

    from microexp.sweep.report import plot_sweep

    space = parse_space({"loss.name": ["ce", "focal"], "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}})
    study = optuna.create_study(direction="maximize")
    distributions = {"loss.name": optuna.distributions.CategoricalDistribution(["ce", "focal"]),
                     "train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2)}
    for number, (loss, lr, value) in enumerate([("ce", 0.002, 0.3), ("focal", 0.005, 0.5), ("ce", 0.009, 0.4),
                                                ("focal", 0.001, 0.6)]):
        params = {"loss.name": loss, "train.lr": lr}
        config = trial_config(build_config({}).to_dict(), params).to_dict()
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                                  user_attrs={"config": config}))
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    written = plot_sweep(tmp_path, {0: study}, space, metric="uf1")
    assert sorted(p.name for p in written) == ["history_fold00.png", "importance_fold00.png",
                                               "sampling_x_imbalance.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == rc  # no ggplot leaking out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)  # no temp files


def test_old_engine_paths_are_aliases_of_the_package():
    import microexp.sweep
    from microexp.engine import sweep, sweep_finalize, sweep_report, sweep_space, sweep_storage
    from microexp.sweep import finalize, report, space, storage, studies, worker

    assert sweep.SweepSettings is studies.SweepSettings and sweep.run_worker is worker.run_worker
    assert sweep.FINISHED is studies.FINISHED and sweep.SweepObjective is microexp.sweep.SweepObjective
    assert sweep_space.load_space is space.load_space and sweep_storage.open_storage is storage.open_storage
    assert sweep_report.write_best is report.write_best and sweep_finalize.finalize is finalize.finalize
    for alias in (sweep, sweep_finalize, sweep_report, sweep_space, sweep_storage):
        assert all(hasattr(alias, name) for name in alias.__all__)
    assert all(hasattr(microexp.sweep, name) for name in microexp.sweep.__all__)
