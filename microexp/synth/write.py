"""Writing a dataset: clip files (H.264 mp4 or PNG folders, DFME-style folders, uncropped footage), the
tables and ``synth.json``; clips are rendered in a pool of ``spawn`` worker processes. The same writer
makes the unlabeled pool (``unlabeled=True``; ``microexp synth --unlabeled N``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np

from microexp.errors import ConfigError
from microexp.fileio import write_text
from microexp.synth.options import (
    DEFAULT_CLIPS,
    DEFAULT_IMBALANCE_RATIO,
    DEFAULT_SUBJECTS,
    Preset,
    check_options,
    get_preset,
)
from microexp.synth.plan import EMOTION_AUS, EMOTIONS, POOL_SUBJECT_OFFSET, ClipSpec, face_position, plan_dataset
from microexp.synth.render import render_clip
from microexp.synth.streams import GENERATOR_VERSION
from microexp.synth.tables import (
    CSV_COLUMNS,
    DFME_SHEET_NAME,
    annotation_rows,
    csv_text,
    ground_truth_rows,
    write_dfme_sheet,
)
from microexp.workers import worker_context

logger = logging.getLogger(__name__)

__all__ = ["SynthSummary", "generate_dataset"]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    out_dir: Path
    annotations: Path
    preset: str
    seed: int
    size: int
    fmt: str
    clips: int
    subjects: int
    frames: int
    class_counts: dict[str, int]
    fps_counts: dict[int, int]
    label_flips: int
    seconds: float
    uncropped: tuple[int, int] | None = None  # (W, H) of the frames the faces were placed in
    unlabeled: bool = False  # an unlabeled pool: no annotated emotions, AUs or phases; class_counts all 0

    def format(self) -> str:
        """A short human-readable summary."""
        counts = [c for c in self.class_counts.values() if c > 0]
        ratio = max(counts) / min(counts) if counts else 0.0
        what = "unlabeled clips" if self.unlabeled else "clips"
        first = POOL_SUBJECT_OFFSET + 1 if self.unlabeled else 1
        who = (f"{self.subjects} new subjects (sub{first:04d}..sub{first + self.subjects - 1:04d})"
               if self.unlabeled else f"{self.subjects} subjects")
        lines = [
            f"wrote {self.clips} {what} ({self.frames} frames, {self.fmt}, {self.size} px"
            + (f" faces in {self.uncropped[0]}x{self.uncropped[1]} frames" if self.uncropped else "")
            + f", preset {self.preset}, "
            f"seed {self.seed}) from {who} to {self.out_dir} in {self.seconds:.1f} s",
            ("labels: none (blank emotion, AUs, onset, apex and offset in annotations.csv; the true ones in "
             "ground_truth.csv)" if self.unlabeled else
             f"classes (imbalance ratio {ratio:.1f}): "
             + ", ".join(f"{name} {count}" for name, count in self.class_counts.items())),
            "fps: " + ", ".join(f"{fps} fps {count}" for fps, count in sorted(self.fps_counts.items())),
        ]
        if self.label_flips:
            lines.append(f"label noise: {self.label_flips} annotated labels flipped (true labels in ground_truth.csv)")
        lines.append(f"annotations: {self.annotations}")
        return "\n".join(lines)


class _Job(NamedTuple):
    spec: ClipSpec
    out_dir: str
    size: int
    fmt: str
    dfme: bool
    uncropped: tuple[int, int] | None = None


class _Written(NamedTuple):
    index: int
    path: str  # relative to out_dir
    frames: int


def _dfme_folder(subject: int) -> str:
    lo = (subject - 1) // 10 * 10 + 1
    return f"{lo:04d}-{lo + 9:04d}"


def _clip_relpath(spec: ClipSpec, fmt: str) -> str:
    stem = f"clips/sub{spec.subject:04d}/{spec.clip}"
    return stem + ".mp4" if fmt == "mp4" else stem


def _write_pngs(folder: Path, frames: np.ndarray | Iterable[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, frame in enumerate(frames, start=1):
        path = folder / f"{n:05d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"{path}: could not write PNG")
        paths.append(path)
    return paths


def _link_or_copy(sources: Sequence[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        dst = folder / src.name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _uncropped_frames(frames: np.ndarray, spec: ClipSpec, uncropped: tuple[int, int]) -> Iterator[np.ndarray]:
    """The face frames placed at the subject's position in larger frames of their border colour, one at a
    time (a whole clip of large frames would not fit in memory)."""
    size = frames.shape[1]
    x, y = face_position(spec.seed, spec.subject, size, uncropped, pool=spec.pool)
    border = np.concatenate([frames[0, :4].reshape(-1, 3), frames[0, -4:].reshape(-1, 3),
                             frames[0, :, :4].reshape(-1, 3), frames[0, :, -4:].reshape(-1, 3)])
    background = np.median(border, axis=0).astype(np.uint8)
    for face in frames:
        canvas = np.empty((uncropped[1], uncropped[0], 3), np.uint8)
        canvas[:] = background
        canvas[y:y + size, x:x + size] = face
        yield canvas


def _write_clip(job: _Job) -> _Written:
    from microexp.data.video import write_video

    spec = job.spec
    out = Path(job.out_dir)
    faces = render_clip(spec, size=job.size).frames

    def frames() -> np.ndarray | Iterator[np.ndarray]:
        return faces if job.uncropped is None else _uncropped_frames(faces, spec, job.uncropped)

    rel = _clip_relpath(spec, job.fmt)
    pngs: list[Path] = []
    if job.fmt == "mp4":
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        # the same first_frame word microexp pack writes: predict numbers a bare clip like the annotations
        # one encoder thread (the pool runs one job per core): x264's default threading now and then encodes
        # the same frames to other bytes, and the same seed must give the same files
        write_video(out / rel, frames(), fps=spec.fps, lossless=False, threads=1,
                    metadata={"comment": "microexp first_frame=1"})
    else:
        pngs = _write_pngs(out / rel, frames())
    if job.dfme:
        folder = out / "dfme" / _dfme_folder(spec.subject) / spec.clip
        if pngs:
            _link_or_copy(pngs, folder)
        else:
            _write_pngs(folder, frames())
    return _Written(spec.index, rel, len(faces))


def _init_worker() -> None:
    # one OpenCV thread per worker process: the pool is the parallelism
    cv2.setNumThreads(1)


def _recipe_json(recipe: dict) -> dict:
    out: dict[str, object] = {"core": list(recipe.get("core", ()))}
    if "choice" in recipe:
        out["choice"] = [{"aus": list(group), "p": p} for group, p in recipe["choice"]]
    out["optional"] = {str(au): p for au, p in recipe["optional"].items()}
    out["unilateral"] = bool(recipe.get("unilateral", False))
    return out


#: what a clip dataset writes in its folder (removed by --overwrite)
CLIP_OUTPUTS = ("annotations.csv", "ground_truth.csv", "synth.json", "clips", "dfme")


def prepare_out_dir(out: Path, overwrite: bool, *, ours: Sequence[str] = CLIP_OUTPUTS) -> None:
    """Make ``out``, refusing (unless ``overwrite``) or removing what a generator wrote there before (``ours``)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    present = [name for name in ours if (out / name).exists()]
    if present and not overwrite:
        raise ConfigError(
            f"{out} already holds a synthetic dataset ({', '.join(present)}); "
            "pass --overwrite or choose another OUT_DIR"
        )
    for name in present:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    preset: str | Preset = "medium",
    subjects: int = DEFAULT_SUBJECTS,
    clips: int = DEFAULT_CLIPS,
    size: int = 128,
    fmt: str = "mp4",
    seed: int = 0,
    imbalance_ratio: float | None = None,
    label_noise: float = 0.0,
    dfme_sheet: bool = False,
    uncropped: tuple[int, int] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    unlabeled: bool = False,
) -> SynthSummary:
    """Generate the synthetic benchmark into ``out_dir`` (layout in :mod:`microexp.synth`'s docstring).

    Args:
        out_dir: output folder (created; must not already hold a dataset unless ``overwrite``).
        preset: 'easy', 'medium' or 'hard' (see :data:`PRESETS`), or a :class:`Preset`.
        subjects: number of subjects.
        clips: total number of clips.
        size: frame side in pixels (even, 32..1024).
        fmt: 'mp4' (H.264, near-lossless ``write_video(lossless=False)``) or 'frames' (PNG folders).
        seed: seed; the same seed gives byte-identical annotations and identical frames.
        imbalance_ratio: largest / smallest class (default 8, 1 = balanced).
        label_noise: fraction of annotated labels flipped to another emotion, in [0, 1).
        dfme_sheet: also write ``dfme/DFME_data_coding.xlsx`` and DFME-style frame folders.
        uncropped: ``(width, height)`` (width first, as in ``--uncropped WxH``): place each face at a fixed
            per-subject position in frames of that size (even sides, ``size`` to :data:`MAX_UNCROPPED`), like
            raw footage; None: the frames are the face crops.
        workers: processes rendering clips (default ``min(2, cpu count)``); results do not depend on it.
        progress: tqdm progress bar; None = only when stderr is a terminal.
        overwrite: replace a dataset already in ``out_dir``.
        unlabeled: write an unlabeled pool of ``clips`` clips for self-supervised pretraining instead: new
            subjects (ids from ``POOL_SUBJECT_OFFSET + 1``, faces from the pool's own random streams, so
            never a labelled dataset's), and ``annotations.csv`` with blank ``emotion``, ``aus``, ``onset``,
            ``apex`` and ``offset`` (load it with ``load_clip_table(..., labels_required=False)``); the
            true ones stay in ``ground_truth.csv``. ``label_noise`` must be 0 and ``dfme_sheet`` False.

    Returns:
        :class:`SynthSummary`.

    Raises:
        ConfigError: a bad option (the message names it and the allowed values).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    preset_obj = get_preset(preset)
    check_options(subjects=subjects, clips=clips, size=size, fmt=fmt, seed=seed, imbalance_ratio=imbalance_ratio,
                   label_noise=label_noise, workers=workers, uncropped=uncropped, unlabeled=unlabeled,
                   dfme_sheet=dfme_sheet)
    uncropped = None if uncropped is None else (int(uncropped[0]), int(uncropped[1]))
    out = Path(out_dir)
    prepare_out_dir(out, overwrite)
    specs = plan_dataset(preset=preset_obj, subjects=subjects, clips=clips, seed=seed,
                         imbalance_ratio=imbalance_ratio, label_noise=label_noise, unlabeled=unlabeled)
    jobs = [_Job(spec, str(out), size, fmt, dfme_sheet, uncropped) for spec in specs]
    n_workers = min(workers or min(2, os.cpu_count() or 1), len(jobs))
    written: dict[int, _Written] = {}
    bar = tqdm(total=len(jobs), unit="clip", desc="synth", disable=None if progress is None else not progress)
    try:
        if n_workers <= 1:
            for job in jobs:
                result = _write_clip(job)
                written[result.index] = result
                bar.update()
        else:
            # spawn, not fork (microexp.workers): a forked OpenCV/x264 thread pool can hang the children
            with worker_context().Pool(n_workers, initializer=_init_worker) as pool:
                for result in pool.imap_unordered(_write_clip, jobs, chunksize=1):
                    written[result.index] = result
                    bar.update()
    finally:
        bar.close()

    paths = {i: w.path for i, w in written.items()}
    write_text(out / "annotations.csv", csv_text(annotation_rows(specs, paths), CSV_COLUMNS))
    gt_rows = ground_truth_rows(specs, size, uncropped)
    write_text(out / "ground_truth.csv", csv_text(gt_rows, list(gt_rows[0])))
    if dfme_sheet:
        write_dfme_sheet(out / "dfme" / DFME_SHEET_NAME, specs)

    label_counts = Counter(s.label for s in specs)
    summary_counts = {name: label_counts.get(name, 0) for name in EMOTIONS}
    fps_counts = dict(sorted(Counter(s.fps for s in specs).items()))
    flips = sum(s.label_flipped for s in specs)
    total_frames = sum(w.frames for w in written.values())
    meta = {
        "generator": "microexp synth",
        "version": GENERATOR_VERSION,
        "preset": dataclasses.asdict(preset_obj),
        "seed": seed,
        "subjects": subjects,
        "clips": clips,
        "size": size,
        "format": fmt,
        "imbalance_ratio": DEFAULT_IMBALANCE_RATIO if imbalance_ratio is None else float(imbalance_ratio),
        "label_noise": float(label_noise),
        "label_flips": flips,
        "dfme_sheet": bool(dfme_sheet),
        "uncropped": None if uncropped is None else list(uncropped),
        "frames": total_frames,
        "class_counts": summary_counts,
        "true_class_counts": {name: sum(s.emotion == name for s in specs) for name in EMOTIONS},
        "fps_counts": {str(k): v for k, v in fps_counts.items()},
        "emotion_aus": {name: _recipe_json(recipe) for name, recipe in EMOTION_AUS.items()},
    }
    if unlabeled:  # labelled datasets' synth.json stays as it was
        meta["unlabeled"] = True
        meta["subject_ids"] = [specs[0].subject, specs[-1].subject]
    write_text(out / "synth.json", json.dumps(meta, indent=2, default=list) + "\n")
    summary = SynthSummary(
        out_dir=out, annotations=out / "annotations.csv", preset=preset_obj.name, seed=seed, size=size, fmt=fmt,
        clips=clips, subjects=subjects, frames=total_frames, class_counts=summary_counts, fps_counts=fps_counts,
        label_flips=flips, seconds=time.perf_counter() - start, uncropped=uncropped, unlabeled=bool(unlabeled),
    )
    logger.debug("synthetic dataset: %d clips, %d frames in %.1f s", clips, total_frames, summary.seconds)
    return summary
