"""The one start method for microexp's own worker processes: ``spawn``.

The parent has usually imported OpenCV, PyAV, decord or torch, whose thread pools hold locks; a
``fork``ed child inherits those locks in whatever state they were and can hang (seen with OpenCV and
x264 thread pools). Every pool microexp starts (``synth``, ``pack``, ``flow``, sweep workers) therefore
starts fresh interpreters. DataLoader workers are torch's and keep torch's default: they open their
readers after starting (see :mod:`microexp.data.dataset`).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

__all__ = ["worker_context"]


def worker_context() -> BaseContext:
    """The ``spawn`` context, for ``ProcessPoolExecutor(mp_context=...)``, ``Pool`` and ``Process``."""
    return multiprocessing.get_context("spawn")
