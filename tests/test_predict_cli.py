"""``microexp predict`` / ``microexp export`` end to end: a checkpoint trained here, batches, every error path."""

import json
import pickle

import pandas as pd
import pytest
import torch

from microexp.cli import main
from microexp.synth import generate_dataset
from microexp.data.video import open_video, write_video


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tsm_tiny trained for one epoch on tiny synthetic data through ``microexp train``."""
    root = tmp_path_factory.mktemp("cli")
    generate_dataset(root / "data", preset="easy", clips=6, subjects=2, size=32, fmt="frames", seed=3, workers=1,
                     progress=False)
    values = {"data.annotations": str(root / "data" / "annotations.csv"), "cv.folds": 2,
              "train.epochs": 1, "data.size": 32, "data.num_frames": 4,
              "data.sampling": "uniform", "model.name": "tsm_tiny", "data.num_workers": 0, "train.batch_size": 4}
    args = ["train", "--out", str(root / "run"), "--no-progress", "--final"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    return root, root / "run" / "fold_00" / "model.pt"


def _clip(root, index=0):
    table = pd.read_csv(root / "data" / "annotations.csv")
    return table, str(root / "data" / table["path"][index])


def test_predict_json_gives_a_distribution_and_writes_nothing(trained, tmp_path, capsys, monkeypatch):
    root, ckpt = trained
    table, clip = _clip(root)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), clip, "--no-face-crop", "--json", "--motion-curve"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert set(row) == {"clip", "label", "probabilities", "onset", "apex", "offset", "estimated", "face_box", "model",
                        "checkpoint", "motion_curve"}
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-6 and row["label"] in row["probabilities"]
    assert row["estimated"] == {"onset": True, "apex": True, "offset": True}
    assert row["face_box"] is None and row["model"] == "tsm_tiny"
    assert row["onset"] <= row["apex"] <= row["offset"] and len(row["motion_curve"]) > 0
    assert list(tmp_path.iterdir()) == []  # privacy: nothing written without --save-crops


def test_clip_table_csv_output_and_saved_crops(trained, tmp_path, capsys):
    root, ckpt = trained
    table, _ = _clip(root)
    out = tmp_path / "pred.csv"
    crops = tmp_path / "crops"
    assert main(["predict", "--checkpoint", str(ckpt), str(root / "data" / "annotations.csv"), "--no-face-crop",
                 "--csv", str(out), "--batch-size", "3", "--save-crops", str(crops), "--no-progress"]) == 0
    frame = pd.read_csv(out)
    assert frame["clip"].tolist() == table["clip"].tolist()
    assert frame[["onset", "apex", "offset"]].values.tolist() == table[["onset", "apex", "offset"]].values.tolist()
    assert not frame[["onset_estimated", "apex_estimated", "offset_estimated"]].any().any()
    probs = frame[[c for c in frame.columns if c.startswith("prob_")]]
    assert probs.shape[1] == 7 and (probs.sum(axis=1) - 1).abs().max() < 1e-6
    assert sorted(p.name for p in crops.iterdir()) == sorted(table["clip"]) and len(list((crops / table["clip"][0]).glob("*.png"))) == 4


def test_batch_with_a_corrupt_file_predicts_the_others(trained, tmp_path, capsys):
    root, ckpt = trained
    table, _ = _clip(root)
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        with open_video(root / "data" / table["path"][i]) as reader:
            write_video(folder / f"good{i}.mp4", reader.get_frames(range(12)), fps=200)
    (folder / "bad.mp4").write_bytes(b"\x13\x37 not a video" * 50)
    capsys.readouterr()
    code = main(["predict", "--checkpoint", str(ckpt), str(folder), "--no-face-crop", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert sorted(r["clip"].rsplit("/", 1)[-1] for r in json.loads(captured.out)) == ["good0.mp4", "good1.mp4"]
    errors = [line for line in captured.err.strip().splitlines() if not line.startswith("WARNING")]  # numbering: from 0
    assert len(errors) == 2 and "bad.mp4" in errors[0] and errors[1].endswith("1 of 3 clip(s) failed")


def _zero_frame_video(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
    return path


@pytest.mark.parametrize("case", ["missing", "corrupt", "zero_frames", "empty_folder", "apex_outside", "onset_after_apex"])
def test_bad_clips_get_one_line_errors_and_exit_2(trained, tmp_path, capsys, case):
    root, ckpt = trained
    _, clip = _clip(root)
    extra = []
    if case == "missing":
        clip, expected = str(tmp_path / "nope.mp4"), "no such file"
    elif case == "corrupt":
        clip, expected = str(tmp_path / "x.mp4"), "x.mp4"
        (tmp_path / "x.mp4").write_bytes(bytes(range(256)) * 20)
    elif case == "zero_frames":
        clip, expected = str(_zero_frame_video(tmp_path / "empty.mp4")), "empty.mp4"
    elif case == "empty_folder":
        (tmp_path / "void").mkdir()
        clip, expected = str(tmp_path / "void"), "no frames"
    elif case == "apex_outside":
        extra, expected = ["--apex", "999"], "apex=999 is outside the clip (valid frames 1.."
    else:
        extra, expected = ["--onset", "9", "--apex", "5"], "not in order"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), clip, "--no-face-crop", "--json", *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and expected in lines[0] and lines[0].startswith("microexp predict: error: "), lines
    assert json.loads(captured.out) == []


def test_no_face_is_an_error_for_that_clip(trained, capsys):
    root, ckpt = trained
    _, clip = _clip(root)  # 32 px frames: too small for the cascade's 24 px faces with their margin
    assert main(["predict", "--checkpoint", str(ckpt), clip, "--json"]) == 2
    assert "no face found" in capsys.readouterr().err


def test_foreign_and_tampered_checkpoints_are_refused_without_running_code(trained, tmp_path, capsys):
    root, ckpt = trained
    _, clip = _clip(root)
    foreign = tmp_path / "foreign.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes(pickle.dumps({"format": "microexp-checkpoint", "state_dict": Exploit()}))
    for path, expected in ((foreign, "not a microexp checkpoint"), (tampered, "not a loadable microexp checkpoint"),
                           (tmp_path / "gone.pt", "checkpoint not found")):
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(path), clip, "--no-face-crop"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not marker.exists()


def test_export_then_predict_with_the_export(trained, tmp_path, capsys):
    root, ckpt = trained
    _, clip = _clip(root)
    out = tmp_path / "model.ts"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out)]) == 0
    assert "max |exported - eager|" in capsys.readouterr().out
    args = [clip, "--no-face-crop", "--json", "--onset", "3", "--apex", "8", "--offset", "12"]
    assert main(["predict", "--checkpoint", str(out), *args]) == 0  # parity with eager: test_inference_predictor
    exported = json.loads(capsys.readouterr().out)[0]
    assert exported["model"] == "tsm_tiny" and abs(sum(exported["probabilities"].values()) - 1) < 1e-6


@pytest.mark.parametrize("option,expected", [
    (["--device", "gpu"], "device 'gpu': expected cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "device 'cuda:x': expected cpu, cuda or cuda:N"),
    (["--device", "cuda"], "torch sees no CUDA device"),
    (["--face-margin", "-1"], "face margin -1.0: expected a number >= 0"),
], ids=["gpu", "cuda_x", "cuda_without_gpu", "negative_margin"])
def test_bad_options_are_one_line_errors(trained, capsys, option, expected):
    if option[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, ckpt = trained
    _, clip = _clip(root)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), clip, "--json", "--no-progress", *option]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("microexp predict: error: "), lines
    assert captured.out == ""


def test_save_crops_keeps_clips_with_the_same_folder_name_apart(trained, tmp_path, capsys):
    import shutil

    root, ckpt = trained
    table, _ = _clip(root)
    for subject, index in (("sub01", 0), ("sub02", 1)):  # two different clips both called EP01
        shutil.copytree(root / "data" / table["path"][index], tmp_path / "clips" / subject / "EP01")
    crops = tmp_path / "crops"
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "clips"), "--no-face-crop", "--json",
                 "--save-crops", str(crops), "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)
    folders = sorted(p.name for p in crops.iterdir())
    assert len(rows) == 2 and len(folders) == 2, folders
    assert folders[0].endswith("clips__sub01__EP01") and folders[1].endswith("clips__sub02__EP01")
    assert all(len(list((crops / f).glob("*.png"))) == 4 for f in folders)


def test_exports_without_microexp_metadata_are_refused_before_loading(tmp_path, capsys):
    import zipfile

    plain = tmp_path / "plain.ts"  # a real TorchScript file, saved without microexp metadata
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), plain)
    fake = tmp_path / "fake.pt"  # has code/ (so detected as TorchScript) but torch.jit.load would choke on it
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("fake/code/__torch__/m.py", "def forward(self): ...\n")
    for path in (plain, fake):
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(path), str(tmp_path), "--no-face-crop"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"{path}: not a microexp export" in err, err


def test_the_final_all_subjects_model_predicts_and_exports_like_any_checkpoint(trained, tmp_path, capsys):
    root, _ = trained
    final = root / "run" / "final" / "model.pt"
    table, clip = _clip(root)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(final), str(root / "data" / "annotations.csv"), "--no-face-crop",
                 "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["clip"] for r in rows] == table["clip"].tolist() and all(r["checkpoint"] == str(final) for r in rows)
    assert all("true" in r for r in rows) and "accuracy" in captured.err
    assert main(["export", "--checkpoint", str(final), "--format", "torchscript", "--out", str(tmp_path / "f.ts")]) == 0
