"""The AU and label-noise studies: their cells, the scores against true labels, and a quick AU study."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microexp.cli import main
from microexp.errors import ConfigError
from microexp.metrics import compute_metrics
from microexp.studies import StudyOptions, dfme_tasks
from microexp.synth import generate_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_au_study_runs_every_variant_over_three_seeds(tmp_path):
    study = dfme_tasks.au_study(StudyOptions(out=tmp_path), RECIPES)
    assert len(study.cells) == 3 * 3
    by_variant = {c.axes["variant"]: c.overrides for c in study.cells if c.seed == 0}
    assert by_variant == dfme_tasks.AU_VARIANTS and {c.seed for c in study.cells} == {0, 1, 2}


def test_noise_study_crosses_rates_and_methods_on_its_own_datasets(tmp_path, monkeypatch):
    made = []

    def fake_dataset(out, rate, *, quick, progress=None):
        made.append(rate)
        return out / "data" / f"noise_{round(rate * 100):02d}" / "annotations.csv"

    monkeypatch.setattr(dfme_tasks, "noise_dataset", fake_dataset)
    study = dfme_tasks.noise_study(StudyOptions(out=tmp_path), RECIPES)
    assert made == list(dfme_tasks.NOISE_RATES)
    assert len(study.cells) == len(dfme_tasks.NOISE_RATES) * len(dfme_tasks.NOISE_METHODS)
    cell = next(c for c in study.cells if c.axes == {"noise": 0.2, "method": "re-labelling",
                                                      "data": str(tmp_path / "data" / "noise_20")})
    assert cell.overrides == (f"data.annotations={tmp_path / 'data' / 'noise_20' / 'annotations.csv'}",
                              "noisy_labels.relabel=true")
    with pytest.raises(ConfigError, match="generates its own synthetic datasets"):
        dfme_tasks.noise_study(StudyOptions(out=tmp_path, data=tmp_path / "mine.csv"), RECIPES)


def test_scores_against_truth_use_ground_truth_and_relabel_precision(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    (run / "fold_00").mkdir(parents=True)
    data.mkdir()
    classes = ["anger", "fear", "sadness"]
    (run / "metrics.json").write_text(json.dumps({"classes": classes}))
    clips = [f"c{i}" for i in range(6)]
    true = ["anger", "fear", "sadness", "anger", "fear", "sadness"]
    pd.DataFrame({"clip": clips, "emotion": true}).to_csv(data / "ground_truth.csv", index=False)
    predicted = [0, 1, 1, 0, 2, 2]
    annotated = [0, 0, 2, 0, 1, 2]  # two labels flipped: what metrics.json scored
    pd.DataFrame({"clip": clips, "label": annotated, "pred": predicted}).to_csv(run / "predictions.csv", index=False)
    pd.DataFrame({"clip": ["c1", "c4"], "subject": [1, 1], "label": ["anger", "anger"],
                  "new_label": ["fear", "sadness"], "epoch": [3, 3]}).to_csv(run / "fold_00" / "relabelled.csv",
                                                                              index=False)
    scores = dfme_tasks.scores_against_truth(run, data)
    expected = compute_metrics([classes.index(t) for t in true], predicted, num_classes=3)
    assert scores["true_uf1"] == pytest.approx(expected.uf1) and scores["true_uar"] == pytest.approx(expected.uar)
    assert scores["true_uf1"] != pytest.approx(compute_metrics(annotated, predicted, num_classes=3).uf1)
    assert scores["relabelled"] == 2 and scores["relabel_precision"] == 0.5  # c1 -> fear right, c4 -> sadness wrong


def test_au_study_quick_reports_mean_au_f1_for_the_au_variants(tmp_path):
    data = tmp_path / "synth"
    generate_dataset(data, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    out = tmp_path / "study"
    args = ["study", "dfme_au", "--quick", "--data", str(data / "annotations.csv"), "--out", str(out),
            "--recipes-dir", str(RECIPES), "--no-progress", "--device", "cpu",
            "--set", "data.au_min_count=2", "--set", "data.num_workers=0", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(args) == 0
    table = pd.read_csv(out / "au.csv")
    assert list(table["variant"]) == list(dfme_tasks.AU_VARIANTS)
    au = table.set_index("variant")["pooled_au_f1_mean"]
    assert np.isnan(au["emotion only"]) and au[["+ AU head", "+ AU graph"]].between(0, 1).all()
    assert "mean AU F1 (pooled)" in (out / "au.md").read_text() and (out / "au.png").stat().st_size > 0


def test_cells_selects_a_subset_by_name_and_refuses_a_pattern_matching_none(tmp_path):
    from microexp.studies import dfme
    from microexp.studies.study import select_cells

    study = dfme.imbalance_study(StudyOptions(out=tmp_path), RECIPES)
    chosen = select_cells(study, ["none+ce_*", "*crt*"])
    assert {c.name for c in chosen.cells} == {"none+ce_s0", "none+ce_s1", "none+ce_s2", "none_crt+ce_s0",
                                               "none_crt+ce_s1", "none_crt+ce_s2", "progressive_crt+ce_s0",
                                               "progressive_crt+ce_s1", "progressive_crt+ce_s2"}
    assert select_cells(study, []) is study
    with pytest.raises(ConfigError, match="--cells 'x\\*': no cell of dfme_imbalance matches"):
        select_cells(study, ["x*"])
