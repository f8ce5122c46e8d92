"""The motion physics of a micro-expression: AU displacement fields and the expression's time profile.

Each FACS action unit is a sum of Gaussian-windowed displacement blobs anchored at facial landmarks
(brows, lids, cheeks, nose wings, lips, lip corners; :meth:`microexp.synth.faces.FaceGeometry.landmarks`),
normalised so that its peak displacement is its amplitude. A frame moves by the field times the
expression intensity, a raised cosine from onset to apex and back to offset. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from microexp.synth.faces import FaceGeometry
from microexp.synth.plan import ActionUnit, ClipSpec

__all__ = ["AU_BLOBS", "expression_profile", "field_from_units", "phase_profile"]


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


def field_from_units(
    units: Sequence[ActionUnit], geometry: FaceGeometry, size: int, cap_px: float | None
) -> np.ndarray:
    """The summed displacement of ``units`` on a face, ``(size, size, 2)`` float32 (dx, dy) in pixels.

    Args:
        units: the clip's action units (amplitudes in px at 128, scaled to ``size``).
        geometry: the clip's neutral face geometry (anchors the blobs).
        size: image side in pixels.
        cap_px: largest magnitude allowed in the sum (scaled down to it if above); None: no cap.
    """
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
    return phase_profile(n, spec.onset, spec.apex, spec.offset)


def phase_profile(frame_numbers: Sequence[int] | np.ndarray, onset: int, apex: int, offset: int) -> np.ndarray:
    """Intensity (0..1) of an expression with these phases at the given frame numbers (onset < apex < offset)."""
    n = np.asarray(frame_numbers).astype(np.float64)
    rise = 0.5 * (1 - np.cos(np.pi * (n - onset) / (apex - onset)))
    fall = 0.5 * (1 + np.cos(np.pi * (n - apex) / (offset - apex)))
    out = np.where(n <= apex, rise, fall)
    out[(n <= onset) | (n >= offset)] = 0.0
    return out

