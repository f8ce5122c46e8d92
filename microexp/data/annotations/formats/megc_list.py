"""The MEGC 2019 composite's public label list, with its precomputed apex-flow images.

The public releases of STSTNet, HTNet and their successors ship one onset->apex flow image per clip
(R, G, B = u, v, strain, min-max scaled to 0-255) and a label list (CSV) with columns like ``dataset, sub,
filename_o, label``: ``label`` 0 negative, 1 positive, 2 surprise (names are accepted too); ``dataset``
casme2, samm or smic (``CASME II``, ``CASME_2``, ``SMIC-HS`` spelled as they come). The most copied list,
``combined_3class_gt.csv``, has no header row: a file whose first row has four cells and no known column
name is read as dataset, subject, filename, label. There are no frames, phases or fps: every row feeds
an ``apex_flow`` model from its file.

- **Flow files**: each clip's image (or ``.npy``) is found by its ``filename_o`` anywhere under ``root``
  (default: the list's folder; one walk), by file stem, any image suffix; failing that, by
  ``{sub}_{filename_o}`` (HTNet's release names its images ``sub11_EP15_04f.png``, ``006_006_1_2.png``).
  When several files share the stem, the one with the subject's folder in its path wins; otherwise the
  row is an error naming them.
- **Subjects**: ids collide across the three datasets (CASME II ``sub01``, SAMM ``006`` and SMIC ``s1``
  are all 1), so each dataset gets its own range: casme2 ``10000 + n``, samm ``20000 + n``, smic
  ``30000 + n`` (the ranges of the composite walkthrough in docs/walkthroughs.md); other datasets follow
  in the registry's order.
- **Clip id**: ``'{dataset}/{sub}/{filename_o}'`` (CASME II filenames repeat across subjects).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from microexp.data.annotations.cells import cell_text, is_blank
from microexp.data.annotations.columns import COLUMN_ALIASES
from microexp.data.annotations.format import Format, Located, lower_case_text
from microexp.data.annotations.records import Record, RowContext

#: the composite's label numbers, as the public lists write them
COMPOSITE_LABELS = ("negative", "positive", "surprise")
#: subject-id range of each dataset of the composite (the rest follow at 40000, 50000, ...)
SUBJECT_RANGES = {"casme2": 10_000, "samm": 20_000, "smic": 30_000}
_FLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy"}


def composite_label(value: object) -> str:
    """``0``/``1``/``2`` (or ``'0'``, ``0.0``) -> negative/positive/surprise; a name -> its lower case."""
    text = cell_text(value)
    if re.fullmatch(r"\d+(\.0+)?", text) and int(float(text)) < len(COMPOSITE_LABELS):
        return COMPOSITE_LABELS[int(float(text))]
    return lower_case_text(value)


def composite_subjects(records: Sequence[Record]) -> list[int]:
    """Subject ids made unique per dataset (see the module docstring)."""
    from microexp.data.annotations.formats import DATASET_NAMES

    others = [n for n in DATASET_NAMES if n not in SUBJECT_RANGES]
    base = {**SUBJECT_RANGES, **{n: 10_000 * (len(SUBJECT_RANGES) + 1 + i) for i, n in enumerate(others)}}
    return [base.get(r.dataset, 0) + r.subject for r in records]


def composite_ids(records: Sequence[Record]) -> list[str]:
    return [f"{r.dataset}/{r.subject_text}/{r.filename}" for r in records]


def index_flow_files(root: Path) -> dict[str, list[str]]:
    """Walk ``root`` once: flow files (images, ``.npy``) by file stem."""
    found: dict[str, list[str]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in _FLOW_SUFFIXES:
                found[stem].append(os.path.join(dirpath, name))
    return found


def locate_flow_files(ctx: RowContext, root: Path, records: Sequence[Record], *, check_files: bool,
                      root_given: bool) -> Located:
    """Each row's flow file by its ``filename_o`` under ``root``; a missing or ambiguous one is an error."""
    if not (check_files or (root_given and root.is_dir())):
        return Located(["" for _ in records], [])
    index = index_flow_files(root)
    problems = []
    for r in records:
        hits = index.get(r.filename) or index.get(f"{r.subject_text}_{r.filename}", [])
        if len(hits) > 1:
            in_subject = [h for h in hits if r.subject_text in Path(h).parts]
            hits = in_subject if len(in_subject) == 1 else hits
        if len(hits) == 1:
            r.flow_path = os.path.abspath(hits[0])
        elif not hits:
            problems.append(ctx.problem(r.row, "filename", r.filename, f"no flow file named {r.filename!r} "
                                        f"(.png, .jpg, .npy, ...) anywhere under {os.path.abspath(root)}", clip=r.clip))
        else:
            problems.append(ctx.problem(r.row, "filename", r.filename, f"{len(hits)} flow files named "
                                        f"{r.filename!r} under {root}: {', '.join(hits[:3])}", clip=r.clip))
    return Located(["" for _ in records], problems if check_files else [])


def has_composite_columns(names: frozenset[str]) -> bool:
    """The public lists' ``filename_o`` and ``label``."""
    return {"filenameo", "label"} <= names


def dataset_name(value: object) -> str:
    """A dataset cell as the registry names it: ``'CASME II'``, ``'CASME_2'`` -> casme2; ``'SMIC-HS'`` -> smic."""
    if is_blank(value):
        return ""
    key = re.sub(r"[^a-z0-9]", "", cell_text(value).lower())
    return {"casmeii": "casme2", "smichs": "smic", "sammv2": "samm"}.get(key, key)


MEGC_LIST = Format(
    name="megc_list",
    title="MEGC 2019 composite label list",
    default_fps=None,
    emotions=frozenset(COMPOSITE_LABELS),
    required=("subject", "filename", "emotion", "dataset"),
    column_names={"subject": "sub", "filename": "filename_o", "emotion": "label", "dataset": "dataset"},
    clip_ids=composite_ids,
    locate=locate_flow_files,
    file_name=re.compile(r"combined.*3.*class|megc.*(list|label)"),
    header_signature=has_composite_columns,
    signature_rank=1,
    aliases={**COLUMN_ALIASES, "filename": ("filenameo",) + COLUMN_ALIASES["filename"],
             "emotion": ("label",) + COLUMN_ALIASES["emotion"], "dataset": ("dataset", "database", "db")},
    normalise_emotion=composite_label,
    locator_reports_unfound=True,
    flows_only=True,
    subject_ids=composite_subjects,
    normalise_dataset=dataset_name,
    headerless_fields=("dataset", "subject", "filename", "emotion"),
)
