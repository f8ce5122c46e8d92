"""``load_clip_table`` and ``detect_format``: a file (or folder) -> its format's record -> the clip table.

Nothing here knows a dataset: every decision is a field of the
:class:`~microexp.data.annotations.format.Format` record in :data:`~.formats.DATASET_FORMATS`.
Sheet formats: locate the columns, parse rows, clip ids, estimate missing apexes, locate the clips,
validate. Folder formats (SMIC): scan the tree, then the same ids, apex and validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from microexp.data.annotations.cells import is_blank, normalise_column_name
from microexp.data.annotations.columns import COLUMN_ALIASES, find_header_row, found_columns, match_columns
from microexp.data.annotations.format import Format
from microexp.data.annotations.formats import DATASET_FORMATS, DATASET_NAMES, FORMATS
from microexp.data.annotations.phases import fill_blank_phases
from microexp.data.annotations.records import COLUMNS, Record, RowContext
from microexp.data.annotations.results import ClipTableResult, Problem
from microexp.data.annotations.rows import estimate_missing_apex, parse_row
from microexp.data.annotations.sheets import Sheet, read_sheets
from microexp.data.annotations.validate import MediaCheck, validate_records
from microexp.errors import AnnotationError

__all__ = ["detect_format", "load_clip_table"]

# the package's name, as users and tests configure it (the code lives in submodules)
logger = logging.getLogger("microexp.data.annotations")

#: the columns an unlabelled table (``labels_required=False``) may lack: the annotators' work
LABEL_FIELDS = frozenset({"emotion", "aus", "onset", "apex", "offset"})


# ----------------------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class _Layout:
    """Where the data is in a sheet."""

    sheet: Sheet
    header_index: int
    positions: dict[str, int]
    headers: dict[str, str]


def _locate_columns(path: Path, sheets: list[Sheet], fmt: Format, *, require_emotion: bool = True,
                    labels_required: bool = True) -> _Layout:
    """Find the first sheet whose header has the format's required columns; else a one-line error."""
    waived = (set() if require_emotion else {"emotion"}) | (set() if labels_required else LABEL_FIELDS)
    required = tuple(f for f in fmt.required if f not in waived)
    for sheet in sheets:
        index = fmt.find_header(sheet.rows, fmt.aliases)
        if index is None and _fits_without_header(sheet, fmt):
            fields = fmt.headerless_fields or ()
            return _Layout(sheet, -1, {f: i for i, f in enumerate(fields)}, {f: fmt.column_names.get(f, f) for f in fields})
        if index is None:
            continue
        positions, headers = match_columns(sheet.rows[index], fmt.aliases)
        needed = required
        if fmt.flow_required is not None and "flow_path" in positions:
            needed = tuple(f for f in fmt.flow_required if f not in waived)
        if all(f in positions for f in needed):
            return _Layout(sheet, index, positions, headers)
    first = sheets[0] if sheets else Sheet("", [])
    index = fmt.find_header(first.rows, fmt.aliases)
    positions = match_columns(first.rows[index], fmt.aliases)[0] if index is not None else {}
    missing = ", ".join(repr(fmt.column_names[f]) for f in required if f not in positions)
    others = f"; other sheets: {', '.join(s.name for s in sheets[1:])}" if len(sheets) > 1 else ""
    raise AnnotationError(f"{path}: missing column(s) {missing} for format {fmt.name!r} (names match ignoring "
                          f"case, spaces and underscores); columns found in sheet {first.name!r}: "
                          f"{found_columns(first.rows, index)}{others}")


def _fits_without_header(sheet: Sheet, fmt: Format) -> bool:
    """A file of a headerless format: its first row has exactly the format's columns."""
    if fmt.headerless_fields is None or not sheet.rows:
        return False
    first = [c for c in sheet.rows[0] if not is_blank(c)]
    return len(first) == len(fmt.headerless_fields)


def _sheet_records(layout: _Layout) -> Iterable[tuple[int, dict[str, object]]]:
    """(spreadsheet row, field -> cell) for each non-blank row below the header."""
    for i in range(layout.header_index + 1, len(layout.sheet.rows)):
        row = layout.sheet.rows[i]
        cells = {f: (row[p] if p < len(row) else None) for f, p in layout.positions.items()}
        if all(is_blank(c) for c in row):
            continue
        yield i + 1, cells


# ----------------------------------------------------------------------------------------------------------
# Records -> table


def _build_table(records: Sequence[Record]) -> pd.DataFrame:
    """Records -> the clip table with the documented dtypes; index = source row (or 1..N)."""
    index = [r.row if r.row is not None else i + 1 for i, r in enumerate(records)]
    table = pd.DataFrame([r.as_row() for r in records], columns=list(COLUMNS), index=index)
    dtypes = {"subject": "int64", "onset": "int64", "apex": "int64", "offset": "int64", "first_frame": "int64",
              "fps": "float64", "apex_estimated": "bool"}
    table = table.astype(dtypes)
    for c in ("clip", "path", "emotion", "aus", "dataset", "action_descriptors", "flow_path"):
        table[c] = table[c].astype(object)
    return table


def _sorted_by_row(problems: list[Problem]) -> list[Problem]:
    """File order; problems without a row (folder formats) keep their order, after the rows."""
    return sorted(problems, key=lambda p: (p.row is None, p.row or 0))


def _assign_ids_and_apexes(ctx: RowContext, records: Sequence[Record]) -> list[Problem]:
    """The format's subject and clip ids, then the estimated apex of clips without one (a warning each)."""
    if ctx.format.subject_ids is not None:
        for r, subject in zip(records, ctx.format.subject_ids(records), strict=True):
            r.subject = subject
    for r, clip in zip(records, ctx.format.clip_ids(records), strict=True):
        r.clip = clip
    return [p for p in (estimate_missing_apex(ctx, r) for r in records) if p is not None]


# ----------------------------------------------------------------------------------------------------------
# Readers


def _read_sheet_format(path: Path, fmt: Format, sheets: list[Sheet], root: Path, *, check_files: bool,
                       root_given: bool, fps: float | None, media: MediaCheck | None = None,
                       require_emotion: bool = True, labels_required: bool = True) -> ClipTableResult:
    """The shared pipeline of every sheet format: locate columns, parse rows, ids, paths, (unlabelled
    tables: fill blank phases from the frames), validate."""
    assert fmt.locate is not None  # a sheet format (checked by Format)
    require_emotion = require_emotion and labels_required
    layout = _locate_columns(path, sheets, fmt, require_emotion=require_emotion, labels_required=labels_required)
    if fmt.fps_from_sheet_only and fps is not None:
        logger.warning("fps=%s ignored for %s: the frame rate comes from the sheet's fps column", fps, fmt.title)
        fps = None
    ctx = RowContext(str(path), fmt, layout.headers, fps if fps is not None else fmt.default_fps,
                     require_emotion=require_emotion, require_labels=labels_required)
    records, problems = [], []
    for row, cells in _sheet_records(layout):
        record, row_problems = parse_row(ctx, row, cells)
        problems += row_problems
        if record is not None:
            records.append(record)
    problems += _assign_ids_and_apexes(ctx, records)
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"clip root folder not found: {root} (pass root=, or check_files=False)")
    located = fmt.locate(ctx, root, records, check_files=check_files, root_given=root_given)
    for r, clip_path in zip(records, located.paths, strict=True):
        r.path = clip_path
    problems += located.problems
    if not labels_required:
        records, filled = fill_blank_phases(ctx, records, check_files=check_files)
        problems += filled
    problems += validate_records(ctx, records, check_files, media)
    return ClipTableResult(_build_table(records), _sorted_by_row(problems))


def _read_folder_format(path: Path, fmt: Format, *, check_files: bool, fps: float | None,
                        media: MediaCheck | None = None) -> ClipTableResult:
    """The pipeline of formats without a sheet: scan the folder tree, ids, apexes, validate."""
    assert fmt.folder is not None  # a folder format (checked by Format)
    fps = fps if fps is not None else fmt.default_fps
    scan = fmt.folder.scan(path, fps)
    ctx = RowContext(str(scan.folder), fmt, {}, fps)
    problems = scan.problems + _assign_ids_and_apexes(ctx, scan.records)
    problems += validate_records(ctx, scan.records, check_files, media)
    return ClipTableResult(_build_table(scan.records), _sorted_by_row(problems))


# ----------------------------------------------------------------------------------------------------------
# Format detection


def _column_candidates(names: frozenset[str]) -> list[str]:
    """Formats whose distinctive columns appear in a (normalised) header: those of the lowest matching rank."""
    by_rank: dict[int, list[str]] = {}
    for fmt in DATASET_FORMATS.values():
        if fmt.header_signature is not None and fmt.header_signature(names):
            by_rank.setdefault(fmt.signature_rank, []).append(fmt.name)
    return by_rank[min(by_rank)] if by_rank else []


def _detect(path: Path, sheets: list[Sheet] | None) -> str:
    """The format of ``path`` (sheets: its rows when it is a file)."""
    if sheets is None:
        folder_formats = [(f, f.folder) for f in DATASET_FORMATS.values() if f.folder is not None]
        for fmt, layout in folder_formats:
            if layout.find(path) is not None:
                return fmt.name
        names = " or ".join(f.title for f, _ in folder_formats)
        hints = "; ".join(layout.hint for _, layout in folder_formats)
        raise AnnotationError(f"cannot tell the format of folder {path}: only {names} is read from a folder "
                              f"({hints}); pass format= one of {', '.join(DATASET_NAMES)}")
    by_name = [f.name for f in DATASET_FORMATS.values()
               if f.file_name is not None and f.file_name.search(path.name.lower())]
    if len(by_name) == 1:
        return by_name[0]
    first = sheets[0].rows if sheets else []
    index = find_header_row(first, COLUMN_ALIASES)
    names = frozenset(normalise_column_name(c) for c in first[index]) if index is not None else frozenset()
    by_cols = _column_candidates(names)
    if len(by_cols) == 1:
        return by_cols[0]
    guesses = by_cols or by_name
    raise AnnotationError(f"cannot tell the format of {path} (matches: {', '.join(guesses) or 'none'}; columns "
                          f"found: {found_columns(first, index)}); pass format= one of {', '.join(DATASET_NAMES)}")


def detect_format(path: str | Path) -> str:
    """The format name of an annotation file or folder (see the package doc for the rules).

    Raises:
        FileNotFoundError: nothing at ``path``.
        AnnotationError: the format cannot be told; the message lists the formats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return _detect(path, None if path.is_dir() else read_sheets(path))


# ----------------------------------------------------------------------------------------------------------
# Entry point


def load_clip_table(path: str | Path, format: str = "auto", root: str | Path | None = None,
                    check_files: bool = True, *, fps: float | None = None, check_media: bool = False,
                    backend: str = "auto", progress: bool | None = None,
                    require_emotion: bool = True, labels_required: bool = True) -> ClipTableResult:
    """Read an annotation file into a normalised, validated clip table.

    Args:
        path: the annotation file (CSV/xlsx), or for SMIC the ``HS`` folder (or its parent).
        format: one of :data:`FORMATS` (``'auto'`` detects it).
        root: the folder clip paths are relative to (default: the annotation file's folder; ignored by SMIC).
        check_files: check that each clip's frame folder holds frames onset..offset (or its video file
            exists); ``False`` reads annotations only (DFME paths are then only located when ``root``
            is given, else ``''``).
        fps: override the format's default frame rate (not DFME, whose fps is the sheet's column).
        check_media: (with ``check_files``) also open every clip as training will
            (:func:`microexp.data.video.check_clip`: a video's header, frame count and its onset and
            offset frames; a folder's image headers and ends for onset..offset) and report each clip
            that will fail to read as an error. Slow on large datasets: one open per clip.
        backend: video backend of the media check.
        progress: progress bar of the media check (tqdm on stderr); ``None`` shows it only on a terminal.
        require_emotion: ``False`` accepts clips without an emotion (a blank cell, or no emotion column):
            for prediction on unlabelled clips; their ``emotion`` is ``''``.
        labels_required: ``False`` reads an unlabelled table (a pretraining pool such as
            ``microexp synth --unlabeled N`` writes): implies ``require_emotion=False``; the ``emotion``,
            ``aus``, ``onset``, ``apex`` and ``offset`` columns may be blank or absent; a blank emotion is
            ``''``, blank AUs ``''``; a blank onset/offset is the clip's first/last frame number (from its
            frame folder's file names, or its video's frame count numbered from ``first_frame``: our CSV's
            ``first_frame=1`` gives ``1..frames``) and a blank apex the middle, ``(onset + offset) // 2``
            (``apex_estimated``), without a problem. Counting frames needs ``check_files=True``: without it a
            blank onset/offset is an error naming the column (see :mod:`~microexp.data.annotations.phases`).
            ``True`` (the default): nothing changes. Folder formats (SMIC) ignore it.

    Returns:
        :class:`ClipTableResult` with the table (columns :data:`COLUMNS`) and the problems.

    Raises:
        FileNotFoundError: the annotation file, or the clip root (with ``check_files``), does not exist.
        AnnotationError: unknown format, unreadable file, or a sheet without the required columns.
    """
    if format not in FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    sheets = None if path.is_dir() else read_sheets(path)
    fmt = DATASET_FORMATS[_detect(path, sheets) if format == "auto" else format]
    media = MediaCheck(backend, progress) if check_media else None
    if fmt.folder is not None:
        return _read_folder_format(path, fmt, check_files=check_files, fps=fps, media=media)
    if sheets is None:
        raise AnnotationError(f"{path} is a folder; format {fmt.name!r} reads an annotation file (xlsx or csv)")
    clip_root = Path(root) if root is not None else path.parent
    return _read_sheet_format(path, fmt, sheets, clip_root, check_files=check_files, root_given=root is not None,
                              fps=fps, media=media, require_emotion=require_emotion,
                              labels_required=labels_required)
