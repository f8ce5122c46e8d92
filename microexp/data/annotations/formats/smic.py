"""SMIC-HS: no sheet; the *folder* ``HS`` (or its parent) is read, one clip per folder.

``HS/s{N}/micro/{emotion}/{clip}/reg_*.bmp``; onset/offset = first/last frame number, apex = middle
(estimated, SMIC has no apex labels); 100 fps; clip id = the clip folder's name. Problems have
``row=None`` and name the clip.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from microexp.data.annotations.cells import list_frame_files, normalise_subject, numeric_key
from microexp.data.annotations.format import FolderLayout, FolderScan, Format
from microexp.data.annotations.records import Record
from microexp.data.annotations.results import Problem
from microexp.errors import AnnotationError

_EMOTION_DIRS = ("negative", "positive", "surprise")


def find_hs_folder(path: Path) -> Path | None:
    """The HS folder: ``path`` itself when it holds ``s{N}/micro``, or ``path/HS``; None otherwise."""
    for candidate in (path, path / "HS", path / "hs"):
        if candidate.is_dir() and any(
                re.fullmatch(r"s\d+", d.name, re.IGNORECASE) and (d / "micro").is_dir()
                for d in candidate.iterdir() if d.is_dir()):
            return candidate
    return None


def clip_dirs(hs: Path) -> list[tuple[int, str, Path]]:
    """(subject, emotion, clip folder) for every clip folder, in subject/emotion/name order."""
    clips = []
    subjects = [d for d in hs.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name, re.IGNORECASE)]
    for sdir in sorted(subjects, key=lambda d: numeric_key(d.name)):
        micro = sdir / "micro"
        if not micro.is_dir():
            continue
        for edir in sorted((d for d in micro.iterdir() if d.is_dir()), key=lambda d: d.name.lower()):
            for cdir in sorted((d for d in edir.iterdir() if d.is_dir()), key=lambda d: numeric_key(d.name)):
                clips.append((normalise_subject(sdir.name), edir.name.lower(), cdir))
    return clips


def scan_hs(path: Path, fps: float | None) -> FolderScan:
    """One record per ``s{N}/micro/{emotion}/{clip}`` folder; a folder without frames is an error.

    Raises:
        AnnotationError: ``path`` is not an HS folder (or its parent), or it has no clip folder.
    """
    hs = find_hs_folder(path)
    if hs is None:
        raise AnnotationError(f"{path}: not a SMIC-HS folder (expected HS/s{{N}}/micro/"
                              f"{{{','.join(_EMOTION_DIRS)}}}/{{clip}}/reg_*.bmp)")
    found = clip_dirs(hs)
    if not found:
        raise AnnotationError(f"{hs}: no clip folders under s{{N}}/micro/{{emotion}}/")
    records, problems = [], []
    for subject, emotion, cdir in found:
        numbers = [n for n, _ in list_frame_files(cdir)]
        if not numbers:
            problems.append(Problem(str(cdir), None, "path", str(cdir), "clip folder has no image frames",
                                    "error", cdir.name))
            continue
        records.append(Record(row=None, subject_text=f"s{subject}", subject=subject, filename=cdir.name,
                              onset=numbers[0], apex=None, offset=numbers[-1], fps=fps,  # type: ignore[arg-type]
                              emotion=emotion, aus="", dataset="smic", path=os.path.abspath(cdir),
                              clip=cdir.name))
    return FolderScan(hs, records, problems)


SMIC = Format(
    name="smic",
    title="SMIC-HS",
    default_fps=100.0,
    emotions=frozenset({"negative", "positive", "surprise"}),
    required=(),
    column_names={},
    folder=FolderLayout(hint="HS/s{N}/micro/...", find=find_hs_folder, scan=scan_hs),
)
