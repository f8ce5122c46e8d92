"""What reading annotations returns: the clip table and the :class:`Problem` list, applied by ``resolve``."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from microexp.errors import AnnotationError

__all__ = ["ClipTableResult", "Problem"]

# the package's name, as users and tests configure it (the code lives in submodules)
logger = logging.getLogger("microexp.data.annotations")

_SHOWN_ERRORS = 5


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
        table: every row that could be parsed, columns :data:`~microexp.data.annotations.COLUMNS`; the index
            is the source row (spreadsheet numbering) for sheets and CSVs, 1..N for SMIC.
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
