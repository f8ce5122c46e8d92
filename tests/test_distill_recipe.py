"""recipes/dfme_distill.py end to end in its smoke-test size: teachers, both ensembles, the student alone and
distilled, with a latency per model; the ensemble's latency is its members' sum."""

import importlib.util
import json
from pathlib import Path

from microexp.synth import generate_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "dfme_distill.py"


def test_distill_recipe_quick(tmp_path):
    generate_dataset(tmp_path / "data", clips=24, subjects=6, size=32, fmt="frames", seed=4, workers=1,
                     progress=False)
    spec = importlib.util.spec_from_file_location("dfme_distill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "study"
    assert module.main(["--data", str(tmp_path / "data" / "annotations.csv"), "--out", str(out), "--quick"]) == 0
    rows = json.loads((out / "distill.json").read_text())
    assert [r["kind"] for r in rows] == ["teacher"] * 3 + ["ensemble"] * 2 + ["student"] * 2
    teachers = sum(r["latency_s"] for r in rows if r["kind"] == "teacher")
    assert all(r["latency_s"] == teachers for r in rows if r["kind"] == "ensemble")
    assert all(0 <= r["uf1"] <= 1 and r["latency_s"] > 0 for r in rows)
    assert (out / "student_distilled" / "fold_00" / "teacher_targets.csv").is_file()
    assert "Smoke test" in (out / "summary.md").read_text()
