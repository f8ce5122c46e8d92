"""Long synthetic recordings for spotting: minutes of one subject's face with several micro-expressions,
blinks and head movements between them, and the true intervals (``microexp synth OUT --long N``).

MEGC's spotting tasks run on long videos (CAS(ME)^2 at 30 fps, SAMM long videos at 200 fps, CAS(ME)^3) in
which a few micro-expressions hide among blinks and head movements. A recording here is planned as events
on one timeline (:func:`plan_long_videos`), in this order of draws from the video's stream
(:attr:`~microexp.synth.streams.Stream.LONG`):

- **micro-expressions**: the first 1-2 s in, then one every 2-5 s (gap from one offset to the next onset);
  emotion uniform over the DFME 7, AUs, amplitudes, duration and apex position as the preset draws them
  for clips (:func:`microexp.synth.plan._draw_action_units`, ``Preset.duration_ms``, ``apex_fraction``);
- **blinks** every 1.5-5 s, 0.1-0.3 s long (real blinks: 15-20 a minute, 0.1-0.4 s);
- **head movements** every 4-10 s: the head moves in 0.3-1 s to a new pose (up to 3 px of translation at
  128 px and 2 degrees of roll from the rest pose) and stays there;
- the preset's slow drift and illumination change throughout (:func:`~microexp.synth.nuisances.draw_drift`).

Blinks and head movements are kept 0.15 s clear of every micro-expression and of each other, so the
ground truth is unambiguous: each micro-expression interval holds that expression's motion and sensor
noise and drift only. (Real recordings do mix them; this is the clean case a spotter must handle first.)
The face is the subject's neutral face with no per-clip jitter; frames are rendered one at a time by the
clip renderer's :class:`~microexp.synth.render.FrameWarp` (:func:`iter_long_frames`), so writing a
recording of any length holds one frame in memory.

Layout written by :func:`generate_long_dataset`::

    OUT/videos/long_001.mp4     H.264, 4:4:4, crf 12, keyframe every 2 s; comment "microexp first_frame=1"
    OUT/intervals.csv           the micro-expressions: video, onset, apex, offset, emotion, aus, fps
                                (the ground truth ``microexp spot-eval`` reads)
    OUT/events.csv              every event: video, kind (micro-expression, blink, head-movement), onset,
                                apex, offset
    OUT/synth.json              the parameters and counts
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np

from microexp.errors import ConfigError
from microexp.fileio import write_text
from microexp.synth.faces import draw_face
from microexp.synth.fields import field_from_units, phase_profile
from microexp.synth.nuisances import Nuisance, blink_closure, draw_drift
from microexp.synth.options import MAX_SIZE, MIN_SIZE, Preset, get_preset
from microexp.synth.plan import EMOTIONS, ActionUnit, _draw_action_units
from microexp.synth.render import FrameWarp, subject_face
from microexp.synth.streams import GENERATOR_VERSION, Stream, random_stream
from microexp.synth.tables import csv_text

__all__ = ["DEFAULT_LONG_FPS", "DEFAULT_LONG_SECONDS", "EVENT_KINDS", "LongEvent", "LongSummary", "LongVideoSpec",
           "generate_long_dataset", "iter_long_frames", "plan_long_videos"]

DEFAULT_LONG_SECONDS = 60.0
DEFAULT_LONG_FPS = 200
MIN_LONG_SECONDS, MAX_LONG_SECONDS = 5.0, 3600.0
MIN_LONG_FPS, MAX_LONG_FPS = 25, 500
EVENT_KINDS = ("micro-expression", "blink", "head-movement")
KEYFRAME_SECONDS = 2.0
_CLEAR_S = 0.15  # blinks and head movements keep this far from every other event
_HEAD_SHIFT_PX, _HEAD_ROLL_DEG = 3.0, 2.0  # at 128 px


@dataclass(frozen=True)
class LongEvent:
    """One event of a recording (frame numbers from 1, ``onset <= apex <= offset``).

    ``apex``: a micro-expression's apex, a blink's closing peak, a head movement's midpoint. ``pose``: a head
    movement's target (tx, ty in px at 128, roll in degrees) from the rest pose.
    """

    kind: str
    onset: int
    apex: int
    offset: int
    emotion: str = ""
    action_units: tuple[ActionUnit, ...] = ()
    closure: float = 0.0
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def aus(self) -> str:
        return "+".join(a.code for a in sorted(self.action_units, key=lambda a: a.au))


@dataclass(frozen=True)
class LongVideoSpec:
    """Everything that decides a long recording (its frames are a function of it and the size)."""

    index: int
    seed: int
    subject: int
    name: str
    fps: int
    num_frames: int
    preset: Preset = dataclasses.field(repr=False)
    events: tuple[LongEvent, ...] = ()

    def of_kind(self, kind: str) -> list[LongEvent]:
        return [e for e in self.events if e.kind == kind]


def check_long_options(*, videos: object, seconds: object, fps: object, size: object, seed: object) -> None:
    """One-line :class:`ConfigError` for the first bad option of ``microexp synth --long``."""
    def bad_int(value: object) -> bool:
        return isinstance(value, bool) or not isinstance(value, (int, np.integer))

    if bad_int(videos) or videos < 1:  # type: ignore[operator]
        raise ConfigError(f"--long must be a positive integer (number of recordings), got {videos!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            MIN_LONG_SECONDS <= seconds <= MAX_LONG_SECONDS):
        raise ConfigError(f"--seconds must be a length in {MIN_LONG_SECONDS:g}..{MAX_LONG_SECONDS:g} s, "
                          f"got {seconds!r}")
    if bad_int(fps) or not MIN_LONG_FPS <= fps <= MAX_LONG_FPS:  # type: ignore[operator]
        raise ConfigError(f"--fps must be an integer frame rate in {MIN_LONG_FPS}..{MAX_LONG_FPS}, got {fps!r}")
    if bad_int(size) or not MIN_SIZE <= size <= MAX_SIZE or size % 2:  # type: ignore[operator]
        raise ConfigError(f"--size must be an even integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if bad_int(seed) or seed < 0:  # type: ignore[operator]
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")


def _clear(start: float, end: float, taken: list[tuple[float, float]], margin: float) -> bool:
    return all(end + margin <= a or start - margin >= b for a, b in taken)


def _frame(t: float, fps: int) -> int:
    return int(round(t * fps)) + 1


def plan_long_videos(*, preset: str | Preset = "medium", videos: int = 1, seconds: float = DEFAULT_LONG_SECONDS,
                     fps: int = DEFAULT_LONG_FPS, seed: int = 0) -> list[LongVideoSpec]:
    """Plan ``videos`` recordings (module docstring); video ``i`` shows subject ``i + 1``'s face."""
    preset = get_preset(preset)
    check_long_options(videos=videos, seconds=seconds, fps=fps, size=MIN_SIZE, seed=seed)
    num_frames = int(round(seconds * fps))
    specs = []
    for index in range(videos):
        rng = random_stream(seed, Stream.LONG, index)
        events: list[LongEvent] = []
        taken: list[tuple[float, float]] = []
        t = float(rng.uniform(1.0, 2.0))
        while True:
            emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
            units = _draw_action_units(emotion, rng, preset)
            duration = float(rng.uniform(*preset.duration_ms)) / 1000.0
            fraction = float(rng.uniform(*preset.apex_fraction))
            gap = float(rng.uniform(2.0, 5.0))
            onset = _frame(t, fps)
            span = max(2, int(round(duration * fps)))
            offset = onset + span
            if offset + fps > num_frames:  # at least a second of neutral face after the last one
                break
            apex = onset + int(np.clip(round(fraction * span), 1, span - 1))
            events.append(LongEvent("micro-expression", onset, apex, offset, emotion, units))
            taken.append(((onset - 1) / fps, (offset - 1) / fps))
            t = (offset - 1) / fps + gap
        t = float(rng.uniform(0.5, 3.0))
        while t < seconds - 0.5:
            duration, peak = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.6, 1.0))
            if _clear(t, t + duration, taken, _CLEAR_S):
                a, b = _frame(t, fps), _frame(t + duration, fps)
                events.append(LongEvent("blink", a, min(b, a + max(1, int(round(0.35 * (b - a))))), b,
                                        closure=peak))
                taken.append((t, t + duration))
            t += duration + float(rng.uniform(1.5, 5.0))
        t = float(rng.uniform(2.0, 8.0))
        while t < seconds - 1.5:
            duration = float(rng.uniform(0.3, 1.0))
            pose = (float(rng.uniform(-1, 1)) * _HEAD_SHIFT_PX, float(rng.uniform(-1, 1)) * _HEAD_SHIFT_PX,
                    float(rng.uniform(-1, 1)) * _HEAD_ROLL_DEG)
            if _clear(t, t + duration, taken, _CLEAR_S):
                a, b = _frame(t, fps), _frame(t + duration, fps)
                events.append(LongEvent("head-movement", a, (a + b) // 2, b, pose=pose))
                taken.append((t, t + duration))
            t += duration + float(rng.uniform(4.0, 10.0))
        events.sort(key=lambda e: (e.onset, e.kind))
        specs.append(LongVideoSpec(index, int(seed), index + 1, f"long_{index + 1:03d}", int(fps), num_frames,
                                   preset, tuple(events)))
    return specs


class _Timeline(NamedTuple):
    drift: Nuisance
    fields: dict[int, np.ndarray]  # event index -> AU field at the apex


def _head_pose(spec: LongVideoSpec, number: int, size: int) -> np.ndarray:
    """(tx, ty, roll) of the head movements at a frame: raised-cosine moves between held poses."""
    pose = np.zeros(3)
    for event in spec.of_kind("head-movement"):
        target = np.array([event.pose[0] * size / 128.0, event.pose[1] * size / 128.0, np.deg2rad(event.pose[2])])
        if number >= event.offset:
            pose = target
        elif number > event.onset:
            w = 0.5 * (1 - np.cos(np.pi * (number - event.onset) / (event.offset - event.onset)))
            pose = pose + w * (target - pose)
        else:
            break
    return pose


def iter_long_frames(spec: LongVideoSpec, *, size: int = 128, start: int = 1,
                     stop: int | None = None) -> Iterator[np.ndarray]:
    """The recording's frames ``start..stop`` (1-based, inclusive; default all), one ``(size, size, 3)`` uint8
    RGB frame at a time; frame ``n`` is the same whichever range is asked for."""
    stop = spec.num_frames if stop is None else stop
    if not 1 <= start <= stop <= spec.num_frames:
        raise ValueError(f"{spec.name}: frames {start}..{stop} outside 1..{spec.num_frames}")
    preset = spec.preset
    # the drift's own stream (key index, 1), apart from the plan's (key index): a plan change leaves it alone
    drift = draw_drift(random_stream(spec.seed, Stream.LONG, spec.index, 1), preset, size)
    geometry, look = subject_face(spec.seed, spec.subject)
    face = draw_face(geometry, look, size, closed_eyes=True)
    cap = preset.amplitude_px[1] * size / 128.0
    mes = spec.of_kind("micro-expression")
    fields = [field_from_units(e.action_units, geometry, size, cap) for e in mes]
    blinks = spec.of_kind("blink")
    warp = FrameWarp(geometry, size)
    no_field = np.zeros((size, size, 2), np.float32)
    for number in range(start, stop + 1):
        t = (number - 1) / spec.fps
        motion = drift.values(t)
        motion[:3] += _head_pose(spec, number, size)
        closure = max((blink_closure(t, (b.onset - 1) / spec.fps, (b.offset - b.onset) / spec.fps, b.closure)
                       for b in blinks if b.onset <= number <= b.offset), default=0.0)
        intensity, field = 0.0, no_field
        for event, event_field in zip(mes, fields):
            if event.onset < number < event.offset:
                intensity = float(phase_profile([number], event.onset, event.apex, event.offset)[0])
                field = event_field
                break
        noise = random_stream(spec.seed, Stream.LONG_FRAME, spec.index, number)
        yield warp.frame(face, motion, closure, intensity, field, noise, preset.noise_sigma)


@dataclass(frozen=True)
class LongSummary:
    """What :func:`generate_long_dataset` wrote."""

    out_dir: Path
    intervals: Path
    videos: int
    fps: int
    seconds: float
    size: int
    preset: str
    seed: int
    counts: dict[str, int]
    elapsed: float

    def format(self) -> str:
        return (f"wrote {self.videos} long recording(s) of {self.seconds:g} s at {self.fps} fps "
                f"({self.size} px, preset {self.preset}, seed {self.seed}) to {self.out_dir / 'videos'} "
                f"in {self.elapsed:.1f} s\n"
                + "events: " + ", ".join(f"{n} {kind}s" for kind, n in self.counts.items()) + "\n"
                + f"true intervals: {self.intervals} (score spotted ones with `microexp spot-eval PRED "
                  f"{self.intervals}`)")


class _LongJob(NamedTuple):
    spec: LongVideoSpec
    path: str
    size: int


def _write_long(job: _LongJob) -> str:
    from microexp.data.video import write_video

    cv2.setNumThreads(1)
    # one encoder thread: x264's default threading now and then encodes the same frames to other bytes
    write_video(job.path, iter_long_frames(job.spec, size=job.size), fps=job.spec.fps, lossless=False,
                gop=int(KEYFRAME_SECONDS * job.spec.fps), threads=1, metadata={"comment": "microexp first_frame=1"})
    return job.spec.name


def event_rows(specs: list[LongVideoSpec]) -> list[dict[str, object]]:
    return [{"video": s.name, "kind": e.kind, "onset": e.onset, "apex": e.apex, "offset": e.offset}
            for s in specs for e in s.events]


def interval_rows(specs: list[LongVideoSpec]) -> list[dict[str, object]]:
    return [{"video": s.name, "onset": e.onset, "apex": e.apex, "offset": e.offset, "emotion": e.emotion,
             "aus": e.aus, "fps": s.fps} for s in specs for e in s.of_kind("micro-expression")]


def generate_long_dataset(out_dir: str | os.PathLike[str], *, preset: str | Preset = "medium", videos: int = 1,
                          seconds: float = DEFAULT_LONG_SECONDS, fps: int = DEFAULT_LONG_FPS, size: int = 128,
                          seed: int = 0, workers: int | None = None, progress: bool | None = None,
                          overwrite: bool = False) -> LongSummary:
    """Write ``videos`` long recordings and their true intervals into ``out_dir`` (module docstring)."""
    from tqdm import tqdm

    from microexp.synth.write import prepare_out_dir
    from microexp.workers import worker_context

    started = time.perf_counter()
    preset_obj = get_preset(preset)
    check_long_options(videos=videos, seconds=seconds, fps=fps, size=size, seed=seed)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    out = Path(out_dir)
    prepare_out_dir(out, overwrite, ours=("videos", "intervals.csv", "events.csv", "synth.json"))
    specs = plan_long_videos(preset=preset_obj, videos=videos, seconds=seconds, fps=fps, seed=seed)
    (out / "videos").mkdir()
    jobs = [_LongJob(s, str(out / "videos" / f"{s.name}.mp4"), size) for s in specs]
    n_workers = min(workers or min(2, os.cpu_count() or 1), len(jobs))
    with tqdm(total=len(jobs), unit="video", desc="synth --long",
              disable=None if progress is None else not progress) as bar:
        if n_workers <= 1:
            for job in jobs:
                _write_long(job)
                bar.update()
        else:
            with worker_context().Pool(n_workers) as pool:
                for _ in pool.imap_unordered(_write_long, jobs, chunksize=1):
                    bar.update()
    intervals = interval_rows(specs)
    columns = ["video", "onset", "apex", "offset", "emotion", "aus", "fps"]
    write_text(out / "intervals.csv", csv_text(intervals, columns))
    write_text(out / "events.csv", csv_text(event_rows(specs), ["video", "kind", "onset", "apex", "offset"]))
    counts = {kind: sum(len(s.of_kind(kind)) for s in specs) for kind in EVENT_KINDS}
    meta = {"generator": "microexp synth --long", "version": GENERATOR_VERSION,
            "preset": dataclasses.asdict(preset_obj), "seed": seed, "videos": videos, "seconds": float(seconds),
            "fps": fps, "size": size, "frames_per_video": specs[0].num_frames, "event_counts": counts,
            "videos_list": [s.name for s in specs]}
    write_text(out / "synth.json", json.dumps(meta, indent=2) + "\n")
    return LongSummary(out, out / "intervals.csv", videos, fps, float(seconds), size, preset_obj.name, seed, counts,
                       time.perf_counter() - started)
