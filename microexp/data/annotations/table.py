"""Annotation readers: official micro-expression sheets (and our CSV) -> one normalised clip table.

``load_clip_table(path, format="auto", root=None, check_files=True)`` reads an annotation file, normalises
every row into the columns of :data:`COLUMNS` and validates it, returning a :class:`ClipTableResult`: the
table of every row that could be parsed and the list of :class:`Problem` found. Nothing is dropped
silently: ``result.resolve(strict=False)`` drops the rows with ``'error'`` problems and logs one warning per
dropped clip; ``resolve(strict=True)`` raises :class:`~microexp.errors.AnnotationError` instead.

Row numbers (``Problem.row`` and the index of ``result.table``) are numbered as a spreadsheet program shows
them: 1-based, header and description rows included (for CSV files: the line number). SMIC has no sheet:
its problems have ``row=None`` and name the clip.

Formats (``format=``), following the official releases (see ``docs/datasets.md``):

==========  ======================================================================================
microexp    our CSV: ``subject,clip,path,onset,apex,offset,fps,emotion,aus`` [+ ``first_frame``,
            ``dataset``]; ``path`` relative to ``root`` (default: the CSV's folder) or absolute.
dfme        DFME xlsx (``DFME_data_coding.xlsx``): Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame,
            AUs, emotion, fps. fps comes from the sheet only. Clip folders are found by name (Filename)
            anywhere under ``root`` (one walk), frames ``00001.png``. clip id = Filename.
casme2      CASME II xlsx (first sheet with the columns); frames ``sub{SS}/{Filename}/img{N}.jpg``;
            200 fps; clip id = ``'sub{SS}/{Filename}'`` (Filenames repeat across subjects).
samm        SAMM xlsx, header row found below the description block; frames
            ``{Subject:03d}/{Filename}/{Subject}_{N:05d}.jpg``; 200 fps; clip id = Filename.
smic        SMIC-HS: the *folder* ``HS`` (or its parent): ``HS/s{N}/micro/{emotion}/{clip}/reg_*.bmp``;
            onset/offset = first/last frame number, apex = middle (estimated); 100 fps; clip id = folder.
casme3      CAS(ME)^3 Part A xlsx: Subject ``spNO.{N}``, Filename = stimulus letter, Onset/Apex/Offset;
            frames ``spNO.{N}/{Filename}/color/{index}.jpg`` (Filename folder matched ignoring case);
            fps 30 (an assumption: the sheet has no fps and docs/datasets.md gives none; pass ``fps=`` to
            override); clip id = ``'spNO.{N}/{Filename}/{onset}'`` (the letter repeats within a subject),
            suffixed ``'-2'``, ``'-3'``... if that still repeats. ``Offset = 0`` is the sheet's way of
            writing a missing offset (rows 798 and 800 of the release): an error "missing offset".
mmew        MMEW xlsx (``MMEW_Micro_Exp.xlsx``); frames ``{emotion}/{Filename}/{n}.jpg`` (emotion folder
            matched ignoring case); fps 90 (an assumption, from the MMEW paper; pass ``fps=`` to override);
            clip id = Filename.
auto        from the file name (dfme, casme2/casme ii, samm, cas(me)3, mmew), else the columns, a folder
            is SMIC; an AnnotationError lists the formats when it cannot tell.
==========  ======================================================================================

Column names match ignoring case, spaces, underscores and dashes, with aliases (``'OnsetFrame'``,
``'Onset Frame'``, ``'onset_frame'``, ``'Onset'``...); a sheet column that gives ``fps`` overrides the
format's default. Apex cells that are blank, ``'/'``, ``'-'`` or ``-1`` are set to ``(onset + offset) // 2``
with ``apex_estimated=True`` and a ``'warning'``. FACS action descriptors and movement codes in the AU cell
(``AD31``, ``M57``; DFME challenge sheets) are kept in the ``action_descriptors`` column (``'AD31+M57'``),
not in ``aus``; a missing column is named as the format's files spell it (``onset`` in our CSV, ``Onset``
in CAS(ME)^3, ``OnsetFrame`` in DFME), with the columns that were found.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from microexp.data.aus import invalid_au_tokens, normalise_action_descriptors, normalise_aus
from microexp.data.video import check_clip, frame_number_from_name
from microexp.errors import AnnotationError, VideoReadError, user_message

__all__ = [
    "COLUMNS",
    "DATASET_NAMES",
    "DEFAULT_FPS",
    "FORMATS",
    "KNOWN_EMOTIONS",
    "ClipTableResult",
    "Problem",
    "cell_text",
    "detect_format",
    "estimate_apex",
    "frame_number_from_name",
    "list_frame_files",
    "load_clip_table",
    "normalise_column_name",
    "normalise_subject",
    "parse_fps",
    "parse_frame_number",
]

logger = logging.getLogger("microexp.data.annotations")  # the name users configure

#: Columns of a clip table, in order.
COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "first_frame", "fps", "emotion", "aus",
           "dataset", "apex_estimated", "action_descriptors")
#: Values of the ``dataset`` column (one per reader).
DATASET_NAMES = ("microexp", "dfme", "casme2", "samm", "smic", "casme3", "mmew")
#: Accepted ``format=`` values.
FORMATS = ("auto",) + DATASET_NAMES
#: fps of formats whose sheets have no fps column (casme3 and mmew are assumptions, see the module doc).
DEFAULT_FPS: Mapping[str, float] = {"casme2": 200.0, "samm": 200.0, "smic": 100.0, "casme3": 30.0, "mmew": 90.0}
#: Emotion names (lower case) each dataset's sheets use; others are reported. ``microexp`` accepts any.
KNOWN_EMOTIONS: Mapping[str, frozenset[str]] = {
    "dfme": frozenset({"happiness", "anger", "contempt", "disgust", "fear", "sadness", "surprise"}),
    "casme2": frozenset({"others", "disgust", "happiness", "surprise", "repression", "sadness", "fear"}),
    "samm": frozenset({"anger", "other", "happiness", "surprise", "contempt", "disgust", "fear", "sadness"}),
    "smic": frozenset({"negative", "positive", "surprise"}),
    # CAS(ME)^3 spellings are not documented in docs/datasets.md: accept both short and long forms.
    "casme3": frozenset({"happy", "happiness", "sad", "sadness", "anger", "disgust", "fear", "surprise",
                         "others", "other"}),
    "mmew": frozenset({"happiness", "surprise", "disgust", "fear", "sadness", "anger", "others"}),
}

# canonical field -> accepted header names, normalised by normalise_column_name, in priority order.
_ALIASES: Mapping[str, tuple[str, ...]] = {
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
}
# how a missing column is named in messages: as each format's files spell it (docs/datasets.md)
_DISPLAY_SHEET = {"subject": "Subject", "filename": "Filename", "path": "path", "onset": "OnsetFrame",
                  "apex": "ApexFrame", "offset": "OffsetFrame", "aus": "Action Units",
                  "emotion": "Estimated Emotion", "fps": "fps", "first_frame": "first_frame", "dataset": "dataset"}
_DISPLAY: Mapping[str, Mapping[str, str]] = {
    "microexp": {f: f for f in _ALIASES} | {"filename": "clip"},
    "dfme": _DISPLAY_SHEET | {"aus": "AU", "emotion": "emotion"},
    "casme2": _DISPLAY_SHEET,
    "samm": _DISPLAY_SHEET | {"onset": "Onset Frame", "apex": "Apex Frame", "offset": "Offset Frame"},
    "casme3": _DISPLAY_SHEET | {"onset": "Onset", "apex": "Apex", "offset": "Offset", "aus": "AU",
                                "emotion": "emotion"},
    "mmew": _DISPLAY_SHEET,
}
_SHEET_FIELDS = ("subject", "filename", "onset", "apex", "offset", "emotion")
_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "microexp": ("subject", "filename", "path", "onset", "apex", "offset", "fps", "emotion", "aus"),
    "dfme": _SHEET_FIELDS + ("fps",),
    "casme2": _SHEET_FIELDS,
    "samm": _SHEET_FIELDS,
    "casme3": _SHEET_FIELDS,
    "mmew": _SHEET_FIELDS,
}
# formats whose sheets write a missing offset as 0 (CAS(ME)^3 Part A, e.g. spreadsheet rows 798 and 800)
_ZERO_IS_MISSING_OFFSET = frozenset({"casme3"})
_MISSING_TOKENS = {"", "/", "-", "--", "n/a", "na", "nan", "none", "null"}
_HEADER_SEARCH_ROWS = 50
_SHOWN_ERRORS = 5


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Problem:
    """One validation finding.

    Attributes:
        file: the annotation file (or, for SMIC, the clip folder); ``''`` when not tied to a file.
        row: the row as a spreadsheet shows it (1-based, header included; CSV: line number), or None.
        field: the column as named in the file (e.g. ``'ApexFrame'``), or ``'path'``/``'clip'``.
        value: the offending cell or value as text.
        message: what is wrong and what was expected.
        severity: ``'error'`` (the clip is dropped by ``resolve``) or ``'warning'``.
        clip: the clip id, when known.
    """

    file: str
    row: int | None
    field: str
    value: str | None
    message: str
    severity: str = "error"
    clip: str | None = None

    def __str__(self) -> str:
        where = " ".join(p for p in (self.file, f"row {self.row}" if self.row is not None else "") if p)
        if self.clip:
            where = f"{where} (clip {self.clip})" if where else f"clip {self.clip}"
        return f"{where or 'clip table'}: {self.message} [{self.field}={self.value!r}]"


@dataclass
class ClipTableResult:
    """A clip table and the problems found reading it.

    Attributes:
        table: every row that could be parsed, columns :data:`COLUMNS`; the index is the source row
            (spreadsheet numbering) for sheets and CSVs, 1..N for SMIC.
        problems: all problems, in file order.
    """

    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def resolve(self, strict: bool = False) -> pd.DataFrame:
        """Apply the problems: the table without the rows that have errors.

        Args:
            strict: raise instead of dropping when there is any error.

        Returns:
            The kept rows with a fresh 0..N-1 index. One warning is logged per dropped clip.

        Raises:
            AnnotationError: (``strict=True``) there are errors; the message shows the first few and the count.
        """
        errors = self.errors
        if strict and errors:
            shown = "; ".join(str(p) for p in errors[:_SHOWN_ERRORS])
            more = f"; and {len(errors) - _SHOWN_ERRORS} more" if len(errors) > _SHOWN_ERRORS else ""
            raise AnnotationError(f"{len(errors)} error(s) in the annotations (rows numbered as in a "
                                  f"spreadsheet, header included): {shown}{more}")
        by_key: dict[tuple, list[Problem]] = defaultdict(list)
        for p in errors:
            by_key[("row", p.file, p.row) if p.row is not None else ("clip", p.clip)].append(p)
        for group in by_key.values():
            first = group[0]
            where = f"{first.file} row {first.row}" if first.row is not None else first.file
            logger.warning("dropping clip %s (%s): %s", first.clip or "?", where,
                           "; ".join(p.message for p in group))
        bad_rows = {p.row for p in errors if p.row is not None}
        bad_clips = {p.clip for p in errors if p.row is None and p.clip is not None}
        drop = self.table.index.isin(list(bad_rows)) | self.table["clip"].isin(list(bad_clips))
        return self.table[~drop].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# Pure cell parsers


def _is_blank(value: object) -> bool:
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
    if _is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_column_name(name: object) -> str:
    """Header text for matching: lower case without spaces, underscores, dashes and dots."""
    return re.sub(r"[\s_\-.]+", "", cell_text(name)).lower()


_SUBJECT = re.compile(r"^[^\d]*?(\d+)(?:\.0+)?$")


def normalise_subject(value: object) -> int:
    """A subject id as an int: ``'sub0001'``, ``'006'``, ``'spNO.1'``, ``'s3'``, ``'S01'``, ``1.0`` -> 1, 6, 1, 3, 1, 1.

    Raises:
        ValueError: no subject number in the value.
    """
    if isinstance(value, bool) or _is_blank(value):
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
    if _is_blank(value) or (isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS):
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


def _numeric_key(name: str) -> tuple:
    """Sort key for names with numbers: 's2' before 's10'."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


# ----------------------------------------------------------------------------------------------------------
# Reading sheets


@dataclass(frozen=True)
class _Sheet:
    """Raw rows of one sheet; ``rows[i]`` is spreadsheet row ``i + 1``."""

    name: str
    rows: list[list[object]]


def _read_sheets(path: Path) -> list[_Sheet]:
    """All sheets of an xlsx/xls file, or the one 'sheet' of a CSV/TSV, as raw rows."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return [_Sheet(path.name, _read_csv_rows(path, "\t" if suffix == ".tsv" else ","))]
        if suffix in (".xlsx", ".xlsm", ".xls"):
            frames = pd.read_excel(path, header=None, dtype=object, sheet_name=None, keep_default_na=False)
            return [_Sheet(str(name), df.astype(object).values.tolist()) for name, df in frames.items()]
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"annotation file not found: {path}") from exc
    except ImportError as exc:  # e.g. xlrd for .xls is not installed
        raise AnnotationError(f"cannot read {path}: {exc}; save it as .xlsx or .csv") from exc
    except AnnotationError:
        raise
    except _corrupt_file_errors(suffix) as exc:  # a corrupt or mislabelled file; anything else is a bug
        detail = " ".join(str(exc).split()) or "no detail"
        raise AnnotationError(f"cannot read {path}: not a valid {suffix.lstrip('.')} file "
                              f"({type(exc).__name__}: {detail})") from exc
    raise AnnotationError(f"cannot read {path}: unsupported extension {suffix!r} (expected .xlsx, .xls or .csv)")


def _corrupt_file_errors(suffix: str) -> tuple[type[BaseException], ...]:
    """The exceptions pandas' readers raise on a corrupt or mislabelled file of this kind.

    ``ValueError`` covers pandas' ParserError, "Excel file format cannot be determined" and decoding
    errors; for xlsx also a broken zip, broken XML and the ``KeyError`` of a zip without a workbook.
    """
    errors: list[type[BaseException]] = [ValueError, EOFError]
    if suffix in (".xlsx", ".xlsm", ".xls"):
        import xml.etree.ElementTree as ElementTree
        import zipfile

        errors += [zipfile.BadZipFile, ElementTree.ParseError, KeyError]
        try:
            from openpyxl.utils.exceptions import InvalidFileException

            errors.append(InvalidFileException)
        except ImportError:  # pragma: no cover - openpyxl is a dependency
            pass
    return tuple(errors)


def _read_csv_rows(path: Path, sep: str) -> list[list[object]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False,
                             sep=sep, encoding=encoding)
        except UnicodeDecodeError:
            continue
        except pd.errors.EmptyDataError:
            return []
        return df.astype(object).values.tolist()
    raise AnnotationError(f"cannot read {path}: not UTF-8 or GB18030 text")


def _match_columns(header: Sequence[object]) -> tuple[dict[str, int], dict[str, str]]:
    """Map canonical fields to column positions. Returns (field -> index, field -> header text)."""
    names = [normalise_column_name(h) for h in header]
    positions: dict[str, int] = {}
    for fld, aliases in _ALIASES.items():
        for alias in aliases:
            hits = [i for i, n in enumerate(names) if n == alias and i not in positions.values()]
            if hits:
                positions[fld] = hits[0]
                break
    return positions, {f: cell_text(header[i]) for f, i in positions.items()}


def _find_header(rows: list[list[object]]) -> int | None:
    """Index of the header row: among the first rows, the one matching the most known column names
    (at least two, one of them the subject column); None when there is none."""
    best, best_count = None, 1
    for i, row in enumerate(rows[:_HEADER_SEARCH_ROWS]):
        positions, _ = _match_columns(row)
        if "subject" in positions and len(positions) > best_count:
            best, best_count = i, len(positions)
    return best


def _found_columns(rows: list[list[object]], header_index: int | None) -> str:
    if header_index is None:
        header_index = next((i for i, r in enumerate(rows) if any(not _is_blank(c) for c in r)), None)
    if header_index is None:
        return "none (the sheet is empty)"
    names = [cell_text(c) for c in rows[header_index] if not _is_blank(c)]
    return f"{', '.join(repr(n) for n in names)} (row {header_index + 1})"


@dataclass(frozen=True)
class _Layout:
    """Where the data is in a sheet."""

    sheet: _Sheet
    header_index: int
    positions: dict[str, int]
    headers: dict[str, str]


def _locate(path: Path, sheets: list[_Sheet], fmt: str, *, require_emotion: bool = True) -> _Layout:
    """Find the first sheet whose header has the format's required columns; else a one-line error."""
    required = tuple(f for f in _REQUIRED[fmt] if require_emotion or f != "emotion")
    for sheet in sheets:
        index = _find_header(sheet.rows)
        if index is None:
            continue
        positions, headers = _match_columns(sheet.rows[index])
        if all(f in positions for f in required):
            return _Layout(sheet, index, positions, headers)
    first = sheets[0] if sheets else _Sheet("", [])
    index = _find_header(first.rows)
    positions = _match_columns(first.rows[index])[0] if index is not None else {}
    missing = ", ".join(repr(_DISPLAY[fmt][f]) for f in required if f not in positions)
    others = f"; other sheets: {', '.join(s.name for s in sheets[1:])}" if len(sheets) > 1 else ""
    raise AnnotationError(f"{path}: missing column(s) {missing} for format {fmt!r} (names match ignoring case, "
                          f"spaces and underscores); columns found in sheet {first.name!r}: "
                          f"{_found_columns(first.rows, index)}{others}")


def _sheet_records(layout: _Layout) -> Iterable[tuple[int, dict[str, object]]]:
    """(spreadsheet row, field -> cell) for each non-blank row below the header."""
    for i in range(layout.header_index + 1, len(layout.sheet.rows)):
        row = layout.sheet.rows[i]
        cells = {f: (row[p] if p < len(row) else None) for f, p in layout.positions.items()}
        if all(_is_blank(c) for c in row):
            continue
        yield i + 1, cells


# ----------------------------------------------------------------------------------------------------------
# Rows -> records


@dataclass
class _Record:
    """One parsed clip before it becomes a table row."""

    row: int | None
    subject_text: str
    subject: int
    filename: str
    onset: int
    apex: int
    offset: int
    fps: float
    emotion: str
    aus: str
    dataset: str
    action_descriptors: str = ""
    first_frame: int = 0
    path: str = ""
    apex_estimated: bool = False
    clip: str = ""

    def as_row(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in COLUMNS}


@dataclass(frozen=True)
class _Context:
    """What row parsing needs to know about the file."""

    file: str
    fmt: str
    headers: Mapping[str, str]
    default_fps: float | None
    require_emotion: bool = True

    def problem(self, row: int | None, fld: str, value: object, message: str, severity: str = "error",
                clip: str | None = None) -> Problem:
        return Problem(self.file, row, self.headers.get(fld, fld), cell_text(value), message, severity, clip)


def _parse_required(ctx: _Context, row: int, cells: Mapping[str, object], problems: list[Problem]
                    ) -> dict[str, object] | None:
    """Subject, filename, onset and offset; None (with error Problems) when any is unusable."""
    out: dict[str, object] = {}
    try:
        out["subject"] = normalise_subject(cells["subject"])
    except ValueError as exc:
        problems.append(ctx.problem(row, "subject", cells["subject"], str(exc)))
    out["filename"] = cell_text(cells["filename"])
    if not out["filename"]:
        problems.append(ctx.problem(row, "filename", "", "missing clip name"))
    for fld in ("onset", "offset"):
        try:
            out[fld] = parse_frame_number(cells[fld])
            if out[fld] is None:
                problems.append(ctx.problem(row, fld, cells[fld], f"missing {fld} frame number"))
            elif fld == "offset" and out[fld] == 0 and ctx.fmt in _ZERO_IS_MISSING_OFFSET:
                out[fld] = None
                problems.append(ctx.problem(row, fld, cells[fld], f"missing offset frame number ({ctx.fmt} "
                                            f"writes a missing offset as {ctx.headers.get(fld, fld)} = 0)"))
        except ValueError as exc:
            out[fld] = None
            problems.append(ctx.problem(row, fld, cells[fld], str(exc)))
    ok = "subject" in out and out["filename"] and out["onset"] is not None and out["offset"] is not None
    return out if ok else None


def _parse_optional(ctx: _Context, row: int, cells: Mapping[str, object], problems: list[Problem]
                    ) -> dict[str, object] | None:
    """Apex, fps, emotion, AUs, dataset and first_frame; None when one of them is unusable."""
    out: dict[str, object] = {"apex": None, "fps": ctx.default_fps, "first_frame": 0, "dataset": ctx.fmt}
    ok = True
    try:
        out["apex"] = parse_frame_number(cells.get("apex"))
    except ValueError as exc:
        problems.append(ctx.problem(row, "apex", cells.get("apex"), str(exc)))
        ok = False
    if "fps" in cells:
        try:
            out["fps"] = parse_fps(cells["fps"])
        except ValueError as exc:
            problems.append(ctx.problem(row, "fps", cells["fps"], str(exc)))
            ok = False
    out["emotion"] = cell_text(cells.get("emotion")).lower()
    bad_aus = invalid_au_tokens(cells.get("aus"))
    if bad_aus:
        problems.append(ctx.problem(row, "aus", cells.get("aus"), f"ignored tokens that are not AU codes: "
                                    f"{', '.join(map(repr, bad_aus))}", severity="warning"))
    out["aus"] = normalise_aus(cells.get("aus"), strict=False)
    descriptors = [normalise_action_descriptors(cells.get(c)) for c in ("aus", "action_descriptors")]
    out["action_descriptors"] = normalise_action_descriptors("+".join(d for d in descriptors if d))
    if not _is_blank(cells.get("first_frame")):
        try:
            out["first_frame"] = parse_frame_number(cells["first_frame"]) or 0
        except ValueError as exc:
            problems.append(ctx.problem(row, "first_frame", cells["first_frame"], str(exc)))
            ok = False
    if not _is_blank(cells.get("dataset")):
        out["dataset"] = cell_text(cells["dataset"]).lower()
        if out["dataset"] not in DATASET_NAMES:
            problems.append(ctx.problem(row, "dataset", cells["dataset"],
                                        f"unknown dataset; expected one of {', '.join(DATASET_NAMES)}"))
            ok = False
    return out if ok else None


def _parse_row(ctx: _Context, row: int, cells: Mapping[str, object]) -> tuple[_Record | None, list[Problem]]:
    """One sheet row -> a record (None when a value cannot be used) and its cell-level problems."""
    problems: list[Problem] = []
    if _is_blank(cells.get("subject")) and _is_blank(cells.get("filename")):
        message = "row ignored: no subject and no clip name (a note or a stray cell?)"
        return None, [ctx.problem(row, "subject", "", message, severity="warning")]
    required = _parse_required(ctx, row, cells, problems)
    optional = _parse_optional(ctx, row, cells, problems)
    if required is None or optional is None:
        return None, problems
    record = _Record(row=row, subject_text=cell_text(cells["subject"]), path=cell_text(cells.get("path")),
                     **required, **optional)  # type: ignore[arg-type]
    return record, problems


def _estimate_missing_apex(ctx: _Context, record: _Record) -> Problem | None:
    if record.apex is not None:
        return None
    record.apex = estimate_apex(record.onset, record.offset)
    record.apex_estimated = True
    return ctx.problem(record.row, "apex", "", f"missing apex; set to the middle of onset..offset "
                       f"({record.onset}..{record.offset}) = {record.apex}", severity="warning", clip=record.clip)


# ----------------------------------------------------------------------------------------------------------
# Validation (pure, over records)


def _check_order(ctx: _Context, record: _Record) -> list[Problem]:
    if record.onset > record.offset:
        return [ctx.problem(record.row, "offset", record.offset,
                            f"offset {record.offset} is before onset {record.onset}", clip=record.clip)]
    if not record.onset <= record.apex <= record.offset:
        return [ctx.problem(record.row, "apex", record.apex, f"apex {record.apex} is outside onset..offset "
                            f"{record.onset}..{record.offset}", clip=record.clip)]
    return []


def _check_emotion(ctx: _Context, record: _Record) -> list[Problem]:
    if not record.emotion:
        return [ctx.problem(record.row, "emotion", "", "missing emotion", clip=record.clip)] if ctx.require_emotion else []
    known = KNOWN_EMOTIONS.get(record.dataset)
    if known is not None and record.emotion not in known:
        return [ctx.problem(record.row, "emotion", record.emotion, f"unknown emotion for {record.dataset}; "
                            f"known: {', '.join(sorted(known))}", clip=record.clip)]
    return []


def _check_duplicates(ctx: _Context, records: Sequence[_Record]) -> list[Problem]:
    """Later rows that repeat a clip id are errors (the first one is kept)."""
    first_row: dict[str, int | None] = {}
    problems = []
    for r in records:
        if r.clip in first_row:
            where = f"row {first_row[r.clip]}" if first_row[r.clip] is not None else "another folder"
            problems.append(ctx.problem(r.row, "filename", r.filename,
                                        f"duplicate clip id {r.clip!r} (first at {where})", clip=r.clip))
        else:
            first_row[r.clip] = r.row
    return problems


def _check_frames(ctx: _Context, record: _Record, listings: dict[str, list[int] | None]) -> list[Problem]:
    """The clip's frame folder has frames onset..offset, or its video file exists (not decoded)."""
    path = record.path
    if not path:  # DFME folders that could not be located are reported by _dfme_paths
        return [] if ctx.fmt == "dfme" else [ctx.problem(record.row, "path", "", "no clip path", clip=record.clip)]
    if path not in listings:
        listings[path] = [n for n, _ in list_frame_files(path)] if os.path.isdir(path) else None
    numbers = listings[path]
    if numbers is None:
        if os.path.isfile(path):
            return []
        return [ctx.problem(record.row, "path", path, "clip video or frame folder not found", clip=record.clip)]
    if not numbers:
        return [ctx.problem(record.row, "path", path, "frame folder has no image frames", clip=record.clip)]
    if record.onset > record.offset:
        return []
    have = set(numbers)
    missing = [n for n in range(record.onset, record.offset + 1) if n not in have]
    if not missing:
        return []
    shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
    return [ctx.problem(record.row, "path", path, f"frame folder lacks {len(missing)} of the frames "
                        f"{record.onset}..{record.offset} ({shown}); it has {numbers[0]}..{numbers[-1]}",
                        clip=record.clip)]


@dataclass(frozen=True)
class _MediaCheck:
    """Open every clip's files (``load_clip_table(check_media=True)``): how, and whether to show a bar."""

    backend: str = "auto"
    progress: bool | None = None


def _check_media(ctx: _Context, records: Sequence[_Record], media: _MediaCheck) -> list[Problem]:
    """One error per clip whose video or frame files will fail to read (see ``video.check_clip``)."""
    from tqdm.auto import tqdm

    problems = []
    disable = None if media.progress is None else not media.progress
    for r in tqdm(records, desc="opening clips", unit="clip", disable=disable, leave=False):
        try:
            check_clip(r.path, onset=r.onset, offset=r.offset, first_frame=r.first_frame, backend=media.backend)
        except (VideoReadError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            problems.append(ctx.problem(r.row, "path", r.path, f"will fail to read: {user_message(exc)}",
                                        clip=r.clip))
    return problems


def _validate(ctx: _Context, records: Sequence[_Record], check_files: bool,
              media: _MediaCheck | None = None) -> list[Problem]:
    problems = _check_duplicates(ctx, records)
    listings: dict[str, list[int] | None] = {}
    readable = []
    for r in records:
        found = _check_order(ctx, r) + _check_emotion(ctx, r)
        if check_files:
            files = _check_frames(ctx, r, listings)
            if not files and not found and r.path:
                readable.append(r)
            found += files
        problems += found
    if check_files and media is not None:
        problems += _check_media(ctx, readable, media)
    return problems


def _build_table(records: Sequence[_Record]) -> pd.DataFrame:
    """Records -> the clip table with the documented dtypes; index = source row (or 1..N)."""
    index = [r.row if r.row is not None else i + 1 for i, r in enumerate(records)]
    table = pd.DataFrame([r.as_row() for r in records], columns=list(COLUMNS), index=index)
    dtypes = {"subject": "int64", "onset": "int64", "apex": "int64", "offset": "int64", "first_frame": "int64",
              "fps": "float64", "apex_estimated": "bool"}
    table = table.astype(dtypes)
    for c in ("clip", "path", "emotion", "aus", "dataset", "action_descriptors"):
        table[c] = table[c].astype(object)
    return table


def _sorted_by_row(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.row is None, p.row or 0))


# ----------------------------------------------------------------------------------------------------------
# Per-format clip ids and paths


def _casme3_ids(records: Sequence[_Record]) -> None:
    """'spNO.{N}/{letter}/{onset}', with '-2', '-3'... for repeats (the letter repeats within a subject)."""
    seen: dict[str, int] = defaultdict(int)
    for r in records:
        base = f"spNO.{r.subject}/{r.filename}/{r.onset}"
        seen[base] += 1
        r.clip = base if seen[base] == 1 else f"{base}-{seen[base]}"


def _assign_ids(fmt: str, records: Sequence[_Record]) -> None:
    if fmt == "casme3":
        _casme3_ids(records)
        return
    for r in records:
        r.clip = f"sub{r.subject:02d}/{r.filename}" if fmt == "casme2" else r.filename


class _ChildDirs:
    """Case-insensitive lookup of sub-folders, listing each folder once."""

    def __init__(self) -> None:
        self._cache: dict[Path, dict[str, str]] = {}

    def find(self, parent: Path, name: str) -> Path:
        if parent not in self._cache:
            try:
                self._cache[parent] = {e.name.lower(): e.name for e in os.scandir(parent) if e.is_dir()}
            except OSError:
                self._cache[parent] = {}
        return parent / self._cache[parent].get(name.lower(), name)


def _formula_path(fmt: str, root: Path, record: _Record, dirs: _ChildDirs) -> Path:
    """The clip folder of formats whose layout is a formula of the row."""
    if fmt == "casme2":
        return root / f"sub{record.subject:02d}" / record.filename
    if fmt == "samm":
        return root / f"{record.subject:03d}" / record.filename
    if fmt == "casme3":
        subject = record.subject_text if record.subject_text.lower().startswith("spno") else f"spNO.{record.subject}"
        return dirs.find(root / subject, record.filename) / "color"
    if fmt == "mmew":
        return dirs.find(root, record.emotion) / record.filename
    raise ValueError(f"no path formula for format {fmt!r}")  # pragma: no cover


def _index_folders(root: Path, names: set[str]) -> dict[str, list[str]]:
    """Walk ``root`` once; folders whose name is in ``names`` (not descending into them), by name."""
    found: dict[str, list[str]] = defaultdict(list)
    for dirpath, dirnames, _ in os.walk(root):
        keep = []
        for d in sorted(dirnames, key=_numeric_key):
            if d in names:
                found[d].append(os.path.join(dirpath, d))
            elif not d.startswith("."):
                keep.append(d)
        dirnames[:] = keep
    return found


def _dfme_paths(ctx: _Context, root: Path, records: Sequence[_Record]) -> list[Problem]:
    """Locate each DFME clip folder by its Filename anywhere under root."""
    index = _index_folders(root, {r.filename for r in records})
    problems = []
    for r in records:
        hits = index.get(r.filename, [])
        if len(hits) == 1:
            r.path = os.path.abspath(hits[0])
        elif not hits:
            problems.append(ctx.problem(r.row, "filename", r.filename,
                                        f"no folder named {r.filename!r} anywhere under {root}", clip=r.clip))
        else:
            problems.append(ctx.problem(r.row, "filename", r.filename, f"{len(hits)} folders named "
                                        f"{r.filename!r} under {root}: {', '.join(hits[:3])}", clip=r.clip))
    return problems


def _assign_paths(ctx: _Context, root: Path, records: Sequence[_Record], check_files: bool,
                  root_given: bool) -> list[Problem]:
    """Fill ``record.path`` (absolute); DFME problems for folders that cannot be located."""
    if ctx.fmt == "microexp":
        for r in records:
            if r.path:
                r.path = os.path.abspath(r.path if os.path.isabs(r.path) else root / r.path)
        return []
    if ctx.fmt == "dfme":
        if check_files or (root_given and root.is_dir()):
            problems = _dfme_paths(ctx, root, records)
            return problems if check_files else []
        return []
    dirs = _ChildDirs()
    for r in records:
        r.path = os.path.abspath(_formula_path(ctx.fmt, root, r, dirs))
    return []


# ----------------------------------------------------------------------------------------------------------
# Readers


def _read_sheet_format(path: Path, fmt: str, sheets: list[_Sheet], root: Path, *, check_files: bool,
                       root_given: bool, fps: float | None, media: _MediaCheck | None = None,
                       require_emotion: bool = True) -> ClipTableResult:
    """The shared pipeline of every sheet format: locate columns, parse rows, ids, paths, validate."""
    layout = _locate(path, sheets, fmt, require_emotion=require_emotion)
    if fmt == "dfme" and fps is not None:
        logger.warning("fps=%s ignored for DFME: the frame rate comes from the sheet's fps column", fps)
        fps = None
    ctx = _Context(str(path), fmt, layout.headers, fps if fps is not None else DEFAULT_FPS.get(fmt),
                   require_emotion=require_emotion)
    records, problems = [], []
    for row, cells in _sheet_records(layout):
        record, row_problems = _parse_row(ctx, row, cells)
        problems += row_problems
        if record is not None:
            records.append(record)
    _assign_ids(fmt, records)
    for r in records:
        problem = _estimate_missing_apex(ctx, r)
        if problem is not None:
            problems.append(problem)
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"clip root folder not found: {root} (pass root=, or check_files=False)")
    problems += _assign_paths(ctx, root, records, check_files, root_given)
    problems += _validate(ctx, records, check_files, media)
    return ClipTableResult(_build_table(records), _sorted_by_row(problems))


_SMIC_EMOTION_DIRS = ("negative", "positive", "surprise")


def _smic_folder(path: Path) -> Path | None:
    """The HS folder: ``path`` itself when it holds ``s{N}/micro``, or ``path/HS``; None otherwise."""
    for candidate in (path, path / "HS", path / "hs"):
        if candidate.is_dir() and any(
                re.fullmatch(r"s\d+", d.name, re.IGNORECASE) and (d / "micro").is_dir()
                for d in candidate.iterdir() if d.is_dir()):
            return candidate
    return None


def _smic_clip_dirs(hs: Path) -> list[tuple[int, str, Path]]:
    """(subject, emotion, clip folder) for every clip folder, in subject/emotion/name order."""
    clips = []
    subjects = [d for d in hs.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name, re.IGNORECASE)]
    for sdir in sorted(subjects, key=lambda d: _numeric_key(d.name)):
        micro = sdir / "micro"
        if not micro.is_dir():
            continue
        for edir in sorted((d for d in micro.iterdir() if d.is_dir()), key=lambda d: d.name.lower()):
            for cdir in sorted((d for d in edir.iterdir() if d.is_dir()), key=lambda d: _numeric_key(d.name)):
                clips.append((normalise_subject(sdir.name), edir.name.lower(), cdir))
    return clips


def _read_smic(path: Path, *, check_files: bool, fps: float | None, media: _MediaCheck | None = None
               ) -> ClipTableResult:
    """SMIC-HS from its folder tree (no sheet): one clip per ``s{N}/micro/{emotion}/{clip}`` folder."""
    hs = _smic_folder(path)
    if hs is None:
        raise AnnotationError(f"{path}: not a SMIC-HS folder (expected HS/s{{N}}/micro/"
                              f"{{{','.join(_SMIC_EMOTION_DIRS)}}}/{{clip}}/reg_*.bmp)")
    clip_dirs = _smic_clip_dirs(hs)
    if not clip_dirs:
        raise AnnotationError(f"{hs}: no clip folders under s{{N}}/micro/{{emotion}}/")
    ctx = _Context(str(hs), "smic", {}, fps if fps is not None else DEFAULT_FPS["smic"])
    records, problems = [], []
    for subject, emotion, cdir in clip_dirs:
        numbers = [n for n, _ in list_frame_files(cdir)]
        if not numbers:
            problems.append(Problem(str(cdir), None, "path", str(cdir), "clip folder has no image frames",
                                    "error", cdir.name))
            continue
        records.append(_Record(row=None, subject_text=f"s{subject}", subject=subject, filename=cdir.name,
                               onset=numbers[0], apex=None, offset=numbers[-1], fps=ctx.default_fps,
                               emotion=emotion, aus="", dataset="smic", path=os.path.abspath(cdir),
                               clip=cdir.name))  # type: ignore[arg-type]
    for r in records:
        problems.append(_estimate_missing_apex(ctx, r))  # type: ignore[arg-type]
    problems += _validate(ctx, records, check_files, media)
    return ClipTableResult(_build_table(records), problems)


# ----------------------------------------------------------------------------------------------------------
# Format detection


_NAME_PATTERNS: Mapping[str, re.Pattern] = {
    "dfme": re.compile(r"dfme"),
    "casme2": re.compile(r"casme[\s_\-]*(?:2|ii)(?![\di])"),
    "samm": re.compile(r"samm"),
    "casme3": re.compile(r"cas\(?me\)?[\s_\-^]*(?:3|iii)"),
    "mmew": re.compile(r"mmew"),
}


def _column_candidates(names: set[str]) -> list[str]:
    """Formats whose distinctive columns appear in a (normalised) header."""
    has_fps = bool(names & set(_ALIASES["fps"]))
    candidates = []
    if {"path", "clip"} <= names:
        return ["microexp"]
    if has_fps:
        candidates.append("dfme")
    if names & {"inducementcode", "duration", "notes"}:
        candidates.append("samm")
    if "objectiveclass" in names and "onset" in names:
        candidates.append("casme3")
    if "remarks" in names:
        candidates.append("mmew")
    if not candidates and {"onsetframe", "estimatedemotion"} <= names:
        candidates.append("casme2")
    return candidates


def _detect(path: Path, sheets: list[_Sheet] | None) -> str:
    """The format of ``path`` (sheets: its rows when it is a file)."""
    if sheets is None:
        if _smic_folder(path) is not None:
            return "smic"
        raise AnnotationError(f"cannot tell the format of folder {path}: only SMIC-HS is read from a folder "
                              f"(HS/s{{N}}/micro/...); pass format= one of {', '.join(DATASET_NAMES)}")
    by_name = [f for f, pattern in _NAME_PATTERNS.items() if pattern.search(path.name.lower())]
    if len(by_name) == 1:
        return by_name[0]
    first = sheets[0].rows if sheets else []
    index = _find_header(first)
    names = {normalise_column_name(c) for c in first[index]} if index is not None else set()
    by_cols = _column_candidates(names)
    if len(by_cols) == 1:
        return by_cols[0]
    guesses = by_cols or by_name
    raise AnnotationError(f"cannot tell the format of {path} (matches: {', '.join(guesses) or 'none'}; columns "
                          f"found: {_found_columns(first, index)}); pass format= one of {', '.join(DATASET_NAMES)}")


def detect_format(path: str | Path) -> str:
    """The format name of an annotation file or folder (see the module doc for the rules).

    Raises:
        FileNotFoundError: nothing at ``path``.
        AnnotationError: the format cannot be told; the message lists the formats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return _detect(path, None if path.is_dir() else _read_sheets(path))


# ----------------------------------------------------------------------------------------------------------
# Entry point


def load_clip_table(path: str | Path, format: str = "auto", root: str | Path | None = None,
                    check_files: bool = True, *, fps: float | None = None, check_media: bool = False,
                    backend: str = "auto", progress: bool | None = None,
                    require_emotion: bool = True) -> ClipTableResult:
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
    sheets = None if path.is_dir() else _read_sheets(path)
    fmt = _detect(path, sheets) if format == "auto" else format
    media = _MediaCheck(backend, progress) if check_media else None
    if fmt == "smic":
        return _read_smic(path, check_files=check_files, fps=fps, media=media)
    if sheets is None:
        raise AnnotationError(f"{path} is a folder; format {fmt!r} reads an annotation file (xlsx or csv)")
    clip_root = Path(root) if root is not None else path.parent
    return _read_sheet_format(path, fmt, sheets, clip_root, check_files=check_files, root_given=root is not None,
                              fps=fps, media=media, require_emotion=require_emotion)

