"""SAMM (``SAMM_Micro_FACS_Codes_v2.xlsx``): the header row is found below the description block.

Frames ``{Subject:03d}/{Filename}/{Subject}_{N:05d}.jpg``; 200 fps; clip id = Filename.
"""

from __future__ import annotations

import re
from pathlib import Path

from microexp.data.annotations.columns import SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import Format, SubfolderLookup, formula_locator
from microexp.data.annotations.records import Record


def clip_folder(root: Path, record: Record, dirs: SubfolderLookup) -> Path:
    """``root/{Subject:03d}/{Filename}``."""
    return root / f"{record.subject:03d}" / record.filename


def has_samm_columns(names: frozenset[str]) -> bool:
    """Columns only SAMM's sheet has."""
    return bool(names & {"inducementcode", "duration", "notes"})


SAMM = Format(
    name="samm",
    title="SAMM",
    default_fps=200.0,
    emotions=frozenset({"anger", "other", "happiness", "surprise", "contempt", "disgust", "fear", "sadness"}),
    required=SHEET_FIELDS,
    column_names=SHEET_COLUMN_NAMES | {"onset": "Onset Frame", "apex": "Apex Frame", "offset": "Offset Frame"},
    locate=formula_locator(clip_folder),
    file_name=re.compile(r"samm"),
    header_signature=has_samm_columns,
)
