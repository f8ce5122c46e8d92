"""User-facing error types.

Every error caused by user input (a missing file, a bad sheet, a bad value) derives from
:class:`MicroexpError`; the CLI prints such errors as one line and exits non-zero, while any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class MicroexpError(Exception):
    """Base class of errors caused by user input; the message names what and where."""


class AnnotationError(MicroexpError, ValueError):
    """An annotation sheet or clip table cannot be read or fails strict validation."""


class VideoReadError(MicroexpError, ValueError):
    """A video file or frame folder cannot be opened or decoded."""


class ConfigError(MicroexpError, ValueError):
    """A configuration key or value is invalid."""


_WORKER_HEADER_RE = re.compile(
    r"\ACaught (?P<name>[\w.]+) in [^\n]*\.\nOriginal Traceback \(most recent call last\):\n"
)


def user_message(exc: BaseException) -> str:
    """The one-line message a user should see for ``exc``.

    A torch DataLoader worker (or its pin-memory thread) re-raises a worker's exception as the same
    type with a message holding the worker's whole traceback (``"Caught VideoReadError in DataLoader
    worker process 0.\\nOriginal Traceback (most recent call last): ..."``); for such an exception
    this returns the original exception's message, i.e. the line the single-process path gives. An
    ``OSError`` with a file name and an OS reason becomes ``"FILE: reason"``. Anything else is
    ``str(exc)`` with its whitespace (newlines included) collapsed, or the type name when empty.
    """
    text = str(exc)
    original = _unwrap_worker_message(text)
    if original is not None:
        text = original
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split()) or type(exc).__name__


def _unwrap_worker_message(text: str) -> str | None:
    """The original message inside a DataLoader worker's re-raised message; None if it is not one."""
    header = _WORKER_HEADER_RE.match(text)
    if header is None:
        return None
    name = header.group("name")
    body = text[header.end():]
    # The traceback ends with the exception line "module.Name: message" (builtins: "Name: message");
    # the message may span lines, and a chained cause comes earlier, so take the last such line.
    line_re = re.compile(rf"^(?:[\w.]+\.)?{re.escape(name)}(?:: (?P<msg>.*))?$", re.MULTILINE)
    found = None
    for found in line_re.finditer(body):
        pass
    if found is None:
        return None
    rest = body[found.end():]
    return ((found.group("msg") or "") + rest).strip() or name
