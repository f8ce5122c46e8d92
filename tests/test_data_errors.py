"""Data-layer errors as the user sees them: one line, the same with DataLoader workers as without."""

from __future__ import annotations

import logging

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


# ---------------------------------------------------------------------------------------------------
# annotation readers: column names, CAS(ME)^3 offset 0, action descriptors, corrupt sheets


def _write_xlsx(path, rows):
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    wb.save(path)
    return path


def test_missing_column_is_named_as_the_format_spells_it(tmp_path):
    from microexp.data.annotations import load_clip_table
    from microexp.errors import AnnotationError

    csv = tmp_path / "clips.csv"
    csv.write_text("subject,clip,path,start,apex,offset,fps,emotion,aus\n1,c,x,1,2,3,200,happiness,\n")
    with pytest.raises(AnnotationError) as info:
        load_clip_table(csv, format="microexp", check_files=False)
    message = str(info.value)
    assert "missing column(s) 'onset' for format 'microexp'" in message and "OnsetFrame" not in message
    assert "'start'" in message  # the columns found
    sheet = _write_xlsx(tmp_path / "cas(me)3_part_A.xlsx",
                        [["Subject", "Filename", "Begin", "Apex", "Offset", "AU", "Objective class", "emotion"]])
    with pytest.raises(AnnotationError, match=r"missing column\(s\) 'Onset' for format 'casme3'.*'Begin'"):
        load_clip_table(sheet, format="casme3", check_files=False)


def test_casme3_offset_zero_is_a_missing_offset(tmp_path):
    from microexp.data.annotations import load_clip_table

    rows = [["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
            ["spNO.1", "a", 100, 105, 110, "R12", "I", "happy"],
            ["spNO.1", "b", 120, 0, 0, "4", "III", "disgust"]]
    sheet = _write_xlsx(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", rows)
    result = load_clip_table(sheet, check_files=False)
    errors = [p for p in result.problems if p.severity == "error"]
    assert len(errors) == 1, [str(p) for p in errors]
    assert errors[0].row == 3 and errors[0].field == "Offset" and errors[0].value == "0"
    assert "missing offset" in errors[0].message and "before onset" not in errors[0].message
    assert result.table["clip"].tolist() == ["spNO.1/a/100"]
    # other formats keep offset 0 as a frame number (DFME sheets start clips at frame 0)
    csv = tmp_path / "clips.csv"
    csv.write_text("subject,clip,path,onset,apex,offset,fps,emotion,aus\n1,c,x,0,0,0,200,happiness,\n")
    assert not load_clip_table(csv, check_files=False).problems


def test_action_descriptors_are_kept_in_their_own_column(tmp_path):
    from microexp.data.annotations import COLUMNS, load_clip_table
    from microexp.data.aus import invalid_au_tokens, normalise_action_descriptors, parse_aus

    assert normalise_action_descriptors("4+AD38+m57+ad31+12L，M57") == "AD31+AD38+M57"
    assert parse_aus("4+AD38+M57", strict=True) == ["4"]  # not AUs, and not errors either
    assert invalid_au_tokens("4+AD38+M58+x") == ["x"]
    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Emotion", "EmotionId", "Fps", "AU"]
    rows = [header, ["sub0001", "0001_1", 0, 4, 8, "happiness", 0, 200, "6+12+AD38+M57"],
            ["sub0002", "0002_1", 1, 4, 8, "surprise", 6, 500, "1+2+AD31+ADX"]]
    sheet = _write_xlsx(tmp_path / "training_full_with_AU.xlsx", rows)
    result = load_clip_table(sheet, format="dfme", check_files=False)
    assert "action_descriptors" in COLUMNS and list(result.table.columns) == list(COLUMNS)
    assert result.table["aus"].tolist() == ["6+12", "1+2"]
    assert result.table["action_descriptors"].tolist() == ["AD38+M57", "AD31"]
    warnings = [p for p in result.problems if p.field == "AU"]
    assert len(warnings) == 1 and "'ADX'" in warnings[0].message  # only the real junk is reported
    # our CSV reads them back from its own column as well as from aus
    csv = tmp_path / "clips.csv"
    csv.write_text("subject,clip,path,onset,apex,offset,fps,emotion,aus,action_descriptors\n"
                   "1,c,x,1,2,3,200,happiness,4+M58,AD39\n")
    table = load_clip_table(csv, check_files=False).table
    assert table["action_descriptors"].tolist() == ["AD39+M58"] and table["aus"].tolist() == ["4"]


def test_corrupt_sheet_is_a_user_error_keeping_its_cause(tmp_path):
    import zipfile

    from microexp.data.annotations import load_clip_table
    from microexp.errors import AnnotationError

    good = _write_xlsx(tmp_path / "good.xlsx", [["Subject", "Filename"]])
    truncated = tmp_path / "DFME_truncated.xlsx"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(AnnotationError, match="not a valid xlsx file") as info:
        load_clip_table(truncated, check_files=False)
    assert isinstance(info.value.__cause__, zipfile.BadZipFile)  # the cause is kept for debugging
    assert str(truncated) in str(info.value) and "\n" not in str(info.value)
    ragged = tmp_path / "clips.csv"
    ragged.write_text("subject,clip\n1,2,3,4\n")
    with pytest.raises(AnnotationError, match="not a valid csv file") as info:
        load_clip_table(ragged, check_files=False)
    assert info.value.__cause__ is not None


def test_a_bug_inside_sheet_reading_keeps_its_traceback(tmp_path, monkeypatch):
    import pandas as pd

    from microexp.data.annotations import load_clip_table

    sheet = _write_xlsx(tmp_path / "DFME_data_coding.xlsx", [["Subject", "Filename"]])

    def broken_reader(*args, **kwargs):
        raise TypeError("a bug, not a bad file")

    monkeypatch.setattr(pd, "read_excel", broken_reader)  # stands in for a bug in the reader stack
    with pytest.raises(TypeError, match="a bug, not a bad file"):
        load_clip_table(sheet, check_files=False)


# ---------------------------------------------------------------------------------------------------
# decord -> PyAV fallback


def test_pyav_fallback_warns_once_per_process(tmp_path, monkeypatch, caplog):
    import av

    from microexp.data import video

    monkeypatch.setattr(video._warn_fallback, "warned", False)  # as in a fresh process
    paths = []
    for name in ("a.gif", "b.gif"):  # decord 0.6 cannot open GIF; PyAV can
        path = tmp_path / name
        with av.open(str(path), "w") as container:
            stream = container.add_stream("gif", rate=25)
            stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "rgb8"
            for frame in _frames(3):
                vframe = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="rgb8")
                for packet in stream.encode(vframe):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    with caplog.at_level(logging.WARNING, logger="microexp.data.video"):
        for path in paths * 2:
            with open_video(path) as reader:
                assert reader.get_frames([0, 2]).shape == (2, SIZE, SIZE, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(paths[0]) in message and "decord cannot open" in message and "PyAV" in message


def test_no_fallback_warning_when_pyav_fails_too(bad_clips, monkeypatch, caplog):
    from microexp.data import video

    monkeypatch.setattr(video._warn_fallback, "warned", False)
    with caplog.at_level(logging.WARNING, logger="microexp.data.video"):
        with pytest.raises(VideoReadError, match="PyAV cannot open"):
            len(open_video(bad_clips["zero"]))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert video._warn_fallback.warned is False
