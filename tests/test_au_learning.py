"""AU multi-task learning: the fold's AU vocabulary and graph, the AU term, per-AU F1, outputs and predict."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from microexp.checkpoint import load_checkpoint, model_from_checkpoint
from microexp.cli import main
from microexp.config import load_config
from microexp.data.aus import au_cooccurrence, au_positive_weights, build_au_vocabulary
from microexp.engine.objectives import Objective
from microexp.errors import ConfigError
from microexp.metrics import au_f1_scores, au_summary
from microexp.models import create_model
from microexp.models.multitask import graph_adjacency
from microexp.synth import generate_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _train(annotations, out, **extra):
    values = {"data.annotations": str(annotations), "cv.folds": 2, "train.epochs": 1, "data.size": 32,
              "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny", "data.num_workers": 0,
              "train.batch_size": 4, "seed": 5, "data.aus": "true", "data.au_min_count": 2, **extra}
    args = ["train", "--out", str(out), "--no-progress"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return main(args)


# --------------------------------------------------------------------------- vocabulary and graph maths


def test_vocabulary_keeps_aus_seen_min_count_times_and_ignores_laterality():
    vocabulary = build_au_vocabulary(["1+2", "R12", "L12+4", "", None, "4+AD31", "12"], min_count=2)
    assert vocabulary.codes == ("4", "12") and vocabulary.counts == (2, 3) and vocabulary.clips == 7
    assert dict(vocabulary.dropped) == {"1": 1, "2": 1}  # AD31 is an action descriptor, not an AU
    assert vocabulary.names == ["AU4", "AU12"]
    np.testing.assert_array_equal(vocabulary.encode(["12+4", "1", "R12", ""]), [[1, 1], [0, 0], [0, 1], [0, 0]])
    with pytest.raises(ValueError, match="min_count=0"):
        build_au_vocabulary(["1"], min_count=0)


def test_cooccurrence_is_the_conditional_probability_of_the_training_targets():
    targets = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.float32)
    conditional = au_cooccurrence(targets)
    # P(AU1 | AU0) = 2/3, P(AU0 | AU1) = 2/2, P(AU2 | AU0) = 1/3, P(AU0 | AU2) = 1
    np.testing.assert_allclose(conditional, [[1, 2 / 3, 1 / 3], [1, 1, 0.5], [1, 1, 1]], rtol=1e-6)
    np.testing.assert_allclose(au_positive_weights(targets), [1 / 3, 1.0, 3.0], rtol=1e-6)


def test_graph_adjacency_binarises_reweights_and_normalises():
    conditional = torch.tensor([[1.0, 0.9, 0.1], [0.5, 1.0, 0.0], [0.2, 0.0, 1.0]])
    adjacency = graph_adjacency(conditional, threshold=0.4, reweight=0.2)
    # edges: 0->1 (0.9), 1->0 (0.5); node 2 has none and keeps itself
    torch.testing.assert_close(adjacency, torch.tensor([[0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]]))
    several = graph_adjacency(torch.tensor([[1.0, 0.9, 0.5], [0.1, 1.0, 0.0], [0.6, 0.7, 1.0]]))
    torch.testing.assert_close(several[0], torch.tensor([0.8, 0.1, 0.1]))  # the neighbours share the re-weight
    torch.testing.assert_close(several.sum(dim=1), torch.ones(3))


# --------------------------------------------------------------------------- the model and the AU term


def test_au_model_rebuilds_from_its_checkpoint_with_its_graph(tmp_path):
    from microexp.checkpoint import save_checkpoint

    model = create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=32, aus=["1", "4", "12"],
                         au_head="graph")
    model.set_au_cooccurrence(torch.tensor([[1.0, 0.8, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    save_checkpoint(tmp_path / "m.pt", model=model, class_names=["a", "b", "c"])
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt")).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    out, again = model.eval()(x, outputs=True), rebuilt(x, outputs=True)
    assert rebuilt.au_codes == ("1", "4", "12") and out.au_logits.shape == (2, 3) and out.logits.shape == (2, 3)
    torch.testing.assert_close(again.au_logits, out.au_logits)
    torch.testing.assert_close(rebuilt(x), out.logits)  # plain forward: the emotion logits, for predict/export
    assert not torch.equal(rebuilt.au_head.adjacency, torch.eye(3))


def test_objective_is_emotion_loss_plus_weighted_positive_weighted_bce():
    torch.manual_seed(0)
    model = create_model("tsm_tiny", num_classes=3, num_frames=4, input_size=32, aus=["1", "4"]).eval()
    vocabulary = build_au_vocabulary(["1", "1+4", "4", ""], min_count=1)
    pos_weight = torch.tensor([2.0, 0.5])
    objective = Objective(torch.nn.CrossEntropyLoss(), au_vocabulary=vocabulary, au_pos_weight=pos_weight,
                          au_weight=0.3)
    videos, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 1])
    batch = {"aus": ["1+4", "", "R4", "1"]}
    step = objective(model, videos, batch, labels)
    out = model(videos, outputs=True)
    targets = torch.tensor([[1.0, 1.0], [0, 0], [0, 1], [1, 0]])
    expected = F.cross_entropy(out.logits, labels) + 0.3 * F.binary_cross_entropy_with_logits(
        out.au_logits, targets, pos_weight=pos_weight)
    torch.testing.assert_close(step.loss, expected)
    assert step.samples == 4 and int(step.correct) == int((out.logits.argmax(1) == labels).sum())


def test_per_au_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    truth, predicted = rng.random((40, 5)) < 0.3, rng.random((40, 5)) < 0.4
    truth[:, 4] = False  # an AU that never occurs
    scores = au_f1_scores(truth, predicted)
    reference = f1_score(truth, predicted, average=None, zero_division=0)
    np.testing.assert_allclose(scores["f1"][:4], reference[:4])
    assert scores["f1"][4] == 0.0  # predicted but never true: false alarms count
    np.testing.assert_array_equal(scores["support"], truth.sum(axis=0))


def test_au_summary_pools_the_union_and_averages_each_fold_over_its_own_aus():
    truth = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=bool)
    probabilities = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, np.nan], [0.1, np.nan]])  # fold 1 did not learn AU2
    summary = au_summary(truth, probabilities, np.array([0, 0, 1, 1]), au_names=["AU1", "AU2"])
    # pooled: AU1 TP 2 FP 0 FN 0 -> 1; AU2 TP 1 FN 1 (fold 1 never detects it) -> 2/3
    assert summary["pooled"]["per_au"]["AU1"]["f1"] == 1.0
    assert summary["pooled"]["per_au"]["AU2"]["f1"] == pytest.approx(2 / 3)
    assert summary["pooled"]["mean_f1"] == pytest.approx(5 / 6)
    # fold 0: AU1 1.0, AU2 1.0; fold 1 learnt AU1 only, absent from its test clips: undefined
    assert [row["mean_f1"] for row in summary["per_fold"]] == [1.0, None]
    assert summary["fold_mean"]["mean_f1"] == 1.0 and summary["per_fold"][1]["aus_learnt"] == 1


# --------------------------------------------------------------------------- the engine


def test_vocabulary_graph_and_weights_come_from_training_subjects_only(tiny_data, tmp_path):
    """Changing the AUs of fold 0's test clips leaves fold 0's model unchanged, and changes fold 1's (which
    trains on them)."""
    assert _train(tiny_data, tmp_path / "a", **{"model.au_head": "graph"}) == 0
    folds = json.loads((tmp_path / "a" / "folds.json").read_text())
    table = pd.read_csv(tiny_data)
    held_out = table["subject"].isin(folds[0]["test_subjects"])
    table.loc[held_out, "aus"] = "25+26+43"  # AUs no training clip of fold 0 has
    changed = tiny_data.parent / "changed.csv"
    table.to_csv(changed, index=False)
    assert _train(changed, tmp_path / "b", **{"model.au_head": "graph"}) == 0

    def fold_model(run, fold):
        return load_checkpoint(tmp_path / run / f"fold_{fold:02d}" / "model.pt")

    a0, b0 = fold_model("a", 0), fold_model("b", 0)
    assert a0["model_kwargs"]["aus"] == b0["model_kwargs"]["aus"]
    assert "25" not in a0["model_kwargs"]["aus"]
    assert a0["state_dict"].keys() == b0["state_dict"].keys()
    for key in a0["state_dict"]:  # the adjacency buffer and every weight
        torch.testing.assert_close(a0["state_dict"][key], b0["state_dict"][key], rtol=0, atol=0, msg=key)
    a1, b1 = fold_model("a", 1), fold_model("b", 1)
    assert "25" in b1["model_kwargs"]["aus"] and "25" not in a1["model_kwargs"]["aus"]

    predictions = pd.read_csv(tmp_path / "b" / "predictions.csv", dtype={"aus": str})
    assert {"aus", "aus_pred", "au_prob_25"} <= set(predictions.columns)
    assert predictions.loc[predictions["fold"] == 0, "au_prob_25"].isna().all()  # fold 0 never learnt AU25
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert "AU25" in metrics["aus"]["aus"] and metrics["aus"]["pooled"]["mean_f1"] is not None
    assert metrics["aus"]["per_fold"][0]["aus_learnt"] == len(b0["model_kwargs"]["aus"])


def test_au_run_reports_per_au_f1_and_predict_reports_detected_aus(tiny_data, tmp_path, capsys):
    assert _train(tiny_data, tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "mean AU F1 pooled" in out and "per-AU F1" in out
    checkpoint = tmp_path / "run" / "fold_00" / "model.pt"
    codes = load_checkpoint(checkpoint)["model_kwargs"]["aus"]
    clip = pd.read_csv(tiny_data).iloc[0]
    clip_path = tiny_data.parent / clip["path"]
    assert main(["predict", "--checkpoint", str(checkpoint), str(clip_path), "--no-face-crop", "--json",
                 "--onset", str(clip["onset"]), "--apex", str(clip["apex"]), "--offset", str(clip["offset"]),
                 "--first-frame", str(clip["first_frame"]), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert list(result["aus"]["probabilities"]) == [f"AU{c}" for c in codes]
    assert result["aus"]["detected"] == [k for k, p in result["aus"]["probabilities"].items() if p >= 0.5]


def test_no_au_reaching_min_count_is_a_one_line_error(tiny_data, tmp_path, capsys):
    assert _train(tiny_data, tmp_path / "run", **{"data.au_min_count": 1000}) != 0
    err = capsys.readouterr().err
    assert "data.au_min_count=1000" in err and "Traceback" not in err


@pytest.mark.parametrize("override, message", [
    ("model.au_head=gcn", "model.au_head='gcn': expected one of linear, graph"),
    ("data.au_min_count=0", "data.au_min_count=0: expected an integer >= 1"),
    ("loss.au_weight=-1", "loss.au_weight=-1.0: expected a number >= 0"),
    ("model.kwargs.aus=[1]", "set by data.aus"),
])
def test_bad_au_settings_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_au_detection_alone_trains_no_emotion_head_and_reports_aus_only(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_data, run, **{"model.emotion_head": "false"}) == 0
    out = capsys.readouterr().out
    assert "AU detection alone" in out and "UF1" not in out.split("AU detection alone")[1].split("\n")[0]
    predictions = pd.read_csv(run / "predictions.csv")
    assert "pred" not in predictions.columns and not [c for c in predictions.columns if c.startswith("prob_")]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "au" and "pooled" not in metrics and metrics["aus"]["pooled"]["mean_f1"] is not None
    checkpoint = load_checkpoint(run / "fold_00" / "model.pt")
    assert checkpoint["model_kwargs"]["num_classes"] == 0
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == metrics
    capsys.readouterr()
    clip = pd.read_csv(tiny_data).iloc[0]
    assert main(["predict", "--checkpoint", str(run / "fold_00" / "model.pt"), str(tiny_data.parent / clip["path"]),
                 "--no-face-crop", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["label"] is None and result["probabilities"] == {} and result["aus"]["probabilities"]
    assert main(["export", "--checkpoint", str(run / "fold_00" / "model.pt"), "--format", "torchscript",
                 "--out", str(tmp_path / "m.ts")]) == 2
    assert "detects AUs alone" in capsys.readouterr().err and not (tmp_path / "m.ts").exists()


@pytest.mark.parametrize("overrides, message", [
    (["model.emotion_head=false"], "needs data.aus=true"),
    (["model.emotion_head=false", "data.aus=true", "cv.val_fraction=0.3", "train.model_selection=val"],
     "train.model_selection='val' works on the emotion classifier"),
    (["model.emotion_head=false", "data.aus=true", "noisy_labels.relabel=true"],
     "noisy_labels.relabel=True works on the emotion classifier"),
])
def test_au_detection_alone_refuses_what_needs_an_emotion_head(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
