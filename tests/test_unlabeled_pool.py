"""The unlabeled pool (``microexp synth --unlabeled N``) and unlabelled clip tables
(``load_clip_table(labels_required=False)``): new subjects, no labels written, phases from the frames."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from microexp.cli import main
from microexp.data.annotations import load_clip_table
from microexp.errors import AnnotationError, ConfigError
from microexp.synth import EMOTIONS, generate_dataset, plan_dataset, render_clip
from microexp.synth.plan import POOL_SUBJECT_OFFSET
from microexp.synth.render import subject_face
from microexp.synth.streams import Stream, random_stream

POOL = dict(clips=4, subjects=2, size=32, seed=1, workers=1, progress=False, unlabeled=True)
LABEL_COLUMNS = ("onset", "apex", "offset", "emotion", "aus")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _face_key(seed: int, subject: int, *, pool: bool) -> tuple:
    geometry, look = subject_face(seed, subject, pool=pool)
    return dataclasses.astuple(geometry) + (look.texture_seed,)


@pytest.fixture(scope="module")
def pool_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "frames"
    generate_dataset(out, fmt="frames", **POOL)
    return out


# ------------------------------------------------------------------------------------------------ the pool's subjects


def test_pool_subjects_are_disjoint_from_the_labelled_demo():
    """`synth runs/demo/data --clips 300 --subjects 30 --seed 0` and `synth runs/pool --unlabeled 600
    --subjects 60 --seed 1` never share a subject id or a clip name."""
    demo = plan_dataset(clips=300, subjects=30, seed=0)
    pool = plan_dataset(clips=600, subjects=60, seed=1, unlabeled=True)
    assert {s.subject for s in demo} == set(range(1, 31))
    assert {s.subject for s in pool} == set(range(POOL_SUBJECT_OFFSET + 1, POOL_SUBJECT_OFFSET + 61))
    assert not {s.clip for s in demo} & {s.clip for s in pool}
    assert pool[0].clip == "sub1001_001" and all(s.pool for s in pool) and not any(s.pool for s in demo)
    # no annotated label, no flip; the generator still knows a true emotion per clip (it needs a motion)
    assert {s.label for s in pool} == {""} and not any(s.label_flipped for s in pool)
    assert {s.emotion for s in pool} <= set(EMOTIONS) and len({s.emotion for s in pool}) == len(EMOTIONS)


def test_pool_faces_are_new_people_whatever_the_seed():
    """A pool subject's face comes from the pool's own stream: never a labelled subject's face, not even for
    the same seed and the same subject number (a labelled run of more than 1000 subjects)."""
    demo_faces = {_face_key(0, s, pool=False) for s in range(1, 31)}
    pool_faces = {_face_key(1, s, pool=True) for s in range(1001, 1061)}
    assert len(demo_faces) == 30 and len(pool_faces) == 60 and not demo_faces & pool_faces
    for seed in (0, 1):
        for subject in (1, 1001):
            assert _face_key(seed, subject, pool=True) != _face_key(seed, subject, pool=False)
    # the clips' streams too: the same seed and clip index give another frame noise
    a = random_stream(0, Stream.FRAME, 0, 1).standard_normal(8)
    b = random_stream(0, Stream.FRAME, 0, 1, pool=True).standard_normal(8)
    assert not np.allclose(a, b)


def test_pool_and_labelled_first_frames_differ_for_the_same_seed():
    labelled = plan_dataset(clips=2, subjects=2, seed=0)
    pool = plan_dataset(clips=2, subjects=2, seed=0, unlabeled=True)
    for a, b in zip(labelled, pool):
        fa = render_clip(a, size=48, frame_numbers=[1], expression=False, nuisances=False).frames[0]
        fb = render_clip(b, size=48, frame_numbers=[1], expression=False, nuisances=False).frames[0]
        assert np.abs(fa.astype(int) - fb).mean() > 5


def test_labelled_plans_do_not_change():
    """The pool's option leaves labelled datasets as they were (same subjects, labels and timelines)."""
    default = plan_dataset(clips=8, subjects=3, seed=0)
    explicit = plan_dataset(clips=8, subjects=3, seed=0, unlabeled=False)
    assert default == explicit
    assert [s.subject for s in default] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert all(s.label == s.emotion for s in default)


# ------------------------------------------------------------------------------------------------ what is written


def test_pool_annotations_have_no_labels(pool_frames: Path):
    rows = _read_csv(pool_frames / "annotations.csv")
    assert len(rows) == 4
    assert list(rows[0]) == ["subject", "clip", "path", "onset", "apex", "offset", "fps", "emotion", "aus",
                             "first_frame", "dataset"]
    for row in rows:
        assert all(row[c] == "" for c in LABEL_COLUMNS), row
        assert int(row["subject"]) > POOL_SUBJECT_OFFSET and int(row["fps"]) in (200, 300, 500)
        assert (pool_frames / row["path"] / "00001.png").is_file()
    truth = _read_csv(pool_frames / "ground_truth.csv")
    assert [r["clip"] for r in truth] == [r["clip"] for r in rows]
    for r in truth:  # the true ones are kept on the side
        assert r["emotion"] in EMOTIONS and r["annotated_emotion"] == "" and r["label_flipped"] == "0"
        assert 1 <= int(r["onset"]) < int(r["apex"]) < int(r["offset"]) <= int(r["num_frames"]) and r["aus"]
    meta = json.loads((pool_frames / "synth.json").read_text())
    assert meta["unlabeled"] is True and meta["subject_ids"] == [1001, 1002] and meta["clips"] == 4
    assert sum(meta["class_counts"].values()) == 0 and sum(meta["true_class_counts"].values()) == 4


def test_labelled_synth_json_has_no_pool_keys(tmp_path: Path):
    generate_dataset(tmp_path / "d", clips=2, subjects=1, size=32, fmt="frames", workers=1, progress=False)
    meta = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert "unlabeled" not in meta and "subject_ids" not in meta


# ------------------------------------------------------------------------------------------------ loading it


def test_unlabelled_load_fills_phases_from_the_frames(pool_frames: Path):
    result = load_clip_table(pool_frames / "annotations.csv", labels_required=False)
    assert result.problems == []
    table = result.resolve(strict=True)
    truth = {r["clip"]: r for r in _read_csv(pool_frames / "ground_truth.csv")}
    assert len(table) == 4
    for row in table.itertuples():
        frames = len(list(Path(row.path).glob("*.png")))
        n = int(truth[row.clip]["num_frames"])
        assert frames == n
        assert (row.onset, row.apex, row.offset) == (1, (1 + n) // 2, n)  # the whole clip, first_frame=1
        assert row.apex_estimated and row.emotion == "" and row.aus == ""
        # the true expression lies inside the filled span
        assert row.onset <= int(truth[row.clip]["onset"]) and int(truth[row.clip]["offset"]) <= row.offset


def test_unlabelled_load_counts_video_frames(tmp_path: Path):
    out = tmp_path / "mp4"
    generate_dataset(out, fmt="mp4", **(POOL | dict(clips=2, subjects=1)))
    table = load_clip_table(out / "annotations.csv", labels_required=False).resolve(strict=True)
    truth = {r["clip"]: int(r["num_frames"]) for r in _read_csv(out / "ground_truth.csv")}
    assert [(r.onset, r.offset) for r in table.itertuples()] == [(1, truth[c]) for c in table["clip"]]


def test_labels_required_rejects_the_pool_in_one_line(pool_frames: Path):
    path = pool_frames / "annotations.csv"
    result = load_clip_table(path)
    assert len(result.table) == 0 and {p.field for p in result.errors} == {"onset", "offset"}
    with pytest.raises(AnnotationError) as info:
        result.resolve(strict=True)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path} row 2: missing onset frame number [onset='']" in message


def test_unknown_frame_count_is_an_error_not_a_guess(pool_frames: Path):
    """check_files=False cannot count frames: a blank phase is an error naming the column, never a placeholder."""
    result = load_clip_table(pool_frames / "annotations.csv", labels_required=False, check_files=False)
    assert len(result.table) == 0 and len(result.errors) == 4
    first = result.errors[0]
    assert first.row == 2 and first.field == "onset" and "check_files=True" in first.message


def test_blank_emotion_is_the_same_error_as_before(tmp_path: Path):
    """With phases given, labels_required=True reports a blank emotion exactly as today; False accepts it
    and keeps the given phases."""
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("subject,clip,path,onset,apex,offset,fps,emotion,aus\n1,c1,c1.mp4,2,3,5,200,,12\n",
                        encoding="utf-8")
    strict = load_clip_table(csv_path, check_files=False)
    assert [(p.row, p.field, p.message) for p in strict.problems] == [(2, "emotion", "missing emotion")]
    with pytest.raises(AnnotationError, match=r"a\.csv row 2 \(clip c1\): missing emotion \[emotion=''\]"):
        strict.resolve(strict=True)
    lenient = load_clip_table(csv_path, check_files=False, labels_required=False)
    assert lenient.problems == []
    row = lenient.table.iloc[0]
    assert (row.onset, row.apex, row.offset, row.emotion, bool(row.apex_estimated)) == (2, 3, 5, "", False)


def test_label_columns_may_be_absent_and_a_given_phase_is_kept(tmp_path: Path, pool_frames: Path):
    clip = pool_frames / _read_csv(pool_frames / "annotations.csv")[0]["path"]
    n = len(list(clip.glob("*.png")))
    path = tmp_path / "bare.csv"
    path.write_text(f"subject,clip,path,fps,first_frame\n7,x,{clip},200,1\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="missing column"):
        load_clip_table(path)
    row = load_clip_table(path, labels_required=False).resolve(strict=True).iloc[0]
    assert (row.onset, row.offset, row.emotion, row.aus) == (1, n, "", "")
    partial = tmp_path / "partial.csv"
    partial.write_text(f"subject,clip,path,onset,apex,offset,fps,emotion,aus\n7,x,{clip},3,,,200,,\n", encoding="utf-8")
    row = load_clip_table(partial, labels_required=False).resolve(strict=True).iloc[0]
    assert (row.onset, row.apex, row.offset) == (3, (3 + n) // 2, n)


def test_unlabelled_clip_without_frames_is_one_error(tmp_path: Path):
    path = tmp_path / "missing.csv"
    path.write_text("subject,clip,path,fps\n1,gone,gone_folder,200\n", encoding="utf-8")
    result = load_clip_table(path, labels_required=False)
    assert len(result.table) == 0 and len(result.errors) == 1
    assert result.errors[0].field == "path" and "cannot be counted" in result.errors[0].message


# ------------------------------------------------------------------------------------------------ the command line


def test_cli_writes_a_pool_and_documents_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "pool"
    code = main(["synth", str(out), "--unlabeled", "3", "--subjects", "1", "--size", "32", "--format", "frames",
                 "--seed", "1", "--workers", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 3 unlabeled clips" in printed and "sub1001..sub1001" in printed and "labels: none" in printed
    rows = _read_csv(out / "annotations.csv")
    assert len(rows) == 3 and {r["emotion"] for r in rows} == {""}
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "--unlabeled N" in capsys.readouterr().out


@pytest.mark.parametrize("argv, option", [
    (["--unlabeled", "0"], "--unlabeled must be a positive integer"),
    (["--unlabeled", "-4"], "--unlabeled must be a positive integer"),
    (["--unlabeled", "5", "--clips", "5"], "--clips 5 and --unlabeled 5"),
    (["--unlabeled", "5", "--subjects", "2", "--label-noise", "0.1"], "--label-noise"),
    (["--unlabeled", "5", "--subjects", "2", "--dfme-sheet"], "--dfme-sheet"),
    (["--unlabeled", "3", "--subjects", "4"], "--subjects (4) must not exceed --unlabeled (3)"),
])
def test_cli_rejects_bad_unlabeled_values_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      argv: list[str], option: str):
    out = tmp_path / "bad"
    assert main(["synth", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"microexp synth: error: {option}") and err.count("\n") == 1
    assert not out.exists()


def test_generate_dataset_rejects_a_bad_pool_size(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^--unlabeled must be a positive integer"):
        generate_dataset(tmp_path / "out", **(POOL | dict(clips=0)))
    assert not (tmp_path / "out").exists()
