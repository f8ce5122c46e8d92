"""Annotation readers: official micro-expression sheets (and our CSV) -> one normalised clip table.

``load_clip_table(path, format="auto", root=None, check_files=True)`` reads an annotation file, normalises
every row into the columns of :data:`COLUMNS` and validates it, returning a :class:`ClipTableResult`: the
table of every row that could be parsed and the list of :class:`Problem` found. Nothing is dropped
silently: ``result.resolve(strict=False)`` drops the rows with ``'error'`` problems and logs one warning per
dropped clip; ``resolve(strict=True)`` raises :class:`~microexp.errors.AnnotationError` instead.

Row numbers (``Problem.row`` and the index of ``result.table``) are numbered as a spreadsheet program shows
them: 1-based, header and description rows included (for CSV files: the line number). SMIC has no sheet:
its problems have ``row=None`` and name the clip.

Each format is one :class:`Format` record in :data:`DATASET_FORMATS` (``formats/<name>.py``); the generic
code consults only the record. Formats (``format=``), following the official releases (see
``docs/datasets.md``):

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

Unlabelled tables (``labels_required=False``; a pretraining pool such as ``microexp synth --unlabeled N``
writes): the emotion, AU and phase columns may be blank or absent; a blank emotion is ``''``, and blank
phases are the whole clip, counted from its frames (``phases``; needs ``check_files=True``).

Modules: ``cells`` (pure cell parsers), ``columns`` (aliases, header row), ``sheets`` (xlsx/csv -> rows),
``records`` (a parsed clip), ``format`` (the :class:`Format` record and shared rules), ``formats/`` (one
record per dataset, the registry), ``rows`` (rows -> records), ``phases`` (an unlabelled clip's phases from
its frames), ``validate`` (checks), ``results`` (:class:`Problem`, :class:`ClipTableResult`), ``table``
(``load_clip_table``, ``detect_format``).
"""

from __future__ import annotations

from microexp.data.annotations.cells import (
    cell_text,
    estimate_apex,
    list_frame_files,
    normalise_column_name,
    normalise_subject,
    parse_fps,
    parse_frame_number,
)
from microexp.data.annotations.format import Format
from microexp.data.annotations.formats import DATASET_FORMATS, DATASET_NAMES, DEFAULT_FPS, FORMATS, KNOWN_EMOTIONS
from microexp.data.annotations.records import COLUMNS
from microexp.data.annotations.results import ClipTableResult, Problem
from microexp.data.annotations.table import detect_format, load_clip_table
from microexp.data.video import frame_number_from_name

__all__ = [
    "COLUMNS",
    "DATASET_FORMATS",
    "DATASET_NAMES",
    "DEFAULT_FPS",
    "FORMATS",
    "KNOWN_EMOTIONS",
    "ClipTableResult",
    "Format",
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
