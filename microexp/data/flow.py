"""Optical flow and optical strain between a clip's sampled frames, with an on-disk cache.

Three OpenCV estimators (:data:`FLOW_METHODS`), all returning ``(H, W, 2)`` float32 displacements in
pixels of ``next`` relative to ``prev`` in OpenCV's convention, ``prev(y, x) ~ next(y + dy, x + dx)``
(channel 0 is ``dx``, to the right; channel 1 is ``dy``, downwards)::

    flow = compute_flow(onset_frame, apex_frame, "tvl1")           # (H, W, 2) float32
    strain = optical_strain(flow)                                  # (H, W) float32
    flows = clip_flow(frames, method="dis", reference="onset")     # (T, H, W, 2), flows[0] == 0

Micro-expressions move the face by about 0.5-2 px at the 112-128 px crops the models see, so every
parameter below was chosen for sub-pixel accuracy on small, local motions while staying robust to a
few pixels of residual head motion. They were tuned on (a) Gaussian-blurred noise translated by
0.1-2 px and 3-8 px, with and without sensor noise, (b) a local Gaussian "brow raise" deformation,
(c) procedural faces (:mod:`microexp.synth.faces`) translated and locally deformed, and
(d) synthetic micro-expressions (:func:`microexp.synth.render_clip`, onset -> apex, AU fields
of 1-1.6 px, exact forward flow as truth); errors are mean end-point errors (EPE):

``tvl1`` -- ``cv2.optflow.DualTVL1OpticalFlow`` (Zach, Pock & Bischof 2007; the estimator of most
    ME flow papers). OpenCV's defaults (``tau=0.25, lambda=0.15, theta=0.3, warps=5, epsilon=0.01,
    inner 30 / outer 10 iterations, 5x5 median filter``) except the pyramid: ``nscales=5,
    scaleStep=0.7`` (coarsest level 0.24x instead of 0.41x) recovers a 5 px translation of a fine
    texture to 0.01 px EPE where the default pyramid leaves 0.06 px, with the same accuracy on small
    motions (0.01-0.02 px on translations of 0.25-2 px). ``lambda=0.3`` (less smoothing) was worse
    on faces and AU motion, 0.05-0.08 no better; more warps or a smaller ``epsilon`` were worse on AU
    motion. Slowest of the three by far.
``farneback`` -- ``cv2.calcOpticalFlowFarneback`` (Farneback 2003) with the values OpenCV documents:
    ``pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0``. Larger
    windows (21-31) fill flat skin better under global motion but blur local motion and double the
    false motion around it; 11 was marginally better on AU motion but worse on flat skin. Fast.
``dis`` -- ``cv2.DISOpticalFlow`` (Kroeger et al. 2016), preset ``MEDIUM`` (the most accurate preset:
    patch 8, stride 3, 25 gradient-descent and 5 variational-refinement iterations) with
    ``finestScale=0``: the presets stop at half resolution (``finestScale=1``) and upsample, which
    discards exactly the sub-pixel detail ME needs (0.067 -> 0.037 px EPE on a (0.6, -0.4) px shift;
    0.28 -> 0.12 px on AU motion). Larger patches (12-16) smooth local motion. Fast.

Measured accuracy (64 px blurred noise moved with bicubic ``cv2.warpAffine``, interior): tvl1
0.011-0.016 px on shifts of (0.25, 0.15), (0.6, -0.4) and (1.5, 1.0) px; farneback and dis 0.004-0.009
px at (1.5, 1.0), 0.04 px at (0.6, -0.4) and 0.068 px at (0.25, 0.15). That residual is a sub-pixel
bias that depends on how the test image was interpolated: with an exact (Fourier) shift farneback and
dis are within 0.007-0.016 px and tvl1 is the biased one (0.03-0.06 px). On synthetic AU motion
(d) the EPE inside the moving regions is dis 0.12, tvl1 0.25, farneback 0.28 px (false motion outside
them 0.008, 0.015, 0.041 px). Costs per pair at 128 px (one core): tvl1 ~260 ms, dis ~7 ms,
farneback ~3.5 ms.

Colour frames are converted to grey (``cv2.COLOR_RGB2GRAY``) before estimation; all three estimators
work on 8-bit single-channel images. Frames must be at least :data:`MIN_SIDE` pixels on each side.

Estimator objects are created once per thread of each process and reused (:func:`_estimator`):
OpenCV's DIS and TV-L1 objects hold internal buffers and are not safe to share between threads.

**Cache.** :func:`cached_clip_flow` stores a clip's flows with :class:`microexp.data.cache.ClipCache`,
keyed by the caller's clip/sampling identity (:func:`clip_key_parts`: clip, file fingerprint, first
frame, sampled times, frame size) plus the method, its parameters, the reference and the strain flag,
so the flows are computed once and reused across epochs, folds and runs; changing any parameter here
misses the cache instead of returning stale flows. Flows are stored as **float16** to halve disk use:
float16 keeps 11 significant bits, a relative error of at most 2**-11 ~ 5e-4 (about 1e-3 px at 2 px,
4e-3 px at 8 px), far below the estimators' own error. :func:`precompute_flow` fills the cache for a
whole clip table (``microexp flow``).
"""

from __future__ import annotations

import concurrent.futures
import difflib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import pandas as pd

from microexp.data.cache import ClipCache, clip_fingerprint
from microexp.data.sampling import SamplingSpec, frames_needed, interpolate_frames
from microexp.data.video import open_video
from microexp.errors import ConfigError, MicroexpError
from microexp.fileio import OutputError
from microexp.workers import worker_context

logger = logging.getLogger(__name__)

__all__ = [
    "FLOW_METHODS",
    "FLOW_PARAMS",
    "REFERENCES",
    "MIN_SIDE",
    "FlowPrecomputeSummary",
    "cached_clip_flow",
    "clip_flow",
    "clip_key_parts",
    "compute_flow",
    "flow_cache_key",
    "optical_strain",
    "precompute_flow",
    "sampled_frames",
]

#: Optical-flow estimators accepted by :func:`compute_flow`.
FLOW_METHODS: tuple[str, ...] = ("tvl1", "farneback", "dis")
#: the method recipes and pipelines use unless told (``data.flow_method``): fast, and what the demo was measured with
DEFAULT_FLOW_METHOD = "farneback"

#: What :func:`clip_flow` measures each frame's motion against.
REFERENCES: tuple[str, ...] = ("onset", "consecutive")

#: Smallest frame side accepted (DIS needs 12 px; smaller flows are meaningless anyway).
MIN_SIDE = 16

#: Bumped when the stored layout or the computation changes in a way the parameters do not show.
_CACHE_FORMAT = 1

#: Resize applied by :func:`sampled_frames` (the same as the dataset's frame cache).
_RESIZE = "short-side+center-crop,antialias"

#: Parameters of each estimator (read-only; see the module docstring for why these values).
FLOW_PARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "tvl1": MappingProxyType({  # keyword names as OpenCV spells them (sic: innnerIterations)
        "tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
        "innnerIterations": 30, "outerIterations": 10, "scaleStep": 0.7, "gamma": 0.0,
        "medianFiltering": 5, "useInitialFlow": False,
    }),
    "farneback": MappingProxyType({
        "pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0,
    }),
    "dis": MappingProxyType({"preset": "medium", "finest_scale": 0}),
})

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# One estimator per (thread, method), created on first use: OpenCV flow objects are not thread-safe.
_THREAD_STATE = threading.local()


def _check_method(method: Any) -> str:
    if method in FLOW_METHODS:
        return str(method)
    close = difflib.get_close_matches(str(method), FLOW_METHODS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown optical-flow method {method!r}{hint}; expected one of {', '.join(FLOW_METHODS)}")


def _check_reference(reference: Any) -> str:
    if reference in REFERENCES:
        return str(reference)
    raise ConfigError(f"unknown flow reference {reference!r}; expected one of {', '.join(REFERENCES)}")


def _create_estimator(method: str) -> Any:
    params = FLOW_PARAMS[method]
    if method == "tvl1":
        return cv2.optflow.DualTVL1OpticalFlow_create(**params)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[params["preset"]])
        dis.setFinestScale(int(params["finest_scale"]))
        return dis
    return None  # farneback is a plain function


def _estimator(method: str) -> Any:
    """This thread's estimator for ``method``, created on first use and reused afterwards."""
    cache = getattr(_THREAD_STATE, "estimators", None)
    if cache is None:
        cache = _THREAD_STATE.estimators = {}
    if method not in cache:
        cache[method] = _create_estimator(method)
    return cache[method]


def _to_gray(image: Any, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"compute_flow: {name} must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"compute_flow: {name} must have shape (H, W) or (H, W, 3), got {np.shape(image)}")
    if min(arr.shape) < MIN_SIDE:
        raise ValueError(f"compute_flow: {name} is {arr.shape[1]}x{arr.shape[0]} px; expected at least "
                         f"{MIN_SIDE} px on each side")
    return np.ascontiguousarray(arr)


def compute_flow(prev: np.ndarray, next: np.ndarray, method: str) -> np.ndarray:  # noqa: A002 (OpenCV's names)
    """Dense optical flow from ``prev`` to ``next``.

    Args:
        prev, next: uint8 frames of the same size, RGB ``(H, W, 3)`` or grey ``(H, W)``.
        method: one of :data:`FLOW_METHODS` (parameters in :data:`FLOW_PARAMS`).

    Returns:
        ``(H, W, 2)`` float32 displacements ``(dx, dy)`` in pixels such that
        ``prev(y, x) ~ next(y + dy, x + dx)``.

    Raises:
        ConfigError: unknown method (the message lists :data:`FLOW_METHODS`).
        ValueError: frames that are not uint8, of different sizes, or smaller than :data:`MIN_SIDE`.
    """
    name = _check_method(method)
    a, b = _to_gray(prev, "prev"), _to_gray(next, "next")
    if a.shape != b.shape:
        raise ValueError(f"compute_flow: prev is {a.shape[1]}x{a.shape[0]} px but next is {b.shape[1]}x{b.shape[0]} px")
    if name == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, **FLOW_PARAMS[name])
    else:
        flow = _estimator(name).calc(a, b, None)
    return np.ascontiguousarray(flow, dtype=np.float32)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Magnitude of the optical strain of a flow field (Shreve et al. 2011; Liong et al. 2014).

    With the displacement ``(u, v)`` the infinitesimal strain tensor is
    ``e = 0.5 * (grad(u, v) + grad(u, v)^T)``, i.e. ``exx = du/dx``, ``eyy = dv/dy`` and
    ``exy = eyx = 0.5 * (du/dy + dv/dx)``; its magnitude is the Frobenius norm
    ``sqrt(exx^2 + eyy^2 + exy^2 + eyx^2)``. Derivatives are central differences (``np.gradient``,
    one-sided at the border), exact for flows linear in ``(x, y)``.

    References: M. Shreve, S. Godavarthy, D. Goldgof, S. Sarkar, "Macro- and micro-expression
    spotting in long videos using spatio-temporal strain", FG 2011; S.-T. Liong, R. C.-W. Phan,
    J. See, Y.-H. Oh, K. Wong, "Optical strain based recognition of subtle emotions", ISPACS 2014.

    Args:
        flow: ``(H, W, 2)`` displacements ``(dx, dy)`` in pixels, ``H, W >= 2``.

    Returns:
        ``(H, W)`` float32 strain magnitude (dimensionless).
    """
    f = np.asarray(flow, dtype=np.float64)
    if f.ndim != 3 or f.shape[-1] != 2 or min(f.shape[:2]) < 2:
        raise ValueError(f"optical_strain: expected a flow of shape (H, W, 2) with H, W >= 2, got {np.shape(flow)}")
    du_dy, du_dx = np.gradient(f[..., 0])
    dv_dy, dv_dx = np.gradient(f[..., 1])
    exy = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx**2 + dv_dy**2 + 2.0 * exy**2).astype(np.float32)


def clip_flow(
    frames: np.ndarray, *, method: str, reference: str = "onset", strain: bool = False
) -> np.ndarray:
    """Optical flow of every sampled frame of a clip.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (or ``(T, H, W)`` grey) sampled frames, in time order.
        method: one of :data:`FLOW_METHODS`.
        reference: ``'onset'``: frame ``t`` relative to frame 0 (the first sampled frame, the onset for
            most sampling strategies); ``'consecutive'``: frame ``t`` relative to frame ``t - 1``.
            Either way ``flow[0]`` is zero. A frame byte-identical to its reference (sampling repeats
            frames on short clips) gets an exact zero (onset: the previous frame's) flow.
        strain: append :func:`optical_strain` of each flow as a third channel.

    Returns:
        ``(T, H, W, C)`` float32, ``C = 3`` with strain (``dx, dy, strain``), else 2.
    """
    name = _check_method(method)
    ref = _check_reference(reference)
    arr = np.asarray(frames)
    if arr.ndim not in (3, 4) or arr.shape[0] < 1 or (arr.ndim == 4 and arr.shape[-1] != 3):
        raise ValueError(f"clip_flow: expected frames of shape (T, H, W, 3) or (T, H, W), got {arr.shape}")
    _to_gray(arr[0], "frames[0]")  # validate dtype and size even when there is nothing to compute
    t_count, height, width = arr.shape[:3]
    out = np.zeros((t_count, height, width, 3 if strain else 2), dtype=np.float32)
    for t in range(1, t_count):
        base = arr[0] if ref == "onset" else arr[t - 1]
        if np.array_equal(arr[t], arr[t - 1]):
            if ref == "onset":
                out[t] = out[t - 1]
            continue  # consecutive: identical frames, zero motion
        if np.array_equal(arr[t], base):
            continue
        flow = compute_flow(base, arr[t], name)
        out[t, ..., :2] = flow
        if strain:
            out[t, ..., 2] = optical_strain(flow)
    return out


def flow_cache_key(key_parts: Mapping[str, Any], *, method: str, reference: str, strain: bool) -> dict[str, Any]:
    """The full cache key of a clip's flows: the caller's identity plus everything the flows depend on."""
    name = _check_method(method)
    ref = _check_reference(reference)
    ours = {
        "kind": "optical_flow",
        "format": _CACHE_FORMAT,
        "method": name,
        "flow_params": dict(FLOW_PARAMS[name]),
        "opencv": cv2.__version__,
        "reference": ref,
        "strain": bool(strain),
        "dtype": "float16",
    }
    clash = sorted(set(key_parts) & set(ours))
    if clash:
        raise ValueError(f"flow cache key_parts must not contain {clash}; they are set from the arguments")
    return {**dict(key_parts), **ours}


def cached_clip_flow(
    cache: ClipCache,
    key_parts: Mapping[str, Any],
    frames_producer: Callable[[], np.ndarray],
    *,
    method: str,
    reference: str = "onset",
    strain: bool = False,
) -> np.ndarray:
    """:func:`clip_flow` through the on-disk cache: computed once, then read back.

    Args:
        cache: the cache folder.
        key_parts: what identifies the frames: clip, source fingerprint, sampled times, frame size
            (see :func:`clip_key_parts`); method, parameters, reference and strain are added here.
        frames_producer: returns the ``(T, H, W, 3)`` uint8 frames; called only on a cache miss.
        method, reference, strain: as for :func:`clip_flow`.

    Returns:
        ``(T, H, W, C)`` float32, the stored float16 values (identical on a miss and on a hit).
    """
    key = flow_cache_key(key_parts, method=method, reference=reference, strain=strain)

    def produce() -> np.ndarray:
        flows = clip_flow(frames_producer(), method=method, reference=reference, strain=strain)
        return flows.astype(np.float16)

    return np.asarray(cache.get_or_create(key, produce), dtype=np.float32)


def _field(row: Any, name: str) -> Any:
    # ``Series.clip`` is a pandas method, so a row's fields are read by key, never as attributes
    if isinstance(row, (Mapping, pd.Series)):
        return row[name]
    return getattr(row, name)


def clip_key_parts(
    row: Any, times: np.ndarray | list[float], *, size: int, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Identity of a clip's sampled frames, for :func:`cached_clip_flow`.

    Args:
        row: a clip-table row (``pd.Series``, mapping or ``itertuples`` tuple) with ``clip``, ``path``,
            ``first_frame``.
        times: the sampled (possibly fractional) frame numbers.
        size: side of the square frames after :func:`sampled_frames`.
        source: the clip's :func:`clip_fingerprint` when the caller already has it (a frame folder's
            fingerprint stats every file, too costly to repeat per training item).
    """
    return {
        "clip": str(_field(row, "clip")),
        "source": dict(source) if source is not None else clip_fingerprint(_field(row, "path")),
        "first_frame": int(_field(row, "first_frame")),
        "times": [round(float(t), 6) for t in np.asarray(times, dtype=np.float64).reshape(-1)],
        "size": int(size),
        "resize": _RESIZE,
    }


def sampled_frames(row: Any, times: np.ndarray | list[float], *, size: int, backend: str = "auto") -> np.ndarray:
    """Decode a clip's frames at ``times``, resized to ``size`` (the dataset's resize and interpolation).

    Args:
        row: a clip-table row with ``path`` and ``first_frame`` (as for :func:`clip_key_parts`).
        times: sampled frame numbers, possibly fractional (linearly interpolated, as the dataset does).
        size: side of the square output frames.
        backend: video backend for files.

    Returns:
        ``(T, size, size, 3)`` uint8 RGB.
    """
    t = np.asarray(times, dtype=np.float64)
    numbers = frames_needed(t)
    with open_video(_field(row, "path"), backend=backend, first_frame=int(_field(row, "first_frame"))) as reader:
        from microexp.data.transforms import resize_frames  # imports torch: not at `flow --help` time

        decoded = resize_frames(reader.get_frames_by_number(numbers), size)
    return interpolate_frames(decoded, t, numbers=numbers)


# --------------------------------------------------------------------------------------------------
# Filling the cache for a clip table


@dataclass(frozen=True)
class FlowSpec:
    """How a Dataset computes the flow channels of ``flow``/``rgb+flow`` models.

    Args:
        method: one of :data:`FLOW_METHODS`.
        reference: ``onset`` (each frame against the first sampled frame) or ``consecutive``.
        strain: add the optical-strain magnitude as a third channel.
    """

    method: str = DEFAULT_FLOW_METHOD
    reference: str = "onset"
    strain: bool = False

    def __post_init__(self) -> None:
        _check_method(self.method)
        _check_reference(self.reference)

    @property
    def channels(self) -> int:
        return 3 if self.strain else 2

    def compute(self, frames: np.ndarray) -> np.ndarray:
        """:func:`clip_flow` of uint8 ``(T, H, W, 3)`` frames with these settings -> ``(T, H, W, channels)``."""
        return clip_flow(frames, method=self.method, reference=self.reference, strain=self.strain)


@dataclass
class FlowPrecomputeSummary:
    """What :func:`precompute_flow` did.

    Attributes:
        total: clips in the table.
        computed: clips whose flows were computed now.
        cached: clips whose flows were already in the cache.
        failed: ``(clip, reason)`` for each clip that could not be processed.
        seconds: wall-clock time.
    """

    total: int = 0
    computed: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Job:
    cache: ClipCache
    sampling: SamplingSpec
    method: str
    reference: str
    strain: bool
    size: int
    backend: str


_CLIP_ERRORS = (MicroexpError, OSError, ValueError, cv2.error)


def _precompute_one(job: _Job, row: dict[str, Any]) -> tuple[str, str, str]:
    """Fill the cache for one clip; returns ``(clip, 'computed'|'cached'|'failed', reason)``."""
    clip = str(row["clip"])
    try:
        times = job.sampling.times(
            int(row["onset"]), int(row["apex"]), int(row["offset"]), fps=float(row["fps"]), train=False
        )
        computed = []

        def frames() -> np.ndarray:
            computed.append(True)
            return sampled_frames(row, times, size=job.size, backend=job.backend)

        cached_clip_flow(
            job.cache, clip_key_parts(row, times, size=job.size), frames,
            method=job.method, reference=job.reference, strain=job.strain,
        )
    except OutputError:
        raise  # a full or read-only cache fails every clip alike: stop with its one line, not N failures
    except _CLIP_ERRORS as exc:
        return clip, "failed", " ".join(str(exc).split()) or type(exc).__name__
    return clip, ("computed" if computed else "cached"), ""


def _init_worker() -> None:
    cv2.setNumThreads(1)  # K worker processes, one OpenCV thread each: no oversubscription


def precompute_flow(
    table: pd.DataFrame,
    *,
    cache: ClipCache,
    sampling: SamplingSpec,
    method: str,
    reference: str = "onset",
    strain: bool = False,
    size: int = 112,
    backend: str = "auto",
    workers: int = 1,
    progress: bool | None = None,
) -> FlowPrecomputeSummary:
    """Compute and cache the flows of every clip of ``table`` (resumable: cached clips are skipped).

    Frames are sampled in evaluation mode (deterministic), decoded, resized to ``size`` and passed
    to :func:`cached_clip_flow`. A clip that fails (missing file, decoding error, bad phases) is
    reported in the summary and logged; the others go on.

    Args:
        table: a resolved clip table (``clip, path, onset, apex, offset, first_frame, fps``).
        cache: where to store the flows.
        sampling: which frames to take (``train=False`` draws).
        method, reference, strain: as for :func:`clip_flow`.
        size: side of the square frames the flows are computed on.
        backend: video backend for files.
        workers: processes (``1`` computes in this process).
        progress: tqdm progress bar; ``None`` shows it only on a terminal.

    Returns:
        :class:`FlowPrecomputeSummary`.
    """
    from tqdm.auto import tqdm

    _check_method(method)
    _check_reference(reference)
    if int(workers) < 1:
        raise ConfigError(f"workers={workers}: expected an integer >= 1")
    if int(size) < MIN_SIDE:
        raise ConfigError(f"size={size}: expected an integer >= {MIN_SIDE}")
    job = _Job(cache, sampling, method, reference, bool(strain), int(size), backend)
    rows = table.to_dict("records")
    summary = FlowPrecomputeSummary(total=len(rows))
    start = time.perf_counter()
    disable = None if progress is None else not progress
    bar = tqdm(total=len(rows), desc=f"flow ({method})", unit="clip", disable=disable)
    try:
        if workers == 1 or len(rows) <= 1:
            results = (_precompute_one(job, row) for row in rows)
            for result in results:
                _tally(summary, result)
                bar.update()
        else:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=int(workers), mp_context=worker_context(), initializer=_init_worker
            ) as pool:
                futures = [pool.submit(_precompute_one, job, row) for row in rows]
                for future in concurrent.futures.as_completed(futures):
                    _tally(summary, future.result())
                    bar.update()
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _tally(summary: FlowPrecomputeSummary, result: tuple[str, str, str]) -> None:
    clip, status, reason = result
    if status == "failed":
        logger.warning("flow for clip %s failed: %s", clip, reason)
        summary.failed.append((clip, reason))
    elif status == "computed":
        summary.computed += 1
    else:
        summary.cached += 1
