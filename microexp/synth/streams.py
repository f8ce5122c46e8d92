"""The generator's independent random streams: everything random is drawn from one of them.

Each stream is ``numpy.random.SeedSequence(seed, spawn_key=(stream, *key))``, keyed by what it decides
(the subject, the clip index, the frame number), so a clip or a frame can be drawn alone and the same
seed gives the same data whatever the number of workers or the frames asked for.

The unlabeled pool (``microexp synth --unlabeled N``) draws from the same streams under the prefix
:attr:`Stream.POOL` (``spawn_key=(POOL, stream, *key)``): no key of a labelled dataset starts with it, so a
pool's faces, clips and frames are independent of every labelled dataset's, whatever the seeds.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["GENERATOR_VERSION", "Stream", "random_stream"]


#: bump when a change alters the generated data for a given seed
GENERATOR_VERSION = "1"


class Stream(enum.IntEnum):
    """The first element of each stream's spawn key (fixed values: changing one changes the data)."""

    PLAN = 0  # the dataset plan: labels, subjects' frame rates, label flips
    SUBJECT = 1  # a subject's face; key: subject
    CLIP_PLAN = 2  # a clip's action units and timeline; key: clip index
    CLIP_RENDER = 3  # a clip's neutral-geometry jitter and nuisances; key: clip index
    FRAME = 4  # a frame's sensor noise; key: clip index, frame number
    PLACEMENT = 5  # a subject's face position in uncropped frames; key: subject
    POOL = 6  # never a stream itself: the prefix of every stream of the unlabeled pool
    LONG = 7  # a long recording's events (expressions, blinks, head movements) and drift; key: video index
    LONG_FRAME = 8  # a long recording's frame noise; key: video index, frame number


def random_stream(seed: int, stream: Stream, *key: int, pool: bool = False) -> np.random.Generator:
    """The generator of ``stream`` under ``seed``, for ``key`` (e.g. the clip index and frame number);
    ``pool``: the unlabeled pool's version of that stream."""
    prefix = (int(Stream.POOL),) if pool else ()
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*prefix, int(stream), *key)))
