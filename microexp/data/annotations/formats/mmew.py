"""MMEW (``MMEW_Micro_Exp.xlsx``).

Frames ``{emotion}/{Filename}/{n}.jpg`` (the emotion folder matched ignoring case); fps 90 is an
assumption, from the MMEW paper (pass ``fps=`` to override); clip id = Filename.
"""

from __future__ import annotations

import re
from pathlib import Path

from microexp.data.annotations.columns import SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import Format, SubfolderLookup, formula_locator
from microexp.data.annotations.records import Record


def clip_folder(root: Path, record: Record, dirs: SubfolderLookup) -> Path:
    """``root/{emotion}/{Filename}``."""
    return dirs.find(root, record.emotion) / record.filename


def has_mmew_columns(names: frozenset[str]) -> bool:
    """MMEW's ``remarks`` column."""
    return "remarks" in names


MMEW = Format(
    name="mmew",
    title="MMEW",
    default_fps=90.0,
    emotions=frozenset({"happiness", "surprise", "disgust", "fear", "sadness", "anger", "others"}),
    required=SHEET_FIELDS,
    column_names=SHEET_COLUMN_NAMES,
    locate=formula_locator(clip_folder),
    file_name=re.compile(r"mmew"),
    header_signature=has_mmew_columns,
)
