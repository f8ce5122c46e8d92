"""Tests of microexp.data.sampling: the invariants of every strategy, then each strategy's own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from microexp.data.sampling import (
    STRATEGIES,
    SamplingSpec,
    frames_needed,
    interpolate_frames,
    sample_indices,
    sample_times,
    time_stride_frames,
)
from microexp.errors import ConfigError

# (onset, apex, offset, num_frames): long clips, exact fits, clips shorter than num_frames, apex at
# onset / at offset, single-frame clips, num_frames 1 and 2.
CASES = [
    (0, 0, 0, 1),
    (0, 0, 0, 8),
    (5, 5, 5, 4),
    (10, 10, 30, 8),
    (10, 30, 30, 8),
    (1, 3, 5, 8),
    (1, 1, 5, 8),
    (1, 5, 5, 8),
    (1, 4, 8, 8),
    (1, 4, 9, 8),
    (0, 50, 200, 16),
    (100, 120, 180, 1),
    (3, 10, 40, 2),
    (0, 7, 15, 5),
    (1, 2, 3, 3),
    (0, 1, 100, 8),
    (0, 99, 100, 8),
    (0, 3, 6, 7),
    (7, 9, 12, 6),
    (1, 40, 41, 3),
]
STRIDES = [1, 2, 3, 7]
SHORT_CASES = [c for c in CASES if c[2] - c[0] + 1 < c[3]]  # fewer frames than num_frames
LONG_CASES = [c for c in CASES if c[2] - c[0] + 1 >= c[3]]


def _length(onset: int, offset: int) -> int:
    return offset - onset + 1


def _sample(strategy, case, **kw):
    onset, apex, offset, n = case
    return sample_indices(strategy, onset, apex, offset, n, **kw)


# --------------------------------------------------------------------------------------- all strategies


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_common_invariants(strategy, case, stride):
    onset, apex, offset, n = case
    for train, rng in ((False, None), (True, np.random.default_rng(0))):
        idx = _sample(strategy, case, stride=stride, train=train, rng=rng)
        assert len(idx) == n
        assert all(type(i) is int for i in idx)
        assert idx == sorted(idx)
        assert all(onset <= i <= offset for i in idx)
        times = sample_times(strategy, onset, apex, offset, n, stride=stride, train=False)
        assert times.dtype == np.float64 and times.shape == (n,)
        assert np.all(np.diff(times) >= 0) and times[0] >= onset and times[-1] <= offset


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_in_eval_and_rng_untouched(strategy, case):
    rng = np.random.default_rng(123)
    state = rng.bit_generator.state
    first = _sample(strategy, case, stride=2, rng=rng)
    assert _sample(strategy, case, stride=2, rng=rng) == first
    assert _sample(strategy, case, stride=2) == first
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("case", SHORT_CASES, ids=str)
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in ("onset_apex", "tim")])
def test_short_clip_gives_every_frame_then_repeats_last(strategy, case):
    onset, apex, offset, n = case
    expected = list(range(onset, offset + 1)) + [offset] * (n - _length(onset, offset))
    for train in (False, True):
        assert _sample(strategy, case, train=train, rng=np.random.default_rng(1)) == expected


@pytest.mark.parametrize("case", LONG_CASES, ids=str)
@pytest.mark.parametrize("strategy", ["uniform", "apex_centered", "onset_apex_offset", "tsn", "tim"])
def test_no_repeats_on_long_clips(strategy, case):
    onset, apex, offset, n = case
    for stride in STRIDES:
        for train in (False, True):
            idx = _sample(strategy, case, stride=stride, train=train, rng=np.random.default_rng(2))
            assert len(set(idx)) == n


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "tim"])
def test_times_equal_indices_except_tim(strategy, case):
    onset, apex, offset, n = case
    for stride in STRIDES:
        times = sample_times(strategy, onset, apex, offset, n, stride=stride)
        assert times.tolist() == [float(i) for i in _sample(strategy, case, stride=stride)]


# --------------------------------------------------------------------------------------- per strategy


@pytest.mark.parametrize("case", CASES, ids=str)
def test_uniform_first_last_and_even_spacing(case):
    onset, apex, offset, n = case
    idx = _sample("uniform", case)
    if n == 1:
        assert idx == [(onset + offset) // 2]
        return
    assert idx[0] == onset
    assert idx[-1] == offset
    if _length(onset, offset) >= n:
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1
        assert np.allclose(idx, np.linspace(onset, offset, n), atol=0.5)


def test_uniform_example():
    assert sample_indices("uniform", 0, 5, 10, 3) == [0, 5, 10]
    assert sample_indices("uniform", 1, 2, 8, 8) == list(range(1, 9))
    assert sample_indices("uniform", 0, 2, 9, 4) == [0, 3, 6, 9]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_onset_apex(case):
    onset, apex, offset, n = case
    idx = _sample("onset_apex", case)
    assert idx[-1] == apex
    assert max(idx) <= apex
    if n >= 2:
        assert idx[0] == onset
    phase = apex - onset + 1
    if phase < n:
        assert idx == list(range(onset, apex + 1)) + [apex] * (n - phase)
    else:
        assert len(set(idx)) == n


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_apex_centered_includes_apex_with_equal_gaps(case, stride):
    onset, apex, offset, n = case
    idx = _sample("apex_centered", case, stride=stride)
    assert apex in idx
    if _length(onset, offset) >= n and n >= 2:
        gaps = set(np.diff(idx).tolist())
        assert len(gaps) == 1
        (gap,) = gaps
        assert 1 <= gap <= stride
        # independent reference: the effective stride is the largest one with a window holding the apex
        def fits(s):
            return any(
                start + (n - 1) * s <= offset and (apex - start) % s == 0 and apex <= start + (n - 1) * s
                for start in range(onset, apex + 1)
            )
        assert gap == max(s for s in range(1, stride + 1) if fits(s))


def test_apex_centered_centres_and_shifts():
    # centred: apex at position n // 2
    assert sample_indices("apex_centered", 0, 50, 100, 5, stride=2) == [46, 48, 50, 52, 54]
    assert sample_indices("apex_centered", 0, 50, 100, 4) == [48, 49, 50, 51]
    # apex near onset / offset: the window is shifted inside, stride kept, not clipped
    assert sample_indices("apex_centered", 10, 11, 100, 5, stride=3) == [11, 14, 17, 20, 23]
    assert sample_indices("apex_centered", 10, 10, 100, 4, stride=2) == [10, 12, 14, 16]
    assert sample_indices("apex_centered", 0, 99, 100, 4, stride=2) == [93, 95, 97, 99]
    assert sample_indices("apex_centered", 0, 100, 100, 3) == [98, 99, 100]


def test_apex_centered_reduces_stride_when_window_does_not_fit():
    # window 7 * 3 + 1 = 22 > 20 frames: stride 2 (15 frames) fits
    idx = sample_indices("apex_centered", 1, 10, 20, 8, stride=3)
    assert set(np.diff(idx).tolist()) == {2}
    assert 10 in idx and idx[0] >= 1 and idx[-1] <= 20
    # exact fit: stride falls to 1 and the window is the whole clip
    assert sample_indices("apex_centered", 1, 4, 8, 8, stride=5) == list(range(1, 9))


def test_apex_centered_keeps_apex_over_stride():
    # a stride-3 window of 3 fits 0..7 only as 0,3,6 / 1,4,7: apex 5 is on neither grid -> stride 2
    idx = sample_indices("apex_centered", 0, 5, 7, 3, stride=3)
    assert 5 in idx and set(np.diff(idx).tolist()) == {2}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_onset_apex_offset(case):
    onset, apex, offset, n = case
    idx = _sample("onset_apex_offset", case)
    assert apex in idx
    if _length(onset, offset) >= n:
        assert idx.count(apex) == 1
        if n >= 3:
            assert idx[0] == onset and idx[-1] == offset


def test_onset_apex_offset_proportional_split():
    # rise 20, fall 60 frames: 8 non-apex frames split 2 before / 6 after
    idx = sample_indices("onset_apex_offset", 0, 20, 80, 9)
    before = [i for i in idx if i < 20]
    after = [i for i in idx if i > 20]
    assert (len(before), len(after)) == (2, 6)
    assert idx == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    # at least one frame on each non-empty side when n >= 3
    idx = sample_indices("onset_apex_offset", 0, 1, 100, 4)
    assert idx[0] == 0 and idx[1] == 1 and idx[-1] == 100
    # apex at an end: all frames on the other side
    assert sample_indices("onset_apex_offset", 0, 0, 6, 4) == [0, 2, 4, 6]
    assert sample_indices("onset_apex_offset", 0, 6, 6, 4) == [0, 2, 4, 6]
    assert sample_indices("onset_apex_offset", 0, 6, 6, 1) == [6]


def _tsn_segments(onset, offset, n):
    length = _length(onset, offset)
    bounds = [onset + (i * length) // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(n)]


@pytest.mark.parametrize("case", LONG_CASES, ids=str)
def test_tsn_segments(case):
    onset, apex, offset, n = case
    segments = _tsn_segments(onset, offset, n)
    assert segments[0][0] == onset and segments[-1][1] == offset
    eval_idx = _sample("tsn", case)
    assert eval_idx == [(lo + hi) // 2 for lo, hi in segments]
    rng = np.random.default_rng(7)
    for _ in range(20):
        idx = _sample("tsn", case, train=True, rng=rng)
        assert all(lo <= i <= hi for i, (lo, hi) in zip(idx, segments))


def test_tsn_train_is_random_and_seeded():
    draws = {tuple(sample_indices("tsn", 0, 50, 199, 8, train=True, rng=np.random.default_rng(s))) for s in range(10)}
    assert len(draws) > 1
    a = sample_indices("tsn", 0, 50, 199, 8, train=True, rng=np.random.default_rng(42))
    b = sample_indices("tsn", 0, 50, 199, 8, train=True, rng=np.random.default_rng(42))
    assert a == b
    assert sample_indices("tsn", 0, 50, 199, 8, train=True, rng=42) == a
    assert len(sample_indices("tsn", 0, 50, 199, 8, train=True)) == 8  # default rng


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_dense(case, stride):
    onset, apex, offset, n = case
    idx = _sample("dense", case, stride=stride)
    assert idx == [min(onset + i * stride, offset) for i in range(n)]
    assert idx[0] == onset


def test_dense_example():
    assert sample_indices("dense", 10, 12, 100, 4, stride=3) == [10, 13, 16, 19]
    assert sample_indices("dense", 10, 12, 15, 4, stride=3) == [10, 13, 15, 15]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tim(case):
    onset, apex, offset, n = case
    times = sample_times("tim", onset, apex, offset, n)
    idx = _sample("tim", case)
    assert times.shape == (n,)
    if _length(onset, offset) >= n:
        assert idx == _sample("uniform", case)
        assert times.tolist() == [float(i) for i in idx]
        return
    assert times[0] == onset and times[-1] == offset
    assert np.allclose(times, np.linspace(onset, offset, n))
    if offset > onset:
        assert np.all(np.diff(times) > 0)  # no repeated times
        assert np.any(times != np.round(times))  # fractional
    assert idx == [int(np.floor(t + 0.5)) for t in times]
    assert idx == sorted(idx)


def test_tim_short_clip_example():
    times = sample_times("tim", 1, 2, 3, 5)
    assert times.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert sample_indices("tim", 1, 2, 3, 5) == [1, 2, 2, 3, 3]
    assert frames_needed(times) == [1, 2, 3]


def _ramp(start: int, count: int, dtype=np.float64) -> np.ndarray:
    """Frames whose every pixel equals the frame number."""
    values = np.arange(start, start + count, dtype=np.float64)
    return np.broadcast_to(values[:, None, None, None], (count, 2, 3, 3)).astype(dtype)


def test_interpolate_frames_on_a_ramp():
    times = sample_times("tim", 10, 12, 14, 9)  # 10, 10.5, ..., 14
    frames = _ramp(10, 5)
    out = interpolate_frames(frames, times, start=10)
    assert out.shape == (9, 2, 3, 3) and out.dtype == np.float64
    assert np.allclose(out, times[:, None, None, None])

    times = np.array([10.0, 10.25, 11.5, 13.75, 14.0])
    out8 = interpolate_frames(_ramp(10, 5, np.uint8), times, start=10)
    assert out8.dtype == np.uint8
    assert out8[:, 0, 0, 0].tolist() == [10, 10, 12, 14, 14]  # rounded half up: 11.5 -> 12

    out32 = interpolate_frames(_ramp(10, 5, np.float32), times, start=10)
    assert out32.dtype == np.float32
    assert np.allclose(out32[:, 1, 2, 0], times)


def test_interpolate_frames_integer_times_exact_and_by_number():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 4, 5, 3), dtype=np.uint8)
    out = interpolate_frames(frames, [3.0, 5.0, 8.0], start=3)
    assert np.array_equal(out, frames[[0, 2, 5]])
    # decode only frames_needed, then interpolate with their numbers or as a mapping
    times = np.array([3.0, 4.5, 8.0])
    needed = frames_needed(times)
    assert needed == [3, 4, 5, 8]
    decoded = frames[[n - 3 for n in needed]]
    full = interpolate_frames(frames, times, start=3)
    assert np.array_equal(interpolate_frames(decoded, times, numbers=needed), full)
    assert np.array_equal(interpolate_frames(dict(zip(needed, decoded)), times), full)


def test_interpolate_frames_missing_frame_raises():
    with pytest.raises(ValueError, match="needs frames 14 and 15"):
        interpolate_frames(_ramp(10, 5), [14.5], start=10)
    with pytest.raises(ValueError, match="unique"):
        interpolate_frames(_ramp(10, 2), [10.0], numbers=[10, 10])


# --------------------------------------------------------------------------------------- frame rate


def test_time_stride_frames():
    assert time_stride_frames(2, 500, 200) == 5
    assert time_stride_frames(2, 300, 200) == 3
    assert time_stride_frames(1, 300, 200) == 2  # 1.5 rounds half up
    assert time_stride_frames(2, 200, 200) == 2
    assert time_stride_frames(1, 25, 200) == 1  # never below 1
    assert time_stride_frames(3, None, 200) == 3
    assert time_stride_frames(3, 500, None) == 3


def test_fps_normalised_dense_covers_same_duration():
    n, stride, ref = 8, 2, 200.0
    durations = {}
    for fps in (500.0, 300.0, 200.0):
        idx = sample_indices("dense", 0, 100, 1000, n, stride=stride, fps=fps, reference_fps=ref)
        durations[fps] = (idx[-1] - idx[0]) / fps
    assert durations[500.0] == pytest.approx(durations[200.0])
    assert durations[300.0] == pytest.approx(durations[200.0])
    assert sample_indices("dense", 0, 100, 1000, 4, stride=2, fps=500, reference_fps=200) == [0, 5, 10, 15]


def test_fps_scales_apex_centered_only():
    idx = sample_indices("apex_centered", 0, 100, 200, 3, stride=2, fps=500, reference_fps=200)
    assert idx == [95, 100, 105]
    for strategy in ("uniform", "onset_apex", "onset_apex_offset", "tsn", "tim"):
        assert sample_indices(strategy, 0, 100, 200, 5, stride=2, fps=500, reference_fps=200) == sample_indices(
            strategy, 0, 100, 200, 5
        )


# --------------------------------------------------------------------------------------- errors


def test_unknown_strategy_lists_allowed():
    with pytest.raises(ConfigError) as err:
        sample_indices("unifrom", 0, 1, 2, 3)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "'unifrom'" in message and "did you mean 'uniform'" in message
    for name in STRATEGIES:
        assert name in message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_frames=0), "num_frames must be >= 1, got 0"),
        (dict(onset=5, apex=3, offset=10), "onset <= apex <= offset, got onset=5, apex=3, offset=10"),
        (dict(apex=11), "onset <= apex <= offset"),
        (dict(stride=0), "stride must be >= 1, got 0"),
        (dict(fps=0.0, reference_fps=200), "fps must be a positive"),
        (dict(fps=float("nan"), reference_fps=200), "fps must be a positive"),
        (dict(fps=500, reference_fps=-1), "reference_fps must be a positive"),
        (dict(onset=1.5), "onset must be an integer, got 1.5"),
        (dict(num_frames="8"), "num_frames must be an integer"),
    ],
)
def test_validation_errors(kwargs, match):
    args = dict(strategy="uniform", onset=0, apex=5, offset=10, num_frames=4)
    args.update(kwargs)
    positional = [args.pop(k) for k in ("strategy", "onset", "apex", "offset", "num_frames")]
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        sample_indices(*positional, **args)


def test_numpy_ints_accepted():
    assert sample_indices("uniform", np.int64(0), np.int32(5), np.int64(10), np.int64(3)) == [0, 5, 10]
    assert sample_indices("uniform", 0.0, 5.0, 10.0, 3) == [0, 5, 10]


# --------------------------------------------------------------------------------------- SamplingSpec


def test_sampling_spec():
    spec = SamplingSpec("dense", num_frames=4, stride=2, reference_fps=200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_frames = 3  # type: ignore[misc]
    assert spec.sample(0, 10, 100, fps=500) == [0, 5, 10, 15]
    assert spec.sample(0, 10, 100) == [0, 2, 4, 6]
    assert spec.times(0, 10, 100, fps=500).tolist() == [0.0, 5.0, 10.0, 15.0]
    assert not spec.interpolates and SamplingSpec("tim").interpolates
    tsn = SamplingSpec("tsn", num_frames=4)
    assert tsn.sample(0, 5, 99, train=True, rng=np.random.default_rng(3)) == sample_indices(
        "tsn", 0, 5, 99, 4, train=True, rng=np.random.default_rng(3)
    )
    with pytest.raises(ConfigError, match="expected one of"):
        SamplingSpec("nope")
    with pytest.raises(ConfigError, match="num_frames"):
        SamplingSpec("uniform", num_frames=0)
    with pytest.raises(ConfigError, match="stride"):
        SamplingSpec("uniform", stride=0)
    with pytest.raises(ConfigError, match="reference_fps"):
        SamplingSpec("uniform", reference_fps=0)
