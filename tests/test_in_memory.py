"""Clips in memory: evaluation batches equal the Dataset's items, training augmentation follows the per-item
pipeline's distribution (crop and flip per sample, a flow flip negates dx), draws are reproducible per
epoch, the auto decision, and one store per process."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from microexp.data.apex_flow import ApexFlowSpec, flip_encoded
from microexp.data.dataset import EpochIndexSampler, MicroExpressionDataset
from microexp.data.flow import FlowSpec
from microexp.data.in_memory import (
    InMemoryClips, _crop_params, _LAST, estimate_bytes, in_memory_plan, random_resized_crop,
)
from microexp.data.pipeline import ClipPipeline
from microexp.data.sampling import SamplingSpec
from microexp.data.transforms import TransformSpec
from microexp.errors import ConfigError

SIZE = 16


@pytest.fixture(scope="module")
def clip_table(tmp_path_factory):
    """Six frame folders (three subjects) of smooth random frames that move a little, numbered from 0."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = []
    for n in range(6):
        folder = root / f"c{n}"
        folder.mkdir()
        base = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
        for i in range(8):
            image = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((20, 20), Image.BILINEAR))
            Image.fromarray(np.roll(image, i // 2, axis=1)).save(folder / f"img{i}.png")
        rows.append({"subject": n // 2 + 1, "clip": f"c{n}", "path": str(folder), "onset": 0, "apex": 3 + n % 3,
                     "offset": 7, "first_frame": 0, "fps": 200.0, "aus": "4", "label": n % 3})
    return pd.DataFrame(rows)


def _rgb(**kwargs):
    transform = dict(size=SIZE, crop_scale=1.0, flip=True)
    transform.update(kwargs.pop("transform", {}))
    return ClipPipeline(sampling=kwargs.pop("sampling", SamplingSpec("uniform", num_frames=3)),
                        transform=TransformSpec(**transform), **kwargs)


PIPELINES = {
    "rgb": _rgb(),
    "rgb_gray_diff_tim": _rgb(sampling=SamplingSpec("tim", num_frames=10), frame_difference="first",
                              transform={"grayscale": True, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}),
    "flow": _rgb(modality="flow", flow=FlowSpec(method="farneback", strain=True)),
    "rgb+flow": _rgb(modality="rgb+flow", flow=FlowSpec(method="farneback")),
    "apex_flow": _rgb(modality="apex_flow", apex=ApexFlowSpec(method="farneback", compute_size=SIZE)),
    "apex_flow_pixels": _rgb(modality="apex_flow",
                             apex=ApexFlowSpec(method="farneback", compute_size=20, encoding="pixels")),
}


def _items(dataset, indices):
    return [dataset[i] for i in indices]


@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("cached", [False, True])
def test_eval_batches_equal_the_datasets_items(clip_table, tmp_path, name, cached):
    pipeline = PIPELINES[name]
    cache = tmp_path / "cache" if cached else None
    dataset = MicroExpressionDataset(clip_table, pipeline=pipeline, train=False, cache_dir=cache)
    store = InMemoryClips.build(dataset)
    fold = clip_table[clip_table["subject"].isin([1, 3])]  # a fold's subset, in table order
    batches = list(store.loader(fold, batch_size=3))
    assert len(batches) == 2
    video = torch.cat([b["video"] for b in batches])
    items = _items(dataset, list(fold.index))
    assert_close(video, torch.stack([item["video"] for item in items]), rtol=0, atol=0)
    assert video.dtype == torch.float32 and video.shape[1:] == pipeline.input_shape()
    assert [c for b in batches for c in b["clip"]] == [item["clip"] for item in items]
    assert torch.cat([b["label"] for b in batches]).tolist() == [item["label"].item() for item in items]
    assert torch.cat([b["subject"] for b in batches]).tolist() == [1, 1, 3, 3]
    assert_close(torch.cat([b["indices"] for b in batches]), torch.stack([item["indices"] for item in items]))
    loader = store.loader(fold, batch_size=3)
    assert list(loader.dataset.table["clip"]) == list(fold["clip"]) and len(loader.dataset) == 4  # DataLoader-like
    if pipeline.modality in ("rgb", "rgb+flow"):
        assert store.frames.dtype == torch.uint8
    if cached and pipeline.modality in ("flow", "rgb+flow"):
        assert store.flow.dtype == torch.float16  # the cache stores float16: holding it so is exact


@pytest.mark.parametrize("encoding", ["minmax", "pixels"])
def test_apex_flow_files_eval_and_flip(tmp_path, encoding):
    rng = np.random.default_rng(3)
    rows = []
    for n in range(4):
        path = tmp_path / f"f{n}.npy"
        np.save(path, rng.normal(size=(20, 20, 2)).astype(np.float32))
        rows.append({"subject": n + 1, "clip": f"f{n}", "path": "", "flow_path": str(path), "onset": "", "apex": "",
                     "offset": "", "first_frame": 0, "fps": "", "aus": "", "label": n % 2})
    table = pd.DataFrame(rows)
    pipeline = _rgb(modality="apex_flow", apex=ApexFlowSpec(encoding=encoding))
    dataset = MicroExpressionDataset(table, pipeline=pipeline)
    store = InMemoryClips.build(dataset)
    video = next(iter(store.loader(table, batch_size=4)))["video"]
    assert_close(video, torch.stack([dataset[i]["video"] for i in range(4)]), rtol=0, atol=0)
    assert store.flow.dtype == torch.float32  # encoded flow is no float16 value: kept exactly
    flipped = next(iter(store.loader([0] * 32, batch_size=32, train=True)))["video"]
    mirrored = torch.from_numpy(flip_encoded(video[0, :, 0].permute(1, 2, 0).numpy(), encoding)).permute(2, 0, 1)
    assert all(torch.equal(v, video[0]) or torch.equal(v[:, 0], mirrored) for v in flipped)
    assert any(torch.equal(v[:, 0], mirrored) for v in flipped)


def test_a_row_outside_the_store_is_refused(clip_table):
    store = InMemoryClips.build(MicroExpressionDataset(clip_table.iloc[:3], pipeline=PIPELINES["rgb"]))
    with pytest.raises(ValueError, match="'c4' is not in the store"):
        store.loader(clip_table.iloc[4:], batch_size=2)


def _flip_rgb_clip(video):
    """(C, T, H, W) mirrored."""
    return video.flip(-1)


def _flip_flow_clip(video):
    out = video.flip(-1).clone()
    out[0] = -out[0]
    return out


@pytest.mark.parametrize("name", ["rgb", "flow", "rgb+flow", "apex_flow", "apex_flow_pixels"])
def test_training_flips_each_sample_and_a_flow_flip_reverses_dx(clip_table, name):
    pipeline = PIPELINES[name]  # crop_scale 1: the flip is the only augmentation
    dataset = MicroExpressionDataset(clip_table, pipeline=pipeline)
    store = InMemoryClips.build(dataset)
    plain = torch.stack([item["video"] for item in _items(dataset, [0] * 1)])[0]
    if name == "rgb":
        mirrored = _flip_rgb_clip(plain)
    elif name == "flow":
        mirrored = _flip_flow_clip(plain)
    elif name == "rgb+flow":
        mirrored = torch.cat([_flip_rgb_clip(plain[:3]), _flip_flow_clip(plain[3:])])
    else:  # the Dataset's own flip of an encoded apex flow
        encoded = plain[:, 0].permute(1, 2, 0).numpy()
        mirrored = torch.from_numpy(flip_encoded(encoded, pipeline.apex.encoding)).permute(2, 0, 1)[:, None]
    assert not torch.equal(mirrored, plain)
    batch = next(iter(store.loader([0] * 64, batch_size=64, train=True, seed=1)))["video"]
    flipped = [bool(torch.equal(v, mirrored)) for v in batch]
    kept = [bool(torch.equal(v, plain)) for v in batch]
    assert all(f or k for f, k in zip(flipped, kept))  # every sample is the clip or its exact mirror image
    assert 16 <= sum(flipped) <= 48  # drawn per sample with probability 1/2


def test_crop_parameters_follow_random_resized_crops(clip_table):
    """The drawn crops have torchvision's distribution (10 trials of area and ratio, uniform position)."""
    draws = 3000
    top, left, h, w = _crop_params(draws, SIZE, SIZE, (0.5, 1.0), torch.Generator().manual_seed(0))
    crop = v2.RandomResizedCrop(SIZE, scale=(0.5, 1.0), ratio=(0.9, 1.1))
    torch.manual_seed(0)
    frame = torch.zeros(3, SIZE, SIZE)
    reference = [crop.make_params([frame]) for _ in range(draws)]
    for ours, key in ((top, "top"), (left, "left"), (h, "height"), (w, "width")):
        theirs = torch.tensor([float(p[key]) for p in reference])
        ours = ours.double()
        assert abs(ours.mean() - theirs.mean()) < 0.15, key
        assert abs(ours.std() - theirs.std()) < 0.15, key
    assert ((top + h) <= SIZE).all() and ((left + w) <= SIZE).all() and (h > 0).all()


def test_random_resized_crop_matches_torchvision_per_sample():
    frames = torch.randint(0, 256, (8, 2, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = random_resized_crop(frames, size=SIZE, scale=(0.5, 1.0), generator=torch.Generator().manual_seed(5))
    params = _crop_params(8, SIZE, SIZE, (0.5, 1.0), torch.Generator().manual_seed(5))
    different = 0
    for b in range(8):
        top, left, h, w = (int(p[b]) for p in params)
        reference = F.resized_crop(frames[b], top, left, h, w, [SIZE, SIZE], antialias=True)
        assert_close(out[b].int(), reference.int(), rtol=0, atol=1)  # torchvision's fixed-point uint8 rounding
        different += int(not torch.equal(out[b], frames[b]))
    assert different >= 6  # each sample has its own crop (the whole frame is rare at scale 0.5)


def test_training_crops_differ_per_sample_and_are_reproducible_per_epoch(clip_table):
    pipeline = _rgb(transform={"crop_scale": 0.5})
    dataset = MicroExpressionDataset(clip_table, pipeline=pipeline, train=True)
    store = InMemoryClips.build(dataset)
    generator = torch.Generator()
    sampler = EpochIndexSampler(torch.utils.data.RandomSampler(range(6), generator=generator))

    def epoch(number, loader):
        generator.manual_seed(100 + number)  # as the engine reseeds its sampler generator per epoch
        sampler.set_epoch(number)
        return [b["video"] for b in loader]

    loader = store.loader(clip_table, batch_size=4, sampler=sampler, train=True, seed=7)
    assert len(loader) == 2
    first = [epoch(e, loader) for e in range(3)]
    resumed = store.loader(clip_table, batch_size=4, sampler=sampler, train=True, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first[2], epoch(2, resumed)))  # a resumed epoch draws the same
    unthreaded = store.loader(clip_table, batch_size=4, sampler=sampler, train=True, seed=7, prefetch=False)
    assert all(torch.equal(a, b) for a, b in zip(first[1], epoch(1, unthreaded)))  # prefetching changes nothing
    assert not torch.equal(first[0][0], first[1][0])
    same_clip = next(iter(store.loader([2] * 16, batch_size=16, train=True, seed=0)))["video"]
    assert len({tuple(v.flatten().tolist()) for v in same_clip}) >= 12  # crops drawn per sample
    other_seed = next(iter(store.loader([2] * 16, batch_size=16, train=True, seed=1)))["video"]
    assert not torch.equal(same_clip, other_seed)
    rank_one = next(iter(store.loader([2] * 16, batch_size=16, train=True, seed=(0, 1))))["video"]
    assert not torch.equal(same_clip, rank_one)  # (seed, rank): each DDP rank draws its own augmentations
    assert len(store.loader(clip_table, batch_size=4, sampler=sampler, drop_last=True)) == 1


def test_training_crop_statistics_match_the_per_item_pipeline(clip_table):
    """Mean and spread over many draws of one clip agree with the Dataset's training items."""
    pipeline = _rgb(transform={"crop_scale": 0.5})
    dataset = MicroExpressionDataset(clip_table, pipeline=pipeline, train=True)
    store = InMemoryClips.build(dataset)
    ours = next(iter(store.loader([1] * 400, batch_size=400, train=True, seed=3)))["video"]
    theirs = torch.stack([dataset[(epoch, 1)]["video"] for epoch in range(400)])
    assert abs(float(ours.mean() - theirs.mean())) < 0.02
    assert_close(ours.std(dim=0), theirs.std(dim=0), rtol=0, atol=0.2)
    assert_close(ours.mean(dim=0), theirs.mean(dim=0), rtol=0, atol=0.25)


def test_auto_decision(clip_table):
    rgb = PIPELINES["rgb"]
    tsn = _rgb(sampling=SamplingSpec("tsn", num_frames=3))
    plan = in_memory_plan(rgb, clip_table, mode="auto", limit_mb=1)
    assert plan.use and "in memory" in plan.reason and plan.estimated_mb == estimate_bytes(rgb, 6) / 2**20
    assert estimate_bytes(rgb, 6) == 6 * (3 * 3 * SIZE * SIZE + 3 * 8)
    over = in_memory_plan(rgb, 10**6, mode="auto", limit_mb=1024)
    assert not over.use and "over data.in_memory_limit_mb=1024" in over.reason
    assert not in_memory_plan(rgb, clip_table, mode="auto", limit_mb=0).use
    assert in_memory_plan(rgb, 10**6, mode="on", limit_mb=1).use
    assert not in_memory_plan(rgb, clip_table, mode="off").use
    refused = in_memory_plan(tsn, clip_table, mode="auto")
    assert not refused.use and "'tsn'" in refused.reason
    with pytest.raises(ConfigError, match=r"data.in_memory=on: sampling 'tsn'"):
        in_memory_plan(tsn, clip_table, mode="on")
    with pytest.raises(ConfigError, match="data.in_memory='yes'"):
        in_memory_plan(rgb, clip_table, mode="yes")
    flow_tsn = _rgb(sampling=SamplingSpec("tsn", num_frames=3), modality="flow")  # flow samples fixed frames
    assert in_memory_plan(flow_tsn, clip_table, mode="on").use
    with pytest.raises(ConfigError, match="'tsn'"):
        InMemoryClips.build(MicroExpressionDataset(clip_table, pipeline=tsn))


def test_one_store_per_process(clip_table, tmp_path):
    _LAST.clear()
    dataset = MicroExpressionDataset(clip_table, pipeline=PIPELINES["rgb"], train=True, cache_dir=tmp_path)
    store = InMemoryClips.shared(dataset)
    again = InMemoryClips.shared(MicroExpressionDataset(clip_table, pipeline=PIPELINES["rgb"], cache_dir=tmp_path))
    assert again is store  # a second fold of the same table and pipeline: the clips are held once
    assert store.nbytes == 6 * 3 * 3 * SIZE * SIZE + 6 * (8 + 8 + 3 * 8)
    other = InMemoryClips.shared(MicroExpressionDataset(clip_table.iloc[:4], pipeline=PIPELINES["rgb"],
                                                        cache_dir=tmp_path))
    assert other is not store and len(other) == 4
    assert _LAST.store is other  # only the last store is kept
    _LAST.clear()


def test_small_input_benchmark_reports_both_paths(tmp_path):
    from microexp.benchmark.small_inputs import measure_small_inputs

    section = measure_small_inputs(tmp_path, device="cpu", clips=24, subjects=4, epochs=2, batch_size=8, workers=0)
    for path in ("per_item_w0", "in_memory"):
        fraction = section.figure(f"{path}.data_fraction")
        assert fraction is not None and all(0 <= v <= 1 for v in fraction.values)
        assert section.figure(f"{path}.epoch_seconds").median > 0
    assert section.details["input"] == [3, 1, 28, 28] and section.details["store_mb"] > 0
    assert section.figure("per_item_over_in_memory.epoch_seconds") is not None


def test_a_batch_sampler_gives_the_same_batches_as_its_sampler(clip_table):
    """Under DDP the engine passes a batch sampler (a rank's share); one rank of one is the plain stream."""
    from microexp.data.samplers import DistributedBatchSampler

    store = InMemoryClips.build(MicroExpressionDataset(clip_table, pipeline=_rgb(transform={"crop_scale": 0.5})))
    generator = torch.Generator()
    sampler = EpochIndexSampler(torch.utils.data.RandomSampler(range(6), generator=generator))
    sampler.set_epoch(3)
    generator.manual_seed(0)
    plain = list(store.loader(clip_table, batch_size=3, sampler=sampler, train=True, seed=2))
    generator.manual_seed(0)
    batches = DistributedBatchSampler(sampler, batch_size=3, rank=0, world_size=1)
    shared = store.loader(clip_table, batch_sampler=batches, train=True, seed=2)
    assert len(shared) == 2
    assert all(torch.equal(a["video"], b["video"]) and a["clip"] == b["clip"] for a, b in zip(plain, shared))
    with pytest.raises(ValueError, match="batch_sampler excludes"):
        store.loader(clip_table, batch_sampler=batches, batch_size=3)
