"""The region-wise, blink-robust spotter: phase invariants on rendered clips, the blink detector on signals with
known blinks, the layout fallback, and the predictor's spotting option."""

import numpy as np
import pytest

from microexp.inference.region_spotting import detect_blinks, face_regions, spot_regions
from microexp.synth.plan import plan_dataset
from microexp.synth.render import render_clip


def _event(t, a, b, height):
    x = np.zeros(t)
    x[a:b] = height * np.hanning(b - a + 2)[1:-1]
    return x


def test_a_short_symmetric_eye_only_event_is_a_blink():
    t = 200  # 1 s at 200 fps
    left, right = _event(t, 40, 80, 12.0), _event(t, 41, 81, 10.0)  # 0.2 s, both eyes
    quiet = np.zeros(t)
    (blink,) = detect_blinks(left, right, quiet, fps=200)
    # from where an eye leaves its floor (a quarter of the weaker peak, 2.5 here) to where both are back
    assert 40 <= blink[0] <= 48 and 73 <= blink[1] <= 81
    assert detect_blinks(left, np.zeros(t), quiet, fps=200) == []  # one eye: not a blink
    assert detect_blinks(left, 0.2 * right, quiet, fps=200) == []  # too asymmetric
    long_l, long_r = _event(t, 10, 190, 12.0), _event(t, 10, 190, 12.0)  # 0.9 s: longer than any blink
    assert detect_blinks(long_l, long_r, quiet, fps=200) == []
    assert detect_blinks(left, right, _event(t, 40, 80, 11.0), fps=200) == []  # the mouth rises with it: not eye-only


def test_a_blink_on_a_drifting_baseline_is_still_short():
    # against a fixed reference the eye signals creep up over a long stretch: back to 1.8, not to 0, after the
    # blink; the blink still ends where the eyes fall back (a quarter of the weaker peak), not seconds later
    t = 240
    drift = np.linspace(0.0, 2.5, t)
    left, right = drift + _event(t, 60, 100, 40.0), drift + _event(t, 61, 101, 30.0)
    (blink,) = detect_blinks(left, right, np.zeros(t), fps=200)
    assert 55 <= blink[0] <= 65 and 95 <= blink[1] <= 105


def test_an_event_already_under_way_elsewhere_does_not_hide_a_blink():
    t = 200
    left, right = _event(t, 100, 140, 12.0), _event(t, 100, 140, 12.0)
    mouth = np.full(t, 6.0)  # an expression holding the mouth up the whole time adds nothing during the blink
    assert len(detect_blinks(left, right, mouth, fps=200)) == 1


def test_regions_fall_back_to_a_layout_without_eyes():
    flat = np.full((64, 64, 3), 128, np.uint8)
    regions = face_regions(flat, size=64)
    assert regions.eyes == "layout"
    for x0, y0, x1, y1 in regions.boxes.values():
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert regions.boxes["brows"][1] < regions.boxes["eye_left"][1] < regions.boxes["nose"][1] < \
        regions.boxes["mouth"][1]


@pytest.mark.parametrize("preset", ["easy", "hard"])
def test_spotted_phases_are_ordered_inside_the_clip_with_confidences(preset):
    for spec in plan_dataset(preset=preset, subjects=2, clips=3, seed=4)[:3]:
        frames = render_clip(spec, size=64).frames
        numbers = list(range(1, len(frames) + 1))
        result = spot_regions(frames, numbers, fps=spec.fps)
        p = result.phases
        assert 1 <= p.onset <= p.apex <= p.offset <= len(frames)
        assert set(result.confidence) == {"onset", "apex", "offset"}
        assert all(0.0 <= c <= 1.0 for c in result.confidence.values())
        given = spot_regions(frames, numbers, fps=spec.fps, onset=spec.onset, offset=spec.offset).phases
        assert (given.onset, given.offset) == (spec.onset, spec.offset) and spec.onset <= given.apex <= spec.offset


def test_the_predictor_refuses_an_unknown_spotting_method(tmp_path):
    import torch

    from microexp.checkpoint import save_checkpoint
    from microexp.inference.predictor import ClipPredictor, PredictionError
    from microexp.models import create_model

    model = create_model("r3d_tiny", num_classes=3, num_frames=4, input_size=32)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", model=model, class_names=["a", "b", "c"],
                           data={"num_frames": 4, "sampling": "uniform", "size": 32})
    assert ClipPredictor.from_checkpoint(path, spotting="regions").spotting == "regions"
    with pytest.raises(PredictionError, match="spotting='nope'"):
        ClipPredictor.from_checkpoint(path, spotting="nope")
