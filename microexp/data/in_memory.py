"""Clips held in memory as tensors, with training augmentation applied per batch: small inputs without
per-item overhead.

A one-frame 28 px input (apex-flow models, apex-frame baselines) costs about 1 ms per item through the
Dataset (cache read, transforms, collation) against a fraction of that in the model, so the model waits
for data most of the time. :class:`InMemoryClips` runs the Dataset once per clip, keeps what its
pipeline makes *before* the random training augmentations, and serves batches from those tensors:

* what is stored is a deterministic function of the clip: the sampled RGB frames as uint8
  ``(N, T, 3, S, S)`` (before crop, flip, grayscale, normalisation and frame differences), and the
  flow channels ``(N, C, T, S, S)`` (a flow sequence, or the encoded apex flow ``(N, 3, 1, S, S)``
  before its flip), float16 when every value is exactly a float16 (flows read through the clip cache,
  which stores float16) and float32 otherwise: the stored flow equals the Dataset's exactly;
* evaluation batches (``train=False``) run the pipeline's own evaluation transform on the stored
  frames and equal the Dataset's items;
* training batches draw the same augmentations from the same distributions as the per-item pipeline,
  vectorised over the batch: RGB models get torchvision's RandomResizedCrop (area in
  ``[crop_scale, 1]``, aspect ratio in ``[0.9, 1.1]``, its 10 trials and fallback) computed as a bilinear
  resampling per sample (the crop is never larger than the frame, so it is an upsampling, where
  antialiasing does nothing; rounded to uint8 as the per-item path is, to within one grey level of
  ``v2.functional.resized_crop``) and a horizontal flip with probability 1/2; flow models get the flip
  only, which negates dx (flow sequences) or reverses u in its encoding (apex flow), as
  :func:`~microexp.data.pipeline.clip_to_input` does. The draws come from a ``torch.Generator`` seeded
  from ``(seed, epoch)``: an epoch draws the same augmentations whether or not the run was resumed.

Which pipelines qualify (:func:`unsupported_reason`): every modality (``rgb``, ``flow``, ``rgb+flow``,
``apex_flow``) with a sampling that is deterministic when training. Only ``tsn`` draws random frames
when training, and only for RGB models (flow models sample fixed frames); a stored tensor cannot hold
every draw, so ``tsn`` RGB pipelines load per item. :func:`in_memory_plan` makes the choice of
``data.in_memory`` (``auto`` holds the clips when the pipeline qualifies and they fit
``data.in_memory_limit_mb``).

The training random stream differs from the per-item path's (one generator per epoch instead of one per
item), so a run in memory and one loading per item draw different augmentations: ``data.in_memory`` is
not a result-neutral key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from microexp.data.pipeline import ClipPipeline
from microexp.data.transforms import TransformSpec, build_video_transform, difference_frames
from microexp.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["IN_MEMORY_MODES", "InMemoryClips", "InMemoryLoader", "InMemoryPlan", "InMemoryView", "estimate_bytes",
           "in_memory_plan", "random_resized_crop", "unsupported_reason"]

#: values of ``data.in_memory``
IN_MEMORY_MODES = ("auto", "on", "off")
#: RandomResizedCrop's aspect-ratio range in :func:`~microexp.data.transforms.build_video_transform`
CROP_RATIO = (0.9, 1.1)
#: columns that identify a row of the clip table (a fold's table is matched to the store by them)
_KEY_COLUMNS = ("dataset", "subject", "clip", "path", "flow_path", "first_frame", "onset", "apex", "offset", "fps",
                "aus", "label")
#: channel of u in each apex-flow encoding and what a flip makes of it (as ``apex_flow.flip_encoded``)
_U_CHANNEL = {"minmax": 0, "pixels": 0, "bgr255": 2}
_U_FLIP = {"minmax": lambda u: 1.0 - u, "pixels": lambda u: -u, "bgr255": lambda u: 255.0 - u}


# -- the decision -------------------------------------------------------------------------------------


def unsupported_reason(pipeline: ClipPipeline) -> str | None:
    """Why ``pipeline``'s training inputs cannot be served from stored tensors, or None when they can."""
    moving = pipeline.flow is not None or pipeline.apex is not None  # flow models sample fixed frames
    if pipeline.sampling.strategy == "tsn" and not moving:
        return ("sampling 'tsn' draws new frames every training epoch, which a stored tensor cannot reproduce "
                "(every other sampling is deterministic)")
    return None


def estimate_bytes(pipeline: ClipPipeline, clips: int) -> int:
    """Bytes the store of ``clips`` clips holds at most (flow counted as float32)."""
    channels, frames, height, width = pipeline.input_shape()
    pixels = frames * height * width
    rgb = 3 if pipeline.modality in ("rgb", "rgb+flow") else 0
    per_clip = rgb * pixels + pipeline.flow_channels * pixels * 4 + frames * 8  # frames, flow, frame numbers
    return int(clips) * per_clip


@dataclass(frozen=True)
class InMemoryPlan:
    """The choice of ``data.in_memory`` for one pipeline and clip table.

    Attributes:
        use: serve batches from an :class:`InMemoryClips` store.
        reason: one line for the log, saying why.
        estimated_mb: :func:`estimate_bytes` in MiB.
    """

    use: bool
    reason: str
    estimated_mb: float


def in_memory_plan(pipeline: ClipPipeline, table: pd.DataFrame | int, *, mode: str = "auto",
                   limit_mb: int = 1024) -> InMemoryPlan:
    """Decide whether ``table``'s clips are held in memory.

    Args:
        pipeline: the training pipeline (its random parts decide whether it qualifies).
        table: the clip table the store would hold (or its number of clips).
        mode: ``data.in_memory``: ``auto`` (when the pipeline qualifies and the store fits ``limit_mb``),
            ``on`` (whatever the size) or ``off``.
        limit_mb: ``data.in_memory_limit_mb`` (0: ``auto`` never holds clips in memory).

    Raises:
        ConfigError: an unknown ``mode``, or ``on`` for a pipeline that does not qualify (one line, why).
    """
    if mode not in IN_MEMORY_MODES:
        raise ConfigError(f"data.in_memory={mode!r}: expected one of {', '.join(IN_MEMORY_MODES)}")
    clips = table if isinstance(table, int) else len(table)
    mb = estimate_bytes(pipeline, clips) / 2**20
    size = f"{clips} clips, about {mb:.1f} MB"
    if mode == "off":
        return InMemoryPlan(False, "per-item loading (data.in_memory=off)", mb)
    why = unsupported_reason(pipeline)
    if why is not None:
        if mode == "on":
            raise ConfigError(f"data.in_memory=on: {why}; use data.in_memory=auto or off (per-item loading), or a "
                              "deterministic data.sampling")
        return InMemoryPlan(False, f"per-item loading: {why}", mb)
    if mode == "on":
        return InMemoryPlan(True, f"in memory (data.in_memory=on): {size}; augmentation per batch", mb)
    if mb > limit_mb:
        return InMemoryPlan(False, f"per-item loading: {size} in memory, over data.in_memory_limit_mb={limit_mb}", mb)
    return InMemoryPlan(True, f"in memory: {size} (data.in_memory_limit_mb={limit_mb}); augmentation per batch", mb)


# -- augmentation on a batch --------------------------------------------------------------------------


def _crop_params(batch: int, height: int, width: int, scale: tuple[float, float], generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``top, left, h, w`` (int64 ``(B,)`` each) drawn as ``v2.RandomResizedCrop.make_params`` draws them:
    10 trials of area and log aspect ratio, the first that fits, else the whole frame (a square frame's
    ratio 1 lies inside :data:`CROP_RATIO`); then a uniform position."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, 10, generator=generator, dtype=torch.float64))
    low, high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(low + (high - low) * torch.rand(batch, 10, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * ratio)).long()  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / ratio)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    w = torch.where(found, w.gather(1, first)[:, 0], torch.full_like(found, width, dtype=torch.long))
    h = torch.where(found, h.gather(1, first)[:, 0], torch.full_like(found, height, dtype=torch.long))
    top = (torch.rand(batch, generator=generator, dtype=torch.float64) * (height - h + 1)).floor().long()
    left = (torch.rand(batch, generator=generator, dtype=torch.float64) * (width - w + 1)).floor().long()
    return top, left, h, w


def _axis_weights(start: torch.Tensor, length: torch.Tensor, size_in: int, size_out: int) -> torch.Tensor:
    """``(B, size_out, size_in)`` float32: bilinear resampling (``align_corners=False``, edges clamped) of
    the span ``start .. start + length`` of an axis to ``size_out`` samples, one matrix per sample."""
    out = torch.arange(size_out, dtype=torch.float64)
    length = length.to(torch.float64)[:, None]
    source = ((out + 0.5) * length / size_out - 0.5).clamp(min=0)
    below = source.floor()
    fraction = source - below
    below = torch.minimum(below, length - 1).long()
    above = torch.minimum(below + 1, length.long() - 1)
    weights = torch.zeros(start.shape[0], size_out, size_in, dtype=torch.float64)
    weights.scatter_add_(2, (start[:, None] + below)[..., None], (1 - fraction)[..., None])
    weights.scatter_add_(2, (start[:, None] + above)[..., None], fraction[..., None])
    return weights.to(torch.float32)


def random_resized_crop(frames: torch.Tensor, *, size: int, scale: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop per sample, the same crop for every frame of a sample.

    Args:
        frames: uint8 ``(B, T, C, H, W)``.
        size: output side.
        scale: the crop's area range as a fraction of the frame's.
        generator: source of the draws.

    Returns:
        uint8 ``(B, T, C, size, size)``: each crop resampled bilinearly and rounded.
    """
    batch, frames_per_clip, channels, height, width = frames.shape
    top, left, h, w = _crop_params(batch, height, width, scale, generator)
    rows = _axis_weights(top, h, height, size)  # (B, size, H)
    cols = _axis_weights(left, w, width, size)  # (B, size, W)
    # two batched products, one per axis: (B, H, T*C*W) -> (B, size, T*C*W) -> (B, size*T*C, W) -> (B, ..., size)
    x = frames.permute(0, 3, 1, 2, 4).reshape(batch, height, -1).to(torch.float32)
    x = torch.bmm(rows, x).reshape(batch, -1, width)
    x = torch.bmm(x, cols.transpose(1, 2)).reshape(batch, size, frames_per_clip, channels, size)
    return x.permute(0, 2, 3, 1, 4).round_().clamp_(0, 255).to(torch.uint8)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


# -- the store ----------------------------------------------------------------------------------------


class InMemoryClips:
    """Every clip of a table as tensors, built once per process (see the module docstring).

    Build it with :meth:`build` (or :meth:`shared`, which reuses the store of the same table and pipeline)
    from an evaluation-mode Dataset of the *whole* clip table; each fold then serves its subsets with
    :meth:`loader`.

    Attributes:
        pipeline: the pipeline the stored tensors come from.
        table: the clip table, one row per stored clip.
        frames: uint8 ``(N, T, 3, S, S)`` sampled RGB frames, or None (flow-only modalities).
        flow: float16/float32 ``(N, C, T, S, S)`` flow channels (encoded apex flow: ``(N, 3, 1, S, S)``), or None.
        labels, subjects: int64 ``(N,)``; indices: int64 ``(N, T)`` frame numbers shown; clips, aus: str lists.
    """

    def __init__(self, *, pipeline: ClipPipeline, table: pd.DataFrame, frames: torch.Tensor | None,
                 flow: torch.Tensor | None, labels: torch.Tensor, subjects: torch.Tensor, indices: torch.Tensor,
                 clips: list[str], aus: list[str]) -> None:
        self.pipeline = pipeline
        self.table = table.reset_index(drop=True)
        self.frames = frames
        self.flow = flow
        self.labels = labels
        self.subjects = subjects
        self.indices = indices
        self.clips = clips
        self.aus = aus
        self._positions: dict[tuple[str, ...], int] = {}
        for position, key in enumerate(_row_keys(self.table)):
            self._positions.setdefault(key, position)
        spec = pipeline.transform
        # the pipeline's evaluation transform (its crop and flip are drawn here, per batch)
        self._post = build_video_transform(spec, train=False)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        parts = [t for t in (self.frames, self.flow, self.labels, self.subjects, self.indices) if t is not None]
        return sum(t.numel() * t.element_size() for t in parts)

    # -- building ------------------------------------------------------------------------------------

    @classmethod
    def build(cls, dataset: Any, *, num_workers: int = 0) -> "InMemoryClips":
        """Run ``dataset`` (a :class:`~microexp.data.dataset.MicroExpressionDataset`) once per clip, in
        evaluation mode, and keep its inputs before augmentation.

        Args:
            dataset: its table, pipeline, backend, cache folder and seed are used (not its ``train``).
            num_workers: DataLoader workers for the one pass.

        Raises:
            ConfigError: the dataset's pipeline does not qualify (:func:`unsupported_reason`).
        """
        from microexp.data.dataset import MicroExpressionDataset

        pipeline: ClipPipeline = dataset.pipeline
        if len(dataset) == 0:
            raise ValueError("clips in memory: the dataset has no clips")
        why = unsupported_reason(pipeline)
        if why is not None:
            raise ConfigError(f"clips in memory: {why}")
        rgb = pipeline.modality in ("rgb", "rgb+flow")
        raw = pipeline
        if rgb:  # frames / 255 exactly: no normalisation, grayscale or differences (applied per batch)
            t = pipeline.transform
            raw = replace(pipeline, frame_difference="none",
                          transform=TransformSpec(size=t.size, crop_scale=1.0, flip=False, grayscale=False,
                                                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
        source = MicroExpressionDataset(dataset.table, pipeline=raw, train=False, backend=dataset.backend,
                                        cache_dir=None if dataset.cache is None else dataset.cache.root,
                                        seed=dataset.seed)
        loader = DataLoader(source, batch_size=64, num_workers=num_workers, shuffle=False)
        frames, flows, labels, subjects, indices, clips, aus = [], [], [], [], [], [], []
        for batch in loader:
            video = batch["video"]  # (B, C, T, S, S)
            if rgb:
                scaled = video[:, :3] * 255
                quantised = scaled.round()
                if (quantised - scaled).abs().max() > 1e-3:
                    raise RuntimeError("clips in memory: the pipeline's RGB frames are not 8-bit values")
                frames.append(quantised.to(torch.uint8).permute(0, 2, 1, 3, 4).contiguous())  # (B, T, 3, S, S)
                video = video[:, 3:]
            if video.shape[1]:
                flows.append(video.contiguous())
            labels.append(batch["label"])
            subjects.append(torch.as_tensor(batch["subject"], dtype=torch.int64))
            indices.append(batch["indices"])
            clips += list(batch["clip"])
            aus += list(batch["aus"])
        flow = torch.cat(flows) if flows else None
        if flow is not None and torch.equal(flow.half().float(), flow):
            flow = flow.half()  # exact: e.g. flow read through the cache, which stores float16
        table = source.table
        return cls(pipeline=pipeline, table=table, frames=torch.cat(frames) if frames else None, flow=flow,
                   labels=torch.cat(labels), subjects=torch.cat(subjects), indices=torch.cat(indices),
                   clips=[str(c) for c in clips], aus=[str(a) for a in aus])

    @classmethod
    def shared(cls, dataset: Any, *, num_workers: int = 0) -> "InMemoryClips":
        """:meth:`build`, or the store this process last built for the same table, pipeline, backend and
        cache folder: folds (and sweep trials) in one process hold the clips once. Only the last store is
        kept, so memory never holds two."""
        key = _store_key(dataset)
        with _LAST.lock:
            if _LAST.key == key and _LAST.store is not None:
                return _LAST.store
            _LAST.key, _LAST.store = None, None  # let the old store go before the new one is built
            started = time.perf_counter()
            store = cls.build(dataset, num_workers=num_workers)
            logger.info("clips in memory: %d clips, %.1f MB, built in %.1f s", len(store), store.nbytes / 2**20,
                        time.perf_counter() - started)
            _LAST.key, _LAST.store = key, store
            return store

    # -- serving -------------------------------------------------------------------------------------

    def positions(self, table: pd.DataFrame) -> np.ndarray:
        """Store positions of ``table``'s rows, in order (a fold's subset of the table the store was built from).

        Raises:
            ValueError: a row the store does not hold (naming its clip).
        """
        out = np.empty(len(table), dtype=np.int64)
        for i, key in enumerate(_row_keys(table.reset_index(drop=True))):
            found = self._positions.get(key)
            if found is None:
                clip = table["clip"].iloc[i] if "clip" in table.columns else i
                raise ValueError(f"clips in memory: clip {clip!r} is not in the store (it was built from another "
                                 "table); build the store from the whole clip table")
            out[i] = found
        return out

    def loader(self, table: pd.DataFrame | Sequence[int] | np.ndarray, *, batch_size: int | None = None,
               sampler: Iterable[Any] | None = None, batch_sampler: Iterable[Sequence[Any]] | None = None,
               drop_last: bool = False, train: bool = False, seed: int | Sequence[int] = 0, pin_memory: bool = False,
               prefetch: bool = True) -> "InMemoryLoader":
        """An iterable of batches over ``table``'s clips, like a DataLoader over the Dataset of ``table``.

        Args:
            table: the rows to serve (matched with :meth:`positions`), or store positions.
            batch_size: clips per batch (not with ``batch_sampler``).
            sampler: yields indices into ``table`` (or ``(epoch, index)`` pairs, as
                :class:`~microexp.data.dataset.EpochIndexSampler` does); None: ``table``'s order, epoch 0.
            batch_sampler: instead of ``sampler`` and ``batch_size``: yields lists of them (e.g.
                :class:`~microexp.data.samplers.DistributedBatchSampler`, a rank's share under DDP).
            drop_last: drop a last incomplete batch (not with ``batch_sampler``).
            train: draw crops and flips per batch (the pipeline's training augmentation).
            seed: with the epoch, seeds the augmentation's generator (the Dataset's ``seed``; a sequence such
                as ``(seed, rank)`` gives each DDP rank its own draws).
            pin_memory: pin each batch's ``video`` (for non-blocking copies to CUDA).
            prefetch: make the next batch on a thread while the current one trains (same batches either way).
        """
        positions = self.positions(table) if isinstance(table, pd.DataFrame) else np.asarray(table, dtype=np.int64)
        if batch_sampler is not None:
            if batch_size is not None or sampler is not None or drop_last:
                raise ValueError("batch_sampler excludes batch_size, sampler and drop_last (as in a DataLoader)")
        elif batch_size is None or batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected an integer >= 1")
        return InMemoryLoader(self, positions, batch_size=batch_size or 0, sampler=sampler,
                              batch_sampler=batch_sampler, drop_last=drop_last, train=train, seed=seed,
                              pin_memory=pin_memory, prefetch=prefetch)

    def batch(self, positions: torch.Tensor, *, train: bool = False,
              generator: torch.Generator | None = None) -> dict[str, Any]:
        """The batch of the clips at store ``positions`` (int64 ``(B,)``), collated as the DataLoader does.

        Returns:
            ``video`` float32 ``(B, C, T, H, W)``, ``label`` int64 ``(B,)``, ``subject`` int64 ``(B,)``,
            ``clip`` list of str, ``indices`` int64 ``(B, T)``, ``aus`` list of str.
        """
        if train and generator is None:
            raise ValueError("clips in memory: a training batch needs a generator")
        rows = positions.tolist()
        return {
            "video": self._video(positions, train=train, generator=generator),
            "label": self.labels[positions],
            "subject": self.subjects[positions],
            "clip": [self.clips[i] for i in rows],
            "indices": self.indices[positions],
            "aus": [self.aus[i] for i in rows],
        }

    def _video(self, positions: torch.Tensor, *, train: bool, generator: torch.Generator | None) -> torch.Tensor:
        pipeline, spec = self.pipeline, self.pipeline.transform
        count = positions.shape[0]
        flip = (torch.rand(count, generator=generator) < 0.5) if train and spec.flip else None
        parts = []
        if self.frames is not None:
            frames = self.frames[positions]  # (B, T, 3, S, S)
            if train and pipeline.flow is None and spec.crop_scale < 1.0:  # RGB models only: a crop rescales flow
                frames = random_resized_crop(frames, size=spec.size, scale=(spec.crop_scale, 1.0), generator=generator)
            if flip is not None:
                frames = _where(flip, frames.flip(-1), frames)
            parts.append(self._rgb(frames))
        if self.flow is not None:
            flow = self.flow[positions].float()  # (B, C, T, S, S)
            if flip is not None:
                mirrored = flow.flip(-1)
                if pipeline.apex is not None:
                    u = _U_CHANNEL[pipeline.apex.encoding]
                    mirrored[:, u] = _U_FLIP[pipeline.apex.encoding](mirrored[:, u])
                else:
                    mirrored[:, 0] = -mirrored[:, 0]  # horizontal displacements change sign
                flow = _where(flip, mirrored, flow)
            parts.append(flow)
        return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim=1)

    def _rgb(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, 3, S, S)`` -> the pipeline's normalised (differenced) float ``(B, 3, T, S, S)``."""
        batch, frames_per_clip = frames.shape[:2]
        video = self._post(tv_tensors.Video(frames.reshape(batch * frames_per_clip, *frames.shape[2:])))
        video = video.as_subclass(torch.Tensor).reshape(batch, frames_per_clip, *video.shape[1:])
        video = difference_frames(video, self.pipeline.frame_difference, time_dim=1)
        return video.permute(0, 2, 1, 3, 4).contiguous()


@dataclass(frozen=True)
class InMemoryView:
    """The clips an :class:`InMemoryLoader` serves (its ``dataset``, as a DataLoader has one)."""

    table: pd.DataFrame
    pipeline: ClipPipeline

    def __len__(self) -> int:
        return len(self.table)


class InMemoryLoader:
    """Batches of an :class:`InMemoryClips` store (what :meth:`InMemoryClips.loader` returns).

    Iterating reads the sampler once (its ``set_epoch`` works as with a DataLoader) and, in training
    mode, seeds one generator from ``(seed, epoch)``; ``len()`` is the number of batches. With
    ``prefetch`` the next batch is made on a thread while the caller trains on the current one.
    """

    def __init__(self, store: InMemoryClips, positions: np.ndarray, *, batch_size: int, sampler: Iterable[Any] | None,
                 drop_last: bool, train: bool, seed: int | Sequence[int], pin_memory: bool, prefetch: bool = True,
                 batch_sampler: Iterable[Sequence[Any]] | None = None) -> None:
        self.store = store
        self.positions = torch.as_tensor(positions, dtype=torch.int64)
        #: what a DataLoader's ``dataset`` tells of the clips served: their table (e.g. for checks on subjects)
        self.dataset = InMemoryView(store.table.iloc[positions].reset_index(drop=True), store.pipeline)
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.drop_last = drop_last
        self.train = train
        self.seed = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        self.pin_memory = pin_memory
        self.prefetch = prefetch

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)  # type: ignore[arg-type]
        count = len(self.sampler) if self.sampler is not None else len(self.positions)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def _batches(self) -> tuple[int | None, list[torch.Tensor]]:
        """The epoch the sampler tags (None when it tags none) and each batch's indices into ``positions``."""
        if self.batch_sampler is not None:
            drawn = [list(batch) for batch in self.batch_sampler]
            flat = [item for batch in drawn for item in batch]
            sizes = [len(batch) for batch in drawn]
        else:
            flat = list(self.sampler) if self.sampler is not None else list(range(len(self.positions)))
            stop = len(flat) - len(flat) % self.batch_size if self.drop_last else len(flat)
            flat = flat[:stop]
            sizes = [min(self.batch_size, stop - start) for start in range(0, stop, self.batch_size)]
        epoch = None
        if flat and isinstance(flat[0], tuple):  # (epoch, index) from EpochIndexSampler
            epoch = int(flat[0][0])
            flat = [index for _, index in flat]
        return epoch, list(torch.as_tensor(flat, dtype=torch.int64).split(sizes)) if flat else []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, batches = self._batches()
        if epoch is None:
            epoch = int(getattr(self.batch_sampler or self.sampler, "epoch", 0))
        generator = None
        if self.train:
            state = np.random.SeedSequence([*self.seed, epoch]).generate_state(2, dtype=np.uint32)
            generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

        def make(indices: torch.Tensor) -> dict[str, Any]:
            batch = self.store.batch(self.positions[indices], train=self.train, generator=generator)
            if self.pin_memory:
                batch["video"] = batch["video"].pin_memory()
            return batch

        if not self.prefetch or len(batches) < 2:
            yield from (make(indices) for indices in batches)
            return
        # one batch ahead on a thread (torch's kernels release the GIL): the next batch is made while the
        # model trains on this one; batches are still made one after another, so the draws stay in order
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="microexp-in-memory") as pool:
            pending = pool.submit(make, batches[0])
            for indices in batches[1:]:
                batch = pending.result()
                pending = pool.submit(make, indices)
                yield batch
            yield pending.result()


# -- helpers ------------------------------------------------------------------------------------------


def _row_keys(table: pd.DataFrame) -> list[tuple[str, ...]]:
    """One hashable key per row from :data:`_KEY_COLUMNS` (as text, so blank cells compare equal)."""
    columns = [c for c in _KEY_COLUMNS if c in table.columns]
    return [tuple(str(v) for v in row) for row in table[columns].itertuples(index=False, name=None)]


def _store_key(dataset: Any) -> str:
    """What a store depends on: its table's rows, the pipeline, the backend and the cache folder."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"pipeline": dataset.pipeline.to_dict(), "backend": dataset.backend,
                              "cache": None if dataset.cache is None else str(dataset.cache.root)},
                             sort_keys=True).encode())
    for key in _row_keys(dataset.table):
        digest.update(repr(key).encode())
    return digest.hexdigest()


class _LastStore:
    """The one store :meth:`InMemoryClips.shared` keeps, with its key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: str | None = None
        self.store: InMemoryClips | None = None

    def clear(self) -> None:
        with self.lock:
            self.key, self.store = None, None


_LAST = _LastStore()
