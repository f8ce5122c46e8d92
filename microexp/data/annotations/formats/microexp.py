"""Our CSV (what ``microexp synth`` and ``microexp pack`` write): one row per clip, paths in a column.

``subject,clip,path,onset,apex,offset,fps,emotion,aus`` [+ ``first_frame``, ``dataset``]; ``path`` relative
to ``root`` (default: the CSV's folder) or absolute; clip id = ``clip``; any emotion name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from microexp.data.annotations.columns import COLUMN_ALIASES
from microexp.data.annotations.format import Format, Located
from microexp.data.annotations.records import Record, RowContext


def paths_from_column(ctx: RowContext, root: Path, records: Sequence[Record], *, check_files: bool,
                      root_given: bool) -> Located:
    """The ``path`` column made absolute against ``root``; a blank path stays blank (reported when checked)."""
    paths = [os.path.abspath(r.path if os.path.isabs(r.path) else root / r.path) if r.path else r.path
             for r in records]
    return Located(paths, [])


def has_path_and_clip(names: frozenset[str]) -> bool:
    """Our CSV's decisive columns."""
    return {"path", "clip"} <= names


MICROEXP = Format(
    name="microexp",
    title="microexp",
    default_fps=None,
    emotions=None,
    required=("subject", "filename", "path", "onset", "apex", "offset", "fps", "emotion", "aus"),
    column_names={f: f for f in COLUMN_ALIASES} | {"filename": "clip"},
    locate=paths_from_column,
    header_signature=has_path_and_clip,
    signature_rank=0,
)
