"""ClipPredictor: the model input equals the Dataset's eval item, valid outputs, export parity, latency."""

import numpy as np
import pytest
import torch

from microexp.data.annotations import load_clip_table
from microexp.data.class_maps import apply_class_map, get_class_map
from microexp.data.dataset import MicroExpressionDataset
from microexp.data.flow import FlowSpec
from microexp.data.sampling import SamplingSpec
from microexp.synth import generate_dataset
from microexp.data.transforms import TransformSpec
from microexp.data.video import open_video
from microexp.checkpoint import save_checkpoint
from microexp.inference import ClipInput, ClipPredictor
from microexp.inference.export import ExportError, export_checkpoint, load_exported
from microexp.inference.latency import measure_latency, measure_throughput
from microexp.errors import ConfigError
from microexp.inference.predictor import STAGES, PredictionError, crop_folder_name
from microexp.models import create_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    generate_dataset(out, preset="easy", clips=4, subjects=2, size=64, fmt="frames", seed=7, workers=1, progress=False)
    table = load_clip_table(out / "annotations.csv").resolve()
    labelled, _ = apply_class_map(table, get_class_map("dfme7"))
    return out, labelled.reset_index(drop=True)


def _checkpoint(path, name, data_config, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, num_frames=data_config["num_frames"], input_size=data_config["size"], **kwargs)
    return save_checkpoint(path, model=model, class_names=list(get_class_map("dfme7").classes), data=data_config)


def _dataset(table, model_name, data_config, **kwargs):
    """What microexp.engine.experiment builds for evaluation (train=False)."""
    spec = create_model(model_name, num_classes=7, num_frames=data_config["num_frames"], input_size=data_config["size"],
                        **kwargs).spec
    d = data_config
    flow = FlowSpec(method=d["flow_method"], strain=spec.flow_channels == 3) if "flow" in spec.modality else None
    rgb = spec.modality != "flow"
    return MicroExpressionDataset(
        table, sampling=SamplingSpec(d["sampling"], num_frames=d["num_frames"], stride=d["stride"],
                                     reference_fps=d["reference_fps"]),
        transform=TransformSpec(size=d["size"], grayscale=d["grayscale"], mean=tuple(spec.mean[:3]) if rgb else (0.485, 0.456, 0.406),
                                std=tuple(spec.std[:3]) if rgb else (0.229, 0.224, 0.225)),
        train=False, modality=spec.modality, flow=flow, frame_difference=d["frame_difference"])


CASES = [
    ("tsm_tiny", {}, {"sampling": "tim", "frame_difference": "first", "grayscale": True, "num_frames": 6}),
    ("flow_tiny", {"flow_channels": 3}, {"sampling": "onset_apex_offset", "flow_method": "dis"}),
    ("two_stream_tiny", {}, {"sampling": "apex_centered", "stride": 2, "reference_fps": 100.0}),
]


@pytest.mark.parametrize("model_name,kwargs,overrides", CASES, ids=[c[0] for c in CASES])
def test_model_input_equals_the_dataset_eval_item(data, tmp_path, model_name, kwargs, overrides):
    root, table = data
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7", **overrides}
    ckpt = _checkpoint(tmp_path / "model.pt", model_name, config, **kwargs)
    predictor = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    dataset = _dataset(table, model_name, config, **kwargs)
    for i in range(2):
        row = table.iloc[i]
        expected = dataset[i]["video"]
        got = predictor.preprocess(row["path"], onset=int(row["onset"]), apex=int(row["apex"]), offset=int(row["offset"]),
                                   first_frame=int(row["first_frame"]), fps=float(row["fps"]))
        assert got.shape == expected.shape and torch.equal(got, expected)


def test_prediction_is_a_distribution_with_spotted_phases_and_timings(data, tmp_path):
    root, table = data
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    ckpt = _checkpoint(tmp_path / "model.pt", "two_stream_tiny", config)
    predictor = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    row = table.iloc[0]
    result = predictor.predict(row["path"], fps=200)
    assert set(result.probabilities) == set(get_class_map("dfme7").classes)
    assert abs(sum(result.probabilities.values()) - 1) < 1e-9 and result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.estimated and result.estimated_fields == ("onset", "apex", "offset")
    assert 1 <= result.onset <= result.apex <= result.offset
    with open_video(row["path"]) as reader:
        assert len(result.motion_curve) == len(reader)  # one value per frame of the clip
    assert set(result.timings) == set(STAGES) and result.timings["flow"] > 0 and result.timings["spotting"] > 0
    given = predictor.predict(row["path"], onset=int(row["onset"]), apex=int(row["apex"]), offset=int(row["offset"]))
    assert not given.estimated and given.motion_curve is None and given.timings["spotting"] == 0
    partial = predictor.predict(row["path"], apex=int(row["apex"]))
    assert partial.apex == int(row["apex"]) and partial.estimated_fields == ("onset", "offset")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_model_agrees_with_the_eager_model(data, tmp_path, fmt):
    pytest.importorskip("onnxruntime", reason="ONNX parity needs onnxruntime (pip install microexp[export])") \
        if fmt == "onnx" else None
    root, table = data
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    ckpt = _checkpoint(tmp_path / "model.pt", "tsm_tiny", config)
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'ts'}"
    result = export_checkpoint(ckpt, fmt=fmt, out=out)
    assert result.max_abs_diff < 1e-4 and result.input_shape == (1, 3, 4, 32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", out.name])  # one file, no leftovers
    exported = load_exported(out)
    assert exported.metadata["class_names"] == list(get_class_map("dfme7").classes)
    eager = ClipPredictor.from_checkpoint(ckpt, face_crop=False)
    runner = ClipPredictor.from_checkpoint(out, face_crop=False)  # format detected from the file
    row = table.iloc[1]
    phases = {"onset": int(row["onset"]), "apex": int(row["apex"]), "offset": int(row["offset"])}
    a, b = eager.predict(row["path"], **phases), runner.predict(row["path"], **phases)
    assert a.label == b.label and np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)
    x = torch.randn(3, 3, 4, 32, 32)  # dynamic batch size
    assert exported(x).shape == (3, 7)


def test_exported_file_without_metadata_is_refused(tmp_path):
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), plain)
    with pytest.raises(ExportError, match="not a microexp export"):
        load_exported(plain)


def test_latency_and_throughput_report_every_stage(data, tmp_path):
    root, table = data
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    ckpt = _checkpoint(tmp_path / "model.pt", "flow_tiny", config)
    clips = [ClipInput(r.path, r.onset, r.apex, r.offset, r.first_frame, r.fps) for r in table.itertuples()]
    stats = measure_latency(ckpt, clips[0], repeats=2, face_crop=False)
    assert set(stats) == set(STAGES) and stats["spotting"]["p95"] == 0  # phases given: nothing spotted
    assert all(0 <= s["p50"] <= s["p95"] for s in stats.values()) and stats["flow"]["p50"] > 0
    assert float(measure_throughput(ckpt, clips, 2, face_crop=False)) > 0


def test_throughput_counts_only_predicted_clips(data, tmp_path):
    root, table = data
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    ckpt = _checkpoint(tmp_path / "model.pt", "tsm_tiny", config)
    clips = [ClipInput(r.path, r.onset, r.apex, r.offset, r.first_frame, r.fps) for r in table.itertuples()][:2]
    result = measure_throughput(ckpt, [*clips, str(tmp_path / "missing.mp4")], 2, face_crop=False, device="cpu")
    assert (result.predicted, result.failed) == (2, 1) and "missing.mp4" in result.failures[0]
    assert float(result) == pytest.approx(2 / result.seconds)
    with pytest.raises(PredictionError, match="none of the 1 clip"):
        measure_throughput(ckpt, [str(tmp_path / "missing.mp4")], 2, face_crop=False)


def test_unknown_fps_with_a_reference_fps_checkpoint_warns_per_clip(data, tmp_path, caplog):
    root, table = data
    config = {"num_frames": 4, "sampling": "apex_centered", "stride": 2, "reference_fps": 100.0, "size": 32,
              "grayscale": False, "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    predictor = ClipPredictor.from_checkpoint(_checkpoint(tmp_path / "model.pt", "tsm_tiny", config), face_crop=False)
    row = table.iloc[0]
    phases = {"onset": int(row["onset"]), "apex": int(row["apex"]), "offset": int(row["offset"])}
    with caplog.at_level("WARNING", logger="microexp.inference.predictor"):
        predictor.preprocess(row["path"], fps=200.0, **phases)
        assert not caplog.records
        predictor.preprocess(row["path"], name="clipA", **phases)  # a frame folder: no fps of its own
    [record] = caplog.records
    assert record.getMessage().startswith("clipA: frame rate unknown") and "--fps" in record.getMessage()


def test_bad_device_and_face_margin_are_config_errors(data, tmp_path):
    config = {"num_frames": 4, "sampling": "uniform", "stride": 1, "reference_fps": None, "size": 32, "grayscale": False,
              "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    ckpt = _checkpoint(tmp_path / "model.pt", "tsm_tiny", config)
    for device in ("gpu", "cuda:x", "meta"):
        with pytest.raises(ConfigError, match="expected cpu, cuda or cuda:N"):
            ClipPredictor.from_checkpoint(ckpt, device=device)
    for margin in (-1, float("nan"), "wide"):
        with pytest.raises(ConfigError, match="face margin"):
            ClipPredictor.from_checkpoint(ckpt, face_margin=margin)


def test_crop_folder_names_are_unique_per_clip():
    names = ["sub01/EP01", "sub02/EP01", "/data/sub01/EP01", "a/b", "a__b", "a_b", "a?b", "a b", "..", "../x", "x"]
    folders = [crop_folder_name(n) for n in names]
    assert folders[0] == "sub01__EP01" and folders[-1] == "x" and folders[2] == "data__sub01__EP01"
    assert len(set(folders) - {folders[2]}) == len(names) - 1  # only '/data/..' vs 'data/..' may meet (leading / dropped)
    assert all("/" not in f and f not in (".", "..") and not f.startswith(".") for f in folders)
