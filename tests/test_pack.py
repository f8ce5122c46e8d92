"""Packing frame folders into videos: exact round trip, numbering, resumability, CLI."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from microexp.data.annotations import load_clip_table
from microexp.data.face import FaceBox, probe_positions, stable_face_box
from microexp.data.pack import CSV_COLUMNS, FACE_BOX_COLUMNS, PackSettings, _split_tag, pack_clip, pack_table
from microexp.synth import plan_dataset, render_clip
from microexp.data.video import open_video
from microexp.errors import ConfigError, VideoReadError

H, W = 32, 32
#: The exact (bit-identical) mode, which most of these tests compare against; the default is mjpeg (lossy).
LOSSLESS = PackSettings(mode="lossless")


def _crop(**settings) -> PackSettings:
    """Lossless face-crop settings (exact comparisons)."""
    return PackSettings(mode="lossless", face_crop=True, **settings)


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def frame_folder(folder: Path, numbers, seed: int, pattern: str = "img{}.png") -> dict[int, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = noise(len(numbers), seed)
    for n, frame in zip(numbers, frames):
        Image.fromarray(frame).save(folder / pattern.format(n))
    return dict(zip(numbers, frames))


def clip_table(rows: list[dict]) -> pd.DataFrame:
    """A clip table with the contract's columns, as load_clip_table returns it."""
    defaults = {"apex": None, "first_frame": 0, "fps": 200.0, "emotion": "happiness", "aus": "12",
                "dataset": "casme2", "apex_estimated": False}
    table = pd.DataFrame([{**defaults, **r} for r in rows])
    return table[["subject", "clip", "path", "onset", "apex", "offset", "first_frame", "fps", "emotion", "aus",
                  "dataset", "apex_estimated"]]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "CASME2"
    a = frame_folder(root / "sub01" / "EP02_01f", range(5, 17), seed=1)  # numbering starts at 5
    b = frame_folder(root / "sub02" / "EP03_02", range(1, 9), seed=2)
    table = clip_table([
        {"subject": 1, "clip": "sub01/EP02_01f", "path": str(root / "sub01" / "EP02_01f"),
         "onset": 6, "apex": 9, "offset": 15},
        {"subject": 2, "clip": "sub02/EP03_02", "path": str(root / "sub02" / "EP03_02"),
         "onset": 2, "apex": 4, "offset": 7, "apex_estimated": True, "fps": 100.0},
    ])
    return root, table, {"sub01/EP02_01f": a, "sub02/EP03_02": b}


def read_back(out: Path, row, backend: str, numbers) -> np.ndarray:
    with open_video(out / row.path, backend=backend, first_frame=int(row.first_frame)) as reader:
        return reader.get_frames_by_number(numbers)


def test_lossless_round_trip_keeps_numbering(tmp_path, dataset):
    _, table, frames = dataset
    out = tmp_path / "packed"
    result = pack_table(table, out, progress=False, settings=LOSSLESS)
    assert not result.failed and result.skipped == 0
    csv = pd.read_csv(out / "annotations.csv", keep_default_na=False)
    assert list(csv.columns) == list(CSV_COLUMNS)
    assert list(csv["path"]) == ["clips/sub01/EP02_01f.mp4", "clips/sub02/EP03_02.mp4"]
    assert list(csv["first_frame"]) == [5, 1]
    assert list(csv["fps"]) == [200.0, 100.0]
    assert list(csv["apex"].astype(str)) == ["9", ""]  # estimated apex left blank: re-estimated on load
    for row in csv.itertuples():
        source = frames[row.clip]
        numbers = sorted(source)
        for backend in ("decord", "pyav"):
            got = read_back(out, row, backend, [row.offset, row.onset, numbers[0], numbers[-1]])
            np.testing.assert_array_equal(got, np.stack([source[n] for n in (row.offset, row.onset, numbers[0],
                                                                              numbers[-1])]))
        with open_video(out / row.path, first_frame=int(row.first_frame)) as reader:
            assert reader.frame_numbers == numbers
            assert reader.fps == pytest.approx(row.fps)


def test_packed_csv_loads_with_the_annotation_reader(tmp_path, dataset):
    _, table, frames = dataset
    out = tmp_path / "packed"
    pack_table(table, out, progress=False, settings=LOSSLESS)
    result = load_clip_table(out / "annotations.csv", format="microexp")
    loaded = result.resolve(strict=True)
    assert list(loaded["first_frame"]) == [5, 1]
    assert list(loaded["apex_estimated"]) == [False, True]
    assert list(loaded["dataset"]) == ["casme2", "casme2"]
    row = loaded.iloc[0]
    with open_video(row["path"], first_frame=int(row["first_frame"])) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([int(row["apex"])]),
                                      frames["sub01/EP02_01f"][int(row["apex"])][None])


def test_rerun_skips_packed_clips_and_repacks_on_new_settings(tmp_path, dataset):
    _, table, _ = dataset
    out = tmp_path / "packed"
    pack_table(table, out, progress=False, settings=LOSSLESS)
    files = sorted((out / "clips").rglob("*.mp4"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = pack_table(table, out, progress=False, settings=LOSSLESS)
    assert again.skipped == 2 and len(again.table) == 2
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    near = pack_table(table, out, settings=PackSettings(mode="near-lossless", gop=4), progress=False)
    assert near.skipped == 0
    assert not [p for p in (out / "clips").rglob(".*")]  # no temporary file left behind


def test_changed_source_frames_are_repacked(tmp_path, dataset):
    root, table, _ = dataset
    out = tmp_path / "packed"
    pack_table(table, out, progress=False, settings=LOSSLESS)
    new = noise(1, seed=9)[0]
    Image.fromarray(new).save(root / "sub02" / "EP03_02" / "img4.png")  # re-exported frame
    result = pack_table(table, out, progress=False, settings=LOSSLESS)
    assert result.skipped == 1
    with open_video(out / "clips" / "sub02" / "EP03_02.mp4", first_frame=1) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([4])[0], new)


def test_default_gop_depends_on_mode():
    assert PackSettings().keyframe_interval == 1 and PackSettings().mode == "mjpeg"
    assert PackSettings(mode="lossless").keyframe_interval == 1
    assert PackSettings(mode="near-lossless").keyframe_interval == 16
    assert PackSettings(mode="near-lossless").rate_factor == 12
    assert PackSettings(mode="lossless", gop=4).keyframe_interval == 4


def test_interrupted_file_is_repacked(tmp_path, dataset):
    _, table, frames = dataset
    out = tmp_path / "packed"
    pack_table(table, out, progress=False, settings=LOSSLESS)
    dest = out / "clips" / "sub01" / "EP02_01f.mp4"
    dest.write_bytes(dest.read_bytes()[:200])  # e.g. copied over by hand and cut short
    result = pack_table(table, out, progress=False, settings=LOSSLESS)
    assert result.skipped == 1
    with open_video(dest, first_frame=5) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([16]), frames["sub01/EP02_01f"][16][None])


def test_missing_frame_numbers_are_filled(tmp_path):
    folder = tmp_path / "gappy"
    frames = frame_folder(folder, [3, 4, 6, 7], seed=3, pattern="{:05d}.png")
    dest = tmp_path / "gappy.mp4"
    packed = pack_clip(folder, dest, fps=200, settings=LOSSLESS)
    assert (packed.first_frame, packed.frames, packed.filled) == (3, 5, 1)
    with open_video(dest, first_frame=3) as reader:
        got = reader.get_frames_by_number([3, 4, 5, 6, 7])
    expected = np.stack([frames[3], frames[4], frames[4], frames[6], frames[7]])
    np.testing.assert_array_equal(got, expected)


def test_a_frame_image_gone_mid_pack_is_the_source_s_error_and_leaves_nothing(tmp_path, monkeypatch):
    from microexp.data.video.folder import FolderReader

    folder = tmp_path / "vanishing"
    frame_folder(folder, range(1, 6), seed=4)
    real_load = FolderReader._load

    def load(self, file):
        if file.name == "img4.png":  # listed, then deleted before it is read
            file.unlink()
        return real_load(self, file)

    monkeypatch.setattr(FolderReader, "_load", load)
    dest = tmp_path / "out" / "vanishing.mp4"
    with pytest.raises(VideoReadError, match=r"frame image not found: .*img4\.png") as info:
        pack_clip(folder, dest, fps=200, settings=LOSSLESS)
    assert "cannot write" not in str(info.value)  # not reported as an output error
    assert list(dest.parent.iterdir()) == []  # no packed file, no temporary file


def test_rows_sharing_a_source_share_one_file(tmp_path):
    folder = tmp_path / "spNO.1" / "a" / "color"
    frame_folder(folder, range(10), seed=4, pattern="{}.jpg")
    table = clip_table([
        {"subject": 1, "clip": "spNO.1/a/2", "path": str(folder), "onset": 2, "apex": 3, "offset": 4,
         "dataset": "casme3", "fps": 30.0},
        {"subject": 1, "clip": "spNO.1/a/6", "path": str(folder), "onset": 6, "apex": 7, "offset": 9,
         "dataset": "casme3", "fps": 30.0},
    ])
    result = pack_table(table, tmp_path / "out", source_root=tmp_path, progress=False, settings=LOSSLESS)
    assert len(result.packed) == 1
    assert list(result.table["path"]) == ["clips/spNO.1/a/color.mp4"] * 2


def test_broken_clip_is_reported_and_others_packed(tmp_path, dataset):
    root, table, _ = dataset
    broken = root / "sub02" / "EP03_02" / "img3.png"
    broken.write_bytes(broken.read_bytes()[:50])
    result = pack_table(table, tmp_path / "out", progress=False, settings=LOSSLESS)
    assert list(result.table["clip"]) == ["sub01/EP02_01f"]
    [(source, message)] = result.failed.items()
    assert source.endswith("EP03_02") and "img3.png" in message


def test_parallel_workers(tmp_path, dataset):
    _, table, frames = dataset
    result = pack_table(table, tmp_path / "out", workers=2, progress=False, settings=LOSSLESS)
    assert not result.failed and len(result.table) == 2
    row = result.table.iloc[1]
    with open_video(tmp_path / "out" / row["path"], first_frame=int(row["first_frame"])) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([8])[0], frames["sub02/EP03_02"][8])


def test_worker_pool_spawns_instead_of_forking(tmp_path, dataset, monkeypatch):
    """pack has imported OpenCV: a forked worker inherits its threads' locks (the project's rule is spawn)."""
    import concurrent.futures

    import microexp.data.pack as pack_module

    methods = []

    class SpyPool(concurrent.futures.ProcessPoolExecutor):  # the real pool, recording its start method
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            methods.append(self._mp_context.get_start_method())

    monkeypatch.setattr(pack_module, "ProcessPoolExecutor", SpyPool)
    _, table, frames = dataset
    result = pack_table(table, tmp_path / "out", workers=2, progress=False, settings=LOSSLESS)
    assert methods == ["spawn"]
    assert not result.failed and len(result.table) == 2
    row = result.table.iloc[0]
    with open_video(tmp_path / "out" / row["path"], first_frame=int(row["first_frame"])) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([16])[0], frames["sub01/EP02_01f"][16])


def test_settings_validation():
    with pytest.raises(ConfigError, match="pack mode 'lossy' is not one of mjpeg, lossless, near-lossless"):
        PackSettings(mode="lossy")
    with pytest.raises(ConfigError, match="crf applies to mode 'near-lossless'"):
        PackSettings(mode="lossless", crf=10)
    with pytest.raises(ConfigError, match="gop must be >= 1"):
        PackSettings(gop=0)
    for margin in (-0.1, float("inf"), float("nan"), "wide"):
        with pytest.raises(ConfigError, match="--face-margin must be a finite number >= 0, got"):
            _crop(face_margin=margin)
    with pytest.raises(ConfigError, match="--face-fallback 'guess' is not one of subject, none"):
        _crop(face_fallback="guess")


def _write_our_csv(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    data = tmp_path / "data"
    frames = frame_folder(data / "clips" / "sub0001" / "c1", range(1, 11), seed=5, pattern="{:05d}.png")
    csv = data / "annotations.csv"
    csv.write_text("subject,clip,path,onset,apex,offset,fps,emotion,aus\n"
                   "1,c1,clips/sub0001/c1,2,5,9,200,happiness,6+12\n")
    return csv, frames


def test_cli_run(tmp_path):
    from microexp.cli import pack as pack_cli

    csv, frames = _write_our_csv(tmp_path)
    args = argparse.Namespace(annotations=str(csv), format="auto", root=None, out=str(tmp_path / "out"),
                              mode="lossless", gop=1, crf=None, quality=None, container="mp4", preset="medium",
                              workers=1,
                              no_progress=True, strict=False, face_crop=False, face_margin=None,
                              face_fallback=None)
    assert pack_cli.run(args) == 0
    packed = pd.read_csv(tmp_path / "out" / "annotations.csv", keep_default_na=False)
    assert packed.loc[0, "path"] == "clips/sub0001/c1.mp4" and packed.loc[0, "first_frame"] == 1
    with open_video(tmp_path / "out" / packed.loc[0, "path"], first_frame=1) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([5]), frames[5][None])


def test_cli_through_dispatcher(tmp_path, capsys):
    from microexp import cli

    csv, _ = _write_our_csv(tmp_path)
    out = tmp_path / "out"
    argv = ["pack", str(csv), "--out", str(out), "--mode", "near-lossless", "--gop", "8", "--no-progress"]
    assert cli.main(argv) == 0
    assert "packed 1 clip file(s), 0 already up to date, 0 failed" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "packed 0 clip file(s), 1 already up to date" in capsys.readouterr().out
    assert cli.main(["pack", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert cli.main(["pack", str(csv), "--out", str(csv.parent)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert os.path.isfile(out / "clips" / "sub0001" / "c1.mp4")


# --- face crop: raw footage cut to one fixed face box per clip ---------------------------------------------

FACE_AT = FaceBox(150, 60, 128, 128)  # where the synthetic 128 px face crop sits in the raw frames


@pytest.fixture(scope="module")
def raw_faces():
    """Six synthetic face crops placed at FACE_AT in 240x320 frames of their border colour."""
    spec = plan_dataset(preset="easy", subjects=1, clips=1, seed=4)[0]
    faces = render_clip(spec, size=128, frame_numbers=[1, 2, 3, 4, 5, 6]).frames
    canvas = np.empty((len(faces), 240, 320, 3), np.uint8)
    canvas[:] = np.median(faces[:, :, :4].reshape(-1, 3), axis=0).astype(np.uint8)
    canvas[:, FACE_AT.y:FACE_AT.y + 128, FACE_AT.x:FACE_AT.x + 128] = faces
    return canvas


def _raw_dataset(tmp_path: Path, raw_faces: np.ndarray, wall_subject: int = 2) -> tuple[Path, pd.DataFrame]:
    """A clip with a face (subject 1) and a clip of a bare wall (``wall_subject``)."""
    root = tmp_path / "DFME"
    for name, frames in (("face", raw_faces), ("wall", np.full_like(raw_faces, 90))):
        (root / name).mkdir(parents=True)
        for n, frame in enumerate(frames, start=1):
            Image.fromarray(frame).save(root / name / f"{n}.png")
    table = clip_table([
        {"subject": 1, "clip": "face", "path": str(root / "face"), "onset": 1, "apex": 3, "offset": 6},
        {"subject": wall_subject, "clip": "wall", "path": str(root / "wall"), "onset": 1, "apex": 3, "offset": 6},
    ])
    return root, table


def _overlap(a: FaceBox, b: FaceBox) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / (a.w * a.h + b.w * b.h - ix * iy)


@pytest.mark.parametrize("workers", [1, 2])
def test_face_crop_cuts_every_frame_with_one_box(tmp_path, raw_faces, workers):
    root, table = _raw_dataset(tmp_path, raw_faces)
    out = tmp_path / "out"
    result = pack_table(table, out, settings=_crop(), source_root=root, workers=workers,
                        progress=False)
    # the clip without a face fails with one message (its subject has no other clip); the other is packed
    [(source, message)] = result.failed.items()
    assert source.endswith("wall") and message == "no face found on the probe frames, nor on any other clip of subject 2"
    assert list(result.table["clip"]) == ["face"]
    boxes = pd.read_csv(out / "face_boxes.csv")
    assert tuple(boxes.columns) == FACE_BOX_COLUMNS and list(boxes["path"]) == ["clips/face.mp4"]
    assert list(boxes["origin"]) == ["detected"]
    box = FaceBox(*(int(boxes.loc[0, k]) for k in "xywh"))
    assert box.w == box.h and _overlap(box, FACE_AT) > 0.5, box
    assert box == stable_face_box(raw_faces[probe_positions(len(raw_faces))])[0]  # the box predict would cut
    with open_video(out / "clips" / "face.mp4", first_frame=1) as reader:
        packed = reader.get_frames_by_number(range(1, 7))
    # lossless: exactly the source pixels inside the one box, on every frame
    np.testing.assert_array_equal(packed, raw_faces[:, box.y:box.y + box.h, box.x:box.x + box.w])


def test_face_crop_resumes_and_repacks_when_turned_off(tmp_path, raw_faces):
    root, table = _raw_dataset(tmp_path, raw_faces)
    table = table.iloc[:1]
    out = tmp_path / "out"
    first = pack_table(table, out, settings=_crop(), source_root=root, progress=False)
    again = pack_table(table, out, settings=_crop(), source_root=root, progress=False)
    assert again.skipped == 1 and again.packed[0].face_box == first.packed[0].face_box is not None
    assert len(pd.read_csv(out / "face_boxes.csv")) == 1  # a skipped clip keeps its box (read from the file's tag)
    wider = pack_table(table, out, settings=_crop(face_margin=0.9), source_root=root,
                       progress=False)
    assert wider.skipped == 0 and wider.packed[0].face_box.w > first.packed[0].face_box.w
    full = pack_table(table, out, settings=LOSSLESS, source_root=root, progress=False)
    assert full.skipped == 0 and full.packed[0].face_box is None
    assert not (out / "face_boxes.csv").exists()  # no stale boxes for files that are no longer cropped
    with open_video(out / "clips" / "face.mp4", first_frame=1) as reader:
        np.testing.assert_array_equal(reader.get_frames_by_number([2])[0], raw_faces[1])


def test_synthetic_uncropped_footage_packs_back_to_faces(tmp_path):
    """``synth --uncropped`` then ``pack --face-crop``: every clip's box lands on the true face."""
    from microexp.synth import generate_dataset

    summary = generate_dataset(tmp_path / "raw", preset="easy", clips=3, subjects=3, size=128, fmt="frames",
                               uncropped=(320, 240), workers=1, progress=False)
    clips = load_clip_table(summary.annotations).resolve()
    result = pack_table(clips, tmp_path / "packed", settings=_crop(),
                        source_root=summary.out_dir, progress=False)
    assert not result.failed and len(result.table) == 3
    truth = pd.read_csv(summary.out_dir / "ground_truth.csv").set_index("clip")
    boxes = pd.read_csv(tmp_path / "packed" / "face_boxes.csv")
    assert len(boxes) == 3
    for row in boxes.itertuples():
        clip = Path(row.path).stem
        face = FaceBox(int(truth.loc[clip, "face_x"]), int(truth.loc[clip, "face_y"]), 128, 128)
        assert _overlap(FaceBox(row.x, row.y, row.w, row.h), face) > 0.5, (clip, row)
    packed = load_clip_table(tmp_path / "packed" / "annotations.csv").resolve()
    with open_video(tmp_path / "packed" / packed.iloc[0]["path"], first_frame=1) as reader:
        assert reader.get_frames_by_number([1]).shape[1:3] == (boxes.loc[0, "h"], boxes.loc[0, "w"])


def test_cli_face_crop(tmp_path, raw_faces, capsys):
    from microexp import cli

    root, table = _raw_dataset(tmp_path, raw_faces)
    csv = root / "annotations.csv"
    table.assign(path=table["clip"]).drop(columns=["apex_estimated", "dataset", "first_frame"]).to_csv(csv, index=False)
    out = tmp_path / "out"
    assert cli.main(["pack", str(csv), "--out", str(out), "--face-crop", "--no-progress"]) == 1  # one clip failed
    printed = capsys.readouterr().out
    assert "packed 1 clip file(s)" in printed and "1 failed" in printed and "face_boxes.csv" in printed
    assert "wall: no face found" in printed
    assert cli.main(["pack", str(csv), "--out", str(out), "--face-fallback", "none"]) == 2
    assert "--face-fallback applies only with --face-crop" in capsys.readouterr().err
    assert cli.main(["pack", str(csv), "--out", str(out), "--face-crop", "--face-margin", "inf"]) == 2
    assert "--face-margin must be a finite number >= 0, got inf" in capsys.readouterr().err
    assert cli.main(["pack", str(csv), "--out", str(out), "--face-margin", "0.8"]) == 2
    assert "--face-margin applies only with --face-crop" in capsys.readouterr().err


def test_damaged_box_in_a_tag_means_repack():
    settings = _crop().tag(10, 1, "abc")
    assert _split_tag(f"{settings} face_box=1,2,30,30") == (settings, FaceBox(1, 2, 30, 30), "detected")
    assert _split_tag(f"{settings} face_box=1,2,30,30:subject") == (settings, FaceBox(1, 2, 30, 30), "subject")
    assert _split_tag(f"{settings} face_box=1,2,x")[0] != settings  # unreadable box: no match, so re-packed
    assert _split_tag(settings) == (settings, None, None) and _split_tag(None) == (None, None, None)


def test_clip_without_a_face_borrows_its_subjects_box(tmp_path, raw_faces):
    root, table = _raw_dataset(tmp_path, raw_faces, wall_subject=1)  # both clips from subject 1
    out = tmp_path / "out"
    refused = pack_table(table, out, settings=_crop(face_fallback="none"), source_root=root,
                         progress=False)
    assert list(refused.failed.values()) == ["no face found on the 5 frame(s) searched"]
    result = pack_table(table, out, settings=_crop(), source_root=root, progress=False)
    assert not result.failed and sorted(result.table["clip"]) == ["face", "wall"]
    boxes = pd.read_csv(out / "face_boxes.csv").set_index("path")
    assert boxes.loc["clips/wall.mp4", "origin"] == "subject" and boxes.loc["clips/face.mp4", "origin"] == "detected"
    assert (boxes.loc["clips/wall.mp4", list("xywh")] == boxes.loc["clips/face.mp4", list("xywh")]).all()
    again = pack_table(table, out, settings=_crop(), source_root=root, progress=False)
    assert again.skipped == 2 and {p.face_box_origin for p in again.packed} == {"detected", "subject"}


def test_action_descriptors_survive_packing(tmp_path, dataset):
    """FACS action descriptors (AD31, M57) read from a sheet are kept in the packed clip table."""

    _, table, _ = dataset
    table = table.assign(action_descriptors=["AD31+M57", ""])
    pack_table(table, tmp_path / "packed", progress=False, settings=LOSSLESS)
    loaded = load_clip_table(tmp_path / "packed" / "annotations.csv").resolve(strict=True)
    assert loaded["action_descriptors"].tolist() == ["AD31+M57", ""]


def test_a_full_disk_fails_the_clip_in_one_line_and_leaves_no_file(tmp_path, dataset, tmpfs):
    _, table, _ = dataset
    disk = tmpfs("disk", size="16k")
    result = pack_table(table, disk, progress=False, write_csv=False, settings=LOSSLESS)
    assert len(result.failed) == 2 and not result.packed
    for message in result.failed.values():
        assert "disk full" in message and str(disk / "clips") in message and "\n" not in message
    assert not [p for p in disk.rglob("*") if p.is_file()]  # neither packed files nor temporary ones
