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

How a clip becomes its ``video`` tensor is the :class:`~microexp.data.pipeline.ClipPipeline` the
dataset carries (the same spec and function the predictor runs). Flow modalities compute optical flow
of the sampled frames relative to the onset (see :mod:`microexp.data.flow`) and, with ``cache_dir``,
store it under the same key that ``microexp flow`` precomputes.

``apex_flow`` reads one onset->apex flow (:mod:`microexp.data.apex_flow`): from the row's ``flow_path``
file when it has one (then ``path``, ``onset``, ``apex``, ``offset`` and ``fps`` may be blank), else
computed from the onset and apex frames (cached with ``cache_dir``). Other modalities need frames: a
row with only a ``flow_path`` is refused when the dataset is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from microexp.data.apex_flow import FlowFileError, apex_flow_pixels
from microexp.data.cache import ClipCache, clip_fingerprint
from microexp.data.flow import FlowSpec, cached_clip_flow, clip_key_parts, flow_cache_key
from microexp.data.pipeline import MODALITIES, ClipPipeline, clip_to_input, encoded_apex_input, read_flow_file_input
from microexp.data.sampling import SamplingSpec, frames_needed
from microexp.data.transforms import TransformSpec, resize_frames
from microexp.data.video import ReaderPool, VideoReader, open_video
from microexp.errors import AnnotationError, ConfigError, VideoReadError

logger = logging.getLogger(__name__)

__all__ = ["MODALITIES", "REQUIRED_COLUMNS", "EpochIndexSampler", "MicroExpressionDataset", "check_clip_inputs"]

#: the most memory a dataset spends on keeping decoded flow files (per worker)
_FLOW_FILES_KEPT_BYTES = 256 * 2**20

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
        pipeline: how a clip becomes a model input (what the engine builds from a recipe and a
            checkpoint stores). Without it, one is composed from ``sampling``, ``transform``,
            ``modality``, ``flow`` and ``frame_difference`` (see :class:`ClipPipeline`).
        train: random sampling draws and augmentation when True; deterministic otherwise.
        backend: video backend for files ('auto', 'decord', 'pyav'); folders are read as folders.
        cache_dir: folder of the preprocessed clip cache; None decodes every time.
        cache_size: side of the cached square frames (default the pipeline's ``frame_size``: its input
            size, or the apex flow's ``compute_size``).
        seed: base seed of the per-item random draws in training mode.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        pipeline: ClipPipeline | None = None,
        sampling: SamplingSpec | None = None,
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
        if pipeline is None:
            pipeline = ClipPipeline(sampling=sampling or SamplingSpec(), transform=transform or TransformSpec(),
                                    modality=modality, frame_difference=frame_difference, flow=flow)
        elif (sampling is not None or transform is not None or flow is not None or modality != "rgb"
              or frame_difference != "none"):
            raise TypeError("give either pipeline= or its parts (sampling, transform, modality, flow, "
                            "frame_difference), not both")
        self.pipeline = pipeline
        check_clip_inputs(table, pipeline)
        self.table = table.reset_index(drop=True)
        # plain dicts: cheap per-item access, and no pandas object crosses into workers per item
        self._rows: list[dict[str, Any]] = self.table.to_dict("records")
        self.train = train
        self.backend = backend
        self.cache = ClipCache(cache_dir) if cache_dir is not None else None
        self.cache_size = cache_size or pipeline.frame_size
        self.seed = seed
        # open readers kept per DataLoader worker (empty in each forked or spawned worker)
        self._readers = ReaderPool(opener=_open_video)
        if (pipeline.flow is not None or pipeline.apex is not None) and self.cache_size != pipeline.frame_size:
            raise ConfigError(
                f"cache_size={self.cache_size} with modality={pipeline.modality!r}: flow is computed on frames of "
                f"{pipeline.frame_size} px, so cache_size must be {pipeline.frame_size}"
            )
        self._epoch = 0
        # decoded flow files, kept while they are small (28 px flows: every epoch would re-read hundreds of
        # tiny images, which costs as much as training STSTNet on them)
        side = pipeline.transform.size
        self._keep_flow_files = len(self.table) * side * side * 3 * 4 <= _FLOW_FILES_KEPT_BYTES
        self._flow_files: dict[str, np.ndarray] = {}
        # taken once per dataset object (so per worker): a frame folder's fingerprint stats every file
        self._fingerprints: dict[str, dict[str, Any]] = {}

    # the pipeline's parts, as attributes of the dataset (read by samplers, tests and older callers)
    sampling = property(lambda self: self.pipeline.sampling)
    transform_spec = property(lambda self: self.pipeline.transform)
    modality = property(lambda self: self.pipeline.modality)
    flow = property(lambda self: self.pipeline.flow)
    frame_difference = property(lambda self: self.pipeline.frame_difference)

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
        if self.pipeline.apex is not None and _flow_file(row):
            video = self._flow_file_input(row, rng)
            times = np.asarray([float(row["onset"] or 0), float(row["apex"] or 0)])
        else:
            times = self.pipeline.times(int(row["onset"]), int(row["apex"]), int(row["offset"]),
                                        fps=float(row["fps"]), train=self.train, rng=rng)
            numbers = frames_needed(times)
            video = clip_to_input(self.pipeline, self._frames(row, numbers), times, numbers=numbers,
                                  train=self.train, rng=rng, flow_of=self._flow_of(row, times))
        return {
            "video": video,
            "label": torch.tensor(int(row["label"]), dtype=torch.int64),
            "subject": int(row["subject"]),
            "clip": str(row["clip"]),
            "indices": torch.as_tensor(np.rint(times).astype(np.int64)),
            "aus": str(row["aus"]) if isinstance(row["aus"], str) else "",
        }

    def _flow_file_input(self, row: dict[str, Any], rng: np.random.Generator | None) -> torch.Tensor:
        path = row["flow_path"]
        encoded = self._flow_files.get(path)
        if encoded is None:
            try:
                encoded = read_flow_file_input(self.pipeline, path)
            except FlowFileError as exc:
                raise FlowFileError(f"clip {row['clip']}: {exc}") from None
            if self._keep_flow_files:
                self._flow_files[path] = encoded
        return encoded_apex_input(self.pipeline, encoded, rng, encoded=True)

    def _flow_of(self, row: dict[str, Any], times: np.ndarray) -> Any:
        """Flow through the cache (keyed by clip, sampled times and size), or None: computed each time."""
        if self.pipeline.apex is not None:
            return self._apex_flow_of(row, times)
        flow = self.pipeline.flow
        if flow is None or self.cache is None:
            return None
        key = clip_key_parts(row, times, size=self.cache_size, source=self._fingerprint(row["path"]))
        return lambda frames: cached_clip_flow(self.cache, key, lambda: frames, method=flow.method,
                                               reference=flow.reference, strain=flow.strain)

    def _apex_flow_of(self, row: dict[str, Any], times: np.ndarray) -> Any:
        """The onset->apex flow in pixels at the compute size, through the cache when there is one."""
        method = self.pipeline.apex.method
        if self.cache is None:
            return None
        parts = clip_key_parts(row, times, size=self.cache_size, source=self._fingerprint(row["path"]))
        # "layout" keeps it apart from a 2-frame flow sequence with strain of the same frames
        key = flow_cache_key({**parts, "layout": "apex_flow"}, method=method, reference="onset", strain=True)
        return lambda frames: np.asarray(self.cache.get_or_create(
            key, lambda: apex_flow_pixels(frames[0], frames[-1], method).astype(np.float16)), dtype=np.float32)

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
        reader = self._readers.get(row["path"], backend=self.backend, first_frame=int(row["first_frame"]))
        try:
            return reader.get_frames_by_number(numbers)
        except VideoReadError:
            self._readers.discard(row["path"])  # the next read opens the file afresh
            raise


def _open_video(path: str, **kwargs: Any) -> VideoReader:
    """:func:`open_video`, looked up at each call (a module-level function, so the Dataset pickles)."""
    return open_video(path, **kwargs)


def _flow_file(row: Any) -> str:
    """The row's ``flow_path`` ('' when the table has none or the cell is blank)."""
    value = row.get("flow_path") if isinstance(row, dict) else None
    return value if isinstance(value, str) and value.strip() else ""


def _has_frames(row: Any) -> bool:
    value = row.get("path")
    return isinstance(value, str) and bool(value.strip())


def check_clip_inputs(table: pd.DataFrame, pipeline: ClipPipeline) -> None:
    """Every row can give this pipeline its input: frames, or (``apex_flow``) a flow file.

    Raises:
        AnnotationError: naming the first clip that cannot, and how many more.
    """
    bad = [row for row in table.to_dict("records")
           if not (_has_frames(row) or (pipeline.apex is not None and _flow_file(row)))]
    if not bad:
        return
    row = bad[0]
    what = "no clip path" if not _flow_file(row) else f"only a flow_path, which modality {pipeline.modality!r} cannot read"
    more = f" ({len(bad) - 1} more clip(s) like it)" if len(bad) > 1 else ""
    expected = ("frames or a video in 'path', or an apex flow file in 'flow_path'" if pipeline.apex is not None else
                "frames or a video in 'path' (flow_path files feed apex_flow models only)")
    raise AnnotationError(f"clip {row.get('clip')!r}: {what}{more}; expected {expected}")
