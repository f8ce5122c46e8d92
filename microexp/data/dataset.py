"""Map-style Dataset over a clip table: key-frame sequences as normalised video tensors.

Each item is a dict::

    video    float32 (C, T, H, W): normalised RGB (C=3), or its frame differences (``frame_difference``); for ``modality='flow'`` the flow channels
             (dx, dy[, strain]) in pixels; for ``'rgb+flow'`` RGB then flow (the two-stream input)
    label    int64 class index (from the table's ``label`` column, see ``apply_class_map``)
    subject  int
    clip     str
    indices  int64 (T,) frame numbers shown (rounded times for interpolated ``tim`` frames)
    aus      str, e.g. '1+2+12' ('' when none)

Readers are opened inside ``__getitem__`` (so inside each DataLoader worker) and never kept on the
dataset: a decord reader opened before workers fork hangs them.

With ``cache_dir`` set, a clip's frames from onset to offset are decoded and resized once and stored as
a uint8 ``.npy`` (see :mod:`microexp.data.cache`); later epochs, other sampling draws and other folds
read them through a memory map without touching the video.

Flow modalities compute optical flow of the sampled frames relative to the onset (see
:mod:`microexp.data.flow`) and, with ``cache_dir``, store it under the same key that ``microexp flow``
precomputes. Because flow is cached per set of sampled frames, flow modalities sample
deterministically even when training, and augment with a horizontal flip only (which negates dx); a
random crop would rescale the displacements.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from microexp.data.cache import ClipCache, clip_fingerprint
from microexp.data.flow import FlowSpec, cached_clip_flow, clip_flow, clip_key_parts
from microexp.data.sampling import SamplingSpec, frames_needed, interpolate_frames
from microexp.data.transforms import (
    FRAME_DIFFERENCES,
    TransformSpec,
    build_video_transform,
    difference_frames,
    frames_to_video,
    resize_frames,
)
from microexp.data.video import open_video
from microexp.errors import AnnotationError, ConfigError

logger = logging.getLogger(__name__)

MODALITIES = ("rgb", "flow", "rgb+flow")
REQUIRED_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "first_frame", "fps", "aus", "label")


class EpochIndexSampler(Sampler):
    """Yield ``(epoch, index)`` for every index that ``sampler`` yields.

    DataLoader workers (persistent ones especially) hold their own copy of the dataset, made when they
    started, so ``dataset.set_epoch`` in the main process never reaches them. The sampler runs in the
    main process; tagging each index with the epoch carries it to whichever worker loads the item.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class MicroExpressionDataset(Dataset):
    """Key-frame sequences of the clips in ``table``.

    Args:
        table: a clip table (see :mod:`microexp.data.annotations`) with an integer ``label`` column.
        sampling: which frames to take from each clip.
        transform: resize/crop/flip/normalise settings.
        train: random sampling draws and augmentation when True; deterministic otherwise.
        backend: video backend for files ('auto', 'decord', 'pyav'); folders are read as folders.
        cache_dir: folder of the preprocessed clip cache; None decodes every time.
        cache_size: side of the cached square frames (default ``transform.size``).
        seed: base seed of the per-item random draws in training mode.
        modality: 'rgb', 'flow' or 'rgb+flow' (a model's ``spec.modality``).
        flow: how flow channels are computed (default ``FlowSpec()``: TV-L1 against the onset).
        frame_difference: 'none', 'first' or 'previous': the RGB channels show each normalised frame
            minus the first sampled frame or the previous one (see ``difference_frames``).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        sampling: SamplingSpec,
        transform: TransformSpec | None = None,
        train: bool = False,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
        cache_size: int | None = None,
        seed: int = 0,
        modality: str = "rgb",
        flow: FlowSpec | None = None,
        frame_difference: str = "none",
    ) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise AnnotationError(
                f"clip table lacks column(s) {missing}; found {list(table.columns)} "
                "(apply a class map first to get 'label')"
            )
        self.table = table.reset_index(drop=True)
        # plain dicts: cheap per-item access, and no pandas object crosses into workers per item
        self._rows: list[dict[str, Any]] = self.table.to_dict("records")
        self.sampling = sampling
        self.transform_spec = transform or TransformSpec()
        self.train = train
        self.backend = backend
        self.cache = ClipCache(cache_dir) if cache_dir is not None else None
        self.cache_size = cache_size or self.transform_spec.size
        self.seed = seed
        if modality not in MODALITIES:
            raise ConfigError(f"modality={modality!r}: expected one of {', '.join(MODALITIES)}")
        self.modality = modality
        if frame_difference not in FRAME_DIFFERENCES:
            raise ConfigError(f"frame_difference={frame_difference!r}: expected one of {', '.join(FRAME_DIFFERENCES)}")
        self.frame_difference = frame_difference
        self.flow = (flow or FlowSpec()) if "flow" in modality else None
        if self.flow is not None and self.cache_size != self.transform_spec.size:
            raise ConfigError(
                f"cache_size={self.cache_size} with modality={modality!r}: flow is computed at the model's "
                f"input size, so cache_size must equal transform size {self.transform_spec.size}"
            )
        # flow models see no random crop (it would rescale displacements); RGB beside flow likewise
        self._transform = build_video_transform(self.transform_spec, train=train and self.flow is None)
        self._epoch = 0
        # taken once per dataset object (so per worker): a frame folder's fingerprint stats every file
        self._fingerprints: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.table)

    def set_epoch(self, epoch: int) -> None:
        """Vary training-mode sampling draws between epochs while keeping them reproducible."""
        self._epoch = epoch

    @property
    def labels(self) -> np.ndarray:
        """Integer labels of every clip, for samplers and class counts."""
        return self.table["label"].to_numpy(dtype=np.int64)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        # (epoch, index) from EpochIndexSampler: persistent workers hold copies that never see set_epoch
        epoch, index = index if isinstance(index, tuple) else (self._epoch, index)
        row = self._rows[index]
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        random_draws = self.train and self.flow is None  # flow is cached per sampled set: keep it fixed
        times = self.sampling.times(
            int(row["onset"]), int(row["apex"]), int(row["offset"]), fps=float(row["fps"]), train=random_draws,
            rng=rng,
        )
        numbers = frames_needed(times)
        # one path for every strategy: integral times return the decoded frames exactly
        frames = interpolate_frames(self._frames(row, numbers), times, numbers=numbers)
        if self.flow is None:
            video = self._rgb(frames, rng)
        else:
            video = self._with_flow(row, times, frames, flip=rng is not None and self.transform_spec.flip
                                    and bool(rng.random() < 0.5))
        return {
            "video": video,
            "label": torch.tensor(int(row["label"]), dtype=torch.int64),
            "subject": int(row["subject"]),
            "clip": str(row["clip"]),
            "indices": torch.as_tensor(np.rint(times).astype(np.int64)),
            "aus": str(row["aus"]) if isinstance(row["aus"], str) else "",
        }

    def _rgb(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised float (3, T, H, W).

        v2's random transforms draw from torch's global generator; with ``rng`` they draw from a fork of it
        seeded by the item's own generator, so a crop or flip depends on (seed, epoch, index) alone: not on
        the worker count, the worker that served the item, or where a resumed run restarted.
        """
        if rng is None:
            video = self._transform(frames_to_video(frames))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                video = self._transform(frames_to_video(frames))
        video = video.as_subclass(torch.Tensor)
        video = difference_frames(video, self.frame_difference, time_dim=0)
        return video.permute(1, 0, 2, 3).contiguous()

    def _with_flow(self, row: dict[str, Any], times: np.ndarray, frames: np.ndarray, *, flip: bool) -> torch.Tensor:
        """Flow channels (and RGB before them for 'rgb+flow') as (C, T, H, W)."""
        assert self.flow is not None
        frames = np.ascontiguousarray(frames)
        if self.cache is None:
            flows = clip_flow(frames, method=self.flow.method, reference=self.flow.reference, strain=self.flow.strain)
        else:
            flows = cached_clip_flow(
                self.cache, clip_key_parts(row, times, size=self.cache_size, source=self._fingerprint(row["path"])),
                lambda: frames,
                method=self.flow.method, reference=self.flow.reference, strain=self.flow.strain,
            )
        if flip:  # mirror the frames and the flow field; horizontal displacements change sign
            frames = np.ascontiguousarray(frames[:, :, ::-1])
            flows = flows[:, :, ::-1].copy()
            flows[..., 0] *= -1
        flow_tensor = torch.from_numpy(np.ascontiguousarray(flows, dtype=np.float32)).permute(3, 0, 1, 2)
        if self.modality == "flow":
            return flow_tensor.contiguous()
        return torch.cat([self._rgb(frames), flow_tensor])

    def _frames(self, row: dict[str, Any], numbers: list[int]) -> np.ndarray:
        """Frames with the sorted frame numbers ``numbers``, resized to the cache size."""
        if self.cache is None:
            return resize_frames(self._decode(row, numbers), self.cache_size)
        onset, offset = int(row["onset"]), int(row["offset"])
        key = {
            "clip": str(row["clip"]),
            "source": self._fingerprint(row["path"]),
            "first_frame": int(row["first_frame"]),
            "span": [onset, offset],
            "size": self.cache_size,
            "resize": "short-side+center-crop,antialias",
        }
        span = self.cache.get_or_create(
            key, lambda: resize_frames(self._decode(row, list(range(onset, offset + 1))), self.cache_size)
        )
        return np.asarray(span[np.asarray(numbers) - onset])

    def _fingerprint(self, path: str) -> dict[str, Any]:
        if path not in self._fingerprints:
            self._fingerprints[path] = clip_fingerprint(path)
        return self._fingerprints[path]

    def _decode(self, row: dict[str, Any], numbers: list[int]) -> np.ndarray:
        with open_video(row["path"], backend=self.backend, first_frame=int(row["first_frame"])) as reader:
            return reader.get_frames_by_number(numbers)
