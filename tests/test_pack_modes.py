"""Pack modes (Motion JPEG next to H.264), the optional readers (decord missing, torchcodec) and the reader pool."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from microexp.data.pack import PackSettings, pack_clip, pack_info, pack_table
from microexp.data.video import (ReaderPool, is_mjpeg_avi, open_video, torchcodec_problem, write_mjpeg,
                                 write_video)
from microexp.errors import ConfigError

H, W = 48, 64


def smooth_frames(n: int, seed: int = 0) -> np.ndarray:
    """``(n, H, W, 3)`` uint8: moving colour gradients with mild noise (what JPEG is for)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = []
    for t in range(n):
        base = np.stack([x * 3 + t * 5, y * 4 + 20, (x + y) * 1.5 + 60 - t * 3], axis=-1)
        frames.append(np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.fixture
def folder(tmp_path) -> tuple[Path, np.ndarray]:
    frames = smooth_frames(12)
    path = tmp_path / "src" / "clip"
    path.mkdir(parents=True)
    for n, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(path / f"img{n}.png")
    return path, frames


def test_mjpeg_pack_round_trips_within_jpeg_tolerance_and_names_its_mode(tmp_path, folder):
    source, frames = folder
    dest = tmp_path / "clip.avi"
    packed = pack_clip(source, dest, fps=200.0)  # the default mode
    assert packed.frames == 12 and packed.first_frame == 1
    info = pack_info(dest)
    assert info is not None and (info.mode, info.gop, info.quality, info.frames, info.first_frame) == ("mjpeg", 1, 95,
                                                                                                       12, 1)
    assert is_mjpeg_avi(dest)
    for backend in ("auto", "decord", "pyav"):
        with open_video(dest, backend=backend, first_frame=1) as reader:
            assert reader.frame_numbers == list(range(1, 13)) and reader.fps == pytest.approx(200.0)
            got = reader.get_frames_by_number([12, 1, 6])
            assert reader.backend == ("pyav" if backend == "auto" else backend)
        want = frames[[11, 0, 5]]
        assert got.shape == want.shape and got.dtype == np.uint8
        assert psnr(got, want) > 36, backend
        assert not np.array_equal(got, want)  # lossy: it really is JPEG
    low = pack_clip(source, tmp_path / "low.avi", fps=200.0, settings=PackSettings(quality=30))
    assert pack_info(low.dest).quality == 30
    assert os.path.getsize(low.dest) < 0.8 * os.path.getsize(dest)
    with open_video(low.dest) as reader:
        assert psnr(reader.get_frames([5]), frames[[5]]) < psnr(open_video(dest).get_frames([5]), frames[[5]])


def test_h264_lossless_mode_stays_exact_and_is_tagged(tmp_path, folder):
    source, frames = folder
    dest = tmp_path / "clip.mp4"
    pack_clip(source, dest, fps=200.0, settings=PackSettings(mode="lossless"))
    info = pack_info(dest)
    assert info is not None and (info.mode, info.gop, info.quality, info.crf) == ("lossless", 1, None, None)
    assert not is_mjpeg_avi(dest)
    for backend in ("decord", "pyav"):
        with open_video(dest, backend=backend) as reader:
            np.testing.assert_array_equal(reader.get_frames([0, 11, 4]), frames[[0, 11, 4]])
    plain = tmp_path / "plain.mp4"
    write_video(plain, frames[:2], fps=10)
    assert pack_info(plain) is None  # not written by microexp pack


def test_mkv_packs_read_back_and_resume(tmp_path, folder):
    """Matroska stores the tag as COMMENT and no frame count in its header: both are read all the same."""
    source, frames = folder
    settings = PackSettings(mode="lossless", container="mkv")
    dest = tmp_path / "clip.mkv"
    assert not pack_clip(source, dest, fps=200.0, settings=settings).skipped
    assert pack_clip(source, dest, fps=200.0, settings=settings).skipped
    assert pack_info(dest).mode == "lossless"


def test_pack_table_mjpeg_writes_avi_paths_and_resumes(tmp_path, folder):
    source, _ = folder
    table = pd.DataFrame([{"subject": 1, "clip": "clip", "path": str(source), "onset": 2, "apex": 5, "offset": 9,
                           "first_frame": 0, "fps": 200.0, "emotion": "happiness", "aus": "12", "dataset": "casme2",
                           "apex_estimated": False}])
    out = tmp_path / "packed"
    result = pack_table(table, out, progress=False)
    assert not result.failed and list(result.table["path"]) == ["clips/clip.avi"]
    assert pack_table(table, out, progress=False).skipped == 1
    assert pack_table(table, out, settings=PackSettings(quality=80), progress=False).skipped == 0


def test_mode_settings_are_validated():
    with pytest.raises(ConfigError, match="mode 'mjpeg' is intra-only"):
        PackSettings(mode="mjpeg", gop=4)
    with pytest.raises(ConfigError, match="JPEG quality applies to mode 'mjpeg' only"):
        PackSettings(mode="lossless", quality=90)
    with pytest.raises(ConfigError, match="JPEG quality must be an integer in 1..100, got 101"):
        PackSettings(quality=101)
    with pytest.raises(ConfigError, match="container 'mp4' does not fit mode 'mjpeg'; expected one of avi"):
        PackSettings(container="mp4")
    with pytest.raises(ConfigError, match="crf applies to mode 'near-lossless' only, not 'mjpeg'"):
        PackSettings(crf=10)
    assert PackSettings().file_container == "avi" and PackSettings(mode="lossless").file_container == "mp4"
    with pytest.raises(ValueError, match="JPEG quality must be an integer in 1..100"):
        write_mjpeg("x.avi", smooth_frames(1), fps=10, quality=0)


def test_cli_packs_mjpeg_by_default_and_takes_a_quality(tmp_path, folder, capsys):
    from microexp import cli

    source, _ = folder
    csv = tmp_path / "annotations.csv"
    csv.write_text(f"subject,clip,path,onset,apex,offset,fps,emotion,aus\n1,clip,{source},2,5,9,200,happiness,12\n")
    out = tmp_path / "out"
    assert cli.main(["pack", str(csv), "--out", str(out), "--quality", "90", "--no-progress"]) == 0
    assert "packed 1 clip file(s)" in capsys.readouterr().out
    packed = pd.read_csv(out / "annotations.csv")
    assert packed.loc[0, "path"].endswith(".avi")
    assert pack_info(out / packed.loc[0, "path"]).quality == 90
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        cli.main(["pack", str(csv), "--out", str(out), "--quality", "0"])
    assert exited.value.code == 2 and "1..100" in capsys.readouterr().err
    assert cli.main(["pack", str(csv), "--out", str(out), "--mode", "lossless", "--quality", "90"]) == 2
    assert "applies to mode 'mjpeg' only" in capsys.readouterr().err


# --- decord optional ---------------------------------------------------------------------------------------


def test_auto_reads_with_pyav_when_decord_is_not_installed(tmp_path, monkeypatch, caplog):
    frames = smooth_frames(6)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=25)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    with caplog.at_level(logging.DEBUG, logger="microexp.data.video"):
        with open_video(path) as reader:
            np.testing.assert_array_equal(reader.get_frames([5, 0]), frames[[5, 0]])
            assert reader.backend == "pyav"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # an expected set-up, not a failure
    from microexp.errors import VideoReadError

    with pytest.raises(VideoReadError, match="decord is not installed"):
        open_video(path, backend="decord").get_frames([0])


def test_importing_microexp_never_needs_decord(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(3), fps=25)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["decord"] = None
        import microexp, microexp.data, microexp.data.dataset, microexp.data.pack, microexp.data.video, microexp.cli
        from microexp.data.video import open_video
        with open_video({str(path)!r}) as reader:
            print(reader.backend, reader.get_frames([2]).shape)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "pyav (1, 48, 64, 3)"


# --- torchcodec (optional) ---------------------------------------------------------------------------------


def test_torchcodec_backend_says_how_to_install_when_it_cannot_run(tmp_path, monkeypatch):
    path = tmp_path / "clip.avi"
    write_mjpeg(path, smooth_frames(2), fps=25)
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    with pytest.raises(ConfigError, match="backend 'torchcodec': torchcodec is not installed.*apt install ffmpeg"):
        open_video(path, backend="torchcodec")


@pytest.mark.skipif(torchcodec_problem() is not None, reason=f"torchcodec cannot run here: {torchcodec_problem()}")
def test_torchcodec_reads_both_pack_modes_like_pyav(tmp_path):
    frames = smooth_frames(8)
    for name, write in (("a.avi", write_mjpeg), ("b.mp4", write_video)):
        write(tmp_path / name, frames, fps=25)
        with open_video(tmp_path / name, backend="torchcodec", first_frame=1) as reader:
            assert len(reader) == 8 and reader.fps == pytest.approx(25)
            got = reader.get_frames_by_number([8, 2, 2])
        with open_video(tmp_path / name, backend="pyav", first_frame=1) as reader:
            want = reader.get_frames_by_number([8, 2, 2])
        assert np.abs(got.astype(int) - want).max() <= 2, name


# --- the reader pool ---------------------------------------------------------------------------------------


@pytest.fixture
def three_videos(tmp_path) -> list[Path]:
    paths = []
    for k in range(3):
        path = tmp_path / f"v{k}.mp4"
        write_video(path, smooth_frames(4, seed=k), fps=25)
        paths.append(path)
    return paths


def test_pool_reuses_open_readers_and_closes_the_least_recent(three_videos):
    a, b, c = three_videos
    pool = ReaderPool(capacity=2)
    ra = pool.get(a, backend="pyav")
    ra.get_frames([0])
    assert ra._handle.handle is not None  # open
    assert pool.get(a, backend="pyav") is ra and pool.opened == 1
    assert pool.get(a, backend="pyav", first_frame=1) is not ra  # another numbering, another reader
    assert pool.opened == 2 and len(pool) == 2
    rb = pool.get(b, backend="pyav")
    rb.get_frames([1])
    assert len(pool) == 2 and pool.opened == 3
    assert ra._handle.handle is None  # evicted: closed
    pool.get(a, backend="pyav", first_frame=1)  # refresh: b is now the oldest
    pool.get(c, backend="pyav")
    assert b not in pool and a in pool and c in pool and rb._handle.handle is None
    pool.close()
    assert len(pool) == 0
    with pytest.raises(ValueError, match="capacity must be an integer >= 1, got 0"):
        ReaderPool(capacity=0)
    with pytest.raises(FileNotFoundError):
        pool.get(a.parent / "gone.mp4")


def test_pool_reopens_a_replaced_file_and_after_discard(three_videos):
    a = three_videos[0]
    pool = ReaderPool()
    first = pool.get(a, backend="pyav")
    first.get_frames([0])
    write_video(a, smooth_frames(6, seed=9), fps=25)  # re-packed: other size and frame count
    os.utime(a, ns=(1, 1))  # a different mtime even on a coarse clock
    second = pool.get(a, backend="pyav")
    assert second is not first and len(second) == 6 and first._handle.handle is None
    pool.discard(a)
    assert a not in pool and pool.get(a, backend="pyav") is not second


def _child(pool: ReaderPool, path: Path, queue) -> None:
    inherited = len(pool)
    reader = pool.get(path, backend="pyav")
    queue.put((inherited, pool.opened, reader.get_frames([1]).shape, os.getpid() == reader._handle.pid))


def test_pool_in_a_forked_worker_opens_its_own_readers(three_videos):
    a = three_videos[0]
    pool = ReaderPool()
    parent = pool.get(a, backend="pyav")
    parent.get_frames([0])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(pool, a, queue))
    child.start()
    inherited, opened, shape, own = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert (inherited, opened, shape, own) == (0, 1, (1, H, W, 3), True)
    assert pool.get(a, backend="pyav") is parent and parent._handle.handle is not None  # the parent's is untouched
    copy = pickle.loads(pickle.dumps(pool))  # spawn workers get an empty pool of the same size
    assert len(copy) == 0 and copy.capacity == pool.capacity


# --- the loading benchmark ---------------------------------------------------------------------------------


def test_loading_benchmark_reports_each_pack_mode_against_both_folders(tmp_path):
    from microexp.benchmark.loading import METHODS, measure_loading

    section = measure_loading(tmp_path, repeats=1, sizes=((32, 32),))
    names = {figure.name for figure in section.figures}
    for method in METHODS:
        assert f"32x32.{method}.clips_per_s" in names
    for method in ("mjpeg_decord", "mjpeg_pyav", "mjpeg_pyav_pooled", "packed_decord", "packed_pyav"):
        assert {f"32x32.{method}.vs_folder", f"32x32.{method}.vs_jpeg", f"32x32.{method}.speedup_vs_naive"} <= names
    details = section.details["sizes"]["32x32"]
    assert set(details["psnr_db"]) == {"folder_jpeg", "mjpeg_decord", "mjpeg_pyav", "mjpeg_pyav_pooled"} | (
        {"mjpeg_torchcodec"} if torchcodec_problem() is None else set())
    assert all(30 <= db < 60 for db in details["psnr_db"].values())
    assert details["sizes_mb"]["mjpeg"] < details["sizes_mb"]["packed"]
    assert section.details["jpeg_quality"] == 95
