"""Checks over parsed records: frame order, emotions, duplicate ids, frame files and (optionally) media.

Each check returns :class:`~microexp.data.annotations.results.Problem` objects and changes nothing; only
:func:`validate_records` touches the file system (and :func:`check_media` opens every clip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from microexp.data.apex_flow import FlowFileError, read_flow_file
from microexp.data.annotations.cells import list_frame_files
from microexp.data.annotations.formats import DATASET_FORMATS
from microexp.data.annotations.records import Record, RowContext
from microexp.data.annotations.results import Problem
from microexp.data.video import check_clip
from microexp.errors import VideoReadError, user_message

#: the MEGC 2019 composite's classes: its public label lists give them instead of each dataset's emotions
COMPOSITE_CLASSES = frozenset({"negative", "positive", "surprise"})

__all__ = ["COMPOSITE_CLASSES", "MediaCheck", "check_duplicates", "check_emotion", "check_flow_file", "check_frames", "check_media",
           "check_order", "validate_records"]


def check_order(ctx: RowContext, record: Record) -> list[Problem]:
    """onset <= apex <= offset."""
    if record.onset > record.offset:
        return [ctx.problem(record.row, "offset", record.offset,
                            f"offset {record.offset} is before onset {record.onset}", clip=record.clip)]
    if not record.onset <= record.apex <= record.offset:
        return [ctx.problem(record.row, "apex", record.apex, f"apex {record.apex} is outside onset..offset "
                            f"{record.onset}..{record.offset}", clip=record.clip)]
    return []


def check_emotion(ctx: RowContext, record: Record) -> list[Problem]:
    """An emotion is given (when required) and is one its dataset's sheets use (the ``dataset`` column's)."""
    if not record.emotion:
        if not ctx.require_emotion:
            return []
        return [ctx.problem(record.row, "emotion", "", "missing emotion", clip=record.clip)]
    dataset = DATASET_FORMATS.get(record.dataset)
    known = dataset.emotions if dataset is not None else None
    if known is not None and record.emotion not in known | COMPOSITE_CLASSES:
        return [ctx.problem(record.row, "emotion", record.emotion, f"unknown emotion for {record.dataset}; "
                            f"known: {', '.join(sorted(known))}", clip=record.clip)]
    return []


def check_duplicates(ctx: RowContext, records: Sequence[Record]) -> list[Problem]:
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


def check_frames(ctx: RowContext, record: Record, listings: dict[str, list[int] | None]) -> list[Problem]:
    """The clip's frame folder has frames onset..offset, or its video file exists (not decoded).

    Args:
        listings: frame numbers by folder (None: not a folder), filled as folders are listed.
    """
    path = record.path
    if not path and record.flow_path:
        return []  # a precomputed flow instead of frames (check_flow_file reads it)
    if not path:
        if ctx.format.locator_reports_unfound:  # already reported by the format's locator
            return []
        return [ctx.problem(record.row, "path", "", "no clip path and no flow_path (expected frames, a video or "
                            "a precomputed apex flow file)", clip=record.clip)]
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


def check_flow_file(ctx: RowContext, record: Record) -> list[Problem]:
    """The row's ``flow_path`` file reads as an apex flow (8-bit 3-channel image or float ``.npy``).

    Flow files are small (a 28x28 image), so each one is read in full here rather than when training.
    """
    if not record.flow_path:
        return []
    try:
        read_flow_file(record.flow_path)
    except FlowFileError as exc:
        return [ctx.problem(record.row, "flow_path", record.flow_path, str(exc).removeprefix(f"{record.flow_path}: "),
                            clip=record.clip)]
    return []


@dataclass(frozen=True)
class MediaCheck:
    """Open every clip's files (``load_clip_table(check_media=True)``): how, and whether to show a bar."""

    backend: str = "auto"
    progress: bool | None = None


def check_media(ctx: RowContext, records: Sequence[Record], media: MediaCheck) -> list[Problem]:
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


def validate_records(ctx: RowContext, records: Sequence[Record], check_files: bool,
                     media: MediaCheck | None = None) -> list[Problem]:
    """Every check over the records: duplicates first, then per record order, emotion and files; then media.

    Args:
        check_files: check each clip's frames (or video file); otherwise annotations only.
        media: (with ``check_files``) also open the clips that passed every other check.
    """
    problems = check_duplicates(ctx, records)
    listings: dict[str, list[int] | None] = {}
    readable = []
    for r in records:
        found = check_order(ctx, r) + check_emotion(ctx, r)
        if check_files:
            files = check_frames(ctx, r, listings) + check_flow_file(ctx, r)
            if not files and not found and r.path:
                readable.append(r)
            found += files
        problems += found
    if check_files and media is not None:
        problems += check_media(ctx, readable, media)
    return problems
