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
the clip index and the frame number (:mod:`microexp.synth.streams`), so the same seed gives byte-identical
annotations and identical frames whatever the number of workers, and a clip can be rendered alone
(:func:`render_clip`).

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

Unlabeled pool (``unlabeled=True``, ``microexp synth OUT --unlabeled N``): N clips of new subjects for
self-supervised pretraining, numbered from ``POOL_SUBJECT_OFFSET + 1`` (``sub1001``...) and drawn from the
pool's own random streams (:attr:`~microexp.synth.streams.Stream.POOL`), so neither their ids (for labelled
datasets of up to 1000 subjects) nor their faces are a labelled dataset's. Its ``annotations.csv`` has blank
``emotion``, ``aus``, ``onset``, ``apex`` and ``offset`` (``load_clip_table(..., labels_required=False)``
fills the phases from each clip's frames); ``ground_truth.csv`` keeps the true ones.

Sides: 'R' is the subject's right, which is the image's *left* in these frontal views.

The parts, one concern per module (lowest first; none imports the engine, sweeps, inference, studies,
benchmarks or the CLI; ``microexp.data`` imports it only in its two alias modules)::

    streams.py    the independent random streams (SeedSequence spawn keys) and the generator version
    options.py    presets, defaults, limits and the validation of every option
    plan.py       which clips: subjects, emotions, AUs, frame rates, phases (ClipSpec, plan_dataset)
    faces.py      drawing a subject's neutral face (geometry, look, supersampled OpenCV drawing)
    fields.py     AU displacement fields and the expression's time profile (the motion physics)
    nuisances.py  head drift, illumination change and blinks
    render.py     a clip's frames in memory from its spec (render_clip)
    tables.py     annotations.csv, ground_truth.csv and the DFME-style sheet
    write.py      clip files, synth.json and the worker pool (generate_dataset)
"""

from __future__ import annotations

from microexp.synth.fields import expression_profile
from microexp.synth.options import PRESETS, Preset, get_preset
from microexp.synth.plan import (
    EMOTION_AUS,
    EMOTIONS,
    FPS_PARTS,
    ActionUnit,
    ClipSpec,
    class_counts,
    face_position,
    plan_dataset,
)
from microexp.synth.render import RenderedClip, au_displacement_field, render_clip
from microexp.synth.write import SynthSummary, generate_dataset

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
