"""The plan: which clips are generated, as data (subjects, emotions, action units, frame rates, phases).

:func:`plan_dataset` decides every clip of a dataset as a :class:`ClipSpec` without rendering anything;
a clip's pixels are then a function of its spec alone (:func:`microexp.synth.render.render_clip`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from microexp.synth.options import (
    DEFAULT_CLIPS,
    DEFAULT_IMBALANCE_RATIO,
    DEFAULT_SUBJECTS,
    FORMATS,
    MIN_SIZE,
    Preset,
    check_options,
    get_preset,
)
from microexp.synth.streams import Stream, random_stream

__all__ = [
    "EMOTIONS",
    "EMOTION_AUS",
    "FPS_PARTS",
    "FREQUENCY_ORDER",
    "POOL_SUBJECT_OFFSET",
    "ActionUnit",
    "ClipSpec",
    "class_counts",
    "face_position",
    "plan_dataset",
]

#: the unlabeled pool's subjects are numbered from ``POOL_SUBJECT_OFFSET + 1`` (``sub1001``...), apart from
#: the subjects 1..N of a labelled dataset (N <= 1000); their faces come from the pool's own random streams
POOL_SUBJECT_OFFSET = 1000


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
    and peaks (1) at ``apex``. A clip of the unlabeled pool (``pool``) draws from the pool's random streams
    and has no annotated label (``label`` ``''``); its ``emotion``, AUs and phases are still the truth.
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
    pool: bool = False

    @property
    def aus(self) -> str:
        """AU string as written in the sheet, e.g. ``'1+2+5'`` or ``'R12'``."""
        return "+".join(a.code for a in sorted(self.action_units, key=lambda a: a.au))

    @property
    def duration_ms(self) -> float:
        return 1000.0 * (self.offset - self.onset) / self.fps

    @property
    def label_flipped(self) -> bool:
        return bool(self.label) and self.label != self.emotion


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
    unlabeled: bool = False,
) -> list[ClipSpec]:
    """Decide every clip of a dataset without rendering anything.

    Args:
        preset: preset name or :class:`Preset`.
        subjects: number of subjects (ids 1..subjects); clips are spread evenly over them.
        clips: total number of clips.
        seed: seed of everything.
        imbalance_ratio: largest / smallest class count (default 8; 1 = balanced).
        label_noise: fraction of clips whose *annotated* label is flipped to another emotion.
        unlabeled: plan an unlabeled pool instead: subjects ``POOL_SUBJECT_OFFSET + 1..``, every random
            stream the pool's (:attr:`Stream.POOL`), ``label`` ``''``; ``label_noise`` must be 0. The emotions
            are still drawn (as ``imbalance_ratio`` says): a clip needs a motion.

    Returns:
        The clips, ordered by subject, named ``sub{SSSS}_{NNN}``.
    """
    preset = get_preset(preset)
    check_options(subjects=subjects, clips=clips, size=MIN_SIZE, fmt=FORMATS[0], seed=seed,
                   imbalance_ratio=imbalance_ratio, label_noise=label_noise, workers=None, unlabeled=unlabeled)
    pool = bool(unlabeled)
    first_subject = 1 + (POOL_SUBJECT_OFFSET if pool else 0)
    rng = random_stream(seed, Stream.PLAN, pool=pool)
    counts = class_counts(clips, imbalance_ratio)
    labels = [name for name in EMOTIONS for _ in range(counts[name])]
    labels = [labels[i] for i in rng.permutation(clips)]
    subject_of = [first_subject + (i * subjects) // clips for i in range(clips)]
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
        crng = random_stream(seed, Stream.CLIP_PLAN, i, pool=pool)
        subject = subject_of[i]
        number_in_subject[subject] += 1
        fps = fps_of_subject[subject - first_subject]
        units = _draw_action_units(labels[i], crng, preset)
        num_frames, onset, apex, offset = _timeline(crng, preset, fps)
        specs.append(ClipSpec(
            index=i, seed=int(seed), subject=subject, clip=f"sub{subject:04d}_{number_in_subject[subject]:03d}",
            emotion=labels[i], label="" if pool else annotated[i], action_units=units, fps=fps,
            num_frames=num_frames, onset=onset, apex=apex, offset=offset, preset=preset, pool=pool,
        ))
    return specs


def face_position(seed: int, subject: int, size: int, uncropped: tuple[int, int], *,
                  pool: bool = False) -> tuple[int, int]:
    """Where a subject's face sits in uncropped frames: the same place in every clip of that subject.

    Args:
        seed: the dataset's seed.
        subject: subject number.
        size: face side in pixels.
        uncropped: ``(width, height)`` of the frames (width first, as in ``--uncropped WxH``).
        pool: a subject of the unlabeled pool (its own random stream).

    Returns:
        ``(x, y)`` of the face's top-left corner.
    """
    width, height = uncropped
    rng = random_stream(seed, Stream.PLACEMENT, subject, pool=pool)
    return int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
