"""The synthetic DFME-style micro-expression benchmark: the toolkit's embedded default dataset.

Real micro-expression datasets are licence-gated, so ``microexp synth`` draws one that exercises every
part of the toolkit honestly:

- **Subjects** are procedurally drawn faces (:mod:`microexp.synth.faces`): face shape, eye, brow,
  nose and mouth geometry, skin tone, texture, hair and lighting differ per subject.
- **A clip** is a neutral face with nuisances (sensor noise, a slow illumination change, a small slow
  head drift, blinks unrelated to the class) and one micro-expression: a set of FACS action units (AUs),
  each a sum of Gaussian-windowed displacement fields anchored at brows, lids, cheeks, nose wings, lips
  and lip corners. The displacement peaks at about 0.5-2 px at 128 px (scaled with the size), and follows
  a raised-cosine rise from onset to apex and fall to offset within 40-500 ms; the apex is not always in
  the middle. Each frame is the neutral face warped with ``cv2.remap``.
- **Emotions** (the DFME 7) map to AU combinations with per-clip variation, shared AUs and laterality, so no
  single cue gives the class away (see :data:`EMOTION_AUS`).
- **The class lives in motion.** A clip's neutral geometry is the subject's geometry moved per clip by a
  little more than the AU amplitude (``Preset.jitter_px``), so an apex frame alone is ambiguous while the
  apex-minus-onset difference is not. ``tests/test_synthetic.py`` checks this with a linear classifier.
- **Frame rates** follow DFME's parts (A 500 fps ~15%, B 300 fps ~13%, C 200 fps ~72% of clips), one part
  per subject as in DFME; clips have a few neutral frames before the onset and after the offset, and at
  most ``Preset.max_frames`` frames (so long 500 fps expressions are capped at about 300 ms).
- **Classes are long-tailed** (``imbalance_ratio`` between the largest and the smallest class, 1 =
  balanced); ``label_noise`` flips a fraction of the annotated labels (the AU strings stay true).

Everything random derives from ``numpy.random.SeedSequence(seed, spawn_key=...)`` keyed by the subject,
the clip index and the frame number, so the same seed gives byte-identical annotations and identical
frames whatever the number of workers, and a clip can be rendered alone (:func:`render_clip`).

Layout written by :func:`generate_dataset`::

    OUT/annotations.csv            our CSV (frame numbers start at 1; first_frame=1)
    OUT/ground_truth.csv           true emotion, flipped flag, duration and AU amplitudes per clip
    OUT/synth.json                 generation parameters and counts
    OUT/clips/sub0001/sub0001_001.mp4        (format 'mp4')  or
    OUT/clips/sub0001/sub0001_001/00001.png  (format 'frames')
    OUT/dfme/DFME_data_coding.xlsx and OUT/dfme/0001-0010/sub0001_001/00001.png   (dfme_sheet=True)

Uncropped footage (``uncropped=(W, H)``, ``microexp synth --uncropped WxH``): each ``size`` px face is placed
at a fixed position per subject in larger ``W x H`` frames of its border colour, as in raw recordings such
as the 2024 DFME release; ``ground_truth.csv`` gains the true box (``face_x``, ``face_y``, ``face_size``).
``microexp pack --face-crop`` cuts such clips back to faces.

Sides: 'R' is the subject's right, which is the image's *left* in these frontal views.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np

from microexp.synth.faces import (
    EyeBox,
    FaceGeometry,
    FaceLook,
    draw_face,
    jitter_geometry,
    random_face,
)
from microexp.errors import ConfigError
from microexp.fileio import write_text

logger = logging.getLogger(__name__)

__all__ = [
    "EMOTIONS",
    "EMOTION_AUS",
    "FPS_PARTS",
    "PRESETS",
    "ActionUnit",
    "ClipSpec",
    "Preset",
    "RenderedClip",
    "SynthSummary",
    "au_displacement_field",
    "class_counts",
    "expression_profile",
    "face_position",
    "generate_dataset",
    "get_preset",
    "plan_dataset",
    "render_clip",
]

#: bump when a change alters the generated data for a given seed
GENERATOR_VERSION = "1"

#: the DFME emotions, in the order of the ``dfme7`` class map
EMOTIONS = ("happiness", "anger", "contempt", "disgust", "fear", "sadness", "surprise")
#: largest to smallest class of the long tail (a fixed, arbitrary order; not DFME's real counts)
FREQUENCY_ORDER = ("disgust", "surprise", "happiness", "fear", "anger", "sadness", "contempt")
#: (fps, share of clips) of the DFME parts A, B, C
FPS_PARTS = ((500, 0.15), (300, 0.13), (200, 0.72))
#: how each emotion is made: AUs always present, optional AUs with their probability, and the alternatives
#: (one of the groups is drawn with the given probability). Contempt is unilateral (R or L).
EMOTION_AUS: dict[str, dict] = {
    "happiness": {"core": (12,), "optional": {6: 0.75}},
    "surprise": {"core": (1, 2), "optional": {5: 0.5}},
    "disgust": {"choice": (((9,), 0.4), ((10,), 0.4), ((9, 10), 0.2)), "optional": {4: 0.5}},
    "sadness": {"core": (1, 4, 15), "optional": {}},
    "fear": {"core": (1, 2, 4), "optional": {5: 0.4, 20: 0.4}},
    "anger": {"core": (4, 7), "optional": {23: 0.5}},
    "contempt": {"choice": (((12,), 0.5), ((14,), 0.5)), "optional": {}, "unilateral": True},
}

DEFAULT_IMBALANCE_RATIO = 8.0
DEFAULT_SUBJECTS = 20
DEFAULT_CLIPS = 300
FORMATS = ("mp4", "frames")
MIN_SIZE, MAX_SIZE = 32, 1024
MAX_UNCROPPED = 4096  # largest side of --uncropped frames
DFME_SHEET_NAME = "DFME_data_coding.xlsx"
DFME_COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Emotion", "fps")
CSV_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "fps", "emotion", "aus", "first_frame",
               "dataset")

# SeedSequence spawn keys of the independent random streams
_PLAN, _SUBJECT, _CLIP_PLAN, _CLIP_RENDER, _FRAME, _PLACEMENT = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Preset:
    """Difficulty of the generated data. Pixel quantities are at 128 px and scale with the size.

    Attributes:
        name: preset name.
        amplitude_px: range of one AU's peak displacement.
        duration_ms: range of the onset-to-offset duration.
        apex_fraction: range of (apex - onset) / (offset - onset).
        noise_sigma: sensor noise (grey levels, per pixel and channel, independent per frame).
        drift_px: head translation amplitude (slow, 0.3-1.5 Hz sinusoids).
        drift_deg: head roll amplitude.
        drift_scale: relative scale amplitude (towards/away from the camera).
        illumination: relative amplitude of the slow gain and gradient change.
        blink_rate: probability that a clip contains a blink (anywhere, unrelated to the class).
        jitter_px: per-clip move of the neutral features (uniform +-), a little more than the AUs.
        margin_frames: range of neutral frames before the onset and after the offset.
        max_frames: cap of a clip's frame count (durations are drawn below what fits).
    """

    name: str
    amplitude_px: tuple[float, float]
    duration_ms: tuple[float, float]
    apex_fraction: tuple[float, float]
    noise_sigma: float
    drift_px: float
    drift_deg: float
    drift_scale: float
    illumination: float
    blink_rate: float
    jitter_px: float
    margin_frames: tuple[int, int]
    max_frames: int


PRESETS: dict[str, Preset] = {
    "easy": Preset("easy", amplitude_px=(1.2, 2.0), duration_ms=(150.0, 500.0), apex_fraction=(0.3, 0.6),
                   noise_sigma=1.0, drift_px=0.25, drift_deg=0.1, drift_scale=0.001, illumination=0.01,
                   blink_rate=0.05, jitter_px=2.5, margin_frames=(3, 8), max_frames=160),
    "medium": Preset("medium", amplitude_px=(0.8, 1.6), duration_ms=(80.0, 500.0), apex_fraction=(0.2, 0.7),
                     noise_sigma=2.0, drift_px=0.6, drift_deg=0.3, drift_scale=0.003, illumination=0.03,
                     blink_rate=0.2, jitter_px=2.0, margin_frames=(3, 10), max_frames=160),
    "hard": Preset("hard", amplitude_px=(0.5, 1.2), duration_ms=(40.0, 400.0), apex_fraction=(0.15, 0.8),
                   noise_sigma=3.5, drift_px=1.2, drift_deg=0.6, drift_scale=0.006, illumination=0.06,
                   blink_rate=0.4, jitter_px=1.5, margin_frames=(3, 12), max_frames=160),
}


class ActionUnit(NamedTuple):
    """One AU of a clip: number, side ('B' both, 'R' subject's right, 'L'), peak amplitude (px at 128)."""

    au: int
    side: str
    amplitude: float
    gains: tuple[float, float]  # per-side factor (R, L): asymmetry of bilateral AUs, 0 on the unused side

    @property
    def code(self) -> str:
        return f"{self.side}{self.au}" if self.side in ("R", "L") else str(self.au)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip (the rest is drawn from ``(seed, index)`` when rendering).

    Frame numbers start at 1; the expression starts after ``onset`` and ends at ``offset``, where it is 0,
    and peaks (1) at ``apex``.
    """

    index: int
    seed: int
    subject: int
    clip: str
    emotion: str  # the true emotion
    label: str  # the annotated emotion (differs from ``emotion`` for label-noise clips)
    action_units: tuple[ActionUnit, ...]
    fps: int
    num_frames: int
    onset: int
    apex: int
    offset: int
    preset: Preset = dataclasses.field(repr=False)

    @property
    def aus(self) -> str:
        """AU string as written in the sheet, e.g. ``'1+2+5'`` or ``'R12'``."""
        return "+".join(a.code for a in sorted(self.action_units, key=lambda a: a.au))

    @property
    def duration_ms(self) -> float:
        return 1000.0 * (self.offset - self.onset) / self.fps

    @property
    def label_flipped(self) -> bool:
        return self.label != self.emotion


class RenderedClip(NamedTuple):
    """A rendered clip.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        frame_numbers: ``(T,)`` the frame numbers rendered (1-based).
        profile: ``(T,)`` expression intensity in 0..1 (1 at the apex).
        field: ``(H, W, 2)`` float32 AU displacement (dx, dy) in pixels at the apex (intensity 1).
    """

    frames: np.ndarray
    frame_numbers: np.ndarray
    profile: np.ndarray
    field: np.ndarray


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

    def format(self) -> str:
        """A short human-readable summary."""
        counts = [c for c in self.class_counts.values() if c > 0]
        ratio = max(counts) / min(counts) if counts else 0.0
        lines = [
            f"wrote {self.clips} clips ({self.frames} frames, {self.fmt}, {self.size} px"
            + (f" faces in {self.uncropped[0]}x{self.uncropped[1]} frames" if self.uncropped else "")
            + f", preset {self.preset}, "
            f"seed {self.seed}) from {self.subjects} subjects to {self.out_dir} in {self.seconds:.1f} s",
            f"classes (imbalance ratio {ratio:.1f}): "
            + ", ".join(f"{name} {count}" for name, count in self.class_counts.items()),
            "fps: " + ", ".join(f"{fps} fps {count}" for fps, count in sorted(self.fps_counts.items())),
        ]
        if self.label_flips:
            lines.append(f"label noise: {self.label_flips} annotated labels flipped (true labels in ground_truth.csv)")
        lines.append(f"annotations: {self.annotations}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------
def get_preset(name: str | Preset) -> Preset:
    """The preset called ``name`` (a :class:`Preset` is returned as is); ConfigError for unknown names."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]


def _int_option(option: str, value: object, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{option} must be {what}, got {value!r}")
    return int(value)


def _check_options(
    *, subjects: object, clips: object, size: object, fmt: object, seed: object, imbalance_ratio: object,
    label_noise: object, workers: object, uncropped: object = None,
) -> None:
    n_clips = _int_option("--clips", clips, 1, "a positive integer (total number of clips)")
    n_subjects = _int_option("--subjects", subjects, 1, "a positive integer")
    if n_subjects > n_clips:
        raise ConfigError(f"--subjects ({n_subjects}) must not exceed --clips ({n_clips}): every subject needs a clip")
    _int_option("--size", size, MIN_SIZE, f"an even integer in {MIN_SIZE}..{MAX_SIZE}")
    if int(size) > MAX_SIZE or int(size) % 2:  # type: ignore[arg-type]
        raise ConfigError(f"--size must be an even integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _int_option("--seed", seed, 0, "a non-negative integer")
    if imbalance_ratio is not None:
        if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float, np.number)) or not (
            np.isfinite(imbalance_ratio) and imbalance_ratio >= 1
        ):
            raise ConfigError(
                f"--imbalance-ratio must be a number >= 1 (largest / smallest class; 1 = balanced), "
                f"got {imbalance_ratio!r}"
            )
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float, np.number)) or not (
        0 <= label_noise < 1
    ):
        raise ConfigError(f"--label-noise must be a fraction in [0, 1), got {label_noise!r}")
    if workers is not None:
        _int_option("--workers", workers, 1, "a positive integer")
    if uncropped is not None:
        try:
            width, height = uncropped  # type: ignore[misc]
        except (TypeError, ValueError):
            raise ConfigError(f"--uncropped must be a (width, height) pair, got {uncropped!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v % 2
               or not int(size) <= v <= MAX_UNCROPPED for v in (width, height)):  # type: ignore[operator]
            raise ConfigError(f"--uncropped must be even WxH frame sides of at least --size ({size}) and at most "
                              f"{MAX_UNCROPPED}, got {width}x{height}")


# ------------------------------------------------------------------------------------------------------
# planning: who, which class, which AUs, which frame rate, when
# ------------------------------------------------------------------------------------------------------
def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    w = np.asarray(weights, np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    for i in order[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def class_counts(clips: int, imbalance_ratio: float | None = None) -> dict[str, int]:
    """Clips per emotion: a geometric long tail from :data:`FREQUENCY_ORDER`'s first to last class.

    Counts are ``clips * r**(-k / 6)`` normalised (k = rank), rounded by largest remainder, with at least
    one clip per class when ``clips >= 7``.
    """
    ratio = DEFAULT_IMBALANCE_RATIO if imbalance_ratio is None else float(imbalance_ratio)
    k = len(FREQUENCY_ORDER)
    counts = _largest_remainder(clips, [ratio ** (-i / (k - 1)) for i in range(k)])
    if clips >= k:
        for i in range(k):
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    by_name = dict(zip(FREQUENCY_ORDER, counts))
    return {name: by_name[name] for name in EMOTIONS}


def _draw_action_units(emotion: str, rng: np.random.Generator, preset: Preset) -> tuple[ActionUnit, ...]:
    recipe = EMOTION_AUS[emotion]
    aus = list(recipe.get("core", ()))
    if "choice" in recipe:
        groups, probs = zip(*recipe["choice"])
        aus += list(groups[rng.choice(len(groups), p=np.asarray(probs) / sum(probs))])
    for au, p in recipe["optional"].items():
        if rng.random() < p:
            aus.append(au)
    unilateral = recipe.get("unilateral", False)
    side = ("R", "L")[rng.integers(2)] if unilateral else "B"
    units = []
    lo, hi = preset.amplitude_px
    for au in sorted(set(aus)):
        amplitude = float(rng.uniform(lo, hi))
        if side == "R":
            gains = (1.0, 0.0)
        elif side == "L":
            gains = (0.0, 1.0)
        else:  # bilateral, slightly asymmetric
            gains = (float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.8, 1.0)))
        units.append(ActionUnit(au, side, amplitude, gains))
    return tuple(units)


def _timeline(rng: np.random.Generator, preset: Preset, fps: int) -> tuple[int, int, int, int]:
    """(num_frames, onset, apex, offset) with 1-based frame numbers."""
    pre = int(rng.integers(preset.margin_frames[0], preset.margin_frames[1] + 1))
    post = int(rng.integers(preset.margin_frames[0], preset.margin_frames[1] + 1))
    lo, hi = preset.duration_ms
    fit_ms = 1000.0 * (preset.max_frames - pre - post) / fps
    duration_ms = rng.uniform(lo, max(lo, min(hi, fit_ms)))
    span = max(2, int(round(duration_ms * fps / 1000.0)))
    span = min(span, max(2, preset.max_frames - pre - post))
    fraction = rng.uniform(*preset.apex_fraction)
    onset = pre + 1
    apex = onset + int(np.clip(round(fraction * span), 1, span - 1))
    offset = onset + span
    return offset + post, onset, apex, offset


def plan_dataset(
    *,
    preset: str | Preset = "medium",
    subjects: int = DEFAULT_SUBJECTS,
    clips: int = DEFAULT_CLIPS,
    seed: int = 0,
    imbalance_ratio: float | None = None,
    label_noise: float = 0.0,
) -> list[ClipSpec]:
    """Decide every clip of a dataset without rendering anything.

    Args:
        preset: preset name or :class:`Preset`.
        subjects: number of subjects (ids 1..subjects); clips are spread evenly over them.
        clips: total number of clips.
        seed: seed of everything.
        imbalance_ratio: largest / smallest class count (default 8; 1 = balanced).
        label_noise: fraction of clips whose *annotated* label is flipped to another emotion.

    Returns:
        The clips, ordered by subject, named ``sub{SSSS}_{NNN}``.
    """
    preset = get_preset(preset)
    _check_options(subjects=subjects, clips=clips, size=MIN_SIZE, fmt=FORMATS[0], seed=seed,
                   imbalance_ratio=imbalance_ratio, label_noise=label_noise, workers=None)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLAN,)))
    counts = class_counts(clips, imbalance_ratio)
    labels = [name for name in EMOTIONS for _ in range(counts[name])]
    labels = [labels[i] for i in rng.permutation(clips)]
    subject_of = [1 + (i * subjects) // clips for i in range(clips)]
    # one DFME part (frame rate) per subject, in proportion to the parts' clip shares
    parts = _largest_remainder(subjects, [share for _, share in FPS_PARTS])
    fps_of_subject = [fps for (fps, _), n in zip(FPS_PARTS, parts) for _ in range(n)]
    fps_of_subject = [fps_of_subject[i] for i in rng.permutation(subjects)]
    annotated = list(labels)
    flips = int(round(label_noise * clips))
    for i in rng.choice(clips, size=flips, replace=False) if flips else []:
        others = [e for e in EMOTIONS if e != labels[i]]
        annotated[i] = others[rng.integers(len(others))]

    specs = []
    number_in_subject: Counter[int] = Counter()
    for i in range(clips):
        crng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_CLIP_PLAN, i)))
        subject = subject_of[i]
        number_in_subject[subject] += 1
        fps = fps_of_subject[subject - 1]
        units = _draw_action_units(labels[i], crng, preset)
        num_frames, onset, apex, offset = _timeline(crng, preset, fps)
        specs.append(ClipSpec(
            index=i, seed=int(seed), subject=subject, clip=f"sub{subject:04d}_{number_in_subject[subject]:03d}",
            emotion=labels[i], label=annotated[i], action_units=units, fps=fps, num_frames=num_frames,
            onset=onset, apex=apex, offset=offset, preset=preset,
        ))
    return specs


# ------------------------------------------------------------------------------------------------------
# motion: AU displacement fields, temporal profile, nuisances
# ------------------------------------------------------------------------------------------------------
class _Blob(NamedTuple):
    anchor: str  # landmark name; '{s}' is replaced by the side index
    dx: float  # direction; for sided anchors +dx points outward (away from the face's midline)
    dy: float
    sigma: float  # in eye half-widths
    weight: float = 1.0


#: each AU as Gaussian-windowed displacement blobs (FACS appearance changes, frontal view)
AU_BLOBS: dict[int, tuple[_Blob, ...]] = {
    1: (_Blob("brow_inner_{s}", 0.0, -1.0, 0.8), _Blob("brow_mid_{s}", 0.0, -1.0, 0.7, 0.4)),
    2: (_Blob("brow_outer_{s}", 0.15, -1.0, 0.8), _Blob("brow_mid_{s}", 0.0, -1.0, 0.7, 0.4)),
    4: (_Blob("brow_inner_{s}", -0.6, 0.8, 0.8), _Blob("brow_mid_{s}", -0.2, 1.0, 0.8, 0.5)),
    5: (_Blob("upper_lid_{s}", 0.0, -1.0, 0.35),),
    6: (_Blob("cheek_{s}", 0.1, -1.0, 0.9), _Blob("lower_lid_{s}", 0.0, -1.0, 0.35, 0.5)),
    7: (_Blob("lower_lid_{s}", 0.0, -1.0, 0.35), _Blob("upper_lid_{s}", 0.0, 1.0, 0.35, 0.4)),
    9: (_Blob("nose_wing_{s}", 0.1, -1.0, 0.5), _Blob("brow_inner_{s}", 0.0, 1.0, 0.7, 0.4)),
    10: (_Blob("upper_lip_{s}", 0.0, -1.0, 0.6), _Blob("nose_wing_{s}", 0.0, -1.0, 0.5, 0.4)),
    12: (_Blob("mouth_corner_{s}", 0.6, -0.8, 0.6), _Blob("cheek_{s}", 0.1, -1.0, 0.9, 0.3)),
    14: (_Blob("mouth_corner_{s}", 1.0, -0.1, 0.5),),
    15: (_Blob("mouth_corner_{s}", 0.05, 1.0, 0.6),),
    20: (_Blob("mouth_corner_{s}", 1.0, 0.3, 0.7), _Blob("lower_lip_{s}", 0.3, 0.2, 0.6, 0.4)),
    23: (_Blob("upper_lip_{s}", 0.0, 0.6, 0.5, 0.7), _Blob("lower_lip_{s}", 0.0, -0.6, 0.5, 0.7),
         _Blob("mouth_corner_{s}", -1.0, 0.0, 0.5, 0.7)),
}


def _field_from_units(
    units: Sequence[ActionUnit], geometry: FaceGeometry, size: int, cap_px: float | None
) -> np.ndarray:
    scale = size / 128.0
    landmarks = geometry.landmarks()
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    field = np.zeros((size, size, 2), np.float32)
    for unit in units:
        # each AU is normalised so that its own peak displacement is its amplitude (times the larger side gain)
        au_field = np.zeros_like(field)
        for blob in AU_BLOBS[unit.au]:
            norm = float(np.hypot(blob.dx, blob.dy))
            for side in (0, 1):
                gain = unit.gains[side]
                if gain <= 0:
                    continue
                ax, ay = landmarks[blob.anchor.format(s=side)]
                sigma = blob.sigma * geometry.eye_half_width
                gx = np.exp(-((coords - ax) ** 2) / (2 * sigma**2))
                gy = np.exp(-((coords - ay) ** 2) / (2 * sigma**2))
                window = gy[:, None] * gx[None, :]
                magnitude = gain * blob.weight / norm
                au_field[..., 0] += (magnitude * blob.dx * geometry.side_sign(side)) * window
                au_field[..., 1] += (magnitude * blob.dy) * window
        peak = float(np.sqrt((au_field**2).sum(axis=2)).max())
        if peak > 0:
            field += au_field * (unit.amplitude * scale * max(unit.gains) / peak)
    if cap_px is not None:
        peak = float(np.sqrt((field**2).sum(axis=2)).max())
        if peak > cap_px:
            field *= cap_px / peak
    return field


def expression_profile(spec: ClipSpec, frame_numbers: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Expression intensity (0..1) at the given frame numbers (default all): raised-cosine rise from onset
    to apex, fall from apex to offset, 0 outside."""
    n = np.arange(1, spec.num_frames + 1) if frame_numbers is None else np.asarray(frame_numbers)
    n = n.astype(np.float64)
    rise = 0.5 * (1 - np.cos(np.pi * (n - spec.onset) / (spec.apex - spec.onset)))
    fall = 0.5 * (1 + np.cos(np.pi * (n - spec.apex) / (spec.offset - spec.apex)))
    out = np.where(n <= spec.apex, rise, fall)
    out[(n <= spec.onset) | (n >= spec.offset)] = 0.0
    return out


class _Nuisance(NamedTuple):
    """Smooth per-clip curves: amplitude and sinusoid parameters for drift and illumination."""

    amplitudes: np.ndarray  # (K,) tx, ty (px), roll (rad), scale, gain, grad_x, grad_y
    freqs: np.ndarray  # (K, 2) Hz
    phases: np.ndarray  # (K, 2)
    weights: np.ndarray  # (K, 2)
    blink: tuple[float, float, float] | None  # start (s), duration (s), peak closure

    def values(self, t: float) -> np.ndarray:
        waves = np.sin(2 * np.pi * self.freqs * t + self.phases)
        return self.amplitudes * (self.weights * waves).sum(axis=1)

    def closure(self, t: float) -> float:
        if self.blink is None:
            return 0.0
        start, duration, peak = self.blink
        tau = (t - start) / duration
        if tau <= 0 or tau >= 1:
            return 0.0
        close = 0.35  # fast closing, slower opening
        phase = tau / close if tau < close else 1 + (tau - close) / (1 - close)
        return float(peak * 0.5 * (1 - np.cos(np.pi * phase)))


def _draw_nuisance(rng: np.random.Generator, preset: Preset, spec: ClipSpec, size: int, enabled: bool) -> _Nuisance:
    scale = size / 128.0
    amplitudes = np.array([
        preset.drift_px * scale, preset.drift_px * scale, np.deg2rad(preset.drift_deg), preset.drift_scale,
        preset.illumination, 0.5 * preset.illumination, 0.5 * preset.illumination,
    ])
    k = len(amplitudes)
    freqs = rng.uniform(0.3, 1.5, (k, 2))
    phases = rng.uniform(0, 2 * np.pi, (k, 2))
    weights = rng.dirichlet((2.0, 2.0), k)
    blink = None
    length_s = spec.num_frames / spec.fps
    if rng.random() < preset.blink_rate:
        duration = rng.uniform(0.1, 0.25)
        blink = (float(rng.uniform(-0.5 * duration, length_s)), float(duration), float(rng.uniform(0.6, 1.0)))
    if not enabled:
        amplitudes = np.zeros_like(amplitudes)
        blink = None
    return _Nuisance(amplitudes, freqs, phases, weights, blink)


def _blink_mask(eyes: Sequence[EyeBox], closure: float, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Where the closed-eye image shows: above the moving lid edge, inside the eye's width."""
    mask = np.zeros((size, size), np.float32)
    edge = max(0.5, 0.6 * size / 128.0)
    for eye in eyes:
        lid = eye.y - eye.upper + closure * (eye.upper + eye.lower)
        vertical = np.clip((lid - ys) / edge + 0.5, 0.0, 1.0) * (ys > eye.y - 1.6 * eye.upper)
        horizontal = np.clip((1.2 * eye.half_width - np.abs(xs - eye.x)) / edge + 0.5, 0.0, 1.0)
        mask = np.maximum(mask, vertical * horizontal)
    return mask


def _subject_face(seed: int, subject: int) -> tuple[FaceGeometry, FaceLook]:
    return random_face(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SUBJECT, subject))))


def _clip_geometry(spec: ClipSpec, rng: np.random.Generator) -> tuple[FaceGeometry, FaceLook]:
    geometry, look = _subject_face(spec.seed, spec.subject)
    return jitter_geometry(geometry, rng, spec.preset.jitter_px / 128.0), look


def au_displacement_field(spec: ClipSpec, *, size: int = 128) -> np.ndarray:
    """The clip's AU displacement at the apex, ``(H, W, 2)`` float32 (dx, dy) in pixels of ``size``.

    Its largest magnitude is at most ``preset.amplitude_px[1] * size / 128``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_CLIP_RENDER, spec.index)))
    geometry, _ = _clip_geometry(spec, rng)
    return _field_from_units(spec.action_units, geometry, size, spec.preset.amplitude_px[1] * size / 128.0)


# ------------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------------
def render_clip(
    spec: ClipSpec,
    *,
    size: int = 128,
    frame_numbers: Sequence[int] | np.ndarray | None = None,
    expression: bool = True,
    nuisances: bool = True,
) -> RenderedClip:
    """Render a clip (or some of its frames) in memory.

    A frame does not depend on which other frames are rendered: ``render_clip(spec, frame_numbers=[n])``
    equals frame ``n`` of the whole clip.

    Args:
        spec: the clip (from :func:`plan_dataset`).
        size: frame side in pixels (even, 32..1024).
        frame_numbers: 1-based frame numbers to render (default: all ``1..spec.num_frames``).
        expression: apply the AU motion (False: the same clip without its micro-expression).
        nuisances: apply sensor noise, head drift, illumination change and blinks.

    Returns:
        :class:`RenderedClip` with ``frames`` ``(T, size, size, 3)`` uint8 RGB.
    """
    _check_options(subjects=1, clips=1, size=size, fmt=FORMATS[0], seed=spec.seed, imbalance_ratio=None,
                   label_noise=0.0, workers=None)
    numbers = np.arange(1, spec.num_frames + 1) if frame_numbers is None else np.asarray(frame_numbers, np.int64)
    if numbers.size and (numbers.min() < 1 or numbers.max() > spec.num_frames):
        raise ValueError(f"{spec.clip}: frame numbers must be in 1..{spec.num_frames}")
    preset = spec.preset
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_CLIP_RENDER, spec.index)))
    geometry, look = _clip_geometry(spec, rng)
    nuisance = _draw_nuisance(rng, preset, spec, size, nuisances)
    field = _field_from_units(spec.action_units, geometry, size, preset.amplitude_px[1] * size / 128.0)
    face = draw_face(geometry, look, size, closed_eyes=nuisance.blink is not None)
    profile = expression_profile(spec, numbers) if expression else np.zeros(len(numbers))

    coords = np.arange(size, dtype=np.float32)
    xs, ys = np.meshgrid(coords, coords)
    centre_x, centre_y = geometry.cx * size - 0.5, geometry.cy * size - 0.5
    rel_x, rel_y = xs - centre_x, ys - centre_y
    xn, yn = xs / size - 0.5, ys / size - 0.5
    frames = np.empty((len(numbers), size, size, 3), np.uint8)
    for i, number in enumerate(numbers):
        t = (number - 1) / spec.fps
        tx, ty, roll, zoom, gain, grad_x, grad_y = nuisance.values(t)
        closure = nuisance.closure(t)
        source = face.open
        if closure > 0.01 and face.closed is not None:
            mask = _blink_mask(face.eyes, closure, size, xs, ys)[..., None]
            source = face.open + (face.closed - face.open) * mask
        # inverse head motion (roll, zoom, shift about the face centre), then the AU field
        c, s = np.cos(roll) / (1 + zoom), np.sin(roll) / (1 + zoom)
        dx, dy = rel_x - tx, rel_y - ty
        map_x = centre_x + c * dx + s * dy
        map_y = centre_y - s * dx + c * dy
        if profile[i] > 0:
            map_x = map_x - profile[i] * field[..., 0]
            map_y = map_y - profile[i] * field[..., 1]
        frame = cv2.remap(source, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)
        if nuisances:
            frame *= (1.0 + gain + grad_x * xn + grad_y * yn)[..., None]
            frng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_FRAME, spec.index, int(number))))
            frame += frng.standard_normal(frame.shape, dtype=np.float32) * np.float32(preset.noise_sigma)
        frame += 0.5
        np.clip(frame, 0, 255, out=frame)
        frames[i] = frame
    return RenderedClip(frames, numbers, profile, field)


# ------------------------------------------------------------------------------------------------------
# writing a dataset
# ------------------------------------------------------------------------------------------------------
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


def face_position(seed: int, subject: int, size: int, uncropped: tuple[int, int]) -> tuple[int, int]:
    """Where a subject's face sits in uncropped frames: the same place in every clip of that subject.

    Args:
        seed: the dataset's seed.
        subject: subject number.
        size: face side in pixels.
        uncropped: ``(width, height)`` of the frames (width first, as in ``--uncropped WxH``).

    Returns:
        ``(x, y)`` of the face's top-left corner.
    """
    width, height = uncropped
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLACEMENT, subject)))
    return int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))


def _uncropped_frames(frames: np.ndarray, spec: ClipSpec, uncropped: tuple[int, int]) -> Iterator[np.ndarray]:
    """The face frames placed at the subject's position in larger frames of their border colour, one at a
    time (a whole clip of large frames would not fit in memory)."""
    size = frames.shape[1]
    x, y = face_position(spec.seed, spec.subject, size, uncropped)
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
        write_video(out / rel, frames(), fps=spec.fps, lossless=False, metadata={"comment": "microexp first_frame=1"})
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
    cv2.setNumThreads(1)


def _csv_text(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _annotation_rows(specs: Sequence[ClipSpec], paths: dict[int, str]) -> list[dict[str, object]]:
    return [
        {"subject": s.subject, "clip": s.clip, "path": paths[s.index], "onset": s.onset, "apex": s.apex,
         "offset": s.offset, "fps": s.fps, "emotion": s.label, "aus": s.aus, "first_frame": 1,
         "dataset": "microexp"}
        for s in specs
    ]


def _ground_truth_rows(specs: Sequence[ClipSpec], size: int, uncropped: tuple[int, int] | None) -> list[dict[str, object]]:
    rows = [
        {"clip": s.clip, "subject": s.subject, "emotion": s.emotion, "annotated_emotion": s.label,
         "label_flipped": int(s.label_flipped), "aus": s.aus, "onset": s.onset, "apex": s.apex, "offset": s.offset,
         "num_frames": s.num_frames, "fps": s.fps, "duration_ms": f"{s.duration_ms:.1f}",
         "au_amplitudes_px128": ";".join(f"{a.code}:{a.amplitude:.3f}" for a in s.action_units)}
        for s in specs
    ]
    if uncropped is not None:
        for row, s in zip(rows, specs):
            row["face_x"], row["face_y"] = face_position(s.seed, s.subject, size, uncropped)
            row["face_size"] = size
    return rows


def _recipe_json(recipe: dict) -> dict:
    out: dict[str, object] = {"core": list(recipe.get("core", ()))}
    if "choice" in recipe:
        out["choice"] = [{"aus": list(group), "p": p} for group, p in recipe["choice"]]
    out["optional"] = {str(au): p for au, p in recipe["optional"].items()}
    out["unilateral"] = bool(recipe.get("unilateral", False))
    return out


def _write_dfme_sheet(path: Path, specs: Sequence[ClipSpec]) -> None:
    import datetime

    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(DFME_COLUMNS))
    for s in specs:
        sheet.append([f"sub{s.subject:04d}", s.clip, s.onset, s.apex, s.offset, s.aus, s.label, s.fps])
    fixed = datetime.datetime(2000, 1, 1)
    workbook.properties.created = fixed
    workbook.properties.modified = fixed
    workbook.save(path)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    ours = ["annotations.csv", "ground_truth.csv", "synth.json", "clips", "dfme"]
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
) -> SynthSummary:
    """Generate the synthetic benchmark into ``out_dir`` (layout in the module docstring).

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

    Returns:
        :class:`SynthSummary`.

    Raises:
        ConfigError: a bad option (the message names it and the allowed values).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    preset_obj = get_preset(preset)
    _check_options(subjects=subjects, clips=clips, size=size, fmt=fmt, seed=seed, imbalance_ratio=imbalance_ratio,
                   label_noise=label_noise, workers=workers, uncropped=uncropped)
    uncropped = None if uncropped is None else (int(uncropped[0]), int(uncropped[1]))
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    specs = plan_dataset(preset=preset_obj, subjects=subjects, clips=clips, seed=seed,
                         imbalance_ratio=imbalance_ratio, label_noise=label_noise)
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
            # spawn, not fork: a forked OpenCV/x264 thread pool can hang the children
            context = multiprocessing.get_context("spawn")
            with context.Pool(n_workers, initializer=_init_worker) as pool:
                for result in pool.imap_unordered(_write_clip, jobs, chunksize=1):
                    written[result.index] = result
                    bar.update()
    finally:
        bar.close()

    paths = {i: w.path for i, w in written.items()}
    write_text(out / "annotations.csv", _csv_text(_annotation_rows(specs, paths), CSV_COLUMNS))
    gt_rows = _ground_truth_rows(specs, size, uncropped)
    write_text(out / "ground_truth.csv", _csv_text(gt_rows, list(gt_rows[0])))
    if dfme_sheet:
        _write_dfme_sheet(out / "dfme" / DFME_SHEET_NAME, specs)

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
    write_text(out / "synth.json", json.dumps(meta, indent=2, default=list) + "\n")
    summary = SynthSummary(
        out_dir=out, annotations=out / "annotations.csv", preset=preset_obj.name, seed=seed, size=size, fmt=fmt,
        clips=clips, subjects=subjects, frames=total_frames, class_counts=summary_counts, fps_counts=fps_counts,
        label_flips=flips, seconds=time.perf_counter() - start, uncropped=uncropped,
    )
    logger.debug("synthetic dataset: %d clips, %d frames in %.1f s", clips, total_frames, summary.seconds)
    return summary
