"""Tests of the synthetic DFME-style benchmark (microexp.synth, ``microexp synth``)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexp.data.annotations import load_clip_table
from microexp.data.video import open_video
from microexp.errors import ConfigError
from microexp.synth import (
    EMOTION_AUS,
    EMOTIONS,
    FPS_PARTS,
    PRESETS,
    au_displacement_field,
    class_counts,
    expression_profile,
    generate_dataset,
    plan_dataset,
    render_clip,
)
from microexp.synth.tables import DFME_COLUMNS

TINY = dict(clips=8, subjects=3, size=32, progress=False)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 4.0, 8.0])
def test_class_counts_follow_imbalance_ratio(ratio):
    counts = class_counts(700, ratio)
    assert sum(counts.values()) == 700 and set(counts) == set(EMOTIONS)
    assert max(counts.values()) / min(counts.values()) == pytest.approx(ratio, rel=0.05)
    specs = plan_dataset(clips=350, subjects=10, seed=1, imbalance_ratio=ratio)
    planned = Counter(s.label for s in specs)
    assert planned == Counter(class_counts(350, ratio))


def test_default_imbalance_is_about_8_and_every_class_present():
    counts = class_counts(300)
    assert 7 <= max(counts.values()) / min(counts.values()) <= 9
    assert min(class_counts(7).values()) == 1


def test_frame_rates_are_dfme_parts_one_per_subject():
    specs = plan_dataset(clips=400, subjects=40, seed=2)
    fps = Counter(s.fps for s in specs)
    assert set(fps) == {200, 300, 500}
    share = {f: fps[f] / len(specs) for f in fps}
    for rate, expected in FPS_PARTS:
        assert share[rate] == pytest.approx(expected, abs=0.06)
    per_subject = {}
    for s in specs:
        assert per_subject.setdefault(s.subject, s.fps) == s.fps


@pytest.mark.parametrize("preset", list(PRESETS))
def test_timeline_has_margins_and_durations_in_range(preset):
    p = PRESETS[preset]
    specs = plan_dataset(preset=preset, clips=300, subjects=20, seed=3)
    fractions = []
    for s in specs:
        assert 1 <= s.onset < s.apex < s.offset <= s.num_frames <= p.max_frames
        assert s.onset - 1 >= p.margin_frames[0] and s.num_frames - s.offset >= p.margin_frames[0]
        assert s.onset - 1 <= p.margin_frames[1] and s.num_frames - s.offset <= p.margin_frames[1]
        one_frame = 1000.0 / s.fps
        assert p.duration_ms[0] - one_frame <= s.duration_ms <= p.duration_ms[1] + one_frame
        assert 40 - one_frame <= s.duration_ms <= 500 + one_frame
        fractions.append((s.apex - s.onset) / (s.offset - s.onset))
    # the apex is not always in the middle
    assert min(fractions) < 0.35 and max(fractions) > 0.55


def test_au_strings_per_emotion():
    specs = plan_dataset(clips=700, subjects=20, seed=4, imbalance_ratio=1)
    seen = {e: set() for e in EMOTIONS}
    for s in specs:
        codes = s.aus.split("+")
        seen[s.emotion].add(s.aus)
        recipe = EMOTION_AUS[s.emotion]
        numbers = {int(c.lstrip("RL")) for c in codes}
        assert set(recipe.get("core", ())) <= numbers
        allowed = set(recipe.get("core", ())) | set(recipe["optional"])
        for group, _ in recipe.get("choice", ()):
            allowed |= set(group)
        assert numbers <= allowed, (s.emotion, s.aus)
        if s.emotion == "contempt":
            assert s.aus in {"R12", "L12", "R14", "L14"}
        else:
            assert all(c.isdigit() for c in codes), s.aus
        assert codes == sorted(codes, key=lambda c: int(c.lstrip("RL")))
    assert {"6+12", "12"} <= seen["happiness"]
    assert {"1+2", "1+2+5"} <= seen["surprise"]
    assert seen["sadness"] == {"1+4+15"}
    assert {"4+7", "4+7+23"} <= seen["anger"]
    assert any("9" in a.split("+") for a in seen["disgust"]) and any("10" in a.split("+") for a in seen["disgust"])
    assert seen["contempt"] == {"R12", "L12", "R14", "L14"}
    # shared AUs: no AU identifies a class on its own
    assert all(any(str(au) in a.split("+") for a in seen["fear"]) for au in (1, 2, 4))


def test_label_noise_flips_annotations_only(tmp_path):
    specs = plan_dataset(clips=200, subjects=10, seed=5, label_noise=0.1)
    flipped = [s for s in specs if s.label_flipped]
    assert len(flipped) == 20
    clean = plan_dataset(clips=200, subjects=10, seed=5)
    assert [s.emotion for s in specs] == [s.emotion for s in clean]
    assert [s.aus for s in specs] == [s.aus for s in clean]


# ------------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------------
def test_expression_profile_rises_and_falls():
    spec = plan_dataset(clips=10, subjects=2, seed=6)[3]
    p = expression_profile(spec)
    assert p.shape == (spec.num_frames,)
    assert p[spec.onset - 1] == 0 and p[spec.offset - 1] == 0 and p[spec.apex - 1] == pytest.approx(1.0)
    assert np.all(p[: spec.onset] == 0) and np.all(p[spec.offset - 1:] == 0)
    assert np.all(np.diff(p[spec.onset - 1: spec.apex]) > 0) and np.all(np.diff(p[spec.apex - 1: spec.offset]) < 0)


def test_render_clip_shapes_and_frame_subsets_match():
    spec = plan_dataset(clips=10, subjects=2, seed=7)[0]
    full = render_clip(spec, size=32)
    assert full.frames.shape == (spec.num_frames, 32, 32, 3) and full.frames.dtype == np.uint8
    assert list(full.frame_numbers) == list(range(1, spec.num_frames + 1))
    part = render_clip(spec, size=32, frame_numbers=[spec.apex, spec.onset])
    np.testing.assert_array_equal(part.frames[0], full.frames[spec.apex - 1])
    np.testing.assert_array_equal(part.frames[1], full.frames[spec.onset - 1])
    with pytest.raises(ValueError, match="frame numbers"):
        render_clip(spec, size=32, frame_numbers=[0])


@pytest.mark.parametrize("size", [48, 128])
def test_au_motion_amplitude_in_pixel_range(size):
    scale = size / 128
    for preset in PRESETS.values():
        for spec in plan_dataset(preset=preset, clips=14, subjects=2, seed=8, imbalance_ratio=1):
            field = au_displacement_field(spec, size=size)
            peak = float(np.hypot(field[..., 0], field[..., 1]).max())
            assert 0.5 * preset.amplitude_px[0] * scale <= peak <= preset.amplitude_px[1] * scale + 1e-4
            assert 0.25 * scale <= peak <= 2.0 * scale + 1e-4


def test_rendered_motion_matches_the_field():
    """Optical flow between the apex with and without the expression recovers the AU displacement."""
    ratios = []
    for spec in plan_dataset(clips=14, subjects=2, seed=9, imbalance_ratio=1)[:7]:
        with_au = render_clip(spec, size=128, frame_numbers=[spec.onset, spec.apex], nuisances=False)
        without = render_clip(spec, size=128, frame_numbers=[spec.onset, spec.apex], nuisances=False,
                              expression=False)
        # no motion at the onset, and nothing moves far from the AU anchors
        np.testing.assert_array_equal(with_au.frames[0], without.frames[0])
        g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (without.frames[1], with_au.frames[1]))
        flow = cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 1, 8, 5, 5, 1.1, cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
        field = with_au.field
        magnitude = np.hypot(field[..., 0], field[..., 1])
        strong = magnitude > 0.6 * magnitude.max()
        projected = (flow * field).sum(axis=2) / np.maximum(magnitude, 1e-6)
        ratios.append(projected[strong].mean() / magnitude[strong].mean())
        assert np.abs(g1.astype(int) - g0)[magnitude < 1e-3].max() <= 1
    assert 0.6 <= np.median(ratios) <= 1.2


def test_nuisances_move_the_neutral_face():
    spec = plan_dataset(clips=10, subjects=2, seed=10)[1]
    r = render_clip(spec, size=48, frame_numbers=[1, spec.num_frames], expression=False)
    clean = render_clip(spec, size=48, frame_numbers=[1, spec.num_frames], expression=False, nuisances=False)
    np.testing.assert_array_equal(clean.frames[0], clean.frames[1])
    assert np.abs(r.frames[0].astype(int) - r.frames[1]).mean() > 0.5  # noise, drift, light


def test_faces_differ_between_subjects_and_look_like_faces():
    specs = plan_dataset(clips=6, subjects=6, seed=11)
    firsts = [render_clip(s, size=128, frame_numbers=[1]).frames[0] for s in specs]
    for a, b in zip(firsts, firsts[1:]):
        assert np.abs(a.astype(int) - b).mean() > 5
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty(), "the OpenCV build setup.py requires ships the Haar cascades"
    hits = sum(len(cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 3)) > 0 for f in firsts)
    assert hits >= 5


@pytest.mark.slow
def test_class_lives_in_motion_not_in_a_single_frame():
    """Logistic regression on apex frames is near chance; on apex - onset it is clearly above chance.

    Subject-independent 5-fold CV on 350 balanced medium clips at 48 px (features: 24x24 grey).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    specs = plan_dataset(preset="medium", clips=350, subjects=20, seed=3, imbalance_ratio=1)
    apex, diff, labels, groups = [], [], [], []
    for s in specs:
        frames = render_clip(s, size=48, frame_numbers=[s.onset, s.apex]).frames.astype(np.float32).mean(axis=3)
        onset_f, apex_f = (cv2.resize(f, (24, 24), interpolation=cv2.INTER_AREA) for f in frames)
        apex.append(apex_f.ravel())
        diff.append((apex_f - onset_f).ravel())
        labels.append(EMOTIONS.index(s.emotion))
        groups.append(s.subject)

    def accuracy(features: list[np.ndarray]) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))
        return float(cross_val_score(model, np.array(features), labels, groups=groups, cv=GroupKFold(5)).mean())

    chance = 1 / len(EMOTIONS)
    apex_acc, diff_acc = accuracy(apex), accuracy(diff)
    print(f"apex-only accuracy {apex_acc:.3f}, apex-minus-onset accuracy {diff_acc:.3f}, chance {chance:.3f}")
    assert apex_acc < chance + 0.1
    assert diff_acc > 2.5 * chance
    assert diff_acc > apex_acc + 0.2


# ------------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate_dataset(tmp_path / "a", fmt="frames", seed=0, workers=1, **TINY)
    b = generate_dataset(tmp_path / "b", fmt="frames", seed=0, workers=2, **TINY)
    c = generate_dataset(tmp_path / "c", fmt="frames", seed=1, workers=1, **TINY)
    files_a, files_b = _all_files(a.out_dir), _all_files(b.out_dir)
    assert files_a.keys() == files_b.keys()
    assert all(files_a[k] == files_b[k] for k in files_a)
    files_c = _all_files(c.out_dir)
    assert files_c["annotations.csv"] != files_a["annotations.csv"]
    common = sorted(k for k in files_a.keys() & files_c.keys() if k.endswith("00001.png"))
    assert common and any(files_a[k] != files_c[k] for k in common)


def test_frames_format_layout_and_readable(tmp_path):
    summary = generate_dataset(tmp_path / "out", fmt="frames", seed=0, workers=1, **TINY)
    rows = _read_csv(summary.annotations)
    assert list(rows[0]) == ["subject", "clip", "path", "onset", "apex", "offset", "fps", "emotion", "aus",
                             "first_frame", "dataset"]
    assert len(rows) == 8 and summary.clips == 8
    for row in rows:
        folder = summary.out_dir / row["path"]
        assert row["path"] == f"clips/sub{int(row['subject']):04d}/{row['clip']}"
        assert (folder / "00001.png").is_file()
        assert int(row["first_frame"]) == 1 and int(row["fps"]) in (200, 300, 500)
        assert 1 <= int(row["onset"]) <= int(row["apex"]) <= int(row["offset"]) <= len(list(folder.glob("*.png")))
    meta = json.loads((summary.out_dir / "synth.json").read_text())
    assert meta["preset"]["name"] == "medium" and meta["seed"] == 0 and meta["clips"] == 8
    assert sum(meta["class_counts"].values()) == 8
    truth = _read_csv(summary.out_dir / "ground_truth.csv")
    assert [r["clip"] for r in truth] == [r["clip"] for r in rows]


def test_mp4_format_readable_with_video_layer(tmp_path):
    summary = generate_dataset(tmp_path / "out", fmt="mp4", seed=0, workers=1, **TINY)
    rows = _read_csv(summary.annotations)
    specs = {s.clip: s for s in plan_dataset(clips=8, subjects=3, seed=0)}
    for row in rows[:3]:
        path = summary.out_dir / row["path"]
        assert path.suffix == ".mp4" and path.is_file()
        spec = specs[row["clip"]]
        with open_video(path, first_frame=int(row["first_frame"])) as reader:
            assert len(reader) == spec.num_frames
            assert reader.fps == pytest.approx(spec.fps)
            got = reader.get_frames_by_number([int(row["apex"])])
        want = render_clip(spec, size=32, frame_numbers=[spec.apex]).frames
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).mean() < 6  # near-lossless H.264


def test_annotations_load_as_clip_table(tmp_path):
    summary = generate_dataset(tmp_path / "out", fmt="frames", seed=0, workers=1, label_noise=0.25, **TINY)
    result = load_clip_table(summary.annotations)
    assert not [p for p in result.problems if p.severity == "error"]
    table = result.table
    assert len(table) == 8 and set(table["dataset"]) == {"microexp"}
    truth = {r["clip"]: r for r in _read_csv(summary.out_dir / "ground_truth.csv")}
    flipped = [c for c, r in truth.items() if r["label_flipped"] == "1"]
    assert len(flipped) == 2 == summary.label_flips
    for row in table.itertuples():
        assert (row.emotion != truth[row.clip]["emotion"]) == (row.clip in flipped)


def test_dfme_sheet_and_layout(tmp_path):
    import pandas as pd

    summary = generate_dataset(tmp_path / "out", fmt="mp4", seed=0, workers=1, dfme_sheet=True,
                               clips=12, subjects=12, size=32, progress=False)
    sheet_path = summary.out_dir / "dfme" / "DFME_data_coding.xlsx"
    sheet = pd.read_excel(sheet_path)
    assert tuple(sheet.columns) == DFME_COLUMNS
    rows = _read_csv(summary.annotations)
    assert list(sheet["Filename"]) == [r["clip"] for r in rows]
    assert list(sheet["Subject"]) == [f"sub{int(r['subject']):04d}" for r in rows]
    assert list(sheet["ApexFrame"]) == [int(r["apex"]) for r in rows]
    assert list(sheet["fps"]) == [int(r["fps"]) for r in rows]
    for subject, filename in zip(sheet["Subject"], sheet["Filename"]):
        n = int(subject[3:])
        folder = f"{(n - 1) // 10 * 10 + 1:04d}-{(n - 1) // 10 * 10 + 10:04d}"
        assert (summary.out_dir / "dfme" / folder / filename / "00001.png").is_file()
    result = load_clip_table(sheet_path)
    assert not [p for p in result.problems if p.severity == "error"]
    assert list(result.table["onset"]) == [int(r["onset"]) for r in rows]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    generate_dataset(tmp_path / "out", fmt="frames", seed=0, workers=1, **TINY)
    with pytest.raises(ConfigError, match="--overwrite"):
        generate_dataset(tmp_path / "out", fmt="frames", seed=0, workers=1, **TINY)
    summary = generate_dataset(tmp_path / "out", fmt="frames", seed=1, workers=1, overwrite=True, **TINY)
    assert json.loads((summary.out_dir / "synth.json").read_text())["seed"] == 1


# ------------------------------------------------------------------------------------------------------
# errors and CLI
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, option",
    [
        (dict(clips=-3), "--clips"),
        (dict(clips=0), "--clips"),
        (dict(subjects=0), "--subjects"),
        (dict(clips=5, subjects=6), "--subjects"),
        (dict(preset="extreme"), "--preset"),
        (dict(imbalance_ratio=0.5), "--imbalance-ratio"),
        (dict(label_noise=1.0), "--label-noise"),
        (dict(label_noise=-0.1), "--label-noise"),
        (dict(fmt="avi"), "--format"),
        (dict(size=33), "--size"),
        (dict(size=16), "--size"),
        (dict(workers=0), "--workers"),
        (dict(seed=-1), "--seed"),
        (dict(uncropped=(30, 64)), "--uncropped"),
        (dict(uncropped=(64, 65)), "--uncropped"),
        (dict(uncropped=64), "--uncropped"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, kwargs, option):
    options = dict(clips=8, subjects=2, size=32, progress=False) | kwargs
    with pytest.raises(ConfigError) as info:
        generate_dataset(tmp_path / "out", **options)
    message = str(info.value)
    assert option in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_unknown_preset_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="easy, medium, hard"):
        generate_dataset(tmp_path / "out", preset="extreme", **TINY)


def test_cli_generates_and_reports_errors(tmp_path, capsys):
    from microexp.cli import main

    out = tmp_path / "cli"
    code = main(["synth", str(out), "--clips", "7", "--subjects", "2", "--size", "32", "--format", "frames",
                 "--seed", "3", "--imbalance-ratio", "1", "--workers", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 7 clips" in printed and "fps" in printed
    assert len(_read_csv(out / "annotations.csv")) == 7
    assert main(["synth", str(tmp_path / "bad"), "--label-noise", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("microexp synth: error: --label-noise") and err.count("\n") == 1
    with pytest.raises(SystemExit):  # argparse rejects the value before anything is written
        main(["synth", str(tmp_path / "bad"), "--uncropped", "320by240"])
    assert "expected WIDTHxHEIGHT such as 320x240, got '320by240'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_uncropped_places_each_subject_at_a_fixed_position(tmp_path):
    summary = generate_dataset(tmp_path / "out", fmt="frames", seed=0, workers=1, uncropped=(96, 64), **TINY)
    assert "32 px faces in 96x64 frames" in summary.format()
    truth = _read_csv(summary.out_dir / "ground_truth.csv")
    specs = {s.clip: s for s in plan_dataset(clips=8, subjects=3, seed=0)}
    positions = {}
    for row in truth:
        spec = specs[row["clip"]]
        x, y = int(row["face_x"]), int(row["face_y"])
        assert int(row["face_size"]) == 32 and 0 <= x <= 64 and 0 <= y <= 32
        assert positions.setdefault(spec.subject, (x, y)) == (x, y)  # one position per subject
        with open_video(summary.out_dir / f"clips/sub{spec.subject:04d}/{spec.clip}", first_frame=1) as reader:
            frame = reader.get_frames_by_number([spec.apex])[0]
        assert frame.shape == (64, 96, 3)
        np.testing.assert_array_equal(frame[y:y + 32, x:x + 32],
                                      render_clip(spec, size=32, frame_numbers=[spec.apex]).frames[0])
    assert len(set(positions.values())) > 1


def test_mp4_clips_record_the_first_frame_number_of_the_annotations(tmp_path):
    """A bare synthetic mp4 tells predict its numbering, as a packed video does (first_frame=1)."""
    from microexp.inference.predictor import recorded_first_frame

    generate_dataset(tmp_path / "d", subjects=2, clips=2, size=32, seed=0, workers=1, progress=False)
    table = load_clip_table(tmp_path / "d" / "annotations.csv").resolve(strict=True)
    for row in table.itertuples():
        assert recorded_first_frame(row.path) == int(row.first_frame) == 1
