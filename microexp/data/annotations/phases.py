"""The phases of unlabelled clips (``load_clip_table(labels_required=False)``), filled from their frames.

A pool of unannotated clips (``microexp synth --unlabeled N``, or real footage) has no onset, apex or
offset. Each blank one is filled from the clip itself: ``onset`` = its first frame number, ``offset`` = its
last, and a blank ``apex`` = the middle, ``(onset + offset) // 2`` (``apex_estimated=True``), so the whole
clip is the span. Frame numbers are the table's own: a frame folder's come from its file names, a video's
count from ``first_frame`` (our CSV writes 1: ``onset=1, offset=frames``). No problem is reported for a
filled clip; a clip whose frames cannot be counted gets one error and leaves the table.

Counting needs the files: with ``check_files=False`` a blank phase is an error naming the column (the
frame count is unknown there), so no clip ever gets placeholder phases.
"""

from __future__ import annotations

import os
from typing import Sequence

from microexp.data.annotations.cells import estimate_apex, list_frame_files
from microexp.data.annotations.records import Record, RowContext
from microexp.data.annotations.results import Problem
from microexp.data.video import open_video
from microexp.errors import VideoReadError, user_message

__all__ = ["clip_frame_span", "fill_blank_phases"]


def clip_frame_span(path: str, first_frame: int = 0) -> tuple[int, int]:
    """``(first, last)`` frame numbers of a clip: a frame folder's file numbers, or a video's frame count
    numbered from ``first_frame`` (its header is read; nothing is decoded).

    Raises:
        VideoReadError: the folder has no image frames, or the video has none or cannot be opened.
        FileNotFoundError: nothing at ``path``.
    """
    if os.path.isdir(path):
        numbers = [n for n, _ in list_frame_files(path)]
        if not numbers:
            raise VideoReadError(f"{path}: frame folder has no image frames")
        return numbers[0], numbers[-1]
    with open_video(path, first_frame=first_frame) as reader:
        count = len(reader)
    if count < 1:
        raise VideoReadError(f"{path}: the video has no frames")
    return first_frame, first_frame + count - 1


def fill_blank_phases(ctx: RowContext, records: Sequence[Record], *, check_files: bool
                      ) -> tuple[list[Record], list[Problem]]:
    """Fill each record's blank onset/offset (and then a blank apex) from its clip's frames.

    Args:
        ctx: the file's context (problems name its columns).
        records: parsed records, paths located; those without ``blank_phases`` pass unchanged.
        check_files: the files may be read; False: a blank phase is an error (the frame count is unknown).

    Returns:
        The records that have their phases, in order, and one error per record that could not be filled
        (it is left out of the table, as an unparsable row is).
    """
    kept, problems = [], []
    for r in records:
        if not r.blank_phases:
            kept.append(r)
            continue
        fld = r.blank_phases[0]
        if not check_files:
            problems.append(ctx.problem(r.row, fld, "", f"blank {fld}: an unlabelled clip's phases are filled from "
                                        "its frames, which check_files=False does not read; load with "
                                        "check_files=True or fill onset, apex and offset", clip=r.clip))
            continue
        if not r.path:
            problems.append(ctx.problem(r.row, "path", "", f"blank {fld} and no clip path to count the frames of",
                                        clip=r.clip))
            continue
        try:
            first, last = clip_frame_span(r.path, r.first_frame)
        except (VideoReadError, OSError) as exc:
            problems.append(ctx.problem(r.row, "path", r.path, f"blank {fld}, and the clip's frames cannot be "
                                        f"counted: {user_message(exc)}", clip=r.clip))
            continue
        if "onset" in r.blank_phases:
            r.onset = first
        if "offset" in r.blank_phases:
            r.offset = last
        r.blank_phases = ()
        if r.apex is None:
            r.apex = estimate_apex(r.onset, r.offset)
            r.apex_estimated = True
        kept.append(r)
    return kept, problems
