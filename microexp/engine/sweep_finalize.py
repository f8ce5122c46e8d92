"""Moved to :mod:`microexp.sweep.finalize`.

This alias keeps ``from microexp.engine.sweep_finalize import ...`` working for one release.
"""

from microexp.sweep.finalize import ESTIMATE_LABEL, FinalResult, finalize

__all__ = ["ESTIMATE_LABEL", "FinalResult", "finalize"]
