"""Every config key validated in one place, before anything is written: one-line ConfigError naming the key,
the value, what was expected and where the value came from (the recipe file or the --set override)."""

import pathlib
import subprocess
import sys

import pytest
import torch

from microexp.config import MAX_NUM_FRAMES, PROTOCOLS, load_config
from microexp.errors import ConfigError, MicroexpError
from microexp.models import create_model


def one_line_error(overrides, match, path=None):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path, overrides)
    assert "\n" not in str(info.value)
    return info.value


def test_lodo_protocol_is_accepted():
    # the leave-one-dataset-out split exists in microexp.splits; cv.protocol must be able to name it
    assert "lodo" in PROTOCOLS
    assert load_config(None, ["cv.protocol=lodo"]).cv.protocol == "lodo"


@pytest.mark.parametrize("overrides,message", [
    # the defects of the issue: each was a traceback (exit 1) or silently accepted
    (["model.name=tsm_r19"], r"model.name='tsm_r19': expected a registered model \(did you mean tsm_r18.*tsm_tiny"),
    (["model.kwargs={dropout: 0.3}"], r"model.kwargs.dropout: model tsm_tiny: unknown argument 'dropout' "
                                      r"\(did you mean drop_rate\?\); accepted: fold_div, drop_rate, attention"),
    (["data.num_workers=-1"], r"data.num_workers=-1: expected an integer >= 0"),
    (["data.num_frames=100000"], rf"data.num_frames=100000: expected an integer in \[1, {MAX_NUM_FRAMES}\] "
                                 r"\(a micro-expression lasts under 0.5 s"),
    # formats, class maps, flow methods against the modules that define them
    (["data.format=casme"], r"data.format='casme': expected one of auto, .*casme2.*\(did you mean casme3\?\)"),
    (["data.class_map=dfme8"], r"data.class_map='dfme8': expected one of casme2_5, casme3_4, dfme7, megc3, mmew7"),
    (["data.flow_method=tvl"], r"data.flow_method='tvl': expected one of tvl1, farneback, dis"),
    # ranges
    (["data.size=8"], r"data.size=8: expected an integer in \[16, 1024\]"),
    (["data.reference_fps=0"], r"data.reference_fps=0.0: expected a number > 0.0 or null"),
    (["train.weight_decay=-0.1"], r"train.weight_decay=-0.1: expected a number >= 0"),
    (["train.momentum=1"], r"train.momentum=1.0: expected a number in \[0.0, 1.0\)"),
    (["train.epochs=3", "train.warmup_epochs=4"], r"train.warmup_epochs=4: expected an integer in \[0, 3\]"),
    (["train.grad_clip=0"], r"train.grad_clip=0.0: expected a number > 0.0 or null"),
    (["train.lr=.nan"], r"train.lr=nan: expected a number > 0"),
    (["loss.gamma=-1"], r"loss.gamma=-1.0: expected a number >= 0"),
    (["loss.max_m=0"], r"loss.max_m=0.0: expected a number > 0"),
    (["loss.scale=.inf"], r"loss.scale=inf: expected a number > 0"),
    (["train.epochs=5", "loss.drw_epoch=5"], r"loss.drw_epoch=5: expected an integer in \[0, 4\] or null"),
    (["cv.folds=1"], r"cv.folds=1: expected an integer >= 2 for cv.protocol=kfold"),
    (["cv.protocol=split", "cv.test_subjects=[1, 1, 2]"], r"subjects \[1\] are listed more than once"),
    (["seed=-1"], r"seed=-1: expected an integer in \[0, 4294967295\]"),
    # model arguments: the engine's own, the family's checks (run on the meta device)
    (["model.kwargs={num_frames: 4}"], r"model.kwargs.num_frames=4: set by data.num_frames, not in model.kwargs"),
    (["model.kwargs={attention: foo}"], r"model tsm_tiny .*attention='foo'\) rejects its arguments: attention: "
                                        r"expected None or 'cbam'"),
    (["model.name=timesformer_tiny", "data.size=100"], r"input_size: 100 is not a multiple of patch_size=16"),
    (["model.kwargs={drop_rate: [1, {a: 1}]}"], r"model.kwargs.drop_rate=.*expected a plain value"),
])
def test_bad_values_are_one_line_errors_naming_the_override(overrides, message):
    error = one_line_error(overrides, message)
    assert str(error).startswith("override '")  # the value came from a --set, so the --set is named


def test_values_at_the_edges_are_accepted():
    config = load_config(None, [f"data.num_frames={MAX_NUM_FRAMES}", "data.num_workers=0", "data.crop_scale=1.0",
                                "train.grad_clip=null", "train.epochs=2", "train.warmup_epochs=2",
                                "loss.drw_epoch=1", "cv.protocol=loso", "cv.folds=1", "data.size=16"])
    assert config.data.crop_scale == 1.0 and config.train.grad_clip is None


def test_model_construction_error_keeps_its_cause():
    error = one_line_error(["model.kwargs={attention: foo}"], "attention")
    assert isinstance(error.__cause__, ValueError) and "cbam" in str(error.__cause__)


def test_unknown_model_is_a_user_error_of_the_registry_too():
    with pytest.raises(MicroexpError, match="unknown model 'tsm_r19'"):
        create_model("tsm_r19", num_classes=7)
    with pytest.raises(MicroexpError, match="did you mean 'drop_rate'"):
        create_model("tsm_tiny", num_classes=7, drop_rat=0.1)


# --------------------------------------------------------------------------------------------- sources


def test_recipe_value_is_blamed_on_the_recipe_file_not_on_an_override(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: 5\n")
    error = one_line_error(["data.num_frames=4"], r"data=5: expected a mapping", path=recipe)
    assert str(error).startswith(f"{recipe}: ") and "override 'data.num_frames=4' cannot set" in str(error)
    error = one_line_error([], r"data=5: expected a mapping", path=recipe)
    assert str(error).startswith(f"{recipe}: ")
    recipe.write_text("data:\n  num_workers: -1\n")
    error = one_line_error(["train.epochs=3"], r"data.num_workers=-1", path=recipe)
    assert str(error).startswith(f"{recipe}: ")


def test_override_value_is_blamed_on_the_override(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  num_frames: 8\n")
    error = one_line_error(["data.num_frames=0"], r"data.num_frames=0", path=recipe)
    assert str(error).startswith("override 'data.num_frames=0': ")
    error = one_line_error(["model.kwargs={}", "model.kwargs.fold_dv=3"], r"did you mean fold_div", path=recipe)
    assert str(error).startswith("override 'model.kwargs.fold_dv=3': ")
    error = one_line_error(["data.num_workers=two"], r"data.num_workers='two': expected an integer", path=recipe)
    assert str(error).startswith("override 'data.num_workers=two'")


# --------------------------------------------------------------------------------------------- pretrained


class _Marker:
    """Unpickling this touches a marker file: proof that a pickle's code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_pretrained_needing_unsafe_unpickling_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    weights = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Marker(marker)}, weights)
    error = one_line_error([f"model.pretrained={weights}"], r"model.pretrained=.*weights.pth.*refused: it holds Python "
                                                             r"objects beyond tensors.*nothing in it was executed")
    assert not marker.exists()
    assert error.__cause__ is not None  # the PretrainedError (and below it torch's UnpicklingError) is kept


@pytest.mark.parametrize("content,message", [
    (b"hello, this is text\n", "not a readable PyTorch checkpoint"),
    (b"", "not a readable PyTorch checkpoint"),
    (None, "truncated"),
])
def test_pretrained_unreadable_files_are_one_line(tmp_path, content, message):
    weights = tmp_path / "weights.pth"
    if content is None:  # a truncated zip checkpoint
        torch.save({"w": torch.zeros(1000)}, weights)
        weights.write_bytes(weights.read_bytes()[:300])
    else:
        weights.write_bytes(content)
    error = one_line_error([f"model.pretrained={weights}"], message)
    assert error.__cause__ is not None


def test_pretrained_must_be_an_existing_file(tmp_path):
    one_line_error([f"model.pretrained={tmp_path / 'missing.pth'}"], r"missing.pth': no such file")
    one_line_error([f"model.pretrained={tmp_path}"], r"not a file")


def test_pretrained_good_files_pass(tmp_path):
    for legacy in (False, True):
        weights = tmp_path / f"w{legacy}.pth"
        torch.save({"state_dict": {"w": torch.zeros(3)}}, weights, _use_new_zipfile_serialization=not legacy)
        assert load_config(None, [f"model.pretrained={weights}"]).model.pretrained == str(weights)


def test_pretrained_loader_keeps_the_cause_and_is_a_user_error(tmp_path):
    from microexp.models.pretrained import PretrainedError, read_state_dict

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError) as info:
        read_state_dict(weights)
    assert isinstance(info.value, MicroexpError) and info.value.__cause__ is not None


# --------------------------------------------------------------------------------------------- the CLI


def test_cli_prints_one_line_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "microexp", "train", "--out", str(out), "--set",
                             "data.num_workers=-1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.num_workers=-1: expected an integer >= 0" in lines[0], result.stderr
    assert not out.exists()


def test_unreadable_recipes_are_one_line_and_keep_their_cause(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\xff\xfe\x00 binary")
    error = one_line_error([], r"recipe.yaml: not a UTF-8 text file", path=recipe)
    assert isinstance(error.__cause__, UnicodeDecodeError)
    recipe.write_text("data: [1, 2\n")
    error = one_line_error([], r"recipe.yaml: not valid YAML", path=recipe)
    assert error.__cause__ is not None
    error = one_line_error(["train.lr=[1"], r"override 'train.lr=\[1': value is not valid YAML")
    assert error.__cause__ is not None


def test_a_rejected_model_argument_set_by_an_override_blames_the_override(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  name: tsm_tiny\n")
    error = one_line_error(["model.kwargs.attention=foo"], r"rejects its arguments: attention", path=recipe)
    assert str(error).startswith("override 'model.kwargs.attention=foo': ")
    recipe.write_text("model:\n  name: tsm_tiny\n  kwargs: {attention: foo}\n")
    error = one_line_error(["train.epochs=2"], r"rejects its arguments: attention", path=recipe)
    assert str(error).startswith(f"{recipe}: ")
