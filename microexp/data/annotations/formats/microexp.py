"""Our CSV (what ``microexp synth`` and ``microexp pack`` write): one row per clip, paths in a column.

``subject,clip,path,onset,apex,offset,fps,emotion,aus`` [+ ``first_frame``, ``dataset``, ``flow_path``];
``path`` relative to ``root`` (default: the CSV's folder) or absolute; clip id = ``clip``; any emotion name.
A table with a ``flow_path`` column (precomputed onset->apex flows, as ``microexp flow --apex`` writes)
needs only ``subject,clip,flow_path,emotion``: ``path``, the phases and ``fps`` may be blank or absent.
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
    for r in records:  # flow files: the same rule, in place (the locator returns the frame paths)
        r.flow_path = _absolute(root, r.flow_path)
    return Located([_absolute(root, r.path) for r in records], [])


def _absolute(root: Path, path: str) -> str:
    return os.path.abspath(path if os.path.isabs(path) else root / path) if path else path


def has_path_and_clip(names: frozenset[str]) -> bool:
    """Our CSV's decisive columns (a table of precomputed flows has ``flow_path`` instead of ``path``)."""
    return "clip" in names and ("path" in names or "flowpath" in names)


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
    flow_required=("subject", "filename", "flow_path", "emotion"),
)
