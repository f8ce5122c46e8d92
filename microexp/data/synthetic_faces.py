"""Moved to :mod:`microexp.synth.faces`; this alias is kept for one release.

Import from ``microexp.synth.faces`` (or ``microexp.synth``) instead.
"""

from __future__ import annotations

from microexp.synth.faces import (
    EyeBox,
    FaceGeometry,
    FaceLook,
    RenderedFace,
    draw_face,
    jitter_geometry,
    random_face,
)

__all__ = ["EyeBox", "FaceGeometry", "FaceLook", "RenderedFace", "draw_face", "jitter_geometry", "random_face"]
