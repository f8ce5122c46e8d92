"""DFME (``DFME_data_coding.xlsx`` and the CCAC challenge sheets).

Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, AUs, emotion, fps. The frame rate comes from the
sheet only (parts A/B/C are 500/300/200 fps and folder names are subject ranges, never parts). Clip folders
are found by name (Filename) anywhere under ``root`` (one walk), frames ``00001.png``; clip id = Filename.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from microexp.data.annotations.cells import numeric_key
from microexp.data.annotations.columns import COLUMN_ALIASES, SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import Format, Located
from microexp.data.annotations.records import Record, RowContext


def index_folders(root: Path, names: set[str]) -> dict[str, list[str]]:
    """Walk ``root`` once; folders whose name is in ``names`` (not descending into them), by name."""
    found: dict[str, list[str]] = defaultdict(list)
    for dirpath, dirnames, _ in os.walk(root):
        keep = []
        for d in sorted(dirnames, key=numeric_key):
            if d in names:
                found[d].append(os.path.join(dirpath, d))
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep
    return found


def locate_by_name(ctx: RowContext, root: Path, records: Sequence[Record], *, check_files: bool,
                   root_given: bool) -> Located:
    """Each clip folder found by its Filename anywhere under root; missing or repeated names are errors.

    Annotations only (``check_files=False``): folders are looked for only under an explicit root, and
    not finding them is no error.
    """
    paths = [r.path for r in records]
    if not (check_files or (root_given and root.is_dir())):
        return Located(paths, [])
    index = index_folders(root, {r.filename for r in records})
    problems = []
    for i, r in enumerate(records):
        hits = index.get(r.filename, [])
        if len(hits) == 1:
            paths[i] = os.path.abspath(hits[0])
        elif not hits:
            problems.append(ctx.problem(r.row, "filename", r.filename,
                                        f"no folder named {r.filename!r} anywhere under {root}", clip=r.clip))
        else:
            problems.append(ctx.problem(r.row, "filename", r.filename, f"{len(hits)} folders named "
                                        f"{r.filename!r} under {root}: {', '.join(hits[:3])}", clip=r.clip))
    return Located(paths, problems if check_files else [])


def has_fps_column(names: frozenset[str]) -> bool:
    """DFME is the one official sheet with a frame-rate column."""
    return bool(names & set(COLUMN_ALIASES["fps"]))


DFME = Format(
    name="dfme",
    title="DFME",
    default_fps=None,
    emotions=frozenset({"happiness", "anger", "contempt", "disgust", "fear", "sadness", "surprise"}),
    required=SHEET_FIELDS + ("fps",),
    column_names=SHEET_COLUMN_NAMES | {"aus": "AU", "emotion": "emotion"},
    locate=locate_by_name,
    file_name=re.compile(r"dfme"),
    header_signature=has_fps_column,
    fps_from_sheet_only=True,
    locator_reports_unfound=True,
)
