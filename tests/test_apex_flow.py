"""Apex flows: computed from frames, exported as files, read back from flow_path; bad files are one line each."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from microexp.cli import main
from microexp.data.annotations import load_clip_table
from microexp.data.apex_flow import (
    ApexFlowSpec, FlowFileError, encode_flow, flip_encoded, flow_file_input, flow_to_image, read_flow_file, resize_flow,
)
from microexp.data.apex_flow_export import export_apex_flows, flow_file_stem
from microexp.data.dataset import MicroExpressionDataset, check_clip_inputs
from microexp.data.pipeline import ClipPipeline
from microexp.data.transforms import TransformSpec
from microexp.errors import AnnotationError, ConfigError
from microexp.inference.predictor import ClipInput
from microexp.synth import generate_dataset


def _pipeline(encoding="minmax", method="farneback", size=28):
    return ClipPipeline(modality="apex_flow", transform=TransformSpec(size=size),
                        apex=ApexFlowSpec(method=method, compute_size=64, encoding=encoding))


def _dataset(path, pipeline, **options):
    table = load_clip_table(path).resolve()
    table["label"] = 0
    return MicroExpressionDataset(table, pipeline=pipeline, **options)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A synthetic clip table and its apex flows written by ``microexp flow --apex`` (into a folder with a space)."""
    root = tmp_path_factory.mktemp("apex")
    generate_dataset(root / "synth", clips=6, subjects=3, size=64, fmt="frames", seed=5, workers=1, progress=False)
    out = root / "shared flows"
    args = ["flow", str(root / "synth" / "annotations.csv"), "--apex", "--out", str(out), "--method", "farneback",
            "--compute-size", "64", "--size", "28", "--no-progress"]
    assert main(args) == 0
    return root / "synth" / "annotations.csv", out


def test_pipeline_input_is_one_three_channel_flow():
    pipeline = _pipeline()
    assert pipeline.input_shape() == (3, 1, 28, 28) and pipeline.frame_size == 64
    assert pipeline.sampling.strategy == "onset_apex" and pipeline.sampling.num_frames == 2
    assert list(pipeline.times(10, 20, 40, fps=200.0)) == [10.0, 20.0]
    assert ClipPipeline.from_dict(pipeline.to_dict()) == pipeline
    assert ClipPipeline(modality="rgb", apex=ApexFlowSpec()).apex is None


def test_items_read_from_flow_path_equal_flows_computed_from_frames(exported):
    frames_table, out = exported
    pipeline = _pipeline()
    computed = _dataset(frames_table, pipeline)
    images = _dataset(out / "annotations.csv", pipeline)
    arrays = _dataset(out / "annotations_npy.csv", pipeline)
    assert list(images.table["clip"]) == list(computed.table["clip"])
    assert images.table["path"].eq("").all() and images.table["flow_path"].str.contains("shared flows").all()
    for i in range(len(computed)):
        x = computed[i]["video"]
        assert x.shape == (3, 1, 28, 28) and float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert float((images[i]["video"] - x).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit quantisation only
        assert float((arrays[i]["video"] - x).abs().max()) < 1e-6


def test_bgr255_is_what_opencv_reads_from_the_image(exported):
    frames_table, out = exported
    pipeline = _pipeline("bgr255")
    from_image = _dataset(out / "annotations.csv", pipeline)
    computed = _dataset(frames_table, pipeline)
    png = cv2.imread(str(from_image.table["flow_path"][0]))  # B, G, R = strain, v, u
    assert np.array_equal(from_image[0]["video"][:, 0].permute(1, 2, 0).numpy(), png.astype(np.float32))
    assert np.array_equal(computed[0]["video"].numpy(), from_image[0]["video"].numpy())


def test_pixels_are_refused_for_8_bit_images(exported):
    _, out = exported
    with pytest.raises(ConfigError, match="no absolute scale"):
        _dataset(out / "annotations.csv", _pipeline("pixels"))[0]
    assert _dataset(out / "annotations_npy.csv", _pipeline("pixels"))[0]["video"].abs().max() > 0


def test_computed_flows_are_cached(exported, tmp_path):
    frames_table, _ = exported
    first = _dataset(frames_table, _pipeline(), cache_dir=tmp_path / "cache")[0]["video"]
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    again = _dataset(frames_table, _pipeline(), cache_dir=tmp_path / "cache")[0]["video"]
    assert entries and sorted(p.name for p in (tmp_path / "cache").rglob("*.npy")) == entries
    assert float((first - again).abs().max()) < 2e-3  # the cache stores float16 pixels


@pytest.mark.parametrize("encoding", ["minmax", "pixels", "bgr255"])
def test_flip_mirrors_and_reverses_u(encoding):
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(8, 8, 3)).astype(np.float32)
    flow[..., 2] = np.abs(flow[..., 2])
    mirrored = flow[:, ::-1].copy()
    mirrored[..., 0] *= -1
    expected = encode_flow(mirrored, encoding)
    assert np.allclose(flip_encoded(encode_flow(flow, encoding), encoding), expected, atol=1e-5 if encoding != "bgr255" else 1)


def test_training_flips_half_the_items(exported):
    frames_table, out = exported
    dataset = _dataset(out / "annotations_npy.csv", _pipeline(), train=True)
    plain = _dataset(out / "annotations_npy.csv", _pipeline())[0]["video"]
    seen = {bool(np.allclose(dataset[(epoch, 0)]["video"], plain)) for epoch in range(12)}
    assert seen == {True, False}


def test_resize_flow_rescales_displacements():
    flow = np.zeros((64, 64, 3), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -4.0
    small = resize_flow(flow, 16)
    assert np.allclose(small[..., 0], 0.5) and np.allclose(small[..., 1], -1.0)


def test_two_channel_npy_gets_its_strain(tmp_path):
    flow = np.random.default_rng(1).normal(size=(20, 20, 2)).astype(np.float32)
    np.save(tmp_path / "f.npy", flow)
    stored = read_flow_file(tmp_path / "f.npy")
    assert stored.shape == (20, 20, 3) and np.allclose(stored[..., :2], flow)
    assert flow_file_input(tmp_path / "f.npy", size=20, encoding="pixels")[..., 2].max() > 0


@pytest.mark.parametrize("content, message", [
    (None, "flow file not found"),
    (b"not an image", "unreadable image"),
    ("gray", "1 channel"),
    ("rgba", "4 channel"),
    ("npy4", r"shape \(8, 8, 4\)"),
    ("npyint", "dtype int64"),
])
def test_bad_flow_files_are_one_line(tmp_path, content, message):
    name = "clip one.npy" if str(content).startswith("npy") else "clip one.png"
    path = tmp_path / name
    if content == "gray":
        cv2.imwrite(str(path), np.zeros((8, 8), np.uint8))
    elif content == "rgba":
        cv2.imwrite(str(path), np.zeros((8, 8, 4), np.uint8))
    elif content == "npy4":
        np.save(path, np.zeros((8, 8, 4), np.float32))
    elif content == "npyint":
        np.save(path, np.zeros((8, 8, 3), np.int64))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(FlowFileError, match=message) as info:
        read_flow_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_clip_table_rows_name_their_bad_flow_files(tmp_path):
    good = flow_to_image(np.random.default_rng(2).normal(size=(28, 28, 3)))
    cv2.imwrite(str(tmp_path / "good one.png"), good[..., ::-1])
    (tmp_path / "broken.png").write_bytes(b"xx")
    (tmp_path / "t.csv").write_text(
        "subject,clip,flow_path,emotion,dataset\n"
        "1,a,good one.png,negative,casme2\n"
        "2,b,broken.png,positive,samm\n"
        "3,c,missing.png,surprise,smic\n"
        "4,d,,surprise,smic\n")
    result = load_clip_table(tmp_path / "t.csv")
    messages = {p.row: str(p) for p in result.problems if p.severity == "error"}
    assert set(messages) == {3, 4, 5}
    assert "row 3" in messages[3] and "unreadable image" in messages[3] and "broken.png" in messages[3]
    assert "row 4" in messages[4] and "flow file not found" in messages[4]
    assert "row 5" in messages[5] and "neither frames (path) nor a precomputed apex flow" in messages[5]
    assert list(result.resolve()["clip"]) == ["a"]


def test_rows_with_only_a_flow_file_need_an_apex_flow_model(exported):
    _, out = exported
    table = load_clip_table(out / "annotations.csv").resolve()
    check_clip_inputs(table, _pipeline())
    with pytest.raises(AnnotationError, match="only a flow_path, which modality 'flow' cannot read"):
        check_clip_inputs(table, ClipPipeline(modality="flow"))


def test_export_reports_clips_without_frames_and_keeps_file_names_safe(exported, tmp_path):
    _, out = exported
    table = load_clip_table(out / "annotations.csv").resolve()  # flow files only: nothing to compute from
    summary = export_apex_flows(table.head(2), tmp_path / "again", method="farneback", compute_size=64, progress=False)
    assert summary.written == 0 and [r for _, r in summary.failed] == ["no frames (path) to compute the flow from"] * 2
    assert flow_file_stem("../sub01//EP 02/./x") == "sub01/EP 02/x"
    with pytest.raises(ValueError):
        flow_file_stem("../..")


def test_flow_cli_needs_a_destination(exported, capsys):
    frames_table, _ = exported
    assert main(["flow", str(frames_table), "--apex"]) == 2
    assert "--apex needs --out" in capsys.readouterr().err
    assert main(["flow", str(frames_table)]) == 2
    assert "--cache-dir is required" in capsys.readouterr().err


def test_the_composite_label_list_reads_without_a_header(tmp_path):
    """``combined_3class_gt.csv`` has no header; HTNet names its images ``{sub}_{filename_o}.png``."""
    image = flow_to_image(np.random.default_rng(3).normal(size=(28, 28, 3)))[..., ::-1]
    for name in ("sub11_EP15_04f", "006_006_1_2", "s03_s03_po_11"):
        (tmp_path / "flows").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "flows" / f"{name}.png"), image)
    (tmp_path / "combined_3class_gt.csv").write_text("casme2,sub11,EP15_04f,0\nsamm,006,006_1_2,1\nsmic,s03,s03_po_11,2\n")
    result = load_clip_table(tmp_path / "combined_3class_gt.csv")
    assert not result.problems, [str(p) for p in result.problems]
    table = result.resolve(strict=True)
    assert list(table["subject"]) == [10011, 20006, 30003]  # unique per dataset
    assert list(table["emotion"]) == ["negative", "positive", "surprise"]
    assert [p.split("/")[-1] for p in table["flow_path"]] == ["sub11_EP15_04f.png", "006_006_1_2.png", "s03_s03_po_11.png"]
    table["label"] = 0
    assert MicroExpressionDataset(table, pipeline=_pipeline())[0]["video"].shape == (3, 1, 28, 28)


def _apex_checkpoint(path, pipeline):
    from microexp.checkpoint import save_checkpoint
    from microexp.models import create_model

    model = create_model("ststnet", num_classes=7, num_frames=1, input_size=28)
    save_checkpoint(path, model=model, class_names=["happiness", "anger", "contempt", "disgust", "fear", "sadness",
                                                    "surprise"],
                    data={"pipeline": pipeline.to_dict(), "class_map": "dfme7"}, epoch=0, fold=None)
    return path


def test_predict_reads_flow_files_and_matches_the_dataset(exported, tmp_path, capsys):
    import json

    from microexp.inference.predictor import ClipPredictor

    _, out = exported
    pipeline = _pipeline()
    checkpoint = _apex_checkpoint(tmp_path / "apex.pt", pipeline)
    assert main(["predict", "--checkpoint", str(checkpoint), str(out / "annotations.csv"), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert len(predicted) == 6 and predicted[0]["face_box"] is None
    predictor = ClipPredictor.from_checkpoint(checkpoint, face_crop=False)
    dataset = _dataset(out / "annotations.csv", pipeline)
    item = ClipInput("", name="x", flow_path=str(dataset.table["flow_path"][0]))
    assert bool((predictor.preprocess(item) == dataset[0]["video"]).all())


def test_predict_says_a_frame_model_cannot_read_a_flow_file(exported, tmp_path, capsys):
    from microexp.inference.predictor import ClipPredictor, PredictionError

    predictor = ClipPredictor.from_checkpoint(_apex_checkpoint(tmp_path / "a.pt", _pipeline()), face_crop=False)
    predictor.preprocessing = ClipPipeline(modality="flow")  # as a flow_tiny checkpoint would have it
    with pytest.raises(PredictionError, match="only a precomputed flow"):
        predictor.preprocess(ClipInput("", name="x", flow_path=str(tmp_path / "f.png")))


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("model, table", [("ststnet", "annotations.csv"), ("htnet", "annotations_npy.csv")])
def test_apex_flow_models_train_under_loso_from_flow_files(exported, tmp_path, model, table):
    """Both file encodings -> the shipped recipe under leave-one-subject-out; each test clip predicted once."""
    import pandas as pd

    _, out = exported
    args = ["train", "--config", str(RECIPES / f"{model}_apex-flow_megc-composite_loso.yaml"),
            "--out", str(tmp_path / "run"), "--no-progress"]
    for setting in (f"data.annotations={out / table}", "data.class_map=dfme7", "data.cache_dir=null",
                    "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=4"):
        args += ["--set", setting]
    assert main(args) == 0
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(predictions) == 6 and predictions["clip"].is_unique
    assert predictions["fold"].nunique() == 3 and predictions.groupby("fold")["subject"].nunique().eq(1).all()
