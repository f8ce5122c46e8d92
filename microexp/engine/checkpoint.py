"""Moved to :mod:`microexp.checkpoint` (inference needs checkpoints, not the training engine).

This alias keeps ``from microexp.engine.checkpoint import ...`` working for one release.
"""

from microexp.checkpoint import *  # noqa: F401,F403
