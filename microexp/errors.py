"""User-facing error types.

Every error caused by user input (a missing file, a bad sheet, a bad value) derives from
:class:`MicroexpError`; the CLI prints such errors as one line and exits non-zero, while any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class MicroexpError(Exception):
    """Base class of errors caused by user input; the message names what and where."""


class AnnotationError(MicroexpError, ValueError):
    """An annotation sheet or clip table cannot be read or fails strict validation."""


class VideoReadError(MicroexpError, ValueError):
    """A video file or frame folder cannot be opened or decoded."""


class ConfigError(MicroexpError, ValueError):
    """A configuration key or value is invalid."""
