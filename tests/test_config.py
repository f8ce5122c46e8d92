"""Typed config: defaults, YAML recipes, dotted overrides, errors that list the valid keys or values."""

import pytest

from microexp.config import ExperimentConfig, apply_overrides, build_config, load_config, save_config, valid_keys
from microexp.errors import ConfigError


def test_defaults_are_valid_and_cover_the_documented_keys():
    config = build_config({})
    assert isinstance(config, ExperimentConfig)
    for key in ["data.annotations", "data.format", "data.root", "data.num_frames", "data.sampling", "data.size",
                "cv.protocol", "cv.folds", "model.name", "train.epochs", "train.batch_size", "train.lr",
                "train.sampler", "loss.name", "seed", "device"]:
        assert key in valid_keys()


def test_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  annotations: a.csv\n  num_frames: 16\ntrain:\n  lr: 0.01\nmodel:\n  name: r3d_tiny\n")
    config = load_config(recipe, ["train.lr=3e-4", "cv.stratify=true", "model.kwargs={drop_rate: 0.3}", "seed=7"])
    assert config.data.annotations == "a.csv" and config.data.num_frames == 16
    assert config.train.lr == pytest.approx(3e-4) and config.cv.stratify is True
    assert config.model.kwargs == {"drop_rate": 0.3} and config.seed == 7
    assert config.train.epochs == ExperimentConfig().train.epochs  # untouched default


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["data.annotations=x.csv", "cv.protocol=split", "cv.test_subjects=[1, 2]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_unknown_key_lists_close_and_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'.*valid keys: data.annotations"):
        load_config(None, ["train.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="did you mean data.sampling"):
        build_config({"data": {"samplng": "tsn"}})


@pytest.mark.parametrize("override,message", [
    ("data.sampling=random", "data.sampling='random': expected one of uniform"),
    ("cv.protocol=holdout", "expected one of kfold, loso, lodo, split"),
    ("train.epochs=0", "train.epochs=0: expected an integer >= 1"),
    ("train.batch_size=two", "expected an integer"),
    ("train.lr=-1", "train.lr=-1"),
    ("device=tpu", "device='tpu'"),
    ("train.model_selection=val", "cv.val_fraction > 0"),
    ("cv.protocol=split", "cv.test_subjects"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_malformed_override_and_recipe(tmp_path):
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_records_the_recipe_and_loads_back(tmp_path):
    from microexp.config import build_config, load_config, save_config

    config = build_config({"data": {"annotations": "x.csv"}})
    save_config(config, tmp_path / "config.yaml", recipe="recipes/flow-tiny_flow-8f_synth_5fold.yaml")
    text = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# recipe: recipes/flow-tiny_flow-8f_synth_5fold.yaml"
    assert load_config(tmp_path / "config.yaml") == config
