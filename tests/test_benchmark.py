"""The benchmark suite: figures and targets, the naive reader baseline, and the JSON of a quick run."""

import json

import numpy as np
import pytest

from microexp.benchmark import SECTIONS, targets_from
from microexp.benchmark.loading import make_frames, naive_read
from microexp.benchmark.report import Figure, Section, Target, time_calls
from microexp.cli import main
from microexp.data.video import open_video, write_video


def test_figure_median_and_json():
    figure = Figure("x.seconds", (3.0, 1.0, 2.0, 10.0), "s")
    assert figure.median == 2.5
    assert figure.to_dict() == {"median": 2.5, "values": [3.0, 1.0, 2.0, 10.0], "unit": "s", "repeats": 4}


def test_target_met_in_both_directions_and_when_unmeasured():
    assert Target("a", 3.2, 3.0).met is True and Target("a", 2.9, 3.0).met is False
    assert Target("b", 0.05, 0.1, op="<").met is True and Target("b", 0.1, 0.1, op="<").met is False
    assert Target("c", None, 1.0).met is None and Target("c", float("nan"), 1.0).met is None
    assert set(Target("a", 3.2, 3.0).to_dict()) >= {"name", "measured", "target", "met"}
    with pytest.raises(ValueError):
        Target("d", 1.0, 1.0, op=">")


def test_time_calls_interleaves_and_skips_warmup():
    calls = []
    times = time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_targets_name_every_goal_and_say_why_unmeasured():
    section = Section("loading", figures=[Figure("480x640.packed_decord.speedup_vs_naive", (2.0, 4.0, 5.0), "x")])
    targets = [t.to_dict() for t in targets_from({"loading": section}, ["cpu"])]
    by_name = {t["name"]: t for t in targets}
    decord = by_name["loading: packed+decord (a) vs naive PyAV (b), 480x640"]
    assert decord["measured"] == 4.0 and decord["met"] is True
    assert by_name["loading: cache (d) vs naive PyAV (b), 480x640"]["met"] is None
    pipeline = [t for t in targets if t["name"].startswith("pipeline balance")]
    assert pipeline and pipeline[0]["note"] == "section not run" and pipeline[0]["op"] == "<"
    assert sum(t["name"].startswith("training throughput") for t in targets) >= 5


def test_naive_read_returns_the_frames_the_reader_returns(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (24, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=200, lossless=True, gop=1)
    positions = [0, 3, 11, 23]
    with open_video(path, backend="pyav") as reader:
        expected = reader.get_frames(positions)
    assert np.array_equal(naive_read(path, positions), expected)
    assert np.array_equal(expected, frames[positions])


def test_make_frames_shape_and_variation():
    frames = make_frames(48, 64, frames=40, unique=6)
    assert frames.shape == (40, 48, 64, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])  # sensor noise differs between rendered frames


def test_unknown_section_is_a_one_line_error(capsys):
    assert main(["benchmark", "--sections", "loading,warp"]) == 2
    assert "warp" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_benchmark_json_structure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--json", "--quick", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert report["quick"] is True and report["seconds"] > 0
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch"] and machine["devices"] == ["cpu"]
    sections = report["sections"]
    assert set(sections) == {"loading", "pipeline_cpu", "throughput_cpu", "latency_cpu", "small_inputs_cpu"}
    for name, section in sections.items():
        assert not section.get("skipped") and section["figures"], name
        for figure in section["figures"].values():
            assert set(figure) == {"median", "values", "unit", "repeats"} and len(figure["values"]) == figure["repeats"]
    loading = sections["loading"]["figures"]
    for size in ("128x128", "480x640"):
        for method in ("packed_decord", "naive_pyav", "folder", "cache"):
            assert loading[f"{size}.{method}.clips_per_s"]["median"] > 0
        assert f"{size}.cache.speedup_vs_naive" in loading
    assert "warm.data_fraction" in sections["pipeline_cpu"]["figures"]
    assert "flow_tiny.microexp_over_bare" in sections["throughput_cpu"]["figures"]
    latency = sections["latency_cpu"]["figures"]
    assert {"decode.p50", "model.p95", "total.p50", "batch8.clips_per_s"} <= set(latency)
    targets = report["targets"]
    assert len(targets) >= 5
    assert report["smoke_test"] is True and "smoke test" in report["note"]
    for target in targets:
        assert {"name", "measured", "target", "met", "status"} <= set(target)
        assert isinstance(target["measured"], float)
        if target["name"].startswith("loading"):  # same inputs as the full run: judged
            assert target["met"] in (True, False) and target["status"] in ("met", "missed")
        else:  # pipeline and throughput at --quick sizes: measured, but not judged
            assert target["met"] is None and target["status"] == "not evaluated" and "not evaluated" in target["note"]
    assert set(SECTIONS) == {"loading", "pipeline", "throughput", "latency", "small_inputs"}
