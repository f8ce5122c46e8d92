"""The Dataset: output layout, frame selection through every backend kind, the clip cache."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import microexp.data.dataset as dataset_module
from microexp.data.dataset import MicroExpressionDataset
from microexp.data.sampling import SamplingSpec
from microexp.data.transforms import TransformSpec
from microexp.data.video import write_video
from microexp.errors import AnnotationError, ConfigError

SIZE = 16
IDENTITY = TransformSpec(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), flip=False, crop_scale=1.0)


def _numbered_frames(count, first):
    """Flat frames whose grey value is the frame number: the output tells which frames were taken."""
    return np.stack([np.full((SIZE, SIZE, 3), first + i, dtype=np.uint8) for i in range(count)])


def _row(clip, path, onset, apex, offset, first_frame, label):
    return {"subject": 1, "clip": clip, "path": str(path), "onset": onset, "apex": apex, "offset": offset,
            "first_frame": first_frame, "fps": 200.0, "emotion": "happiness", "aus": "6+12",
            "dataset": "microexp", "apex_estimated": False, "label": label}


@pytest.fixture()
def clip_table(tmp_path):
    """One lossless video numbered from 1 and one frame folder numbered from 40."""
    video = tmp_path / "a.mp4"
    write_video(video, _numbered_frames(30, 1), fps=200, lossless=True)
    folder = tmp_path / "b"
    folder.mkdir()
    for i, frame in enumerate(_numbered_frames(20, 40)):
        Image.fromarray(frame).save(folder / f"img{40 + i}.png")
    return pd.DataFrame([_row("a", video, 3, 10, 25, 1, 2), _row("b", folder, 42, 50, 57, 0, 5)])


def _grey_levels(video):
    """Mean value per frame in 0..255 of a (C, T, H, W) unnormalised tensor."""
    return [round(float(v) * 255) for v in video.mean(dim=(0, 2, 3))]


def test_item_layout_and_exact_frames(clip_table):
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("uniform", num_frames=4), transform=IDENTITY)
    item = ds[0]
    assert item["video"].shape == (3, 4, SIZE, SIZE) and item["video"].dtype == torch.float32
    assert item["label"].item() == 2 and item["subject"] == 1 and item["clip"] == "a" and item["aus"] == "6+12"
    expected = [3, 10, 18, 25]  # uniform from onset 3 to offset 25
    assert item["indices"].tolist() == expected
    assert _grey_levels(item["video"]) == expected  # video numbered from 1: value == frame number
    folder_item = ds[1]
    assert folder_item["indices"].tolist() == [42, 47, 52, 57]
    assert _grey_levels(folder_item["video"]) == [42, 47, 52, 57]


def test_tim_interpolates_short_clips(clip_table):
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("tim", num_frames=8), transform=IDENTITY)
    table = clip_table.copy()
    table.loc[0, ["onset", "apex", "offset"]] = [5, 6, 8]  # 4 frames -> 8 interpolated
    ds = MicroExpressionDataset(table, sampling=SamplingSpec("tim", num_frames=8), transform=IDENTITY)
    levels = [float(v) * 255 for v in ds[0]["video"].mean(dim=(0, 2, 3))]
    assert np.allclose(levels, np.linspace(5, 8, 8), atol=0.51)  # rounded to uint8, not repeated


def test_dataloader_batches_with_workers(clip_table):
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("tsn", num_frames=4), transform=IDENTITY,
                                train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, timeout=60)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 3, 4, SIZE, SIZE)
    assert batch["clip"] == ["a", "b"] and batch["label"].tolist() == [2, 5]


def test_training_draws_are_reproducible_per_epoch(clip_table):
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("tsn", num_frames=4), transform=IDENTITY,
                                train=True, seed=3)
    first = [ds[0]["indices"].tolist() for _ in range(2)]
    assert first[0] == first[1]
    draws = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.add(tuple(ds[0]["indices"].tolist()))
    assert len(draws) > 1


def test_augmentation_depends_on_seed_epoch_and_index_only(tmp_path):
    folder = tmp_path / "ramp"
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 255, SIZE * 4, dtype=np.uint8)[None, :, None], (SIZE * 4, 1, 3))
    for i in range(12):  # a horizontal ramp: every crop and flip changes the pixels
        Image.fromarray(np.roll(ramp, i, axis=0)).save(folder / f"{i:03d}.png")
    table = pd.DataFrame([_row("ramp", folder, 1, 5, 10, 0, 0)])
    augment = TransformSpec(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), flip=True, crop_scale=0.3)
    ds = MicroExpressionDataset(table, sampling=SamplingSpec("uniform", num_frames=4), transform=augment,
                                train=True, seed=3)
    torch.manual_seed(1)
    a = ds[0]["video"]
    torch.manual_seed(2)  # another global state, as in another worker or after a resume
    b = ds[0]["video"]
    assert torch.equal(a, b)
    after_item = torch.rand(1)
    torch.manual_seed(2)
    assert torch.equal(after_item, torch.rand(1))  # the global stream (dropout's) is left untouched
    crops = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        crops.add(round(ds[0]["video"][0, 0].sum().item(), 3))
    assert len(crops) > 1  # still random across epochs


def test_cache_serves_later_epochs_without_decoding(clip_table, tmp_path, monkeypatch):
    opened = []
    real_open = dataset_module.open_video

    def counting_open(path, **kwargs):
        opened.append(path)
        return real_open(path, **kwargs)

    monkeypatch.setattr(dataset_module, "open_video", counting_open)
    cache_dir = tmp_path / "cache"
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("uniform", num_frames=4), transform=IDENTITY,
                                cache_dir=cache_dir)
    uncached = MicroExpressionDataset(clip_table, sampling=SamplingSpec("uniform", num_frames=4),
                                      transform=IDENTITY)
    first = [ds[i]["video"] for i in range(2)]
    assert len(opened) == 2
    second = [ds[i]["video"] for i in range(2)]
    assert len(opened) == 2  # served from the cache
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert torch.equal(first[0], uncached[0]["video"])
    # another sampling of the same span is served from the same cache entry
    other = MicroExpressionDataset(clip_table, sampling=SamplingSpec("dense", num_frames=4, stride=2),
                                   transform=IDENTITY, cache_dir=cache_dir)
    assert _grey_levels(other[0]["video"]) == [3, 5, 7, 9]
    assert len(opened) == 3  # only the uncached comparison dataset decoded


def test_missing_label_column_is_a_clear_error(clip_table):
    with pytest.raises(AnnotationError, match="label"):
        MicroExpressionDataset(clip_table.drop(columns=["label"]), sampling=SamplingSpec())


def _moving_texture_folder(folder, count=7, size=32, step=0.5):
    """A smooth texture moving right by ``step`` px per frame, as a PNG folder numbered from 1."""
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (size * 2, size * 2)).astype(np.float32), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 20, 235, cv2.NORM_MINMAX)
    folder.mkdir()
    for i in range(count):
        shift = np.float32([[1, 0, step * i - size / 2], [0, 1, -size / 2]])
        frame = cv2.warpAffine(texture, shift, (size, size), flags=cv2.INTER_CUBIC)
        Image.fromarray(np.repeat(frame[..., None], 3, axis=2).round().astype(np.uint8)).save(folder / f"{i + 1:05d}.png")


@pytest.fixture()
def moving_table(tmp_path):
    _moving_texture_folder(tmp_path / "m")
    return pd.DataFrame([_row("m", tmp_path / "m", 1, 4, 7, 0, 0)])


def _flow_dataset(table, **kwargs):
    from microexp.data.flow import FlowSpec

    spec = TransformSpec(size=32, mean=(0, 0, 0), std=(1, 1, 1), flip=kwargs.pop("flip", False))
    return MicroExpressionDataset(table, sampling=SamplingSpec("uniform", num_frames=4), transform=spec,
                                  flow=FlowSpec(method="farneback"), **kwargs)


def test_rgb_plus_flow_channels_measure_the_motion(moving_table):
    item = _flow_dataset(moving_table, modality="rgb+flow")[0]
    video = item["video"]
    assert video.shape == (5, 4, 32, 32)
    assert item["indices"].tolist() == [1, 3, 5, 7]
    dx = video[3, :, 8:-8, 8:-8].mean(dim=(1, 2))  # interior, against the onset frame
    dy = video[4, :, 8:-8, 8:-8].mean(dim=(1, 2))
    assert torch.allclose(dx, torch.tensor([0.0, 1.0, 2.0, 3.0]), atol=0.15)
    assert dy.abs().max() < 0.15
    flow_only = _flow_dataset(moving_table, modality="flow")[0]["video"]
    assert torch.equal(flow_only, video[3:])


def test_flow_flip_negates_horizontal_motion(moving_table):
    ds = _flow_dataset(moving_table, modality="flow", train=True, flip=True)
    signs = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        signs.add(round(float(ds[0]["video"][0, -1, 8:-8, 8:-8].mean())))
    assert signs == {3, -3}


def test_dataset_reads_the_flow_that_microexp_flow_precomputed(moving_table, tmp_path, monkeypatch):
    import microexp.data.flow as flow_module
    from microexp.data.cache import ClipCache

    cache_dir = tmp_path / "cache"
    summary = flow_module.precompute_flow(moving_table, cache=ClipCache(cache_dir),
                                          sampling=SamplingSpec("uniform", num_frames=4), method="farneback",
                                          size=32, progress=False)
    assert summary.computed == 1
    expected = _flow_dataset(moving_table, modality="flow")[0]["video"]

    def no_recompute(*args, **kwargs):
        raise AssertionError("flow recomputed despite the cache")

    monkeypatch.setattr(flow_module, "clip_flow", no_recompute)
    cached = _flow_dataset(moving_table, modality="flow", cache_dir=cache_dir)[0]["video"]
    assert torch.allclose(cached, expected, atol=2e-3)  # float16 storage


def test_bad_modality_is_a_config_error(clip_table):
    from microexp.errors import ConfigError

    with pytest.raises(ConfigError, match="rgb\\+flow"):
        MicroExpressionDataset(clip_table, sampling=SamplingSpec(), modality="depth")


@pytest.mark.parametrize("mode, expected", [("first", [0, 7, 15, 22]), ("previous", [0, 7, 8, 7])])
def test_frame_difference_shows_change_from_the_first_or_previous_frame(clip_table, mode, expected):
    ds = MicroExpressionDataset(clip_table, sampling=SamplingSpec("uniform", num_frames=4), transform=IDENTITY,
                                frame_difference=mode)
    item = ds[0]  # frames 3, 10, 18, 25 whose grey value is the frame number
    assert item["video"].shape == (3, 4, SIZE, SIZE)
    assert _grey_levels(item["video"]) == expected


def test_bad_frame_difference_is_a_config_error(clip_table):
    with pytest.raises(ConfigError, match="frame_difference='last'"):
        MicroExpressionDataset(clip_table, sampling=SamplingSpec("uniform", num_frames=4), frame_difference="last")
