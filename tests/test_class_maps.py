"""Class maps: the built-in YAML data, lookups, applying a map to a clip table."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from microexp.data.annotations import COLUMNS
from microexp.data.class_maps import (
    BUILTIN_CLASS_MAPS_FILE,
    ClassMap,
    apply_class_map,
    get_class_map,
    list_class_maps,
    load_class_maps,
)
from microexp.errors import AnnotationError, ConfigError


def table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A clip table with (clip, dataset, emotion) rows and dummy values elsewhere."""
    records = [{"subject": i, "clip": c, "path": "", "onset": 1, "apex": 2, "offset": 3, "first_frame": 0,
                "fps": 200.0, "emotion": e, "aus": "", "dataset": d, "apex_estimated": False}
               for i, (c, d, e) in enumerate(rows)]
    return pd.DataFrame(records, columns=list(COLUMNS))


def test_builtin_maps_are_package_data() -> None:
    assert BUILTIN_CLASS_MAPS_FILE.name == "class_maps.yaml" and BUILTIN_CLASS_MAPS_FILE.is_file()
    assert list_class_maps() == ["casme2_5", "casme3_4", "dfme7", "megc3", "mmew7"]


def test_dfme7_and_casme2_5_classes() -> None:
    dfme7 = get_class_map("dfme7")
    assert dfme7.classes == ("happiness", "anger", "contempt", "disgust", "fear", "sadness", "surprise")
    assert dfme7.num_classes == 7 and dfme7.lookup("dfme", "contempt") == "contempt"
    assert dfme7.lookup("microexp", "fear") == "fear"  # 'default' covers synthetic data
    casme2_5 = get_class_map("casme2_5")
    assert casme2_5.classes == ("happiness", "disgust", "repression", "surprise", "others")
    assert casme2_5.lookup("casme2", "fear") is None and casme2_5.lookup("casme2", "sadness") is None


@pytest.mark.parametrize("dataset, emotion, expected", [
    ("casme2", "disgust", "negative"), ("casme2", "repression", "negative"), ("casme2", "happiness", "positive"),
    ("casme2", "surprise", "surprise"), ("casme2", "fear", None), ("casme2", "sadness", None),
    ("casme2", "others", None),
    ("samm", "anger", "negative"), ("samm", "contempt", "negative"), ("samm", "disgust", "negative"),
    ("samm", "fear", "negative"), ("samm", "sadness", "negative"), ("samm", "happiness", "positive"),
    ("samm", "surprise", "surprise"), ("samm", "other", None),
    ("smic", "negative", "negative"), ("smic", "positive", "positive"), ("smic", "surprise", "surprise"),
])
def test_megc3_follows_the_megc2019_protocol(dataset: str, emotion: str, expected: str | None) -> None:
    assert get_class_map("megc3").lookup(dataset, emotion) == expected


def test_unknown_lookups_raise() -> None:
    megc3 = get_class_map("megc3")
    with pytest.raises(KeyError, match="does not cover dataset 'dfme'"):
        megc3.lookup("dfme", "anger")
    with pytest.raises(KeyError, match="known: "):
        megc3.lookup("samm", "others")


def test_unknown_map_name_lists_close_and_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown class map 'megc'.*did you mean megc3.*available: casme2_5"):
        get_class_map("megc")
    cm = get_class_map("megc3")
    assert get_class_map(cm) is cm


def test_apply_megc3_labels_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    clips = table([("a", "casme2", "repression"), ("b", "casme2", "fear"), ("c", "samm", "contempt"),
                   ("d", "smic", "positive"), ("e", "samm", "others"), ("f", "dfme", "anger"),
                   ("g", "smic", "surprise")])
    with caplog.at_level(logging.WARNING, logger="microexp.data.class_maps"):
        labelled, problems = apply_class_map(clips, "megc3")
    assert labelled["clip"].tolist() == ["a", "c", "d", "g"]
    assert labelled["label"].tolist() == [0, 0, 1, 2] and labelled["label"].dtype == "int64"
    assert list(labelled.index) == [0, 1, 2, 3] and "emotion" in labelled.columns
    by_clip = {p.clip: p for p in problems}
    assert by_clip["b"].severity == "warning" and "drops emotion 'fear'" in by_clip["b"].message
    assert by_clip["e"].severity == "error" and "does not know emotion 'others'" in by_clip["e"].message
    assert by_clip["f"].severity == "error" and "does not cover dataset 'dfme'" in by_clip["f"].message
    assert sum("clip(s) left out" in r.getMessage() for r in caplog.records) == 3  # three (dataset, emotion) pairs
    with pytest.raises(AnnotationError, match=r"2 clip\(s\) cannot be labelled by class map 'megc3'"):
        apply_class_map(clips, "megc3", strict=True)


def test_apply_dfme7_keeps_every_known_clip() -> None:
    labelled, problems = apply_class_map(table([("a", "dfme", "surprise"), ("b", "microexp", "anger")]), "dfme7")
    assert labelled["label"].tolist() == [6, 1] and problems == []
    empty, problems = apply_class_map(table([]), "dfme7")
    assert empty.empty and "label" in empty.columns and problems == []
    with pytest.raises(AnnotationError, match="lacks column"):
        apply_class_map(pd.DataFrame({"clip": ["a"]}), "dfme7")


def test_custom_map_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "maps.yaml"
    good.write_text("pn:\n  classes: [neg, pos]\n  datasets:\n    default: {Anger: neg, happiness: pos, other: null}\n")
    cm = get_class_map("pn", path=good)
    assert isinstance(cm, ClassMap) and cm.lookup("samm", "anger") == "neg" and cm.label("pos") == 1
    bad_target = tmp_path / "bad.yaml"
    bad_target.write_text("pn:\n  classes: [neg, pos]\n  datasets:\n    samm: {anger: negative}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: class map 'pn': datasets.samm.anger = 'negative' is not one"):
        load_class_maps(bad_target)
    dup = tmp_path / "dup.yaml"
    dup.write_text("x:\n  classes: [a, a]\n  datasets: {default: {a: a}}\n")
    with pytest.raises(ConfigError, match="duplicates"):
        load_class_maps(dup)
    broken = tmp_path / "broken.yaml"
    broken.write_text("x: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_class_maps(broken)
    with pytest.raises(ConfigError, match="missing.yaml: class map file not found"):
        load_class_maps(tmp_path / "missing.yaml")
