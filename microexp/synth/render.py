"""Rendering a clip's frames in memory from its spec: the face, the AU field, the nuisances.

Each frame is the clip's neutral face warped with ``cv2.remap`` by the inverse head motion and the AU
field times the expression intensity, then lit, noised and rounded to uint8.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np

from microexp.synth.faces import FaceGeometry, FaceLook, RenderedFace, draw_face, jitter_geometry, random_face
from microexp.synth.fields import expression_profile, field_from_units
from microexp.synth.nuisances import Nuisance, blink_mask, draw_nuisance
from microexp.synth.options import FORMATS, check_options
from microexp.synth.plan import ClipSpec
from microexp.synth.streams import Stream, random_stream

__all__ = ["FrameWarp", "RenderedClip", "au_displacement_field", "clip_geometry", "clip_nuisance", "render_clip",
           "subject_face"]


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


class FrameWarp:
    """One frame from a neutral face: blink blend, inverse head motion and the AU field, light and sensor noise.

    The pixel grid of a ``size``-px face centred on ``geometry``'s centre, shared by the frames of a clip
    (:func:`render_clip`) and of a long recording (:mod:`microexp.synth.long`).
    """

    def __init__(self, geometry: FaceGeometry, size: int) -> None:
        coords = np.arange(size, dtype=np.float32)
        self.size = size
        self.xs, self.ys = np.meshgrid(coords, coords)
        self.centre_x, self.centre_y = geometry.cx * size - 0.5, geometry.cy * size - 0.5
        self.rel_x, self.rel_y = self.xs - self.centre_x, self.ys - self.centre_y
        self.xn, self.yn = self.xs / size - 0.5, self.ys / size - 0.5

    def frame(self, face: RenderedFace, motion: np.ndarray, closure: float, intensity: float, field: np.ndarray,
              noise_rng: np.random.Generator | None, noise_sigma: float) -> np.ndarray:
        """The frame, ``(size, size, 3)`` uint8 RGB.

        Args:
            face: the neutral face (``closed`` needed when ``closure`` > 0).
            motion: ``(tx, ty, roll, zoom, gain, grad_x, grad_y)`` of the head and the light.
            closure: eyelid closure 0..1 (a blink).
            intensity: expression intensity; the face moves by ``intensity * field``.
            field: ``(size, size, 2)`` AU displacement at intensity 1.
            noise_rng: the frame's sensor-noise stream; None: no light change and no noise.
            noise_sigma: sensor noise (grey levels).
        """
        tx, ty, roll, zoom, gain, grad_x, grad_y = motion
        source = face.open
        if closure > 0.01 and face.closed is not None:
            mask = blink_mask(face.eyes, closure, self.size, self.xs, self.ys)[..., None]
            source = face.open + (face.closed - face.open) * mask
        # inverse head motion (roll, zoom, shift about the face centre), then the AU field
        c, s = np.cos(roll) / (1 + zoom), np.sin(roll) / (1 + zoom)
        dx, dy = self.rel_x - tx, self.rel_y - ty
        map_x = self.centre_x + c * dx + s * dy
        map_y = self.centre_y - s * dx + c * dy
        if intensity > 0:
            map_x = map_x - intensity * field[..., 0]
            map_y = map_y - intensity * field[..., 1]
        frame = cv2.remap(source, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)
        if noise_rng is not None:
            frame *= (1.0 + gain + grad_x * self.xn + grad_y * self.yn)[..., None]
            frame += noise_rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise_sigma)
        frame += 0.5
        np.clip(frame, 0, 255, out=frame)
        return frame.astype(np.uint8)


def subject_face(seed: int, subject: int, *, pool: bool = False) -> tuple[FaceGeometry, FaceLook]:
    """A subject's face (the same in every clip of that subject); ``pool``: a subject of the unlabeled pool."""
    return random_face(random_stream(seed, Stream.SUBJECT, subject, pool=pool))


def clip_geometry(spec: ClipSpec, rng: np.random.Generator) -> tuple[FaceGeometry, FaceLook]:
    """The clip's neutral face: the subject's, its features moved by up to ``preset.jitter_px``; the first
    draws of the clip's render stream ``rng``."""
    geometry, look = subject_face(spec.seed, spec.subject, pool=spec.pool)
    return jitter_geometry(geometry, rng, spec.preset.jitter_px / 128.0), look


def au_displacement_field(spec: ClipSpec, *, size: int = 128) -> np.ndarray:
    """The clip's AU displacement at the apex, ``(H, W, 2)`` float32 (dx, dy) in pixels of ``size``.

    Its largest magnitude is at most ``preset.amplitude_px[1] * size / 128``.
    """
    rng = random_stream(spec.seed, Stream.CLIP_RENDER, spec.index, pool=spec.pool)
    geometry, _ = clip_geometry(spec, rng)
    return field_from_units(spec.action_units, geometry, size, spec.preset.amplitude_px[1] * size / 128.0)


def clip_nuisance(spec: ClipSpec, size: int = 128) -> Nuisance:
    """The nuisance curves (drift, illumination, blink) :func:`render_clip` draws for ``spec``: the ground
    truth of what else moves in the clip, e.g. whether and when it blinks (``blink``: start s, duration s)."""
    rng = random_stream(spec.seed, Stream.CLIP_RENDER, spec.index, pool=spec.pool)
    clip_geometry(spec, rng)  # the geometry's draws come first in the clip's stream
    return draw_nuisance(rng, spec.preset, spec, size, True)


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
        spec: the clip (from :func:`~microexp.synth.plan.plan_dataset`).
        size: frame side in pixels (even, 32..1024).
        frame_numbers: 1-based frame numbers to render (default: all ``1..spec.num_frames``).
        expression: apply the AU motion (False: the same clip without its micro-expression).
        nuisances: apply sensor noise, head drift, illumination change and blinks.

    Returns:
        :class:`RenderedClip` with ``frames`` ``(T, size, size, 3)`` uint8 RGB.
    """
    check_options(subjects=1, clips=1, size=size, fmt=FORMATS[0], seed=spec.seed, imbalance_ratio=None,
                   label_noise=0.0, workers=None)
    numbers = np.arange(1, spec.num_frames + 1) if frame_numbers is None else np.asarray(frame_numbers, np.int64)
    if numbers.size and (numbers.min() < 1 or numbers.max() > spec.num_frames):
        raise ValueError(f"{spec.clip}: frame numbers must be in 1..{spec.num_frames}")
    preset = spec.preset
    rng = random_stream(spec.seed, Stream.CLIP_RENDER, spec.index, pool=spec.pool)
    geometry, look = clip_geometry(spec, rng)
    nuisance = draw_nuisance(rng, preset, spec, size, nuisances)
    field = field_from_units(spec.action_units, geometry, size, preset.amplitude_px[1] * size / 128.0)
    face = draw_face(geometry, look, size, closed_eyes=nuisance.blink is not None)
    profile = expression_profile(spec, numbers) if expression else np.zeros(len(numbers))

    warp = FrameWarp(geometry, size)
    frames = np.empty((len(numbers), size, size, 3), np.uint8)
    for i, number in enumerate(numbers):
        t = (number - 1) / spec.fps
        frng = random_stream(spec.seed, Stream.FRAME, spec.index, int(number), pool=spec.pool) if nuisances else None
        frames[i] = warp.frame(face, nuisance.values(t), nuisance.closure(t), profile[i], field, frng,
                               preset.noise_sigma)
    return RenderedClip(frames, numbers, profile, field)
