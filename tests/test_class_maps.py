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
    summarise_left_out,
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


# ----------------------------------------------------------------------------------------------------
# user-supplied maps: pre-labelled composite rows, YAML files, identity, one log line per left-out pair

ONE_MAP = """\
pn:
  description: negative vs positive
  classes: [neg, pos]
  datasets:
    samm: {anger: neg, happiness: pos, other: null}
    default: {disgust: neg, happiness: pos}
"""
TWO_MAPS = ONE_MAP + """\
hs:
  classes: [happiness, surprise]
  datasets:
    default: {happiness: happiness, surprise: surprise}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(class_map: str) -> str:
    """The one-line message config validation gives for ``--set data.class_map=...``."""
    from microexp.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, [f"data.class_map={class_map}"])
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"override 'data.class_map={class_map}'")
    assert f"data.class_map={class_map!r}" in message
    return message


def test_megc3_keeps_rows_already_labelled_with_the_composite_classes() -> None:
    rows = [(f"{d}_{e}", d, e) for d in ("casme2", "samm", "smic") for e in ("negative", "positive", "surprise")]
    labelled, problems = apply_class_map(table(rows), "megc3")
    assert problems == [] and labelled["label"].tolist() == [0, 1, 2] * 3
    # the datasets' own emotions still map as before, and their drops stay drops
    assert get_class_map("megc3").lookup("casme2", "repression") == "negative"
    assert get_class_map("megc3").lookup("samm", "other") is None


def test_a_yaml_file_with_one_map_is_used_by_path_in_config_and_apply(tmp_path: Path) -> None:
    from microexp.config import load_config

    maps = write(tmp_path / "my maps.yaml", ONE_MAP)  # a space in the name
    assert load_config(None, [f"data.class_map={maps}"]).data.class_map == str(maps)
    labelled, problems = apply_class_map(table([("a", "samm", "anger"), ("b", "dfme", "happiness"),
                                                ("c", "samm", "other")]), str(maps), log=False)
    assert labelled["clip"].tolist() == ["a", "b"] and labelled["label"].tolist() == [0, 1]
    assert [(p.clip, p.severity) for p in problems] == [("c", "warning")] and "'pn' drops emotion" in problems[0].message
    assert get_class_map(maps).name == "pn"  # a Path works too
    # any existing file is a map file, whatever its suffix; a built-in name always means the built-in map
    other = write(tmp_path / "maps.txt", ONE_MAP)
    assert get_class_map(str(other)).classes == ("neg", "pos")
    assert get_class_map("megc3").classes == ("negative", "positive", "surprise")


def test_a_file_with_several_maps_needs_a_name_after_the_hash(tmp_path: Path) -> None:
    from microexp.config import load_config

    maps = write(tmp_path / "maps.yml", TWO_MAPS)
    assert get_class_map(f"{maps}#hs").classes == ("happiness", "surprise")
    assert load_config(None, [f"data.class_map={maps}#pn"]).data.class_map == f"{maps}#pn"
    message = config_error(str(maps))
    assert f"{maps}: holds 2 class maps (hs, pn): pick one with {maps}#NAME" in message
    message = config_error(f"{maps}#hss")
    assert f"{maps}: no class map 'hss' (did you mean hs?); it holds: hs, pn" in message
    with pytest.raises(ConfigError, match="no map name after '#'"):
        get_class_map(f"{maps}#")


def test_identity_keeps_the_emotions_of_the_whole_table() -> None:
    from microexp.config import load_config

    clips = table([("a", "samm", "surprise"), ("b", "casme2", "others"), ("c", "smic", "negative"),
                   ("d", "samm", "others"), ("e", "samm", "")])
    cm = get_class_map("identity", table=clips)
    assert cm.name == "identity" and cm.classes == ("negative", "others", "surprise")
    assert cm.lookup("any dataset", "others") == "others"
    labelled, problems = apply_class_map(clips, "identity", log=False)
    assert labelled["clip"].tolist() == ["a", "b", "c", "d"] and labelled["label"].tolist() == [2, 1, 0, 1]
    assert [(p.clip, p.severity) for p in problems] == [("e", "error")]  # no emotion is no class
    assert load_config(None, ["data.class_map=identity"]).data.class_map == "identity"
    with pytest.raises(ConfigError, match=r"class map 'identity' takes its classes from the clip table"):
        get_class_map("identity")


def test_left_out_clips_are_one_log_line_per_dataset_and_emotion(caplog: pytest.LogCaptureFixture) -> None:
    rows = ([(f"o{i}", "casme2", "others") for i in range(4)] + [(f"x{i}", "samm", "xyz") for i in range(2)]
            + [("k", "casme2", "happiness"), ("f", "casme2", "fear"), ("d", "dfme", "anger")])
    with caplog.at_level(logging.WARNING, logger="microexp.data.class_maps"):
        labelled, problems = apply_class_map(table(rows), "megc3")
    assert labelled["clip"].tolist() == ["k"]
    assert len(problems) == 8 and {p.clip for p in problems} == {"o0", "o1", "o2", "o3", "x0", "x1", "f", "d"}
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "class map 'megc3' drops emotion 'others' of dataset 'casme2' (by protocol): 4 clip(s) left out "
        "(o0, o1, o2, ...)",
        "class map 'megc3' does not know emotion 'xyz' of dataset 'samm' (known: anger, contempt, disgust, fear, "
        "happiness, negative, other, positive, sadness, surprise): 2 clip(s) left out (x0, x1)",
        "class map 'megc3' drops emotion 'fear' of dataset 'casme2' (by protocol): 1 clip(s) left out (f)",
        "class map 'megc3' does not cover dataset 'dfme' (emotion 'anger'; it covers: casme2, samm, smic): "
        "1 clip(s) left out (d)",
    ]
    groups = summarise_left_out(problems)
    assert [(g.severity, g.count) for g in groups] == [("warning", 4), ("error", 2), ("warning", 1), ("error", 1)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="microexp.data.class_maps"):
        apply_class_map(table(rows), "megc3", log=False)
    assert caplog.records == []
    with pytest.raises(AnnotationError, match=r"^3 clip\(s\) cannot be labelled by class map 'megc3': class map "
                                              r"'megc3' does not know emotion 'xyz'.*2 clip\(s\) left out"):
        apply_class_map(table(rows), "megc3", strict=True)


def test_bad_class_map_files_are_one_line_errors_naming_file_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert f"{missing}: class map file not found" in config_error(str(missing))
    assert f"{missing}: class map file not found" in config_error(f"{missing}#pn")
    broken = write(tmp_path / "broken.yaml", "pn: [unclosed\n")
    assert f"{broken}: not valid YAML" in config_error(str(broken))
    unknown_class = write(tmp_path / "unknown.yaml", "pn:\n  classes: [neg, pos]\n  datasets:\n    samm: {anger: angry}\n")
    assert (f"{unknown_class}: class map 'pn': datasets.samm.anger = 'angry' is not one of the classes (neg, pos) "
            f"nor null") in config_error(str(unknown_class))
    unnamed = write(tmp_path / "unnamed.yaml", "classes: [neg, pos]\ndatasets: {default: {anger: neg}}\n")
    assert "'classes' and 'datasets' belong under a map's name" in config_error(str(unnamed))
    empty = write(tmp_path / "empty.yaml", "")
    assert f"{empty}: expected a mapping of class map names to maps, got nothing" in config_error(str(empty))
    assert f"{tmp_path}: not a file" in config_error(f"{tmp_path}/")
    message = config_error("dfme8")
    assert "expected one of casme2_5, casme3_4, dfme7, megc3, mmew7, identity, or a YAML file" in message
    assert message.endswith("(did you mean dfme7?)")
    with pytest.raises(ConfigError, match=r"unknown class map 'idenity' \(did you mean identity\?\)"):
        apply_class_map(table([("a", "samm", "anger")]), "idenity")
