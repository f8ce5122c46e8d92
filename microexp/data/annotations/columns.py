"""Header rows of annotation sheets: column aliases, matching a header to fields, finding the header row.

Fields are canonical names (``'subject'``, ``'filename'``, ``'onset'``...); a header cell matches a field when
its :func:`~microexp.data.annotations.cells.normalise_column_name` equals one of the field's aliases.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from microexp.data.annotations.cells import cell_text, is_blank, normalise_column_name

__all__ = ["COLUMN_ALIASES", "HEADER_SEARCH_ROWS", "SHEET_COLUMN_NAMES", "SHEET_FIELDS", "Aliases", "find_header_row",
           "found_columns", "match_columns"]

#: field -> accepted header names (normalised), in priority order.
Aliases = Mapping[str, tuple[str, ...]]

#: The aliases every format accepts (the official releases spell columns differently between versions).
COLUMN_ALIASES: Aliases = MappingProxyType({
    "subject": ("subject", "subjectid", "sub", "participant", "participantid"),
    "filename": ("filename", "clip", "clipname", "clipid", "file", "videoname", "video", "episode"),
    "path": ("path", "clippath", "videopath", "framefolder"),
    "onset": ("onsetframe", "onset", "onsetindex", "onsetframeindex", "startframe"),
    "apex": ("apexframe", "apex", "apexindex", "apexframeindex"),
    "offset": ("offsetframe", "offset", "offsetindex", "offsetframeindex", "endframe"),
    "aus": ("actionunits", "actionunit", "aus", "au", "aucode", "aucodes", "facs", "facscode", "facscodes"),
    "emotion": ("emotion", "estimatedemotion", "emotions", "emotionlabel", "emotiontype", "emotionclass"),
    "fps": ("fps", "framerate", "framespersecond"),
    "first_frame": ("firstframe",),
    "dataset": ("dataset",),
    "action_descriptors": ("actiondescriptors", "actiondescriptor", "descriptors"),
    "flow_path": ("flowpath", "flowfile", "flowimage", "apexflow", "apexflowpath"),
})
#: How the official sheets most often spell each field: a format's messages name a missing column so,
#: unless its own files spell it otherwise (see each format's ``column_names``).
SHEET_COLUMN_NAMES: Mapping[str, str] = MappingProxyType({
    "subject": "Subject", "filename": "Filename", "path": "path", "onset": "OnsetFrame", "apex": "ApexFrame",
    "offset": "OffsetFrame", "aus": "Action Units", "emotion": "Estimated Emotion", "fps": "fps",
    "first_frame": "first_frame", "dataset": "dataset", "flow_path": "flow_path"})
#: The fields every official sheet has.
SHEET_FIELDS = ("subject", "filename", "onset", "apex", "offset", "emotion")
#: The header row is looked for among this many first rows (SAMM puts a description block above it).
HEADER_SEARCH_ROWS = 50


def match_columns(header: Sequence[object], aliases: Aliases = COLUMN_ALIASES
                  ) -> tuple[dict[str, int], dict[str, str]]:
    """Map fields to column positions; each column serves one field, the first alias hit wins.

    Returns:
        (field -> column index, field -> header text as written).
    """
    names = [normalise_column_name(h) for h in header]
    positions: dict[str, int] = {}
    for fld, accepted in aliases.items():
        for alias in accepted:
            hits = [i for i, n in enumerate(names) if n == alias and i not in positions.values()]
            if hits:
                positions[fld] = hits[0]
                break
    return positions, {f: cell_text(header[i]) for f, i in positions.items()}


def find_header_row(rows: Sequence[Sequence[object]], aliases: Aliases = COLUMN_ALIASES) -> int | None:
    """Index of the header row: among the first rows, the one matching the most known column names
    (at least two, one of them the subject column); None when there is none."""
    best, best_count = None, 1
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        positions, _ = match_columns(row, aliases)
        if "subject" in positions and len(positions) > best_count:
            best, best_count = i, len(positions)
    return best


def found_columns(rows: Sequence[Sequence[object]], header_index: int | None) -> str:
    """The columns of the header row (else of the first non-blank row) as a message shows them."""
    if header_index is None:
        header_index = next((i for i, r in enumerate(rows) if any(not is_blank(c) for c in r)), None)
    if header_index is None:
        return "none (the sheet is empty)"
    names = [cell_text(c) for c in rows[header_index] if not is_blank(c)]
    return f"{', '.join(repr(n) for n in names)} (row {header_index + 1})"
