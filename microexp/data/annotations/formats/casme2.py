"""CASME II (``CASME2-coding-*.xlsx``, the first sheet with the columns).

Frames ``sub{SS}/{Filename}/img{N}.jpg``; 200 fps; clip id = ``'sub{SS}/{Filename}'`` (Filenames repeat
across subjects).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from microexp.data.annotations.columns import SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import Format, SubfolderLookup, formula_locator
from microexp.data.annotations.records import Record


def subject_and_filename_ids(records: Sequence[Record]) -> list[str]:
    """``'sub{SS}/{Filename}'``: a Filename names one clip per subject."""
    return [f"sub{r.subject:02d}/{r.filename}" for r in records]


def clip_folder(root: Path, record: Record, dirs: SubfolderLookup) -> Path:
    """``root/sub{SS}/{Filename}``."""
    return root / f"sub{record.subject:02d}" / record.filename


def has_casme2_columns(names: frozenset[str]) -> bool:
    """CASME II's spelling of onset and emotion (shared with others: a fallback, see ``signature_rank``)."""
    return {"onsetframe", "estimatedemotion"} <= names


CASME2 = Format(
    name="casme2",
    title="CASME II",
    default_fps=200.0,
    emotions=frozenset({"others", "disgust", "happiness", "surprise", "repression", "sadness", "fear"}),
    required=SHEET_FIELDS,
    column_names=SHEET_COLUMN_NAMES,
    clip_ids=subject_and_filename_ids,
    locate=formula_locator(clip_folder),
    file_name=re.compile(r"casme[\s_\-]*(?:2|ii)(?![\di])"),
    header_signature=has_casme2_columns,
    signature_rank=2,
)
