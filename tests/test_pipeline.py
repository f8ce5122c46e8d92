"""One preprocessing spec: training builds it, checkpoints store it, prediction and export rebuild it exactly."""

import json

import numpy as np
import pytest
import torch

import microexp.engine.experiment as experiment
from microexp.checkpoint import load_checkpoint
from microexp.cli import main
from microexp.config import DataConfig
from microexp.data.apex_flow import ApexFlowSpec
from microexp.data.flow import DEFAULT_FLOW_METHOD, FlowSpec
from microexp.data.pipeline import MODALITIES, PIPELINE_VERSION, ClipPipeline, clip_to_input
from microexp.data.sampling import SamplingSpec, frames_needed
from microexp.synth import generate_dataset
from microexp.data.transforms import TransformSpec
from microexp.errors import ConfigError
from microexp.inference.export import export_checkpoint
from microexp.inference.predictor import ClipPredictor
from microexp.models import get_model_spec

#: one recipe per modality, each moving data keys away from their defaults
CASES = {
    "rgb": ("tsm_tiny", {}, {"data.sampling": "tim", "data.frame_difference": "first", "data.grayscale": "true",
                             "data.crop_scale": 0.9, "data.flip": "false"}),
    "flow": ("flow_tiny", {"flow_channels": 3}, {"data.sampling": "onset_apex", "data.flow_method": "dis"}),
    "rgb+flow": ("two_stream_tiny", {}, {"data.sampling": "dense", "data.stride": 2, "data.reference_fps": 200}),
    "apex_flow": ("ststnet", {}, {"data.num_frames": 1, "data.size": 28, "data.apex_encoding": "bgr255",
                                  "data.apex_flow_method": "dis", "data.apex_flow_size": 48, "data.flip": "false"}),
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, clips=6, subjects=3, size=32, fmt="frames", seed=3, workers=1, progress=False)
    return out / "annotations.csv"


def test_cases_cover_every_modality():
    assert sorted(CASES) == sorted(MODALITIES)
    assert {get_model_spec(name, num_frames=data.get("data.num_frames", 4), input_size=data.get("data.size", 32),
                           **kwargs).modality for name, kwargs, data in CASES.values()} == set(MODALITIES)


@pytest.mark.parametrize("modality", sorted(CASES))
def test_checkpoint_rebuilds_the_training_pipeline(modality, tiny_data, tmp_path, monkeypatch):
    name, kwargs, data = CASES[modality]
    built = []
    real = experiment.MicroExpressionDataset

    def spy(table, **options):
        dataset = real(table, **options)
        built.append((options["train"], dataset.pipeline))
        return dataset

    monkeypatch.setattr(experiment, "MicroExpressionDataset", spy)
    settings = {"data.annotations": str(tiny_data), "data.size": 32, "data.num_frames": 4, "data.num_workers": 0,
                "model.name": name, "model.kwargs": json.dumps(kwargs), "train.epochs": 1, "train.batch_size": 3,
                "cv.folds": 2, **data}
    args = ["train", "--out", str(tmp_path / "run"), "--final-only", "--no-progress"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    [trained] = {pipeline for train, pipeline in built if train}
    assert trained.modality == modality

    checkpoint = tmp_path / "run" / "final" / "model.pt"
    payload = load_checkpoint(checkpoint)
    frames, size = settings["data.num_frames"], settings["data.size"]
    spec = get_model_spec(name, num_frames=frames, input_size=size, **kwargs)
    assert ClipPipeline.from_checkpoint_data(payload["data"], spec) == trained
    assert ClipPredictor.from_checkpoint(checkpoint, face_crop=False).preprocessing == trained
    exported = export_checkpoint(checkpoint, fmt="torchscript", out=tmp_path / "model.ts")
    assert exported.input_shape == (1, *trained.input_shape()) == (1, spec.in_channels, frames, size, size)
    assert ClipPredictor.from_checkpoint(tmp_path / "model.ts", face_crop=False).preprocessing == trained


def _pipelines():
    yield ClipPipeline()
    yield ClipPipeline(sampling=SamplingSpec("apex_centered", num_frames=5, stride=3, reference_fps=200.0),
                       transform=TransformSpec(size=48, crop_scale=0.5, flip=False, grayscale=True,
                                               mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
                       frame_difference="previous")
    yield ClipPipeline(modality="flow", flow=FlowSpec(method="tvl1", reference="consecutive", strain=True))
    yield ClipPipeline(modality="rgb+flow", flow=FlowSpec(method="dis"))
    yield ClipPipeline(modality="apex_flow", transform=TransformSpec(size=28),
                       apex=ApexFlowSpec(method="farneback", compute_size=64, encoding="bgr255"))


@pytest.mark.parametrize("pipeline", list(_pipelines()), ids=lambda p: p.modality)
def test_to_dict_is_plain_json_and_round_trips(pipeline):
    data = pipeline.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert ClipPipeline.from_dict(json.loads(json.dumps(data))) == pipeline


def test_from_dict_names_what_is_wrong():
    data = ClipPipeline().to_dict()
    with pytest.raises(ConfigError, match="keys .*expected"):
        ClipPipeline.from_dict({**data, "extra": 1})
    with pytest.raises(ConfigError, match="version 99"):
        ClipPipeline.from_dict({**data, "version": 99})
    with pytest.raises(ConfigError, match="preprocessing pipeline: .*colour"):
        ClipPipeline.from_dict({**data, "transform": {**data["transform"], "colour": True}})
    assert data["version"] == PIPELINE_VERSION


def test_checkpoints_written_before_the_pipeline_still_load():
    """Older checkpoints hold the recipe's flat data keys; their meaning then is what for_model builds."""
    spec = get_model_spec("two_stream_tiny", num_frames=6, input_size=32)
    legacy = {"num_frames": 6, "sampling": "onset_apex", "stride": 1, "reference_fps": None, "size": 32,
              "grayscale": False, "frame_difference": "none", "flow_method": "farneback", "class_map": "dfme7"}
    pipeline = ClipPipeline.from_checkpoint_data(legacy, spec)
    assert pipeline == ClipPipeline.for_model(spec, num_frames=6, sampling="onset_apex", size=32)
    assert pipeline.flow == FlowSpec(method="farneback") and pipeline.input_shape() == (5, 6, 32, 32)
    bare = ClipPipeline.from_checkpoint_data({}, spec)  # saved outside microexp train: the model's own shape
    assert bare.sampling == SamplingSpec("uniform", num_frames=6) and bare.transform.size == 32


def test_one_flow_default_everywhere():
    assert DataConfig().flow_method == DEFAULT_FLOW_METHOD == FlowSpec().method
    assert ClipPipeline(modality="flow").flow == FlowSpec()
    assert ClipPipeline(modality="rgb", flow=FlowSpec()).flow is None


def test_invalid_parts_are_refused():
    with pytest.raises(ConfigError, match="modality='depth'"):
        ClipPipeline(modality="depth")
    with pytest.raises(ConfigError, match="frame_difference='last'"):
        ClipPipeline(frame_difference="last")


def _frames(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_flow_training_flip_mirrors_frames_and_negates_dx():
    pipeline = ClipPipeline(sampling=SamplingSpec("uniform", num_frames=4), transform=TransformSpec(size=16),
                            modality="rgb+flow")
    times = pipeline.times(0, 2, 5, train=True, rng=np.random.default_rng(0))
    numbers = frames_needed(times)
    frames = _frames()[numbers]
    plain = clip_to_input(pipeline, frames, times, numbers=numbers)
    flipped = None
    for seed in range(20):  # some item generator draws the flip (p = 0.5)
        out = clip_to_input(pipeline, frames, times, numbers=numbers, train=True, rng=np.random.default_rng(seed))
        if not torch.equal(out, plain):
            flipped = out
            break
    assert flipped is not None
    mirrored_rgb = plain[:3].flip(-1)
    assert torch.allclose(flipped[:3], mirrored_rgb, atol=1e-5)
    # the flow of the mirrored frames (computed after flipping here would differ slightly): dx negated, dy kept
    assert torch.equal(flipped[3], -plain[3].flip(-1)) and torch.equal(flipped[4], plain[4].flip(-1))


def test_rgb_training_draws_depend_on_the_item_generator_alone():
    pipeline = ClipPipeline(sampling=SamplingSpec("uniform", num_frames=4), transform=TransformSpec(size=12))
    frames = _frames()
    times = np.array([0.0, 1.0, 3.0, 5.0])
    needed = frames_needed(times)
    a = clip_to_input(pipeline, frames[needed], times, numbers=needed, train=True, rng=np.random.default_rng(7))
    torch.manual_seed(123)  # the global generator must not matter
    b = clip_to_input(pipeline, frames[needed], times, numbers=needed, train=True, rng=np.random.default_rng(7))
    assert torch.equal(a, b) and a.shape == (3, 4, 12, 12)
    evaluation = clip_to_input(pipeline, frames[needed], times, numbers=needed)
    assert not torch.equal(a, evaluation)  # training crops and flips; evaluation does not


def test_a_dataset_takes_a_pipeline_or_its_parts_not_both():
    from microexp.data.dataset import MicroExpressionDataset, REQUIRED_COLUMNS
    import pandas as pd

    table = pd.DataFrame({c: [] for c in REQUIRED_COLUMNS})
    pipeline = ClipPipeline(modality="flow")
    assert MicroExpressionDataset(table, pipeline=pipeline).pipeline is pipeline
    assert MicroExpressionDataset(table, modality="flow").pipeline == pipeline  # composed from its parts
    with pytest.raises(TypeError, match="not both"):
        MicroExpressionDataset(table, pipeline=pipeline, modality="flow")


def test_version_1_pipelines_load_without_an_apex_key():
    data = ClipPipeline(modality="flow").to_dict()
    old = {k: v for k, v in data.items() if k != "apex"} | {"version": 1}
    assert ClipPipeline.from_dict(old) == ClipPipeline(modality="flow")
    with pytest.raises(ConfigError, match="keys"):
        ClipPipeline.from_dict({**old, "version": 2})  # version 2 must carry apex
