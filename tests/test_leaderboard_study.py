"""The leaderboard study: every registered model gets a cell of its modality's recipe, the axes, the ranking,
the throughput column, and a quick run of three models on tiny data whose ranked table is checked."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microexp import cli
from microexp.cli import main
from microexp.cli import study as study_cli
from microexp.config import load_config
from microexp.errors import ConfigError
from microexp.models import count_params, create_model, list_models, model_info
from microexp.studies import StudyOptions, leaderboard
from microexp.studies.grid import cell_config
from microexp.studies.options import QUICK_OVERRIDES
from microexp.synth import generate_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _study(tmp_path, **kwargs):
    return leaderboard.leaderboard_study(StudyOptions(out=tmp_path / "study", **kwargs), RECIPES)


def test_every_registered_model_runs_its_modality_recipe_at_112_px_with_and_without_balancing(tmp_path):
    study = _study(tmp_path)
    assert sorted({c.axes["model"] for c in study.cells}) == list_models()
    assert len(study.cells) == 2 * len(list_models())
    for cell in study.cells:
        if cell.axes["balance"] != "none":
            continue
        config = cell_config(cell)  # every cell validates (the big models are checked on the meta device)
        info = model_info(cell.axes["model"])
        assert config.model.name == info.name and cell.axes["modality"] == info.modality
        assert (config.train.sampler, config.loss.name) == ("none", "ce")
        if info.modality == "apex_flow":
            assert config.data.size == leaderboard.APEX_FLOW_SIZE == cell.axes["size"] and config.data.num_frames == 1
        else:
            assert config.data.size == 112 == cell.axes["size"]
    recipes = {c.axes["model"]: c.recipe.name for c in study.cells}
    assert recipes["timesformer_tiny"] == "timesformer-tiny_rgb-8f_synth_5fold.yaml"  # its own recipe
    assert recipes["mvit_v2_s"] == "mvit-tiny_rgb-8f_synth_5fold.yaml"  # its family's, with model.name set
    balanced = next(c for c in study.cells if c.name == "tsm_tiny_112px_class_balanced_s0")
    assert cell_config(balanced).train.sampler == "class_balanced"
    assert {c.axes["pretraining"] for c in study.cells} == {"scratch"}


def test_quick_keeps_the_cpu_friendly_models_and_sizes_add_the_resolution_axis(tmp_path):
    quick = _study(tmp_path, quick=True)
    assert {c.axes["model"] for c in quick.cells} == set(list_models(cpu_friendly=True))
    assert {c.axes["size"] for c in quick.cells if c.axes["modality"] != "apex_flow"} == {leaderboard.QUICK_SIZE}
    for cell in quick.cells:  # every cell's recipe validates under --quick (the transformers' warm-up included)
        cell_config(cell, list(QUICK_OVERRIDES))
    sized = _study(tmp_path, models=("tsm_*", "htnet"), sizes=(64, 160))
    names = {c.name for c in sized.cells}
    assert {"tsm_tiny_64px_none_s0", "tsm_r50_160px_class_balanced_s0", "htnet_28px_none_s0"} <= names
    assert len(sized.cells) == (3 * 2 + 1) * 2  # tsm_tiny, tsm_r18, tsm_r50 at two sizes; htnet at its own
    assert {c.axes["model"] for c in _study(tmp_path, cpu_friendly=True, models=("tsm_*",)).cells} == {"tsm_tiny"}
    weighted = _study(tmp_path, models=("tsm_tiny",), overrides=("model.pretrained=w.pt",))
    assert {c.axes["pretraining"] for c in weighted.cells} == {"weights: w.pt"}
    with pytest.raises(ConfigError, match="--models 'nope_\\*': no registered model"):
        _study(tmp_path, models=("nope_*",))
    with pytest.raises(ConfigError, match="no CPU-friendly model"):
        _study(tmp_path, models=("tsm_r50",), cpu_friendly=True)
    with pytest.raises(ConfigError, match="--recipe"):
        _study(tmp_path, recipes=("x.yaml",))


def test_rank_rows_orders_by_pooled_uf1_then_uar_and_ties_share_a_rank():
    table = pd.DataFrame({"model": list("abcd"), "pooled_uf1_mean": [0.5, 0.7, 0.5, 0.5],
                          "pooled_uar_mean": [0.4, 0.1, 0.6, 0.4]})
    ranked = leaderboard.rank_rows(table)
    assert list(ranked["model"]) == ["b", "c", "a", "d"] and list(ranked["rank"]) == [1, 2, 3, 3]


def test_training_clips_per_second_counts_training_clips_times_epochs_over_epoch_time(tmp_path):
    run = tmp_path / "run"
    for fold in (0, 1):
        (run / f"fold_{fold:02d}").mkdir(parents=True)
        pd.DataFrame({"epoch": [0, 1, 2], "seconds": [1.0, 1.0, 2.0]}).to_csv(run / f"fold_{fold:02d}" / "log.csv",
                                                                             index=False)
    (run / "folds.json").write_text(json.dumps([{"fold": 0, "train_subjects": [1], "val_subjects": [],
                                                 "test_subjects": [2]},
                                                {"fold": 1, "train_subjects": [2], "val_subjects": [],
                                                 "test_subjects": [1]}]))
    pd.DataFrame({"subject": [1, 1, 1, 2], "fold": [1, 1, 1, 0]}).to_csv(run / "predictions.csv", index=False)
    # fold 0 trains on subject 1's 3 clips, fold 1 on subject 2's 1 clip, 3 epochs each, 8 s in all
    assert leaderboard.training_clips_per_second(run) == pytest.approx((3 * 3 + 1 * 3) / 8.0)
    (run / "folds.json").write_text(json.dumps([{"fold": 0, "train_subjects": [7], "val_subjects": [],
                                                 "test_subjects": [1]}]))
    assert np.isnan(leaderboard.training_clips_per_second(run))  # training clips never tested: unknown


def test_leaderboard_options_belong_to_the_leaderboard():
    parse = cli.build_parser(["study"]).parse_args
    options = study_cli.study_options(parse(["study", "dfme_leaderboard", "--models", "tsm_*", "--models", "htnet",
                                             "--sizes", "64,112", "--cpu-friendly"]))
    assert (options.models, options.sizes, options.cpu_friendly) == (("tsm_*", "htnet"), (64, 112), True)
    assert options.command == ("microexp study dfme_leaderboard --cpu-friendly --sizes 64,112 --models 'tsm_*' "
                               "--models htnet")
    with pytest.raises(ConfigError, match="apply to dfme_leaderboard, not dfme_models"):
        study_cli.study_options(parse(["study", "dfme_models", "--sizes", "64"]))
    for bad in ("64,x", "8", "64,64", ""):
        with pytest.raises(ConfigError, match="--sizes"):
            study_cli.parse_sizes(bad)


def test_quick_leaderboard_ranks_three_models_with_registry_parameters(tmp_path):
    data = tmp_path / "synth"
    generate_dataset(data, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    out = tmp_path / "study"
    args = ["study", "dfme_leaderboard", "--quick", "--data", str(data / "annotations.csv"), "--out", str(out),
            "--recipes-dir", str(RECIPES), "--no-progress", "--device", "cpu", "--models", "flow_tiny",
            "--models", "tsm_tiny", "--models", "ststnet", "--set", "data.num_workers=0",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.num_frames=2"]
    assert main(args) == 0
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 3 * 2 and set(table["model"]) == {"flow_tiny", "tsm_tiny", "ststnet"}
    keys = list(zip(table["pooled_uf1_mean"], table["pooled_uar_mean"]))
    assert keys == sorted(keys, reverse=True) and table["rank"].iloc[0] == 1
    assert list(table["rank"]) == sorted(table["rank"]) and table["rank"].max() <= len(table)
    for _, row in table.iterrows():  # the params column is the registry's count for the model the cell trained
        cell = out / "cells" / f"{row['model']}_{row['size']}px_{row['balance']}_s0"
        config = load_config(cell / "config.yaml")
        model = create_model(row["model"], num_classes=7, num_frames=config.data.num_frames,
                             input_size=config.data.size, **config.model.kwargs)
        assert row["num_params_mean"] == count_params(model)
        assert row["clips_per_second_mean"] > 0
    markdown = (out / "leaderboard.md").read_text()
    assert "Smoke test" in markdown and "| rank | model |" in markdown and "train clips/s" in markdown
    assert (out / "leaderboard.png").stat().st_size > 0 and (out / "leaderboard_params.png").stat().st_size > 0
    assert "Ranked by pooled UF1" in (out / "summary.md").read_text()
    record = json.loads((out / "study.json").read_text())
    assert record["study"] == "dfme_leaderboard" and len(record["cells"]) == 6
