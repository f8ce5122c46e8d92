"""Data-layer errors as the user sees them: one line, the same with DataLoader workers as without."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from microexp.data.dataset import MicroExpressionDataset
from microexp.data.sampling import SamplingSpec
from microexp.data.transforms import TransformSpec
from microexp.data.video import open_video, write_video
from microexp.errors import MicroexpError, VideoReadError, user_message
from microexp.fileio import OutputError

SIZE = 16
IDENTITY = TransformSpec(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), flip=False, crop_scale=1.0)


def _frames(count: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def _row(clip, path):
    return {"subject": 1, "clip": clip, "path": str(path), "onset": 1, "apex": 5, "offset": 10,
            "first_frame": 0, "fps": 200.0, "emotion": "happiness", "aus": "12",
            "dataset": "microexp", "apex_estimated": False, "label": 0}


@pytest.fixture(scope="module")
def bad_clips(tmp_path_factory):
    """A zero-byte mp4, a truncated mp4, and a frame folder with one truncated PNG."""
    root = tmp_path_factory.mktemp("bad")
    good = root / "good.mp4"
    write_video(good, _frames(), fps=200)
    data = good.read_bytes()
    zero = root / "zero.mp4"
    zero.write_bytes(b"")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(_frames()):
        Image.fromarray(frame).save(folder / f"img{i}.png")
    png = (folder / "img5.png").read_bytes()
    (folder / "img5.png").write_bytes(png[: len(png) // 2])
    return {"zero": zero, "truncated": truncated, "frames": folder}


def _error(dataset, num_workers: int) -> BaseException:
    """The exception a DataLoader raises on ``dataset``; its workers shut down before returning."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=num_workers,
                                         timeout=60 if num_workers else 0)
    batches = iter(loader)
    error = None
    try:
        for _ in batches:
            pass
    except Exception as exc:
        error = exc
        error.__traceback__ = None  # no frame keeps the iterator (and its worker) alive
    del batches
    assert error is not None, "the DataLoader did not raise"
    return error


@pytest.mark.parametrize("kind", ["zero", "truncated", "frames"])
def test_worker_error_gives_the_single_process_line(bad_clips, kind):
    table = pd.DataFrame([_row(kind, bad_clips[kind])])
    dataset = MicroExpressionDataset(table, sampling=SamplingSpec("uniform", num_frames=10),
                                     transform=IDENTITY)
    single = _error(dataset, 0)
    wrapped = _error(dataset, 1)
    assert isinstance(single, VideoReadError) and isinstance(wrapped, VideoReadError)
    assert "Traceback" in str(wrapped)  # torch's wrapping, which user_message must undo
    line = user_message(single)
    assert "\n" not in line and str(bad_clips[kind]) in line
    assert user_message(wrapped) == line
    assert len(user_message(wrapped)) < 300
    if kind == "frames":
        assert line.startswith(str(bad_clips[kind] / "img5.png"))  # names the file, not PIL's error type


def test_truncated_png_is_a_video_read_error_naming_the_file(bad_clips):
    with open_video(bad_clips["frames"]) as reader:
        with pytest.raises(VideoReadError, match="img5.png"):
            reader.get_frames(range(len(reader)))


def test_user_message_of_plain_errors():
    assert user_message(MicroexpError("bad  value\n  in row 3")) == "bad value in row 3"
    assert user_message(ValueError("")) == "ValueError"
    exc = FileNotFoundError(2, "No such file or directory", "/x/y.csv")
    assert user_message(exc) == "/x/y.csv: No such file or directory"
    assert user_message(OutputError("/out: disk full")) == "/out: disk full"


def _raise_in_worker(exc: BaseException):
    class _Raising(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise exc

    return _error(_Raising(), 1)


def test_user_message_unwraps_chained_and_multiline_worker_errors():
    def chained():
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise VideoReadError("clip.mp4: VideoReadError: cannot open\nsecond line") from inner

    class _Chained(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            chained()

    wrapped = _error(_Chained(), 1)
    assert "The above exception" in str(wrapped)
    assert user_message(wrapped) == "clip.mp4: VideoReadError: cannot open second line"
    not_found = _raise_in_worker(FileNotFoundError("video or frame folder not found: /a/b.mp4"))
    assert isinstance(not_found, FileNotFoundError)
    assert user_message(not_found) == "video or frame folder not found: /a/b.mp4"
