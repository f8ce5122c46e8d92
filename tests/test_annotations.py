"""Annotation readers: each official format written in tmp_path, path resolution, validation, resolve()."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Sequence

import openpyxl
import pandas as pd
import pytest
from PIL import Image

from microexp.data.annotations import (
    COLUMNS,
    FORMATS,
    ClipTableResult,
    Problem,
    cell_text,
    detect_format,
    estimate_apex,
    frame_number_from_name,
    list_frame_files,
    load_clip_table,
    normalise_column_name,
    normalise_subject,
    parse_fps,
    parse_frame_number,
)
from microexp.errors import AnnotationError

# ------------------------------------------------------------------------------------------------ helpers

_IMAGE = Image.new("RGB", (4, 4), (10, 20, 30))


def write_frames(folder: Path, numbers: Sequence[int], pattern: str = "{:05d}.png") -> Path:
    """Tiny 4x4 frames named by ``pattern``."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        _IMAGE.save(folder / pattern.format(n))
    return folder


def write_xlsx(path: Path, rows: Sequence[Sequence[object]], sheet: str = "Sheet1") -> Path:
    """Rows (description, header, data) exactly as a spreadsheet shows them, from row 1."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if value is not None:
                ws.cell(row=r, column=c, value=value)
    wb.save(path)
    return path


def errors_of(result: ClipTableResult) -> list[Problem]:
    return [p for p in result.problems if p.severity == "error"]


def only_error(result: ClipTableResult) -> Problem:
    errors = errors_of(result)
    assert len(errors) == 1, [str(p) for p in errors]
    return errors[0]


# ------------------------------------------------------------------------------------------------ pure parsers


@pytest.mark.parametrize("value, expected", [("sub0001", 1), ("006", 6), ("spNO.1", 1), ("spNO.12", 12), ("s3", 3),
                                             ("S01", 1), (1.0, 1), (7, 7), ("1.0", 1), (" sub12 ", 12)])
def test_normalise_subject(value: object, expected: int) -> None:
    assert normalise_subject(value) == expected


@pytest.mark.parametrize("value", [None, "", "abc", 1.5, True, "s1s2", -2])
def test_normalise_subject_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="subject"):
        normalise_subject(value)


@pytest.mark.parametrize("value, expected", [(12, 12), (12.0, 12), ("12", 12), (" 12 ", 12), ("12.0", 12), (0, 0),
                                             (None, None), (math.nan, None), ("", None), ("/", None), ("-", None),
                                             (-1, None), ("-1", None), (-1.0, None)])
def test_parse_frame_number(value: object, expected: int | None) -> None:
    assert parse_frame_number(value) == expected


@pytest.mark.parametrize("value", ["abc", 1.5, -3, "12a", True])
def test_parse_frame_number_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="frame number"):
        parse_frame_number(value)


def test_parse_fps_and_apex_and_names() -> None:
    assert parse_fps(200) == 200.0 and parse_fps("500") == 500.0 and parse_fps("300 fps") == 300.0
    for bad in ("", None, "fast", 0, -5):
        with pytest.raises(ValueError, match="frame rate"):
            parse_fps(bad)
    assert estimate_apex(10, 20) == 15 and estimate_apex(10, 13) == 11 and estimate_apex(5, 5) == 5
    names = {normalise_column_name(n) for n in ("OnsetFrame", "Onset Frame", "onset_frame", " ONSET-frame ")}
    assert names == {"onsetframe"}
    assert cell_text(12.0) == "12" and cell_text(None) == "" and cell_text(" a ") == "a"


def test_frames_sort_numerically_never_lexically(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "clip", [10, 9, 100, 1], pattern="img{}.jpg")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "Thumbs.db").write_text("")
    assert list_frame_files(folder) == [(1, "img1.jpg"), (9, "img9.jpg"), (10, "img10.jpg"), (100, "img100.jpg")]
    assert frame_number_from_name("006_00123.jpg") == 123
    assert frame_number_from_name("reg_image046.bmp") == 46
    assert frame_number_from_name("readme.md") is None


# ------------------------------------------------------------------------------------------------ our CSV


def write_microexp(tmp_path: Path, rows: list[dict[str, object]] | None = None) -> Path:
    write_frames(tmp_path / "clips" / "sub0001" / "c1", range(1, 11))
    video = tmp_path / "clips" / "sub0002" / "c2.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"not decoded")
    rows = rows if rows is not None else [
        {"subject": 1, "clip": "c1", "path": "clips/sub0001/c1", "onset": 1, "apex": 5, "offset": 10, "fps": 200,
         "emotion": "happiness", "aus": "R12+6", "first_frame": "", "dataset": ""},
        {"subject": 2, "clip": "c2", "path": str(video), "onset": 1, "apex": "", "offset": 8, "fps": 500,
         "emotion": "Disgust", "aus": "", "first_frame": 1, "dataset": "dfme"},
    ]
    path = tmp_path / "annotations.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_microexp_csv(tmp_path: Path) -> None:
    res = load_clip_table(write_microexp(tmp_path))
    t = res.table
    assert tuple(t.columns) == COLUMNS
    assert list(t.index) == [2, 3]  # spreadsheet rows (header is row 1)
    assert t["subject"].tolist() == [1, 2] and t["subject"].dtype == "int64"
    assert t["path"].tolist() == [str(tmp_path / "clips/sub0001/c1"), str(tmp_path / "clips/sub0002/c2.mp4")]
    assert t["apex"].tolist() == [5, 4] and t["apex_estimated"].tolist() == [False, True]
    assert t["first_frame"].tolist() == [0, 1] and t["fps"].tolist() == [200.0, 500.0]
    assert t["emotion"].tolist() == ["happiness", "disgust"] and t["aus"].tolist() == ["6+12", ""]
    assert t["dataset"].tolist() == ["microexp", "dfme"]
    assert not errors_of(res)
    (warning,) = res.problems
    assert warning.severity == "warning" and warning.row == 3 and warning.field == "apex" and warning.clip == "c2"
    assert "middle" in warning.message and str(warning).startswith(f"{tmp_path / 'annotations.csv'} row 3")
    assert res.resolve(strict=True)["clip"].tolist() == ["c1", "c2"]


def test_microexp_root_and_annotations_only(tmp_path: Path) -> None:
    csv = write_microexp(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    res = load_clip_table(csv, format="microexp", root=other)
    assert res.table["path"].iloc[0] == str(other / "clips/sub0001/c1")
    assert only_error(res).message == "clip video or frame folder not found"
    assert not errors_of(load_clip_table(csv, root=other, check_files=False))


def test_microexp_missing_frames_and_videos(tmp_path: Path) -> None:
    csv = write_microexp(tmp_path)
    (tmp_path / "clips/sub0001/c1/00007.png").unlink()
    (tmp_path / "clips/sub0002/c2.mp4").unlink()
    res = load_clip_table(csv)
    by_clip = {p.clip: p for p in errors_of(res)}
    assert "lacks 1 of the frames 1..10 (7)" in by_clip["c1"].message
    assert by_clip["c2"].message == "clip video or frame folder not found"
    assert res.resolve().empty


def test_microexp_bad_cells_are_reported_not_dropped_silently(tmp_path: Path) -> None:
    rows = [
        {"subject": "x", "clip": "a", "path": "p", "onset": 1, "apex": 2, "offset": 3, "fps": 30, "emotion": "e",
         "aus": ""},
        {"subject": 1, "clip": "b", "path": "p", "onset": "one", "apex": 2, "offset": 3, "fps": 0, "emotion": "e",
         "aus": "1+zz"},
        {"subject": 1, "clip": "c", "path": "p", "onset": 1, "apex": 2, "offset": 3, "fps": 30, "emotion": "",
         "aus": "", "dataset": "nope"},
    ]
    res = load_clip_table(write_microexp(tmp_path, rows), check_files=False)
    assert res.table.empty
    fields = sorted((p.row, p.field, p.severity) for p in res.problems)
    assert fields == [(2, "subject", "error"), (3, "aus", "warning"), (3, "fps", "error"), (3, "onset", "error"),
                      (4, "dataset", "error")]
    with pytest.raises(AnnotationError, match=r"^4 error\(s\) in the annotations"):
        res.resolve(strict=True)


# ------------------------------------------------------------------------------------------------ DFME


DFME_HEADER = ["Subject", "Filename", "Onset Frame", "ApexFrame", "OffsetFrame", "Action Units", "Emotion",
               "frame rate"]


def make_dfme(tmp_path: Path) -> Path:
    root = tmp_path / "DFME"
    write_frames(root / "sub0001-sub0072" / "sub0001" / "0001_1", range(1, 9))
    write_frames(root / "deeper" / "x" / "y" / "0006_3", range(1, 13))
    write_frames(root / "0002_1", range(3, 8))
    rows = [
        DFME_HEADER,
        ["sub0001", "0001_1", 1, 4, 8, "R12+6", "Happiness", 500],
        ["006", "0006_3", 2, 6, 12, "4+L10", "disgust", 200],
        ["sub0002", "0002_1", 3, None, 7, None, "fear", "300"],
    ]
    return write_xlsx(root / "DFME_data_coding.xlsx", rows)


def test_dfme_reads_aliases_and_finds_nested_folders(tmp_path: Path) -> None:
    sheet = make_dfme(tmp_path)
    res = load_clip_table(sheet)  # auto: file name
    t = res.table
    assert t["dataset"].unique().tolist() == ["dfme"]
    assert t["subject"].tolist() == [1, 6, 2] and t["clip"].tolist() == ["0001_1", "0006_3", "0002_1"]
    assert t["fps"].tolist() == [500.0, 200.0, 300.0]  # from the sheet, never from folder names
    assert t["path"].tolist() == [str(sheet.parent / "sub0001-sub0072/sub0001/0001_1"),
                                  str(sheet.parent / "deeper/x/y/0006_3"), str(sheet.parent / "0002_1")]
    assert t["aus"].tolist() == ["6+12", "4+10", ""] and t["emotion"].tolist()[0] == "happiness"
    assert t.loc[4, "apex"] == 5 and t.loc[4, "apex_estimated"]
    assert not errors_of(res) and [p.row for p in res.warnings] == [4]


def test_dfme_folder_missing_or_ambiguous(tmp_path: Path) -> None:
    sheet = make_dfme(tmp_path)
    write_frames(tmp_path / "DFME" / "copy" / "0001_1", range(1, 9))
    shutil.rmtree(tmp_path / "DFME" / "0002_1")
    res = load_clip_table(sheet, format="dfme")
    msgs = {p.row: p.message for p in errors_of(res)}
    assert msgs[2].startswith("2 folders named '0001_1'")
    assert msgs[4].startswith("no folder named '0002_1' anywhere under")
    assert len(msgs) == 2
    assert res.resolve()["clip"].tolist() == ["0006_3"]
    # annotations only: no folder search without an explicit root
    res = load_clip_table(sheet, format="dfme", check_files=False)
    assert not errors_of(res) and set(res.table["path"]) == {""}


def test_dfme_without_fps_column_names_it(tmp_path: Path) -> None:
    rows = [DFME_HEADER[:-1], ["sub0001", "0001_1", 1, 4, 8, "12", "happiness"]]
    sheet = write_xlsx(tmp_path / "DFME_data_coding.xlsx", rows)
    with pytest.raises(AnnotationError) as info:
        load_clip_table(sheet, check_files=False)
    message = str(info.value)
    assert "\n" not in message and str(sheet) in message and "missing column(s) 'fps'" in message
    assert "'Onset Frame'" in message and "'Emotion'" in message  # what was found


# ------------------------------------------------------------------------------------------------ CASME II


def make_casme2(tmp_path: Path) -> Path:
    root = tmp_path / "CASME2"
    write_frames(root / "sub01" / "EP02_01f", range(9, 13), pattern="img{}.jpg")
    write_frames(root / "sub02" / "EP02_01f", range(40, 51), pattern="img{}.jpg")
    write_frames(root / "sub02" / "EP03_02", range(1, 6), pattern="img{}.jpg")
    rows = [
        ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
         "Estimated Emotion"],
        [1, "EP02_01f", None, 9, 10, 12, None, "12", "Happiness"],
        [2, "EP02_01f", None, 40, "/", 50, None, "4+L10", "repression"],
        [2, "EP03_02", None, 1, 3, 5, None, "R12", "others"],
    ]
    return write_xlsx(root / "CASME2-coding-20140508.xlsx", rows)


def test_casme2_blank_columns_slash_apex_and_unique_ids(tmp_path: Path) -> None:
    sheet = make_casme2(tmp_path)
    res = load_clip_table(sheet)
    t = res.table
    assert t["clip"].tolist() == ["sub01/EP02_01f", "sub02/EP02_01f", "sub02/EP03_02"]
    assert t["path"].tolist()[0] == str(sheet.parent / "sub01" / "EP02_01f")
    assert t["apex"].tolist() == [10, 45, 3] and t["apex_estimated"].tolist() == [False, True, False]
    assert t["emotion"].tolist() == ["happiness", "repression", "others"]
    assert set(t["fps"]) == {200.0} and t["aus"].tolist() == ["12", "4+10", "12"]
    assert not errors_of(res)
    (warning,) = res.problems
    assert (warning.row, warning.field, warning.value) == (3, "ApexFrame", "")


def test_casme2_missing_frame_is_found_with_numeric_order(tmp_path: Path) -> None:
    sheet = make_casme2(tmp_path)
    (sheet.parent / "sub01/EP02_01f/img10.jpg").unlink()
    problem = only_error(load_clip_table(sheet, format="casme2"))
    assert problem.row == 2 and problem.field == "path" and problem.clip == "sub01/EP02_01f"
    assert "lacks 1 of the frames 9..12 (10); it has 9..12" in problem.message


def test_casme2_missing_root_and_folder(tmp_path: Path) -> None:
    sheet = make_casme2(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_clip_table(sheet, root=tmp_path / "nowhere")
    assert load_clip_table(sheet, root=tmp_path / "nowhere", check_files=False).table.shape[0] == 3
    for f in (sheet.parent / "sub02/EP03_02").iterdir():
        f.unlink()
    problem = only_error(load_clip_table(sheet))
    assert problem.row == 4 and problem.message == "frame folder has no image frames"


def test_casme2_unknown_emotion_lists_known_ones(tmp_path: Path) -> None:
    rows = [["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"],
            [1, "EP01", 1, 2, 3, "Joy"]]
    sheet = write_xlsx(tmp_path / "CASME2-coding.xlsx", rows)
    problem = only_error(load_clip_table(sheet, check_files=False))
    assert problem.field == "Estimated Emotion" and problem.value == "joy"
    assert "unknown emotion for casme2; known: disgust, fear, happiness, others, repression, sadness, surprise" \
        in problem.message


# ------------------------------------------------------------------------------------------------ SAMM


def make_samm(tmp_path: Path) -> Path:
    root = tmp_path / "SAMM"
    write_frames(root / "006" / "006_1_2", range(5, 11), pattern="006_{:05d}.jpg")
    write_frames(root / "007" / "007_3_1", range(98, 103), pattern="007_{:04d}.jpg")
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    rows = [
        ["SAMM micro-movements", None, "Subject: participant id"],
        ["Onset/Apex/Offset are frame numbers"],
        [None],
        header,
        ["006", "006_1_2", 1, 5, 7, 10, 6, "Micro - 1/2", "R12A+L14", "Happiness", 1, None],
        [7, "007_3_1", 3, 98, -1, 102, 5, "Micro - 1/2", "4+7", "Anger", 2, None],
    ]
    return write_xlsx(root / "SAMM_Micro_FACS_Codes_v2.xlsx", rows)


def test_samm_finds_header_below_description_rows(tmp_path: Path) -> None:
    sheet = make_samm(tmp_path)
    res = load_clip_table(sheet)
    t = res.table
    assert list(t.index) == [5, 6]  # the header is on row 4
    assert t["subject"].tolist() == [6, 7] and t["clip"].tolist() == ["006_1_2", "007_3_1"]
    assert t["path"].tolist() == [str(sheet.parent / "006/006_1_2"), str(sheet.parent / "007/007_3_1")]
    assert t["apex"].tolist() == [7, 100] and t["apex_estimated"].tolist() == [False, True]
    assert t["aus"].tolist() == ["12+14", "4+7"] and t["emotion"].tolist() == ["happiness", "anger"]
    assert set(t["fps"]) == {200.0} and not errors_of(res)
    assert res.warnings[0].row == 6 and res.warnings[0].field == "Apex Frame"


def test_samm_order_errors_use_spreadsheet_rows(tmp_path: Path) -> None:
    sheet = make_samm(tmp_path)
    wb = openpyxl.load_workbook(sheet)
    wb.active["E5"] = 11  # apex after offset
    wb.active["D6"] = 103  # onset after offset
    wb.save(sheet)
    res = load_clip_table(sheet, check_files=False)
    msgs = {p.row: (p.field, p.message) for p in errors_of(res)}
    assert msgs == {5: ("Apex Frame", "apex 11 is outside onset..offset 5..10"),
                    6: ("Offset Frame", "offset 102 is before onset 103")}


# ------------------------------------------------------------------------------------------------ SMIC


def make_smic(tmp_path: Path) -> Path:
    hs = tmp_path / "SMIC" / "HS"
    write_frames(hs / "s1/micro/negative/s1_ne_01", range(101, 112), pattern="reg_image{:06d}.bmp")
    write_frames(hs / "s1/micro/surprise/s1_sur_01", [8, 9, 10, 11], pattern="reg_image{}.bmp")
    write_frames(hs / "s10/micro/positive/s10_po_02", range(1, 4), pattern="reg_image{}.bmp")
    write_frames(hs / "s2/micro/positive/s2_po_01", range(5, 8), pattern="reg_image{}.bmp")
    (hs / "s2/non_micro").mkdir()
    return hs


def test_smic_from_folders(tmp_path: Path) -> None:
    hs = make_smic(tmp_path)
    for given in (hs, hs.parent):
        res = load_clip_table(given)  # auto: a folder is SMIC
        t = res.table
        assert t["clip"].tolist() == ["s1_ne_01", "s1_sur_01", "s2_po_01", "s10_po_02"]
        assert t["subject"].tolist() == [1, 1, 2, 10]
        assert t["emotion"].tolist() == ["negative", "surprise", "positive", "positive"]
        assert t["onset"].tolist() == [101, 8, 5, 1] and t["offset"].tolist() == [111, 11, 7, 3]
        assert t["apex"].tolist() == [106, 9, 6, 2] and t["apex_estimated"].all()
        assert set(t["fps"]) == {100.0} and set(t["dataset"]) == {"smic"}
        assert not errors_of(res) and len(res.warnings) == 4 and all(p.row is None for p in res.warnings)


def test_smic_gap_is_an_error_by_clip(tmp_path: Path) -> None:
    hs = make_smic(tmp_path)
    (hs / "s1/micro/surprise/s1_sur_01/reg_image9.bmp").unlink()
    res = load_clip_table(hs, format="smic")
    problem = only_error(res)
    assert problem.row is None and problem.clip == "s1_sur_01" and "(9)" in problem.message
    assert "s1_sur_01" not in res.resolve()["clip"].tolist()


def test_smic_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="cannot tell the format of folder"):
        load_clip_table(tmp_path)
    with pytest.raises(AnnotationError, match="not a SMIC-HS folder"):
        load_clip_table(tmp_path, format="smic")


# ------------------------------------------------------------------------------------------------ CAS(ME)^3


def make_casme3(tmp_path: Path) -> Path:
    root = tmp_path / "casme3"
    write_frames(root / "spNO.1" / "a" / "color", range(100, 131), pattern="{}.jpg")
    write_frames(root / "spNO.2" / "b" / "color", range(1, 6), pattern="{}.jpg")
    rows = [
        ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
        ["spNO.1", "a", 100, 105, 110, "R12", "I", "happy"],
        ["spNO.1", "a", 120, 125, 130, "4+L14，7", "III", "disgust"],
        ["spNO.1", "a", 120, 121, 122, "4", "III", "disgust"],
        ["spNO.2", "b", 5, 3, 1, "1+2", "V", "surprise"],
    ]
    return write_xlsx(root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", rows)


def test_casme3_unique_ids_paths_fps_and_reversed_rows(tmp_path: Path) -> None:
    sheet = make_casme3(tmp_path)
    res = load_clip_table(sheet)
    t = res.table
    assert t["clip"].tolist() == ["spNO.1/a/100", "spNO.1/a/120", "spNO.1/a/120-2", "spNO.2/b/5"]
    assert t["path"].tolist()[0] == str(sheet.parent / "spNO.1" / "a" / "color")
    assert set(t["fps"]) == {30.0} and set(t["dataset"]) == {"casme3"}
    assert t["aus"].tolist() == ["12", "4+7+14", "4", "1+2"]
    problem = only_error(res)
    assert problem.row == 5 and problem.field == "Offset" and "before onset 5" in problem.message
    assert len(res.resolve()) == 3
    assert set(load_clip_table(sheet, fps=25).table["fps"]) == {25.0}


# ------------------------------------------------------------------------------------------------ MMEW


def test_mmew_emotion_folders_and_fps(tmp_path: Path) -> None:
    root = tmp_path / "MMEW" / "Micro_Expression"
    write_frames(root / "Happiness" / "S01-01-001", range(1, 8), pattern="{}.jpg")
    write_frames(root / "surprise" / "S02-03-002", range(1, 5), pattern="{}.jpg")
    rows = [["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion",
             "remarks"],
            ["S01", "S01-01-001", 1, 4, 7, "6+12", "happiness", None],
            ["S02", "S02-03-002", 1, 2, 4, "1+2", "surprise", "ok"]]
    sheet = write_xlsx(tmp_path / "MMEW" / "MMEW_Micro_Exp.xlsx", rows)
    res = load_clip_table(sheet, root=root)
    assert not res.problems
    t = res.table
    assert t["path"].tolist() == [str(root / "Happiness/S01-01-001"), str(root / "surprise/S02-03-002")]
    assert t["subject"].tolist() == [1, 2] and set(t["fps"]) == {90.0} and set(t["dataset"]) == {"mmew"}


# ------------------------------------------------------------------------------------------------ auto detection


HEADERS = {
    "casme2": ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
               "Estimated Emotion"],
    "samm": ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
             "Action Units", "Estimated Emotion"],
    "casme3": ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
    "mmew": ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion",
             "remarks"],
    "dfme": DFME_HEADER,
}


@pytest.mark.parametrize("name, expected", [
    ("DFME_data_coding.xlsx", "dfme"), ("CASME2-coding-20140508.xlsx", "casme2"), ("CASME II coding.xlsx", "casme2"),
    ("SAMM_Micro_FACS_Codes_v2.xlsx", "samm"), ("MMEW_Micro_Exp.xlsx", "mmew"),
    ("cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", "casme3"),
])
def test_detect_by_file_name(tmp_path: Path, name: str, expected: str) -> None:
    assert detect_format(write_xlsx(tmp_path / name, [HEADERS[expected]])) == expected


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_detect_by_columns(tmp_path: Path, fmt: str) -> None:
    assert detect_format(write_xlsx(tmp_path / "coding.xlsx", [HEADERS[fmt]])) == fmt


def test_detect_microexp_csv_and_unsure(tmp_path: Path) -> None:
    assert detect_format(write_microexp(tmp_path)) == "microexp"
    sheet = write_xlsx(tmp_path / "labels.xlsx", [["Subject", "Filename", "Onset", "Offset", "Emotion"]])
    with pytest.raises(AnnotationError) as info:
        load_clip_table(sheet)
    message = str(info.value)
    assert "cannot tell the format of" in message and "pass format= one of microexp, dfme, casme2" in message
    assert "'Onset'" in message


# ------------------------------------------------------------------------------------------------ file errors


def test_missing_unreadable_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.xlsx"):
        load_clip_table(tmp_path / "nope.xlsx")
    broken = tmp_path / "DFME_broken.xlsx"
    broken.write_bytes(b"this is not a zip file")
    with pytest.raises(AnnotationError, match="cannot read .*DFME_broken.xlsx"):
        load_clip_table(broken)
    odd = tmp_path / "labels.json"
    odd.write_text("{}")
    with pytest.raises(AnnotationError, match="unsupported extension '.json'"):
        load_clip_table(odd, format="dfme")
    with pytest.raises(AnnotationError, match="unknown annotation format 'casme'"):
        load_clip_table(odd, format="casme")
    assert "auto" in FORMATS and "smic" in FORMATS


def test_wrong_columns_name_the_missing_ones_and_what_was_found(tmp_path: Path) -> None:
    sheet = write_xlsx(tmp_path / "SAMM.xlsx", [["note"], ["Subject", "Filename", "Onset Frame", "Emotion", "Extra"]])
    with pytest.raises(AnnotationError) as info:
        load_clip_table(sheet, check_files=False)
    message = str(info.value)
    assert message.startswith(f"{sheet}: missing column(s) 'Apex Frame', 'Offset Frame' for format 'samm'")
    assert "'Subject', 'Filename', 'Onset Frame', 'Emotion', 'Extra' (row 2)" in message
    empty = write_xlsx(tmp_path / "samm_empty.xlsx", [])
    with pytest.raises(AnnotationError, match="the sheet is empty"):
        load_clip_table(empty, format="samm")


def test_later_sheet_is_used_when_the_first_lacks_the_columns(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "casme2.xlsx", [["readme"]], sheet="About")
    wb = openpyxl.load_workbook(path)
    ws = wb.create_sheet("coding")
    for row in (HEADERS["casme2"], [1, "EP01", None, 1, 2, 3, None, "1", "fear"]):
        ws.append(row)
    wb.save(path)
    assert load_clip_table(path, check_files=False).table["clip"].tolist() == ["sub01/EP01"]


# ------------------------------------------------------------------------------------------------ resolve


def test_duplicates_strict_and_lenient(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [HEADERS["mmew"],
            ["S01", "A", 1, 2, 3, "", "happiness", None],
            ["S01", "A", 1, 2, 3, "", "happiness", None],
            ["S02", "B", 5, 9, 7, "", "happiness", None],
            ["S03", "C", 1, 2, 3, "", "glee", None],
            ["S04", "D", 1, 2, 3, "", "fear", None],
            [None, None, None, None, None, None, None, "footnote"]]
    res = load_clip_table(write_xlsx(tmp_path / "MMEW_Micro_Exp.xlsx", rows), check_files=False)
    assert len(res.table) == 5  # parsed rows, problems not applied
    dup = [p for p in res.errors if p.row == 3][0]
    assert dup.message == "duplicate clip id 'A' (first at row 2)"
    assert [p.row for p in res.errors] == [3, 4, 5]
    assert [p.row for p in res.warnings] == [7]  # the stray footnote row is reported, not dropped silently
    with pytest.raises(AnnotationError) as info:
        res.resolve(strict=True)
    assert str(info.value).startswith("3 error(s) in the annotations (rows numbered as in a spreadsheet")
    assert "row 4 (clip B): apex 9 is outside onset..offset 5..7" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="microexp.data.annotations"):
        clean = res.resolve()
    assert clean["clip"].tolist() == ["A", "D"] and list(clean.index) == [0, 1]
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropping clip")]
    assert len(dropped) == 3 and dropped[0].startswith("dropping clip A (") and "row 3" in dropped[0]


def test_strict_message_shows_first_five_and_count(tmp_path: Path) -> None:
    rows = [HEADERS["mmew"]] + [[f"S{i:02d}", f"C{i}", 1, 2, 3, "", "glee", None] for i in range(1, 9)]
    res = load_clip_table(write_xlsx(tmp_path / "MMEW_Micro_Exp.xlsx", rows), check_files=False)
    with pytest.raises(AnnotationError, match=r"^8 error\(s\).*; and 3 more$"):
        res.resolve(strict=True)


def test_emotions_may_be_absent_when_not_required(tmp_path):
    """Training needs an emotion per clip; prediction on unlabelled clips does not (require_emotion=False)."""
    from microexp.errors import AnnotationError

    header = "subject,clip,path,onset,apex,offset,fps,aus"
    (tmp_path / "a.csv").write_text(f"{header}\n1,c1,c1.mp4,1,3,5,200,12\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="'emotion'"):
        load_clip_table(tmp_path / "a.csv", check_files=False)
    table = load_clip_table(tmp_path / "a.csv", check_files=False, require_emotion=False).resolve(strict=True)
    assert table["emotion"].tolist() == [""]
    (tmp_path / "b.csv").write_text(f"{header},emotion\n1,c1,c1.mp4,1,3,5,200,12,\n", encoding="utf-8")
    assert [p.message for p in load_clip_table(tmp_path / "b.csv", check_files=False).problems] == ["missing emotion"]
    assert load_clip_table(tmp_path / "b.csv", check_files=False, require_emotion=False).problems == []
