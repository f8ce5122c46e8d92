"""Moved to :mod:`microexp.synth` (plan, fields, faces, render, tables, write); this alias is kept for one
release.

Import from ``microexp.synth`` instead; the constants below live in its modules
(``microexp.synth.options``, ``.plan``, ``.fields``, ``.tables``, ``.streams``).
"""

from __future__ import annotations

from microexp.synth import (
    EMOTION_AUS,
    EMOTIONS,
    FPS_PARTS,
    PRESETS,
    ActionUnit,
    ClipSpec,
    Preset,
    RenderedClip,
    SynthSummary,
    au_displacement_field,
    class_counts,
    expression_profile,
    face_position,
    generate_dataset,
    get_preset,
    plan_dataset,
    render_clip,
)
# the module-level constants too (not in __all__, as before)
from microexp.synth.fields import AU_BLOBS  # noqa: F401
from microexp.synth.options import (  # noqa: F401
    DEFAULT_CLIPS,
    DEFAULT_IMBALANCE_RATIO,
    DEFAULT_SUBJECTS,
    FORMATS,
    MAX_SIZE,
    MAX_UNCROPPED,
    MIN_SIZE,
)
from microexp.synth.plan import FREQUENCY_ORDER  # noqa: F401
from microexp.synth.streams import GENERATOR_VERSION  # noqa: F401
from microexp.synth.tables import CSV_COLUMNS, DFME_COLUMNS, DFME_SHEET_NAME  # noqa: F401

from microexp.synth import __all__  # noqa: F401 - the same public names

