"""The annotation tables of a generated dataset: our clip CSV, the ground truth and the DFME-style sheet.

An unlabeled pool's ``annotations.csv`` (``microexp synth --unlabeled N``) has the same columns with blank
``onset``, ``apex``, ``offset``, ``emotion`` and ``aus``, as a real pool of unannotated clips would; its
``ground_truth.csv`` keeps the true ones (``annotated_emotion`` blank).

The rows are pure functions of the plan (plus the clip paths written), so the CSV tables are byte-identical
for a seed; so are the sheet's cells (openpyxl stamps its save time into the workbook's properties whatever
``modified`` is set to, so the .xlsx file's bytes differ between runs).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from microexp.synth.plan import ClipSpec, face_position

__all__ = [
    "CSV_COLUMNS",
    "DFME_COLUMNS",
    "DFME_SHEET_NAME",
    "annotation_rows",
    "csv_text",
    "ground_truth_rows",
    "write_dfme_sheet",
]


DFME_SHEET_NAME = "DFME_data_coding.xlsx"
DFME_COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Emotion", "fps")
CSV_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "fps", "emotion", "aus", "first_frame",
               "dataset")


def csv_text(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with a header of ``columns`` and ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def annotation_rows(specs: Sequence[ClipSpec], paths: dict[int, str]) -> list[dict[str, object]]:
    """The rows of ``annotations.csv`` (:data:`CSV_COLUMNS`); ``paths``: clip index -> path under OUT.

    Clips of the unlabeled pool (``spec.pool``) get blank phases, emotion and AUs.
    """
    return [
        {"subject": s.subject, "clip": s.clip, "path": paths[s.index], "onset": "" if s.pool else s.onset,
         "apex": "" if s.pool else s.apex, "offset": "" if s.pool else s.offset, "fps": s.fps, "emotion": s.label,
         "aus": "" if s.pool else s.aus, "first_frame": 1, "dataset": "microexp"}
        for s in specs
    ]


def ground_truth_rows(specs: Sequence[ClipSpec], size: int, uncropped: tuple[int, int] | None) -> list[dict[str, object]]:
    """The rows of ``ground_truth.csv``: true emotion, flip, timing, AU amplitudes (and the face box if uncropped)."""
    rows = [
        {"clip": s.clip, "subject": s.subject, "emotion": s.emotion, "annotated_emotion": s.label,
         "label_flipped": int(s.label_flipped), "aus": s.aus, "onset": s.onset, "apex": s.apex, "offset": s.offset,
         "num_frames": s.num_frames, "fps": s.fps, "duration_ms": f"{s.duration_ms:.1f}",
         "au_amplitudes_px128": ";".join(f"{a.code}:{a.amplitude:.3f}" for a in s.action_units)}
        for s in specs
    ]
    if uncropped is not None:
        for row, s in zip(rows, specs):
            row["face_x"], row["face_y"] = face_position(s.seed, s.subject, size, uncropped, pool=s.pool)
            row["face_size"] = size
    return rows


def write_dfme_sheet(path: Path, specs: Sequence[ClipSpec]) -> None:
    """Write the annotated clips as a DFME-style coding sheet (:data:`DFME_COLUMNS`) to ``path``."""
    import datetime

    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(list(DFME_COLUMNS))
    for s in specs:
        sheet.append([f"sub{s.subject:04d}", s.clip, s.onset, s.apex, s.offset, s.aus, s.label, s.fps])
    fixed = datetime.datetime(2000, 1, 1)
    workbook.properties.created = fixed
    workbook.properties.modified = fixed
    workbook.save(path)

