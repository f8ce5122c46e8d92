"""One parsed clip (:class:`Record`) and what parsing and checking rows need to know (:class:`RowContext`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from microexp.data.annotations.cells import cell_text
from microexp.data.annotations.results import Problem

if TYPE_CHECKING:  # the Format's rules take records: imported for the annotation only
    from microexp.data.annotations.format import Format

__all__ = ["COLUMNS", "Record", "RowContext"]

#: Columns of a clip table, in order.
COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "first_frame", "fps", "emotion", "aus",
           "dataset", "apex_estimated", "action_descriptors", "flow_path")


@dataclass
class Record:
    """One parsed clip before it becomes a table row.

    Filled in stages: parsing gives the cells (``apex`` None when missing), then the format's rules give
    ``clip`` and ``path``, then the missing apex is estimated. An unlabelled clip's blank onset/offset
    (``load_clip_table(labels_required=False)``) are named in ``blank_phases`` (their value 0 is a
    placeholder) until they are filled from the clip's frames (:mod:`~microexp.data.annotations.phases`).
    """

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
    #: a precomputed onset->apex flow file (``apex_flow`` models); '' when the clip has none
    flow_path: str = ""
    #: the phase fields ('onset', 'offset') left blank in an unlabelled table, still to fill from the frames
    blank_phases: tuple[str, ...] = ()

    def as_row(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in COLUMNS}


@dataclass(frozen=True)
class RowContext:
    """What parsing and checking rows need to know about the file.

    Attributes:
        file: the annotation file (SMIC: the HS folder), as problems name it.
        format: the file's format.
        headers: field -> the header text the file uses (so problems name columns as the file does).
        default_fps: the frame rate of rows without an fps cell.
        require_emotion: a clip without an emotion is an error.
        require_labels: a clip without onset or offset is an error; False (an unlabelled table): blank
            phases are filled from the clip's frames, and the label columns may be absent.
    """

    file: str
    format: Format
    headers: Mapping[str, str]
    default_fps: float | None
    require_emotion: bool = True
    require_labels: bool = True

    def problem(self, row: int | None, fld: str, value: object, message: str, severity: str = "error",
                clip: str | None = None) -> Problem:
        return Problem(self.file, row, self.headers.get(fld, fld), cell_text(value), message, severity, clip)
