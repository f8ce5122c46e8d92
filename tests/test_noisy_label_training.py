"""The uncertain-label methods in training: the objective against reference computations, re-labelling
touches training clips only, and the options are checked by name."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from microexp.cli import main
from microexp.engine.experiment import RELABEL_LOG, read_relabelled
from microexp.config import NoisyLabelsConfig, load_config
from microexp.engine.objectives import Objective, flip_model_input
from microexp.errors import ConfigError
from microexp.label_noise import class_activation_maps, random_erase_clips
from microexp.models import create_model
from microexp.synth import generate_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=28, subjects=6, size=32, fmt="frames", seed=2, workers=1, progress=False)
    return out / "annotations.csv"


def _model(**tasks):
    torch.manual_seed(0)
    return create_model("r3d_tiny", num_classes=3, num_frames=4, input_size=32, aus=[], **tasks).eval()


def test_eac_objective_is_ce_on_the_erased_clips_plus_the_flip_consistency_of_their_cams():
    model = _model()
    videos, labels = torch.randn(3, 3, 4, 32, 32), torch.tensor([0, 2, 1])
    flip = flip_model_input(modality="rgb", flow_channels=0)
    objective = Objective(F.cross_entropy, methods=NoisyLabelsConfig(eac_weight=5.0), flip=flip)
    objective.reseed(7)
    step = objective(model, videos, {"clip": ["a", "b", "c"]}, labels)

    erased = random_erase_clips(videos, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(erased, videos)
    maps = model.forward_features(torch.cat([erased, erased.flip(-1)]))
    logits = model.forward_head(maps[:3])
    weight = model.backbone.head.fc.weight
    cams, cams_flipped = class_activation_maps(maps[:3], weight), class_activation_maps(maps[3:], weight)
    expected = F.cross_entropy(logits, labels) + 5.0 * ((cams - cams_flipped.flip(-1)) ** 2).mean()
    torch.testing.assert_close(step.loss, expected)


def test_the_flow_flip_negates_horizontal_displacement():
    flip = flip_model_input(modality="flow", flow_channels=2)
    flow = torch.randn(1, 2, 3, 4, 5)
    flipped = flip(flow)
    torch.testing.assert_close(flipped[:, 0], -flow[:, 0].flip(-1))
    torch.testing.assert_close(flipped[:, 1], flow[:, 1].flip(-1))
    torch.testing.assert_close(flip(flipped), flow)  # an involution
    with pytest.raises(ValueError, match="apex_flow"):
        flip_model_input(modality="apex_flow", flow_channels=3)


def test_confidence_objective_weights_the_logits_and_adds_the_rank_regularisation():
    model = _model(confidence_head=True)
    videos, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 2, 1, 1])
    objective = Objective(F.cross_entropy, methods=NoisyLabelsConfig(confidence=True, confidence_beta=0.5,
                                                                     confidence_margin=0.9))
    step = objective(model, videos, {"clip": list("abcd")}, labels)
    out = model(videos, outputs=True)
    alpha = out.confidence
    ranked = alpha.sort(descending=True).values
    expected = F.cross_entropy(alpha[:, None] * out.logits, labels) + F.relu(0.9 - (ranked[:2].mean()
                                                                                    - ranked[2:].mean()))
    torch.testing.assert_close(step.loss, expected)


def test_mixing_nothing_is_the_plain_loss_and_mixing_changes_it():
    model = _model()
    videos, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 2, 1, 1])
    plain = F.cross_entropy(model(videos), labels)
    none = Objective(F.cross_entropy, methods=NoisyLabelsConfig(mix_fraction=0.2))  # floor(0.2 * 4) = 0 mixed
    torch.testing.assert_close(none(model, videos, {"clip": list("abcd")}, labels).loss, plain)
    mixing = Objective(F.cross_entropy, methods=NoisyLabelsConfig(mix_fraction=1.0, mix_alpha=1.0))
    mixing.reseed(3)
    assert not torch.allclose(mixing(model, videos, {"clip": list("abcd")}, labels).loss, plain)


def test_relabelled_clips_train_with_their_new_label():
    model = _model()
    videos, labels = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 1])
    objective = Objective(F.cross_entropy, relabelled={"b": 2})
    step = objective(model, videos, {"clip": ["a", "b"]}, labels)
    torch.testing.assert_close(step.loss, F.cross_entropy(model(videos), torch.tensor([0, 2])))
    assert labels.tolist() == [0, 1]  # the batch itself is left alone


def test_relabelling_changes_training_labels_only(tiny_data, tmp_path):
    out = tmp_path / "run"
    values = {"data.annotations": str(tiny_data), "cv.folds": 2, "train.epochs": 3, "data.size": 32,
              "data.num_frames": 4, "data.sampling": "uniform", "model.name": "tsm_tiny", "data.num_workers": 0,
              "train.batch_size": 4, "seed": 5, "noisy_labels.relabel": "true", "noisy_labels.relabel_warmup": 1,
              "noisy_labels.relabel_confidence": 0.01, "noisy_labels.relabel_distance_ratio": 1.0}
    args = ["train", "--out", str(out), "--no-progress"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    folds = json.loads((out / "folds.json").read_text())
    table = pd.read_csv(tiny_data)
    relabelled = 0
    for fold in folds:
        log = out / f"fold_{fold['fold']:02d}" / RELABEL_LOG
        if not log.exists():
            continue
        rows = pd.read_csv(log, dtype={"clip": str})
        relabelled += len(rows)
        assert set(rows["subject"]) <= set(fold["train_subjects"])  # never a test (or validation) subject
        assert (rows["label"] != rows["new_label"]).all() and not rows["clip"].duplicated().any()
        history = pd.read_csv(out / f"fold_{fold['fold']:02d}" / "log.csv")
        assert history["relabelled"].iloc[-1] == len(rows)
    assert relabelled > 0  # the settings above make the rule fire: otherwise this test proves nothing
    predictions = pd.read_csv(out / "predictions.csv")
    classes = json.loads((out / "metrics.json").read_text())["classes"]
    annotated = dict(zip(table["clip"], table["emotion"]))
    assert [classes[i] for i in predictions["label"]] == [annotated[c] for c in predictions["clip"]]


def test_a_resumed_fold_keeps_the_relabels_of_its_finished_epochs(tmp_path):
    path = tmp_path / RELABEL_LOG
    pd.DataFrame([{"clip": "a", "subject": 1, "label": "anger", "new_label": "fear", "epoch": 2},
                  {"clip": "b", "subject": 1, "label": "fear", "new_label": "anger", "epoch": 4}]).to_csv(path,
                                                                                                  index=False)
    assert [r["clip"] for r in read_relabelled(path, before=4)] == ["a"]
    assert read_relabelled(path, before=0) == [] and read_relabelled(tmp_path / "none.csv", before=9) == []


@pytest.mark.parametrize("overrides, message", [
    (["noisy_labels.eac_weight=5", "model.name=timesformer_tiny"], "has no average-pooled linear classifier"),
    (["noisy_labels.mix_fraction=0.5", "model.name=timesformer_tiny"], "has no average-pooled linear classifier"),
    (["noisy_labels.eac_weight=5", "model.name=x3d_xs"], "has no average-pooled linear classifier"),  # projection
    (["noisy_labels.eac_weight=5", "model.name=videomae_tiny"], "has no average-pooled linear classifier"),
    (["train.classifier_epochs=2", "model.name=ststnet", "data.num_frames=1", "data.modality=apex_flow"],
     "has no separate classifier weights"),
    (["noisy_labels.relabel=true", "train.epochs=4", "noisy_labels.relabel_warmup=4"],
     "noisy_labels.relabel_warmup=4: expected an integer in \\[1, 3\\]"),
    (["noisy_labels.relabel_distance_ratio=0.5"], "expected a number >= 1"),
    (["noisy_labels.confidence_beta=1"], "expected a number in \\(0.0, 1.0\\)"),
    (["noisy_labels.mix_fraction=1.5"], "expected a number in \\[0.0, 1.0\\]"),
])
def test_bad_noisy_label_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_classifier_stage_trains_the_classifier_alone_with_frozen_statistics():
    from microexp.data.samplers import StagedSampler, build_sampler
    from microexp.engine.experiment import retrain_classifier_only
    from microexp.engine.trainer import train_one_epoch

    model = create_model("r3d_tiny", num_classes=3, num_frames=4, input_size=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    F.cross_entropy(model(torch.randn(2, 3, 4, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()  # the first stage leaves AdamW moments behind
    optimizer.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retrain_classifier_only(model, optimizer, fresh=True, name="fold 0")
    assert {k for k, p in model.named_parameters() if p.requires_grad} == {"head.fc.weight", "head.fc.bias"}
    assert not torch.equal(model.head.fc.weight, before["head.fc.weight"])  # re-initialised in place
    assert model.head.fc.weight not in optimizer.state and model.head.fc.bias not in optimizer.state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [{"video": torch.randn(4, 3, 4, 32, 32), "label": torch.tensor([0, 1, 2, 0])} for _ in range(2)]
    train_one_epoch(model, batches, loss_fn=F.cross_entropy, optimizer=optimizer, device=torch.device("cpu"),
                    frozen_normalisation=True, progress=False)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}  # no other weight, no batch-norm statistic moved

    labels = np.array([0] * 9 + [1])
    staged = StagedSampler(build_sampler("progressive", labels, epochs=2), build_sampler("class_balanced", labels),
                           switch_epoch=2)
    staged.set_epoch(1)
    assert staged.active is staged.first
    staged.set_epoch(2)
    assert staged.active is staged.then and len(list(staged)) == 10


def test_the_classifier_stage_restarts_the_schedule_from_the_base_rate():
    from microexp.engine.trainer import build_scheduler

    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, name="cosine", epochs=5, steps_per_epoch=2, warmup_epochs=1,
                                restart_epoch=3)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:6] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.853553, 0.5, 0.146447], abs=1e-5)  # 3 epochs, warm-up
    assert rates[6:] == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-5)  # the stage: cosine from the base


def test_mixing_keeps_the_emotion_losss_class_weights():
    model = _model()
    videos, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 2, 1, 1])
    weight = torch.tensor([1.0, 3.0, 0.5])
    loss = torch.nn.CrossEntropyLoss(weight=weight)
    loss.label_smoothing = 0.0
    objective = Objective(loss, methods=NoisyLabelsConfig(mix_fraction=0.2))  # nothing mixed at B = 4
    torch.testing.assert_close(objective(model, videos, {"clip": list("abcd")}, labels).loss,
                               F.cross_entropy(model(videos), labels, weight=weight))
    with pytest.raises(ConfigError, match="loss.name='focal'; use one of ce, weighted_ce, cb_ce"):
        load_config(None, ["noisy_labels.mix_fraction=0.3", "loss.name=focal"])
