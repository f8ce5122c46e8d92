"""Study grids: cells, resume, tables, the three DFME studies' cell lists, and each study run by ``microexp study``."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microexp.data.samplers import SAMPLERS
from microexp.data.sampling import STRATEGIES, SamplingSpec
from microexp.cli import main
from microexp.synth import generate_dataset
from microexp.errors import ConfigError
from microexp.losses import LOSSES
from microexp.studies import Cell, CellResult, StudyOptions, run_grid
from microexp.studies import dfme
from microexp.studies.tables import (
    aggregate_over_seeds,
    format_duration,
    format_mean_std,
    markdown_table,
    results_frame,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FLOW = RECIPES / "flow-tiny_flow-8f_synth_5fold.yaml"
FRAME = RECIPES / "frame-tiny_rgb-8f_synth_5fold.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _tiny_overrides(annotations, cache):
    return [f"data.annotations={annotations}", f"data.cache_dir={cache}", "data.num_workers=0", "cv.folds=2",
            "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=4", "data.size=32", "data.num_frames=2"]


def _metrics(pooled_uf1, recalls=(0.5, None)):
    return {"pooled": {"acc": 0.5, "uf1": pooled_uf1, "uar": 0.4},
            "fold_mean": {"acc": 0.5, "uf1": pooled_uf1, "uar": 0.4}, "fold_std": {"acc": 0.1, "uf1": 0.2, "uar": 0.3},
            "per_class": {name: {"recall": r, "f1": r} for name, r in zip(("happy", "sad"), recalls)},
            "classes": ["happy", "sad"]}


def _result(name, seed, uf1, axes, recalls=(0.5, None)):
    cell = Cell(name=name, recipe=FLOW, seed=seed, axes=axes)
    return CellResult(cell=cell, run_dir=Path(name), metrics=_metrics(uf1, recalls), num_params=1000,
                      train_seconds=10.0 + seed, wall_seconds=None if seed else 12.0, resumed=bool(seed))


# ----------------------------------------------------------------------------------------------------
# tables


def test_aggregate_over_seeds_gives_mean_and_sample_std_per_group():
    results = [_result("a_s0", 0, 0.2, {"loss": "ce"}), _result("a_s1", 1, 0.4, {"loss": "ce"}),
               _result("a_s2", 2, 0.9, {"loss": "ce"}), _result("b_s0", 0, 0.6, {"loss": "focal"}, (1.0, 0.0))]
    frame = results_frame(results)
    assert list(frame["cell"]) == ["a_s0", "a_s1", "a_s2", "b_s0"]
    assert math.isnan(frame.loc[0, "recall_sad"]) and frame.loc[3, "recall_sad"] == 0.0
    table = aggregate_over_seeds(frame, ["loss"])
    assert list(table["loss"]) == ["ce", "focal"] and list(table["seeds"]) == [3, 1]
    ce = table.iloc[0]
    assert ce["pooled_uf1_mean"] == pytest.approx(np.mean([0.2, 0.4, 0.9]))
    assert ce["pooled_uf1_std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert ce["train_seconds_mean"] == pytest.approx(11.0)
    assert ce["wall_seconds_mean"] == pytest.approx(12.0)  # resumed cells have no wall time: NaN is skipped
    assert math.isnan(ce["recall_sad_mean"])
    assert math.isnan(table.iloc[1]["pooled_uf1_std"])  # one seed: no spread
    with pytest.raises(ValueError, match="not columns"):
        aggregate_over_seeds(frame, ["sampler"])


def test_markdown_table_formats_and_escapes():
    frame = pd.DataFrame({"name": ["a|b", "c"], "value": [0.12345, float("nan")], "std": [0.01, float("nan")]})
    text = markdown_table(frame, [("name", lambda r: r["name"]),
                                  ("value", lambda r: format_mean_std(r["value"], r["std"]))], align=["l", "r"])
    lines = text.splitlines()
    assert lines[0] == "| name | value |" and lines[1] == "| --- | ---: |"
    assert lines[2] == "| a\\|b | 0.123 ± 0.010 |" and lines[3] == "| c | – |"
    with pytest.raises(ValueError):
        markdown_table(frame, [("name", lambda r: r["name"])], align=["l", "r"])


def test_formatters():
    assert format_mean_std(0.5) == "0.500" and format_mean_std(0.5, float("nan")) == "0.500"
    assert format_duration(5.04) == "5.0 s" and format_duration(42) == "42 s"
    assert format_duration(185) == "3 min 05 s" and format_duration(3720) == "1 h 02 min"
    assert format_duration(None) == "–"


# ----------------------------------------------------------------------------------------------------
# the studies' cells


def _options(tmp_path, **kwargs):
    return StudyOptions(out=tmp_path / "study", **kwargs)


def test_sampling_study_covers_every_strategy_frame_count_and_fps_setting(tmp_path):
    study = dfme.sampling_study(_options(tmp_path), RECIPES)
    combos = {(c.axes["strategy"], c.axes["frames"], c.axes["fps_normalised"]) for c in study.cells}
    expected = {(s, n, "n/a") for s in STRATEGIES if s not in dfme.FPS_SCALED for n in (8, 16)}
    expected |= {(s, n, f) for s in dfme.FPS_SCALED for n in (8, 16) for f in ("yes", "no")}
    assert combos == expected and len(study.cells) == len(expected)
    assert all(c.recipe == FLOW for c in study.cells)
    quick = dfme.sampling_study(_options(tmp_path, quick=True), RECIPES)
    assert {c.axes["frames"] for c in quick.cells} == {8}
    assert {c.axes["strategy"] for c in quick.cells} == set(STRATEGIES)


def test_fps_scaled_strategies_are_exactly_those_reference_fps_changes():
    """Only FPS_SCALED strategies are rerun with reference_fps: check that the others really ignore it."""
    onset, apex, offset = 10, 70, 160
    changed = set()
    for strategy in STRATEGIES:
        for fps in (200.0, 300.0, 500.0):
            plain = SamplingSpec(strategy, num_frames=8, stride=2).times(onset, apex, offset, fps=fps, train=False)
            scaled = SamplingSpec(strategy, num_frames=8, stride=2, reference_fps=dfme.REFERENCE_FPS).times(
                onset, apex, offset, fps=fps, train=False)
            if not np.array_equal(plain, scaled):
                changed.add(strategy)
    assert changed == set(dfme.FPS_SCALED)


def test_imbalance_study_varies_one_axis_at_a_time_over_seeds(tmp_path):
    study = dfme.imbalance_study(_options(tmp_path), RECIPES)
    pairs = {(c.axes["sampler"], c.axes["loss"]) for c in study.cells if c.axes["varied"] in ("baseline", "sampler",
                                                                                               "loss")}
    assert pairs == {("none", "ce")} | {(s, "ce") for s in SAMPLERS} | {("none", loss) for loss in LOSSES}
    assert sorted({c.seed for c in study.cells}) == [0, 1, 2]
    assert len(study.cells) == 3 * (len(SAMPLERS) + len(LOSSES) - 1 + len(dfme.SCHEDULES))
    staged = [c for c in study.cells if c.axes["varied"] == "schedule"]
    assert staged and all("train.classifier_epochs=3" in c.overrides for c in staged)
    quick = [c for c in dfme.imbalance_study(_options(tmp_path, quick=True), RECIPES).cells
             if c.axes["varied"] == "schedule"]
    assert all("train.classifier_epochs=1" in c.overrides for c in quick)  # --quick trains 2 epochs
    assert [c.seed for c in dfme.imbalance_study(_options(tmp_path, quick=True), RECIPES).cells][:2] == [0, 0]
    assert {c.seed for c in dfme.imbalance_study(_options(tmp_path, seeds=2), RECIPES).cells} == {0, 1}


def test_models_study_falls_back_to_a_derived_recipe_and_accepts_family_recipes(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in (dfme.FALLBACK_RECIPE, "flow-tiny_flow-8f_synth_5fold.yaml"):
        (recipes / name).write_text((RECIPES / name).read_text())
    study = dfme.models_study(_options(tmp_path), recipes)
    by_family = {c.name: c for c in study.cells}
    assert set(by_family) == {f"{f.key}_s0" for f in dfme.FAMILIES}
    assert by_family["3dcnn_s0"].recipe.name == dfme.FALLBACK_RECIPE
    assert by_family["3dcnn_s0"].overrides == ("model.name=r3d_tiny",)
    assert by_family["two_stream_s0"].overrides == ()
    assert any("r3d" in note for note in study.notes)
    custom = dfme.models_study(_options(tmp_path, recipes=(f"3dcnn={FRAME}",)), recipes)
    assert {c.name: c for c in custom.cells}["3dcnn_s0"].recipe == FRAME
    with pytest.raises(ConfigError, match="FAMILY=PATH"):
        dfme.models_study(_options(tmp_path, recipes=("cnn=x.yaml",)), recipes)


def test_cell_names_are_checked():
    with pytest.raises(ValueError, match="cell name"):
        Cell(name="a/b", recipe=FLOW)


# ----------------------------------------------------------------------------------------------------
# the grid on real (tiny) experiments


def test_grid_runs_cells_resumes_finished_ones_and_refuses_to_mix(tiny_data, tmp_path):
    cells = [Cell(name="focal_s0", recipe=FRAME, overrides=("loss.name=focal",), axes={"loss": "focal"})]
    base = _tiny_overrides(tiny_data, tmp_path / "cache")
    out = tmp_path / "grid"
    results = run_grid(cells, out, base_overrides=base, progress=False)
    assert [r.cell.name for r in results] == ["focal_s0"] and not any(r.resumed for r in results)
    for result in results:
        record = json.loads((result.run_dir / "cell.json").read_text())
        assert record["num_params"] == result.num_params > 0 and record["axes"] == dict(result.cell.axes)
        assert result.train_seconds > 0 and result.wall_seconds > 0
        assert set(result.metrics["pooled"]) == {"acc", "uf1", "uar"}
    stamp = (out / "cells" / "focal_s0" / "metrics.json").stat().st_mtime_ns

    with pytest.raises(ConfigError, match="--resume"):
        run_grid(cells, out, base_overrides=base, progress=False)
    again = run_grid(cells, out, base_overrides=base, resume=True, progress=False)
    assert all(r.resumed for r in again)
    assert [r.metrics for r in again] == [r.metrics for r in results]
    assert (out / "cells" / "focal_s0" / "metrics.json").stat().st_mtime_ns == stamp  # not recomputed
    with pytest.raises(ConfigError, match="different config"):
        run_grid(cells, out, base_overrides=[*base, "train.lr=0.01"], resume=True, progress=False)
    with pytest.raises(ConfigError, match="duplicate"):
        run_grid([cells[0], cells[0]], tmp_path / "other", base_overrides=base, progress=False)


def study_main(name, argv):
    """``microexp study NAME ...`` with the repository's recipes, as ``recipes/NAME.py`` runs it."""
    return main(["study", name, "--recipes-dir", str(RECIPES), *argv])


def test_study_reports_user_errors_in_one_line(tmp_path, capsys):
    code = study_main("dfme_sampling", ["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0] and err[0].startswith("microexp study: error: ")
    assert study_main("dfme_imbalance", ["--seeds", "0", "--data", str(FLOW), "--out", str(tmp_path / "o")]) == 2


# ----------------------------------------------------------------------------------------------------
# every study with --quick on tiny data


def _run_script(name, tiny_data, tmp_path, *extra):
    args = ["--quick", "--data", str(tiny_data), "--out", str(tmp_path / name), "--no-progress", "--device", "cpu"]
    for item in _tiny_overrides(tiny_data, tmp_path / "cache")[1:]:
        if not item.startswith("data.num_frames"):
            args += ["--set", item]
    return study_main(name, [*args, *extra])


@pytest.mark.slow
def test_models_recipe_quick(tiny_data, tmp_path, capsys):
    assert _run_script("dfme_models", tiny_data, tmp_path) == 0
    out = tmp_path / "dfme_models"
    table = pd.read_csv(out / "models.csv")
    assert len(table) == len(dfme.FAMILIES)
    assert set(table["model"]) == {f.model for f in dfme.FAMILIES}
    assert (table["num_params_mean"] > 0).all() and (table["train_seconds_mean"] > 0).all()
    markdown = (out / "models.md").read_text()
    assert "pooled UF1" in markdown and "fold-mean UAR ± std" in markdown and "`timesformer_tiny`" in markdown
    assert (out / "models.png").stat().st_size > 0
    record = json.loads((out / "study.json").read_text())
    assert record["quick"] and record["cells_computed"] == len(dfme.FAMILIES) and "--quick" in record["command"]
    printed = capsys.readouterr().out
    assert "pooled UF1" in printed and "this was a smoke test (--quick" in printed
    assert (out / "summary.md").read_text().startswith("# DFME model families under one protocol (smoke test)")

    # --resume keeps every finished cell
    assert _run_script("dfme_models", tiny_data, tmp_path, "--resume") == 0
    record = json.loads((out / "study.json").read_text())
    assert record["cells_computed"] == 0 and record["cells_resumed"] == len(dfme.FAMILIES)
    assert "kept from an earlier run" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_sampling_recipe_quick(tiny_data, tmp_path):
    assert _run_script("dfme_sampling", tiny_data, tmp_path) == 0
    out = tmp_path / "dfme_sampling"
    table = pd.read_csv(out / "sampling.csv")
    assert set(table["strategy"]) == set(STRATEGIES) and set(table["frames"]) == {8}
    assert set(table[table["fps_normalised"] == "yes"]["strategy"]) == set(dfme.FPS_SCALED)
    configs = {p.parent.name: p.read_text() for p in (out / "cells").glob("*/config.yaml")}
    assert "reference_fps: 200" in configs["dense_8f_fps200_s0"] and "sampling: dense" in configs["dense_8f_fps200_s0"]
    assert (out / "sampling.png").stat().st_size > 0


@pytest.mark.slow
def test_imbalance_recipe_quick(tiny_data, tmp_path):
    # quick runs one seed (the spread over seeds is checked in test_aggregate_over_seeds_...)
    # two epochs: the staged cells retrain the classifier alone in the last one
    assert _run_script("dfme_imbalance", tiny_data, tmp_path, "--set", "train.epochs=2") == 0
    out = tmp_path / "dfme_imbalance"
    table = pd.read_csv(out / "imbalance.csv")
    assert len(table) == len(SAMPLERS) + len(LOSSES) - 1 + len(dfme.SCHEDULES) and (table["seeds"] == 1).all()
    assert set(zip(table["sampler"], table["loss"])) >= {("none", "ce"), ("progressive", "ce"), ("none", "ldam")}
    assert [c for c in table.columns if c.startswith("recall_") and c.endswith("_mean")]
    markdown = (out / "imbalance.md").read_text()
    assert "happiness" in markdown and "Test clips per class" in markdown
    assert (out / "imbalance.png").stat().st_size > 0 and (out / "imbalance_recall.png").stat().st_size > 0
