"""Pure parsers of annotation cells and frame file names: no format knowledge, no I/O but one folder listing."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from microexp.data.video import frame_number_from_name

__all__ = ["cell_text", "estimate_apex", "is_blank", "list_frame_files", "normalise_column_name",
           "normalise_subject", "numeric_key", "parse_fps", "parse_frame_number"]

# cells that mean "no value" in a frame-number column, lower case
_MISSING_TOKENS = {"", "/", "-", "--", "n/a", "na", "nan", "none", "null"}
_SUBJECT = re.compile(r"^[^\d]*?(\d+)(?:\.0+)?$")


def is_blank(value: object) -> bool:
    """True for an empty cell: None, NaN, pandas' NA/NaT or whitespace-only text."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if value is pd.NA or value is pd.NaT:
            return True
    except AttributeError:  # pragma: no cover
        pass
    return isinstance(value, str) and not value.strip()


def cell_text(value: object) -> str:
    """A cell as stripped text: blank -> ``''``, ``12.0`` -> ``'12'``."""
    if is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_column_name(name: object) -> str:
    """Header text for matching: lower case without spaces, underscores, dashes and dots."""
    return re.sub(r"[\s_\-.]+", "", cell_text(name)).lower()


def normalise_subject(value: object) -> int:
    """A subject id as an int: ``'sub0001'``, ``'006'``, ``'spNO.1'``, ``'s3'``, ``'S01'``, ``1.0`` -> 1, 6, 1, 3, 1, 1.

    Raises:
        ValueError: no subject number in the value.
    """
    if isinstance(value, bool) or is_blank(value):
        raise ValueError(f"not a subject id: {value!r}")
    if isinstance(value, (int, float)):
        if float(value).is_integer() and value >= 0:
            return int(value)
        raise ValueError(f"not a subject id: {value!r}")
    match = _SUBJECT.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a subject id: {value!r} (expected e.g. 'sub0001', '006', 'spNO.1', 'S01', 3)")
    return int(match[1])


def parse_frame_number(value: object) -> int | None:
    """A frame-number cell: ``12``, ``12.0``, ``'12'`` -> 12; blank, ``'/'``, ``'-'``, ``-1`` -> None (missing).

    Raises:
        ValueError: the cell is neither a non-negative whole number nor a missing marker.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a frame number: {value!r}")
    if is_blank(value) or (isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS):
        return None
    number: float
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"not a frame number: {value!r}") from None
    if number == -1:
        return None
    if not number.is_integer() or number < 0:
        raise ValueError(f"not a frame number: {value!r} (expected a whole number >= 0)")
    return int(number)


def parse_fps(value: object) -> float:
    """A frame-rate cell: ``200``, ``'200'``, ``'200 fps'`` -> 200.0.

    Raises:
        ValueError: blank, not a number, or not positive.
    """
    text = cell_text(value).lower().removesuffix("fps").strip()
    try:
        fps = float(text)
    except ValueError:
        raise ValueError(f"not a frame rate: {value!r} (expected a positive number, e.g. 200)") from None
    if not fps > 0 or math.isinf(fps):
        raise ValueError(f"not a frame rate: {value!r} (expected a positive number, e.g. 200)")
    return fps


def estimate_apex(onset: int, offset: int) -> int:
    """The conventional apex for clips without one: the middle of onset..offset, rounded down."""
    return (onset + offset) // 2


def list_frame_files(folder: str | Path) -> list[tuple[int, str]]:
    """``(frame number, file name)`` of the image frames in a folder, sorted by number (never lexically)."""
    frames = []
    with os.scandir(folder) as entries:
        for entry in entries:
            number = frame_number_from_name(entry.name)
            if number is not None and entry.is_file():
                frames.append((number, entry.name))
    return sorted(frames)


def numeric_key(name: str) -> tuple:
    """Sort key for names with numbers: 's2' before 's10'."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))
