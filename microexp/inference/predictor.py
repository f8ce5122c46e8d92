"""Clip-level prediction: a raw video or frame folder -> emotion probabilities.

``ClipPredictor.from_checkpoint(path)`` rebuilds the model and its preprocessing from the checkpoint
alone (``RUN/final/model.pt`` of ``microexp train --final``, a fold's ``fold_XX/model.pt``, or a file
written by ``microexp export``), and :meth:`ClipPredictor.predict` runs one clip::

    predictor = ClipPredictor.from_checkpoint("runs/tsm/final/model.pt")
    result = predictor.predict("clip.mp4")                 # onset/apex/offset spotted
    result.label, result.probabilities, result.apex, result.estimated_fields

Frame numbers: a frame folder's come from its file names; a video's from ``first_frame`` when given,
else from the ``first_frame=N`` that ``microexp pack`` records in the file, else from 0 (warned once).
A clip of 1 frame is predicted with a warning (no motion to spot), and refused by models that read
motion (optical flow or frame differences). A clip whose logits are not finite fails instead of
giving NaN probabilities.

Preprocessing is the checkpoint's :class:`~microexp.data.pipeline.ClipPipeline`, the spec training
built, run in evaluation mode through the Dataset's own function: ``pipeline.times(train=False)`` ->
``frames_needed`` -> decode -> (face crop) -> ``resize_frames`` -> :func:`~microexp.data.pipeline.clip_to_input`;
``tests/test_inference_predictor.py`` checks that the model input equals the Dataset's item.

Nothing is written anywhere unless ``save_crops`` is given.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from microexp.data.apex_flow import FlowFileError, apex_flow_pixels
from microexp.data.pipeline import ClipPipeline, clip_to_input, encoded_apex_input, read_flow_file_input
from microexp.data.sampling import frames_needed
from microexp.data.transforms import resize_frames
from microexp.data.video import open_video, recorded_first_frame
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import OutputError, write_bytes
from microexp.metrics import AU_THRESHOLD
from microexp.data.face import DEFAULT_MARGIN, FaceBox, NoFaceError, crop_frames, probe_positions, stable_face_box
from microexp.inference.region_spotting import spot_regions
from microexp.inference.spotting import Phases, default_sigma, motion_signal, spot_phases
from microexp.models import ModelSpec

logger = logging.getLogger(__name__)

__all__ = ["ClipInput", "ClipFailure", "ClipPredictor", "Prediction", "BatchResult", "PredictionError", "STAGES"]

#: timing stages recorded in :attr:`Prediction.timings` (seconds)
STAGES = ("decode", "face_crop", "spotting", "flow", "transform", "model", "total")
#: ``spotting=``: the whole-face motion signal (inference.spotting) or the region-wise, blink-robust method
#: (inference.region_spotting)
SPOTTING_METHODS = ("motion", "regions")
_CHUNK = 64


class PredictionError(MicroexpError, ValueError):
    """A clip cannot be predicted (bad phases, no face, unreadable file); the message names the clip."""


class ClipInput(NamedTuple):
    """One clip to predict: its path and what is known about it (None: unknown / spotted).

    ``first_frame`` None: a video's frame numbering is read from the file when it records one (``microexp
    pack`` stores ``first_frame=N`` in the file's comment tag), else it counts from 0 with a warning.
    ``apex_estimated``: the given apex is itself an estimate (a clip table's ``apex_estimated``), so it is
    flagged as estimated in the result. ``true``: the clip's true class name, when known (a labelled table).
    """

    path: str
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    first_frame: int | None = None
    fps: float | None = None
    name: str | None = None
    apex_estimated: bool = False
    true: str | None = None
    subject: int | None = None  # from a clip table: lets predict say when a model has seen the subject
    flow_path: str | None = None  # a precomputed apex flow (a clip table's flow_path): read instead of frames


@dataclass
class Prediction:
    """The result for one clip; :meth:`to_dict` gives the JSON fields."""

    clip: str
    label: str | None  # None for a model that detects AUs alone
    probabilities: dict[str, float]
    onset: int
    apex: int
    offset: int
    estimated: bool
    face_box: list[int] | None
    model: str
    checkpoint: str
    estimated_fields: tuple[str, ...] = ()
    motion_curve: list[float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    true: str | None = None
    #: AU probabilities (``{'AU1': 0.93, ...}``) of a model with an AU head; empty otherwise
    au_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def detected_aus(self) -> list[str]:
        """The AUs whose probability reaches :data:`AU_THRESHOLD` (``['AU1', 'AU2']``)."""
        return [name for name, p in self.au_probabilities.items() if p >= AU_THRESHOLD]

    def to_dict(self, *, motion_curve: bool = False) -> dict[str, Any]:
        """The JSON fields; ``estimated`` holds one flag per phase (``{"onset": .., "apex": .., "offset": ..}``,
        True where the value was spotted or is an estimate), ``true`` is present when the true class is known."""
        out = {"clip": self.clip, "label": self.label, "probabilities": dict(self.probabilities),
               "onset": self.onset, "apex": self.apex, "offset": self.offset,
               "estimated": {k: k in self.estimated_fields for k in ("onset", "apex", "offset")},
               "face_box": self.face_box, "model": self.model, "checkpoint": self.checkpoint}
        if self.true is not None:
            out["true"] = self.true
        if self.au_probabilities:
            out["aus"] = {"detected": self.detected_aus, "threshold": AU_THRESHOLD,
                          "probabilities": dict(self.au_probabilities)}
        if motion_curve:
            out["motion_curve"] = self.motion_curve
        return out


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be predicted, and why (one line)."""

    clip: str
    reason: str

    def __str__(self) -> str:
        return f"{self.clip}: {self.reason}"


@dataclass
class BatchResult:
    """Predictions in input order, and the clips that failed."""

    predictions: list[Prediction]
    failures: list[ClipFailure]


class _Prepared(NamedTuple):
    name: str
    video: torch.Tensor
    phases: Phases
    box: FaceBox | None
    timings: dict[str, float]
    true: str | None = None


def _check_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; ConfigError (one line) for anything else."""
    expected = "expected cpu, cuda or cuda:N"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device {str(device)!r}: {expected}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {str(device)!r}: {expected}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r}: torch sees no CUDA device on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {str(device)!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return dev


def _check_margin(margin: Any) -> float:
    try:
        value = float(margin)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"face margin {margin!r}: expected a number >= 0 (default {DEFAULT_MARGIN})")
    return value


class ClipPredictor:
    """Runs a trained model on clips, preprocessing them as evaluation did.

    Args:
        runner: maps a float batch ``(B, C, T, H, W)`` (on CPU) to logits ``(B, num_classes)``.
        spec: the model's :class:`ModelSpec`.
        data: the checkpoint's data config.
        class_names: label index -> class name.
        model_name: shown in results.
        source: the checkpoint path, shown in results.
        face_crop: detect the face and crop one stable box per clip (False for already cropped clips).
        face_margin: enlargement of the detected face box (see :mod:`microexp.data.face`).
        backend: video backend for files ('auto', 'decord', 'pyav').
        au_codes: the AUs of a model with an AU head; its ``runner`` then returns the emotion logits followed
            by the AU logits, ``(B, num_classes + A)``.
    """

    def __init__(
        self,
        runner: Callable[[torch.Tensor], torch.Tensor],
        *,
        spec: ModelSpec,
        data: Mapping[str, Any],
        class_names: Sequence[str],
        model_name: str,
        source: str,
        face_crop: bool = True,
        face_margin: float = DEFAULT_MARGIN,
        backend: str = "auto",
        seen_subjects: Sequence[int] = (),
        au_codes: Sequence[str] = (),
        spotting: str = "regions",
    ) -> None:
        if spotting not in SPOTTING_METHODS:
            raise PredictionError(f"spotting={spotting!r}: expected one of {', '.join(SPOTTING_METHODS)}")
        #: how phases not given are spotted: the whole-face motion signal, or the region-wise blink-robust one
        self.spotting = spotting
        self.runner = runner
        self.au_names = [f"AU{code}" for code in au_codes]
        #: subjects whose clips trained or selected the model (from the checkpoint; empty when unknown)
        self.seen_subjects = frozenset(int(s) for s in seen_subjects)
        self.spec = spec
        self.data = dict(data)
        self.class_names = list(class_names)
        self.model_name = model_name
        self.source = source
        self.face_crop = face_crop
        self.face_margin = _check_margin(face_margin)
        self.backend = backend
        if not self.data:
            logger.warning("checkpoint has no data config: using the model's %d frames at %d px, uniform sampling",
                           spec.num_frames, spec.input_size)
        #: the checkpoint's preprocessing, as training built it (see :mod:`microexp.data.pipeline`)
        self.preprocessing = ClipPipeline.from_checkpoint_data(self.data, spec)
        self._warned_numbering = False

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", **options: Any) -> "ClipPredictor":
        """A predictor from a microexp checkpoint, or from a TorchScript/ONNX export (detected).

        Raises:
            FileNotFoundError: no such file.
            CheckpointError: not a microexp checkpoint (foreign, damaged or tampered: never executed).
        """
        from microexp.inference.export import detect_export_format

        if detect_export_format(path) is not None:
            return cls.from_exported(path, device=device, **options)
        from microexp.checkpoint import load_checkpoint, model_from_checkpoint

        dev = _check_device(device)
        payload = load_checkpoint(path)
        model = model_from_checkpoint(payload, source=str(path)).to(dev).eval()
        au_codes = tuple(getattr(model, "au_codes", ()))
        class_names = payload["class_names"] if model.num_classes else []  # AU detection alone: no emotion

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                if au_codes:  # emotion logits (none for AU detection alone), then the AU logits
                    out = model(x.to(dev), outputs=True)
                    parts = [out.au_logits.float()] if out.logits is None else [out.logits.float(), out.au_logits.float()]
                    return torch.cat(parts, dim=1).cpu()
                return model(x.to(dev)).float().cpu()

        extra = payload.get("extra") or {}
        seen = [*extra.get("subjects", ()), *extra.get("train_subjects", ()), *extra.get("val_subjects", ())]
        return cls(run, spec=model.spec, data=payload.get("data") or {}, class_names=class_names,
                   model_name=payload["model_name"], source=str(path), seen_subjects=seen, au_codes=au_codes,
                   **options)

    @classmethod
    def from_exported(cls, path: str | Path, *, device: str | torch.device = "cpu", **options: Any) -> "ClipPredictor":
        """A predictor running a model written by ``microexp export`` (TorchScript or ONNX)."""
        from microexp.inference.export import load_exported

        exported = load_exported(path, device=_check_device(device))
        meta = exported.metadata
        return cls(exported, spec=ModelSpec.from_dict(meta["spec"]), data=meta.get("data") or {},
                   class_names=meta["class_names"], model_name=meta["model_name"], source=str(path), **options)

    # -- prediction --------------------------------------------------------------------------------

    def predict(
        self,
        clip: str | Path,
        onset: int | None = None,
        apex: int | None = None,
        offset: int | None = None,
        *,
        first_frame: int | None = None,
        fps: float | None = None,
        name: str | None = None,
        save_crops: str | Path | None = None,
    ) -> Prediction:
        """Predict one clip.

        Args:
            clip: a video file or a folder of numbered frames.
            onset, apex, offset: known frame numbers; those not given are spotted from the motion signal.
            first_frame: frame number of a video's first frame (frame folders use their file names); None:
                the number the file records (``microexp pack`` stores it), else 0 with a warning.
            fps: the clip's frame rate, > 0 (default: the video's; folders have none).
            name: how the clip is named in the result (default: the path).
            save_crops: folder to save the sampled (face-cropped) frames to as PNG; None saves nothing.

        Raises:
            PredictionError, VideoReadError, FileNotFoundError: the clip cannot be predicted.
        """
        item = ClipInput(str(clip), onset, apex, offset, first_frame, fps, name)
        prepared = self._prepare(item, save_crops=save_crops)
        [result] = self._finish([prepared])
        if isinstance(result, ClipFailure):
            raise PredictionError(str(result))
        return result

    def predict_many(
        self,
        clips: Iterable[ClipInput | str | Path],
        *,
        batch_size: int = 8,
        progress: bool | None = None,
        save_crops: str | Path | None = None,
    ) -> BatchResult:
        """Predict many clips, batching the model; a failing clip is listed and the others still predicted.

        Args:
            clips: paths or :class:`ClipInput` rows.
            batch_size: clips per model call.
            progress: tqdm bar; None = only when stderr is a terminal.
        """
        from tqdm import tqdm

        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size}: expected an integer >= 1")
        items = [c if isinstance(c, ClipInput) else ClipInput(str(c)) for c in clips]
        predictions: list[Prediction] = []
        failures: list[ClipFailure] = []
        pending: list[_Prepared] = []
        with tqdm(total=len(items), unit="clip", desc="predict", disable=None if progress is None else not progress) as bar:
            for item in items:
                try:
                    pending.append(self._prepare(item, save_crops=save_crops))
                except OutputError:
                    raise  # cannot write --save-crops: the run's problem, not this clip's
                except (MicroexpError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
                    failures.append(ClipFailure(item.name or item.path, _one_line(exc, item)))
                    bar.update()
                if len(pending) == batch_size:
                    for result in self._finish(pending):
                        (failures if isinstance(result, ClipFailure) else predictions).append(result)
                    bar.update(len(pending))
                    pending = []
            if pending:
                for result in self._finish(pending):
                    (failures if isinstance(result, ClipFailure) else predictions).append(result)
                bar.update(len(pending))
        order = {(it.name or it.path): i for i, it in enumerate(items)}
        predictions.sort(key=lambda p: order.get(p.clip, 0))
        return BatchResult(predictions, failures)

    def predict_frames(self, frames: np.ndarray, numbers: Sequence[int], onset: int, apex: int, offset: int, *,
                       fps: float | None = None, name: str = "frames") -> Prediction:
        """Predict an interval of frames already decoded and face-cropped (e.g. one ``microexp spot`` found in a
        long video), through the same preprocessing as :meth:`predict`.

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB face crops of the frames ``numbers`` (increasing).
            onset, apex, offset: frame numbers in ``numbers``, in order.
            fps: the frame rate (None: unknown).
            name: how the interval is named in the result.
        """
        nums = [int(n) for n in numbers]
        if len(nums) != len(frames):
            raise PredictionError(f"{name}: {len(frames)} frames for {len(nums)} frame numbers")
        self._check_length(name, nums)
        fps = _check_fps(name, fps)
        phases = Phases(*_check_phases(name, nums, onset, apex, offset))  # type: ignore[arg-type]
        start = time.perf_counter()
        timings = dict.fromkeys(STAGES, 0.0)
        times = self.preprocessing.times(phases.onset, phases.apex, phases.offset, fps=fps, train=False)
        needed = frames_needed(times)
        index = {n: i for i, n in enumerate(nums)}
        missing = [n for n in needed if n not in index]
        if missing:
            raise PredictionError(f"{name}: the model samples frame(s) {missing[:3]} outside the frames given "
                                  f"({nums[0]}..{nums[-1]})")
        crops = np.stack([frames[index[n]] for n in needed])
        video = clip_to_input(self.preprocessing, resize_frames(crops, self.preprocessing.frame_size), times,
                              numbers=needed, flow_of=self._timed_flow(timings))
        timings["transform"] += time.perf_counter() - start - timings["flow"]
        timings["total"] = time.perf_counter() - start
        [result] = self._finish([_Prepared(name, video, phases, None, timings)])
        if isinstance(result, ClipFailure):
            raise PredictionError(str(result))
        return result

    def recogniser(self, fps: float | None = None, name: str = "frames"
                   ) -> Callable[[np.ndarray, Sequence[int], int, int, int], tuple[str, dict[str, float]]]:
        """``(crops, numbers, onset, apex, offset) -> (label, probabilities)`` through :meth:`predict_frames`: the
        ``recognise`` of :class:`~microexp.inference.long_spotting.LongSpotter` (spot-then-recognise)."""

        def recognise(crops: np.ndarray, numbers: Sequence[int], onset: int, apex: int,
                      offset: int) -> tuple[str, dict[str, float]]:
            p = self.predict_frames(crops, numbers, onset, apex, offset, fps=fps, name=f"{name}:{onset}-{offset}")
            return p.label, p.probabilities

        return recognise

    def preprocess(self, clip: str | Path | ClipInput, **kwargs: Any) -> torch.Tensor:
        """The model input ``(C, T, H, W)`` of one clip (arguments as for :meth:`predict`)."""
        item = clip if isinstance(clip, ClipInput) else ClipInput(str(clip), **kwargs)
        return self._prepare(item).video

    # -- internals ---------------------------------------------------------------------------------

    def _first_frame(self, item: ClipInput) -> tuple[int, bool]:
        """The number of a video's first frame (given, recorded in the file, or 0), and whether it was guessed."""
        if item.first_frame is not None:
            return int(item.first_frame), False
        if Path(item.path).is_dir():
            return 0, False  # frame folders number their frames by file name
        recorded = recorded_first_frame(item.path)
        return (0, True) if recorded is None else (recorded, False)

    def _warn_numbering(self, item: ClipInput) -> None:
        if not self._warned_numbering:
            logger.warning("%s: the video records no first frame number, so its frames (and the onset/apex/offset "
                           "reported) count from 0; if its annotations count from 1 (as the synthetic sets' do), "
                           "pass --first-frame 1 (or a first_frame column in a clip table); said once per run",
                           item.name or item.path)
            self._warned_numbering = True

    def _check_length(self, name: str, numbers: Sequence[int]) -> None:
        """A 1-frame clip holds no motion: refused for models that read motion, predicted with a warning else."""
        if len(numbers) >= 2:
            return
        if not numbers:
            raise PredictionError(f"{name}: no frames")
        pre = self.preprocessing
        reads = pre.reads_motion
        if reads is not None:
            raise PredictionError(f"{name}: 1 frame: this {pre.modality} model reads {reads}, which needs at least "
                                  "2 frames; there is no motion to predict from")
        logger.warning("%s: 1 frame: no motion to spot (onset = apex = offset = %d) and the model, trained on clips, "
                       "sees this frame repeated: the prediction rests on one still image", name, numbers[0])

    def _prepare_flow_file(self, item: ClipInput) -> _Prepared:
        """An apex-flow model's input read from the clip's flow file (no frames, no face crop, no spotting)."""
        name = item.name or item.flow_path
        start = time.perf_counter()
        pre = self.preprocessing
        try:
            encoded = read_flow_file_input(pre, item.flow_path)
        except FlowFileError as exc:
            raise PredictionError(str(exc)) from None
        video = encoded_apex_input(pre, encoded, None, encoded=True)
        timings = dict.fromkeys(STAGES, 0.0)
        timings["total"] = time.perf_counter() - start
        phases = Phases(item.onset or 0, item.apex or 0, item.offset or 0)
        return _Prepared(name, video, phases, None, timings, item.true)

    def _prepare(self, item: ClipInput, *, save_crops: str | Path | None = None) -> _Prepared:
        if item.flow_path and (self.preprocessing.apex is not None or not item.path):
            if self.preprocessing.apex is None:
                raise PredictionError(f"{item.name or item.flow_path}: only a precomputed flow (flow_path), which this "
                                      f"{self.preprocessing.modality} model cannot read; it needs the clip's frames")
            return self._prepare_flow_file(item)
        name = item.name or item.path
        timings = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        fps = _check_fps(name, item.fps)
        first_frame, guessed = self._first_frame(item)
        reader = open_video(item.path, backend=self.backend, first_frame=first_frame)
        try:
            tick = time.perf_counter()
            numbers = reader.frame_numbers  # opens the file: corrupt or empty clips fail here
            if guessed:
                self._warn_numbering(item)
            if fps is None and reader.fps is not None and math.isfinite(reader.fps) and reader.fps > 0:
                fps = float(reader.fps)
            self._check_length(name, numbers)
            if fps is None and self.preprocessing.sampling.reference_fps is not None:
                logger.warning("%s: frame rate unknown, so the checkpoint's stride (given at reference_fps=%g) is not "
                               "scaled and sampling may differ from training; pass --fps (or an fps column in the "
                               "clip table) for fps-normalised sampling", name, self.preprocessing.sampling.reference_fps)
            given = _check_phases(name, numbers, item.onset, item.apex, item.offset)
            table_estimated = ("apex",) if item.apex_estimated and given[1] is not None else ()
            timings["decode"] += time.perf_counter() - tick
            box = None
            if self.face_crop:
                tick = time.perf_counter()
                probes = probe_positions(len(numbers))
                probe_frames = reader.get_frames(probes)
                timings["decode"] += time.perf_counter() - tick
                tick = time.perf_counter()
                try:
                    box, _ = stable_face_box(probe_frames, margin=self.face_margin)
                except NoFaceError as exc:
                    raise PredictionError(f"{name}: {exc} (use --no-face-crop for clips that are already face crops)") from exc
                timings["face_crop"] += time.perf_counter() - tick
            kept: dict[int, np.ndarray] = {}
            if None in given:
                phases = self._spot(name, reader, numbers, given, box, fps, kept, timings)
            else:
                phases = Phases(*given)
            times = self.preprocessing.times(phases.onset, phases.apex, phases.offset, fps=fps, train=False)
            needed = frames_needed(times)
            missing = [n for n in needed if n not in kept]
            if missing:
                _decode_and_crop(reader, missing, box, kept, timings)
        finally:
            reader.close()
        crops = np.stack([kept[n] for n in needed])
        if save_crops is not None:
            _save_crops(Path(save_crops), name, needed, crops)
        tick = time.perf_counter()
        video = clip_to_input(self.preprocessing, resize_frames(crops, self.preprocessing.frame_size), times,
                              numbers=needed, flow_of=self._timed_flow(timings))
        timings["transform"] += time.perf_counter() - tick - timings["flow"]
        timings["total"] = time.perf_counter() - start
        if table_estimated:
            phases = replace(phases, estimated=tuple(k for k in ("onset", "apex", "offset")
                                                     if k in phases.estimated or k in table_estimated))
        return _Prepared(name, video, phases, box, timings, item.true)

    def _spot(self, name: str, reader: Any, numbers: list[int], given: tuple[int | None, int | None, int | None],
              box: FaceBox | None, fps: float | None, kept: dict[int, np.ndarray], timings: dict[str, float]) -> Phases:
        onset, apex, offset = given
        lo = onset if onset is not None else numbers[0]
        hi = offset if offset is not None else numbers[-1]
        span = [n for n in numbers if lo <= n <= hi]
        for i in range(0, len(span), _CHUNK):
            _decode_and_crop(reader, span[i:i + _CHUNK], box, kept, timings)
        tick = time.perf_counter()
        try:
            frames = np.stack([kept[n] for n in span])
            if self.spotting == "regions":
                phases = spot_regions(frames, span, onset=onset, apex=apex, offset=offset, fps=fps,
                                      sigma=default_sigma(fps)).phases
            else:
                signal = motion_signal(frames, reference=0)
                phases = spot_phases(signal, span, onset=onset, apex=apex, offset=offset, sigma=default_sigma(fps))
        except ValueError as exc:  # a failure of this clip, not of the batch
            raise PredictionError(f"{name}: spotting failed: {' '.join(str(exc).split())}") from exc
        timings["spotting"] += time.perf_counter() - tick
        return phases

    def _timed_flow(self, timings: dict[str, float]) -> Callable[[np.ndarray], np.ndarray] | None:
        """The pipeline's own flow computation, timed as the ``flow`` stage (None for RGB models)."""
        flow, apex = self.preprocessing.flow, self.preprocessing.apex
        if flow is None and apex is None:
            return None

        def compute(frames: np.ndarray) -> np.ndarray:
            tick = time.perf_counter()
            flows = flow.compute(frames) if flow is not None else apex_flow_pixels(frames[0], frames[-1], apex.method)
            timings["flow"] += time.perf_counter() - tick
            return flows

        return compute

    def _finish(self, prepared: list[_Prepared]) -> list[Prediction | ClipFailure]:
        """Run the model on a batch; a clip whose logits are not finite is a failure, not a NaN result."""
        tick = time.perf_counter()
        outputs = self.runner(torch.stack([p.video for p in prepared]))
        finite = torch.isfinite(outputs).all(dim=1).tolist()
        logits, au_logits = outputs[:, :len(self.class_names)], outputs[:, len(self.class_names):]
        probabilities = torch.softmax(logits.double(), dim=1).numpy()
        au_probabilities = torch.sigmoid(au_logits.double()).numpy()
        model_seconds = (time.perf_counter() - tick) / len(prepared)
        out: list[Prediction | ClipFailure] = []
        for p, probs, au_probs, ok in zip(prepared, probabilities, au_probabilities, finite):
            if not ok:
                out.append(ClipFailure(p.name, f"the model's output is not finite (NaN or infinite logits) for this "
                                                f"clip: {self.source} is damaged or diverged"))
                continue
            timings = dict(p.timings, model=model_seconds)
            timings["total"] += model_seconds
            curve = p.phases.curve
            out.append(Prediction(
                clip=p.name, label=self.class_names[int(np.argmax(probs))] if self.class_names else None,
                probabilities={c: float(v) for c, v in zip(self.class_names, probs)},
                onset=p.phases.onset, apex=p.phases.apex, offset=p.phases.offset,
                estimated=bool(p.phases.estimated), estimated_fields=p.phases.estimated,
                face_box=p.box.as_list() if p.box is not None else None, model=self.model_name,
                checkpoint=self.source, motion_curve=None if curve is None else [round(float(v), 4) for v in curve],
                timings=timings, true=p.true,
                au_probabilities={name: float(v) for name, v in zip(self.au_names, au_probs)},
            ))
        return out


def _check_fps(name: str, fps: Any) -> float | None:
    """A given frame rate must be a finite number > 0 (None: unknown)."""
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PredictionError(f"{name}: fps {fps!r}: expected a frame rate > 0")
    return value


def _check_phases(name: str, numbers: list[int], onset: int | None, apex: int | None,
                  offset: int | None) -> tuple[int | None, int | None, int | None]:
    """Given phases must be frames of the clip, in order."""
    valid = set(numbers)
    for key, value in (("onset", onset), ("apex", apex), ("offset", offset)):
        if value is not None and int(value) not in valid:
            raise PredictionError(f"{name}: {key}={value} is outside the clip (valid frames {numbers[0]}..{numbers[-1]})")
    given = [v for v in (onset, apex, offset) if v is not None]
    if given != sorted(given):
        raise PredictionError(f"{name}: onset={onset}, apex={apex}, offset={offset} are not in order onset <= apex <= offset")
    return (None if onset is None else int(onset), None if apex is None else int(apex),
            None if offset is None else int(offset))


_SAFE = "-_."
_MAX_NAME = 150


def crop_folder_name(name: str) -> str:
    """A folder name for a clip's crops, unique per clip name.

    The whole name is kept, path separators becoming ``__`` (``sub01/EP01`` -> ``sub01__EP01``; a
    leading ``/`` is dropped); any other character outside letters, digits and ``-_.`` becomes ``_``.
    When that is not reversible (a character replaced, a ``__`` or ``.``/``..`` part) or the result is
    long, a short hash of the name is appended, so two clips never share a folder.
    """
    parts = [p for p in name.split("/") if p]
    safe_parts = ["".join(c if c.isascii() and (c.isalnum() or c in _SAFE) else "_" for c in p) for p in parts]
    lossy = ("/".join(parts) != name.lstrip("/") or not parts
             or any(a != b or "__" in a or a in (".", "..") for a, b in zip(parts, safe_parts)))
    safe = "__".join(safe_parts) or "clip"
    if lossy or len(safe) > _MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[-_MAX_NAME:].lstrip('.')}-{digest}"
    return safe


def _decode_and_crop(reader: Any, numbers: list[int], box: FaceBox | None, kept: dict[int, np.ndarray],
                     timings: dict[str, float]) -> None:
    """Decode frames ``numbers``, crop them with ``box`` into ``kept`` (by number), and time both stages."""
    tick = time.perf_counter()
    decoded = reader.get_frames_by_number(numbers)
    timings["decode"] += time.perf_counter() - tick
    tick = time.perf_counter()
    for n, frame in zip(numbers, crop_frames(decoded, box)):
        kept[n] = frame
    timings["face_crop"] += time.perf_counter() - tick


def _save_crops(folder: Path, name: str, numbers: list[int], crops: np.ndarray) -> None:
    """PNG files through :mod:`microexp.fileio` (atomic, normal permissions; a full or read-only disk is an
    OutputError, where ``cv2.imwrite`` would only return False)."""
    import cv2

    out = folder / crop_folder_name(name)
    for n, crop in zip(numbers, crops):
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"cv2.imencode failed on a {crop.shape} {crop.dtype} crop")  # a bug, not user input
        write_bytes(out / f"{n:05d}.png", encoded.tobytes())


def _one_line(exc: BaseException, item: ClipInput) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = item.name or item.path
    for prefix in (f"{name}: ", f"{item.path}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text
