"""What moves in a clip besides the expression: head drift, illumination change and blinks.

Smooth per-clip curves drawn from the clip's render stream (:class:`Nuisance`), and the mask that blends
the closed-eye face in during a blink. Sensor noise is drawn per frame in :mod:`microexp.synth.render`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from microexp.synth.faces import EyeBox
from microexp.synth.options import Preset
from microexp.synth.plan import ClipSpec

__all__ = ["Nuisance", "blink_closure", "blink_mask", "draw_drift", "draw_nuisance"]


class Nuisance(NamedTuple):
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
        return blink_closure(t, *self.blink)


def blink_closure(t: float, start: float, duration: float, peak: float) -> float:
    """Eyelid closure at time ``t`` (s) of a blink starting at ``start`` (s): a fast close to ``peak`` in the
    first 35 % of ``duration``, a slower opening after, 0 outside."""
    tau = (t - start) / duration
    if tau <= 0 or tau >= 1:
        return 0.0
    close = 0.35  # fast closing, slower opening
    phase = tau / close if tau < close else 1 + (tau - close) / (1 - close)
    return float(peak * 0.5 * (1 - np.cos(np.pi * phase)))


def draw_nuisance(rng: np.random.Generator, preset: Preset, spec: ClipSpec, size: int, enabled: bool) -> Nuisance:
    """Draw a clip's nuisance curves from ``rng`` (always the same draws, so ``enabled=False`` only zeroes
    them and leaves the rest of the stream unchanged)."""
    drift = draw_drift(rng, preset, size)
    amplitudes = drift.amplitudes
    blink = None
    length_s = spec.num_frames / spec.fps
    if rng.random() < preset.blink_rate:
        duration = rng.uniform(0.1, 0.25)
        blink = (float(rng.uniform(-0.5 * duration, length_s)), float(duration), float(rng.uniform(0.6, 1.0)))
    if not enabled:
        amplitudes = np.zeros_like(amplitudes)
        blink = None
    return drift._replace(amplitudes=amplitudes, blink=blink)


def draw_drift(rng: np.random.Generator, preset: Preset, size: int) -> Nuisance:
    """The smooth head drift and illumination change of ``preset`` (no blink), drawn from ``rng``."""
    scale = size / 128.0
    amplitudes = np.array([
        preset.drift_px * scale, preset.drift_px * scale, np.deg2rad(preset.drift_deg), preset.drift_scale,
        preset.illumination, 0.5 * preset.illumination, 0.5 * preset.illumination,
    ])
    k = len(amplitudes)
    freqs = rng.uniform(0.3, 1.5, (k, 2))
    phases = rng.uniform(0, 2 * np.pi, (k, 2))
    weights = rng.dirichlet((2.0, 2.0), k)
    return Nuisance(amplitudes, freqs, phases, weights, None)


def blink_mask(eyes: Sequence[EyeBox], closure: float, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Where the closed-eye image shows: above the moving lid edge, inside the eye's width."""
    mask = np.zeros((size, size), np.float32)
    edge = max(0.5, 0.6 * size / 128.0)
    for eye in eyes:
        lid = eye.y - eye.upper + closure * (eye.upper + eye.lower)
        vertical = np.clip((lid - ys) / edge + 0.5, 0.0, 1.0) * (ys > eye.y - 1.6 * eye.upper)
        horizontal = np.clip((1.2 * eye.half_width - np.abs(xs - eye.x)) / edge + 0.5, 0.0, 1.0)
        mask = np.maximum(mask, vertical * horizontal)
    return mask
