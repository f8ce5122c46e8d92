"""Sheet rows -> :class:`~microexp.data.annotations.records.Record`: cell parsing and the missing apex.

Pure: a row's cells (field -> raw value) and the :class:`RowContext` in, a record and its problems out.
"""

from __future__ import annotations

from typing import Mapping

from microexp.data.annotations.cells import cell_text, estimate_apex, is_blank, normalise_subject, parse_fps
from microexp.data.annotations.cells import parse_frame_number
from microexp.data.annotations.formats import DATASET_NAMES
from microexp.data.annotations.records import Record, RowContext
from microexp.data.annotations.results import Problem
from microexp.data.aus import invalid_au_tokens, normalise_action_descriptors, normalise_aus

__all__ = ["estimate_missing_apex", "parse_row"]


def _parse_required(ctx: RowContext, row: int, cells: Mapping[str, object], problems: list[Problem]
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
    flow_only = _flow_only(ctx, cells)
    blank: list[str] = []
    for fld in ("onset", "offset"):
        try:
            out[fld] = parse_frame_number(cells.get(fld))
            if out[fld] is None and flow_only:
                out[fld] = 0  # a precomputed flow needs no frames: the phases are not used
            elif out[fld] is None and not ctx.require_labels:
                out[fld] = 0  # a placeholder: an unlabelled clip's phases come from its frames (phases.py)
                blank.append(fld)
            elif out[fld] is None:
                problems.append(ctx.problem(row, fld, cells.get(fld), f"missing {fld} frame number"))
            elif fld == "offset" and out[fld] == 0 and ctx.format.zero_offset_is_missing:
                out[fld] = None
                problems.append(ctx.problem(row, fld, cells.get(fld), f"missing offset frame number ({ctx.format.name} "
                                            f"writes a missing offset as {ctx.headers.get(fld, fld)} = 0)"))
        except ValueError as exc:
            out[fld] = None
            problems.append(ctx.problem(row, fld, cells.get(fld), str(exc)))
    ok = "subject" in out and out["filename"] and out["onset"] is not None and out["offset"] is not None
    if blank:
        out["blank_phases"] = tuple(blank)
    return out if ok else None


def _flow_only(ctx: RowContext, cells: Mapping[str, object]) -> bool:
    """A row with a precomputed flow file and no frames: its phases and fps may be blank."""
    return ctx.format.flows_only or (not is_blank(cells.get("flow_path")) and is_blank(cells.get("path")))


def _parse_optional(ctx: RowContext, row: int, cells: Mapping[str, object], problems: list[Problem]
                    ) -> dict[str, object] | None:
    """Apex, fps, emotion, AUs, dataset and first_frame; None when one of them is unusable."""
    out: dict[str, object] = {"apex": None, "fps": ctx.default_fps, "first_frame": 0, "dataset": ctx.format.name}
    ok = True
    try:
        out["apex"] = parse_frame_number(cells.get("apex"))
        if out["apex"] is None and _flow_only(ctx, cells) and is_blank(cells.get("onset")):
            out["apex"] = 0  # no frames, no phases: nothing to estimate
    except ValueError as exc:
        problems.append(ctx.problem(row, "apex", cells.get("apex"), str(exc)))
        ok = False
    if "fps" in cells and not (_flow_only(ctx, cells) and is_blank(cells["fps"])):
        try:
            out["fps"] = parse_fps(cells["fps"])
        except ValueError as exc:
            problems.append(ctx.problem(row, "fps", cells["fps"], str(exc)))
            ok = False
    out["emotion"] = ctx.format.normalise_emotion(cells.get("emotion"))
    bad_aus = invalid_au_tokens(cells.get("aus"))
    if bad_aus:
        problems.append(ctx.problem(row, "aus", cells.get("aus"), f"ignored tokens that are not AU codes: "
                                    f"{', '.join(map(repr, bad_aus))}", severity="warning"))
    out["aus"] = normalise_aus(cells.get("aus"), strict=False)
    descriptors = [normalise_action_descriptors(cells.get(c)) for c in ("aus", "action_descriptors")]
    out["action_descriptors"] = normalise_action_descriptors("+".join(d for d in descriptors if d))
    if not is_blank(cells.get("first_frame")):
        try:
            out["first_frame"] = parse_frame_number(cells["first_frame"]) or 0
        except ValueError as exc:
            problems.append(ctx.problem(row, "first_frame", cells["first_frame"], str(exc)))
            ok = False
    if not is_blank(cells.get("dataset")):
        out["dataset"] = ctx.format.normalise_dataset(cells["dataset"])
        if out["dataset"] not in DATASET_NAMES:
            problems.append(ctx.problem(row, "dataset", cells["dataset"],
                                        f"unknown dataset; expected one of {', '.join(DATASET_NAMES)}"))
            ok = False
    return out if ok else None


def parse_row(ctx: RowContext, row: int, cells: Mapping[str, object]) -> tuple[Record | None, list[Problem]]:
    """One sheet row -> a record (None when a value cannot be used) and its cell-level problems.

    Args:
        ctx: the file's context.
        row: the spreadsheet row number.
        cells: field -> raw cell, for the fields the header has.
    """
    problems: list[Problem] = []
    if is_blank(cells.get("subject")) and is_blank(cells.get("filename")):
        message = "row ignored: no subject and no clip name (a note or a stray cell?)"
        return None, [ctx.problem(row, "subject", "", message, severity="warning")]
    if "flow_path" in cells and is_blank(cells["flow_path"]) and is_blank(cells.get("path")):
        message = "neither frames (path) nor a precomputed apex flow (flow_path): give one of them"
        return None, [ctx.problem(row, "flow_path", "", message)]
    required = _parse_required(ctx, row, cells, problems)
    optional = _parse_optional(ctx, row, cells, problems)
    if required is None or optional is None:
        return None, problems
    record = Record(row=row, subject_text=cell_text(cells["subject"]), path=cell_text(cells.get("path")),
                    flow_path=cell_text(cells.get("flow_path")), **required, **optional)  # type: ignore[arg-type]
    return record, problems


def estimate_missing_apex(ctx: RowContext, record: Record) -> Problem | None:
    """Set a missing apex to the middle of onset..offset (``apex_estimated``); the warning, else None.

    A clip whose onset or offset is still blank (``record.blank_phases``) is left alone: its apex is set
    when its phases are filled from its frames.
    """
    if record.apex is not None or record.blank_phases:
        return None
    record.apex = estimate_apex(record.onset, record.offset)
    record.apex_estimated = True
    return ctx.problem(record.row, "apex", "", f"missing apex; set to the middle of onset..offset "
                       f"({record.onset}..{record.offset}) = {record.apex}", severity="warning", clip=record.clip)
