"""``microexp predict`` hardening: fps and 1-frame clips, frame numbering from the table or the video, an apex
given alone, per-phase estimated flags, --csv output checks, true labels with accuracy/UF1, strict JSON."""

import json
import math
import os

import pandas as pd
import pytest
import torch

from microexp.cli import main
from microexp.data.class_maps import get_class_map
from microexp.data.pack import PackSettings, pack_clip
from microexp.synth import generate_dataset
from microexp.data.video import open_video, write_video
from microexp.checkpoint import save_checkpoint
from microexp.inference import ClipPredictor
from microexp.inference.predictor import PredictionError
from microexp.metrics import compute_metrics
from microexp.models import create_model

CLASSES = list(get_class_map("dfme7").classes)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard")
    generate_dataset(out, preset="easy", clips=4, subjects=2, size=32, fmt="frames", seed=3, workers=1, progress=False)
    return out, pd.read_csv(out / "annotations.csv")


def _checkpoint(path, name="tsm_tiny", **data):
    torch.manual_seed(0)
    config = {"num_frames": 4, "sampling": "uniform", "size": 32, "class_map": "dfme7", **data}
    model = create_model(name, num_classes=len(CLASSES), num_frames=4, input_size=32)
    return save_checkpoint(path, model=model, class_names=CLASSES, data=config)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def _predict(capsys, *args):
    capsys.readouterr()
    code = main(["predict", "--no-face-crop", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _frames(data, index=0):
    root, table = data
    with open_video(root / table["path"][index]) as reader:
        return reader.get_frames(range(len(reader)))


@pytest.mark.parametrize("fps", ["0", "-25", "nan"])
def test_non_positive_fps_is_refused(data, ckpt, capsys, fps):
    root, table = data
    code, out, err = _predict(capsys, "--checkpoint", ckpt, root / table["path"][0], "--json", f"--fps={fps}")
    assert code == 2 and out == "" and len(err) == 1 and "--fps" in err[0] and "expected a frame rate > 0" in err[0]
    predictor = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    with pytest.raises(PredictionError, match="fps 0: expected a frame rate > 0"):
        predictor.predict(root / table["path"][0], fps=0)


def test_a_one_frame_video_warns_or_is_refused_for_motion_models(data, ckpt, tmp_path, capsys):
    one = tmp_path / "one.mp4"
    write_video(one, _frames(data)[:1], fps=200)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, one, "--json", "--first-frame", "1")
    assert code == 0
    [row] = json.loads(out)
    assert (row["onset"], row["apex"], row["offset"]) == (1, 1, 1)
    assert len(err) == 1 and err[0].startswith("WARNING") and "one.mp4: 1 frame: no motion to spot" in err[0], err
    flow = _checkpoint(tmp_path / "flow.pt", "flow_tiny")
    code, out, err = _predict(capsys, "--checkpoint", flow, one, "--json", "--first-frame", "1")
    assert code == 2 and json.loads(out) == []
    assert "one.mp4: 1 frame" in err[0] and "needs at least 2 frames" in err[0], err


def test_first_frame_comes_from_the_packed_video(data, ckpt, tmp_path, capsys):
    root, table = data
    packed = tmp_path / "packed.mp4"
    pack_clip(root / table["path"][0], packed, fps=200.0, settings=PackSettings(mode="lossless"))
    with open_video(root / table["path"][0]) as reader:
        numbers = reader.frame_numbers
    assert numbers[0] == 1
    phases = ["--onset", numbers[0], "--apex", numbers[1], "--offset", numbers[-1]]  # last one is outside 0..n-1
    code, out, err = _predict(capsys, "--checkpoint", ckpt, packed, "--json", *phases)
    assert code == 0 and err == [], err  # the numbering is known: nothing to warn about
    [row] = json.loads(out)
    assert (row["onset"], row["offset"]) == (numbers[0], numbers[-1])
    spotted_folder = ClipPredictor.from_checkpoint(ckpt, face_crop=False).predict(root / table["path"][0])
    spotted_video = ClipPredictor.from_checkpoint(ckpt, face_crop=False).predict(packed)
    assert (spotted_video.onset, spotted_video.apex, spotted_video.offset) == \
        (spotted_folder.onset, spotted_folder.apex, spotted_folder.offset)  # same numbering as the annotations


def test_a_video_without_numbering_warns_once(data, ckpt, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        write_video(folder / f"clip{i}.mp4", _frames(data, i), fps=200)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, folder, "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert len(err) == 1 and "records no first frame number" in err[0], err
    assert "--first-frame 1" in err[0] and "count from 0" in err[0]
    code, out, err = _predict(capsys, "--checkpoint", ckpt, folder, "--json", "--first-frame", "1")
    assert code == 0 and err == []


def test_a_table_without_first_frame_takes_it_from_the_packed_video(data, ckpt, tmp_path, capsys):
    root, table = data
    rows = []
    for i in range(2):
        dest = tmp_path / f"c{i}.mp4"
        pack_clip(root / table["path"][i], dest, fps=200.0, settings=PackSettings(mode="lossless"))
        with open_video(root / table["path"][i]) as reader:
            last = reader.frame_numbers[-1]  # outside the clip if its frames were numbered from 0
        rows.append({**table.iloc[i].drop(labels=["first_frame"]).to_dict(), "path": dest.name, "offset": last})
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, tmp_path / "table.csv", "--json")
    assert code == 0, err  # with numbering from 0, each clip's offset would be outside the clip
    assert [(r["onset"], r["offset"]) for r in json.loads(out)] == [(r["onset"], r["offset"]) for r in rows]


def test_an_apex_given_alone_brackets_the_movement(data, ckpt):
    root, table = data
    predictor = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    for row in table.head(2).itertuples():
        result = predictor.predict(root / row.path, apex=int(row.apex), fps=row.fps)
        assert result.apex == row.apex and result.estimated_fields == ("onset", "offset")
        assert result.onset < row.apex < result.offset, (row.clip, result.onset, result.offset)
        assert result.offset - row.apex >= (row.offset - row.apex) // 2  # not collapsed onto the apex
        assert result.to_dict()["estimated"] == {"onset": True, "apex": False, "offset": True}


def test_an_estimated_apex_in_the_table_is_flagged(data, ckpt, tmp_path, capsys):
    root, table = data
    edited = table.head(2).copy()
    edited["path"] = [str(root / p) for p in edited["path"]]
    edited["apex"] = edited["apex"].astype(object)
    edited.loc[edited.index[0], "apex"] = ""  # blank apex: the reader estimates it and flags it
    edited.to_csv(tmp_path / "table.csv", index=False)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, tmp_path / "table.csv", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["estimated"]["apex"] for r in rows] == [True, False]
    assert not any(r["estimated"]["onset"] or r["estimated"]["offset"] for r in rows)


def test_a_labelled_table_gets_a_true_column_and_accuracy(data, ckpt, tmp_path, capsys):
    root, table = data
    out_csv = tmp_path / "pred.csv"
    code, out, err = _predict(capsys, "--checkpoint", ckpt, root / "annotations.csv", "--csv", out_csv)
    assert code == 0, err
    frame = pd.read_csv(out_csv)
    assert frame["true"].tolist() == [get_class_map("dfme7").lookup("microexp", e) for e in table["emotion"]]
    index = {c: i for i, c in enumerate(CLASSES)}
    metrics = compute_metrics(frame["true"].map(index), frame["label"].map(index), num_classes=len(CLASSES))
    lines = out.strip().splitlines()
    assert lines[0] == f"wrote {len(table)} row(s) to {out_csv}"
    assert f"accuracy {metrics.acc:.3f}, UF1 {metrics.uf1:.3f}" in lines[1] and f"over {len(table)} labelled" in lines[1]
    code, out, err = _predict(capsys, "--checkpoint", ckpt, root / "annotations.csv", "--json")
    assert all(r["true"] in CLASSES for r in json.loads(out))  # stdout stays valid JSON
    assert any(line.startswith("accuracy ") for line in err)


def test_csv_to_a_read_only_folder_or_a_folder_is_one_line(data, ckpt, tmp_path, tmpfs, capsys):
    root, table = data
    clip = root / table["path"][0]
    ro = tmpfs("ro", size="1m", read_only=True, chmod_fallback=True)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, clip, "--csv", ro / "pred.csv")
    assert code == 2 and len(err) == 1, err
    assert f"cannot write {ro / 'pred.csv'}:" in err[0] and ("read-only" in err[0] or "permission" in err[0])
    code, out, err = _predict(capsys, "--checkpoint", ckpt, clip, "--csv", tmp_path)
    assert code == 2 and len(err) == 1 and f"cannot write {tmp_path}: is a directory" in err[0], err


def test_csv_output_has_normal_permissions(data, ckpt, tmp_path, capsys):
    root, table = data
    old = os.umask(0o022)
    try:
        code, out, err = _predict(capsys, "--checkpoint", ckpt, root / table["path"][0], "--csv", tmp_path / "p.csv")
    finally:
        os.umask(old)
    assert code == 0 and (tmp_path / "p.csv").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_a_model_with_non_finite_output_fails_the_clip_and_json_stays_strict(data, ckpt, tmp_path, capsys):
    from microexp.inference.export import METADATA_KEY, WEIGHTS_DIGEST_KEY, _torchscript_weights_digest, load_exported

    root, table = data
    real = tmp_path / "real.ts"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(real)]) == 0
    meta = load_exported(real).metadata

    class NaNModel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 7)
            out[0] = float("nan")  # only the first clip of a batch
            return out

    broken = tmp_path / "broken.ts"
    scripted = torch.jit.script(NaNModel())
    torch.jit.save(scripted, str(broken), _extra_files={METADATA_KEY: json.dumps(meta)})
    meta = {**meta, WEIGHTS_DIGEST_KEY: _torchscript_weights_digest(broken)}  # a genuine export of this model
    torch.jit.save(scripted, str(broken), _extra_files={METADATA_KEY: json.dumps(meta)})
    clips = [root / table["path"][i] for i in range(2)]
    code, out, err = _predict(capsys, "--checkpoint", broken, *clips, "--json", "--batch-size", "2")
    rows = json.loads(out, parse_constant=lambda token: pytest.fail(f"invalid JSON token {token}"))
    assert code == 2 and [r["clip"] for r in rows] == [str(clips[1])]
    assert all(math.isfinite(v) for v in rows[0]["probabilities"].values())
    assert "not finite" in err[0] and str(clips[0]) in err[0]


def test_save_crops_to_a_read_only_folder_or_a_file_is_one_line(data, ckpt, tmp_path, tmpfs, capsys):
    root, table = data
    clip = root / table["path"][0]
    ro = tmpfs("ro", size="1m", read_only=True, chmod_fallback=True)
    code, out, err = _predict(capsys, "--checkpoint", ckpt, clip, "--json", "--save-crops", ro / "crops")
    assert code == 2 and out == "" and len(err) == 1, err
    assert f"cannot write {ro / 'crops'}:" in err[0]
    (tmp_path / "file").write_text("x")
    code, out, err = _predict(capsys, "--checkpoint", ckpt, clip, "--json", "--save-crops", tmp_path / "file")
    assert code == 2 and len(err) == 1 and f"cannot write {tmp_path / 'file'}: not a directory" in err[0], err


def test_saved_crops_have_normal_permissions(data, ckpt, tmp_path, capsys):
    root, table = data
    old = os.umask(0o022)
    try:
        code, out, err = _predict(capsys, "--checkpoint", ckpt, root / table["path"][0], "--json",
                                  "--save-crops", tmp_path / "crops")
    finally:
        os.umask(old)
    files = list((tmp_path / "crops").rglob("*"))
    pngs = [f for f in files if f.is_file()]
    assert code == 0 and len(pngs) == 4 and all(f.suffix == ".png" for f in pngs)  # no temporary file left
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in pngs)


def test_an_unlabelled_table_is_predicted_without_true_classes(data, ckpt, tmp_path, capsys):
    """A practitioner's own clip table may have no emotions: blank cells or no emotion column at all."""
    root, table = data
    blank = table.assign(emotion="", path=[str(root / p) for p in table["path"]])
    blank.to_csv(tmp_path / "blank.csv", index=False)
    blank.drop(columns=["emotion"]).to_csv(tmp_path / "no_column.csv", index=False)
    for name in ("blank.csv", "no_column.csv"):
        out_csv = tmp_path / f"pred_{name}"
        code, out, err = _predict(capsys, "--checkpoint", ckpt, tmp_path / name, "--csv", out_csv)
        assert code == 0, err
        frame = pd.read_csv(out_csv)
        assert len(frame) == len(table) and frame["label"].isin(CLASSES).all()
        assert "true" not in frame or frame["true"].isna().all()
        assert not any("accuracy" in line for line in out.splitlines() + err)


def test_accuracy_on_subjects_the_model_trained_on_is_flagged(data, tmp_path, capsys):
    """A final model saw every subject, a fold model its training subjects: their 'accuracy' is no test result."""
    root, table = data
    torch.manual_seed(0)
    model = create_model("tsm_tiny", num_classes=len(CLASSES), num_frames=4, input_size=32)
    config = {"num_frames": 4, "sampling": "uniform", "size": 32, "class_map": "dfme7"}
    subject = int(table["subject"].iloc[0])
    expected = {"final": len(table), "fold": int((table["subject"] == subject).sum()), "unknown": 0}
    extras = {"final": {"final": True, "subjects": sorted(int(s) for s in table["subject"].unique())},
              "fold": {"train_subjects": [subject], "val_subjects": []}, "unknown": {}}
    for kind, extra in extras.items():
        ckpt = save_checkpoint(tmp_path / f"{kind}.pt", model=model, class_names=CLASSES, data=config, extra=extra)
        code, out, err = _predict(capsys, "--checkpoint", ckpt, root / "annotations.csv")
        assert code == 0, err
        summary = next(line for line in out.splitlines() if line.startswith("accuracy "))
        if expected[kind]:
            assert f"WARNING: {expected[kind]} of these {len(table)} clips are from subjects the model was trained on" in summary
        else:
            assert "WARNING" not in summary
