"""The Format registry: every registered format has a tiny official-layout test, and config accepts them all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
import pytest

from microexp.config import ConfigError, load_config
from microexp.data.annotations import DATASET_FORMATS, DATASET_NAMES, DEFAULT_FPS, FORMATS, KNOWN_EMOTIONS, Format
from microexp.data.annotations import detect_format, load_clip_table
from microexp.data.annotations.columns import SHEET_COLUMN_NAMES, SHEET_FIELDS
from microexp.data.annotations.format import FolderLayout, ids_from_filename
from microexp.errors import AnnotationError
from test_annotations import write_frames, write_xlsx


class Tiny(NamedTuple):
    """A tiny dataset in its official layout: what to load, and the clip id -> clip folder expected."""

    path: Path
    clips: dict[str, Path]


def _microexp(tmp: Path) -> Tiny:
    write_frames(tmp / "clips" / "a", range(1, 6))
    path = tmp / "annotations.csv"
    pd.DataFrame([{"subject": 1, "clip": "a", "path": "clips/a", "onset": 1, "apex": 3, "offset": 5, "fps": 200,
                   "emotion": "anything", "aus": "12"}]).to_csv(path, index=False)
    return Tiny(path, {"a": tmp / "clips" / "a"})


def _dfme(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "sub0001-sub0072" / "sub0001" / "0001_1", range(1, 6))
    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "AU", "emotion", "fps"]
    path = write_xlsx(tmp / "DFME_data_coding.xlsx", [header, ["sub0001", "0001_1", 1, 3, 5, "12", "happiness", 500]])
    return Tiny(path, {"0001_1": folder})


def _casme2(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "sub01" / "EP02_01f", range(9, 13), pattern="img{}.jpg")
    header = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units",
              "Estimated Emotion"]
    path = write_xlsx(tmp / "CASME2-coding-20140508.xlsx", [header, [1, "EP02_01f", None, 9, 10, 12, None, "12",
                                                                       "happiness"]])
    return Tiny(path, {"sub01/EP02_01f": folder})


def _samm(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "006" / "006_1_2", range(5, 11), pattern="006_{:05d}.jpg")
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    rows = [["SAMM"], [None], header, ["006", "006_1_2", 1, 5, 7, 10, 6, "Micro", "12", "happiness", 1, None]]
    return Tiny(write_xlsx(tmp / "SAMM_Micro_FACS_Codes_v2.xlsx", rows), {"006_1_2": folder})


def _smic(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "HS" / "s1" / "micro" / "negative" / "s1_ne_01", range(1, 6), pattern="reg_image{}.bmp")
    return Tiny(tmp / "HS", {"s1_ne_01": folder})


def _casme3(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "spNO.1" / "a" / "color", range(100, 111), pattern="{}.jpg")
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
    path = write_xlsx(tmp / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
                      [header, ["spNO.1", "a", 100, 105, 110, "R12", "I", "happy"]])
    return Tiny(path, {"spNO.1/a/100": folder})


def _mmew(tmp: Path) -> Tiny:
    folder = write_frames(tmp / "Happiness" / "S01-01-001", range(1, 8), pattern="{}.jpg")
    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion",
              "remarks"]
    path = write_xlsx(tmp / "MMEW_Micro_Exp.xlsx", [header, ["S01", "S01-01-001", 1, 4, 7, "6+12", "happiness", None]])
    return Tiny(path, {"S01-01-001": folder})


def _megc_list(tmp: Path) -> Tiny:
    """The composite's public label list and its flow images (CASME II filenames repeat across subjects)."""
    import cv2
    import numpy as np

    flows = {}
    for folder, stem in (("sub01", "EP02_01f"), ("sub02", "EP02_01f"), ("", "s1_ne 01")):
        path = tmp / "flows" / folder / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((28, 28, 3), 128, np.uint8))
        flows[stem if not folder else f"{folder}/{stem}"] = path
    path = tmp / "combined_3_class_gt.csv"
    path.write_text("dataset,sub,filename_o,label\ncasme2,sub01,EP02_01f,0\nCASME_2,sub02,EP02_01f,2\n"
                    "SMIC-HS,s1,s1_ne 01,1\n")
    return Tiny(path, {"casme2/sub01/EP02_01f": flows["sub01/EP02_01f"],
                       "casme2/sub02/EP02_01f": flows["sub02/EP02_01f"], "smic/s1/s1_ne 01": flows["s1_ne 01"]})


#: One tiny official-layout dataset per registered format: a new Format needs its builder here.
BUILDERS: dict[str, Callable[[Path], Tiny]] = {
    "microexp": _microexp, "dfme": _dfme, "casme2": _casme2, "samm": _samm, "smic": _smic, "casme3": _casme3,
    "mmew": _mmew, "megc_list": _megc_list,
}


def test_every_registered_format_has_a_tiny_dataset_test() -> None:
    assert sorted(BUILDERS) == sorted(DATASET_FORMATS)


@pytest.mark.parametrize("name", list(DATASET_FORMATS))
@pytest.mark.parametrize("given", ["explicit", "auto"])
def test_each_format_loads_its_tiny_dataset(tmp_path: Path, name: str, given: str) -> None:
    fmt = DATASET_FORMATS[name]
    tiny = BUILDERS[name](tmp_path)
    assert detect_format(tiny.path) == name
    result = load_clip_table(tiny.path, format=name if given == "explicit" else "auto")
    assert not result.errors, [str(p) for p in result.errors]
    table = result.resolve(strict=True)
    assert table["clip"].tolist() == list(tiny.clips)
    # formats of precomputed flows locate flow files; the dataset column is then the rows' own
    assert table["flow_path" if fmt.flows_only else "path"].tolist() == [str(p) for p in tiny.clips.values()]
    assert set(table["dataset"]) == ({"casme2", "smic"} if fmt.flows_only else {name})
    if fmt.default_fps is not None:
        assert set(table["fps"]) == {fmt.default_fps}
    if fmt.emotions is not None:
        assert set(table["emotion"]) <= fmt.emotions


@pytest.mark.parametrize("name", [n for n, f in DATASET_FORMATS.items() if f.folder is None])
def test_each_sheet_format_names_its_missing_columns_as_its_files_do(tmp_path: Path, name: str) -> None:
    fmt = DATASET_FORMATS[name]
    sheet = write_xlsx(tmp_path / "labels.xlsx", [["Subject", "Filename", "Unrelated"]])
    with pytest.raises(AnnotationError, match=re.escape(f"for format {name!r}")) as info:
        load_clip_table(sheet, format=name, check_files=False)
    missing = [fmt.column_names[f] for f in fmt.required if f not in ("subject", "filename")]
    assert f"missing column(s) {', '.join(map(repr, missing))}" in str(info.value)


def test_config_accepts_exactly_the_registered_formats() -> None:
    assert FORMATS == ("auto",) + tuple(DATASET_FORMATS) and DATASET_NAMES == tuple(DATASET_FORMATS)
    for name in FORMATS:
        assert load_config(None, [f"data.format={name}"]).data.format == name
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.format=casme"])
    assert f"expected one of {', '.join(FORMATS)} (did you mean" in str(info.value)


def test_derived_tables_come_from_the_records() -> None:
    assert DEFAULT_FPS == {n: f.default_fps for n, f in DATASET_FORMATS.items() if f.default_fps is not None}
    assert DEFAULT_FPS == {"casme2": 200.0, "samm": 200.0, "smic": 100.0, "casme3": 30.0, "mmew": 90.0}
    assert set(KNOWN_EMOTIONS) == {n for n, f in DATASET_FORMATS.items() if f.emotions is not None}
    assert "microexp" not in KNOWN_EMOTIONS  # our CSV accepts any emotion
    for name, fmt in DATASET_FORMATS.items():
        assert fmt.name == name and isinstance(fmt, Format)


def _new_format(**changes: object) -> Format:
    """A made-up sheet format laid out like SAMM, with ``changes``."""
    fields: dict = dict(name="new", title="New", default_fps=25.0, emotions=None, required=SHEET_FIELDS,
                        column_names=SHEET_COLUMN_NAMES, locate=DATASET_FORMATS["samm"].locate)
    return Format(**fields | changes)


def test_a_format_record_is_checked_when_it_is_made() -> None:
    folder = FolderLayout(hint="x", find=lambda path: None, scan=DATASET_FORMATS["smic"].folder.scan)
    with pytest.raises(ValueError, match="exactly one of locate"):
        _new_format(locate=None)
    with pytest.raises(ValueError, match="exactly one of locate"):
        _new_format(folder=folder)
    with pytest.raises(ValueError, match="fields without aliases: stimulus"):
        _new_format(required=SHEET_FIELDS + ("stimulus",))
    with pytest.raises(ValueError, match="required fields without a column name: emotion"):
        _new_format(column_names={f: f for f in SHEET_FIELDS[:-1]})
    with pytest.raises(ValueError, match="format name 'New'"):
        _new_format(name="New")
    made = _new_format()
    assert made.clip_ids is ids_from_filename and dict(made.column_names) == dict(SHEET_COLUMN_NAMES)
    with pytest.raises(TypeError):
        made.column_names["onset"] = "x"  # type: ignore[index]


@pytest.mark.parametrize("name", [n for n, f in DATASET_FORMATS.items() if f.file_name is not None])
def test_file_name_patterns_tell_the_official_files_apart(tmp_path: Path, name: str) -> None:
    official = {"dfme": "DFME_data_coding.xlsx", "casme2": "CASME2-coding-20140508.xlsx",
                "samm": "SAMM_Micro_FACS_Codes_v2.xlsx", "casme3": "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
                "mmew": "MMEW_Micro_Exp.xlsx", "megc_list": "combined_3class_gt.csv"}
    matches = [n for n, f in DATASET_FORMATS.items() if f.file_name is not None and f.file_name.search(
        official[name].lower())]
    assert matches == [name]
