"""Key-frame sequence sampling: which frame numbers of a clip a model sees.

A sampler is a pure function of the clip's annotated phases (``onset <= apex <= offset``, frame
NUMBERS in the clip's own numbering, both ends inclusive) and the number of frames wanted; it returns
*which* frames to decode, never the frames themselves (a reader in :mod:`microexp.data.video` does
that). The maths lives in private pure helpers, one per strategy, whose docstrings state that
strategy's invariants; :func:`sample_indices` validates, normalises strides by frame rate and dispatches.

Strategies (:data:`STRATEGIES`):

``uniform``
    ``num_frames`` evenly spaced frames from onset to offset inclusive (first == onset, last == offset).
``onset_apex``
    evenly spaced over the rising phase onset..apex (first == onset, last == apex).
``apex_centered``
    a window of ``num_frames`` frames ``stride`` apart centred on the apex, shifted (never clipped) to
    stay inside onset..offset; the stride shrinks when the window does not fit; apex always included.
``onset_apex_offset``
    frames split between onset..apex and apex..offset in proportion to the phases' lengths, apex
    always included (and onset and offset too when ``num_frames >= 3``).
``tsn``
    TSN segment sampling: ``num_frames`` equal segments of onset..offset, one random frame per segment
    when ``train=True``, each segment's centre when ``train=False``.
``dense``
    consecutive frames from the onset ``stride`` apart, clamped to the offset.
``tim``
    like ``uniform``, but a clip with fewer frames than ``num_frames`` is resampled in time to exactly
    ``num_frames`` evenly spaced *fractional* times (see :func:`sample_times`,
    :func:`interpolate_frames`).

Invariants of every strategy (the tests check them all):

* the result has exactly ``num_frames`` entries, sorted (non-decreasing), each within onset..offset;
* with ``train=False`` the result is deterministic and ``rng`` is never touched (only ``tsn`` with
  ``train=True`` draws random numbers);
* a clip (or, for ``onset_apex``, a rising phase) with fewer frames than ``num_frames`` gives every
  one of its frames once, then the last one repeated (``dense`` with ``stride > 1`` clamps instead,
  see its docstring); only ``tim`` interpolates instead of repeating;
* on clips with at least ``num_frames`` frames, ``uniform``, ``onset_apex`` (over its phase),
  ``apex_centered``, ``onset_apex_offset``, ``tsn`` and ``tim`` never repeat a frame.

Frame rate: datasets are filmed at different rates (DFME at 500, 300 and 200 fps; CASME II at 200;
SAMM at 200; SMIC at 100). When both ``fps`` (the clip's) and ``reference_fps`` are given, the strides
of the two stride-based strategies (``dense``, ``apex_centered``) are scaled by ``fps /
reference_fps`` (:func:`time_stride_frames`, rounded to the nearest integer, at least 1), so that a
500 fps clip and a 200 fps clip cover the same duration. ``uniform``, ``tsn``, ``tim``,
``onset_apex`` and ``onset_apex_offset`` already span the annotated phases whatever the frame rate and
ignore ``stride``, ``fps`` and ``reference_fps``.

Fractional times: ``tim`` on a short clip cannot be expressed as integer frame numbers. A dataset can
use one code path for every strategy: ``times = sample_times(...)``, decode ``frames_needed(times)``,
then ``interpolate_frames(decoded, times, numbers=needed)``; at integer times the interpolation
returns the decoded frames exactly.

Over 600 lines on purpose: seven strategies, each a short pure function whose docstring states its
invariants, and the one validation and dispatch over them; split up, a strategy's rule and its checks
would live apart.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from microexp.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "SamplingSpec",
    "frames_needed",
    "interpolate_frames",
    "sample_indices",
    "sample_times",
    "time_stride_frames",
]

STRATEGIES: tuple[str, ...] = (
    "uniform",
    "onset_apex",
    "apex_centered",
    "onset_apex_offset",
    "tsn",
    "dense",
    "tim",
)

# Strategies whose ``stride`` is a step between consecutive frames (and thus scales with fps).
_STRIDED = ("dense", "apex_centered")

# Times within this distance of an integer are treated as that integer (guards float noise).
_SNAP = 1e-6


# ---------------------------------------------------------------------------------------------------
# Private pure helpers (integer maths, no I/O, no validation)
# ---------------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    """Round to the nearest integer, halves upwards (not numpy's half-to-even)."""
    return int(math.floor(x + 0.5))


def _even_ints(a: int, b: int, n: int) -> list[int]:
    """``n >= 2`` evenly spaced integers from ``a`` to ``b`` inclusive, rounded half up, exactly.

    Uses integer arithmetic only: element ``i`` is ``a + round(i * (b - a) / (n - 1))``. When
    ``b - a + 1 >= n`` the step is at least 1, so the result is strictly increasing.
    """
    span, den = b - a, n - 1
    return [a + (2 * i * span + den) // (2 * den) for i in range(n)]


def _all_then_repeat(first: int, last: int, n: int) -> list[int]:
    """Every frame of ``first..last`` once, then ``last`` repeated up to ``n`` entries.

    Used when a span has fewer frames than ``n`` (``last - first + 1 < n``).
    """
    frames = list(range(first, last + 1))
    return frames + [last] * (n - len(frames))


def _evenly(first: int, last: int, n: int) -> list[int]:
    """``n`` frames evenly spaced over ``first..last`` (the ``uniform`` rule on an arbitrary span).

    ``n == 1`` gives the middle frame (rounded down); a span shorter than ``n`` gives every frame then
    repeats ``last``; otherwise first == ``first``, last == ``last`` and no repeats.
    """
    if last - first + 1 < n:
        return _all_then_repeat(first, last, n)
    if n == 1:
        return [(first + last) // 2]
    return _even_ints(first, last, n)


def _uniform(onset: int, apex: int, offset: int, n: int) -> list[int]:
    """``uniform``: ``n`` frames evenly spaced from onset to offset inclusive.

    Invariants: for ``n >= 2`` first == onset and last == offset; the gaps between consecutive
    frames differ by at most 1 (exact spacing ``(offset - onset) / (n - 1)``, rounded half up); no
    repeats when the clip has at least ``n`` frames. ``n == 1`` gives the middle frame
    ``(onset + offset) // 2``. A clip shorter than ``n`` gives every frame, then the offset repeated.
    The apex is not used.
    """
    return _evenly(onset, offset, n)


def _onset_apex(onset: int, apex: int, offset: int, n: int) -> list[int]:
    """``onset_apex``: ``n`` frames evenly spaced over the rising phase onset..apex.

    Invariants: last == apex always (``n == 1`` gives ``[apex]``); for ``n >= 2`` first == onset;
    no repeats when the phase has at least ``n`` frames. A rising phase with fewer than ``n`` frames
    (e.g. apex == onset) gives every frame of onset..apex, then the apex repeated. Frames after the
    apex are never used.
    """
    if n == 1:
        return [apex]
    return _evenly(onset, apex, n)


def _apex_window(onset: int, apex: int, offset: int, n: int, stride: int) -> list[int] | None:
    """The window of ``n`` frames ``stride`` apart containing the apex, inside onset..offset.

    Among the placements that contain the apex, the one whose apex position is closest to
    ``n // 2`` (the centre; for even ``n`` one more frame before the apex than after). ``None`` when
    no placement with this stride fits.
    """
    # The apex at position k: frames apex + (j - k) * stride for j in 0..n-1.
    k_min = max(0, n - 1 - (offset - apex) // stride)
    k_max = min(n - 1, (apex - onset) // stride)
    if k_min > k_max:
        return None
    k = min(max(n // 2, k_min), k_max)
    return [apex + (j - k) * stride for j in range(n)]


def _apex_centered(onset: int, apex: int, offset: int, n: int, stride: int) -> list[int]:
    """``apex_centered``: a window of ``n`` frames ``stride`` apart centred on the apex.

    The apex sits at position ``n // 2`` (the middle; for even ``n`` one more frame before the apex
    than after it). When the window would cross onset or offset it is *shifted* inside (by whole
    strides, so the apex stays in it), never clipped: consecutive frames stay exactly ``stride``
    apart. When no window with this stride fits inside onset..offset, the effective stride is reduced
    (stride - 1, ..., 1) to the largest one that fits with the apex included; with stride 1 any clip
    of at least ``n`` frames fits. A clip shorter than ``n`` gives every frame, then the offset
    repeated (the apex is then included too).

    Invariants: the apex is always included; consecutive gaps are all equal (the effective stride,
    ``<= stride``) on clips of at least ``n`` frames; no repeats on such clips.
    """
    if offset - onset + 1 < n:
        return _all_then_repeat(onset, offset, n)
    for s in range(stride, 0, -1):
        window = _apex_window(onset, apex, offset, n, s)
        if window is not None:
            return window
    raise AssertionError("unreachable: a stride-1 window always fits a clip of n frames")


def _onset_apex_offset(onset: int, apex: int, offset: int, n: int) -> list[int]:
    """``onset_apex_offset``: frames split between the rising and falling phases, apex included.

    The apex takes one frame; the other ``n - 1`` are split between the frames strictly before the
    apex (``apex - onset`` of them) and strictly after it (``offset - apex``) in proportion to those
    counts (rounded half up), with at least one frame on each non-empty side when ``n >= 3``. Each
    side is evenly spaced from its outer end (onset or offset) towards the apex, exclusive of the
    apex. ``n == 1`` gives ``[apex]``.

    Invariants: the apex is included exactly once on clips of at least ``n`` frames; for ``n >= 3``
    first == onset and last == offset; no repeats on clips of at least ``n`` frames. A clip shorter
    than ``n`` gives every frame, then the offset repeated.
    """
    if offset - onset + 1 < n:
        return _all_then_repeat(onset, offset, n)
    rise, fall, m = apex - onset, offset - apex, n - 1
    if rise == 0:
        before = 0
    elif fall == 0:
        before = m
    else:
        before = (2 * m * rise + (rise + fall)) // (2 * (rise + fall))
        if m >= 2:
            before = min(max(before, 1), m - 1)
    # Fit the counts to the available frames (feasible because m <= rise + fall).
    before = min(max(before, m - fall), rise)
    after = m - before
    frames_before = _even_ints(onset, apex, before + 1)[:-1] if before else []
    frames_after = _even_ints(apex, offset, after + 1)[1:] if after else []
    return frames_before + [apex] + frames_after


def _tsn(onset: int, apex: int, offset: int, n: int, train: bool, rng: np.random.Generator | None) -> list[int]:
    """``tsn``: temporal segment sampling (Wang et al., TSN) over onset..offset.

    The clip's ``L = offset - onset + 1`` frames are cut into ``n`` contiguous segments, segment
    ``i`` covering ``onset + floor(i * L / n) .. onset + floor((i + 1) * L / n) - 1`` (each at least
    one frame). ``train=True``: one frame drawn uniformly from each segment with ``rng``;
    ``train=False``: each segment's centre ``(first + last) // 2`` (deterministic, ``rng`` unused).

    Invariants: frame ``i`` lies in segment ``i``, so frames are strictly increasing on clips of at
    least ``n`` frames. A clip shorter than ``n`` gives every frame, then the offset repeated (no
    randomness, in either mode).
    """
    length = offset - onset + 1
    if length < n:
        return _all_then_repeat(onset, offset, n)
    bounds = [onset + (i * length) // n for i in range(n + 1)]
    lo = np.asarray(bounds[:-1], dtype=np.int64)
    hi = np.asarray(bounds[1:], dtype=np.int64) - 1
    if train:
        assert rng is not None  # supplied by sample_times
        picks = rng.integers(lo, hi, endpoint=True)
    else:
        picks = (lo + hi) // 2
    return [int(p) for p in picks]


def _dense(onset: int, apex: int, offset: int, n: int, stride: int) -> list[int]:
    """``dense``: ``n`` frames from the onset, ``stride`` apart, clamped to the offset.

    Frame ``i`` is ``min(onset + i * stride, offset)``: a fixed temporal scale (which is what the fps
    normalisation keeps across frame rates), so a clip shorter than the window
    ``(n - 1) * stride + 1`` ends with the offset repeated. With ``stride == 1`` and a clip shorter
    than ``n``, that is every frame then the offset repeated. Invariants: first == onset;
    unclamped gaps equal ``stride`` exactly. The apex is not used.
    """
    return [min(onset + i * stride, offset) for i in range(n)]


def _tim_times(onset: int, apex: int, offset: int, n: int) -> np.ndarray:
    """``tim``: temporal interpolation of short clips to exactly ``n`` frames.

    A clip with at least ``n`` frames is sampled as ``uniform`` (integer times). A shorter clip gives
    ``n`` evenly spaced fractional times from onset to offset inclusive, ``onset + i * (offset -
    onset) / (n - 1)``: strictly increasing (no repeated times) whenever offset > onset, first ==
    onset, last == offset; a single-frame clip gives ``n`` copies of its only frame. The frames at
    those times are made by :func:`interpolate_frames` (linear interpolation, a simplification of
    the graph-embedding TIM of Zhou et al.). :func:`sample_indices` returns these times rounded half
    up.
    """
    if offset - onset + 1 >= n:
        return np.asarray(_uniform(onset, apex, offset, n), dtype=np.float64)
    span, den = offset - onset, n - 1
    # i * span is an exact integer; one correctly rounded division keeps integer times exact.
    return np.asarray([onset + (i * span) / den for i in range(n)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def _as_int(name: str, value: Any) -> int:
    """``value`` as a Python int (ints, numpy ints, integral floats); ConfigError otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise ConfigError(f"{name} must be an integer, got {value!r}")


def _check_strategy(strategy: Any) -> str:
    if strategy in STRATEGIES:
        return strategy
    close = difflib.get_close_matches(str(strategy), STRATEGIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown sampling strategy {strategy!r}{hint}; expected one of: {', '.join(STRATEGIES)}"
    )


def _check_num_frames(num_frames: Any) -> int:
    n = _as_int("num_frames", num_frames)
    if n < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames!r}")
    return n


def _check_stride(stride: Any) -> int:
    s = _as_int("stride", stride)
    if s < 1:
        raise ConfigError(f"stride must be >= 1, got {stride!r}")
    return s


def _check_rate(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number of frames per second, got {value!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"{name} must be a positive number of frames per second, got {value!r}")
    return rate


def _check_phases(onset: Any, apex: Any, offset: Any) -> tuple[int, int, int]:
    on, ap, off = _as_int("onset", onset), _as_int("apex", apex), _as_int("offset", offset)
    if not on <= ap <= off:
        raise ConfigError(f"expected onset <= apex <= offset, got onset={on}, apex={ap}, offset={off}")
    return on, ap, off


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def time_stride_frames(stride: int, fps: float | None, reference_fps: float | None) -> int:
    """A stride given in frames at ``reference_fps``, converted to frames at ``fps``.

    ``round(stride * fps / reference_fps)`` (halves up), at least 1, so that the same number of
    strides covers the same duration at any frame rate: stride 2 at a 200 fps reference is 5 frames
    at 500 fps, 3 at 300 fps, 2 at 200 fps. When either rate is ``None`` the stride is returned
    unchanged.

    Args:
        stride: step in frames at the reference rate, ``>= 1``.
        fps: the clip's frame rate, or ``None`` when unknown.
        reference_fps: the rate at which ``stride`` is expressed, or ``None`` for no scaling.

    Returns:
        The step in frames at ``fps``.

    Raises:
        ConfigError: ``stride < 1`` or a rate that is not a positive finite number.
    """
    s = _check_stride(stride)
    rate, ref = _check_rate("fps", fps), _check_rate("reference_fps", reference_fps)
    if rate is None or ref is None:
        return s
    return max(1, _round_half_up(s * rate / ref))


def sample_times(
    strategy: str,
    onset: int,
    apex: int,
    offset: int,
    num_frames: int,
    *,
    train: bool = False,
    rng: np.random.Generator | int | None = None,
    stride: int = 1,
    fps: float | None = None,
    reference_fps: float | None = None,
) -> np.ndarray:
    """The times (frame numbers, possibly fractional) at which to sample a clip.

    Identical to :func:`sample_indices` (as float64) for every strategy except ``tim`` on a clip with
    fewer than ``num_frames`` frames, where the times are evenly spaced fractional frame numbers
    from onset to offset (render them with :func:`interpolate_frames`). Arguments as for
    :func:`sample_indices`.

    Returns:
        ``(num_frames,)`` float64 array, sorted, within ``onset..offset``.
    """
    name = _check_strategy(strategy)
    n = _check_num_frames(num_frames)
    on, ap, off = _check_phases(onset, apex, offset)
    step = time_stride_frames(stride, fps, reference_fps)  # validates stride and rates for all strategies
    if name == "tim":
        return _tim_times(on, ap, off, n)
    if name == "tsn":
        gen = np.random.default_rng(rng) if train else None
        frames = _tsn(on, ap, off, n, train, gen)
    elif name in _STRIDED:
        frames = _STRIDED_SAMPLERS[name](on, ap, off, n, step)
    else:
        frames = _PHASE_SAMPLERS[name](on, ap, off, n)
    return np.asarray(frames, dtype=np.float64)


def sample_indices(
    strategy: str,
    onset: int,
    apex: int,
    offset: int,
    num_frames: int,
    *,
    train: bool = False,
    rng: np.random.Generator | int | None = None,
    stride: int = 1,
    fps: float | None = None,
    reference_fps: float | None = None,
) -> list[int]:
    """Frame numbers to sample from a clip, by strategy (see the module docstring).

    Args:
        strategy: one of :data:`STRATEGIES`.
        onset, apex, offset: annotated frame numbers, ``onset <= apex <= offset``, ends inclusive.
        num_frames: how many frames to return, ``>= 1``.
        train: random sampling where the strategy has one (``tsn``); ``False`` is deterministic.
        rng: numpy ``Generator`` (or seed) used when ``train=True``; default a fresh
            ``np.random.default_rng()``. Never touched when ``train=False``.
        stride: step in frames for ``dense`` and ``apex_centered`` (ignored by the others), ``>= 1``.
        fps, reference_fps: when both are given, ``stride`` is scaled by ``fps / reference_fps``
            (:func:`time_stride_frames`).

    Returns:
        ``num_frames`` frame numbers, sorted (non-decreasing), within ``onset..offset``. For ``tim`` on
        a clip shorter than ``num_frames``, the fractional :func:`sample_times` rounded half up.

    Raises:
        ConfigError: (a ``ValueError``) unknown strategy (the message lists the allowed ones),
            ``num_frames < 1``, ``stride < 1``, phases not ordered, or a non-positive rate.
    """
    times = sample_times(
        strategy, onset, apex, offset, num_frames,
        train=train, rng=rng, stride=stride, fps=fps, reference_fps=reference_fps,
    )
    return [int(t) for t in np.floor(times + 0.5)]


def _snap(times: Any) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times must be finite, got {t.tolist()}")
    nearest = np.rint(t)
    return np.where(np.abs(t - nearest) < _SNAP, nearest, t)


def frames_needed(times: Sequence[float] | np.ndarray) -> list[int]:
    """The frame numbers to decode to render ``times`` with :func:`interpolate_frames`.

    Args:
        times: frame numbers, possibly fractional (e.g. from :func:`sample_times`).

    Returns:
        Sorted unique ``floor(t)`` and ``ceil(t)`` over all times (an integer time needs only itself).
    """
    t = _snap(times)
    return sorted({int(v) for v in np.floor(t)} | {int(v) for v in np.ceil(t)})


def interpolate_frames(
    frames: np.ndarray | Mapping[int, np.ndarray],
    times: Sequence[float] | np.ndarray,
    start: int = 0,
    *,
    numbers: Sequence[int] | None = None,
) -> np.ndarray:
    """Frames at (possibly fractional) times by linear interpolation along time.

    The frame at time ``t`` is ``(1 - w) * frame[floor(t)] + w * frame[floor(t) + 1]`` with
    ``w = t - floor(t)``; at integer times it is the frame itself, exactly. This is plain linear
    interpolation, a simplification of the Temporal Interpolation Model (TIM) of Zhou et al., which
    interpolates along a curve found by a graph embedding of the frames.

    Args:
        frames: either an array ``(N, H, W, C)`` (any trailing shape) holding frame numbers
            ``start..start + N - 1``, or, with ``numbers``, holding frame numbers ``numbers[i]`` (e.g.
            the decoded :func:`frames_needed`), or a mapping ``{frame number: (H, W, C) array}``.
        times: ``(T,)`` frame numbers to render, each within the frames given.
        start: frame number of ``frames[0]`` when ``frames`` is an array and ``numbers`` is None.
        numbers: frame number of each row of ``frames`` (unique).

    Returns:
        ``(T, H, W, C)`` array of ``frames``' dtype: integer inputs (e.g. uint8) are rounded half up
        and clipped to the dtype's range, floating inputs keep their dtype.

    Raises:
        ValueError: a time needs a frame that is not given, or ``numbers`` does not match ``frames``.
    """
    if isinstance(frames, Mapping):
        if not frames:
            raise ValueError("interpolate_frames: no frames given")
        numbers = sorted(int(k) for k in frames)
        frames = np.stack([np.asarray(frames[k]) for k in numbers])
    arr = np.asarray(frames)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError(f"interpolate_frames: expected frames of shape (N, H, W, C) with N >= 1, got {arr.shape}")
    if numbers is None:
        row_of: Callable[[int], int | None] = (
            lambda k: k - start if 0 <= k - start < arr.shape[0] else None
        )
        have = f"frames {start}..{start + arr.shape[0] - 1}"
    else:
        nums = [int(k) for k in numbers]
        if len(nums) != arr.shape[0] or len(set(nums)) != len(nums):
            raise ValueError(
                f"interpolate_frames: numbers must be {arr.shape[0]} unique frame numbers, got {nums}"
            )
        lookup = {k: i for i, k in enumerate(nums)}
        row_of = lookup.get
        have = f"frames {nums}"

    t = _snap(times)
    lo = np.floor(t).astype(np.int64)
    hi = np.ceil(t).astype(np.int64)
    rows_lo, rows_hi = [], []
    for a, b, tv in zip(lo.tolist(), hi.tolist(), t.tolist()):
        ra, rb = row_of(a), row_of(b)
        if ra is None or rb is None:
            raise ValueError(f"interpolate_frames: time {tv:g} needs frames {a} and {b}, but only {have} are given")
        rows_lo.append(ra)
        rows_hi.append(rb)
    w = (t - lo).reshape((-1,) + (1,) * (arr.ndim - 1))
    f_lo = arr[np.asarray(rows_lo, dtype=np.int64)]
    f_hi = arr[np.asarray(rows_hi, dtype=np.int64)]
    if np.issubdtype(arr.dtype, np.floating):
        return ((1.0 - w) * f_lo + w * f_hi).astype(arr.dtype, copy=False)
    out = (1.0 - w) * f_lo.astype(np.float64) + w * f_hi.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = np.clip(np.floor(out + 0.5), info.min, info.max)
    return out.astype(arr.dtype)


@dataclass(frozen=True)
class SamplingSpec:
    """How a dataset samples its clips; validated on construction, carried by the dataset.

    Attributes:
        strategy: one of :data:`STRATEGIES`.
        num_frames: frames per sample, ``>= 1``.
        stride: step for ``dense`` / ``apex_centered``, in frames at ``reference_fps`` (or in the
            clip's own frames when ``reference_fps`` is None).
        reference_fps: frame rate at which ``stride`` is expressed; ``None`` disables fps scaling.
    """

    strategy: str = "uniform"
    num_frames: int = 8
    stride: int = 1
    reference_fps: float | None = None

    def __post_init__(self) -> None:
        _check_strategy(self.strategy)
        _check_num_frames(self.num_frames)
        _check_stride(self.stride)
        _check_rate("reference_fps", self.reference_fps)

    @property
    def interpolates(self) -> bool:
        """True when :meth:`times` may return fractional times (``tim``)."""
        return self.strategy == "tim"

    def sample(
        self, onset: int, apex: int, offset: int, *,
        fps: float | None = None, train: bool = False, rng: np.random.Generator | int | None = None,
    ) -> list[int]:
        """:func:`sample_indices` with this spec's settings and the clip's ``fps``."""
        return sample_indices(
            self.strategy, onset, apex, offset, self.num_frames, train=train, rng=rng,
            stride=self.stride, fps=fps, reference_fps=self.reference_fps,
        )

    def times(
        self, onset: int, apex: int, offset: int, *,
        fps: float | None = None, train: bool = False, rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """:func:`sample_times` with this spec's settings and the clip's ``fps``."""
        return sample_times(
            self.strategy, onset, apex, offset, self.num_frames, train=train, rng=rng,
            stride=self.stride, fps=fps, reference_fps=self.reference_fps,
        )


_PHASE_SAMPLERS: dict[str, Callable[[int, int, int, int], list[int]]] = {
    "uniform": _uniform,
    "onset_apex": _onset_apex,
    "onset_apex_offset": _onset_apex_offset,
}
_STRIDED_SAMPLERS: dict[str, Callable[[int, int, int, int, int], list[int]]] = {
    "dense": _dense,
    "apex_centered": _apex_centered,
}
