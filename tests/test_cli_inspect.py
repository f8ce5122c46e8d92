"""``microexp inspect`` and the CLI's error contract: one line, exit 2, no traceback."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from microexp.cli import main


@pytest.fixture()
def csv_table(tmp_path):
    frames = tmp_path / "clips"
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    for clip in ("c1", "c2", "c3"):
        (frames / clip).mkdir(parents=True)
        for n in range(1, 21):
            image.save(frames / clip / f"{n:05d}.png")  # real images: inspect opens them
    path = tmp_path / "annotations.csv"
    path.write_text(
        "subject,clip,path,onset,apex,offset,fps,emotion,aus\n"
        "1,c1,clips/c1,1,5,20,200,happiness,6+12\n"
        "2,c2,clips/c2,2,,18,500,surprise,1+2\n"
        "2,c3,clips/c3,12,5,4,300,fear,1+2+4\n"
    )
    return path


def test_inspect_json_summary(csv_table, capsys):
    assert main(["inspect", str(csv_table), "--json", "--sample", "2", "--strategy", "uniform", "--frames", "4"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 3 and summary["subjects"] == 2
    assert summary["classes"] == {"fear": 1, "happiness": 1, "surprise": 1}
    assert summary["fps"] == {"200": 1, "300": 1, "500": 1}
    severities = sorted((p["clip"], p["severity"], p["field"]) for p in summary["problems"])
    assert ("c2", "warning", "apex") in severities  # missing apex estimated and flagged
    assert any(clip == "c3" and sev == "error" for clip, sev, _ in severities)  # onset > offset
    assert summary["samples"][0] == {"clip": "c1", "indices": [1, 7, 14, 20]}


def test_inspect_text_lists_problems(csv_table, capsys):
    assert main(["inspect", str(csv_table)]) == 1  # it lists an error
    out = capsys.readouterr().out
    assert "3 clips from 2 subjects" in out
    assert "1 errors" in out and "c3" in out


def test_missing_annotations_file_is_one_line_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.csv" in err and err.startswith("microexp inspect: error:")


def test_wrong_columns_name_the_missing_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("subject,clip,path,onset,offset,fps,emotion,aus\n1,c,x,1,2,200,happiness,\n")
    assert main(["inspect", str(bad), "--format", "microexp"]) == 2
    err = capsys.readouterr().err
    assert "apex" in err.lower() and "bad.csv" in err


def test_python_dash_m_entry_point(csv_table):
    proc = subprocess.run([sys.executable, "-m", "microexp", "inspect", str(csv_table), "--annotations-only",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # onset > offset in c3 is an error
    assert json.loads(proc.stdout)["clips"] == 3
