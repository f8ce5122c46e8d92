"""Long videos: the synthetic long recordings and their ground truth, the streaming frame reader, the interval
rule on constructed curves, the streaming spotter (found intervals, invariants, each frame's curve once, memory
bounded whatever the length), spot-then-recognise, and ``microexp spot``'s outputs, resume and bad inputs."""

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from microexp.cli import main
from microexp.data.video import FrameStream
from microexp.inference.long_spotting import LongSpotter, SpotSettings, spot_window
from microexp.spotting_metrics import Interval, spotting_scores
from microexp.synth.long import EVENT_KINDS, generate_long_dataset, iter_long_frames, plan_long_videos


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two 12 s recordings at 50 fps, 96 px faces, easy preset."""
    out = tmp_path_factory.mktemp("long")
    generate_long_dataset(out, preset="easy", videos=2, seconds=12, fps=50, size=96, seed=5, workers=1,
                          progress=False)
    return out


def _truth(root):
    table = pd.read_csv(root / "intervals.csv")
    return {v: [Interval(int(r.onset), int(r.offset), emotion=r.emotion) for r in g.itertuples()]
            for v, g in table.groupby("video")}


def _spot(path, settings=None, **kwargs):
    stream = FrameStream(path)
    spotter = LongSpotter(stream.fps, settings, **kwargs)
    found = []
    for numbers, frames in stream:
        found += spotter.feed(numbers, frames)
    return found + spotter.finish(), spotter


# -- the long recordings ----------------------------------------------------------------------------------


def test_the_plan_keeps_blinks_and_head_movements_clear_of_the_expressions():
    specs = plan_long_videos(preset="hard", videos=3, seconds=40, fps=100, seed=2)
    assert specs == plan_long_videos(preset="hard", videos=3, seconds=40, fps=100, seed=2)  # deterministic
    for spec in specs:
        kinds = {e.kind for e in spec.events}
        assert kinds == set(EVENT_KINDS)
        assert len(spec.of_kind("micro-expression")) >= 6  # one every 2-5 s
        events = sorted(spec.events, key=lambda e: e.onset)
        for e in events:
            assert 1 <= e.onset <= e.apex <= e.offset <= spec.num_frames
        for a, b in zip(events, events[1:]):  # no two events overlap, and 0.15 s lies between them
            assert b.onset - a.offset >= 0.15 * spec.fps - 1, (a, b)
        for me in spec.of_kind("micro-expression"):
            assert me.emotion and me.action_units
            assert (me.offset - me.onset) / spec.fps <= spec.preset.duration_ms[1] / 1000 + 1 / spec.fps


def test_a_frame_is_the_same_whichever_range_is_rendered():
    spec = plan_long_videos(preset="medium", videos=1, seconds=6, fps=50, seed=1)[0]
    whole = np.stack(list(iter_long_frames(spec, size=64, stop=120)))
    part = np.stack(list(iter_long_frames(spec, size=64, start=101, stop=120)))
    assert np.array_equal(whole[100:], part)
    me = spec.of_kind("micro-expression")[0]
    still = np.abs(whole[me.onset - 3].astype(int) - whole[me.onset - 2].astype(int)).mean()
    moving = np.abs(whole[me.apex - 1].astype(int) - whole[me.onset - 2].astype(int)).mean()
    assert moving > still  # the expression moves the face


def test_synth_long_writes_videos_and_the_true_intervals(recordings, capsys):
    table = pd.read_csv(recordings / "intervals.csv")
    events = pd.read_csv(recordings / "events.csv")
    assert list(table.columns) == ["video", "onset", "apex", "offset", "emotion", "aus", "fps"]
    assert set(table.video) == {"long_001", "long_002"} and (table.fps == 50).all()
    assert len(events[events.kind == "micro-expression"]) == len(table)
    meta = json.loads((recordings / "synth.json").read_text())
    assert meta["frames_per_video"] == 600
    stream = FrameStream(recordings / "videos" / "long_001.mp4")
    assert (stream.fps, stream.first_frame, stream.total, stream.size) == (50.0, 1, 600, (96, 96))
    assert main(["synth", str(recordings), "--long", "1", "--clips", "5"]) == 2  # a clip-only option
    assert "--clips only shape clip datasets" in capsys.readouterr().err
    assert main(["synth", str(recordings / "x"), "--long", "1", "--fps", "10"]) == 2
    assert "--fps must be an integer frame rate in 25..500" in capsys.readouterr().err
    assert main(["synth", str(recordings), "--long", "1", "--seconds", "5"]) == 2  # holds a dataset already
    assert "pass --overwrite" in capsys.readouterr().err


def test_the_frame_stream_reads_every_frame_once_in_order(recordings, tmp_path):
    stream = FrameStream(recordings / "videos" / "long_002.mp4", chunk=64)
    numbers = np.concatenate([n for n, f in stream])
    assert numbers.tolist() == list(range(1, 601))
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for i, frame in enumerate(iter_long_frames(plan_long_videos(videos=1, seconds=5, fps=25, seed=0)[0], size=32,
                                               stop=30), start=7):
        cv2.imwrite(str(folder / f"img{i}.png"), frame)
    chunks = list(FrameStream(folder, fps=25, chunk=8))
    assert [len(n) for n, _ in chunks] == [8, 8, 8, 6] and chunks[0][0][0] == 7 and chunks[-1][0][-1] == 36


# -- the interval rule --------------------------------------------------------------------------------------


def _hump(t, a, b, height):
    x = np.zeros(t)
    x[a:b] = height * np.hanning(b - a + 2)[1:-1]
    return x


def test_the_window_rule_on_constructed_curves():
    settings = SpotSettings()
    fps, t = 100.0, 120
    ((lo, top, hi, score),) = spot_window(_hump(t, 40, 70, 20.0), fps=fps, settings=settings)
    assert 40 <= lo <= 45 and 54 <= top <= 56 and 65 <= hi <= 70 and score == pytest.approx(20, abs=0.1)
    drift = np.linspace(0, 6, t)  # a slow drift under it changes the bases, not the interval
    ((lo2, top2, hi2, _),) = spot_window(drift + _hump(t, 40, 70, 20.0), fps=fps, settings=settings)
    assert abs(lo2 - lo) <= 2 and abs(hi2 - hi) <= 2 and abs(top2 - top) <= 1
    step = np.where(np.arange(t) > 50, 15.0, 0.0)  # a head movement's step: rises and stays
    assert spot_window(step, fps=fps, settings=settings) == []
    begun = _hump(t + 20, 0, 50, 20.0)[20:]  # under way when the window begins: high at its first frame
    assert spot_window(begun, fps=fps, settings=settings) == []
    assert spot_window(begun[::-1].copy(), fps=fps, settings=settings) == []  # not over when it ends
    assert spot_window(_hump(t, 40, 70, 5.0), fps=fps, settings=settings) == []  # below the threshold
    assert spot_window(_hump(t, 10, 110, 20.0), fps=fps, settings=settings) == []  # 1 s: longer than an ME
    assert spot_window(_hump(t, 40, 70, 20.0), fps=fps, settings=settings, blinks=[(50, 58)]) == []
    two = _hump(t, 10, 35, 20.0) + _hump(t, 70, 100, 12.0)
    assert [(a, c) for a, _, c, _ in sorted(spot_window(two, fps=fps, settings=settings))] == \
        [(a, c) for a, _, c, _ in sorted(spot_window(_hump(t, 10, 35, 20.0), fps=fps, settings=settings)
                                         + spot_window(_hump(t, 70, 100, 12.0), fps=fps, settings=settings))]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="floor"):
        SpotSettings(threshold=2.0, floor=3.0).check()
    with pytest.raises(ValueError, match="max duration"):
        SpotSettings(window_s=1.0, max_duration_s=1.5).check()


# -- the streaming spotter ----------------------------------------------------------------------------------


def test_the_spotter_finds_the_expressions_of_easy_recordings(recordings):
    truth = _truth(recordings)
    spotted = {}
    for video in truth:
        found, spotter = _spot(recordings / "videos" / f"{video}.mp4")
        spotted[video] = [Interval(i.onset, i.offset, i.score) for i in found]
        for a in found:  # invariants: ordered phases inside the video, no longer than a micro-expression
            assert 1 <= a.onset <= a.apex <= a.offset <= 600
            assert (a.offset - a.onset) / 50 <= SpotSettings().max_duration_s + 1e-9
            assert set(a.confidence) == {"onset", "apex", "offset"}
        starts = [a.onset for a in found]
        assert starts == sorted(starts)
        assert all(a.offset < b.onset for a, b in zip(found, found[1:]))  # kept once, never overlapping
        assert spotter.box is not None and spotter.windows > 15
    overall, _, _ = spotting_scores(spotted, truth)
    assert overall.tp >= 0.6 * (overall.tp + overall.fn)  # easy preset, 96 px: most are found
    assert overall.precision >= 0.6


def test_each_frame_gets_one_curve_value_in_order(recordings):
    numbers = []
    _spot(recordings / "videos" / "long_001.mp4", on_curve=lambda n, v: numbers.extend(n.tolist()))
    assert numbers == list(range(1, 601))


def _peak_memory(path, settings):
    tracemalloc.start()
    try:
        _spot(path, settings)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_whatever_the_length(tmp_path):
    # 8 s and 32 s of the same kind of recording: the longer one decodes 4x the frames, the peak stays put
    settings = SpotSettings(size=48, crop_size=64)
    peaks = {}
    for seconds in (8, 32):
        out = tmp_path / f"s{seconds}"
        generate_long_dataset(out, preset="easy", videos=1, seconds=seconds, fps=25, size=64, seed=1, workers=1,
                              progress=False)
        peaks[seconds] = _peak_memory(out / "videos" / "long_001.mp4", settings)
    decoded_long = 32 * 25 * 64 * 64 * 3
    assert peaks[32] < 1.25 * peaks[8] + 2**20, peaks
    assert peaks[32] < decoded_long / 2, (peaks, decoded_long)


# -- spot-then-recognise and the command ----------------------------------------------------------------------


def test_predict_frames_is_predict_on_the_same_frames(tmp_path, tiny_checkpoint):
    import cv2

    from microexp.inference import ClipPredictor

    path, _ = tiny_checkpoint
    spec = plan_long_videos(videos=1, seconds=5, fps=50, seed=0)[0]
    frames = np.stack(list(iter_long_frames(spec, size=64, stop=40)))
    folder = tmp_path / "clip"
    folder.mkdir()
    for n, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{n:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    predictor = ClipPredictor.from_checkpoint(path, face_crop=False)
    on_disk = predictor.predict(folder, 5, 20, 35)
    in_memory = predictor.predict_frames(frames, range(1, 41), 5, 20, 35, name="clip")
    assert in_memory.label == on_disk.label
    for name, p in on_disk.probabilities.items():
        assert in_memory.probabilities[name] == pytest.approx(p, abs=1e-6)


def test_microexp_spot_writes_its_outputs_resumes_and_recognises(recordings, tmp_path, tiny_checkpoint, capsys):
    path, classes = tiny_checkpoint
    out = tmp_path / "spot"
    videos = [str(recordings / "videos" / f"long_00{i}.mp4") for i in (1, 2)]
    assert main(["spot", *videos, "--out", str(out), "--recognise", str(path), "--no-progress"]) == 0
    table = pd.read_csv(out / "intervals.csv")
    assert {"video", "onset", "apex", "offset", "score", "emotion", "probability"} <= set(table.columns)
    assert set(table.emotion) <= set(classes) and ((table.probability > 0) & (table.probability <= 1)).all()
    for name in ("long_001", "long_002"):
        curve = pd.read_csv(out / "curves" / f"{name}.csv")
        assert curve.frame.tolist() == list(range(1, 601))
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    summary = json.loads((out / "spot.json").read_text())
    assert summary["videos"]["long_001"]["frames"] == 600 and summary["failures"] == []
    capsys.readouterr()
    assert main(["spot-eval", str(out / "intervals.csv"), str(recordings / "intervals.csv"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert "strs" in scores and 0 <= scores["strs"] <= scores["overall"]["f1"]
    before = (out / "intervals.csv").read_text()
    assert main(["spot", *videos, "--out", str(out), "--recognise", str(path), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done before with these settings") == 2
    assert (out / "intervals.csv").read_text() == before


def test_microexp_spot_bad_inputs(recordings, tmp_path, capsys):
    out = str(tmp_path / "o")
    video = str(recordings / "videos" / "long_001.mp4")
    assert main(["spot", str(tmp_path / "nope.mp4"), "--out", out]) == 2
    assert "nope.mp4: no such video file or frame folder" in capsys.readouterr().err
    assert main(["spot", video, "--out", out, "--window", "0.8"]) == 2
    assert "more than twice --max-duration" in capsys.readouterr().err
    assert main(["spot", video, "--out", out, "--threshold", "1", "--floor", "2"]) == 2
    err = capsys.readouterr().err
    assert "threshold 1.0 and floor 2.0: expected 0 <= floor < threshold" in err and err.count("microexp spot") == 1
    assert main(["spot", video, video, "--out", out]) == 2
    assert "are both named 'long_001'" in capsys.readouterr().err
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for i in range(1, 4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((32, 32, 3), np.uint8))
    assert main(["spot", str(folder), video, "--out", out, "--no-progress", "--no-plot"]) == 2  # one fails
    err = capsys.readouterr().err
    assert "frames: no frame rate" in err and "1 of 2 video(s) failed" in err and "Traceback" not in err
    assert set(pd.read_csv(tmp_path / "o" / "intervals.csv").video) <= {"long_001"}
    noise = tmp_path / "noise"  # no face: spotted on whole frames, and said so
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 41):
        cv2.imwrite(str(noise / f"{i:03d}.png"), rng.integers(100, 140, (64, 64, 3), dtype=np.uint8))
    assert main(["spot", str(noise), "--out", out, "--fps", "25", "--no-progress", "--no-plot"]) == 0
    assert "noise: no face found in the first 2 s: spotted on whole frames" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "spot.json").read_text())["videos"]["noise"]["face_box"] is None


def test_the_long_benchmark_counts_every_interval_and_names_each_false_positive(tmp_path, tiny_checkpoint):
    from microexp.benchmark.long_spotting import LongConfig, format_long_table, long_spotting_benchmark

    path, _ = tiny_checkpoint
    config = LongConfig("easy", 50, 96, 1, 12.0)
    table = long_spotting_benchmark(tmp_path, [config], seed=5, checkpoint=path, workers=1)
    row = table.iloc[0]
    spec = plan_long_videos(preset="easy", videos=1, seconds=12.0, fps=50, seed=5)[0]
    assert row.true == len(spec.of_kind("micro-expression")) == row.tp + row.fn
    assert row.spotted == row.tp + row.fp
    causes = {} if row.fp_causes == "-" else dict(c.rsplit(" ", 1) for c in row.fp_causes.split(", "))
    assert sum(int(v) for v in causes.values()) == row.fp and set(causes) <= {*EVENT_KINDS, "noise"}
    assert 0 <= row.strs <= row.f1
    lines = format_long_table(table).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|")


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        generate_long_dataset(tmp_path / name, preset="easy", videos=1, seconds=5, fps=25, size=64, seed=3, workers=1,
                              progress=False)
    for rel in ("videos/long_001.mp4", "intervals.csv", "events.csv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
