"""The MEGC composite's scripts: the STSTNet authors' weights through microexp, and the synthetic composite."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from microexp.models import create_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _authors_forward(state, image_bgr):
    """STSTNet as the authors' code computes it, on cv2.imread's raw values (eval mode)."""
    x = torch.from_numpy(image_bgr.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    streams = []
    for k in (1, 2, 3):
        y = torch.relu(torch.nn.functional.conv2d(x, state[f"conv{k}.weight"], state[f"conv{k}.bias"], padding=2))
        y = torch.nn.functional.batch_norm(y, state[f"bn{k}.running_mean"], state[f"bn{k}.running_var"],
                                           state[f"bn{k}.weight"], state[f"bn{k}.bias"], training=False)
        streams.append(torch.nn.functional.max_pool2d(y, 3, stride=3, padding=1))
    y = torch.nn.functional.avg_pool2d(torch.cat(streams, 1), 2, stride=2).flatten(1)
    return torch.nn.functional.linear(y, state["fc.weight"], state["fc.bias"])


def test_authors_weights_predict_each_held_out_subject_as_their_code_does(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clips = [("casme2", "sub01", "EP02_01f", 0), ("casme2", "sub01", "EP03_02", 1), ("samm", "006", "006_1_2", 2),
             ("smic", "s1", "s1_ne_01", 0)]
    (tmp_path / "flows").mkdir()
    images = {}
    for _, _, name, _ in clips:
        images[name] = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "flows" / f"{name}.png"), images[name])
    (tmp_path / "combined_3class_gt.csv").write_text("".join(f"{d},{s},{f},{c}\n" for d, s, f, c in clips))
    states = {}
    (tmp_path / "weights").mkdir()
    for subject in ("sub01", "006", "s1"):
        torch.manual_seed(len(states))
        model = create_model("ststnet", num_classes=3, num_frames=1, input_size=28)
        for k in (1, 2, 3):  # trained-looking batch-norm statistics
            getattr(model, f"bn{k}").running_mean.uniform_(0, 50)
            getattr(model, f"bn{k}").running_var.uniform_(100, 900)
        states[subject] = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(states[subject], tmp_path / "weights" / f"{subject}.pth")

    script = _script("ststnet_authors_weights")
    out = tmp_path / "predictions.csv"
    assert script.main([str(tmp_path / "combined_3class_gt.csv"), "--weights", str(tmp_path / "weights"),
                        "--out", str(out)]) == 0
    predictions = pd.read_csv(out)
    for (dataset, subject, name, label), row in zip(clips, predictions.itertuples()):
        expected = int(_authors_forward(states[subject], cv2.imread(str(tmp_path / "flows" / f"{name}.png"))).argmax())
        assert (row.dataset, row.label, row.pred) == (dataset, label, expected)
    printed = capsys.readouterr().out
    assert "pooled: ACC" in printed and "casme2" in printed and "smic" in printed

    (tmp_path / "weights" / "s1.pth").unlink()
    assert script.main([str(tmp_path / "combined_3class_gt.csv"), "--weights", str(tmp_path / "weights")]) == 2
    assert "no weights for held-out subject 's1'" in capsys.readouterr().err


def test_synthetic_composite_has_the_three_datasets_and_megc_classes():
    script = _script("megc_composite_synth")
    table = pd.DataFrame({"subject": np.repeat(np.arange(1, 69), 2),
                          "emotion": ["happiness", "anger", "surprise", "fear"] * 34})
    composite = script.composite_table(table, 68)
    assert composite.groupby("dataset")["subject"].nunique().to_dict() == {"casme2": 24, "samm": 28, "smic": 16}
    assert set(composite["emotion"]) == {"positive", "negative", "surprise"}
    assert composite.groupby("subject")["dataset"].nunique().max() == 1  # a subject belongs to one dataset
