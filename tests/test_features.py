"""extract-features: shape and index of the pooled features, the eval pipeline, resume, refusals, failing clips."""

import numpy as np
import pandas as pd
import pytest
import torch

from microexp import cli
from microexp.checkpoint import save_checkpoint
from microexp.data.annotations import load_clip_table
from microexp.data.class_maps import get_class_map
from microexp.inference import ClipInput, ClipPredictor
from microexp.inference.features import (
    INDEX_COLUMNS, FeatureError, checkpoint_labels, extract_features, load_features,
)
from microexp.models import create_model
from microexp.synth import generate_dataset

CONFIG = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
          "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
CLASSES = list(get_class_map("dfme7").classes)


def _checkpoint(path, seed=0, name="r3d_tiny"):
    torch.manual_seed(seed)
    model = create_model(name, num_classes=len(CLASSES), num_frames=4, input_size=32)
    return save_checkpoint(path, model=model, class_names=CLASSES, data=CONFIG), model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    generate_dataset(root / "data", preset="easy", clips=12, subjects=4, size=32, fmt="frames", seed=5, workers=1,
                     progress=False)
    ckpt, model = _checkpoint(root / "model.pt")
    return root / "data" / "annotations.csv", ckpt, model


def test_features_are_the_pooled_vector_of_every_clip_and_the_index_matches_the_table(setup, tmp_path):
    table_path, ckpt, model = setup
    result = extract_features(ckpt, table_path, tmp_path / "f", shard_size=5, batch_size=3, progress=False)
    table = load_clip_table(table_path).resolve()
    assert result.complete and result.failures == () and result.shards_total == 3
    fs = load_features(tmp_path / "f")
    assert fs.features.shape == (len(table), model.num_features) == (12, 128)
    assert fs.features.dtype == np.float32
    assert list(fs.index.columns) == list(INDEX_COLUMNS)
    assert fs.index["clip"].tolist() == table["clip"].astype(str).tolist()
    assert fs.index["subject"].tolist() == table["subject"].tolist()
    assert fs.index["dataset"].tolist() == table["dataset"].tolist()
    assert fs.index["emotion"].tolist() == table["emotion"].tolist()
    assert fs.index["label"].tolist() == [CLASSES.index(e) for e in table["emotion"]]
    assert fs.meta["num_features"] == 128 and fs.meta["num_clips"] == 12 and fs.meta["model_name"] == "r3d_tiny"
    assert fs.meta["class_names"] == CLASSES and fs.meta["pipeline"]["sampling"]["num_frames"] == 4
    # row i is forward_head(forward_features(x), pre_logits=True) of the predictor's (= the Dataset's eval) input
    predictor = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    model.eval()
    for i in (0, 7, 11):
        row = table.iloc[i]
        x = predictor.preprocess(ClipInput(row["path"], int(row["onset"]), int(row["apex"]), int(row["offset"]),
                                           int(row["first_frame"]), float(row["fps"]), row["clip"]))
        with torch.no_grad():
            expected = model.forward_head(model.forward_features(x[None]), pre_logits=True)[0].numpy()
        np.testing.assert_allclose(fs.features[i], expected, rtol=1e-5, atol=1e-6)
    # the folder is what probe reads
    assert cli.main(["probe", str(tmp_path / "f"), "--protocol", "kfold", "--folds", "2", "--out",
                     str(tmp_path / "probe")]) == 0
    assert len(pd.read_csv(tmp_path / "probe" / "predictions.csv")) == 12


def test_an_interrupted_run_resumes_to_identical_features_without_recomputing_done_shards(setup, tmp_path):
    table_path, ckpt, _ = setup
    whole = extract_features(ckpt, table_path, tmp_path / "whole", shard_size=5, progress=False)
    out = tmp_path / "resumed"
    first = extract_features(ckpt, table_path, out, shard_size=5, progress=False, max_shards=1)
    assert not first.complete and first.shards_done == 1 and first.shards_computed == 1
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.npz"]
    assert not (out / "features.npy").exists()
    with pytest.raises(FeatureError, match="unfinished extraction"):
        load_features(out)
    stamp = (out / "shards" / "00000.npz").stat().st_mtime_ns
    second = extract_features(ckpt, table_path, out, shard_size=5, progress=False)
    assert second.complete and second.shards_computed == 2 and whole.shards_computed == 3
    assert (out / "shards" / "00000.npz").stat().st_mtime_ns == stamp  # not recomputed
    assert np.array_equal(load_features(out).features, load_features(tmp_path / "whole").features)
    pd.testing.assert_frame_equal(load_features(out).index, load_features(tmp_path / "whole").index)
    # a shard lost after the end (e.g. deleted): only it is recomputed
    (out / "shards" / "00002.npz").unlink()
    third = extract_features(ckpt, table_path, out, shard_size=5, progress=False)
    assert third.shards_computed == 1
    assert np.array_equal(load_features(out).features, load_features(tmp_path / "whole").features)


def test_a_resume_with_another_checkpoint_table_or_shard_size_is_refused(setup, tmp_path, capsys):
    table_path, ckpt, _ = setup
    out = tmp_path / "f"
    extract_features(ckpt, table_path, out, shard_size=5, progress=False, max_shards=1)
    other, _ = _checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(FeatureError, match="with a checkpoint"):
        extract_features(other, table_path, out, shard_size=5, progress=False)
    edited = pd.read_csv(table_path)
    edited.loc[3, "apex"] = edited.loc[3, "apex"] + 1
    (table_path.parent / "edited.csv").write_text(edited.to_csv(index=False))
    with pytest.raises(FeatureError, match="with a clip table"):
        extract_features(ckpt, table_path.parent / "edited.csv", out, shard_size=5, progress=False)
    with pytest.raises(FeatureError, match="with settings"):
        extract_features(ckpt, table_path, out, shard_size=4, progress=False)
    code = cli.main(["extract-features", "--checkpoint", str(other), str(table_path), "--out", str(out),
                     "--shard-size", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "use a new --out folder" in err
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.npz"]  # nothing was overwritten


def test_a_clip_that_cannot_be_read_is_listed_and_the_others_extracted(setup, tmp_path, capsys):
    table_path, ckpt, _ = setup
    table = pd.read_csv(table_path)
    table.loc[2, "path"] = "clips/missing/nothing_here"
    bad = table_path.parent / "one_missing.csv"
    bad.write_text(table.to_csv(index=False))
    code = cli.main(["extract-features", "--checkpoint", str(ckpt), str(bad), "--out", str(tmp_path / "f"),
                     "--shard-size", "5", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert [line for line in captured.err.splitlines() if line.startswith("microexp extract-features: error:")] \
        == [line for line in captured.err.splitlines() if table.loc[2, "clip"] in line]
    fs = load_features(tmp_path / "f")
    assert fs.features.shape[0] == 11 and table.loc[2, "clip"] not in fs.index["clip"].tolist()
    failures = pd.read_csv(tmp_path / "f" / "failures.csv")
    assert failures["clip"].tolist() == [table.loc[2, "clip"]] and failures["reason"].str.len().min() > 0
    assert "wrote 11 x 128 features" in captured.out


def test_labels_follow_the_checkpoint_class_map_and_names():
    table = pd.DataFrame({"clip": ["a", "b", "c", "d"], "dataset": ["samm", "samm", "casme2", "samm"],
                          "emotion": ["contempt", "happiness", "fear", "surprise"]})
    megc = list(get_class_map("megc3").classes)  # negative, positive, surprise; casme2 fear is dropped
    assert checkpoint_labels(table, megc, "megc3").tolist() == [0, 1, -1, 2]
    assert checkpoint_labels(table, ["Happiness", "surprise"], None).tolist() == [-1, 0, -1, 1]
    assert checkpoint_labels(table, ["happiness"], "identity").tolist() == [-1, 0, -1, -1]
    assert checkpoint_labels(table, [], "dfme7").tolist() == [-1] * 4  # a model without classes


def test_a_features_folder_whose_files_disagree_is_refused(setup, tmp_path):
    table_path, ckpt, _ = setup
    extract_features(ckpt, table_path, tmp_path / "f", shard_size=50, progress=False)
    index = (tmp_path / "f" / "index.csv").read_text().splitlines()
    (tmp_path / "f" / "index.csv").write_text("\n".join(index[:-1]) + "\n")
    with pytest.raises(FeatureError, match="11 rows but features.npy 12"):
        load_features(tmp_path / "f")
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "nowhere")


def test_an_export_or_a_bad_batch_size_is_refused(setup, tmp_path):
    table_path, ckpt, _ = setup
    with pytest.raises(Exception, match="batch size 0"):
        extract_features(ckpt, table_path, tmp_path / "f", batch_size=0, progress=False)
    assert not (tmp_path / "f").exists()


def test_clips_of_subjects_the_checkpoint_saw_are_counted_by_dataset_and_subject(setup, tmp_path):
    """A checkpoint records (dataset, subject) pairs as the sheets number them: a composite-trained model's
    shifted ids still match its sheet's clips, and another dataset's subject 1 is not counted."""
    table_path, _, model = setup
    import json

    table = pd.read_csv(table_path)
    seen = [[str(table["dataset"].iloc[0]), int(table["subject"].iloc[0])], ["other_dataset", 2]]
    ckpt = save_checkpoint(tmp_path / "seen.pt", model=model, class_names=CLASSES, data=CONFIG,
                           extra={"train_subjects": [100001, 100002], "seen_subject_keys": seen})
    extract_features(ckpt, table_path, tmp_path / "f", progress=False)
    meta = json.loads((tmp_path / "f" / "features.json").read_text())
    assert meta["seen_subject_clips"] == int((table["subject"] == table["subject"].iloc[0]).sum())
