"""Video readers and writer: exact round trips, numbering, fallbacks, error messages, fork safety."""

from __future__ import annotations

import pickle
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from microexp.data.video import (
    BACKENDS,
    DecordReader,
    FolderReader,
    PyAVReader,
    frame_number_from_name,
    open_video,
    write_video,
)
from microexp.errors import ConfigError, VideoReadError

T, H, W = 12, 32, 32
VIDEO_BACKENDS = ("auto", "decord", "pyav")


def make_frames(t: int = T, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Noise frames: every pixel differs between frames, so an off-by-one frame cannot pass."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def smooth_frames(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Smooth moving gradients (for lossy modes, where noise would not compress)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = [np.stack([(xx * 6 + 9 * i) % 256, (yy * 5 + 4 * i) % 256, np.full_like(xx, 40 + 10 * i)], -1)
           for i in range(t)]
    return np.asarray(out, dtype=np.uint8)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_frames()


@pytest.fixture(scope="module", params=[1, 4], ids=["gop1", "gop4"])
def lossless_file(request, tmp_path_factory, frames) -> Path:
    path = tmp_path_factory.mktemp("video") / f"clip_gop{request.param}.mp4"
    write_video(path, frames, fps=200, gop=request.param)
    return path


# ---------------------------------------------------------------------------------------------------
# exact round trips


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_lossless_file_decodes_to_the_input_frames(lossless_file, frames, backend):
    positions = [11, 0, 5, 5, 3, 10, 1, 7]  # unsorted, repeated
    with open_video(lossless_file, backend=backend) as reader:
        assert len(reader) == T
        assert reader.fps == pytest.approx(200.0)
        out = reader.get_frames(positions)
        assert out.dtype == np.uint8 and out.shape == (len(positions), H, W, 3)
        assert out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, frames[positions])
        np.testing.assert_array_equal(reader.get_frames(range(T)), frames)


def test_backends_agree_on_random_index_sets(lossless_file, frames):
    rng = np.random.default_rng(1)
    decord_reader = open_video(lossless_file, backend="decord")
    pyav_reader = open_video(lossless_file, backend="pyav")
    for _ in range(5):
        positions = sorted(rng.choice(T, 5, replace=False).tolist())
        a = decord_reader.get_frames(positions)
        b = pyav_reader.get_frames(positions)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, frames[positions])


def test_written_file_has_no_audio_and_lossless_codec(lossless_file):
    with av.open(str(lossless_file)) as container:
        assert len(container.streams.audio) == 0
        assert len(container.streams.video) == 1
        assert container.streams.video[0].codec_context.name == "h264"
    assert DecordReader(lossless_file).backend == "decord"
    assert len(DecordReader(lossless_file)) == T


def test_frame_numbers_follow_first_frame(lossless_file, frames):
    with open_video(lossless_file, first_frame=101) as reader:
        assert reader.frame_numbers == list(range(101, 101 + T))
        np.testing.assert_array_equal(reader.get_frames_by_number([101, 112, 104]), frames[[0, 11, 3]])
        with pytest.raises(VideoReadError, match=r"frame number 100 not in the clip \(frames 101\.\.112"):
            reader.get_frames_by_number([100])


def test_fractional_fps(tmp_path, frames):
    path = tmp_path / "ntsc.mp4"
    write_video(path, frames[:4], fps=Fraction(30000, 1001))
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)
    for backend in VIDEO_BACKENDS:
        with open_video(path, backend=backend) as reader:
            assert reader.fps == pytest.approx(30000 / 1001, rel=1e-6)
            np.testing.assert_array_equal(reader.get_frames(range(4)), frames[:4])


def test_mkv_container(tmp_path, frames):
    path = tmp_path / "clip.mkv"
    write_video(path, frames, fps=100, gop=3)
    for backend in VIDEO_BACKENDS:
        with open_video(path, backend=backend) as reader:
            np.testing.assert_array_equal(reader.get_frames([9, 2, 7]), frames[[9, 2, 7]])


def test_grayscale_frames_become_three_channels(tmp_path):
    gray = make_frames()[..., 0]
    path = tmp_path / "gray.mp4"
    write_video(path, gray, fps=25)
    expected = np.repeat(gray[..., None], 3, axis=-1)
    for backend in VIDEO_BACKENDS:
        with open_video(path, backend=backend) as reader:
            np.testing.assert_array_equal(reader.get_frames(range(T)), expected)


def test_near_lossless_mode_is_close_and_backends_agree(tmp_path):
    smooth = smooth_frames(8, 34, 30)
    path = tmp_path / "small.mp4"
    write_video(path, smooth, fps=200, lossless=False, gop=4, crf=12)
    a = open_video(path, backend="decord").get_frames(range(8))
    b = open_video(path, backend="pyav").get_frames(range(8))
    np.testing.assert_array_equal(a, b)
    mse = np.mean((a.astype(float) - smooth) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30


def test_odd_frame_size(tmp_path):
    odd = make_frames(4, 33, 31)
    path = tmp_path / "odd.mp4"
    write_video(path, odd, fps=25)
    np.testing.assert_array_equal(open_video(path, backend="decord").get_frames(range(4)), odd)


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=25)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=25)
    with pytest.raises(ValueError, match="crf"):
        write_video(tmp_path / "a.mp4", make_frames(2), fps=25, crf=10)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", make_frames(2), fps=0)


# ---------------------------------------------------------------------------------------------------
# frame folders


def write_folder(folder: Path, frames: np.ndarray, numbers, pattern: str = "img{}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, n in zip(frames, numbers):
        Image.fromarray(frame).save(folder / pattern.format(n))
    return folder


def test_folder_frames_sort_numerically(tmp_path, frames):
    numbers = [1, 2, 9, 10, 11, 100]  # lexical order would be 1, 10, 100, 11, 2, 9
    folder = write_folder(tmp_path / "clip", frames[:6], numbers)
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder) as reader:
        assert isinstance(reader, FolderReader) and reader.fps is None
        assert reader.frame_numbers == numbers
        np.testing.assert_array_equal(reader.get_frames(range(6)), frames[:6])
        np.testing.assert_array_equal(reader.get_frames_by_number([100, 9]), frames[[5, 2]])


@pytest.mark.parametrize("ext", ["png", "bmp", "jpg"])
@pytest.mark.parametrize("image_backend", ["pil", "cv2"])
def test_folder_image_formats(tmp_path, frames, ext, image_backend):
    folder = write_folder(tmp_path / ext, frames[:3], [7, 8, 9], pattern="006_{:05d}." + ext)
    out = FolderReader(folder, image_backend=image_backend).get_frames([0, 1, 2])
    if ext == "jpg":  # lossy: compare with what Pillow decodes
        expected = np.stack([np.asarray(Image.open(folder / f"006_{n:05d}.jpg").convert("RGB")) for n in (7, 8, 9)])
        assert np.abs(out.astype(int) - expected).max() <= 2
    else:
        np.testing.assert_array_equal(out, frames[:3])


def test_folder_grayscale_images(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    gray = make_frames(2)[..., 0]
    for i, g in enumerate(gray):
        Image.fromarray(g, mode="L").save(folder / f"{i}.png")
    out = open_video(folder).get_frames([0, 1])
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))


def test_folder_errors(tmp_path, frames):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no numbered frame images"):
        len(open_video(empty))
    dup = write_folder(tmp_path / "dup", frames[:2], [3, 4])
    Image.fromarray(frames[0]).save(dup / "img003.png")
    with pytest.raises(VideoReadError, match="two frame images with number 3: img003.png, img3.png"):
        len(open_video(dup))
    sizes = write_folder(tmp_path / "sizes", frames[:2], [1, 2])
    Image.fromarray(make_frames(1, 16, 16)[0]).save(sizes / "img3.png")
    with pytest.raises(VideoReadError, match="img3.png: frame size 16x16 differs"):
        open_video(sizes).get_frames([0, 2])
    broken = write_folder(tmp_path / "broken", frames[:2], [1, 2])
    (broken / "img2.png").write_bytes((broken / "img2.png").read_bytes()[:60])
    with pytest.raises(VideoReadError, match="img2.png: cannot decode the frame image"):
        open_video(broken).get_frames([1])


def test_frame_number_from_name():
    assert frame_number_from_name("img46.jpg") == 46
    assert frame_number_from_name("006_00012.jpg") == 12
    assert frame_number_from_name("reg_image7.bmp") == 7
    assert frame_number_from_name("face.png") is None


# ---------------------------------------------------------------------------------------------------
# errors


def test_missing_path_raises_file_not_found(tmp_path):
    missing = tmp_path / "nope.mp4"
    for backend in BACKENDS:
        with pytest.raises(FileNotFoundError, match="nope.mp4"):
            open_video(missing, backend=backend)


def test_unknown_backend_and_wrong_kind_of_path(tmp_path, lossless_file):
    with pytest.raises(ConfigError, match="'opencv' is not one of auto, decord, pyav, folder"):
        open_video(lossless_file, backend="opencv")
    with pytest.raises(VideoReadError, match="is a frame folder"):
        open_video(tmp_path, backend="decord")
    with pytest.raises(VideoReadError, match="is a file"):
        open_video(lossless_file, backend="folder")


@pytest.mark.parametrize("backend", VIDEO_BACKENDS + ("folder",))
def test_position_out_of_range_message(tmp_path, lossless_file, frames, backend):
    path = write_folder(tmp_path / "f", frames, range(T)) if backend == "folder" else lossless_file
    reader = open_video(path, backend=backend)
    for bad in (T, -1):
        with pytest.raises(VideoReadError) as info:
            reader.get_frames([0, bad])
        assert str(info.value) == f"{path}: frame position {bad} out of range 0..{T - 1}"


def test_empty_position_list(lossless_file):
    assert open_video(lossless_file).get_frames([]).shape == (0, H, W, 3)


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_truncated_file(tmp_path, lossless_file, backend):
    data = lossless_file.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])  # mp4 index (moov) at the end is lost
    with pytest.raises(VideoReadError) as info:
        open_video(path, backend=backend).get_frames([0])
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_truncated_file_with_index_first(tmp_path, lossless_file):
    """moov before the data ('faststart'): the header declares more frames than the file holds."""
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(lossless_file)) as src, av.open(str(faststart), "w", options={"movflags": "+faststart"}) as dst:
        out_stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    data = faststart.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoReadError, match=r"truncated\.mp4: (truncated video|.*cannot)"):
        open_video(path, backend="pyav").get_frames([0])
    with pytest.raises(VideoReadError, match=r"truncated\.mp4: "):
        open_video(path, backend="auto").get_frames([0, T - 1])


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_garbage_and_empty_files(tmp_path, backend):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (garbage, empty):
        with pytest.raises(VideoReadError, match=f"^{path}: "):
            len(open_video(path, backend=backend))


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_zero_frame_file(tmp_path, backend):
    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "rgb24"
        container.start_encoding()
    assert path.stat().st_size > 0
    with pytest.raises(VideoReadError, match=f"^{path}: .*(no video stream|no frames|cannot open)"):
        open_video(path, backend=backend).get_frames([0])


# ---------------------------------------------------------------------------------------------------
# fallback to PyAV


def _write_with_pyav(path: Path, frames: np.ndarray, codec: str, pix_fmt: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pix_fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("kind", ["av1", "gif"])
def test_auto_falls_back_to_pyav_when_decord_cannot_open(tmp_path, kind):
    """Real files decord 0.6 cannot open: AV1 (its bundled FFmpeg has no AV1 decoder) and GIF."""
    small = smooth_frames(4, 32, 32)
    if kind == "av1":
        if "libsvtav1" not in av.codecs_available:
            pytest.skip("PyAV build without an AV1 encoder")
        path = tmp_path / "clip.mkv"
        _write_with_pyav(path, small, "libsvtav1", "yuv420p")
    else:
        path = tmp_path / "clip.gif"
        _write_with_pyav(path, small, "gif", "rgb8")
    with pytest.raises(VideoReadError, match="decord cannot open"):
        len(open_video(path, backend="decord"))
    auto = open_video(path, backend="auto", first_frame=1)
    assert auto.backend == "pyav"
    assert len(auto) == 4 and auto.frame_numbers == [1, 2, 3, 4]
    expected = open_video(path, backend="pyav").get_frames([3, 0, 2])
    np.testing.assert_array_equal(auto.get_frames([3, 0, 2]), expected)
    np.testing.assert_array_equal(auto.get_frames_by_number([4, 1, 3]), expected)


def test_auto_falls_back_when_decord_is_missing(monkeypatch, lossless_file, frames):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError in this test
    reader = DecordReader(lossless_file)  # constructing never imports decord
    with pytest.raises(VideoReadError, match="decord is not installed"):
        len(reader)
    auto = open_video(lossless_file)
    np.testing.assert_array_equal(auto.get_frames([4, 1]), frames[[4, 1]])
    assert auto.backend == "pyav"


# ---------------------------------------------------------------------------------------------------
# laziness, pickling, DataLoader workers


@pytest.mark.parametrize("cls", [DecordReader, PyAVReader])
def test_readers_open_lazily_and_pickle(lossless_file, frames, cls):
    reader = cls(lossless_file)
    assert reader._handle.handle is None  # nothing opened by the constructor
    assert len(reader) == T
    assert reader._handle.handle is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handle.handle is None
    np.testing.assert_array_equal(clone.get_frames([2]), frames[[2]])
    reader.close()
    np.testing.assert_array_equal(reader.get_frames([3]), frames[[3]])  # reopens after close


class _ClipDataset:
    """A torch-style map dataset holding one reader, as a user's Dataset would."""

    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        return self.reader.get_frames([i, (i + 3) % len(self.reader)])


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("backend", ["decord", "auto"])
def test_dataloader_fork_workers_do_not_hang(lossless_file, frames, backend):
    from torch.utils.data import DataLoader

    reader = open_video(lossless_file, backend=backend)
    dataset = _ClipDataset(reader)
    np.testing.assert_array_equal(dataset[0], frames[[0, 3]])  # opened in the parent before forking
    loader = DataLoader(dataset, batch_size=4, num_workers=2, timeout=60, multiprocessing_context="fork",
                        collate_fn=lambda items: np.stack(items))
    batches = list(loader)
    got = np.concatenate(batches)
    expected = np.stack([frames[[i, (i + 3) % T]] for i in range(T)])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(dataset[5], frames[[5, 8]])  # the parent's handle still works
