"""Map-style Dataset over a clip table: key-frame sequences as normalised video tensors.

Each item is a dict::

    video    float32 (C, T, H, W), normalised
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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from microexp.data.cache import ClipCache, clip_fingerprint
from microexp.data.sampling import SamplingSpec, frames_needed, interpolate_frames
from microexp.data.transforms import TransformSpec, build_video_transform, frames_to_video, resize_frames
from microexp.data.video import open_video
from microexp.errors import AnnotationError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "first_frame", "fps", "aus", "label")


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
        self._transform = build_video_transform(self.transform_spec, train=train)
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._rows[index]
        rng = np.random.default_rng([self.seed, self._epoch, index]) if self.train else None
        times = self.sampling.times(
            int(row["onset"]), int(row["apex"]), int(row["offset"]), fps=float(row["fps"]), train=self.train, rng=rng
        )
        numbers = frames_needed(times)
        # one path for every strategy: integral times return the decoded frames exactly
        frames = interpolate_frames(self._frames(row, numbers), times, numbers=numbers)
        video = self._transform(frames_to_video(frames))
        return {
            "video": video.permute(1, 0, 2, 3).contiguous().as_subclass(torch.Tensor),
            "label": torch.tensor(int(row["label"]), dtype=torch.int64),
            "subject": int(row["subject"]),
            "clip": str(row["clip"]),
            "indices": torch.as_tensor(np.rint(times).astype(np.int64)),
            "aus": str(row["aus"]) if isinstance(row["aus"], str) else "",
        }

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
