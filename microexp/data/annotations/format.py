"""The :class:`Format` record: everything one annotation format decides, as data and small named rules.

Generic code (:mod:`~microexp.data.annotations.table`, :mod:`~microexp.data.annotations.rows`,
:mod:`~microexp.data.annotations.validate`) consults only these fields, never a format's name: adding a
dataset is adding one record in ``formats/`` (and its test). The rules shared by several formats live here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, Protocol, Sequence

from microexp.data.annotations.cells import cell_text
from microexp.data.annotations.columns import COLUMN_ALIASES, Aliases, find_header_row
from microexp.data.annotations.records import Record, RowContext
from microexp.data.annotations.results import Problem

__all__ = ["ClipFolderFormula", "ClipLocator", "FolderLayout", "FolderScan", "Format", "Located", "SubfolderLookup",
           "formula_locator", "ids_from_filename", "locate_by_formula", "lower_case_text"]


class Located(NamedTuple):
    """What a :class:`ClipLocator` found: one path per record (``''`` when none) and the problems."""

    paths: list[str]
    problems: list[Problem]


class ClipLocator(Protocol):
    """Where each clip's frames or video live: absolute paths, in record order."""

    def __call__(self, ctx: RowContext, root: Path, records: Sequence[Record], *, check_files: bool,
                 root_given: bool) -> Located: ...


class FolderScan(NamedTuple):
    """The clips a folder format found: the dataset folder (problems name it), records, problems."""

    folder: Path
    records: list[Record]
    problems: list[Problem]


@dataclass(frozen=True)
class FolderLayout:
    """How a format without an annotation sheet reads its folder tree (SMIC-HS).

    Attributes:
        hint: the layout as messages show it, e.g. ``'HS/s{N}/micro/...'``.
        find: the dataset folder at or just under a path; None when the path does not have this layout.
        scan: ``(path, fps) -> FolderScan``: one record per clip folder (``apex`` None, ``path`` set);
            raises ``AnnotationError`` when the path is not this layout or holds no clip.
    """

    hint: str
    find: Callable[[Path], Path | None]
    scan: Callable[[Path, float | None], FolderScan]


def ids_from_filename(records: Sequence[Record]) -> list[str]:
    """The clip id is the Filename cell (unique within the dataset)."""
    return [r.filename for r in records]


def lower_case_text(value: object) -> str:
    """An emotion cell as lower-case text (``'Happiness'`` -> ``'happiness'``; blank -> ``''``)."""
    return cell_text(value).lower()


class SubfolderLookup:
    """Case-insensitive lookup of sub-folders, listing each folder once."""

    def __init__(self) -> None:
        self._cache: dict[Path, dict[str, str]] = {}

    def find(self, parent: Path, name: str) -> Path:
        """``parent/<name as spelled on disk>``; ``parent/name`` when no sub-folder matches."""
        if parent not in self._cache:
            try:
                self._cache[parent] = {e.name.lower(): e.name for e in os.scandir(parent) if e.is_dir()}
            except OSError:
                self._cache[parent] = {}
        return parent / self._cache[parent].get(name.lower(), name)


#: ``(root, record, lookup) -> the clip folder`` of formats whose layout is a formula of the row.
ClipFolderFormula = Callable[[Path, Record, SubfolderLookup], Path]


def locate_by_formula(formula: ClipFolderFormula, ctx: RowContext, root: Path, records: Sequence[Record], *,
                      check_files: bool, root_given: bool) -> Located:
    """Paths of formats whose clip folder is a formula of the row: ``partial(locate_by_formula, formula)``."""
    dirs = SubfolderLookup()
    return Located([os.path.abspath(formula(root, r, dirs)) for r in records], [])


def formula_locator(formula: ClipFolderFormula) -> ClipLocator:
    """The :class:`ClipLocator` of a clip-folder formula."""
    return partial(locate_by_formula, formula)


@dataclass(frozen=True)
class Format:
    """One annotation format (a dataset's official release, or our CSV).

    Attributes:
        name: the ``format=`` value and the ``dataset`` column's value, e.g. ``'casme2'``.
        title: the dataset as its authors write it (``'CAS(ME)^3'``), in messages.
        default_fps: frame rate of rows without an fps cell; None when the sheet must give it.
        emotions: the emotion names (lower case) its sheets use, others are reported; None accepts any.
        required: fields a sheet must have (``'emotion'`` is waived by ``require_emotion=False``).
        column_names: field -> the column as this format's files spell it, naming a missing column.
        clip_ids: records -> their clip ids (unique within the dataset), in order.
        locate: where each clip's frames or video live (sheet formats); None for folder formats.
        folder: how a format without a sheet reads its folder tree; None for sheet formats.
        file_name: auto-detection: matches the annotation file's lower-case name.
        header_signature: auto-detection: True when a (normalised) header has this format's distinctive columns.
        signature_rank: formats of the lowest rank whose signature matches win: our CSV's ``path`` + ``clip``
            are decisive (0); columns only one dataset has (1); a fallback when nothing else matches (2).
        aliases: field -> accepted header names (normalised), in priority order.
        find_header: ``(rows, aliases) -> index`` of the header row, None when there is none.
        normalise_emotion: an emotion cell -> the table's emotion.
        zero_offset_is_missing: an offset of 0 means a missing offset (an error), not frame 0.
        fps_from_sheet_only: the sheet's fps column is the only frame rate; ``fps=`` is ignored with a warning.
        locator_reports_unfound: ``locate`` reports the clips it cannot find, so an empty path is no new error.
        flow_required: the fields a sheet must have when it has a ``flow_path`` column (precomputed apex
            flows: frames, phases and fps may then be blank); None when the format has no such column.
        flows_only: every row is a precomputed flow (its locator sets ``flow_path``): no frames, phases or fps.
        subject_ids: records -> their subject ids, when the sheet's numbers are not unique (a composite of
            datasets); None keeps the parsed numbers.
        normalise_dataset: a ``dataset`` cell -> the registry's dataset name.
        headerless_fields: the fields of the columns, in order, of files that have no header row (the
            composite's public label list); None when a header row is required.
    """

    name: str
    title: str
    default_fps: float | None
    emotions: frozenset[str] | None
    required: tuple[str, ...]
    column_names: Mapping[str, str]
    clip_ids: Callable[[Sequence[Record]], list[str]] = ids_from_filename
    locate: ClipLocator | None = None
    folder: FolderLayout | None = None
    file_name: re.Pattern[str] | None = None
    header_signature: Callable[[frozenset[str]], bool] | None = None
    signature_rank: int = 1
    aliases: Aliases = field(default_factory=lambda: COLUMN_ALIASES)
    find_header: Callable[[Sequence[Sequence[object]], Aliases], int | None] = find_header_row
    normalise_emotion: Callable[[object], str] = lower_case_text
    zero_offset_is_missing: bool = False
    fps_from_sheet_only: bool = False
    locator_reports_unfound: bool = False
    flow_required: tuple[str, ...] | None = None
    flows_only: bool = False
    subject_ids: Callable[[Sequence[Record]], list[int]] | None = None
    normalise_dataset: Callable[[object], str] = lower_case_text
    headerless_fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"format name {self.name!r}: expected lower-case letters, digits and underscores")
        if (self.locate is None) == (self.folder is None):
            raise ValueError(f"format {self.name!r}: give exactly one of locate (a sheet format) or folder")
        unknown = [f for f in (*self.required, *self.column_names) if f not in self.aliases]
        if unknown:
            raise ValueError(f"format {self.name!r}: fields without aliases: {', '.join(unknown)}")
        unnamed = [f for f in self.required if f not in self.column_names]
        if unnamed:
            raise ValueError(f"format {self.name!r}: required fields without a column name: {', '.join(unnamed)}")
        object.__setattr__(self, "column_names", MappingProxyType(dict(self.column_names)))
