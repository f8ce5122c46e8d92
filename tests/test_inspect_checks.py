"""``microexp inspect`` file checks (opening every clip), exit status and class order."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from microexp.cli import main
from microexp.data.annotations import load_clip_table
from microexp.data.video import check_clip, check_image_file, write_video
from microexp.errors import VideoReadError

SIZE = 32
HEADER = "subject,clip,path,onset,apex,offset,fps,emotion,aus,first_frame\n"


def _frames(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def _folder(path: Path, count: int, suffix: str = ".png") -> Path:
    path.mkdir(parents=True)
    for i, frame in enumerate(_frames(count), start=1):
        Image.fromarray(frame).save(path / f"img{i}{suffix}")
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture()
def dataset(tmp_path):
    """A clip table whose clips all exist, and five of which will fail to read."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "good.mp4", _frames(10), fps=200)
    (clips / "zero.mp4").write_bytes(b"")
    write_video(clips / "truncated.mp4", _frames(10), fps=200)
    _truncate(clips / "truncated.mp4")
    write_video(clips / "short.mp4", _frames(6), fps=200)  # annotated up to frame 9
    _folder(clips / "good_frames", 10)
    _folder(clips / "bad_png", 10)
    _truncate(clips / "bad_png" / "img4.png")
    _folder(clips / "bad_jpg", 10, ".jpg")
    _truncate(clips / "bad_jpg" / "img7.jpg")
    _folder(clips / "outside", 10)
    _truncate(clips / "outside" / "img10.png")  # not among the annotated frames 1..9: fine
    rows = [
        ("good", "clips/good.mp4", 1, 5, 10, 1), ("zero", "clips/zero.mp4", 1, 5, 10, 1),
        ("truncated", "clips/truncated.mp4", 1, 5, 10, 1), ("short", "clips/short.mp4", 1, 5, 9, 1),
        ("good_frames", "clips/good_frames", 1, 5, 10, 0), ("bad_png", "clips/bad_png", 1, 5, 10, 0),
        ("bad_jpg", "clips/bad_jpg", 1, 5, 10, 0), ("outside", "clips/outside", 1, 5, 9, 0),
    ]
    text = HEADER + "".join(f"{i},{c},{p},{on},{ap},{off},200,happiness,12,{ff}\n"
                            for i, (c, p, on, ap, off, ff) in enumerate(rows, start=1))
    (tmp_path / "annotations.csv").write_text(text)
    return tmp_path / "annotations.csv"


FAILING = {"zero": "zero.mp4", "truncated": "truncated.mp4", "short": "short.mp4",
           "bad_png": "img4.png", "bad_jpg": "img7.jpg"}


def test_inspect_opens_every_clip_and_names_those_that_will_fail(dataset, capsys):
    assert main(["inspect", str(dataset), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    errors = {p["clip"]: p for p in problems if p["severity"] == "error"}
    assert set(errors) == set(FAILING), [p["text"] for p in problems]
    for clip, name in FAILING.items():
        message = errors[clip]["message"]
        assert "will fail to read" in message and name in message and "\n" not in message
        assert "Traceback" not in message
    assert "6 frames" in errors["short"]["message"]
    assert "truncated PNG" in errors["bad_png"]["message"]


def test_the_check_matches_what_reading_the_clip_gives(dataset):
    """Every clip the check passes decodes in full; every clip it fails raises when read."""
    from microexp.data.video import open_video

    table = load_clip_table(dataset, check_files=False).table
    for row in table.itertuples():
        try:
            check_clip(row.path, onset=row.onset, offset=row.offset, first_frame=row.first_frame)
            passed = True
        except VideoReadError:
            passed = False
        with open_video(row.path, first_frame=row.first_frame) as reader:
            if passed:
                assert len(reader.get_frames_by_number(range(row.onset, row.offset + 1))) > 0
            else:
                with pytest.raises(VideoReadError):
                    reader.get_frames_by_number(range(row.onset, row.offset + 1))
        assert passed == (row.clip not in FAILING), row.clip


def test_no_video_check_and_annotations_only_skip_the_pass(dataset, capsys):
    assert main(["inspect", str(dataset), "--json", "--no-video-check"]) == 0
    assert not json.loads(capsys.readouterr().out)["problems"]
    assert main(["inspect", str(dataset), "--json", "--annotations-only"]) == 0
    assert not json.loads(capsys.readouterr().out)["problems"]
    assert not load_clip_table(dataset).problems  # the library default does not open files


def test_check_image_file_headers(tmp_path):
    folder = _folder(tmp_path / "f", 2, ".bmp")
    assert check_image_file(folder / "img1.bmp") == (SIZE, SIZE)
    _truncate(folder / "img2.bmp", 0.8)
    with pytest.raises(VideoReadError, match="truncated BMP"):
        check_image_file(folder / "img2.bmp")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(VideoReadError, match=f"^{junk}: not a readable image"):
        check_image_file(junk)


def test_a_frame_of_another_size_fails_the_check(tmp_path):
    folder = _folder(tmp_path / "f", 3)
    Image.new("RGB", (SIZE + 2, SIZE)).save(folder / "img2.png")
    with pytest.raises(VideoReadError, match="img2.png: frame size 34x32 differs"):
        check_clip(folder, onset=1, offset=3)


# ---------------------------------------------------------------------------------------------------
# exit status and help


def _csv(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "annotations.csv"
    path.write_text(HEADER + rows)
    return path


def test_exit_status_is_1_with_errors_and_0_with_warnings_only(tmp_path, capsys):
    warnings_only = _csv(tmp_path, "1,a,x,1,,9,200,happiness,12,0\n")  # missing apex: a warning
    assert main(["inspect", str(warnings_only), "--annotations-only"]) == 0
    assert "0 errors, 1 warnings" in capsys.readouterr().out
    errors = _csv(tmp_path, "1,a,x,9,5,1,200,happiness,12,0\n")  # onset > offset: an error
    assert main(["inspect", str(errors), "--annotations-only", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"][0]["severity"] == "error"


def test_help_states_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "1  errors were listed" in out and "0  no errors (warnings alone" in out
    assert "--no-video-check" in out


# ---------------------------------------------------------------------------------------------------
# class order


def test_classes_are_listed_in_label_order(tmp_path, capsys):
    emotions = ["surprise", "anger", "happiness", "fear", "surprise", "anger", "contempt"]
    rows = "".join(f"{i},c{i},x,1,2,3,200,{e},12,0\n" for i, e in enumerate(emotions, start=1))
    table = _csv(tmp_path, rows)
    assert main(["inspect", str(table), "--annotations-only", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_map"] == "dfme7"
    assert list(summary["classes"]) == ["happiness", "anger", "contempt", "fear", "surprise"]  # dfme7 order
    assert list(summary["classes"].values()) == [1, 2, 1, 1, 2]
    assert main(["inspect", str(table), "--annotations-only"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "%" in line]
    assert listed == ["happiness", "anger", "contempt", "fear", "surprise"]
    assert "label order of class map dfme7" in out


def test_class_map_option_counts_classes_in_its_order(tmp_path, capsys):
    rows = "".join(f"{i},c{i},x,1,2,3,200,{e},12,0\n" for i, e in
                   enumerate(["others", "fear", "disgust", "happiness", "disgust"], start=1))
    path = tmp_path / "annotations.csv"
    path.write_text(HEADER.replace("first_frame", "first_frame,dataset")
                    + rows.replace(",0\n", ",0,casme2\n"))
    assert main(["inspect", str(path), "--annotations-only", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_map"] is None  # no built-in map labels every CASME II emotion as itself
    assert list(summary["classes"]) == ["disgust", "fear", "happiness", "others"]
    assert main(["inspect", str(path), "--annotations-only", "--json", "--class-map", "casme2_5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_map"] == "casme2_5"
    assert summary["classes"] == {"happiness": 1, "disgust": 2, "repression": 0, "surprise": 0, "others": 1}
    assert list(summary["classes"]) == ["happiness", "disgust", "repression", "surprise", "others"]
    dropped = [p for p in summary["problems"] if p["field"] == "emotion"]
    assert len(dropped) == 1 and dropped[0]["severity"] == "warning" and dropped[0]["clip"] == "c2"
    assert main(["inspect", str(path), "--annotations-only", "--class-map", "dfme7"]) == 1  # unknown emotions
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------------
# progress bar: on a terminal only


def _stderr_of_inspect(args: list[str], *, tty: bool) -> str:
    command = [sys.executable, "-m", "microexp", "inspect", *args]
    if not tty:
        return subprocess.run(command, capture_output=True, text=True, timeout=120).stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a width
    try:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=120)
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(dataset):
    on_tty = _stderr_of_inspect([str(dataset)], tty=True)
    assert "opening clips" in on_tty and "clip" in on_tty
    piped = _stderr_of_inspect([str(dataset)], tty=False)
    assert "opening clips" not in piped
