"""CAS(ME)^3 Part A (``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx``).

Subject ``spNO.{N}``, Filename = stimulus letter, Onset/Apex/Offset; frames
``spNO.{N}/{Filename}/color/{index}.jpg`` (the Filename folder matched ignoring case). fps 30 is an
assumption: the sheet has no fps and docs/datasets.md gives none (pass ``fps=`` to override). Clip id =
``'spNO.{N}/{Filename}/{onset}'`` (the letter repeats within a subject), suffixed ``'-2'``, ``'-3'``... if
that still repeats. ``Offset = 0`` is the sheet's way of writing a missing offset (rows 798 and 800 of the
release): an error "missing offset".
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from microexp.data.annotations.columns import SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import Format, SubfolderLookup, formula_locator
from microexp.data.annotations.records import Record


def onset_ids(records: Sequence[Record]) -> list[str]:
    """``'spNO.{N}/{letter}/{onset}'``, with ``'-2'``, ``'-3'``... for repeats."""
    seen: dict[str, int] = defaultdict(int)
    ids = []
    for r in records:
        base = f"spNO.{r.subject}/{r.filename}/{r.onset}"
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return ids


def clip_folder(root: Path, record: Record, dirs: SubfolderLookup) -> Path:
    """``root/spNO.{N}/{Filename}/color``; the subject as the sheet spells it when it is ``spNO...``."""
    subject = record.subject_text if record.subject_text.lower().startswith("spno") else f"spNO.{record.subject}"
    return dirs.find(root / subject, record.filename) / "color"


def has_casme3_columns(names: frozenset[str]) -> bool:
    """CAS(ME)^3's objective class beside a plain ``Onset``."""
    return "objectiveclass" in names and "onset" in names


CASME3 = Format(
    name="casme3",
    title="CAS(ME)^3",
    default_fps=30.0,
    # the spellings are not documented in docs/datasets.md: accept both short and long forms
    emotions=frozenset({"happy", "happiness", "sad", "sadness", "anger", "disgust", "fear", "surprise",
                        "others", "other"}),
    required=SHEET_FIELDS,
    column_names=SHEET_COLUMN_NAMES | {"onset": "Onset", "apex": "Apex", "offset": "Offset", "aus": "AU",
                                       "emotion": "emotion"},
    clip_ids=onset_ids,
    locate=formula_locator(clip_folder),
    file_name=re.compile(r"cas\(?me\)?[\s_\-^]*(?:3|iii)"),
    header_signature=has_casme3_columns,
    zero_offset_is_missing=True,
)
